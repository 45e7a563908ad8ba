"""A small image classifier that edge-dm trains itself, to check that text-to-image samples follow
their prompt: the class accuracy of generated images ("a photo of a horse" -> horse?) is reported
next to FID. No pretrained classifier can be had offline, so it is trained on CIFAR-10 by
`edge-dm train --family stable-diffusion --stage classifier` (edge_dm.train_t2i).

The network is a VGG-style CNN: per level two 3x3 convolutions (GroupNorm, SiLU) and a 2x2 max-pool,
then a global average and one linear layer. Widths (48, 96, 192) hold 0.64M parameters, 1.3 MB in
fp16 (the storage, under the 2 MB budget; it computes in fp32). GroupNorm rather than BatchNorm: an
EMA of the parameters is then the whole model (BatchNorm's running statistics are not parameters).

A saved classifier is a folder: config.json (channels, class names, image size, held-out accuracy
where measured) and model.safetensors.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_dm.errors import ConfigError, DataError, ModelNotFoundError
from edge_dm.resources import shipped_model_dir

DEFAULT_CHANNELS = (48, 96, 192)
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def build_classifier(channels=DEFAULT_CHANNELS, num_classes: int = 10):
    """The classifier network (random weights): images in [-1, 1], NCHW, -> class logits."""
    from torch import nn

    if not channels or any(c % 8 for c in channels) or num_classes < 2:
        raise ConfigError("classifier channels must be multiples of 8 (GroupNorm of 8 groups), classes >= 2")
    layers, c_in = [], 3
    for c in channels:
        for a, b in ((c_in, c), (c, c)):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.GroupNorm(8, b), nn.SiLU()]
        layers.append(nn.MaxPool2d(2))
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def save_classifier(model, folder, channels, classes: list[str], image_size: int, **extra) -> Path:
    """Write `model` (fp16 weights) and its config into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().cpu().contiguous() for k, v in model.state_dict().items()}, folder / WEIGHTS)
    config = dict(channels=list(channels), classes=list(classes), image_size=image_size, **extra)
    (folder / CONFIG).write_text(json.dumps(config, indent=2))
    return folder


SHIPPED = "edm-cifar10-classifier"  # models/edm-cifar10-classifier: CIFAR-10's ten classes


def classifier_config(spec) -> tuple[Path, dict]:
    """(folder, config) of the classifier `spec`: a folder `save_classifier` wrote, or the shipped
    name; ModelNotFoundError if there is none. Reads no weights."""
    if str(spec) == SHIPPED:
        spec = shipped_model_dir(SHIPPED)
    folder = Path(spec)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise ModelNotFoundError(f"{folder}: no classifier there ({CONFIG} + {WEIGHTS}); "
                                 f"edge-dm ships one as {SHIPPED}")
    try:
        return folder, json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{folder / CONFIG}: not a classifier config ({exc})") from None


def load_classifier(spec):
    """(the fp32 classifier in eval mode, its config) from a folder `save_classifier` wrote, or the
    shipped name."""
    from safetensors.torch import load_file

    folder, config = classifier_config(spec)
    model = build_classifier(tuple(config["channels"]), len(config["classes"]))
    model.load_state_dict({k: v.float() for k, v in load_file(folder / WEIGHTS).items()})
    return model.eval(), config


def predict(model, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Class indices of uint8 N,H,W,3 images (`model` from load_classifier or training)."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)
            x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
            out.append(model(x).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def class_word(name: str) -> str:
    """The words of a class folder's name ("sea_turtle" -> "sea turtle"), as captions and prompts say it."""
    return name.replace("_", " ").replace("-", " ").strip().lower()


def named_classes(prompts, classes: list[str]) -> list[str]:
    """The class each prompt names: the one of `classes` whose words (class_word) stand in it as whole
    words. DataError for a prompt that names none of them, or several."""
    import re

    words = {c: class_word(c) for c in classes}
    out = []
    for p in prompts:
        found = [c for c, w in words.items() if re.search(rf"\b{re.escape(w)}\b", p.lower())]
        if len(found) != 1:
            raise DataError(f"the prompt {p!r} names {'none' if not found else 'several'} of the classifier's "
                            f"classes ({', '.join(classes)}): class accuracy needs exactly one per prompt")
        out.append(found[0])
    return out


def class_accuracy(folder, images: np.ndarray, class_names: list[str]) -> dict:
    """How often the classifier in `folder` puts `images` in the class named beside each (e.g. the
    class its prompt names): {"accuracy": fraction of all, "by_class": {class: fraction of its images}}."""
    model, config = load_classifier(folder)
    index = {n: i for i, n in enumerate(config["classes"])}
    unknown = sorted(set(class_names) - set(index))
    if unknown:
        raise ConfigError(f"the classifier in {folder} knows no class {unknown}; it knows {config['classes']}")
    want = np.array([index[n] for n in class_names])
    right = predict(model, images) == want
    return dict(accuracy=float(right.mean()),
                by_class={n: float(right[want == i].mean()) for n, i in index.items() if (want == i).any()})

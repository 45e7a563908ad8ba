"""Text-to-image training (edge_dm.jobs.training_t2i) and the classifier, on a few random 32x32 images of
three classes, a few steps a stage on the CPU."""
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from tiny import write_cifar_tar

from edge_dm.errors import ConfigError, DataError
from edge_dm.jobs.training_t2i import (
    TEMPLATES,
    TextToImageTrainConfig,
    caption_tokenizer,
    captions,
    train_text_to_image,
)

CLASSES = ("cat", "airplane", "sea_turtle")
TINY = dict(max_steps=2, batch_size=4, warmup_steps=1, vae_channels=(32, 32), block_out_channels=(32, 32),
            text_width=32, text_layers=1, classifier_channels=(8, 16))
quiet = dict(log=lambda s: None)


@pytest.fixture
def labelled_tar(tmp_path):
    return write_cifar_tar(tmp_path, dict.fromkeys(CLASSES, 3), "labelled.tar.gz")


def test_captions_have_one_token_a_word(tmp_path):
    texts = [c for n in CLASSES for c in captions(n)]
    assert len(set(texts)) == len(CLASSES) * len(TEMPLATES)
    assert "a photo of an airplane" in texts and "a blurry photo of a sea turtle" in texts
    tok = caption_tokenizer(tmp_path / "tok", texts)
    for text in texts:
        ids = tok(text).input_ids
        assert len(ids) == len(text.split()) + 2, (text, tok.convert_ids_to_tokens(ids))
    assert tok.unk_token_id not in tok("a zebra").input_ids[1:-1]  # other words: character by character
    assert tok.model_max_length == 77


def test_stages_train_resume_and_load_in_diffusers(labelled_tar, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    from edge_dm.families import for_folder

    run = tmp_path / "run"
    cfg = TextToImageTrainConfig(data=str(labelled_tar), output=str(run), stage="unet", **TINY)
    with pytest.raises(ConfigError, match="--stage vae"):
        train_text_to_image(cfg, **quiet)  # the UNet needs the VAE
    assert not run.exists()
    train_text_to_image(TextToImageTrainConfig(data=str(labelled_tar), output=str(run), stage="vae", **TINY), **quiet)
    assert json.loads((run / "vae" / "train_state.json").read_text())["scaling_factor"] > 0
    logs = []
    out = train_text_to_image(cfg, log=logs.append)
    assert json.loads((run / "unet" / "train_state.json").read_text())["step"] == 2
    train_text_to_image(replace(cfg, max_steps=3), log=logs.append)
    assert any("resumed unet at step 2" in line for line in logs)
    assert json.loads((run / "unet" / "train_state.json").read_text())["step"] == 3

    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32
    assert (pipe.vae.config.scaling_factor
            == json.loads((run / "vae" / "train_state.json").read_text())["scaling_factor"])
    image = pipe("a photo of a cat", num_inference_steps=1, guidance_scale=2.0, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
    assert for_folder(out).name == "stable-diffusion"
    m = for_folder(out).load(str(out), str(out))
    assert m.sample_shape == (4, 16, 16)
    # another architecture in the same run folder: one clear error, not a state-dict dump
    with pytest.raises(ConfigError, match="another architecture"):
        train_text_to_image(replace(cfg, text_width=64), **quiet)


def test_classifier_trains_and_predicts(labelled_tar, tmp_path):
    from edge_dm.classifier import class_accuracy, load_classifier, predict
    from edge_dm.data import load_labelled_images

    cfg = TextToImageTrainConfig(data=str(labelled_tar), output=str(tmp_path / "run"), stage="classifier",
                                 eval_data=str(labelled_tar), **TINY)
    assert cfg.lr == 2e-3 and cfg.ema_decays == (0.999,)  # the stage's defaults
    folder = train_text_to_image(cfg, **quiet)
    model, config = load_classifier(folder)
    assert config["classes"] == sorted(CLASSES) and 0 <= config["test_accuracy"] <= 1
    assert sum(f.stat().st_size for f in folder.iterdir()) < 2e6
    images, labels, names = load_labelled_images(labelled_tar)
    pred = predict(model, images)
    assert pred.shape == labels.shape and set(pred) <= set(range(len(names)))
    acc = class_accuracy(folder, images, [names[i] for i in labels])
    assert acc["accuracy"] == float((pred == labels).mean())
    assert acc["by_class"] == {n: float((pred[labels == i] == i).mean()) for i, n in enumerate(names)}
    with pytest.raises(ConfigError):
        class_accuracy(folder, images[:1], ["horse"])


def test_named_classes_reads_the_class_word_of_each_prompt():
    from edge_dm.classifier import named_classes
    from edge_dm.errors import DataError

    classes = ["cat", "dog", "sea_turtle"]
    assert named_classes(["a photo of a cat", "A blurry photo of a Sea Turtle", "dog"], classes) == \
        ["cat", "sea_turtle", "dog"]
    for bad in ("a photo of a catamaran", "a cat and a dog", ""):  # whole words only; exactly one class
        with pytest.raises(DataError, match="class accuracy needs exactly one"):
            named_classes([bad], classes)


def test_data_without_labels_is_one_clear_error(tmp_path):
    from click.testing import CliRunner

    from edge_dm.cli import main

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(DataError, match="no class folder"):
        train_text_to_image(TextToImageTrainConfig(data=str(folder), output=str(tmp_path / "o"), stage="classifier",
                                                   **TINY), **quiet)
    base = ["train", "--family", "stable-diffusion", "--data", str(tmp_path), "--output", str(tmp_path / "o")]
    r = CliRunner().invoke(main, base + ["--stage", "classifier"])  # one class folder: "flat"
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "holds no labels" in r.output, r.output
    r = CliRunner().invoke(main, base)
    assert r.exit_code == 1 and "--stage" in r.output
    r = CliRunner().invoke(main, base + ["--stage", "vae", "--teacher", "x"])
    assert r.exit_code == 1 and "--teacher" in r.output
    r = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--output", str(tmp_path / "o"), "--stage", "vae"])
    assert r.exit_code == 1 and "stable-diffusion" in r.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError):
        TextToImageTrainConfig(data="x", output="y", stage="text")
    with pytest.raises(ConfigError):
        TextToImageTrainConfig(data="x", output="y", empty_caption_rate=1.0)


def test_cli_trains_a_stage(labelled_tar, tmp_path):
    from click.testing import CliRunner

    from edge_dm.cli import main

    r = CliRunner().invoke(main, ["train", "--family", "stable-diffusion", "--stage", "vae",
                                  "--data", str(labelled_tar), "--output", str(tmp_path / "run"),
                                  "--vae-channels", "32,32", "--batch-size", "2", "--minutes", "0.001"])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "run" / "vae" / "train_config.json").read_text())
    assert saved["vae_channels"] == [32, 32] and saved["batch_size"] == 2 and saved["lr"] == 4e-4

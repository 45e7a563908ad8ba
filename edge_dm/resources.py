"""Files edge-dm ships beside its code: its models (the default unconditional one, the text-to-image
one and the classifier that scores it), the FID reference statistics and prompt files.

In the repository they live in the top-level folders `models/` and `datasets/`. pyproject.toml maps
those folders onto the data-only packages `edge_dm.assets.models` and `edge_dm.assets.datasets`
(setuptools' package-dir + package-data), so installs carry them:
- a wheel, `pip install .`, tox: `site-packages/edge_dm/assets/{models,datasets}/`, found with
  importlib.resources;
- `pip install -e .` (the README's and CI's install) or a checkout on PYTHONPATH: setuptools'
  editable finder cannot import data-only packages below the regular package `edge_dm.assets`, so
  the checkout's own top-level folders are used, recognised by the pyproject.toml beside them.

    shipped_model_dir("edm-cifar10-ddpm")  # a diffusers folder: model_index.json, unet/, scheduler/
    shipped_stats("cifar10-train")          # the .npz that `edge-dm evaluate --reference cifar10-train` reads
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

from edge_dm.errors import DataError, ModelNotFoundError

# the shipped models and the files loading each needs (the install carries exactly these)
_T2I = ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json")
SHIPPED_MODELS = {
    "edm-cifar10-ddpm": ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                         "scheduler/scheduler_config.json"),
    "edm-cifar10-t2i": _T2I,
    "edm-cifar10-lcm": _T2I,
    "edm-cifar10-classifier": ("config.json", "model.safetensors"),  # edge_dm.classifier's folder
}
# short names of the shipped FID reference statistics (`--reference NAME`) and their files
SHIPPED_STATS = {"cifar10-train": "cifar10_train_jpeg_fid_stats.npz"}
# text-to-image prompts written for edge-dm: calibration, and held out for error tables and reports;
# edm-cifar10-t2i's: its ten classes in its ten caption templates
SHIPPED_PROMPTS = ("prompts.txt", "prompts-heldout.txt", "cifar10-prompts.txt")

_PACKAGES = {"models": "edge_dm.assets.models", "datasets": "edge_dm.assets.datasets"}


def _candidates(kind: str, name: str) -> list[Path]:
    """Where `name` of the asset folder `kind` ("models" or "datasets") may be, best first."""
    found = []
    try:
        root = importlib.resources.files(_PACKAGES[kind])
    except ModuleNotFoundError:
        root = None
    if root is not None:
        path = root.joinpath(name)  # a pathlib.Path for packages on the file system
        if isinstance(path, Path):
            found.append(path)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / kind).is_dir():
        found.append(checkout / kind / name)
    return found


def shipped_model_dir(name: str) -> Path:
    """The folder of the shipped model `name` (a diffusers pipeline folder, or the classifier's), or
    ModelNotFoundError."""
    if name not in SHIPPED_MODELS:
        raise ModelNotFoundError(f"no shipped model {name!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    places = _candidates("models", name)
    for path in places:
        if all((path / f).is_file() for f in SHIPPED_MODELS[name]):
            return path
    where = ", ".join(str(p) for p in places) or f"package {_PACKAGES['models']} not importable"
    raise ModelNotFoundError(f"the shipped model {name!r} is missing from this edge-dm install "
                             f"(looked in: {where}); reinstall edge-dm")


def shipped_stats(name: str) -> Path:
    """The .npz of the shipped FID reference statistics `name` (a key of SHIPPED_STATS, or its file
    name), or DataError."""
    file = SHIPPED_STATS.get(name, name)
    if file not in SHIPPED_STATS.values():
        raise DataError(f"no shipped reference statistics {name!r}; shipped: {', '.join(SHIPPED_STATS)}")
    return shipped_dataset(file)


def shipped_dataset(file: str) -> Path:
    """A file of the shipped datasets/ folder (statistics, prompts), or DataError."""
    if file not in (*SHIPPED_STATS.values(), *SHIPPED_PROMPTS):
        raise DataError(f"edge-dm ships no dataset file {file!r}")
    places = _candidates("datasets", file)
    for path in places:
        if path.is_file():
            return path
    where = ", ".join(str(p) for p in places) or f"package {_PACKAGES['datasets']} not importable"
    raise DataError(f"the shipped file {file!r} is missing from this edge-dm install "
                    f"(looked in: {where}); reinstall edge-dm")


def shipped_prompts(held_out: bool = False) -> Path:
    """datasets/prompts.txt (calibration) or datasets/prompts-heldout.txt (error tables, reports)."""
    return shipped_dataset("prompts-heldout.txt" if held_out else "prompts.txt")

"""The edge-dm bundle: the folder every stage writes and reads.

    BUNDLE/
      unet.xml, unet.bin        OpenVINO IR of the noise-prediction UNet (dynamic batch)
      scheduler_config.json     the diffusers scheduler config of the source model
      recipe.json               how it was made: source model, precision, options, versions, timings
      unet_fp32.xml, .bin       (int8 bundles) the fp32 IR it was quantized from, the baseline
      calibration.npz           (int8 bundles) the calibration set, reusable with --calibration-set

Bundles are written atomically: everything goes into a hidden temporary folder beside the target,
which is renamed into place only when complete, so an interrupted run leaves no partial bundle.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge_dm.errors import BundleError, OutputExistsError

IR_NAME = "unet.xml"
FP32_IR = "unet_fp32.xml"  # int8 bundles keep the fp32 IR they were quantized from
RECIPE = "recipe.json"
SCHEDULER = "scheduler_config.json"


def home() -> Path:
    """Where default bundles live: $EDGE_DM_HOME, else ~/.cache/edge-dm."""
    return Path(os.environ.get("EDGE_DM_HOME") or Path.home() / ".cache" / "edge-dm")


def default_bundle_path(model_spec: str, precision: str) -> Path:
    from edge_dm.models import slug

    return home() / "bundles" / slug(model_spec) / precision


def versions() -> dict:
    import importlib.metadata as md

    import edge_dm

    out = {"edge-dm": edge_dm.__version__}
    for pkg in ("openvino", "nncf", "torch", "diffusers", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def check_output(path: str | Path, overwrite: bool) -> Path:
    """Refuse an output folder that exists and is not empty, unless overwrite."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"output folder {path} exists and is not empty (pass --overwrite to replace it)")
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False):
    """Yield a temporary folder; on success it replaces `path`, on any error it is removed."""
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:  # also on KeyboardInterrupt
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class Bundle:
    path: Path
    recipe: dict
    scheduler_config: dict

    @property
    def ir(self) -> Path:
        return self.path / IR_NAME

    @property
    def precision(self) -> str:
        return self.recipe.get("precision", "?")

    @property
    def sample_shape(self) -> tuple:
        return tuple(self.recipe["sample_shape"])

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    def size_bytes(self) -> int:
        return self.ir.stat().st_size + self.ir.with_suffix(".bin").stat().st_size

    @property
    def fp32_ir(self) -> Path | None:
        return self.path / FP32_IR if (self.path / FP32_IR).is_file() else None

    def read_model(self, ir: Path | None = None):
        """The IR (default: the bundle's main one) as an openvino.Model; a corrupt IR is a BundleError."""
        import openvino as ov

        try:
            return ov.Core().read_model(ir or self.ir)
        except Exception as exc:  # OpenVINO raises RuntimeError with a long message
            raise BundleError(f"corrupt OpenVINO IR in {self.path}: {str(exc).splitlines()[0][:200]}") from None


def is_bundle(path: str | Path) -> bool:
    p = Path(path)
    return (p / RECIPE).is_file() and (p / IR_NAME).is_file()


def open_bundle(path: str | Path) -> Bundle:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path} not found")
    for name in (IR_NAME, "unet.bin", RECIPE, SCHEDULER):
        if not (path / name).is_file():
            raise BundleError(f"{path} is not a complete edge-dm bundle: {name} is missing")
    try:
        recipe = json.loads((path / RECIPE).read_text())
        sched = json.loads((path / SCHEDULER).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"unreadable recipe or scheduler config in {path}: {exc}") from None
    return Bundle(path, recipe, sched)


def write_bundle(tmp: Path, ov_model, scheduler_config: dict, recipe: dict, compress_to_fp16: bool = False) -> None:
    """Write IR + scheduler config + recipe into the (temporary) folder `tmp`."""
    import openvino as ov

    ov.save_model(ov_model, tmp / IR_NAME, compress_to_fp16=compress_to_fp16)
    (tmp / SCHEDULER).write_text(json.dumps(scheduler_config, indent=2, sort_keys=True))
    ir_bytes = sum((tmp / IR_NAME).with_suffix(e).stat().st_size for e in (".xml", ".bin"))
    recipe = dict(recipe, ir_bytes=ir_bytes, versions=versions())
    (tmp / RECIPE).write_text(json.dumps(recipe, indent=2, sort_keys=True, default=str))

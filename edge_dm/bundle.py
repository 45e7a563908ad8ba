"""The edge-dm bundle: the folder every stage writes and reads, and where bundles are found.

A bundle holds a model's OpenVINO IRs in its family's layout (edge_dm.families: one `unet.xml` for
an unconditional UNet; the optimum-intel diffusers layout for text-to-image), its scheduler
config, and `recipe.json`: how it was made (family, source model, precision, every option,
versions, timings). An int8 bundle also keeps its calibration set (`calibration.npz`).

Bundles are written atomically (edge_dm.outputs), so an interrupted run leaves no partial bundle.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edge_dm.errors import BundleError, ConfigError, library_reason

RECIPE = "recipe.json"
CALIBRATION = "calibration.npz"
FP32_IR = "unet_fp32.xml"  # unconditional int8 bundles keep the fp32 IR they were quantized from


def home() -> Path:
    """Where default bundles live: $EDGE_DM_HOME, else ~/.cache/edge-dm."""
    env = os.environ.get("EDGE_DM_HOME")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "edge-dm"
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        where = f"EDGE_DM_HOME={env}" if env else f"the edge-dm cache {path}"
        raise ConfigError(f"{where} cannot be used: {anc} is a file, not a folder (set EDGE_DM_HOME to a folder)")
    return path


def default_bundle_path(model_spec: str, precision: str) -> Path:
    from edge_dm.models import slug

    return home() / "bundles" / slug(model_spec) / precision


def versions() -> dict:
    import importlib.metadata as md

    import edge_dm

    out = {"edge-dm": edge_dm.__version__}
    for pkg in ("openvino", "nncf", "torch", "diffusers", "optimum-intel", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


@dataclass(frozen=True)
class Bundle:
    path: Path
    recipe: dict
    _models: dict = field(default_factory=dict, repr=False, compare=False)  # IRs read so far
    _replaced: dict = field(default_factory=dict, repr=False, compare=False)  # component -> in-memory model

    @property
    def family(self):
        from edge_dm.families import get

        return get(self.recipe.get("family"))

    @property
    def scheduler_config(self) -> dict:
        return self.family.scheduler_config(self.path)

    def ir(self, component: str = "unet") -> Path:
        return self.path / self.family.components[component]

    @property
    def precision(self) -> str:
        return self.recipe.get("precision", "?")

    @property
    def sample_shape(self) -> tuple:
        """The sampler's state shape (no batch) at the model's default sampling options."""
        from edge_dm.configs import SamplingConfig

        return self.family.sample_shape(self, SamplingConfig())

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    def size_bytes(self, component: str = "unet") -> int:
        ir = self.ir(component)
        return ir.stat().st_size + ir.with_suffix(".bin").stat().st_size

    @property
    def fp32_ir(self) -> Path | None:
        return self.path / FP32_IR if (self.path / FP32_IR).is_file() else None

    def read_model(self, ir: str | Path = "unet"):
        """A component's IR (default: the denoiser) or an IR path as an openvino.Model, read once."""
        import openvino as ov

        path = self.ir(ir) if isinstance(ir, str) else Path(ir)
        if path not in self._models:
            try:
                self._models[path] = ov.Core().read_model(path)
            except Exception as exc:  # OpenVINO raises RuntimeError with a long message
                raise BundleError(f"corrupt OpenVINO IR in {self.path}: {library_reason(exc)}") from None
        return self._models[path]

    @classmethod
    def from_pretrained(cls, spec: str | Path, precision: str = "int8") -> "Bundle":
        """A bundle folder, or the default bundle of a model name (where `edge-dm quantize` or
        `edge-dm export` writes it)."""
        if is_bundle(spec):
            return open_bundle(spec)
        if Path(spec).is_dir() and (Path(spec) / RECIPE).exists():
            return open_bundle(spec)  # raises with what is missing
        default = default_bundle_path(str(spec), precision)
        if is_bundle(default):
            return open_bundle(default)
        make = f"edge-dm quantize --model {spec}" if precision == "int8" else \
            f"edge-dm export --model {spec} --precision {precision}"
        raise BundleError(f"no {precision} bundle for {str(spec)!r} (looked in {default}); create it with "
                          f"`{make}` or pass a bundle folder")

    def with_model(self, model, component: str = "unet", **recipe) -> "Bundle":
        """This bundle with `model` (an openvino.Model, e.g. quantize_model's int8 UNet) in place of a
        component, in memory; `recipe`: fields to change (precision="int8"). save_pretrained writes it."""
        bundle = Bundle(self.path, dict(self.recipe, **recipe), dict(self._models), {**self._replaced, component: model})
        bundle._models[self.ir(component)] = model
        return bundle

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> "Bundle":
        """Write the bundle, with any component replaced in memory, to `path` (atomically)."""
        from edge_dm.outputs import atomic_output

        with atomic_output(path, overwrite) as tmp:
            shutil.copytree(self.path, tmp, dirs_exist_ok=True)
            for component, model in self._replaced.items():
                if component == "unet":
                    self.family.write_quantized(tmp, open_bundle(self.path).read_model(), model)
                else:
                    self.family.write_component(tmp, model, component)
            write_recipe(tmp, self.recipe)
        return open_bundle(path)


def is_bundle(path: str | Path) -> bool:
    p = Path(path)
    if not (p / RECIPE).is_file():
        return False
    try:
        open_bundle(p)
    except BundleError:
        return False
    return True


def open_bundle(path: str | Path) -> Bundle:
    from edge_dm.families import get

    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path} not found")
    if not (path / RECIPE).is_file():
        raise BundleError(f"{path} is not a complete edge-dm bundle: {RECIPE} is missing")
    try:
        recipe = json.loads((path / RECIPE).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"unreadable recipe in {path}: {exc}") from None
    if not isinstance(recipe, dict):
        raise BundleError(f"unreadable recipe in {path}: not a JSON object")
    get(recipe.get("family")).check_bundle(path)
    return Bundle(path, recipe)


def write_recipe(folder: Path, recipe: dict, component: str = "unet") -> dict:
    """recipe.json for the bundle being written in `folder`, with the IR size and versions."""
    from edge_dm.families import get

    ir = Path(folder) / get(recipe.get("family")).components[component]
    ir_bytes = sum(ir.with_suffix(e).stat().st_size for e in (".xml", ".bin"))
    recipe = dict(recipe, ir_bytes=ir_bytes, versions=versions())
    (Path(folder) / RECIPE).write_text(json.dumps(recipe, indent=2, sort_keys=True, default=str))
    return recipe

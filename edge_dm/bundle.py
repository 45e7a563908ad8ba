"""The edge-dm bundle: the folder every stage writes and reads, and where bundles are found.

A bundle holds a model's OpenVINO IRs in its family's layout (edge_dm.families: one `unet.xml` for
an unconditional UNet; the optimum-intel diffusers layout for text-to-image), its scheduler
config, and `recipe.json`: how it was made (format version, family, source model, precision, the
job's config, versions, timings, the model's sampling defaults). An int8 bundle also keeps its
calibration set (`calibration.npz`).

Bundles are written atomically (edge_dm.outputs), so an interrupted run leaves no partial bundle.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_dm.configs import RECIPE_FORMAT, SamplingConfig
from edge_dm.errors import BundleError, library_reason
from edge_dm.families import Family, LoadedModel, get
from edge_dm.outputs import MARKER, ScratchDir, atomic_output, home, slug
from edge_dm.runtime import OpenVINOModel, save_ir

RECIPE = "recipe.json"
CALIBRATION = "calibration.npz"


def default_bundle_path(model_spec: str, precision: str) -> Path:
    """Where `edge-dm quantize` / `export` put a model's bundle unless told otherwise."""
    return home() / "bundles" / slug(model_spec) / precision


def recipe_of(kind: str, m: LoadedModel, precision: str, config=None, **fields) -> dict:
    """The recipe of a bundle made of the loaded model `m` (by a job with `config`, where one did)."""
    return dict(kind=kind, family=m.family.name, source=m.source, model=m.spec, precision=precision,
                parameters=m.parameters, config=config.to_dict() if config is not None else None,
                sampling=m.sampling or None, **fields)


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("edge-dm", "openvino", "nncf", "torch", "diffusers", "optimum-intel", "numpy"):
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
    _scratch: ScratchDir | None = field(default=None, repr=False, compare=False)  # where from_model's files live

    @property
    def family(self) -> Family:
        return get(self.recipe.get("family"))

    @property
    def scheduler_config(self) -> dict:
        return self.family.scheduler_config(self.path)

    def ir(self, component: str = "unet") -> Path:
        return self.path / self.family.layout.components[component]

    @property
    def precision(self) -> str:
        return self.recipe.get("precision", "?")

    @property
    def sampling_defaults(self) -> dict:
        """The sampling options this model runs with unless asked otherwise: its family's, and its own
        where the recipe records them (a registry entry's, e.g. a distilled model's steps)."""
        return {**self.family.conditioning.sampling_defaults, **(self.recipe.get("sampling") or {})}

    def sampling(self, sampling: SamplingConfig | None = None) -> SamplingConfig:
        """`sampling` (default: all defaults) with every option it leaves open set to this model's."""
        return (sampling or SamplingConfig()).resolved(self.sampling_defaults)

    @property
    def sample_shape(self) -> tuple:
        """The sampler's state shape (no batch) at the model's default sampling options."""
        return self.family.conditioning.sample_shape(self, self.sampling())

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    def size_bytes(self, component: str = "unet") -> int:
        ir = self.ir(component)
        return ir.stat().st_size + ir.with_suffix(".bin").stat().st_size

    @property
    def fp32_ir(self) -> Path | None:
        """The fp32 IR an int8 bundle keeps beside its own, where its family keeps one."""
        name = self.family.layout.fp32_copy
        return self.path / name if name and (self.path / name).is_file() else None

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

    def components(self, device: str = "CPU", precision_hint: str | None = None) -> "BundleComponents":
        """The components besides the denoiser, compiled on `device` when first run."""
        return BundleComponents(self, device, precision_hint)

    @classmethod
    def from_model(cls, m: LoadedModel, precision: str = "fp32") -> "Bundle":
        """`m` (edge_dm.load_model's) exported to OpenVINO in memory: the files its family's export
        writes stay in a private temporary folder (edge_dm.outputs.ScratchDir) as long as this bundle
        or one made from it lives; save_pretrained writes a bundle folder."""
        scratch = ScratchDir()
        fields, model = m.family.export(m, scratch.path, precision)
        bundle = cls(scratch.path, recipe_of("export", m, precision, **fields), _scratch=scratch)
        bundle._models[bundle.ir()] = model
        return bundle

    @classmethod
    def from_pretrained(cls, spec: str | Path, precision: str = "int8") -> "Bundle":
        """A bundle folder, or the default bundle of a model name (where `edge-dm quantize` or
        `edge-dm export` writes it)."""
        if is_bundle(spec):
            return open_bundle(spec)
        if Path(spec).is_dir() and (Path(spec) / RECIPE).exists():
            return open_bundle(spec)  # raises with what is missing
        if str(spec).startswith((".", "/", "~")) and not Path(spec).expanduser().exists():
            raise BundleError(f"bundle {spec} not found")
        default = default_bundle_path(str(spec), precision)
        if is_bundle(default):
            return open_bundle(default)
        make = f"edge-dm quantize --model {spec}" if precision == "int8" else \
            f"edge-dm export --model {spec} --precision {precision}"
        if Path(spec).exists():
            raise BundleError(f"{spec} is not an edge-dm bundle (no {RECIPE}); make one with `{make}`")
        raise BundleError(f"no {precision} bundle for {str(spec)!r} (looked in {default}); create it with "
                          f"`{make}` or pass a bundle folder")

    def with_model(self, model, component: str = "unet", **recipe) -> "Bundle":
        """This bundle with `model` (an openvino.Model, e.g. quantize_model's int8 UNet) in place of a
        component, in memory; `recipe`: fields to change (precision="int8"). save_pretrained writes it."""
        bundle = Bundle(self.path, dict(self.recipe, **recipe), dict(self._models),
                        {**self._replaced, component: model}, self._scratch)
        bundle._models[self.ir(component)] = model
        return bundle

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> "Bundle":
        """Write the bundle, with any component replaced in memory, to `path` (atomically)."""
        with atomic_output(path, overwrite, inputs=[self.path]) as tmp:
            shutil.copytree(self.path, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MARKER, RECIPE))
            for component, model in self._replaced.items():
                if component == "unet":
                    write_quantized(self.family, tmp, self._original("unet"), model)
                else:
                    write_component(self.family, tmp, model, component)
            write_recipe(tmp, dict(self.recipe, format=self.recipe.get("format", 1)))
        return open_bundle(path)


    def _original(self, component: str):
        """The component as its files hold it (not as replaced in memory)."""
        import openvino as ov

        return ov.Core().read_model(self.ir(component))


class BundleComponents:
    """A bundle's components besides the denoiser, each compiled on the device when first run, one
    image a request (edge_dm.families.base.Components)."""

    def __init__(self, bundle: Bundle, device: str = "CPU", precision_hint: str | None = None):
        self.bundle, self.path, self.device, self.precision_hint = bundle, bundle.path, device, precision_hint
        self._nets: dict = {}

    def run(self, component: str, *inputs: np.ndarray) -> dict:
        """{output name: array} of the component on inputs given in the order of its IR's inputs."""
        if component not in self._nets:
            self._nets[component] = OpenVINOModel(self.bundle.read_model(component), self.device, "LATENCY",
                                                  self.precision_hint, request_batch=1)
        net = self._nets[component]
        outputs = net.run({i.get_any_name(): x for i, x in zip(net.model.inputs, inputs)})
        return {o.get_any_name(): v for o, v in zip(net.model.outputs, outputs)}

    def stats(self) -> dict:
        """{component: {calls, seconds}} since the last reset_stats (compiling excluded)."""
        return {k: dict(calls=n.calls, seconds=n.seconds) for k, n in self._nets.items()}

    def reset_stats(self) -> None:
        for net in self._nets.values():
            net.reset_stats()


def check_bundle(family: Family, folder: Path) -> None:
    """BundleError naming the first file the family's bundle layout needs and `folder` lacks."""
    for rel in [*family.layout.components.values(), family.layout.scheduler_file]:
        needed = [rel, str(Path(rel).with_suffix(".bin"))] if rel.endswith(".xml") else [rel]
        for r in needed:
            if not (Path(folder) / r).is_file():
                raise BundleError(f"{folder} is not a complete edge-dm bundle: {r} is missing")


def write_component(family: Family, folder: Path, model, component: str = "unet") -> None:
    """Save `model` (an openvino.Model) as a component's IR in the bundle being written in `folder`."""
    save_ir(model, Path(folder) / family.layout.components[component])


def write_quantized(family: Family, folder: Path, fp32, int8) -> None:
    """Put the int8 denoiser into the bundle being written in `folder` (its fp32 export), keeping the
    fp32 IR beside it where the family's layout says so (the baseline that benchmarks compare)."""
    if family.layout.fp32_copy:
        save_ir(fp32, Path(folder) / family.layout.fp32_copy)
    write_component(family, folder, int8)


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
    if recipe.get("format", 1) > RECIPE_FORMAT:
        raise BundleError(f"{path} was written by a newer edge-dm (recipe format {recipe['format']}); "
                          "upgrade edge-dm to read it")
    check_bundle(get(recipe.get("family")), path)
    return Bundle(path, recipe)


def write_recipe(folder: Path, recipe: dict, component: str = "unet") -> dict:
    """recipe.json for the bundle being written in `folder`, with the format, IR size and versions."""
    ir = Path(folder) / get(recipe.get("family")).layout.components[component]
    ir_bytes = sum(ir.with_suffix(e).stat().st_size for e in (".xml", ".bin"))
    recipe = dict(recipe, format=recipe.get("format", RECIPE_FORMAT), ir_bytes=ir_bytes, versions=versions())
    (Path(folder) / RECIPE).write_text(json.dumps(recipe, indent=2, sort_keys=True, default=str))
    return recipe

"""Every run's options as a frozen dataclass that checks itself and serializes to JSON.

A config is built by the CLI (or by a Python caller), validated on construction, passed to one
library function, and saved into the artifact's recipe.json, so each output says how it was made.
Each option is defined once, here; the CLI takes its defaults from these classes (`default`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

from edge_dm.errors import ConfigError
from edge_dm.targets import TARGETS

DEFAULT_MODEL = "edm-cifar10-ddpm"
PRECISIONS = ("fp32", "fp16")
SCHEDULERS = {  # edge-dm's name -> the diffusers class, used unchanged
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm-solver": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
}
CALIBRATION_KINDS = ("dntc", "uniform", "pipeline", "fixed", "noise", "forward")
QUANTIZE_MODES = ("int8", "weights")
COMPONENT_MODES = ("float", "int8-weights")


def default(cls, name: str):
    """The default of field `name` of the config class `cls` (what the CLI shows and uses)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


class Config:
    """Mixin: JSON round trip for the frozen dataclasses below. `_nested` names fields that hold a
    config of their own."""

    _nested: dict = {}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        kwargs = {}
        for k, v in data.items():
            if k in cls._nested and isinstance(v, dict):
                v = cls._nested[k].from_dict(v)
            kwargs[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)


def _positive(**values):
    for name, value in values.items():
        if value is None or value < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value}")


def _positive_if_set(**values):
    """Like _positive, for options whose None means "not set" (a default chosen elsewhere)."""
    _positive(**{name: value for name, value in values.items() if value is not None})


def _finite(**values):
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{name.replace('_', '-')} must be a finite number, got {value}")


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class SamplingConfig(Config):
    """What defines the images, with the seed and the bundle: shared by generate, evaluate and
    calibration (which samples at the settings the model is deployed with)."""
    scheduler: str = "ddim"
    steps: int = 100
    seed: int = 0
    guidance_scale: float | None = None  # text-to-image: classifier-free guidance (None: the model's default)
    height: int | None = None  # text-to-image: image size in pixels (None: the model's default)
    width: int | None = None
    negative_prompt: str = ""  # text-to-image: what guidance steers away from
    cache_interval: int = 1  # DeepCache: run the whole UNet every N-th step, its shallow part between (1: off)
    cache_branch: int = 1  # DeepCache: how many levels the shallow part keeps (1: the full-resolution one)

    def __post_init__(self):
        _choice("scheduler", self.scheduler, tuple(SCHEDULERS))
        _positive(steps=self.steps, cache_interval=self.cache_interval, cache_branch=self.cache_branch)
        _positive_if_set(height=self.height, width=self.width)
        _finite(guidance_scale=self.guidance_scale)
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.guidance_scale is not None and self.guidance_scale < 1:
            raise ConfigError(f"guidance-scale must be >= 1 (1: no guidance), got {self.guidance_scale}")


@dataclass(frozen=True)
class DeviceConfig(Config):
    """Where and how the denoising loop runs; none of it changes which image a seed gives."""
    device: str = "CPU"
    batch_size: int = 8  # images per UNet request
    parallel: int | None = None  # batches in flight, one infer request each (default: the device's optimum)
    precision_hint: str | None = None  # OpenVINO INFERENCE_PRECISION_HINT, e.g. f32 or bf16

    def __post_init__(self):
        _positive(batch_size=self.batch_size)
        _positive_if_set(parallel=self.parallel)
        if not self.device.strip():
            raise ConfigError("device must not be empty")


@dataclass(frozen=True)
class ExportConfig(Config):
    model: str = DEFAULT_MODEL
    output: str | None = None
    precision: str = "fp32"
    overwrite: bool = False

    def __post_init__(self):
        _choice("precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class GenerateConfig(Config):
    model: str = DEFAULT_MODEL
    output: str = "samples"
    overwrite: bool = False
    num_images: int = 16
    prompts: tuple = ()  # text-to-image: one prompt for every image, or one per image
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    runtime: DeviceConfig = field(default_factory=DeviceConfig)
    _nested = {"sampling": SamplingConfig, "runtime": DeviceConfig}

    def __post_init__(self):
        _positive(num_images=self.num_images)
        if len(self.prompts) > 1 and len(self.prompts) != self.num_images:
            raise ConfigError(f"{len(self.prompts)} prompts for {self.num_images} images: give one prompt, "
                              "or one per image")


@dataclass(frozen=True)
class CalibrationConfig(Config):
    """DNTC and the baselines. mu and sigma are in timesteps of the model's training schedule
    (checked against the model's number of training timesteps when it is loaded)."""
    kind: str = "dntc"
    num_samples: int = 32  # N = 32, 64, 128 gave the same error table; 32 keeps quantize under a minute on 2 cores
    mu: float = 400.0
    sigma: float = 400.0
    fixed_t: int | None = None  # for kind "fixed": the timestep (default: mu)
    samples_per_trajectory: int = 16  # 1 = one trajectory per sample, as PTQ4DM's script does
    data: str | None = None  # images for kind "forward"
    prompts: str | None = None  # text-to-image: a prompt file (default: the shipped datasets/prompts.txt)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    _nested = {"sampling": SamplingConfig}

    def __post_init__(self):
        _choice("calibration kind", self.kind, CALIBRATION_KINDS)
        _positive(num_samples=self.num_samples, samples_per_trajectory=self.samples_per_trajectory)
        _finite(mu=self.mu, sigma=self.sigma)
        if self.mu < 0:
            raise ConfigError(f"mu must lie in [0, T], got {self.mu}")
        if self.sigma <= 0:
            raise ConfigError(f"sigma must be > 0, got {self.sigma}")
        if self.fixed_t is not None and self.fixed_t < 0:
            raise ConfigError(f"fixed timestep must lie in [0, T], got {self.fixed_t}")
        if self.kind == "forward" and not self.data:
            raise ConfigError("calibration 'forward' noises real images: pass --data with an image folder or tar")
        if self.data and self.kind != "forward":
            raise ConfigError(f"--data is only used by --calibration forward, not {self.kind}")

    def check_timesteps(self, T: int) -> None:
        """mu and fixed_t against the model's T (called once the model is known, before any work)."""
        if self.mu > T:
            raise ConfigError(f"mu must lie in [0, T] = [0, {T}], got {self.mu}")
        if self.fixed_t is not None and self.fixed_t > T:
            raise ConfigError(f"fixed timestep must lie in [0, {T}], got {self.fixed_t}")

    @classmethod
    def from_dict(cls, data: dict):
        data = dict(data)
        data.pop("num_train_timesteps", None)  # recipes before 0.2 stored the model's T here
        moved = {k: data.pop(k) for k in ("steps", "scheduler", "seed") if k in data}
        if moved:  # ... and the sampling options beside the calibration ones
            data["sampling"] = dict(data.get("sampling") or {}, **moved)
        return super().from_dict(data)


def _nncf_choice(option: str, value, choices: dict):
    if value not in choices:
        raise ConfigError(f"unknown {option} {value!r}; NNCF offers {', '.join(choices)}")
    return choices[value]


def nncf_enums(cfg: "QuantizeConfig") -> dict:
    """The NNCF values of cfg's preset, model type, range estimator, overflow fix and target device,
    looked up in NNCF's own enums (imported here: NNCF takes seconds to import); None for an overflow
    fix or target device left to the target (QuantizeConfig.for_target sets them)."""
    import nncf
    from nncf.quantization.advanced_parameters import OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as R

    estimators = {a.lower().replace("_", "-"): getattr(R, a) for a in dir(R) if a.isupper()}
    return dict(
        preset=_nncf_choice("preset", cfg.preset, {p.value: p for p in nncf.QuantizationPreset}),
        model_type=_nncf_choice("model type", cfg.model_type, {"none": None, **{m.value: m for m in nncf.ModelType}}),
        range_estimator=_nncf_choice("range estimator", cfg.range_estimator, estimators),
        overflow_fix=cfg.overflow_fix and _nncf_choice("overflow fix", cfg.overflow_fix,
                                                       {f.value: f for f in OverflowFix}),
        target_device=cfg.target_device and _nncf_choice("target device", cfg.target_device,
                                                         {d.value: d for d in nncf.TargetDevice}),
    )


@dataclass(frozen=True)
class QuantizeConfig(Config):
    model: str = DEFAULT_MODEL
    output: str | None = None
    overwrite: bool = False
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    calibration_set: str | None = None  # reuse a saved calibration.npz
    mode: str = "int8"  # int8 (weights + activations) or weights (nncf.compress_weights, int8)
    preset: str = "mixed"  # NNCF's QuantizationPreset value
    model_type: str = "transformer"  # NNCF's ModelType value, or none
    # the CPU class the int8 model is for: avx2, vnni, amx, or auto (the CPU that quantizes); it sets
    # the overflow fix and the target device below where they are None (edge_dm/targets.py)
    target: str = "auto"
    target_device: str | None = None  # NNCF's TargetDevice value (None: by target, CPU_SPR for amx, else CPU)
    fast_bias_correction: bool = True
    smooth_quant_alpha: float | None = None
    subset_size: int | None = None
    ignored_names: tuple = ()
    ignored_patterns: tuple = ()
    ignored_types: tuple = ()
    range_estimator: str = "minmax"  # a RangeEstimatorParametersSet name, lower case with dashes
    # NNCF's overflow fix: 7-bit weights, so int8 convolutions on CPUs without VNNI (AVX2's saturating
    # vpmaddubsw) don't overflow. NNCF's default fixes the first layer only; on an AVX2-only CPU that left
    # 3x the error and visibly broken images (docs/QUANTIZATION.md), so for target avx2 edge-dm fixes all
    # layers; vnni and amx need no fix and keep 8-bit weights (None: by target).
    overflow_fix: str | None = None
    # Modules left in float, by name (None: the model family's default; for the unconditional UNet
    # conv_in, conv_out and time_emb, chosen by drift from fp32 in docs/QUANTIZATION.md).
    keep_float: tuple | None = None
    # Q-Diffusion's shortcut split: each up-path shortcut convolution of a skip concatenation as two
    # convolutions summed (the same function), so its two inputs get an int8 scale each (None: the model
    # family's default, on for unet2d int8: it cut the shipped model's held-out error by 44% over three
    # calibration seeds; docs/QUANTIZATION.md, "Calibration, measured with spread")
    split_shortcut: bool | None = None
    eval_trajectories: int = 4  # held-out trajectories, each sampled at 10 timesteps spread over [0, T]
    # A quality budget: the most held-out error (summary.mean_rel_l2: the relative L2 error of the int8 noise
    # prediction against fp32, averaged over the held-out timesteps) the int8 model may have; NNCF's accuracy
    # control returns the most sensitive operations to float until it holds (None: no budget;
    # docs/QUANTIZATION.md, "Accuracy-aware mode").
    max_drop: float | None = None
    # NNCF's max_num_iterations: the most steps its accuracy control takes, each returning one group of
    # operations (those sharing a quantizer) to float; a budget not met within them is refused (None: no limit)
    max_iterations: int | None = None
    report_images: int | None = None  # text-to-image: prompts in report.png (None: the family's default; 0: none)
    text_encoder: str = "float"  # text-to-image: the text encoder float, or NNCF int8 weight compression
    vae: str = "float"  # text-to-image: the VAE likewise
    _nested = {"calibration": CalibrationConfig}

    def __post_init__(self):
        _choice("quantization mode", self.mode, QUANTIZE_MODES)
        _choice("target", self.target, TARGETS)
        _choice("text-encoder mode", self.text_encoder, COMPONENT_MODES)
        _choice("vae mode", self.vae, COMPONENT_MODES)
        _positive_if_set(subset_size=self.subset_size)
        _finite(smooth_quant_alpha=self.smooth_quant_alpha)
        if self.smooth_quant_alpha is not None and not (self.smooth_quant_alpha == -1 or 0 <= self.smooth_quant_alpha <= 1):
            raise ConfigError("smooth-quant-alpha must lie in [0, 1] (or -1 to disable)")
        _positive(eval_trajectories=self.eval_trajectories)
        _finite(max_drop=self.max_drop)
        if self.max_drop is not None and self.max_drop <= 0:
            raise ConfigError(f"max-drop must be > 0 (a held-out relative L2 error, e.g. 0.02), got {self.max_drop}")
        if self.max_drop is not None and self.mode != "int8":
            raise ConfigError("--max-drop returns int8 operations to float: it needs --mode int8")
        _positive_if_set(max_iterations=self.max_iterations)
        if self.max_iterations is not None and self.max_drop is None:
            raise ConfigError("--max-iterations bounds the search for --max-drop: give a budget with --max-drop")
        if self.report_images is not None and self.report_images < 0:
            raise ConfigError(f"report-images must be >= 0, got {self.report_images}")
        bad = [n for n in self.keep_float or () if not n or not all(c.isalnum() or c in "._" for c in n)]
        if bad:
            raise ConfigError(f"keep-float takes module names such as conv_in, got {bad}")
        if self.mode == "weights" and (self.calibration != CalibrationConfig() or self.calibration_set):
            raise ConfigError("--mode weights compresses weights without calibration: drop the calibration options")
        nncf_enums(self)  # unknown NNCF names fail here, before any work

    def for_target(self, isa=None) -> "QuantizeConfig":
        """This config with its target resolved (auto: the CPU whose ISA flags are `isa`, default this
        one) and the overflow fix and target device it sets, where not given explicitly."""
        from edge_dm.targets import nncf_defaults, resolve

        target = resolve(self.target, isa)
        by_target = nncf_defaults(target)
        return self.replace(target=target, overflow_fix=self.overflow_fix or by_target["overflow_fix"],
                            target_device=self.target_device or by_target["target_device"])

    @classmethod
    def from_dict(cls, data: dict):
        data = dict(data)
        data.setdefault("keep_float", ())  # recipes from before keep_float quantized every module
        data.setdefault("split_shortcut", False)  # and those from before --split-shortcut split nothing
        if "target" not in data:  # recipes from before --target: what they were quantized with
            data.setdefault("overflow_fix", "first_layer_only")  # NNCF's default, before --overflow-fix
            data.setdefault("target_device", "ANY")
        if data.get("overflow_fix") == "first-layer":  # the name before NNCF's own value was used
            data["overflow_fix"] = "first_layer_only"
        if data.get("range_estimator") == "quantile":
            data["range_estimator"] = "mean-quantile"
        return super().from_dict(data)


@dataclass(frozen=True)
class EvaluateConfig(Config):
    samples: str | None = None  # required: an image folder or a bundle
    reference: str | None = None
    output: str | None = None
    overwrite: bool = False
    compare: str | None = None  # a second bundle or folder: paired drift mode
    num_images: int = 1000
    prompts: tuple = ()  # the prompts of the images (text-to-image): image i has prompt i, cycling through them
    classifier: str | None = None  # class accuracy: a classifier folder or edm-cifar10-classifier; class = the prompt's
    feature_device: str = "openvino"  # Inception on OpenVINO's CPU (f32), or a torch device: cpu, cuda
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    runtime: DeviceConfig = field(default_factory=DeviceConfig)
    _nested = {"sampling": SamplingConfig, "runtime": DeviceConfig}

    def __post_init__(self):
        _positive(num_images=self.num_images)
        if not self.samples:
            raise ConfigError("pass --samples: an image folder or a bundle")
        if not re.fullmatch(r"openvino|cpu|cuda(:\d+)?", self.feature_device):
            raise ConfigError(f"unknown feature device {self.feature_device!r}; "
                              "choose openvino, cpu, cuda or cuda:N")
        if self.reference is None and self.compare is None and self.classifier is None:
            raise ConfigError("pass --reference (FID/sFID), --compare (paired drift) or --classifier, or several")
        if self.classifier is not None and not self.prompts:
            raise ConfigError("--classifier scores each image against the class its prompt names: "
                              "give the prompts (--prompt or --prompts FILE)")
        if self.reference is not None and self.num_images < 2:
            raise ConfigError(f"FID needs at least 2 images (thousands for a meaningful one), got {self.num_images}")


@dataclass(frozen=True)
class BenchmarkConfig(Config):
    model: str = DEFAULT_MODEL
    device: str = "CPU"
    output: str = "benchmark"
    overwrite: bool = False
    iterations: int = 50
    batch_sizes: tuple = (1, 8, 32)
    steps: int = 20
    images: int = 4
    torch_baseline: bool = True
    int8: str | None = None  # an int8 bundle; default: the cached one of `model`, quantized if missing
    # the CI gate: fail when int8 is slower at batch 1 than this many times the float variant a user
    # would pick on this CPU (benchmark.float_baseline); one number for every CPU, or one per CPU class
    # ({"avx2": 0.6, "vnni": 1.5, "amx": 0.75}; a class not named is not gated)
    min_int8_speedup: float | dict | None = None

    def __post_init__(self):
        _positive(iterations=self.iterations, steps=self.steps, images=self.images)
        if not self.batch_sizes:
            raise ConfigError("give at least one batch size")
        _positive(**{f"batch_size_{b}": b for b in self.batch_sizes})
        gates = self.min_int8_speedup
        for isa in gates if isinstance(gates, dict) else ():
            _choice("CPU class in min-int8-speedup", isa, TARGETS[1:])
        for ratio in gates.values() if isinstance(gates, dict) else [gates]:
            _finite(min_int8_speedup=ratio)
            if ratio is not None and ratio <= 0:
                raise ConfigError(f"min-int8-speedup must be > 0, got {ratio}")

    def int8_gate(self, target: str) -> float | None:
        """The minimum int8 speed-up on a CPU of class `target` (avx2, vnni, amx), or None."""
        m = self.min_int8_speedup
        return m.get(target) if isinstance(m, dict) else m

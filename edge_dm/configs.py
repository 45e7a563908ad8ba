"""Every run's options as a frozen dataclass that checks itself and serializes to JSON.

A config is built by the CLI (or by a Python caller), validated on construction, passed to one
library function, and saved into the artifact's recipe.json, so each output says how it was made.
Each option is defined once, here; the CLI takes its defaults from these classes (`default`).

Two kinds: the options of an algorithm (`SamplingConfig`, `DeviceConfig`, `CalibrationConfig`,
`QuantizeConfig`: what `quantize_model`, `calibrate` and `Pipeline` take) and the options of a job,
which wrap them with a model, an output and what the job reports (`ExportConfig`,
`QuantizeJobConfig`, `GenerateConfig`, `EvaluateConfig`, `BenchmarkConfig`). `ClusterConfig`: where
generate and evaluate run their images when not in this process (a Ray cluster).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

from edge_dm.errors import ConfigError
from edge_dm.targets import TARGETS, nncf_defaults, resolve

DEFAULT_MODEL = "edm-cifar10-ddpm"
PRECISIONS = ("fp32", "fp16")
SCHEDULERS = {  # edge-dm's name -> the diffusers class, used unchanged
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm-solver": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "lcm": "LCMScheduler",
}
CALIBRATION_KINDS = ("dntc", "uniform", "pipeline", "fixed", "noise", "forward")
QUANTIZE_MODES = ("int8", "weights")
COMPONENT_MODES = ("float", "int8-weights", "int8")  # int8: weights and activations, calibrated
RECIPE_FORMAT = 2  # recipe.json's layout: 1 (no "format" key) held one flat QuantizeConfig for a quantize job


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


def _integers(minimum: int, what: str, **values):
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"`{name}` must be {what}, got {value!r}")


def _positive(**values):
    _integers(1, "a positive integer", **values)


def _set(values: dict) -> dict:
    """The options of `values` that are set (None means "not set": a default chosen elsewhere)."""
    return {name: value for name, value in values.items() if value is not None}


def _positive_if_set(**values):
    _positive(**_set(values))


def _non_negative_if_set(**values):
    _integers(0, "an integer >= 0", **_set(values))


def _finite(**values):
    for name, value in values.items():
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"`{name}` must be a finite number, got {value!r}")


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"unknown `{name}` {value!r}; choose one of {', '.join(map(str, choices))}")


# --- the algorithms' options -----------------------------------------------------------------------

@dataclass(frozen=True)
class SamplingConfig(Config):
    """What defines the images, with the seed and the bundle: shared by generate, evaluate and
    calibration (which samples at the settings the model is deployed with). None: the model's own
    default (its family's, or its registry entry's), filled in by `resolved`."""
    scheduler: str | None = None  # a key of SCHEDULERS
    steps: int | None = None
    seed: int = 0
    guidance_scale: float | None = None  # text-to-image: classifier-free guidance (1: none)
    height: int | None = None  # text-to-image: image size in pixels
    width: int | None = None
    negative_prompt: str = ""  # text-to-image: what guidance steers away from
    cache_interval: int = 1  # DeepCache: run the whole UNet every N-th step, its shallow part between (1: off)
    cache_branch: int | None = None  # DeepCache: levels the shallow part keeps (1: the full-resolution one; 0: its
    # last layer alone, every family's default)

    def __post_init__(self):
        if self.scheduler is not None:
            _choice("scheduler", self.scheduler, tuple(SCHEDULERS))
        _positive(cache_interval=self.cache_interval)
        _non_negative_if_set(cache_branch=self.cache_branch)
        _positive_if_set(steps=self.steps, height=self.height, width=self.width)
        _finite(guidance_scale=self.guidance_scale)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2 ** 63:
            raise ConfigError(f"`seed` must be an integer in [0, 2**63), got {self.seed!r}")
        if self.guidance_scale is not None and self.guidance_scale < 1:
            raise ConfigError(f"`guidance_scale` must be >= 1 (1: no guidance), got {self.guidance_scale}")
        if not isinstance(self.negative_prompt, str):
            raise ConfigError(f"`negative_prompt` must be a string, got {type(self.negative_prompt).__name__}")

    def resolved(self, defaults: dict) -> "SamplingConfig":
        """This config with each option left None taken from `defaults` (a model's sampling defaults)."""
        return self.replace(**{k: v for k, v in defaults.items() if getattr(self, k) is None and v is not None})


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
        if not isinstance(self.device, str) or not self.device.strip():
            raise ConfigError("`device` must name an OpenVINO device")


@dataclass(frozen=True)
class CalibrationConfig(Config):
    """DNTC and the baselines. mu and sigma are in timesteps of the model's training schedule
    (checked against the model's number of training timesteps when it is loaded)."""
    kind: str = "dntc"
    num_samples: int = 32
    mu: float = 400.0
    sigma: float = 400.0
    fixed_t: int | None = None  # for kind "fixed": the timestep (default: mu)
    samples_per_trajectory: int = 16  # 1 = one trajectory per sample, as PTQ4DM's script does
    data: str | None = None  # images for kind "forward"
    prompts: str | None = None  # text-to-image: a prompt file (default: the model's own, else datasets/prompts.txt)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    _nested = {"sampling": SamplingConfig}

    def __post_init__(self):
        _choice("calibration", self.kind, CALIBRATION_KINDS)
        _positive(num_samples=self.num_samples, samples_per_trajectory=self.samples_per_trajectory)
        _finite(mu=self.mu, sigma=self.sigma)
        if self.mu < 0:
            raise ConfigError(f"`mu` must lie in [0, T], got {self.mu}")
        if self.sigma <= 0:
            raise ConfigError(f"`sigma` must be > 0, got {self.sigma}")
        if self.fixed_t is not None and self.fixed_t < 0:
            raise ConfigError(f"`fixed_t` must lie in [0, T], got {self.fixed_t}")
        if self.kind == "forward" and not self.data:
            raise ConfigError("`calibration` forward noises real images: give `data`, an image folder or tar")
        if self.data and self.kind != "forward":
            raise ConfigError(f"`data` is only used by `calibration` forward, not {self.kind}")

    def check_timesteps(self, T: int) -> None:
        """mu and fixed_t against the model's T (called once the model is known, before any work)."""
        if self.mu > T:
            raise ConfigError(f"`mu` must lie in [0, T] = [0, {T}], got {self.mu}")
        if self.fixed_t is not None and self.fixed_t > T:
            raise ConfigError(f"`fixed_t` must lie in [0, {T}], got {self.fixed_t}")

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
        raise ConfigError(f"unknown `{option}` {value!r}; NNCF offers {', '.join(choices)}")
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
        model_type=_nncf_choice("model_type", cfg.model_type, {"none": None, **{m.value: m for m in nncf.ModelType}}),
        range_estimator=_nncf_choice("range_estimator", cfg.range_estimator, estimators),
        overflow_fix=cfg.overflow_fix and _nncf_choice("overflow_fix", cfg.overflow_fix,
                                                       {f.value: f for f in OverflowFix}),
        target_device=cfg.target_device and _nncf_choice("target_device", cfg.target_device,
                                                         {d.value: d for d in nncf.TargetDevice}),
    )


@dataclass(frozen=True)
class QuantizeConfig(Config):
    """What `quantize_model` does to one network: NNCF's options, the CPU class it is for, what stays
    in float, and an optional quality budget. docs/QUANTIZATION.md says why each default is what it is."""
    mode: str = "int8"  # int8 (weights + activations) or weights (nncf.compress_weights, int8)
    preset: str = "mixed"  # NNCF's QuantizationPreset value
    model_type: str = "transformer"  # NNCF's ModelType value, or none
    target: str = "auto"  # the CPU class: avx2, vnni, amx, or auto (this CPU); edge_dm.targets
    target_device: str | None = None  # NNCF's TargetDevice value (None: by target, CPU_SPR for amx, else CPU)
    fast_bias_correction: bool = True
    smooth_quant_alpha: float | None = None
    subset_size: int | None = None
    ignored_names: tuple = ()
    ignored_patterns: tuple = ()
    ignored_types: tuple = ()
    range_estimator: str = "minmax"  # a RangeEstimatorParametersSet name, lower case with dashes
    overflow_fix: str | None = None  # NNCF's OverflowFix value (None: by target, enable for avx2, else disable)
    keep_float: tuple | None = None  # module names left in float (None: the model's, else its family's set)
    split_shortcut: bool | None = None  # Q-Diffusion's shortcut split (None: the family's default)
    max_drop: float | None = None  # the most held-out error the int8 model may have (None: no budget)
    max_iterations: int | None = None  # NNCF accuracy control's most steps for max_drop (None: no limit)

    def __post_init__(self):
        _choice("mode", self.mode, QUANTIZE_MODES)
        _choice("target", self.target, TARGETS)
        _positive_if_set(subset_size=self.subset_size)
        _finite(smooth_quant_alpha=self.smooth_quant_alpha)
        if self.smooth_quant_alpha is not None and not (self.smooth_quant_alpha == -1
                                                        or 0 <= self.smooth_quant_alpha <= 1):
            raise ConfigError("`smooth_quant_alpha` must lie in [0, 1] (or -1 to disable)")
        _finite(max_drop=self.max_drop)
        if self.max_drop is not None and self.max_drop <= 0:
            raise ConfigError(f"`max_drop` must be > 0 (a held-out relative L2 error, e.g. 0.02), got {self.max_drop}")
        if self.max_drop is not None and self.mode != "int8":
            raise ConfigError("`max_drop` returns int8 operations to float: it needs `mode` int8")
        _positive_if_set(max_iterations=self.max_iterations)
        if self.max_iterations is not None and self.max_drop is None:
            raise ConfigError("`max_iterations` bounds the search for `max_drop`: give a budget with `max_drop`")
        bad = [n for n in self.keep_float or () if not isinstance(n, str) or not n
               or not all(c.isalnum() or c in "._" for c in n)]
        if bad:
            raise ConfigError(f"`keep_float` takes module names such as conv_in, got {bad}")
        for p in self.ignored_patterns:
            try:
                re.compile(p)
            except (re.error, TypeError) as exc:
                raise ConfigError(f"`ignored_patterns` {p!r}: not a regular expression ({exc})") from None
        nncf_enums(self)  # unknown NNCF names fail here, before any work

    def for_target(self, isa=None) -> "QuantizeConfig":
        """This config with its target resolved (auto: the CPU whose ISA flags are `isa`, default this
        one) and the overflow fix and target device it sets, where not given explicitly."""
        target = resolve(self.target, isa)
        by_target = nncf_defaults(target)
        return self.replace(target=target, overflow_fix=self.overflow_fix or by_target["overflow_fix"],
                            target_device=self.target_device or by_target["target_device"])


@dataclass(frozen=True)
class ClusterConfig(Config):
    """Where generate and evaluate make their images when not in this process: a Ray cluster
    (edge_dm.jobs.cluster). None of it changes which image a seed gives."""
    address: str = "local"  # local (an embedded Ray here) or a Ray address: auto, ray://host:10001, host:6379
    workers: int | None = None  # Ray actors, each holding the compiled bundle (None: as many as the cluster places)
    cpus_per_worker: int | None = None  # CPUs each worker reserves and is pinned to (None: 4, a node's CPUs if fewer)
    shard_images: int | None = None  # images per piece of work (None: shrinking as the job ends, whole batches)
    timeout_s: float = 30.0  # how long the cluster may take to answer, and its workers to start

    def __post_init__(self):
        if not isinstance(self.address, str) or not self.address.strip() or self.address != self.address.strip():
            raise ConfigError(f"`address` must be local or a Ray address (auto, ray://host:10001, host:6379), "
                              f"got {self.address!r}")
        _positive_if_set(workers=self.workers, cpus_per_worker=self.cpus_per_worker, shard_images=self.shard_images)
        _finite(timeout_s=self.timeout_s)
        if self.timeout_s <= 0:
            raise ConfigError(f"`timeout_s` must be > 0 seconds, got {self.timeout_s}")


# --- the jobs' options -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportConfig(Config):
    model: str = DEFAULT_MODEL
    output: str | None = None
    precision: str = "fp32"
    overwrite: bool = False

    def __post_init__(self):
        _choice("precision", self.precision, PRECISIONS)


_JOB_FIELDS = ("model", "output", "overwrite", "calibration", "calibration_set", "eval_trajectories",
               "report_images", "text_encoder", "vae")


@dataclass(frozen=True)
class QuantizeJobConfig(Config):
    """`edge-dm quantize`: calibrate a model, quantize its denoiser, check it on held-out
    trajectories and write an int8 bundle."""
    model: str = DEFAULT_MODEL
    output: str | None = None  # None: the bundle cache, where `generate` finds it
    overwrite: bool = False
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    calibration_set: str | None = None  # reuse a saved calibration.npz
    quantization: QuantizeConfig = field(default_factory=QuantizeConfig)
    eval_trajectories: int = 4  # held-out trajectories, each sampled at 10 timesteps spread over [0, T]
    report_images: int | None = None  # text-to-image: prompts in report.png (None: the family's default; 0: none)
    text_encoder: str = "float"  # text-to-image: the text encoder float, or NNCF int8 weight compression
    vae: str = "float"  # text-to-image: the VAE decoder likewise
    _nested = {"calibration": CalibrationConfig, "quantization": QuantizeConfig}

    def __post_init__(self):
        _choice("text_encoder", self.text_encoder, COMPONENT_MODES)
        _choice("vae", self.vae, COMPONENT_MODES)
        _positive(eval_trajectories=self.eval_trajectories)
        if self.report_images is not None and self.report_images < 0:
            raise ConfigError(f"`report_images` must be >= 0, got {self.report_images}")
        if self.quantization.mode == "weights" and (self.calibration != CalibrationConfig() or self.calibration_set):
            raise ConfigError("`mode` weights compresses weights without calibration: drop the calibration options")

    @classmethod
    def from_recipe(cls, data: dict, format: int = RECIPE_FORMAT) -> "QuantizeJobConfig":
        """The job config a recipe's "config" holds, in any recipe format edge-dm has written."""
        if format >= 2:
            return cls.from_dict(data)
        data = dict(data)  # format 1: one flat config; its algorithm options, with what older ones lacked
        algorithm = {k: data.pop(k) for k in list(data) if k not in _JOB_FIELDS}
        algorithm.setdefault("keep_float", ())  # recipes from before keep_float quantized every module
        algorithm.setdefault("split_shortcut", False)  # and those from before the split split nothing
        if "target" not in algorithm:  # recipes from before targets: what they were quantized with
            algorithm.setdefault("overflow_fix", "first_layer_only")  # NNCF's default then
            algorithm.setdefault("target_device", "ANY")
        if algorithm.get("overflow_fix") == "first-layer":  # the name before NNCF's own value was used
            algorithm["overflow_fix"] = "first_layer_only"
        if algorithm.get("range_estimator") == "quantile":
            algorithm["range_estimator"] = "mean-quantile"
        return cls.from_dict(dict(data, quantization=algorithm))


@dataclass(frozen=True)
class GenerateConfig(Config):
    model: str = DEFAULT_MODEL
    output: str = "samples"
    overwrite: bool = False
    num_images: int = 16
    prompts: tuple = ()  # text-to-image: image i has prompt i, cycling through them
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    runtime: DeviceConfig = field(default_factory=DeviceConfig)
    cluster: ClusterConfig | None = None  # None: in this process; else sharded by seeds over a Ray cluster's workers
    _nested = {"sampling": SamplingConfig, "runtime": DeviceConfig, "cluster": ClusterConfig}

    def __post_init__(self):
        _positive(num_images=self.num_images)
        if not all(isinstance(p, str) for p in self.prompts):
            raise ConfigError("`prompts` must be strings")


@dataclass(frozen=True)
class EvaluateConfig(Config):
    samples: str | None = None  # required: an image folder, a bundle, or a model with a bundle edge-dm made
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
    cluster: ClusterConfig | None = None  # None: in this process; else bundles' images (and features) on a Ray cluster
    _nested = {"sampling": SamplingConfig, "runtime": DeviceConfig, "cluster": ClusterConfig}

    def __post_init__(self):
        _positive(num_images=self.num_images)
        if not self.samples:
            raise ConfigError("give `samples`: an image folder or a bundle")
        if not re.fullmatch(r"openvino|cpu|cuda(:\d+)?", self.feature_device):
            raise ConfigError(f"unknown `feature_device` {self.feature_device!r}; choose openvino, cpu, cuda or cuda:N")
        if self.reference is None and self.compare is None and self.classifier is None:
            raise ConfigError("give `reference` (FID/sFID), `compare` (paired drift) or `classifier`, or several")
        if self.classifier is not None and not self.prompts:
            raise ConfigError("`classifier` scores each image against the class its prompt names: give the prompts")
        if self.reference is not None and self.num_images < 2:
            raise ConfigError(f"FID needs at least 2 images (thousands for a meaningful one), got {self.num_images}")


@dataclass(frozen=True)
class BenchmarkConfig(Config):
    model: str | None = None  # default: the model `int8` was quantized from, else DEFAULT_MODEL
    device: str = "CPU"
    output: str = "benchmark"
    overwrite: bool = False
    iterations: int = 50
    batch_sizes: tuple = (1, 8, 32)
    steps: int | None = None  # sampler steps of the whole images (None: the model's own)
    images: int = 4
    height: int | None = None  # text-to-image: image size in pixels (None: the model's)
    width: int | None = None
    torch_baseline: bool = True
    float_precisions: tuple = ("f32", "bf16", "f16")  # OpenVINO float variants to time, where the device has them
    cache_intervals: tuple = ()  # DeepCache intervals to time whole images at, for int8 and the float baseline
    cache_branch: int | None = None  # DeepCache branch of those images (SamplingConfig's; None: the model's)
    int8: str | None = None  # an int8 bundle; default: the cached one of `model`, quantized if missing
    # the CI gate: fail when int8 is slower at batch 1 than this many times the float variant a user
    # would pick on this CPU (benchmark.float_baseline); one number for every CPU, or one per CPU class
    # ({"avx2": 0.6, "vnni": 1.5, "amx": 0.75}; a class not named is not gated)
    min_int8_speedup: float | dict | None = None

    def __post_init__(self):
        _positive(iterations=self.iterations, images=self.images)
        _positive_if_set(steps=self.steps, height=self.height, width=self.width)
        _non_negative_if_set(cache_branch=self.cache_branch)
        for p in self.float_precisions:
            _choice("float_precisions", p, ("f32", "bf16", "f16"))
        if not self.batch_sizes:
            raise ConfigError("give at least one batch size")
        _positive(**{f"batch_size_{b}": b for b in self.batch_sizes})
        for n in self.cache_intervals:
            if not isinstance(n, int) or isinstance(n, bool) or n < 2:
                raise ConfigError(f"`cache_intervals` must be integers >= 2 (1 is DeepCache off), got {n!r}")
        gates = self.min_int8_speedup
        for isa in gates if isinstance(gates, dict) else ():
            _choice("CPU class in min_int8_speedup", isa, TARGETS[1:])
        for ratio in gates.values() if isinstance(gates, dict) else [gates]:
            _finite(min_int8_speedup=ratio)
            if ratio is not None and ratio <= 0:
                raise ConfigError(f"`min_int8_speedup` must be > 0, got {ratio}")

    def int8_gate(self, target: str) -> float | None:
        """The minimum int8 speed-up on a CPU of class `target` (avx2, vnni, amx), or None."""
        m = self.min_int8_speedup
        return m.get(target) if isinstance(m, dict) else m

"""Every run's options as a frozen dataclass that checks itself and serializes to JSON.

A config is built by the CLI (or by a Python caller), validated on construction, passed to one
library function, and saved into the artifact's recipe.json, so each output says how it was made.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

from edge_dm.errors import ConfigError

DEFAULT_MODEL = "edm-cifar10-ddpm"
PRECISIONS = ("fp32", "fp16")
CALIBRATION_KINDS = ("dntc", "uniform", "fixed", "noise", "forward")
PRESETS = ("performance", "mixed")
MODEL_TYPES = ("none", "transformer")
RANGE_ESTIMATORS = ("minmax", "mean-minmax", "quantile", "histogram")
OVERFLOW_FIXES = ("enable", "first-layer", "disable")


class Config:
    """Mixin: JSON round trip for the frozen dataclasses below."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


def _positive(**values):
    for name, value in values.items():
        if value is None or value < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value}")


def _positive_if_set(**values):
    """Like _positive, for options whose None means "not set" (a default chosen elsewhere)."""
    _positive(**{name: value for name, value in values.items() if value is not None})


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


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
    device: str = "CPU"
    num_images: int = 16
    steps: int = 100
    scheduler: str = "ddim"
    seed: int = 0
    batch_size: int = 8  # images per UNet request; 8 is fastest on the 16-core Xeon (docs/BENCHMARKS.md)
    overwrite: bool = False
    precision_hint: str | None = None  # OpenVINO INFERENCE_PRECISION_HINT, e.g. f32 or bf16
    parallel: int | None = None  # batches in flight, one infer request each (default: the device's optimum)
    cache_interval: int = 1  # DeepCache: run the whole UNet every N-th step, its shallow part between (1: off)
    cache_branch: int = 1  # DeepCache: how many levels the shallow part keeps (1: the full-resolution one)

    def __post_init__(self):
        from edge_dm.sampling import SCHEDULERS

        _positive(num_images=self.num_images, steps=self.steps, batch_size=self.batch_size,
                  cache_interval=self.cache_interval, cache_branch=self.cache_branch)
        _positive_if_set(parallel=self.parallel)
        _choice("scheduler", self.scheduler, tuple(SCHEDULERS))
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if not self.device.strip():
            raise ConfigError("device must not be empty")


@dataclass(frozen=True)
class CalibrationConfig(Config):
    """DNTC and the baselines. mu and sigma are in timesteps of the model's training schedule."""
    kind: str = "dntc"
    num_samples: int = 32  # N = 32, 64, 128 gave the same error table; 32 keeps quantize under a minute on 2 cores
    mu: float = 400.0
    sigma: float = 400.0
    fixed_t: int | None = None  # for kind "fixed": the timestep (default: mu)
    steps: int = 100
    scheduler: str = "ddim"
    seed: int = 0
    samples_per_trajectory: int = 16  # 1 = one trajectory per sample, as PTQ4DM's script does
    data: str | None = None  # images for kind "forward"
    num_train_timesteps: int = 1000

    def __post_init__(self):
        from edge_dm.sampling import SCHEDULERS

        _choice("calibration kind", self.kind, CALIBRATION_KINDS)
        _choice("scheduler", self.scheduler, tuple(SCHEDULERS))
        _positive(num_samples=self.num_samples, steps=self.steps,
                  samples_per_trajectory=self.samples_per_trajectory)
        T = self.num_train_timesteps
        if not 0 <= self.mu <= T:
            raise ConfigError(f"mu must lie in [0, T] = [0, {T}], got {self.mu}")
        if self.sigma <= 0:
            raise ConfigError(f"sigma must be > 0, got {self.sigma}")
        if self.fixed_t is not None and not 0 <= self.fixed_t <= T:
            raise ConfigError(f"fixed timestep must lie in [0, {T}], got {self.fixed_t}")
        if self.kind == "forward" and not self.data:
            raise ConfigError("calibration 'forward' noises real images: pass --data with an image folder or tar")


@dataclass(frozen=True)
class QuantizeConfig(Config):
    model: str = DEFAULT_MODEL
    output: str | None = None
    overwrite: bool = False
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    calibration_set: str | None = None  # reuse a saved calibration.npz
    mode: str = "int8"  # int8 (weights + activations) or weights (nncf.compress_weights, int8)
    preset: str = "mixed"
    model_type: str = "transformer"
    fast_bias_correction: bool = True
    smooth_quant_alpha: float | None = None
    subset_size: int | None = None
    ignored_names: tuple = ()
    ignored_patterns: tuple = ()
    ignored_types: tuple = ()
    range_estimator: str = "minmax"
    # NNCF's overflow fix: 7-bit weights, so int8 convolutions on CPUs without VNNI (AVX2's saturating
    # vpmaddubsw) don't overflow. NNCF's default fixes the first layer only; on an AVX2-only CPU that left
    # 3x the error and visibly broken images (docs/QUANTIZATION.md), so edge-dm fixes all layers.
    overflow_fix: str = "enable"
    # UNet modules left in float (by name: conv_in, conv_out, and time_emb for the time-embedding MLP
    # and every resnet's time_emb_proj). Their int8 error dominated: keeping these three in float cut
    # the drift of 64 images from fp32 by 4.3 dB at no measurable speed cost (docs/QUANTIZATION.md).
    keep_float: tuple = ("conv_in", "conv_out", "time_emb")
    eval_trajectories: int = 4  # held-out trajectories, each sampled at 10 timesteps spread over [0, T]

    def __post_init__(self):
        _choice("quantization mode", self.mode, ("int8", "weights"))
        _choice("preset", self.preset, PRESETS)
        _choice("model type", self.model_type, MODEL_TYPES)
        _choice("range estimator", self.range_estimator, RANGE_ESTIMATORS)
        _choice("overflow fix", self.overflow_fix, OVERFLOW_FIXES)
        _positive_if_set(subset_size=self.subset_size)
        if self.smooth_quant_alpha is not None and not (self.smooth_quant_alpha == -1 or 0 <= self.smooth_quant_alpha <= 1):
            raise ConfigError("smooth-quant-alpha must lie in [0, 1] (or -1 to disable)")
        _positive(eval_trajectories=self.eval_trajectories)
        bad = [n for n in self.keep_float if not n or not all(c.isalnum() or c in "._" for c in n)]
        if bad:
            raise ConfigError(f"keep-float takes UNet module names such as conv_in, got {bad}")

    @classmethod
    def from_dict(cls, data: dict):
        data = dict(data)
        data.setdefault("keep_float", ())  # recipes from before keep_float quantized every module
        if isinstance(data.get("calibration"), dict):
            data["calibration"] = CalibrationConfig.from_dict(data["calibration"])
        return super().from_dict(data)


@dataclass(frozen=True)
class EvaluateConfig(Config):
    samples: str
    reference: str | None = None
    output: str | None = None
    num_images: int = 1000
    device: str = "CPU"
    steps: int = 100
    scheduler: str = "ddim"
    seed: int = 0
    batch_size: int = 8  # images per UNet request (see GenerateConfig)
    compare: str | None = None  # a second bundle: paired drift mode
    feature_device: str = "openvino"  # Inception on OpenVINO's CPU (f32), or a torch device: cpu, cuda
    parallel: int | None = None  # batches in flight (see GenerateConfig)
    cache_interval: int = 1  # DeepCache for generated images (see GenerateConfig)
    cache_branch: int = 1

    def __post_init__(self):
        from edge_dm.sampling import SCHEDULERS

        _positive(num_images=self.num_images, steps=self.steps, batch_size=self.batch_size,
                  cache_interval=self.cache_interval, cache_branch=self.cache_branch)
        _positive_if_set(parallel=self.parallel)
        _choice("scheduler", self.scheduler, tuple(SCHEDULERS))
        if not re.fullmatch(r"openvino|cpu|cuda(:\d+)?", self.feature_device):
            raise ConfigError(f"unknown feature device {self.feature_device!r}; "
                              "choose openvino, cpu, cuda or cuda:N")
        if self.reference is None and self.compare is None:
            raise ConfigError("pass --reference (FID/sFID) or --compare (paired drift), or both")


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
    min_int8_speedup: float | None = None  # fail when int8/fp32 latency ratio is below this

    def __post_init__(self):
        _positive(iterations=self.iterations, steps=self.steps, images=self.images)
        if not self.batch_sizes:
            raise ConfigError("give at least one batch size")
        _positive(**{f"batch_size_{b}": b for b in self.batch_sizes})

"""edge-dm's pipeline: a bundle compiled on an OpenVINO device, called like a diffusers pipeline.

    from edge_dm import Pipeline
    pipe = Pipeline.from_pretrained("edm-cifar10-ddpm", device="CPU")  # its int8 bundle
    out = pipe(num_images=4, steps=50, seed=0)                        # out.images: PIL images

Every image depends on its seed (image i of a call: seed + i), the bundle and the sampling options
only: not on how many images run beside it, the batch size or the number of batches in flight
(all of which only change speed). The UNet runs under OpenVINO's THROUGHPUT hint with requests of
`batch_size` images (the last one padded), `parallel` batches in flight, each its own loop.

An int8 bundle made for a CPU with VNNI (no overflow fix) warns once, one line on stderr, when it
runs on a CPU without VNNI, where its int8 convolutions may overflow (`warn_overflow_risk`).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from edge_dm.bundle import Bundle
from edge_dm.caching import OpenVINOCachedNet, split_ir
from edge_dm.configs import DeviceConfig, SamplingConfig
from edge_dm.errors import ConfigError
from edge_dm.families.base import SAMPLE, Denoiser
from edge_dm.runtime import OpenVINOModel, check_device, check_precision_hint
from edge_dm.sampling import check_steps, generate, make_scheduler
from edge_dm.targets import cpu_isa, float_rest, made_for, overflow_risk


@dataclass
class PipelineOutput:
    images: list  # PIL images, or a uint8 array (N, H, W, 3) with output_type="np"
    seeds: list  # image i's seed
    timings: dict = field(default_factory=dict)  # seconds, images_per_s, unet_calls, unet_ms_per_call, ...


_warned: set = set()


def warn_overflow_risk(bundle: Bundle, device: str, isa=None) -> str | None:
    """The warning for an int8 bundle without the overflow fix on every layer (made for vnni or amx)
    that runs on the CPU of a machine whose CPU has no VNNI (`isa`: its ISA flags, default this
    machine's), or None. It is logged once per bundle (logger "edge_dm": one line on stderr unless
    logging is configured otherwise)."""
    if bundle.precision != "int8" or ("CPU" not in device.upper() and not device.upper().startswith("AUTO")):
        return None
    made = made_for(bundle.read_model()) or {"overflow_fix": _recorded_overflow_fix(bundle.recipe)}
    why = overflow_risk(made, cpu_isa() if isa is None else isa)
    if why is None:
        return None
    msg = (f"Warning: int8 bundle {bundle.path} was {why} (overflow fix {made['overflow_fix']}), and this CPU has "
           "no VNNI: its int8 convolutions may overflow here and give wrong images; for this CPU quantize with "
           "--target avx2")
    if msg not in _warned:
        _warned.add(msg)
        logging.getLogger("edge_dm").warning(msg)
    return msg


def _recorded_overflow_fix(recipe: dict):
    """The overflow fix a recipe of any format records (bundles from before the IR carried it)."""
    config = recipe.get("config") or {}
    return (config.get("quantization") or config).get("overflow_fix")


class Pipeline:
    def __init__(self, bundle: Bundle, runtime: DeviceConfig = DeviceConfig()):
        if runtime.precision_hint is None and bundle.precision == "int8" and runtime.device.upper() == "CPU":
            runtime = runtime.replace(precision_hint=float_rest(cpu_isa(), bundle.family.conditioning.takes_prompts))
        self.bundle, self.family, self.runtime = bundle, bundle.family, runtime
        self.conditioning = self.family.conditioning
        check_device(runtime.device)
        check_precision_hint(runtime.device, runtime.precision_hint)
        warn_overflow_risk(bundle, runtime.device)
        self.components = bundle.components(runtime.device, runtime.precision_hint)
        self._nets: dict = {}  # compiled UNets by their compile options, reused by later calls
        self._cache_branches: set = set()  # DeepCache branches the IR was found to split at
        self.last_denoiser = None  # the denoiser of the latest call, with its UNet call statistics

    @classmethod
    def from_pretrained(cls, bundle_or_model, device: str = "CPU", precision: str = "int8", **runtime) -> "Pipeline":
        """A bundle folder, or a model name whose bundle of `precision` edge-dm made earlier;
        `runtime`: DeviceConfig's options (batch_size, parallel, precision_hint)."""
        return cls(Bundle.from_pretrained(bundle_or_model, precision), DeviceConfig(device=device, **runtime))

    def denoiser(self, sampling: SamplingConfig, num_images: int | None = None) -> Denoiser:
        """The bundle's denoiser on the device, as the sampling options ask (DeepCache, guidance).

        Always the THROUGHPUT hint and requests of batch_size images, so an image does not depend on
        how many run beside it; one batch gets one stream on all cores, more get `parallel` streams
        (default: the device's optimal number). Every dimension of the sample is compiled static (the
        size `sampling` asks): see edge_dm.runtime.compile_model. The compiled UNet is kept for later
        calls with the same compile options (as a diffusers pipeline keeps its modules): only the
        first call of a size pays for compiling."""
        sampling = self.bundle.sampling(sampling)
        model = self.bundle.read_model()
        r = self.runtime
        one_batch = num_images is not None and num_images <= r.batch_size
        options = dict(device=r.device, hint="THROUGHPUT", precision_hint=r.precision_hint,
                       request_batch=r.batch_size * self.conditioning.net_batch(sampling),
                       streams=1 if one_batch and r.parallel is None else r.parallel,
                       shapes={SAMPLE: tuple(self.conditioning.sample_shape(self.bundle, sampling))})
        cached = sampling.cache_interval > 1
        key = (sampling.cache_branch if cached else None, *((k, str(v)) for k, v in sorted(options.items())))
        if key not in self._nets:
            self._nets[key] = OpenVINOCachedNet(model, sampling.cache_branch, self.family, **options) if cached \
                else OpenVINOModel(model, **options)
        return Denoiser(self.conditioning, self._nets[key], self.conditioning.guidance(sampling))

    def check(self, sampling: SamplingConfig, prompts=()) -> SamplingConfig:
        """Everything about a request that can be wrong, checked before any work; returns `sampling`
        with the model's defaults filled in."""
        sampling = self.bundle.sampling(sampling)
        self.conditioning.check_ir(self.bundle.read_model())  # a corrupt IR fails here, not after the first images
        self.conditioning.check(self.bundle, sampling, list(prompts))
        check_steps(sampling.scheduler, self.bundle.scheduler_config, sampling.steps)
        if sampling.cache_interval > 1:
            if sampling.cache_interval >= sampling.steps:
                raise ConfigError(f"`cache_interval` {sampling.cache_interval} leaves no step after the first to "
                                  f"reuse the cache in a run of {sampling.steps} `steps`")
            if sampling.cache_branch not in self._cache_branches:  # splitting a large IR takes a while: once
                split_ir(self.bundle.read_model(), sampling.cache_branch, self.family)
                self._cache_branches.add(sampling.cache_branch)
        return sampling

    def sample(self, num_images: int, sampling: SamplingConfig = SamplingConfig(), prompts=(),
               progress=None) -> np.ndarray:
        """uint8 images (N, H, W, 3): image i from seed sampling.seed + i (and prompt i, or the one prompt)."""
        prompts = list(prompts)
        if not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 1:
            raise ConfigError(f"`num_images` must be a positive integer, got {num_images!r}")
        if len(prompts) > 1 and len(prompts) != num_images:
            raise ConfigError(f"{len(prompts)} prompts for {num_images} images: give one prompt, or one per image")
        sampling = self.check(sampling, prompts)
        if len(prompts) == 1:
            prompts = prompts * num_images
        denoiser = self.denoiser(sampling, num_images)
        denoiser.net.reset_stats()  # the call statistics are this call's (calls sharing a Pipeline: theirs together)
        self.last_denoiser = denoiser
        cond = self.conditioning.encode(self.components, prompts, sampling)
        batches = math.ceil(num_images / self.runtime.batch_size)
        return generate(denoiser, make_scheduler(sampling.scheduler, self.bundle.scheduler_config), num_images,
                        self.runtime.batch_size, sampling.steps, sampling.seed,
                        self.conditioning.sample_shape(self.bundle, sampling), cond=cond, progress=progress,
                        workers=min(denoiser.parallel, batches), cache_interval=sampling.cache_interval,
                        finish=lambda x: self.conditioning.decode(self.components, x))

    def __call__(self, prompt: str | list[str] | None = None, *, negative_prompt: str = "",
                 num_images: int | None = None, steps: int | None = None, seed: int = 0,
                 scheduler: str | None = None, guidance_scale: float | None = None, height: int | None = None,
                 width: int | None = None, cache_interval: int = 1, cache_branch: int | None = None,
                 output_type: str = "pil", progress=None) -> PipelineOutput:
        """Generate images, as a diffusers pipeline does.

        Args:
            prompt: text-to-image: one prompt for every image, or a list with one prompt per image.
            negative_prompt: text-to-image: what classifier-free guidance steers away from.
            num_images: how many images (default: one per prompt, or 1).
            steps: denoising steps (default: the model's).
            seed: image i comes from seed + i, whatever the batching.
            scheduler: a diffusers scheduler by edge-dm's name (edge_dm.configs.SCHEDULERS; default: the model's).
            guidance_scale: text-to-image: classifier-free guidance, 1 for none (default: the model's).
            height, width: text-to-image: image size in pixels (default: the model's).
            cache_interval, cache_branch: DeepCache (edge_dm.caching); interval 1 is off (default: the
                model's branch).
            output_type: "pil" for PIL images, "np" for one uint8 array (N, H, W, 3).
            progress: a callable given the number of images each finished batch adds.

        Returns:
            PipelineOutput: `images`, their `seeds`, and the call's `timings`.

        Raises:
            edge_dm.errors.ConfigError (and the other EdgeDMErrors) for anything that cannot be honoured,
            before any work.
        """
        from PIL import Image

        if output_type not in ("pil", "np"):
            raise ConfigError(f"`output_type` must be 'pil' or 'np', got {output_type!r}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        n = max(len(prompts), 1) if num_images is None else num_images
        cfg = SamplingConfig(scheduler=scheduler, steps=steps, seed=seed, guidance_scale=guidance_scale, height=height,
                             width=width, negative_prompt=negative_prompt, cache_interval=cache_interval,
                             cache_branch=cache_branch)
        start = time.perf_counter()
        images = self.sample(n, cfg, prompts, progress)
        seconds = time.perf_counter() - start
        den = self.last_denoiser
        timings = dict(seconds=round(seconds, 3), images_per_s=round(n / seconds, 3), unet_calls=den.calls,
                       unet_ms_per_call=round(1e3 * den.seconds / max(den.calls, 1), 3),
                       compile_seconds=round(getattr(den.net, "compile_seconds", 0.0), 3))
        out = images if output_type == "np" else [Image.fromarray(im) for im in images]
        return PipelineOutput(out, [seed + i for i in range(n)], timings)

"""edge-dm's pipeline: a bundle compiled on an OpenVINO device, called like a diffusers pipeline.

    from edge_dm import Pipeline
    pipe = Pipeline.from_pretrained("edm-cifar10-ddpm", device="CPU")  # its int8 bundle
    images = pipe(num_images=4, steps=50, seed=0).images              # PIL images

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
from dataclasses import dataclass

import numpy as np

from edge_dm.bundle import Bundle
from edge_dm.configs import DeviceConfig, SamplingConfig


@dataclass
class PipelineOutput:
    images: list  # PIL images, or a uint8 array (N, H, W, 3) with output_type="np"
    seeds: list


_warned: set = set()


def warn_overflow_risk(bundle: Bundle, device: str, isa=None) -> str | None:
    """The warning for an int8 bundle without the overflow fix on every layer (made for vnni or amx)
    that runs on the CPU of a machine whose CPU has no VNNI (`isa`: its ISA flags, default this
    machine's), or None. It is logged once per bundle (logger "edge_dm": one line on stderr unless
    logging is configured otherwise)."""
    from edge_dm.targets import cpu_isa, made_for, overflow_risk

    if bundle.precision != "int8" or ("CPU" not in device.upper() and not device.upper().startswith("AUTO")):
        return None
    # the IR says what it was made for; bundles from before --target: their recipe's overflow fix
    made = made_for(bundle.read_model()) or {"overflow_fix": (bundle.recipe.get("config") or {}).get("overflow_fix")}
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


class Pipeline:
    def __init__(self, bundle: Bundle, runtime: DeviceConfig = DeviceConfig()):
        from edge_dm.denoiser import check_device, check_precision_hint

        self.bundle, self.family, self.runtime = bundle, bundle.family, runtime
        check_device(runtime.device)
        check_precision_hint(runtime.device, runtime.precision_hint)
        warn_overflow_risk(bundle, runtime.device)
        self._components: dict = {}
        self._nets: dict = {}  # compiled UNets by their compile options, reused by later calls
        self.last_denoiser = None  # the denoiser of the latest call, with its UNet call statistics

    @classmethod
    def from_pretrained(cls, bundle_or_model, device: str = "CPU", precision: str = "int8", **runtime) -> "Pipeline":
        """A bundle folder, or a model name whose bundle of `precision` edge-dm made earlier;
        `runtime`: DeviceConfig's options (batch_size, parallel, precision_hint)."""
        return cls(Bundle.from_pretrained(bundle_or_model, precision), DeviceConfig(device=device, **runtime))

    def component(self, name: str):
        """A non-denoiser component (text encoder, VAE decoder) compiled once, one image a request."""
        from edge_dm.denoiser import OpenVINOModel

        if name not in self._components:
            self._components[name] = OpenVINOModel(self.bundle.read_model(name), self.runtime.device, "LATENCY",
                                                   self.runtime.precision_hint, request_batch=1)
        return self._components[name]

    def denoiser(self, sampling: SamplingConfig, num_images: int | None = None):
        """The bundle's denoiser on the device, as the sampling options ask (DeepCache, guidance).

        Always the THROUGHPUT hint and requests of batch_size images, so an image does not depend on
        how many run beside it; one batch gets one stream on all cores, more get `parallel` streams
        (default: the device's optimal number). Every dimension of the sample is compiled static (the
        size `sampling` asks): see edge_dm.denoiser.compile_model. Known gap: the one-batch case's
        stream has more threads than the several-batch case's, and some UNets (the shipped int8 t2i
        one) give different bits on a stream of different thread counts.

        The compiled UNet is kept for later calls with the same compile options (as a diffusers
        pipeline keeps its modules): only the first call of a size pays for compiling."""
        model = self.bundle.read_model()
        r = self.runtime
        one_batch = num_images is not None and num_images <= r.batch_size
        options = dict(device=r.device, hint="THROUGHPUT", precision_hint=r.precision_hint,
                       request_batch=r.batch_size * self.family.net_batch(sampling),
                       streams=1 if one_batch and r.parallel is None else r.parallel,
                       shapes=self._shapes(model, sampling))
        cached = sampling.cache_interval > 1
        key = (cached and sampling.cache_branch, *((k, str(v)) for k, v in sorted(options.items())))
        if key not in self._nets:
            if cached:
                from edge_dm.caching import OpenVINOCachedNet

                self._nets[key] = OpenVINOCachedNet(model, sampling.cache_branch, self.family, **options)
            else:
                from edge_dm.denoiser import OpenVINOModel

                self._nets[key] = OpenVINOModel(model, **options)
        return self._denoiser(self._nets[key], sampling)

    def reference_denoiser(self, sampling: SamplingConfig):
        """The denoiser in f32 on the CPU, each call one request on all cores: what calibration and the
        held-out error table sample with. Their calls are a few trajectories wide (2 images with
        guidance), too few to keep THROUGHPUT's streams busy: split over them, SD-1.5 calibration on a
        16-core Xeon ran at about 7 s a step against 1.7 s for one f32 call on all cores."""
        from edge_dm.denoiser import OpenVINOModel

        model = self.bundle.read_model()
        return self._denoiser(OpenVINOModel(model, "CPU", "LATENCY", precision_hint="f32",
                                            shapes=self._shapes(model, sampling)), sampling)

    def _shapes(self, model, sampling: SamplingConfig) -> dict:
        """{sample input: its per-image shape at `sampling`'s size}, for compiling it static."""
        from edge_dm.families.base import SAMPLE, input_roles

        return {input_roles(model)[SAMPLE]: tuple(self.family.sample_shape(self.bundle, sampling))}

    def _denoiser(self, net, sampling: SamplingConfig):
        """The family's denoiser on `net` (which runs the bundle's denoiser IR) at sampling's guidance."""
        from edge_dm.families.base import Denoiser, input_roles

        return Denoiser(self.family, net, input_roles(self.bundle.read_model()), self.family.guidance(sampling))

    def check(self, sampling: SamplingConfig, prompts=()) -> None:
        """Everything about a request that can be wrong, checked before any work."""
        from edge_dm.sampling import check_steps

        self.bundle.read_model()  # a corrupt IR fails here, not after the first images
        self.family.check_request(self.bundle, sampling, list(prompts))
        check_steps(sampling.scheduler, self.bundle.scheduler_config, sampling.steps)
        if sampling.cache_interval > 1:
            from edge_dm.caching import split_ir

            split_ir(self.bundle.read_model(), sampling.cache_branch, self.family)

    def sample(self, num_images: int, sampling: SamplingConfig = SamplingConfig(), prompts=(),
               progress=None) -> np.ndarray:
        """uint8 images (N, H, W, 3): image i from seed sampling.seed + i (and prompt i, or the one prompt)."""
        from edge_dm.sampling import generate, make_scheduler

        prompts = list(prompts)
        self.check(sampling, prompts)
        if len(prompts) == 1:
            prompts = prompts * num_images
        denoiser = self.denoiser(sampling, num_images)
        denoiser.net.reset_stats()  # the call statistics are this call's (calls sharing a Pipeline: theirs together)
        self.last_denoiser = denoiser
        cond = self.family.encode(self, prompts, sampling)
        batches = math.ceil(num_images / self.runtime.batch_size)
        return generate(denoiser, make_scheduler(sampling.scheduler, self.bundle.scheduler_config), num_images,
                        self.runtime.batch_size, sampling.steps, sampling.seed,
                        self.family.sample_shape(self.bundle, sampling), cond=cond, progress=progress,
                        workers=min(denoiser.parallel, batches), cache_interval=sampling.cache_interval,
                        finish=lambda x: self.family.decode(self, x))

    def __call__(self, prompt: str | list | None = None, num_images: int | None = None, output_type: str = "pil",
                 **sampling) -> PipelineOutput:
        """Images for `prompt` (text-to-image; a list gives one image each) or `num_images`
        unconditional ones; `sampling`: SamplingConfig's options (steps, seed, scheduler, ...)."""
        from PIL import Image

        cfg = SamplingConfig(**sampling)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        n = num_images or max(len(prompts), 1)
        images = self.sample(n, cfg, prompts)
        out = images if output_type == "np" else [Image.fromarray(im) for im in images]
        return PipelineOutput(out, [cfg.seed + i for i in range(n)])

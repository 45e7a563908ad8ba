"""OpenVINO devices, compiled UNets as denoisers, and `generate`: the full loop on a device."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from edge_dm.bundle import Bundle, atomic_dir, default_bundle_path, is_bundle, open_bundle
from edge_dm.configs import GenerateConfig
from edge_dm.errors import BundleError, DeviceError

VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


def check_device(device: str) -> str:
    """Return `device` if OpenVINO can use it here, else a DeviceError listing what is present.

    Virtual devices (AUTO, MULTI:..., HETERO:...) are checked by the devices they name.
    """
    present = available_devices()
    name, _, rest = device.partition(":")
    wanted = [d for d in rest.split(",") if d] if name.upper() in VIRTUAL_DEVICES else [device]
    for d in wanted:
        if not any(p == d or p.split(".")[0] == d for p in present):
            raise DeviceError(f"OpenVINO device {d!r} is not available here; available: {', '.join(present)}")
    return device


def device_capabilities() -> list[dict]:
    import openvino as ov

    core = ov.Core()
    out = []
    for d in core.available_devices:
        caps = list(core.get_property(d, "OPTIMIZATION_CAPABILITIES"))
        out.append(dict(device=d, name=core.get_property(d, "FULL_DEVICE_NAME"), capabilities=caps,
                        int8="INT8" in caps, bf16="BF16" in caps, fp16="FP16" in caps))
    return out


def compile_unet(model, device: str, batch: int, hint: str = "LATENCY", precision_hint: str | None = None,
                 extra: dict | None = None):
    """Reshape `model` (an openvino.Model) to a static batch (every input's first dimension) and
    compile it on `device`."""
    import openvino as ov

    check_device(device)
    model = model.clone()
    model.reshape({i.get_any_name(): [batch, *list(i.get_partial_shape())[1:]] for i in model.inputs})
    config = {"PERFORMANCE_HINT": hint}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    config.update(extra or {})
    try:
        return ov.Core().compile_model(model, device, config)
    except RuntimeError as exc:
        raise DeviceError(f"could not compile the UNet on {device}: {str(exc).splitlines()[0][:200]}") from None


class OpenVINODenoiser:
    """A bundle's UNet compiled on an OpenVINO device, callable as a denoiser (see sampling.py).

    A call's batch is cut into requests of `request_batch` images (default: the batch split evenly
    over `parallel` requests); a short last request is padded, so one compiled model serves every
    call. Requests run on a pool of infer requests: the chunks of one call at once, and calls from
    several threads at once too (sync `infer` releases the GIL). That second way is how
    `sample_bundle` keeps every stream busy: many small batches, each in its own denoising loop,
    none waiting for the others between steps (docs/BENCHMARKS.md).

    `parallel` is how many requests run at once: 1 under the LATENCY hint (one request on all
    cores); under THROUGHPUT, `streams` if given (OpenVINO's NUM_STREAMS), else the device's
    OPTIMAL_NUMBER_OF_INFER_REQUESTS. `config`: more OpenVINO properties to compile with.
    """

    def __init__(self, model, device: str = "CPU", hint: str = "LATENCY", precision_hint: str | None = None,
                 request_batch: int | None = None, streams: int | None = None, config: dict | None = None):
        import threading

        self.model, self.device, self.hint, self.precision_hint = model, device, hint, precision_hint
        self.request_batch, self.streams, self.config = request_batch, streams, dict(config or {})
        self._compiled: dict[int, object] = {}
        self._idle: dict[int, list] = {}  # compiled batch -> infer requests not in use
        self._lock = threading.Lock()
        self._parallel: int | None = None
        self._executor = None
        # UNet calls, images through the UNet, seconds summed over calls (concurrent calls overlap)
        self.calls, self.images, self.seconds = 0, 0, 0.0

    def _compile(self, batch: int):
        with self._lock:
            if batch not in self._compiled:
                extra = dict(self.config)
                if self.streams and self.hint == "THROUGHPUT":
                    extra["NUM_STREAMS"] = str(self.streams)
                self._compiled[batch] = compile_unet(self.model, self.device, batch, self.hint,
                                                     self.precision_hint, extra)
            return self._compiled[batch]

    @property
    def parallel(self) -> int:
        if self._parallel is None:
            if self.hint != "THROUGHPUT":
                self._parallel = 1
            elif self.streams:
                self._parallel = self.streams
            else:
                compiled = self._compile(self.request_batch or 1)
                self._parallel = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        return self._parallel

    def _infer(self, inputs: dict, batch: int) -> list:
        """One request of `batch` images (inputs padded by repeating their last image); returns every
        output, cut back to the images given."""
        import numpy as np

        n = len(next(iter(inputs.values())))
        if n < batch:  # the padding's outputs are dropped below
            inputs = {k: np.concatenate([v, np.repeat(v[-1:], batch - n, 0)]) for k, v in inputs.items()}
        compiled = self._compile(batch)
        with self._lock:
            idle = self._idle.setdefault(batch, [])
            request = idle.pop() if idle else compiled.create_infer_request()
        try:
            result = request.infer(inputs)
            return [result[i][:n].copy() for i in range(len(compiled.outputs))]
        finally:
            with self._lock:
                self._idle[batch].append(request)

    def run(self, inputs: dict) -> list:
        """The model's outputs (numpy) for a batch of named numpy inputs, cut into requests."""
        import numpy as np

        start = time.perf_counter()
        n = len(next(iter(inputs.values())))
        chunk = self.request_batch or math.ceil(n / self.parallel)
        parts = [{k: v[i:i + chunk] for k, v in inputs.items()} for i in range(0, n, chunk)]
        if len(parts) == 1:
            outs = [self._infer(parts[0], chunk)]
        else:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                workers = self.parallel  # may compile, which takes the lock: read it first
                with self._lock:
                    self._executor = self._executor or ThreadPoolExecutor(max_workers=workers)
            outs = list(self._executor.map(lambda p: self._infer(p, chunk), parts))
        result = outs[0] if len(outs) == 1 else [np.concatenate(o) for o in zip(*outs)]  # _infer copied
        with self._lock:
            self.calls += 1
            self.images += n
            self.seconds += time.perf_counter() - start
        return result

    def __call__(self, x, t):
        import torch

        return torch.from_numpy(self.run({"sample": x.numpy(), "timestep": t.numpy()})[0])


def find_bundle(spec: str, precision: str = "int8") -> Bundle:
    """A bundle folder, or the default bundle of a model name (the one `edge-dm quantize` writes)."""
    if is_bundle(spec):
        return open_bundle(spec)
    if Path(spec).is_dir() and (Path(spec) / "recipe.json").exists():
        return open_bundle(spec)  # raises with what is missing
    default = default_bundle_path(spec, precision)
    if is_bundle(default):
        return open_bundle(default)
    make = f"edge-dm quantize --model {spec}" if precision == "int8" else \
        f"edge-dm export --model {spec} --precision {precision}"
    raise BundleError(f"no {precision} bundle for {spec!r} (looked in {default}); create it with `{make}` "
                      "or pass a bundle folder")


def save_pngs(images, folder: Path, start: int = 0) -> None:
    from PIL import Image

    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{start + i:05d}.png")


def grid(images, columns: int | None = None):
    import numpy as np

    n, h, w, c = images.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = img
    return canvas


def sample_bundle(bundle: Bundle, device: str, num_images: int, batch_size: int, steps: int,
                  scheduler_name: str, seed: int, precision_hint: str | None = None, progress: bool = True,
                  parallel: int | None = None, cache_interval: int = 1, cache_branch: int = 1):
    """Run a bundle's UNet in the denoising loop on `device`: (uint8 NHWC images, the denoiser used).

    One batch: one request on all cores (LATENCY hint). Several: `parallel` batches at a time (default:
    the device's optimal number of infer requests, THROUGHPUT hint), each its own loop and request.
    `cache_interval` > 1 samples with DeepCache (edge_dm.caching) at `cache_branch`.
    """
    from tqdm import tqdm

    from edge_dm.data import to_uint8
    from edge_dm.sampling import generate as run_loop, make_scheduler

    batches = math.ceil(num_images / batch_size)
    hint = "LATENCY" if batches == 1 or parallel == 1 else "THROUGHPUT"
    options = dict(device=device, hint=hint, precision_hint=precision_hint,
                   request_batch=batch_size if hint == "THROUGHPUT" else None, streams=parallel)
    if cache_interval > 1:
        from edge_dm.caching import OpenVINOCachedDenoiser

        denoiser = OpenVINOCachedDenoiser(bundle.read_model(), cache_branch, **options)
    else:
        denoiser = OpenVINODenoiser(bundle.read_model(), **options)
    scheduler = make_scheduler(scheduler_name, bundle.scheduler_config)
    cached = f" cache {cache_interval}" if cache_interval > 1 else ""
    bar = tqdm(total=num_images, unit="img", disable=not progress,
               desc=f"{bundle.precision} {scheduler_name} x{steps}{cached}")
    x = run_loop(denoiser, scheduler, num_images, batch_size, steps, seed, bundle.sample_shape, progress=bar.update,
                 workers=denoiser.parallel, cache_interval=cache_interval)
    bar.close()
    return to_uint8(x), denoiser


def generate(cfg: GenerateConfig, progress: bool = True) -> dict:
    """Run the full denoising loop of a bundle on an OpenVINO device; write PNGs and a grid PNG.

    Image i is written as `{seed + i:05d}.png`, the seed its noise comes from (`edge_dm.sampling`), so
    `--seed 0 --num-images 500` and `--seed 500 --num-images 500` together are `--num-images 1000`.
    """
    from PIL import Image

    bundle = find_bundle(cfg.model)
    check_device(cfg.device)
    with atomic_dir(cfg.output, cfg.overwrite) as tmp:
        t0 = time.perf_counter()
        images, denoiser = sample_bundle(bundle, cfg.device, cfg.num_images, cfg.batch_size, cfg.steps,
                                         cfg.scheduler, cfg.seed, cfg.precision_hint, progress, cfg.parallel,
                                         cfg.cache_interval, cfg.cache_branch)
        wall = time.perf_counter() - t0
        save_pngs(images, tmp, start=cfg.seed)  # named by seed: runs over seed ranges merge into one set
        Image.fromarray(grid(images)).save(tmp / "grid.png")
        result = dict(output=str(cfg.output), bundle=str(bundle.path), precision=bundle.precision,
                      device=cfg.device, images=len(images), seconds=round(wall, 3),
                      images_per_s=round(len(images) / wall, 3),
                      unet_ms_per_call=round(1e3 * denoiser.seconds / max(denoiser.calls, 1), 3),
                      unet_calls=denoiser.calls, parallel=denoiser.parallel, config=cfg.to_dict())
        (tmp / "generate.json").write_text(json.dumps(result, indent=2))
    return result

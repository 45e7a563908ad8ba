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
    """Reshape `model` (an openvino.Model) to a static batch and compile it on `device`."""
    import openvino as ov

    check_device(device)
    model = model.clone()
    shape = list(model.input("sample").get_partial_shape())
    model.reshape({"sample": [batch, *shape[1:]], "timestep": [batch]})
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

    With hint="LATENCY" one request runs the whole batch on all cores. With "THROUGHPUT" a batch is
    cut into chunks of `request_batch` images that run asynchronously over the device's optimal number
    of parallel infer requests (an openvino.AsyncInferQueue); a short last chunk is padded, so one
    compiled model serves every call. Without `request_batch`, a batch is split evenly over the
    requests. Big batches in small chunks keep every core busy: on the 16-core Xeon the shipped model
    runs fastest at 8-16 images a request (docs/BENCHMARKS.md).
    """

    def __init__(self, model, device: str = "CPU", hint: str = "LATENCY", precision_hint: str | None = None,
                 request_batch: int | None = None):
        self.model, self.device, self.hint, self.precision_hint = model, device, hint, precision_hint
        self.request_batch = request_batch
        self._compiled: dict[int, object] = {}
        self._queues: dict[int, object] = {}
        self._requests: dict[int, object] = {}
        self._nreq: int | None = None  # parallel requests, fixed by the first batch seen
        self.calls, self.images, self.seconds = 0, 0, 0.0  # UNet calls, images through the UNet, time in it

    def _compile(self, batch: int):
        if batch not in self._compiled:
            self._compiled[batch] = compile_unet(self.model, self.device, batch, self.hint, self.precision_hint)
        return self._compiled[batch]

    def parallel_requests(self, batch: int) -> int:
        if self.hint != "THROUGHPUT" or batch == 1:
            return 1
        compiled = self._compile(self.request_batch or 1)
        return max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

    def _queue(self, chunk: int):
        import openvino as ov

        if chunk not in self._queues:
            self._queues[chunk] = ov.AsyncInferQueue(self._compile(chunk), self._nreq)
        return self._queues[chunk]

    def __call__(self, x, t):
        import numpy as np
        import torch

        start = time.perf_counter()
        xs, ts = x.numpy(), t.numpy()
        n = len(xs)
        if self._nreq is None:
            self._nreq = self.parallel_requests(n)
        if self._nreq == 1 and not self.request_batch:
            if n not in self._requests:
                self._requests[n] = self._compile(n).create_infer_request()
            out = self._requests[n].infer({"sample": xs, "timestep": ts})[0].copy()
        else:
            chunk = self.request_batch or math.ceil(n / self._nreq)
            pad = -n % chunk
            if pad:  # repeat the last image: the padding's outputs are dropped below
                xs = np.concatenate([xs, np.repeat(xs[-1:], pad, 0)])
                ts = np.concatenate([ts, np.repeat(ts[-1:], pad, 0)])
            outs = [None] * (len(xs) // chunk)
            queue = self._queue(chunk)

            def done(request, i):
                outs[i] = request.get_output_tensor(0).data.copy()

            queue.set_callback(done)
            for i in range(len(outs)):
                queue.start_async({"sample": xs[i * chunk:(i + 1) * chunk], "timestep": ts[i * chunk:(i + 1) * chunk]}, i)
            queue.wait_all()
            out = np.concatenate(outs)[:n]
        self.calls += 1
        self.images += n
        self.seconds += time.perf_counter() - start
        return torch.from_numpy(out)


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
                  request_batch: int | None = None):
    """Run a bundle's UNet in the denoising loop on `device`: (uint8 NHWC images, the denoiser used)."""
    from tqdm import tqdm

    from edge_dm.data import to_uint8
    from edge_dm.sampling import generate as run_loop, make_scheduler

    hint = "LATENCY" if batch_size == 1 else "THROUGHPUT"
    denoiser = OpenVINODenoiser(bundle.read_model(), device, hint, precision_hint, request_batch)
    scheduler = make_scheduler(scheduler_name, bundle.scheduler_config)
    bar = tqdm(total=num_images, unit="img", disable=not progress, desc=f"{bundle.precision} {scheduler_name} x{steps}")
    x = run_loop(denoiser, scheduler, num_images, batch_size, steps, seed, bundle.sample_shape, progress=bar.update)
    bar.close()
    return to_uint8(x), denoiser


def generate(cfg: GenerateConfig, progress: bool = True) -> dict:
    """Run the full denoising loop of a bundle on an OpenVINO device; write PNGs and a grid PNG."""
    from PIL import Image

    bundle = find_bundle(cfg.model)
    check_device(cfg.device)
    with atomic_dir(cfg.output, cfg.overwrite) as tmp:
        t0 = time.perf_counter()
        images, denoiser = sample_bundle(bundle, cfg.device, cfg.num_images, cfg.batch_size, cfg.steps,
                                         cfg.scheduler, cfg.seed, cfg.precision_hint, progress, cfg.request_batch)
        wall = time.perf_counter() - t0
        save_pngs(images, tmp)
        Image.fromarray(grid(images)).save(tmp / "grid.png")
        result = dict(output=str(cfg.output), bundle=str(bundle.path), precision=bundle.precision,
                      device=cfg.device, images=len(images), seconds=round(wall, 3),
                      images_per_s=round(len(images) / wall, 3),
                      unet_ms_per_call=round(1e3 * denoiser.seconds / max(denoiser.calls, 1), 3),
                      unet_calls=denoiser.calls, config=cfg.to_dict())
        (tmp / "generate.json").write_text(json.dumps(result, indent=2))
    return result

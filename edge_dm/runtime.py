"""Where networks run: OpenVINO devices, and *nets*, networks callable on named numpy inputs.

A net has `run(inputs: dict[str, numpy]) -> list[numpy]`: `OpenVINOModel` (an openvino.Model
compiled on a device) or `TorchNet` (a diffusers UNet in torch, the reference OpenVINO is checked
against). Model families turn a net into a denoiser (edge_dm.families.base.Denoiser).
"""
from __future__ import annotations

import math
import shutil
import time

from edge_dm.errors import DeviceError, OutputError, library_reason

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


def check_precision_hint(device: str, precision_hint: str | None) -> None:
    """DeviceError with OpenVINO's reason unless `device` takes INFERENCE_PRECISION_HINT `precision_hint`
    (OpenVINO checks the value only when it compiles: this compiles a one-op model)."""
    if not precision_hint:
        return
    import numpy as np
    import openvino as ov

    ops = ov.opset8

    x = ops.parameter([1], np.float32)
    try:
        ov.Core().compile_model(ov.Model([ops.relu(x)], [x]), device, {"INFERENCE_PRECISION_HINT": precision_hint})
    except RuntimeError as exc:
        raise DeviceError(f"precision hint {precision_hint!r} on {device}: {library_reason(exc)}") from None


def device_capabilities() -> list[dict]:
    import openvino as ov

    core = ov.Core()
    out = []
    for d in core.available_devices:
        caps = list(core.get_property(d, "OPTIMIZATION_CAPABILITIES"))
        out.append(dict(device=d, name=core.get_property(d, "FULL_DEVICE_NAME"), capabilities=caps,
                        int8="INT8" in caps, bf16="BF16" in caps, fp16="FP16" in caps))
    return out


def compile_model(model, device: str, batch: int, hint: str = "LATENCY", precision_hint: str | None = None,
                  extra: dict | None = None, shapes: dict | None = None):
    """Reshape `model` (an openvino.Model) to a static batch (every input's first dimension) and
    compile it on `device`; OpenVINO's reason reaches the user when it cannot. `shapes`: per-image
    shapes (all but the first dimension) of inputs, for the dimensions the IR leaves dynamic.

    Give `shapes` wherever the IR has dynamic dimensions besides the batch (optimum's SD UNet has a
    dynamic latent height and width): compiled dynamic, the CPU plugin can give an image different
    bits on streams of different thread counts, and static shapes run faster."""
    import openvino as ov

    check_device(device)
    shapes = shapes or {}
    model = model.clone()
    model.reshape({i.get_any_name(): [batch, *(shapes.get(i.get_any_name()) or list(i.get_partial_shape())[1:])]
                   for i in model.inputs if i.get_partial_shape().rank.get_length() > 0})
    if device == "CPU" and _decomposes_group_norm(model, precision_hint):
        group_norm_as_mvn(model)
    config = {"PERFORMANCE_HINT": hint}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    config.update(extra or {})
    try:
        return ov.Core().compile_model(model, device, config)
    except RuntimeError as exc:
        raise DeviceError(f"could not compile the model on {device}: {library_reason(exc)}") from None


def _decomposes_group_norm(model, precision_hint: str | None) -> bool:
    """Whether the CPU plugin would run `model`'s GroupNorms as its slow per-group MVN: where the model
    holds FakeQuantize or runs at a 16-bit precision (its fused GroupNorm path is for f32 float models)."""
    import openvino as ov

    if any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()):
        return True
    precision = precision_hint or ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    return str(precision).lower() in ("bf16", "f16")


def group_norm_as_mvn(model) -> int:
    """Rewrite every GroupNormalization of `model` (an openvino.Model, in place) as the same function:
    MVN over the input reshaped to [N, groups, -1], reshaped back, times gamma plus beta per channel.
    Returns how many were rewritten.

    `compile_model` does this for the CPU where the plugin would decompose them. The CPU plugin
    decomposes GroupNormalization itself into
    an MVN over [N * groups, C / groups, H, W] wherever the model holds FakeQuantize or runs at bf16
    (its fused GroupNormalization path is for f32 float models only), and that MVN is the slow part:
    on the shipped model this form is much faster (docs/BENCHMARKS.md, "GroupNorm on the CPU")."""
    import numpy as np
    import openvino as ov

    ops, n = ov.opset13, 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "GroupNormalization":
            continue
        x, gamma, beta = (node.input_value(i) for i in range(3))
        attrs, rank = node.get_attributes(), x.get_partial_shape().rank.get_length()
        grouped = ops.reshape(x, ops.constant(np.array([0, attrs["num_groups"], -1], np.int64)), True)
        y = ops.mvn(grouped, ops.constant(np.array([2], np.int64)), True, attrs["epsilon"], "inside_sqrt")
        y = ops.reshape(y, ops.shape_of(x), False)
        per_channel = ops.constant(np.array([1, -1] + [1] * (rank - 2), np.int64))
        y = ops.add(ops.multiply(y, ops.reshape(gamma, per_channel, False)), ops.reshape(beta, per_channel, False))
        y.set_friendly_name(node.get_friendly_name())
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(y.output(0))
        n += 1
    if n:
        model.validate_nodes_and_infer_types()
    return n


def save_ir(model, path, fp16: bool = False) -> None:
    """Save `model` (an openvino.Model) as the IR `path` (.xml and .bin), replacing an existing one by
    rename: an IR read from the old files (memory-mapped) stays valid."""
    import os
    from pathlib import Path

    import openvino as ov

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.new.xml")
    try:
        ov.save_model(model, tmp, compress_to_fp16=fp16)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # OpenVINO's message for a full disk is "basic_ios::clear: iostream error"
        for leftover in (tmp, tmp.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free / 1e6
        raise OutputError(f"cannot write {path} ({free:.0f} MB free there): {library_reason(exc)}") from None


class OpenVINOModel:
    """An openvino.Model compiled on a device, run on named numpy inputs: a net (families.base).

    A call's batch is cut into requests of `request_batch` images (default: the batch split evenly
    over `parallel` requests); a short last request is padded, so one compiled model serves every
    call. Requests run on a pool of infer requests: the chunks of one call at once, and calls from
    several threads at once too (sync `infer` releases the GIL). That second way is how sampling
    keeps every stream busy: many small batches, each in its own denoising loop, none waiting for
    the others between steps (docs/BENCHMARKS.md).

    `parallel` is how many requests run at once: 1 under the LATENCY hint (one request on all
    cores); under THROUGHPUT, `streams` if given (OpenVINO's NUM_STREAMS), else the device's
    OPTIMAL_NUMBER_OF_INFER_REQUESTS. `config`: more OpenVINO properties to compile with.

    Every request runs on a model compiled with all its dimensions static: those the IR leaves
    dynamic besides the batch take the call's sizes (`shapes`: the per-image shapes expected, so the
    model compiled before the first call, to read `parallel`, is the one the calls use); see
    `compile_model`.
    """

    def __init__(self, model, device: str = "CPU", hint: str = "LATENCY", precision_hint: str | None = None,
                 request_batch: int | None = None, streams: int | None = None, config: dict | None = None,
                 shapes: dict | None = None):
        import threading

        self.model, self.device, self.hint, self.precision_hint = model, device, hint, precision_hint
        self.request_batch, self.streams, self.config = request_batch, streams, dict(config or {})
        # inputs with a dynamic dimension besides the batch: a compiled model per size of theirs
        self._dynamic = sorted(i.get_any_name() for i in model.inputs
                               if any(d.is_dynamic for d in list(i.get_partial_shape())[1:]))
        self.shapes = {k: tuple(v) for k, v in (shapes or {}).items() if k in self._dynamic}
        self._compiled: dict[tuple, object] = {}
        self._idle: dict[tuple, list] = {}  # compiled (batch, sizes) -> infer requests not in use
        self._lock = threading.Lock()
        self._parallel: int | None = None
        self._executor = None
        self.reset_stats()

    def reset_stats(self) -> None:
        """Zero the call statistics: calls, images through the model, seconds summed over calls
        (concurrent calls overlap), and the seconds spent compiling (not in `seconds`)."""
        self.calls, self.images, self.seconds, self.compile_seconds = 0, 0, 0.0, 0.0

    def _key(self, batch: int, inputs: dict | None = None) -> tuple:
        """What a request's compiled model is keyed by: its batch and the per-image shapes of the
        dynamic inputs (from `inputs`, else `shapes`)."""
        shapes = {k: tuple(v.shape[1:]) for k, v in inputs.items()} if inputs is not None else self.shapes
        return batch, tuple((k, shapes[k]) for k in self._dynamic if k in shapes)

    def _compile(self, key: tuple):
        with self._lock:
            if key not in self._compiled:
                extra = dict(self.config)
                if self.streams and self.hint == "THROUGHPUT":
                    extra["NUM_STREAMS"] = str(self.streams)
                start = time.perf_counter()
                self._compiled[key] = compile_model(self.model, self.device, key[0], self.hint,
                                                    self.precision_hint, extra, shapes=dict(key[1]))
                self.compile_seconds += time.perf_counter() - start
            return self._compiled[key]

    @property
    def parallel(self) -> int:
        if self._parallel is None:
            if self.hint != "THROUGHPUT":
                self._parallel = 1
            elif self.streams:
                self._parallel = self.streams
            else:
                compiled = self._compile(self._key(self.request_batch or 1))
                self._parallel = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        return self._parallel

    def _infer(self, inputs: dict, batch: int) -> list:
        """One request of `batch` images (inputs padded by repeating their last image, cast to the
        model's input types); returns every output, cut back to the images given."""
        import numpy as np

        n = len(next(iter(inputs.values())))
        if n < batch:  # the padding's outputs are dropped below
            inputs = {k: np.concatenate([v, np.repeat(v[-1:], batch - n, 0)]) for k, v in inputs.items()}
        key = self._key(batch, inputs)
        compiled = self._compile(key)
        types = {i.get_any_name(): i.get_element_type().to_dtype() for i in compiled.inputs}
        inputs = {k: np.ascontiguousarray(v, dtype=types.get(k, v.dtype)) for k, v in inputs.items()}
        with self._lock:
            idle = self._idle.setdefault(key, [])
            request = idle.pop() if idle else compiled.create_infer_request()
        try:
            result = request.infer(inputs)
            return [result[i][:n].copy() for i in range(len(compiled.outputs))]
        finally:
            with self._lock:
                self._idle[key].append(request)

    def run(self, inputs: dict) -> list:
        """The model's outputs (numpy) for a batch of named numpy inputs, cut into requests."""
        import numpy as np

        n = len(next(iter(inputs.values())))
        chunk = self.request_batch or math.ceil(n / self.parallel)
        self._compile(self._key(chunk, inputs))  # outside the timing: compiling is not a call's time
        start = time.perf_counter()
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


class TorchNet:
    """A diffusers UNet (torch, eval mode) as a net: named numpy inputs in, [noise prediction] out."""

    def __init__(self, module, device: str = "cpu", dtype=None):
        self.module, self.device, self.dtype = module.eval().to(device), device, dtype

    def run(self, inputs: dict) -> list:
        import torch

        with torch.no_grad(), torch.autocast(device_type=self.device.split(":")[0],
                                             dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            args = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
            return [self.module(**args).sample.float().cpu().numpy()]

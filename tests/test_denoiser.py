import hashlib
from pathlib import Path

import numpy as np
import pytest

from edge_dm.configs import DeviceConfig, GenerateConfig, SamplingConfig
from edge_dm.errors import BundleError, ConfigError, DeviceError, OutputExistsError
from edge_dm.jobs import generate
from edge_dm.runtime import available_devices, check_device, device_capabilities


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob("*.png"))}


def test_same_seed_same_png_bytes(tiny_bundle, tmp_path):
    cfg = dict(model=str(tiny_bundle.path), num_images=5, runtime=DeviceConfig(batch_size=2))
    r = generate(GenerateConfig(output=str(tmp_path / "a"), sampling=SamplingConfig(steps=6, seed=11), **cfg),
                 progress=False)
    generate(GenerateConfig(output=str(tmp_path / "b"), sampling=SamplingConfig(steps=6, seed=11), **cfg),
             progress=False)
    generate(GenerateConfig(output=str(tmp_path / "c"), sampling=SamplingConfig(steps=6, seed=12), **cfg),
             progress=False)
    a, b, c = (_digests(tmp_path / n) for n in "abc")
    assert len(a) == 6 and a == b  # 5 images + grid.png
    assert sorted(a)[:5] == [f"{s:05d}.png" for s in range(11, 16)]  # named by seed
    # a run from seed 12 repeats the images of seeds 12-15 and shifts nothing: seed ranges compose
    assert all(c[f"{s:05d}.png"] == a[f"{s:05d}.png"] for s in range(12, 16))
    assert c["00016.png"] not in a.values()
    assert r["images"] == 5 and r["unet_calls"] == 3 * 6 and r["unet_ms_per_call"] > 0


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpm-solver"])
def test_generate_with_each_offered_scheduler(tiny_bundle, tmp_path, scheduler):
    r = generate(GenerateConfig(model=str(tiny_bundle.path), output=str(tmp_path / scheduler), num_images=2,
                                runtime=DeviceConfig(batch_size=2),
                                sampling=SamplingConfig(steps=4, scheduler=scheduler)), progress=False)
    assert (tmp_path / scheduler / "grid.png").exists() and r["images"] == 2


def test_unknown_device_lists_the_available_ones():
    with pytest.raises(DeviceError) as e:
        check_device("NPU9")
    assert all(d in str(e.value) for d in available_devices())
    with pytest.raises(DeviceError):
        check_device("AUTO:CPU,NPU9")
    assert check_device("CPU") == "CPU" and check_device("AUTO:CPU") == "AUTO:CPU"


def test_device_capabilities_describe_the_cpu():
    cpu = next(d for d in device_capabilities() if d["device"] == "CPU")
    assert "FP32" in cpu["capabilities"]


@pytest.mark.parametrize("cls,bad", [(GenerateConfig, dict(num_images=0)), (SamplingConfig, dict(steps=-1)),
                                     (DeviceConfig, dict(batch_size=0)), (SamplingConfig, dict(seed=-3)),
                                     (SamplingConfig, dict(scheduler="nope"))])
def test_bad_generate_options(cls, bad):
    with pytest.raises(ConfigError):
        cls(**bad)


def test_missing_default_bundle_says_which_command_makes_it(tmp_path):
    with pytest.raises(BundleError, match="edge-dm quantize --model edm-cifar10-ddpm"):
        generate(GenerateConfig(output=str(tmp_path / "o")), progress=False)
    assert not (tmp_path / "o").exists()


def test_existing_output_refused(tiny_bundle, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x.png").write_bytes(b"")
    with pytest.raises(OutputExistsError):
        generate(GenerateConfig(model=str(tiny_bundle.path), output=str(tmp_path / "o")), progress=False)


def OpenVINODenoiser(model, *args, **kwargs):
    """The tiny UNet compiled as a net, wrapped as the unconditional family's denoiser."""
    from edge_dm.families import get
    from edge_dm.families.base import Denoiser
    from edge_dm.runtime import OpenVINOModel

    return Denoiser(get("unet2d").conditioning, OpenVINOModel(model, *args, **kwargs))


def test_throughput_split_equals_one_request(tiny_bundle):
    """Splitting a batch over async infer requests gives the same numbers as one request."""
    import torch


    x = torch.from_numpy(np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32))
    t = torch.full((5,), 321, dtype=torch.int64)
    one = OpenVINODenoiser(tiny_bundle.read_model(), "CPU", "LATENCY")(x, t)
    many = OpenVINODenoiser(tiny_bundle.read_model(), "CPU", "THROUGHPUT")
    many.net._parallel = 2  # force a split even on a machine with one stream
    np.testing.assert_allclose(many(x, t).numpy(), one.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("request_batch", [2, 4, 7])
def test_fixed_request_batch_with_padded_tail_equals_one_request(tiny_bundle, request_batch):
    """Chunks of a fixed size over an AsyncInferQueue (the last one padded) give one request's numbers."""
    import torch


    x = torch.from_numpy(np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32))
    t = torch.tensor([999, 500, 321, 20, 0], dtype=torch.int64)
    one = OpenVINODenoiser(tiny_bundle.read_model(), "CPU", "LATENCY")(x, t)
    den = OpenVINODenoiser(tiny_bundle.read_model(), "CPU", "THROUGHPUT", request_batch=request_batch)
    out = den(x, t)
    assert out.shape == one.shape
    np.testing.assert_allclose(out.numpy(), one.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(den(x[:3], t[:3]).numpy(), one[:3].numpy(), rtol=1e-4, atol=1e-5)
    assert [batch for batch, _ in den.net._compiled] == [request_batch]  # one compiled model served both calls


def test_calls_from_several_threads_share_the_requests(tiny_bundle):
    """Concurrent calls (as generate's workers make them) each get their own numbers back."""
    from concurrent.futures import ThreadPoolExecutor

    import torch


    rng = np.random.default_rng(2)
    xs = [torch.from_numpy(rng.standard_normal((3, 3, 8, 8)).astype(np.float32)) for _ in range(12)]
    ts = [torch.full((3,), 50 * i, dtype=torch.int64) for i in range(12)]
    den = OpenVINODenoiser(tiny_bundle.read_model(), "CPU", "THROUGHPUT", request_batch=4, streams=3)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(den, xs, ts))
    one = OpenVINODenoiser(tiny_bundle.read_model(), "CPU", "LATENCY")
    for x, t, out in zip(xs, ts, outs):
        np.testing.assert_allclose(out.numpy(), one(x, t).numpy(), rtol=1e-4, atol=1e-5)
    assert den.calls == 12 and den.images == 36 and den.parallel == 3
    assert 1 <= sum(len(v) for v in den.net._idle.values()) <= 4  # requests are reused, not made per call


def _group_norms():
    """An openvino.Model of two torch GroupNorms (seeded affine): one on [N, 8, 4, 4], one on [N, 8, 16]."""
    import openvino as ov
    import torch

    class Norms(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.GroupNorm(4, 8, eps=1e-6), torch.nn.GroupNorm(2, 8)
            for gn in (self.a, self.b):
                torch.nn.init.normal_(gn.weight)
                torch.nn.init.normal_(gn.bias)

        def forward(self, x):
            return self.b(self.a(x).flatten(2))

    torch.manual_seed(0)
    net = Norms().eval()
    x = torch.randn(2, 8, 4, 4) * 3 + 1
    with torch.no_grad():
        return ov.convert_model(net, example_input=x, input=[ov.PartialShape([-1, 8, 4, 4])]), x.numpy(), net(x).numpy()


def _types(model) -> list[str]:
    return [op.get_type_name() for op in model.get_ordered_ops()]


def test_group_norm_as_mvn_is_the_same_function():
    import openvino as ov

    from edge_dm.runtime import group_norm_as_mvn

    model, x, expected = _group_norms()
    assert _types(model).count("GroupNormalization") == 2
    assert group_norm_as_mvn(model) == 2
    assert "GroupNormalization" not in _types(model) and _types(model).count("MVN") == 2
    got = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_cpu_compile_normalizes_each_group_over_one_axis_where_the_plugin_would_decompose_it():
    """At a 16-bit precision (as with FakeQuantize) compile_model runs each GroupNorm as one MVN over
    [N, groups, C/groups * H * W] (the plugin's own decomposition normalizes [N * groups, C/groups, H, W],
    slowly); an f32 float model keeps the plugin's fused GroupNorm."""
    from edge_dm.runtime import compile_model

    model, x, expected = _group_norms()

    def mvn_inputs(compiled):
        return sorted(list(op.input(0).get_shape()) for op in compiled.get_runtime_model().get_ordered_ops()
                      if op.get_rt_info()["layerType"].astype(str) == "MVN")

    assert mvn_inputs(compile_model(model, "CPU", 2, precision_hint="bf16")) == [[2, 2, 64], [2, 4, 32]]
    f32 = compile_model(model, "CPU", 2, precision_hint="f32")
    assert mvn_inputs(f32) == []
    np.testing.assert_allclose(f32(x)[0], expected, rtol=1e-5, atol=1e-5)

import re

import numpy as np
import pytest
import torch

from edge_dm.caching import CACHE_INPUT, OpenVINOCachedNet, TorchCachedNet, split_ir
from edge_dm.configs import SamplingConfig
from edge_dm.errors import BundleError, ConfigError
from edge_dm.families.unet2d import convert_unet
from edge_dm.runtime import compile_model as compile_unet
from edge_dm.sampling import denoise, generators, initial_noise, make_scheduler


def three_level_unet():
    """Three down and three up blocks, so that branch 2 exists; seeded."""
    from diffusers import UNet2DModel

    torch.manual_seed(1)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(4, 8, 8),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=2,
                       attention_head_dim=None).eval()


def infer(model, **inputs):
    n = len(inputs["sample"])
    return [np.asarray(o) for o in compile_unet(model, "CPU", n, precision_hint="f32")(inputs).values()]


def inputs(seed, n=3, t=(900, 400, 30)):
    g = np.random.default_rng(seed)
    return dict(sample=g.standard_normal((n, 3, 8, 8)).astype(np.float32), timestep=np.array(t[:n], np.int64))


def _converted(unet, shortcut_split: bool):
    """The IR of `unet`, or of its shortcut-split twin (no skip Concat left where GroupNorm allows)."""
    from edge_dm.families.shortcut_split import split_shortcuts

    return convert_unet(split_shortcuts(unet)[0] if shortcut_split else unet, (3, 8, 8))


@pytest.mark.parametrize("shortcut_split", [False, True])
@pytest.mark.parametrize("branch", [0, 1, 2])
def test_the_split_alone_changes_nothing(branch, shortcut_split):
    model = _converted(three_level_unet(), shortcut_split)
    full, shallow = split_ir(model, branch)
    x = inputs(0)
    (plain,) = infer(model, **x)
    eps, cache = infer(full, **x)
    np.testing.assert_array_equal(eps, plain)
    (again,) = infer(shallow, **x, **{CACHE_INPUT: cache})
    np.testing.assert_allclose(again, plain, atol=1e-5)
    assert len(shallow.get_ops()) < len(model.get_ops())
    # branches 0 and 1 cache a full-resolution state (the last layer's, the last up block's), 2 a deeper one
    assert list(full.output(CACHE_INPUT).get_partial_shape())[2:] == ([4, 4] if branch == 2 else [8, 8])
    width = list(full.output(CACHE_INPUT).get_partial_shape())[1]
    assert width == (4 if branch == 0 else 8)  # the last up block's own width, or the block before's
    if branch == 0:  # the shallow part convolves in conv_in, the last layer and conv_out only
        convs = {re.sub(r"/.*", "", op.get_friendly_name()) for op in shallow.get_ops()
                 if op.get_type_name() == "Convolution"}
        assert convs == {"__module.conv_in", "__module.conv_out", *(f"__module.up_blocks.2.resnets.1.{c}" for c in
                         ("conv1", "conv2", *(("conv_shortcut.a", "conv_shortcut.b") if shortcut_split else
                                              ("conv_shortcut",))))}


@pytest.mark.parametrize("shortcut_split", [False, True])
@pytest.mark.parametrize("branch", [0, 1, 2])
def test_openvino_split_matches_the_torch_reference_on_a_stale_cache(branch, shortcut_split):
    unet = three_level_unet()
    ov_net = OpenVINOCachedNet(_converted(unet, shortcut_split), branch, precision_hint="f32")
    ref = TorchCachedNet(unet, branch)
    old, new = inputs(0), inputs(1, t=(880, 380, 20))
    _, ov_cache = ov_net.run_full(old)
    _, torch_cache = ref.run_full(old)
    np.testing.assert_allclose(ov_cache, torch_cache, atol=1e-4)
    stale_ov = ov_net.run_shallow(new, ov_cache)
    stale_torch = ref.run_shallow(new, torch_cache)
    np.testing.assert_allclose(stale_ov, stale_torch, atol=1e-4)
    fresh = ref.run(new)[0]
    assert np.abs(stale_torch - fresh).max() > 1e-3  # a stale cache does change the prediction


def _sample(net, interval, steps=10, seed=0, n=2):
    from edge_dm.families import get
    from edge_dm.families.base import Denoiser

    den = Denoiser(get("unet2d").conditioning, net)
    sched = make_scheduler("ddim", {"num_train_timesteps": 1000, "beta_schedule": "linear"})
    sched.set_timesteps(steps)
    gens = generators(seed, 0, n)
    x = initial_noise((n, 3, 8, 8), gens, sched)
    return denoise(den, sched, x, gens, steps, cache_interval=interval).numpy()


def test_cache_interval_runs_the_whole_unet_every_nth_step(tiny_model_dir):
    from edge_dm.models import load_model
    from edge_dm.runtime import OpenVINOModel

    m = load_model(tiny_model_dir)
    model = convert_unet(m.unet, (3, 8, 8))
    cached = OpenVINOCachedNet(model, 1, precision_hint="f32")
    plain = _sample(OpenVINOModel(model, precision_hint="f32"), 1)
    np.testing.assert_array_equal(_sample(cached, 1), plain)  # interval 1: the plain loop
    assert (cached.full_net.calls, cached.shallow_net.calls) == (10, 0)
    a = _sample(cached, 3)
    assert (cached.full_net.calls, cached.shallow_net.calls) == (10 + 4, 6)  # steps 0, 3, 6, 9 whole
    np.testing.assert_array_equal(_sample(cached, 3), a)  # same seed, same images
    assert np.isfinite(a).all() and np.abs(a - plain).max() > 1e-4


@pytest.mark.parametrize("shortcut_split", [False, True])
def test_int8_shallow_part_keeps_the_quantization(tiny_model_dir, tmp_path, shortcut_split):
    from conftest import quantize_job

    from edge_dm.configs import CalibrationConfig, QuantizeConfig, SamplingConfig
    from edge_dm.jobs import quantize
    from edge_dm.quantize import op_counts

    cal = CalibrationConfig(num_samples=8, sampling=SamplingConfig(steps=10))
    bundle, _ = quantize(quantize_job(tiny_model_dir, tmp_path / "q", cal,
                                      quantization=QuantizeConfig(split_shortcut=shortcut_split)), progress=False)
    for branch in (0, 1):
        full, shallow = split_ir(bundle.read_model(), branch)
        assert op_counts(shallow)["fake_quantize"] > 0
        x = inputs(2)
        eps, cache = infer(full, **x)
        (again,) = infer(shallow, **x, **{CACHE_INPUT: cache})
        np.testing.assert_allclose(again, eps, atol=1e-5)  # the cut passes the cached value to every reader


def test_bad_branches_and_foreign_irs():
    model = convert_unet(three_level_unet(), (3, 8, 8))
    for branch in (-1, 3):
        with pytest.raises(ConfigError, match=r"cache branch must lie in \[0, 2\] for this UNet, got"):
            split_ir(model, branch)
    with pytest.raises(ConfigError):
        TorchCachedNet(three_level_unet(), 3)
    with pytest.raises(ConfigError, match=r"cache_branch must be an integer >= 0, got -1"):
        SamplingConfig(cache_branch=-1)
    import openvino as ov

    p = ov.opset13.parameter([1, 3], ov.Type.f32, name="sample")
    with pytest.raises(BundleError, match="no UNet up blocks"):
        split_ir(ov.Model([ov.opset13.relu(p)], [p]))

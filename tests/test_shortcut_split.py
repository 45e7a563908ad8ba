"""Q-Diffusion's shortcut split (edge_dm.families.shortcut_split): the same function, in torch and as
exported IR, with the up path's skip concatenations convolved apart."""
import numpy as np
import pytest
import torch
from tiny import build_tiny_unet

from edge_dm.configs import QuantizeConfig
from edge_dm.errors import ConfigError
from edge_dm.families import get
from edge_dm.families.base import Family
from edge_dm.families.shortcut_split import SplitConv, SplitResnet, split_shortcuts
from edge_dm.families.unet2d import convert_unet


def _inputs(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.tensor([900, 400, 30][:n])


@pytest.mark.parametrize("attention", [True, False])
def test_split_unet_is_the_same_function(attention):
    unet = build_tiny_unet(seed=3, attention=attention)
    split, n = split_shortcuts(unet)
    x, t = _inputs()
    with torch.no_grad():
        want, got = unet(x, t).sample, split(x, t).sample
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # every up-path resnet has its shortcut split, and only that
    resnets = [r for block in split.up_blocks for r in block.resnets]
    assert resnets and all(isinstance(r, SplitResnet) and isinstance(r.conv_shortcut, SplitConv) for r in resnets)
    assert n == len(resnets) == sum(isinstance(m, SplitConv) for m in split.modules())
    assert not any(isinstance(r.conv1, SplitConv) for r in resnets)
    assert all(type(b).__name__ != "SplitUpBlock" for b in unet.up_blocks)  # the original is left alone


def test_conv_split_shares_the_bias():
    torch.manual_seed(0)
    conv, a, b = torch.nn.Conv2d(5, 4, 3, padding=1), torch.randn(2, 2, 6, 6), torch.randn(2, 3, 6, 6)
    split = SplitConv(conv, 2)
    with torch.no_grad():
        torch.testing.assert_close(split(a, b), conv(torch.cat([a, b], 1)), atol=1e-6, rtol=0)
    # both parts keep a bias (NNCF's bias correction needs one), together the original one
    torch.testing.assert_close(split.a.bias + split.b.bias, conv.bias, atol=0, rtol=0)
    assert split.a.bias.abs().min() > 0 and split.b.bias.abs().min() > 0
    with pytest.raises(ValueError):
        SplitConv(conv, 5)  # nothing left for b


def test_exported_ir_is_the_same_function_and_no_shortcut_reads_a_concat():
    import openvino as ov

    unet = build_tiny_unet(seed=4)
    plain, split = (convert_unet(u, (3, 8, 8)) for u in (unet, split_shortcuts(unet)[0]))
    x, t = (v.numpy() for v in _inputs(1))
    core = ov.Core()
    want, got = (core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({"sample": x, "timestep": t})[0]
                 for m in (plain, split))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    with torch.no_grad():
        np.testing.assert_allclose(got, unet(*_inputs(1)).sample.numpy(), atol=1e-5, rtol=0)

    def reads_concat(model):
        return [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "Convolution"
                and op.input_value(0).get_node().get_type_name() == "Concat"]

    assert reads_concat(plain) and not reads_concat(split)  # the shortcuts read a and b themselves


def test_which_families_split_and_where():
    """unet2d splits its torch model before export; stable-diffusion splits the exported IR
    (ir_for_quantization), so its for_quantization leaves the model alone. Both by default for int8."""
    sd, unet2d = get("stable-diffusion"), get("unet2d")
    for family in (sd, unet2d):
        assert family.policy.splits(QuantizeConfig()) and not family.policy.splits(QuantizeConfig(mode="weights"))
        assert not family.policy.splits(QuantizeConfig(split_shortcut=False))
    assert sd.for_quantization("m", True) == sd.for_quantization("m", False) == ("m", {})
    # unsplit, a half names its whole convolution, as in unet2d
    names = ("up_blocks.0.resnets.0.conv_shortcut.a", "up_blocks.0.resnets.0.conv_shortcut.b", "conv_in")
    assert sd.float_names(names, True) == names
    assert sd.float_names(names, False) == ("up_blocks.0.resnets.0.conv_shortcut", "conv_in")
    with pytest.raises(ConfigError, match="unet2d"):
        Family().for_quantization(None, True)  # a family without a split refuses it


def _convs_reading_concat(model) -> list:
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() == "Convolution" and op.input_value(0).get_node().get_type_name() == "Concat"]


def test_sd_ir_split_is_the_same_function_and_each_part_gets_its_own_quantizer(sd_fp32, sd_prompts):
    """The stable-diffusion family's IR split on the tiny SD pipeline's optimum-intel export: the same
    function at f32, no convolution left reading a skip Concat, idempotent; quantized by NNCF, each
    part of a split convolution reads its input through a FakeQuantize of its own."""
    import openvino as ov

    from edge_dm.calibration import calibrate
    from edge_dm.configs import CalibrationConfig, SamplingConfig
    from edge_dm.quantize import quantize_model

    sd = get("stable-diffusion")
    plain = sd_fp32.read_model()
    assert sd.ir_for_quantization(plain, False) == (plain, dict(split_convs=0))
    split, fields = sd.ir_for_quantization(plain, True)
    concat_convs = _convs_reading_concat(plain)
    assert fields["split_convs"] == len(concat_convs) > 0 and not _convs_reading_concat(split)
    assert _convs_reading_concat(plain) == concat_convs  # the export itself is left alone
    assert sd.ir_for_quantization(split, True)[1] == dict(split_convs=0)  # nothing left to split

    rng = np.random.default_rng(0)
    x = {"sample": rng.standard_normal((3, 4, 8, 8)).astype(np.float32), "timestep": np.array([900, 400, 30]),
         "encoder_hidden_states": rng.standard_normal((3, 77, 32)).astype(np.float32)}
    want, got = (ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0] for m in (plain, split))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)

    fp32 = sd_fp32.with_model(split)
    cal = calibrate(fp32, CalibrationConfig(num_samples=4, samples_per_trajectory=4, prompts=str(sd_prompts),
                                            sampling=SamplingConfig(steps=4)))
    q = quantize_model(split, cal, QuantizeConfig())
    convs = {op.get_friendly_name(): op for op in q.get_ops() if op.get_type_name() == "Convolution"}
    pairs = [(op, convs[name.replace(".a/", ".b/")]) for name, op in convs.items() if ".conv_shortcut.a/" in name]
    assert len(pairs) == fields["split_convs"]
    quantizers = [tuple(conv.input_value(0).get_node() for conv in pair) for pair in pairs]
    assert all(a.get_type_name() == b.get_type_name() == "FakeQuantize" for a, b in quantizers)
    assert all(a.get_friendly_name() != b.get_friendly_name() for a, b in quantizers)

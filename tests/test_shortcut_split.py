"""Q-Diffusion's shortcut split (edge_dm.families.shortcut_split): the same function, in torch and as
exported IR, with the up path's skip concatenations convolved apart."""
import numpy as np
import pytest
import torch

from edge_dm.configs import QuantizeConfig
from edge_dm.errors import ConfigError
from edge_dm.families import get
from edge_dm.families.shortcut_split import SplitConv, SplitResnet, split_shortcuts, splits_between_groups
from edge_dm.families.unet2d import convert_unet
from tiny import build_tiny_unet


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
    # every up-path resnet: its shortcut split, and conv1 exactly where no GroupNorm group straddles
    resnets = [r for block in split.up_blocks for r in block.resnets]
    assert resnets and all(isinstance(r, SplitResnet) and isinstance(r.conv_shortcut, SplitConv) for r in resnets)
    exact = [isinstance(r.conv1, SplitConv) for r in resnets]
    assert any(exact) and not all(exact)  # the tiny UNet has both cases (groups of 6 around channel 8)
    assert n == len(resnets) + sum(exact)
    for r in resnets:
        if not isinstance(r.conv1, SplitConv):
            assert not splits_between_groups(r.norm1, r.conv_shortcut.a.in_channels)
    assert all(type(b).__name__ != "SplitUpBlock" for b in unet.up_blocks)  # the original is left alone


def test_conv_split_shares_the_bias_and_group_norm_refuses_a_straddling_split():
    from edge_dm.families.shortcut_split import SplitGroupNorm

    torch.manual_seed(0)
    conv, a, b = torch.nn.Conv2d(5, 4, 3, padding=1), torch.randn(2, 2, 6, 6), torch.randn(2, 3, 6, 6)
    split = SplitConv(conv, 2)
    with torch.no_grad():
        torch.testing.assert_close(split(a, b), conv(torch.cat([a, b], 1)), atol=1e-6, rtol=0)
    # both parts keep a bias (NNCF's bias correction needs one), together the original one
    torch.testing.assert_close(split.a.bias + split.b.bias, conv.bias, atol=0, rtol=0)
    assert split.a.bias.abs().min() > 0 and split.b.bias.abs().min() > 0
    norm = torch.nn.GroupNorm(3, 6)
    with pytest.raises(ValueError):
        SplitGroupNorm(norm, 3)  # groups of 2 channels: channel 3 lies inside one
    with torch.no_grad():
        x = torch.randn(2, 6, 4, 4)
        torch.testing.assert_close(torch.cat(SplitGroupNorm(norm, 4)(x[:, :4], x[:, 4:]), 1), norm(x))


def test_exported_ir_is_the_same_function_and_no_convolution_reads_a_concat():
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

    assert reads_concat(plain) and not reads_concat(split)


def test_only_unet2d_offers_it():
    cfg = QuantizeConfig(split_shortcut=True)
    with pytest.raises(ConfigError, match="unet2d"):
        get("stable-diffusion").for_quantization(None, cfg)
    assert get("stable-diffusion").for_quantization("m", QuantizeConfig()) == ("m", {})

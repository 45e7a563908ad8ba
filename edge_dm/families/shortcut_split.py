"""Q-Diffusion's shortcut split (Li et al., ICCV 2023) for a diffusers `UNet2DModel`: the same function,
with each convolution of the up path that reads a skip concatenation split in two.

Each resnet of an up block takes cat(h, skip) along channels: h the block's running state, skip a
down-path feature, of very different ranges. Its 1x1 `conv_shortcut` reads that concatenation
raw, so int8 gives both parts one per-tensor scale (NNCF unifies the scales at a Concat on CPU).
Here `conv(cat(a, b))` becomes `conv_a(a) + conv_b(b)` (the weight split along input channels, half
the bias on each: see SplitConv), so NNCF gives a and b a quantizer each. `conv1` reads norm1+SiLU
of the concatenation: it is split as well where the boundary falls between GroupNorm groups (then
GroupNorm of the concatenation is the concatenation of two GroupNorms); where a group straddles
it, norm1 and conv1 keep reading the concatenation.

Only blocks this module can mirror exactly are rewritten: `UpBlock2D` and `AttnUpBlock2D` with conv
upsamplers and no FreeU, whose resnets are plain `ResnetBlock2D`s with a shortcut convolution and the
default time embedding; others stay as they are. Module names inside a block are kept
(`up_blocks.1.resnets.0.conv_shortcut.a`), so keep-float names still match.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _conv_part(conv: nn.Conv2d, channels: slice) -> nn.Conv2d:
    """`conv` restricted to the input channels `channels`, with half its bias."""
    weight = conv.weight.detach()[:, channels]
    part = nn.Conv2d(weight.shape[1], conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    part.weight = nn.Parameter(weight.clone())
    if conv.bias is not None:
        part.bias = nn.Parameter(conv.bias.detach() / 2)
    return part


class SplitConv(nn.Module):
    """conv(cat(a, b)) as conv_a(a) + conv_b(b); a has `split` channels. Each part carries half the
    bias: NNCF's bias correction shifts only existing biases (and conversion drops a zero one), so a
    part without a bias would keep the mean of its int8 error, a shift that adds up over the
    denoising steps."""

    def __init__(self, conv: nn.Conv2d, split: int):
        super().__init__()
        if conv.groups != 1 or not 0 < split < conv.in_channels:
            raise ValueError(f"cannot split {conv} at input channel {split}")
        self.a = _conv_part(conv, slice(0, split))
        self.b = _conv_part(conv, slice(split, None))

    def forward(self, a, b):
        return self.a(a) + self.b(b)


class SplitGroupNorm(nn.Module):
    """GroupNorm of cat(a, b) as (GroupNorm_a(a), GroupNorm_b(b)): exact when no group straddles the
    boundary, which the constructor checks."""

    def __init__(self, norm: nn.GroupNorm, split: int):
        super().__init__()
        per_group = norm.num_channels // norm.num_groups
        if not splits_between_groups(norm, split):
            raise ValueError(f"channel {split} lies inside a group of {norm}")
        self.a, self.b = (nn.GroupNorm(n // per_group, n, norm.eps, norm.affine)
                          for n in (split, norm.num_channels - split))
        if norm.affine:
            for part, channels in ((self.a, slice(0, split)), (self.b, slice(split, None))):
                part.weight = nn.Parameter(norm.weight.detach()[channels].clone())
                part.bias = nn.Parameter(norm.bias.detach()[channels].clone())

    def forward(self, a, b):
        return self.a(a), self.b(b)


def splits_between_groups(norm: nn.GroupNorm, split: int) -> bool:
    return 0 < split < norm.num_channels and split % (norm.num_channels // norm.num_groups) == 0


class SplitResnet(nn.Module):
    """An up block's ResnetBlock2D taking its input in two parts: forward(a, b, temb) equals
    resnet(cat(a, b), temb). Mirrors diffusers' ResnetBlock2D.forward for the configuration
    `_splittable_resnet` admits; its submodules are the resnet's own, under the same names."""

    def __init__(self, resnet, split: int):
        super().__init__()
        for name in ("time_emb_proj", "norm2", "dropout", "conv2", "nonlinearity"):
            setattr(self, name, getattr(resnet, name))
        self.skip_time_act, self.output_scale_factor = resnet.skip_time_act, resnet.output_scale_factor
        self.conv_shortcut = SplitConv(resnet.conv_shortcut, split)
        if splits_between_groups(resnet.norm1, split):
            self.norm1, self.conv1 = SplitGroupNorm(resnet.norm1, split), SplitConv(resnet.conv1, split)
        else:  # a GroupNorm group straddles the boundary: norm1 and conv1 read the concatenation
            self.norm1, self.conv1 = resnet.norm1, resnet.conv1

    def forward(self, a, b, temb):
        if isinstance(self.conv1, SplitConv):
            h = self.conv1(*map(self.nonlinearity, self.norm1(a, b)))
        else:
            h = self.conv1(self.nonlinearity(self.norm1(torch.cat([a, b], dim=1))))
        if self.time_emb_proj is not None:
            temb = self.time_emb_proj(temb if self.skip_time_act else self.nonlinearity(temb))[:, :, None, None]
        if temb is not None:
            h = h + temb
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        return (self.conv_shortcut(a, b) + h) / self.output_scale_factor


class SplitUpBlock(nn.Module):
    """An UpBlock2D or AttnUpBlock2D whose resnets take the running state and the skip apart instead
    of their concatenation; `channels` is the width of the block's input."""

    def __init__(self, block, channels: int):
        super().__init__()
        resnets = []
        for resnet in block.resnets:
            resnets.append(SplitResnet(resnet, channels))
            channels = resnet.conv2.out_channels
        self.resnets = nn.ModuleList(resnets)
        self.attentions = getattr(block, "attentions", None)
        self.upsamplers = block.upsamplers

    def forward(self, hidden_states, res_hidden_states_tuple, temb=None, upsample_size=None):
        skips = list(res_hidden_states_tuple)
        for i, resnet in enumerate(self.resnets):
            hidden_states = resnet(hidden_states, skips.pop(), temb)
            if self.attentions is not None:
                hidden_states = self.attentions[i](hidden_states)
        for upsampler in self.upsamplers or ():
            hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states


def _splittable_resnet(resnet) -> bool:
    from diffusers.models.resnet import ResnetBlock2D

    return (type(resnet) is ResnetBlock2D and resnet.conv_shortcut is not None and resnet.upsample is None
            and resnet.downsample is None and resnet.time_embedding_norm == "default")


def _splittable_block(block) -> bool:
    from diffusers.models.unets.unet_2d_blocks import AttnUpBlock2D, UpBlock2D
    from diffusers.models.upsampling import Upsample2D

    return (type(block) in (UpBlock2D, AttnUpBlock2D) and not getattr(block, "s1", None)  # FreeU
            and all(type(u) is Upsample2D for u in block.upsamplers or ())
            and all(map(_splittable_resnet, block.resnets)))


def split_shortcuts(unet) -> tuple[nn.Module, int]:
    """A copy of the UNet2DModel `unet` with its up path split as the module docstring says, and
    the number of convolutions split (0: nothing to split)."""
    unet = copy.deepcopy(unet).eval()
    # the first up block reads the mid block's output, each later one its predecessor's
    before = unet.mid_block if unet.mid_block is not None else unet.down_blocks[-1]
    channels = before.resnets[-1].conv2.out_channels
    for k, block in enumerate(unet.up_blocks):
        if _splittable_block(block):
            unet.up_blocks[k] = SplitUpBlock(block, channels)
        channels = block.resnets[-1].conv2.out_channels
    return unet, sum(isinstance(m, SplitConv) for m in unet.modules())

"""Q-Diffusion's shortcut split (Li et al., ICCV 2023) for a diffusers `UNet2DModel`: the same function,
with each convolution of the up path that reads a skip concatenation split in two.

Each resnet of an up block takes cat(h, skip) along channels: h the block's running state, skip a
down-path feature, of very different ranges. Its 1x1 `conv_shortcut` reads that concatenation
raw, so int8 gives both parts one per-tensor scale (NNCF unifies the scales at a Concat on CPU).
Here `conv(cat(a, b))` becomes `conv_a(a) + conv_b(b)` (the weight split along input channels, half
the bias on each: see SplitConv), so NNCF gives a and b a quantizer each.

`conv1` stays as it is: it reads norm1+SiLU of the concatenation, whose GroupNorm brings both parts
to like ranges. Splitting it as well is exact where no GroupNorm group straddles the boundary (10
of the shipped model's 12 up-path resnets); on the shipped model that gave the same held-out error
for 70 more CPU kernels a call (CHANGELOG.md, "Q-Diffusion's shortcut split").

Only blocks this module can mirror exactly are rewritten: `UpBlock2D` and `AttnUpBlock2D` with conv
upsamplers and no FreeU, whose resnets are plain `ResnetBlock2D`s with a shortcut convolution and the
default time embedding; others stay as they are. Module names inside a block are kept
(`up_blocks.1.resnets.0.conv_shortcut.a`), so keep-float names still match.

`split_concat_convolutions` does the same on an exported OpenVINO IR, for families whose export this
package does not control (stable-diffusion exports through optimum-intel): every Convolution that
reads a channel Concat of two tensors directly becomes two Convolutions summed, named as the torch
split names them.
"""
from __future__ import annotations

import copy

import numpy as np
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
    bias, so that NNCF's bias correction, which only shifts existing biases, corrects both parts as
    it corrected the whole convolution (conversion drops a zero bias). On the shipped model this
    moved the held-out error by less than 1% (0.0206 vs 0.0204 with the bias on a alone)."""

    def __init__(self, conv: nn.Conv2d, split: int):
        super().__init__()
        if conv.groups != 1 or not 0 < split < conv.in_channels:
            raise ValueError(f"cannot split {conv} at input channel {split}")
        self.a = _conv_part(conv, slice(0, split))
        self.b = _conv_part(conv, slice(split, None))

    def forward(self, a, b):
        return self.a(a) + self.b(b)


class SplitResnet(nn.Module):
    """An up block's ResnetBlock2D taking its input in two parts: forward(a, b, temb) equals
    resnet(cat(a, b), temb), with the shortcut convolution split. Mirrors diffusers'
    ResnetBlock2D.forward for the configuration `_splittable_resnet` admits; its submodules are the
    resnet's own, under the same names."""

    def __init__(self, resnet, split: int):
        super().__init__()
        for name in ("norm1", "conv1", "time_emb_proj", "norm2", "dropout", "conv2", "nonlinearity"):
            setattr(self, name, getattr(resnet, name))
        self.skip_time_act, self.output_scale_factor = resnet.skip_time_act, resnet.output_scale_factor
        self.conv_shortcut = SplitConv(resnet.conv_shortcut, split)

    def forward(self, a, b, temb):
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


def _part_name(name: str, part: str) -> str:
    """An op name of the PyTorch frontend (`__module.<module path>/aten::.../<Op>`) with the module
    path's last name suffixed by `.a` or `.b`, as a SplitConv part of that module is named."""
    module, sep, rest = name.partition("/")
    return f"{module}.{part}{sep}{rest}"


def _bias(conv) -> tuple | None:
    """(the Add, the Constant) where the only consumer of `conv` adds a Constant to it (its bias), else None."""
    users = list(conv.output(0).get_target_inputs())
    if len(users) != 1 or users[0].get_node().get_type_name() != "Add":
        return None
    add = users[0].get_node()
    other = add.input_value(1 - users[0].get_index()).get_node()
    return (add, other) if other.get_type_name() == "Constant" else None


def split_concat_convolutions(model) -> tuple[object, int]:
    """A copy of the openvino.Model `model` in which every Convolution (any kernel, ungrouped) that
    reads a Concat of two tensors along channels, with its weight a Constant, is two Convolutions on
    the parts (the weight split along input channels) summed; and the number split.

    The same function to float rounding. Where the convolution's only consumer adds a Constant bias
    (how the PyTorch frontend writes a biased convolution), each part adds half of it, as SplitConv
    does, so NNCF's bias correction corrects both parts. Parts are named `<module>.a` and `<module>.b`
    (`__module.up_blocks.0.resnets.0.conv_shortcut.a/aten::_convolution/Convolution`), so keep-float
    names of the torch split and of the whole module match them. The Concat stays where others read
    it. Idempotent: a split model has no such Convolution left, so it comes back unchanged with 0."""
    import openvino.opset13 as ops

    model = model.clone()
    n = 0
    for conv in model.get_ordered_ops():
        if conv.get_type_name() != "Convolution":
            continue
        cat, weight = (conv.input_value(i).get_node() for i in (0, 1))
        if cat.get_type_name() != "Concat" or cat.get_input_size() != 2 or weight.get_type_name() != "Constant":
            continue
        rank = cat.get_output_partial_shape(0).rank
        axis = cat.get_attributes()["axis"]
        if rank.is_dynamic or axis % rank.get_length() != 1 or cat.get_input_partial_shape(0)[1].is_dynamic:
            continue
        split = cat.get_input_partial_shape(0)[1].get_length()
        w, name = weight.get_data(), conv.get_friendly_name()
        attrs = conv.get_attributes()
        parts = [ops.convolution(cat.input_value(i), ops.constant(np.ascontiguousarray(w[:, ch])), attrs["strides"],
                                 attrs["pads_begin"], attrs["pads_end"], attrs["dilations"], attrs["auto_pad"],
                                 name=_part_name(name, part))
                 for i, part, ch in ((0, "a", slice(0, split)), (1, "b", slice(split, None)))]
        out, bias = conv.output(0), _bias(conv)
        if bias is not None:  # half the bias on each part, a Constant each (bias correction changes them apart)
            add, constant = bias
            parts = [ops.add(p, ops.constant(constant.get_data() / 2), name=_part_name(add.get_friendly_name(), part))
                     for p, part in zip(parts, "ab")]
            out = add.output(0)
        total = ops.add(parts[0], parts[1], name=name.partition("/")[0] + "/split/Add")
        out.replace(total.output(0))
        n += 1
    if n:
        model.validate_nodes_and_infer_types()
    return model, n

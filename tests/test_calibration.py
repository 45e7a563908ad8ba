import numpy as np
import pytest

from edge_dm.calibration import CalibrationSet, assign_lanes, collect, draw_timesteps, nearest_steps
from edge_dm.configs import CalibrationConfig, SamplingConfig
from edge_dm.errors import ConfigError
from edge_dm.families.base import torch_denoiser
from edge_dm.models import load_model
from edge_dm.sampling import denoise, generators, initial_noise, make_scheduler


def test_drawn_timesteps_follow_the_clamped_normal():
    from scipy import stats

    rng = np.random.default_rng(0)
    t = draw_timesteps(200_000, 400, 400, 1000, rng)
    assert t.min() == 0 and t.max() == 1000  # clamped at both ends
    # moments of floor(N(400, 400)) clamped to [0, 1000], computed independently with scipy
    grid = np.arange(0, 1001)
    cdf = stats.norm.cdf(grid + 1, 400, 400) - stats.norm.cdf(grid, 400, 400)
    cdf[0] = stats.norm.cdf(1, 400, 400)
    cdf[-1] = 1 - stats.norm.cdf(1000, 400, 400)
    mean = (grid * cdf).sum()
    std = np.sqrt(((grid - mean) ** 2 * cdf).sum())
    assert abs(t.mean() - mean) < 2 and abs(t.std() - std) < 2
    assert np.mean(t == 0) == pytest.approx(stats.norm.cdf(1, 400, 400), abs=0.005)


def test_nearest_step_and_ties_go_to_the_cleaner_step():
    schedule = np.array([900, 600, 300, 0])
    assert nearest_steps(np.array([1000, 899, 750, 451, 150, 0]), schedule).tolist() == [0, 0, 1, 1, 3, 3]
    assert nearest_steps(np.array([450]), schedule).tolist() == [2]


def test_lanes_never_hold_one_step_twice():
    steps = np.array([5, 5, 5, 7, 9, 9, 1])
    lanes = assign_lanes(steps, per_lane=3)
    assert sorted(i for lane in lanes for i in lane) == list(range(7))
    for lane in lanes:
        assert len(lane) <= 3 and len({steps[i] for i in lane}) == len(lane)


@pytest.mark.parametrize("kind,per", [("dntc", 4), ("uniform", 3), ("dntc", 1)])
def test_each_sample_equals_an_independent_fp_run_to_its_step(tiny_model_dir, kind, per):
    """x_i is exactly the sampler's state at step_i of a run from its own noise; t_i what the UNet gets."""
    from edge_dm.calibration import assign_lanes as lanes_of

    m = load_model(tiny_model_dir)
    den = torch_denoiser(m)
    cfg = CalibrationConfig(kind=kind, num_samples=10, sampling=SamplingConfig(steps=12, seed=5),
                            samples_per_trajectory=per)
    cal = collect(cfg, den, m.scheduler_config, m.sample_shape)
    sched = make_scheduler("ddim", m.scheduler_config)
    sched.set_timesteps(12)
    lanes = lanes_of(cal.step, per)
    for lane, members in enumerate(lanes):
        for k in members:
            gens = generators(5, lane, 1)
            s = make_scheduler("ddim", m.scheduler_config)
            seen = {}
            denoise(den, s, initial_noise((1, *m.sample_shape), gens, s), gens, 12,
                    on_step=lambda i, t, x: seen.setdefault(i, (int(t[0]), x.clone())))
            t_ref, x_ref = seen[int(cal.step[k])]
            assert cal.t[k] == t_ref == int(sched.timesteps[cal.step[k]])
            np.testing.assert_allclose(cal.inputs["sample"][k][0], x_ref[0].numpy(), atol=1e-4)


def test_dntc_maps_draws_onto_the_deployed_schedule(tiny_model_dir):
    m = load_model(tiny_model_dir)
    cal = collect(CalibrationConfig(num_samples=40, sampling=SamplingConfig(steps=20), mu=300, sigma=100),
                                torch_denoiser(m), m.scheduler_config, m.sample_shape)
    sched = make_scheduler("ddim", m.scheduler_config)
    sched.set_timesteps(20)
    assert set(cal.t.tolist()) <= set(sched.timesteps.tolist())  # real UNet timesteps, not loop indices
    assert 150 < cal.t.mean() < 450


def test_baselines(tiny_model_dir, tmp_path):
    from PIL import Image

    m = load_model(tiny_model_dir)
    den = torch_denoiser(m)
    noise = collect(CalibrationConfig(kind="noise", num_samples=6), den, m.scheduler_config,
                                  m.sample_shape)
    assert (noise.t == 999).all() and abs(noise.inputs["sample"].std() - 1) < 0.2
    fixed = collect(CalibrationConfig(kind="fixed", num_samples=3, fixed_t=500, sampling=SamplingConfig(steps=10)), den,
                                  m.scheduler_config, m.sample_shape)
    assert len(set(fixed.t.tolist())) == 1 and abs(int(fixed.t[0]) - 500) <= 50
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
    fwd = collect(CalibrationConfig(kind="forward", num_samples=5, data=str(tmp_path),
                                    sampling=SamplingConfig(steps=10)),
                  den, m.scheduler_config, m.sample_shape)
    assert fwd.inputs["sample"].shape == (5, 1, 3, 8, 8) and np.isfinite(fwd.inputs["sample"]).all()


def test_calibration_set_round_trips(tmp_path):
    inputs = {"sample": np.ones((2, 1, 3, 4, 4), np.float32), "timestep": np.array([[5], [9]])}
    cal = CalibrationSet(inputs, np.array([1, 0]), {"kind": "dntc"})
    cal.save(tmp_path / "c.npz")
    back = CalibrationSet.load(tmp_path / "c.npz")
    assert back.recipe == {"kind": "dntc"} and (back.t == [5, 9]).all() and (back.inputs["sample"] == 1).all()
    assert back.record(1)["timestep"].tolist() == [9]


def test_calibration_sets_of_the_earlier_format_still_load(tmp_path):
    """Before model families a set was x (N, C, H, W) and t (N,): it loads as the UNet's named inputs."""
    x = np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32)
    np.savez_compressed(tmp_path / "old.npz", x=x, t=np.array([7, 8, 9]), step=np.array([2, 1, 0]),
                        recipe='{"kind": "dntc"}')
    cal = CalibrationSet.load(tmp_path / "old.npz")
    assert cal.t.tolist() == [7, 8, 9] and cal.record(2)["sample"].shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(cal.record(2)["sample"][0], x[2])


def test_mu_is_checked_against_the_models_training_timesteps():
    CalibrationConfig(mu=1000).check_timesteps(1000)
    with pytest.raises(ConfigError, match=r"\[0, 1000\]"):
        CalibrationConfig(mu=1001).check_timesteps(1000)
    with pytest.raises(ConfigError, match="fixed_t"):
        CalibrationConfig(kind="fixed", fixed_t=1200).check_timesteps(1000)


@pytest.mark.parametrize("bad,match", [(dict(mu=-1), "mu"), (dict(mu=float("nan")), "mu"), (dict(sigma=0), "sigma"),
                                       (dict(sigma=float("inf")), "sigma"), (dict(kind="uniform", data="x"), "data"),
                                       (dict(num_samples=0), "num_samples"), (dict(kind="gauss"), "calibration"),
                                       (dict(kind="forward"), "data")])
def test_bad_calibration_options(bad, match):
    with pytest.raises(ConfigError, match=match):
        CalibrationConfig(**bad)

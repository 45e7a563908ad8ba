"""Calibration sets for post-training quantization of a diffusion UNet.

DNTC (PTQ4DM, Algorithm 1): draw t_i ~ N(mu, sigma), round down, clamp to [0, T]; run the
full-precision sampler from Gaussian noise down to t_i and keep (x_{t_i}, t_i).

How edge-dm does it:
- The trajectory uses the scheduler and number of steps the model is deployed with. A drawn t_i
  maps to the step of that schedule whose timestep is nearest (ties: the later, cleaner step), and
  the sample carries the timestep the UNet really receives at that step, not the loop index.
- Trajectories are shared and batched: each trajectory ("lane") has its own seeded noise and serves
  up to `samples_per_trajectory` samples, all at different steps, which it hands over as it passes
  them. Every sample is still exactly x at its drawn step of an independent-noise FP run (the
  marginal distribution is exact); samples of one lane are correlated, which is the price of
  collecting N samples for the cost of N / samples_per_trajectory trajectories. Set it to 1 for
  PTQ4DM's one-trajectory-per-sample.

Baselines, on equal terms (same schedule, same count): `uniform` (steps uniform over the sampler's
steps, as Q-Diffusion), `fixed` (all at one step), `noise` (Gaussian inputs at t = T - 1, the
UNet's largest timestep), `forward` (real images noised by q(x_t | x_0) at DNTC-drawn steps).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_dm.configs import CalibrationConfig
from edge_dm.errors import DataError


@dataclass
class CalibrationSet:
    x: np.ndarray  # (N, C, H, W) float32: what the UNet sees (after scale_model_input)
    t: np.ndarray  # (N,) int64: the timestep the UNet receives
    step: np.ndarray  # (N,) int64: index into the sampler's schedule (-1 where not from a trajectory)
    recipe: dict

    def __len__(self):
        return len(self.t)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, x=self.x, t=self.t, step=self.step, recipe=json.dumps(self.recipe))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationSet":
        try:
            with np.load(path) as z:
                return cls(z["x"], z["t"], z["step"], json.loads(str(z["recipe"])))
        except (OSError, KeyError, ValueError, EOFError) as exc:
            raise DataError(f"cannot read calibration set {path}: {exc}") from None

    def nncf_dataset(self):
        """An nncf.Dataset of single samples as the OpenVINO UNet's inputs."""
        import nncf

        return nncf.Dataset(range(len(self)), lambda i: {"sample": self.x[i:i + 1], "timestep": self.t[i:i + 1]})


def draw_timesteps(n: int, mu: float, sigma: float, T: int, rng: np.random.Generator) -> np.ndarray:
    """DNTC's draw: floor(N(mu, sigma)) clamped to [0, T]."""
    return np.clip(np.floor(rng.normal(mu, sigma, n)), 0, T).astype(np.int64)


def nearest_steps(t: np.ndarray, schedule: np.ndarray) -> np.ndarray:
    """Index of the schedule step whose timestep is nearest to each t (ties -> the later step)."""
    dist = np.abs(schedule[None, :].astype(np.int64) - t[:, None])
    # argmin returns the first minimum; reverse so the later (smaller-timestep) step wins ties
    return (len(schedule) - 1 - np.argmin(dist[:, ::-1], axis=1)).astype(np.int64)


def assign_lanes(steps: np.ndarray, per_lane: int) -> list[list[int]]:
    """Group sample indices into trajectories: at most `per_lane` each, no two at the same step."""
    lanes: list[list[int]] = []
    used: list[set] = []
    for i in np.argsort(steps, kind="stable"):
        s = int(steps[i])
        free = [j for j in range(len(lanes)) if len(lanes[j]) < per_lane and s not in used[j]]
        if free:
            j = min(free, key=lambda k: len(lanes[k]))
        else:
            lanes.append([])
            used.append(set())
            j = len(lanes) - 1
        lanes[j].append(int(i))
        used[j].add(s)
    return lanes


def collect_on_trajectories(denoiser, scheduler, steps_per_sample: np.ndarray, sample_shape, seed: int,
                            num_steps: int, per_lane: int, progress=None):
    """Run the FP sampler on shared trajectories; return x (N,C,H,W) and t (N,) at each sample's step."""
    from edge_dm.sampling import denoise, generators, initial_noise

    n = len(steps_per_sample)
    xs = np.zeros((n, *sample_shape), np.float32)
    ts = np.zeros(n, np.int64)
    lanes = assign_lanes(steps_per_sample, per_lane)
    wanted = {}  # step -> [(lane, sample)]
    for lane, members in enumerate(lanes):
        for k in members:
            wanted.setdefault(int(steps_per_sample[k]), []).append((lane, k))
    last = max(wanted)

    def record(i, t_batch, model_in):
        for lane, k in wanted.get(i, []):
            xs[k] = model_in[lane].numpy()
            ts[k] = int(t_batch[lane])
        if progress is not None:
            progress(1)

    gens = generators(seed, 0, len(lanes))
    x = initial_noise((len(lanes), *sample_shape), gens, scheduler)
    denoise(denoiser, scheduler, x, gens, num_steps, on_step=record, stop_at=last + 1)
    return xs, ts


def build_calibration_set(cfg: CalibrationConfig, denoiser, scheduler_config: dict, sample_shape,
                          progress=None) -> CalibrationSet:
    """The calibration set of kind cfg.kind, from the FP `denoiser` (see sampling.py)."""
    import torch

    from edge_dm.sampling import make_scheduler

    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    T = cfg.num_train_timesteps
    scheduler = make_scheduler(cfg.scheduler, scheduler_config)
    scheduler.set_timesteps(cfg.steps)
    schedule = scheduler.timesteps.numpy().astype(np.int64)
    n = cfg.num_samples
    drawn = None
    if cfg.kind in ("dntc", "forward"):
        drawn = draw_timesteps(n, cfg.mu, cfg.sigma, T, rng)
        steps = nearest_steps(drawn, schedule)
    elif cfg.kind == "uniform":
        steps = rng.integers(0, len(schedule), n)
    elif cfg.kind == "fixed":
        t_fixed = cfg.fixed_t if cfg.fixed_t is not None else int(cfg.mu)
        steps = nearest_steps(np.full(n, t_fixed), schedule)
    else:  # noise
        steps = np.full(n, -1)

    if cfg.kind in ("dntc", "uniform", "fixed"):
        per_lane = cfg.samples_per_trajectory if cfg.kind != "fixed" else 1
        x, t = collect_on_trajectories(denoiser, scheduler, steps, sample_shape, cfg.seed, cfg.steps,
                                          per_lane, progress)
    elif cfg.kind == "noise":
        gen = torch.Generator().manual_seed(cfg.seed)
        x = (torch.randn((n, *sample_shape), generator=gen) * scheduler.init_noise_sigma).numpy()
        t = np.full(n, T - 1, np.int64)
    else:  # forward: q(x_t | x_0) on real images, at the DNTC-drawn steps' timesteps
        from edge_dm.data import load_images, to_model_range

        images = load_images(cfg.data, size=sample_shape[-1])
        pick = rng.choice(len(images), n, replace=len(images) < n)
        x0 = torch.from_numpy(to_model_range(images[pick]))
        t = schedule[steps]
        gen = torch.Generator().manual_seed(cfg.seed)
        noise = torch.randn(x0.shape, generator=gen)
        ddpm = make_scheduler("ddpm", scheduler_config)
        x = ddpm.add_noise(x0, noise, torch.from_numpy(t)).numpy()
    recipe = dict(cfg.to_dict(), schedule_len=len(schedule), seconds=round(time.perf_counter() - t0, 2),
                  t_mean=float(np.mean(t)), t_std=float(np.std(t)))
    if drawn is not None:
        recipe["drawn_t_mean"], recipe["drawn_t_std"] = float(drawn.mean()), float(drawn.std())
    return CalibrationSet(x.astype(np.float32), t.astype(np.int64), steps.astype(np.int64), recipe)


def held_out_set(denoiser, scheduler_config: dict, sample_shape, scheduler_name: str, num_steps: int,
                 trajectories: int, seed: int, points: int = 10) -> CalibrationSet:
    """Held-out trajectory samples at `points` steps spread evenly over the schedule (for error tables)."""
    from edge_dm.sampling import make_scheduler

    scheduler = make_scheduler(scheduler_name, scheduler_config)
    scheduler.set_timesteps(num_steps)
    at = np.unique(np.linspace(0, len(scheduler.timesteps) - 1, points).round().astype(np.int64))
    steps = np.tile(at, trajectories)
    x, t = collect_on_trajectories(denoiser, scheduler, steps, sample_shape, seed, num_steps, len(at))
    return CalibrationSet(x, t, steps, dict(kind="held-out", seed=seed, trajectories=trajectories))

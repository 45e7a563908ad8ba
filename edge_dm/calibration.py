"""Calibration sets for post-training quantization of a diffusion model's denoiser.

DNTC (PTQ4DM, Algorithm 1): draw t_i ~ N(mu, sigma), round down, clamp to [0, T]; run the
full-precision sampler from Gaussian noise down to t_i and keep the network's input there.

How edge-dm does it:
- The trajectory uses the scheduler, number of steps (and for text-to-image the guidance scale,
  size and prompts) the model is deployed with. A drawn t_i maps to the step of that schedule whose
  timestep is nearest (ties: the later, cleaner step), and the record is what the network really
  receives at that step: a dict of its named inputs (for text-to-image with guidance: the latent
  twice, the timestep twice and the unconditional and conditional text embeddings).
- Trajectories are shared and batched: each trajectory ("lane") has its own seeded noise (and a
  prompt: lane j takes prompt j modulo their number) and serves up to `samples_per_trajectory`
  samples, all at different steps, which it hands over as it passes them. Every sample is still
  exactly the input at its drawn step of an independent FP run (the marginal distribution is exact);
  samples of one lane are correlated, which is the price of collecting N samples for the cost of
  N / samples_per_trajectory trajectories. Set it to 1 for PTQ4DM's one-trajectory-per-sample.

Baselines, on equal terms (same schedule, same count): `uniform` (steps uniform over the sampler's
steps, as Q-Diffusion), `pipeline` (every step of the first trajectories until N inputs are
collected: what optimum-intel calibrates on), `fixed` (all at one step), `noise` (Gaussian inputs
at t = T - 1, the largest timestep), `forward` (real images noised by q(x_t | x_0) at DNTC-drawn
steps; pixel-space models only).
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_dm.bundle import Bundle
from edge_dm.configs import CalibrationConfig, SamplingConfig
from edge_dm.data import cycled, load_images
from edge_dm.errors import ConfigError, DataError
from edge_dm.families.base import TIMESTEP, Denoiser
from edge_dm.images import to_model_range
from edge_dm.outputs import write_atomic
from edge_dm.runtime import OpenVINOModel
from edge_dm.sampling import denoise, generate, generators, initial_noise, make_scheduler, take

INPUT_PREFIX = "input."


@dataclass
class CalibrationSet:
    inputs: dict  # input name -> (N, B, ...) array: record i is {name: inputs[name][i]}, B images each
    step: np.ndarray  # (N,) int64: index into the sampler's schedule (-1 where not from a trajectory)
    recipe: dict  # how it was made

    def __len__(self):
        return len(self.step)

    @property
    def t(self) -> np.ndarray:
        """(N,) the timestep each record's network receives."""
        name = self.recipe.get("roles", {}).get("timestep", TIMESTEP)  # sets of 0.2.0 named their inputs' roles
        return self.inputs[name].reshape(len(self), -1)[:, 0].astype(np.int64)

    def record(self, i: int) -> dict:
        return {k: v[i] for k, v in self.inputs.items()}

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, step=self.step, recipe=json.dumps(self.recipe),
                            **{INPUT_PREFIX + k: v for k, v in self.inputs.items()})
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationSet":
        if not Path(path).is_file():
            raise DataError(f"calibration set {path} not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                recipe = json.loads(str(z["recipe"]))
                inputs = {k[len(INPUT_PREFIX):]: z[k] for k in z.files if k.startswith(INPUT_PREFIX)}
                if not inputs:  # the format before families: x (N, C, H, W) and t (N,)
                    inputs = {"sample": z["x"][:, None], "timestep": z["t"][:, None]}
                return cls(inputs, z["step"], recipe)
        except (OSError, KeyError, ValueError, EOFError, AttributeError) as exc:
            raise DataError(f"{path} is not a calibration set edge-dm wrote (a calibration.npz of an int8 bundle): "
                            f"{type(exc).__name__}") from None

    def check_fits(self, model) -> None:
        """DataError unless every record has the inputs of `model` (an openvino.Model) in shapes it takes."""
        for inp in model.inputs:
            name = inp.get_any_name()
            if name not in self.inputs:
                raise DataError(f"the calibration set has no input {name!r} (it has {', '.join(self.inputs)}): "
                                "it was made for another model")
            shape = inp.get_partial_shape()
            got = self.inputs[name].shape[1:]
            if len(got) != shape.rank.get_length() or not all(
                    d.is_dynamic or d.get_length() == g for d, g in zip(list(shape)[1:], got[1:])):
                raise DataError(f"the calibration set's {name} records are {list(got)}, the model takes {shape}: "
                                "it was made for another model")

    def nncf_dataset(self):
        """An nncf.Dataset of the records, each the network's named inputs."""
        import nncf

        return nncf.Dataset(range(len(self)), self.record)


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


def lane_conditions(cond: dict | None, lanes: int) -> dict | None:
    """Conditioning for `lanes` trajectories from one entry per prompt: lane j takes prompt j mod P."""
    if cond is None:
        return None
    count = len(next(iter(cond.values())))
    return {k: v[np.arange(lanes) % count] for k, v in cond.items()}


def collect_on_trajectories(denoiser, scheduler, steps_per_sample: np.ndarray, lanes: list[list[int]],
                            sample_shape, seed: int, num_steps: int, cond=None, progress=None) -> dict:
    """Run the FP sampler on the trajectories `lanes` (lane j: seed + j, cond's entry j); return the
    network's inputs at each sample's step, as {name: (N, B, ...)}."""
    n = len(steps_per_sample)
    records: list = [None] * n
    wanted: dict = {}  # step -> [(lane, sample)]
    for lane, members in enumerate(lanes):
        for k in members:
            wanted.setdefault(int(steps_per_sample[k]), []).append((lane, k))

    def record(i, t_batch, model_in):
        for lane, k in wanted.get(i, []):
            records[k] = denoiser.inputs(model_in[lane:lane + 1], t_batch[lane:lane + 1], take(cond, lane, lane + 1))
        if progress is not None:
            progress(1)

    gens = generators(seed, 0, len(lanes))
    scheduler.set_timesteps(num_steps)
    x = initial_noise((len(lanes), *sample_shape), gens, scheduler)
    denoise(denoiser, scheduler, x, gens, num_steps, cond, on_step=record, stop_at=max(wanted) + 1)
    return {name: np.stack([r[name] for r in records]) for name in records[0]}


def reference_denoiser(bundle: Bundle, sampling: SamplingConfig) -> Denoiser:
    """The bundle's denoiser in f32 on the CPU, each call one request on all cores: what calibration
    and the held-out error table sample with (a few trajectories a call are too few to keep
    OpenVINO's THROUGHPUT streams busy). `sampling` is resolved (Bundle.sampling)."""
    c = bundle.family.conditioning
    model = bundle.read_model()
    net = OpenVINOModel(model, "CPU", "LATENCY", precision_hint="f32",
                        shapes={"sample": c.sample_shape(bundle, sampling)})
    return Denoiser(c, net, c.guidance(sampling))


def check_float(bundle: Bundle) -> None:
    """ConfigError unless `bundle` holds a float denoiser: calibration follows the full-precision model."""
    if bundle.precision not in ("fp32", "fp16"):
        raise ConfigError(f"calibration follows the full-precision model's trajectory: {bundle.path} holds a "
                          f"{bundle.precision} model; give its fp32 bundle (edge-dm export)")


def calibrate(fp32: Bundle, cfg: CalibrationConfig = CalibrationConfig(), progress=None) -> CalibrationSet:
    """The calibration set of kind cfg.kind for the float bundle `fp32`: its denoiser runs in f32 on
    the CPU at cfg.sampling (the model's defaults where it leaves options open), with the family's
    calibration prompts (text-to-image)."""
    c = fp32.family.conditioning
    s = fp32.sampling(cfg.sampling)
    check_float(fp32)
    c.check_sampling(fp32, s)
    prompts, _ = c.calibration_prompts(cfg.prompts)
    cond = c.encode(fp32.components("CPU", "f32"), prompts, s)
    cal = collect(cfg.replace(sampling=s), reference_denoiser(fp32, s), fp32.scheduler_config,
                  c.sample_shape(fp32, s), cond, progress)
    cal.recipe["family"] = fp32.family.name
    return cal


def collect(cfg: CalibrationConfig, denoiser, scheduler_config: dict, sample_shape, cond: dict | None = None,
            progress=None) -> CalibrationSet:
    """The calibration set of kind cfg.kind from the FP `denoiser` (edge_dm.families.base.Denoiser),
    sampled at cfg.sampling (resolved); `cond` holds one conditioning entry per prompt (text-to-image)."""
    import torch

    t0 = time.perf_counter()
    s = cfg.sampling.resolved(denoiser.conditioning.sampling_defaults)
    cfg = cfg.replace(sampling=s)
    rng = np.random.default_rng(s.seed)
    T = int(scheduler_config.get("num_train_timesteps", 1000))
    cfg.check_timesteps(T)
    scheduler = make_scheduler(s.scheduler, scheduler_config)
    scheduler.set_timesteps(s.steps)
    schedule = scheduler.timesteps.numpy().astype(np.int64)
    n = cfg.num_samples
    drawn, lanes = None, None
    if cfg.kind in ("dntc", "forward"):
        drawn = draw_timesteps(n, cfg.mu, cfg.sigma, T, rng)
        steps = nearest_steps(drawn, schedule)
    elif cfg.kind == "uniform":
        steps = rng.integers(0, len(schedule), n)
    elif cfg.kind == "pipeline":
        steps = np.arange(n) % len(schedule)
        lanes = [list(range(j, min(n, j + len(schedule)))) for j in range(0, n, len(schedule))]
    elif cfg.kind == "fixed":
        t_fixed = cfg.fixed_t if cfg.fixed_t is not None else int(cfg.mu)
        steps = nearest_steps(np.full(n, t_fixed), schedule)
    else:  # noise
        steps = np.full(n, -1)

    if cfg.kind in ("dntc", "uniform", "pipeline", "fixed"):
        if lanes is None:
            lanes = assign_lanes(steps, cfg.samples_per_trajectory if cfg.kind != "fixed" else 1)
        inputs = collect_on_trajectories(denoiser, scheduler, steps, lanes, sample_shape, s.seed, s.steps,
                                         lane_conditions(cond, len(lanes)), progress)
    elif cfg.kind == "noise":
        gen = torch.Generator().manual_seed(s.seed)
        x = torch.randn((n, *sample_shape), generator=gen) * scheduler.init_noise_sigma
        t = torch.full((n,), T - 1, dtype=torch.int64)
        c = lane_conditions(cond, n)
        recs = [denoiser.inputs(x[i:i + 1], t[i:i + 1], None if c is None else {k: v[i:i + 1] for k, v in c.items()})
                for i in range(n)]
        inputs = {name: np.stack([r[name] for r in recs]) for name in recs[0]}
    else:  # forward: q(x_t | x_0) on real images, at the DNTC-drawn steps' timesteps
        images = load_images(cfg.data, size=sample_shape[-1])
        pick = rng.choice(len(images), n, replace=len(images) < n)
        x0 = torch.from_numpy(to_model_range(images[pick]))
        t = torch.from_numpy(schedule[steps])
        gen = torch.Generator().manual_seed(s.seed)
        noise = torch.randn(x0.shape, generator=gen)
        x = make_scheduler("ddpm", scheduler_config).add_noise(x0, noise, t)
        recs = [denoiser.inputs(x[i:i + 1], t[i:i + 1]) for i in range(n)]
        inputs = {name: np.stack([r[name] for r in recs]) for name in recs[0]}
    cal = CalibrationSet(inputs, steps.astype(np.int64), cfg.to_dict())
    cal.recipe.update(schedule_len=len(schedule), seconds=round(time.perf_counter() - t0, 2),
                      t_mean=float(np.mean(cal.t)), t_std=float(np.std(cal.t)))
    if drawn is not None:
        cal.recipe["drawn_t_mean"], cal.recipe["drawn_t_std"] = float(drawn.mean()), float(drawn.std())
    return cal


def final_latents(fp32: Bundle, cfg: CalibrationConfig, count: int) -> np.ndarray:
    """The loop's final states of `count` full trajectories of the float bundle `fp32` at cfg.sampling
    (seed cfg.sampling.seed + i, calibration prompt i cycling): what its VAE decoder decodes, to
    calibrate that on."""
    c = fp32.family.conditioning
    s = fp32.sampling(cfg.sampling)
    prompts, _ = c.calibration_prompts(cfg.prompts)
    prompts = cycled(prompts, count)
    cond = c.encode(fp32.components("CPU", "f32"), prompts, s)
    return generate(reference_denoiser(fp32, s), make_scheduler(s.scheduler, fp32.scheduler_config), count, count,
                    s.steps, s.seed, c.sample_shape(fp32, s), cond=cond)


HELD_OUT_SEED = 1_000_003  # far from any calibration seed: held-out trajectories share no noise


def held_out(fp32: Bundle, cfg: CalibrationConfig, trajectories: int, progress=None) -> CalibrationSet:
    """The error table's held-out records for the float bundle `fp32`: `trajectories` trajectories at
    cfg.sampling from HELD_OUT_SEED, with the family's held-out prompts."""
    c = fp32.family.conditioning
    s = fp32.sampling(cfg.sampling)
    check_float(fp32)
    _, prompts = c.calibration_prompts(cfg.prompts)
    return held_out_set(reference_denoiser(fp32, s), fp32.scheduler_config, c.sample_shape(fp32, s), s,
                        trajectories, HELD_OUT_SEED, c.encode(fp32.components("CPU", "f32"), prompts, s),
                        progress=progress)


def held_out_set(denoiser, scheduler_config: dict, sample_shape, sampling, trajectories: int, seed: int,
                 cond: dict | None = None, points: int = 10, progress=None) -> CalibrationSet:
    """Held-out trajectory records at `points` steps spread evenly over the schedule (for error tables);
    `cond`: one entry per held-out prompt."""
    sampling = sampling.resolved(denoiser.conditioning.sampling_defaults)
    scheduler = make_scheduler(sampling.scheduler, scheduler_config)
    scheduler.set_timesteps(sampling.steps)
    at = np.unique(np.linspace(0, len(scheduler.timesteps) - 1, points).round().astype(np.int64))
    steps = np.tile(at, trajectories)
    lanes = [list(range(j * len(at), (j + 1) * len(at))) for j in range(trajectories)]
    inputs = collect_on_trajectories(denoiser, scheduler, steps, lanes, sample_shape, seed, sampling.steps,
                                     lane_conditions(cond, trajectories), progress)
    return CalibrationSet(inputs, steps, dict(kind="held-out", seed=seed, trajectories=trajectories))

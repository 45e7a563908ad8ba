"""The one denoising loop of edge-dm, for any denoiser.

A *denoiser* is any callable `(x: torch.Tensor[B,...] float32, t: torch.Tensor[B] int64, cond) -> eps`
(the noise prediction as a torch tensor), where `cond` is the batch's conditioning: a dict of numpy
arrays with a leading image axis, or None. Families build denoisers on compiled OpenVINO models or
torch modules (edge_dm.families.base.Denoiser). A *cached* denoiser (edge_dm.caching, DeepCache)
also has `full` and `shallow` calls, for sampling with a cache interval. Schedulers are diffusers'
own, used unchanged.

Seeding: image number i of a run with seed s draws its initial noise and every stochastic step from
its own `torch.Generator` seeded with s + i, so an image depends on (seed, index) only, not on the
batch size or on which device ran the UNet.
"""
from __future__ import annotations

from typing import Callable, Sequence

from edge_dm.configs import SCHEDULERS
from edge_dm.errors import ConfigError, library_reason


def make_scheduler(name: str, config: dict):
    """A diffusers scheduler of kind `name` built from a model's saved scheduler config."""
    import diffusers

    if name not in SCHEDULERS:
        raise ConfigError(f"unknown `scheduler` {name!r}; choose one of {', '.join(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    kwargs = {}
    if name == "ddim":
        kwargs = dict(clip_sample=config.get("clip_sample", True), set_alpha_to_one=False)
    try:
        return cls.from_config(config, **kwargs)
    except (NotImplementedError, ValueError, TypeError) as exc:  # e.g. an unknown beta_schedule
        raise ConfigError(f"the model's scheduler config cannot make a {name} `scheduler`: "
                          f"{library_reason(exc)}") from None


def check_steps(name: str, config: dict, steps: int) -> None:
    """ConfigError unless the scheduler `name` can run `steps` steps of the model's training schedule
    (checked before any work: some schedulers fail only after the loop)."""
    T = int(config.get("num_train_timesteps", 1000))
    if steps > T:
        raise ConfigError(f"`steps` {steps} is more than the model's {T} training timesteps")
    scheduler = make_scheduler(name, config)
    try:
        scheduler.set_timesteps(steps)
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"the {name} scheduler cannot run {steps} `steps`: {exc}") from None
    first = int(scheduler.timesteps[0])
    if first < T // 2:
        spacing = config.get("timestep_spacing", "leading")
        raise ConfigError(f"with {steps} `steps` the {name} scheduler's first timestep is {first} of {T} (timestep "
                          f"spacing {spacing!r}): it would start from noise as if it were almost an image; "
                          "give more steps, or a model whose scheduler spaces them 'trailing'")


def generators(seed: int, start: int, count: int):
    import torch

    return [torch.Generator().manual_seed(seed + start + i) for i in range(count)]


def initial_noise(shape: Sequence[int], gens, scheduler):
    """x_T for a batch, one generator per image, scaled as the scheduler expects."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tuple(shape), generator=gens) * scheduler.init_noise_sigma


def denoise(denoiser: Callable, scheduler, x, gens, steps: int, cond=None,
            on_step: Callable | None = None, stop_at: int | None = None, cache_interval: int = 1):
    """Run `scheduler` for `steps` steps from x (x_T) under conditioning `cond`; returns x_0.

    `on_step(i, t, x_t)` is called before step i with the sample the denoiser is about to see and
    the timesteps it receives. `stop_at=i` returns x right before step i instead (x_{t_i}).
    `cache_interval` N > 1 is DeepCache (edge_dm.caching): the denoiser must then be a cached one;
    steps 0, N, 2N, ... run it whole and the steps between only its shallow part.
    """
    import torch

    scheduler.set_timesteps(steps)
    cache = None
    for i, t in enumerate(scheduler.timesteps):
        if stop_at is not None and i == stop_at:
            return x
        model_in = scheduler.scale_model_input(x, t)
        t_batch = torch.full((x.shape[0],), int(t), dtype=torch.int64)
        if on_step is not None:
            on_step(i, t_batch, model_in)
        if cache_interval == 1:
            eps = denoiser(model_in, t_batch, cond)
        elif i % cache_interval == 0:
            eps, cache = denoiser.full(model_in, t_batch, cond)
        else:
            eps = denoiser.shallow(model_in, t_batch, cache, cond)
        x = scheduler.step(eps, t, x, generator=gens).prev_sample
    return x


def take(cond, start: int, stop: int):
    """Images start..stop-1 of a conditioning dict (None stays None)."""
    return None if cond is None else {k: v[start:stop] for k, v in cond.items()}


def generate(denoiser: Callable, scheduler, num_images: int, batch_size: int, steps: int, seed: int,
             shape: Sequence[int], cond=None, progress: Callable | None = None, workers: int = 1,
             cache_interval: int = 1, finish: Callable | None = None):
    """The loop's final states of `num_images` images, as one numpy array (N, ...), float32; with
    `finish`, what it makes of each batch's states (e.g. decoded uint8 images) instead.

    The images go through the loop in batches of `batch_size`, image i with cond's entry i. With
    `workers` > 1, that many batches run at once, each in its own thread with its own copy of the
    scheduler, so no batch waits for the others between steps; the denoiser must then accept calls
    from several threads (OpenVINO nets do). An image depends on (seed, index) only, whatever the
    batch size or the number of workers. `cache_interval`: see `denoise`.
    """
    import copy
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    starts = range(0, num_images, batch_size)
    concurrent = workers > 1 and len(starts) > 1

    def run(start):
        n = min(batch_size, num_images - start)
        gens = generators(seed, start, n)
        sched = copy.deepcopy(scheduler) if concurrent else scheduler
        sched.set_timesteps(steps)  # before the noise: Euler's init_noise_sigma depends on the schedule
        x = initial_noise((n, *shape), gens, sched)
        x = denoise(denoiser, sched, x, gens, steps, take(cond, start, start + n),
                    cache_interval=cache_interval).numpy()
        out = finish(x) if finish is not None else x
        if progress is not None:
            progress(n)
        return out

    if not concurrent:
        return np.concatenate([run(s) for s in starts])
    with ThreadPoolExecutor(max_workers=min(workers, len(starts))) as pool:
        return np.concatenate(list(pool.map(run, starts)))

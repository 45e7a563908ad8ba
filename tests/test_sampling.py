import numpy as np
import pytest
import torch

from edge_dm.configs import SCHEDULERS
from edge_dm.errors import ConfigError
from edge_dm.families.base import torch_denoiser
from edge_dm.models import load_model
from edge_dm.sampling import generate, make_scheduler


def test_loop_equals_diffusers_ddim_pipeline(tiny_model_dir):
    """edge-dm's own loop with a torch denoiser gives exactly what diffusers' DDIMPipeline gives."""
    from diffusers import DDIMPipeline

    m = load_model(tiny_model_dir)
    sched = make_scheduler("ddim", m.scheduler_config)
    ours = generate(torch_denoiser(m), sched, 3, 3, 10, seed=7, shape=m.sample_shape)
    pipe = DDIMPipeline(unet=m.unet, scheduler=make_scheduler("ddim", m.scheduler_config))
    gens = [torch.Generator().manual_seed(7 + i) for i in range(3)]
    ref = pipe(batch_size=3, generator=gens, num_inference_steps=10, eta=0.0, output_type="np").images
    np.testing.assert_allclose(np.clip(ours.transpose(0, 2, 3, 1) / 2 + 0.5, 0, 1), ref, atol=1e-5)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_images_do_not_depend_on_batch_size(tiny_model_dir, name):
    """Also for Euler, whose initial noise scale is only right once the schedule is set: the first
    batch used to get the untrained-schedule scale and the later ones the sampling schedule's."""
    m = load_model(tiny_model_dir)
    sched = make_scheduler(name, m.scheduler_config)
    a = generate(torch_denoiser(m), sched, 4, 4, 5, seed=3, shape=m.sample_shape)
    b = generate(torch_denoiser(m), sched, 4, 3, 5, seed=3, shape=m.sample_shape)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # raw states, not clamped
    c = generate(torch_denoiser(m), sched, 4, 4, 5, seed=4, shape=m.sample_shape)
    assert np.abs(a - c).max() > 0.1


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_concurrent_batches_give_the_same_images(tiny_model_dir, name):
    """Batches run by several workers at once (each with its own scheduler copy: DPM-Solver keeps a
    history of model outputs) give exactly what one batch after another gives."""
    m = load_model(tiny_model_dir)
    sched = make_scheduler(name, m.scheduler_config)
    done = []
    one = generate(torch_denoiser(m), sched, 7, 2, 6, seed=5, shape=m.sample_shape)
    many = generate(torch_denoiser(m), sched, 7, 2, 6, seed=5, shape=m.sample_shape, workers=3,
                    progress=done.append)
    np.testing.assert_allclose(many, one, atol=1e-6)
    assert sorted(done) == [1, 2, 2, 2]


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_runs(tiny_model_dir, name):
    m = load_model(tiny_model_dir)
    x = generate(torch_denoiser(m), make_scheduler(name, m.scheduler_config), 2, 2, 4, 0, m.sample_shape)
    assert x.shape == (2, 3, 8, 8) and np.isfinite(x).all()


def test_unknown_scheduler():
    with pytest.raises(ConfigError, match="unknown scheduler"):
        make_scheduler("heun-9000", {})

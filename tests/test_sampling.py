import numpy as np
import pytest
import torch

from edge_dm.errors import ConfigError
from edge_dm.models import load_model
from edge_dm.sampling import SCHEDULERS, generate, make_scheduler, torch_denoiser


def test_loop_equals_diffusers_ddim_pipeline(tiny_model_dir):
    """edge-dm's own loop with a torch denoiser gives exactly what diffusers' DDIMPipeline gives."""
    from diffusers import DDIMPipeline

    m = load_model(tiny_model_dir)
    sched = make_scheduler("ddim", m.scheduler_config)
    ours = generate(torch_denoiser(m.unet), sched, 3, 3, 10, seed=7, shape=m.sample_shape)
    pipe = DDIMPipeline(unet=m.unet, scheduler=make_scheduler("ddim", m.scheduler_config))
    gens = [torch.Generator().manual_seed(7 + i) for i in range(3)]
    ref = pipe(batch_size=3, generator=gens, num_inference_steps=10, eta=0.0, output_type="np").images
    np.testing.assert_allclose(ours.transpose(0, 2, 3, 1) / 2 + 0.5, ref, atol=1e-5)


def test_images_do_not_depend_on_batch_size(tiny_model_dir):
    m = load_model(tiny_model_dir)
    sched = make_scheduler("ddpm", m.scheduler_config)
    a = generate(torch_denoiser(m.unet), sched, 4, 4, 5, seed=3, shape=m.sample_shape)
    b = generate(torch_denoiser(m.unet), sched, 4, 3, 5, seed=3, shape=m.sample_shape)
    np.testing.assert_allclose(a, b, atol=1e-5)
    c = generate(torch_denoiser(m.unet), sched, 4, 4, 5, seed=4, shape=m.sample_shape)
    assert np.abs(a - c).max() > 0.1


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_runs(tiny_model_dir, name):
    m = load_model(tiny_model_dir)
    x = generate(torch_denoiser(m.unet), make_scheduler(name, m.scheduler_config), 2, 2, 4, 0, m.sample_shape)
    assert x.shape == (2, 3, 8, 8) and np.isfinite(x).all() and np.abs(x).max() <= 1


def test_unknown_scheduler():
    with pytest.raises(ConfigError, match="unknown scheduler"):
        make_scheduler("heun-9000", {})

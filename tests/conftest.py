"""Shared fixtures: tiny seeded models the tests build and save themselves (an unconditional UNet and
a Stable Diffusion pipeline), their fp32 bundles and one int8 bundle each, made once per session.

No downloads: every model here is built by the tests themselves, and HF_HUB_OFFLINE is set.
"""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Default bundles go to a per-session temporary folder, never the user's cache: set before any
    other fixture, so the session-scoped models exported below land there too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_DM_HOME", str(tmp_path_factory.getbasetemp() / "edge-dm-home"))
        yield


def quantize_job(model, output, calibration=None, quantization=None, **job):
    """edge-dm quantize's config for a tiny model (one held-out trajectory unless told otherwise)."""
    from edge_dm.configs import QuantizeConfig, QuantizeJobConfig

    job.setdefault("eval_trajectories", 1)
    extra = {} if calibration is None else dict(calibration=calibration)
    return QuantizeJobConfig(model=str(model), output=str(output), quantization=quantization or QuantizeConfig(),
                             **extra, **job)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tiny import build_tiny_unet, save_pipeline

    return str(save_pipeline(build_tiny_unet(seed=0), tmp_path_factory.mktemp("tiny") / "pipeline"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model_dir, tmp_path_factory):
    from edge_dm.configs import ExportConfig
    from edge_dm.jobs import export

    return export(ExportConfig(model=tiny_model_dir, output=str(tmp_path_factory.mktemp("b") / "fp32")))


@pytest.fixture(scope="session")
def tiny_int8(tiny_model_dir, tmp_path_factory):
    """(bundle, summary) of the tiny UNet quantized with edge-dm's defaults: 24 DNTC samples at DDIM 10."""
    from edge_dm.configs import CalibrationConfig, SamplingConfig
    from edge_dm.jobs import quantize

    cal = CalibrationConfig(num_samples=24, sampling=SamplingConfig(steps=10), samples_per_trajectory=6)
    return quantize(quantize_job(tiny_model_dir, tmp_path_factory.mktemp("q") / "int8", cal, eval_trajectories=2),
                    progress=False)


@pytest.fixture(scope="session")
def sd_prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "prompts.txt"
    path.write_text("a photo of a horse\na red car\n\na blurry photo of a ship\n")
    return path


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory):
    from tiny_sd import build_tiny_sd

    return str(build_tiny_sd(tmp_path_factory.mktemp("sd") / "pipeline"))


@pytest.fixture(scope="session")
def sd_fp32(sd_dir):
    """The tiny SD pipeline's fp32 bundle, in the bundle cache (where `edge-dm quantize` reuses it)."""
    from edge_dm.configs import ExportConfig
    from edge_dm.jobs import export

    return export(ExportConfig(model=sd_dir))


@pytest.fixture(scope="session")
def sd_int8(sd_dir, sd_fp32, sd_prompts, tmp_path_factory):
    """(bundle, summary) of the tiny SD pipeline quantized with edge-dm's defaults, 8 DNTC samples at 4 steps."""
    from edge_dm.configs import CalibrationConfig, SamplingConfig
    from edge_dm.jobs import quantize

    cal = CalibrationConfig(num_samples=8, samples_per_trajectory=4, prompts=str(sd_prompts),
                            sampling=SamplingConfig(steps=4))
    return quantize(quantize_job(sd_dir, tmp_path_factory.mktemp("q") / "int8", cal), progress=False)

"""Shared fixtures: a tiny seeded UNet saved as a diffusers pipeline, and its OpenVINO bundles.

No downloads: every model here is built by the tests themselves, and HF_HUB_OFFLINE is set.
"""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Default bundles go to a per-session temporary folder, never the user's cache."""
    monkeypatch.setenv("EDGE_DM_HOME", str(tmp_path_factory.getbasetemp() / "edge-dm-home"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tiny import build_tiny_unet, save_pipeline

    return str(save_pipeline(build_tiny_unet(seed=0), tmp_path_factory.mktemp("tiny") / "pipeline"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model_dir, tmp_path_factory):
    from edge_dm.configs import ExportConfig
    from edge_dm.jobs import export

    return export(ExportConfig(model=tiny_model_dir, output=str(tmp_path_factory.mktemp("b") / "fp32")))

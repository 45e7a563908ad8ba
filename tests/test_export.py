import json

import numpy as np
import pytest
import torch

from edge_dm import bundle as bundle_mod
from edge_dm.bundle import open_bundle
from edge_dm.configs import ExportConfig
from edge_dm.errors import BundleError, ConfigError, OutputExistsError
from edge_dm.jobs import export
from edge_dm.models import load_model
from edge_dm.runtime import compile_model as compile_unet


@pytest.mark.parametrize("batch", [1, 3])
def test_openvino_fp32_matches_torch(tiny_model_dir, tiny_bundle, batch):
    unet = load_model(tiny_model_dir).unet
    compiled = compile_unet(tiny_bundle.read_model(), "CPU", batch, precision_hint="f32")
    rng = np.random.default_rng(batch)
    for t in (0, 10, 250, 999):
        x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
        ts = np.full(batch, t, np.int64)
        ov_out = compiled({"sample": x, "timestep": ts})[0]
        with torch.no_grad():
            ref = unet(torch.from_numpy(x), torch.from_numpy(ts)).sample.numpy()
        rel = np.linalg.norm(ov_out - ref) / np.linalg.norm(ref)
        assert rel < 1e-4, (t, rel)


def test_bundle_is_self_contained(tiny_bundle):
    b = open_bundle(tiny_bundle.path)
    assert b.precision == "fp32" and b.sample_shape == (3, 8, 8)
    assert b.scheduler_config["num_train_timesteps"] == 1000
    r = b.recipe
    assert r["inputs"] == {"sample": [-1, 3, 8, 8], "timestep": [-1]}
    assert {"edge-dm", "openvino", "nncf", "torch"} <= set(r["versions"])
    assert ExportConfig.from_dict(r["config"]).precision == "fp32"
    model = b.read_model()
    assert model.input("sample").get_partial_shape()[0].is_dynamic


def test_fp16_bundle_is_smaller_and_close(tiny_model_dir, tiny_bundle, tmp_path):
    b16 = export(ExportConfig(model=tiny_model_dir, output=str(tmp_path / "fp16"), precision="fp16"))
    weights = lambda b: (b.path / "unet.bin").stat().st_size  # noqa: E731
    assert weights(b16) < 0.6 * weights(tiny_bundle)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    t = np.array([5, 600])
    a = compile_unet(tiny_bundle.read_model(), "CPU", 2, precision_hint="f32")({"sample": x, "timestep": t})[0]
    b = compile_unet(b16.read_model(), "CPU", 2, precision_hint="f32")({"sample": x, "timestep": t})[0]
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-2


def test_existing_output_is_refused_unless_overwrite(tiny_model_dir, tmp_path):
    out = tmp_path / "b"
    export(ExportConfig(model=tiny_model_dir, output=str(out)))
    (out / "note.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="pass overwrite"):
        export(ExportConfig(model=tiny_model_dir, output=str(out)))
    assert (out / "note.txt").exists()
    with pytest.raises(OutputExistsError, match=r"files edge-dm did not write \(note.txt\)"):  # a user's file
        export(ExportConfig(model=tiny_model_dir, output=str(out), overwrite=True))
    (out / "note.txt").unlink()
    export(ExportConfig(model=tiny_model_dir, output=str(out), overwrite=True))  # only edge-dm's own: replaced
    assert (out / "unet.xml").exists()


def test_overwrite_never_replaces_a_folder_edge_dm_did_not_make(tiny_model_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    with pytest.raises(OutputExistsError, match="not made by edge-dm"):
        export(ExportConfig(model=tiny_model_dir, output=str(out), overwrite=True))
    assert (out / "thesis.tex").read_text() == "x" and list(tmp_path.iterdir()) == [out]


def test_interrupted_export_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    def interrupted(tmp, *a, **k):
        (tmp / "unet.xml").write_text("<half")
        raise KeyboardInterrupt

    monkeypatch.setattr("edge_dm.jobs.conversion.write_recipe", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(ExportConfig(model=tiny_model_dir, output=str(tmp_path / "out")))
    assert list(tmp_path.iterdir()) == []


def test_corrupt_ir_is_a_bundle_error(tiny_bundle, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle.path, bad)
    (bad / "unet.xml").write_text("<net><broken")
    with pytest.raises(BundleError, match="corrupt"):
        open_bundle(bad).read_model()
    (bad / bundle_mod.RECIPE).unlink()
    with pytest.raises(BundleError, match="recipe.json is missing"):
        open_bundle(bad)


def test_unknown_precision():
    with pytest.raises(ConfigError, match="precision"):
        ExportConfig(precision="int4")


def test_recipe_round_trips(tiny_bundle):
    r = json.loads((tiny_bundle.path / "recipe.json").read_text())
    assert ExportConfig.from_dict(r["config"]).to_dict() == r["config"]


def test_the_sessions_models_are_exported_outside_the_users_cache(sd_fp32, tmp_path_factory):
    """The session-scoped fixtures export into the test session's own EDGE_DM_HOME, as every test does."""
    assert sd_fp32.path.is_relative_to(tmp_path_factory.getbasetemp() / "edge-dm-home")

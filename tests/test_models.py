import json
import shutil
from pathlib import Path

import pytest

from edge_dm.errors import ModelNotFoundError
from edge_dm.models import REGISTRY, load_model, resolve
from edge_dm.outputs import slug
from edge_dm.resources import shipped_model_dir


def test_shipped_default_model_loads_offline_and_fits_the_budget():
    m = load_model("edm-cifar10-ddpm")
    assert m.sample_shape == (3, 32, 32)
    assert m.num_train_timesteps == 1000
    assert m.scheduler_config["beta_schedule"] == "linear"
    assert sum(p.numel() for p in m.unet.parameters()) < 10_000_000
    weights = sum(f.stat().st_size for f in (shipped_model_dir("edm-cifar10-ddpm") / "unet").glob("*.safetensors"))
    assert weights <= 20e6


def test_pipeline_folder_and_unet_scheduler_folder_both_load(tiny_model_dir, tmp_path):
    a = load_model(tiny_model_dir)
    plain = tmp_path / "plain"
    shutil.copytree(Path(tiny_model_dir) / "unet", plain / "unet")
    shutil.copytree(Path(tiny_model_dir) / "scheduler", plain / "scheduler")
    b = load_model(str(plain))
    assert a.sample_shape == b.sample_shape == (3, 8, 8)
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    assert all((sa[k] == sb[k]).all() for k in sa)


def test_registry_alias_resolves_to_the_hub_id():
    assert resolve("ddpm-cifar10") == "google/ddpm-cifar10-32"
    assert Path(resolve("edm-cifar10-ddpm")).is_dir()
    assert set(REGISTRY) >= {"edm-cifar10-ddpm", "ddpm-cifar10"}


@pytest.mark.parametrize("spec", ["/no/such/dir", "not-a-model", "./relative/missing"])
def test_missing_model_is_one_clear_error(spec):
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_model(spec)


def test_hub_model_offline_names_the_model_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as e:
        load_model("ddpm-cifar10")
    msg = str(e.value)
    assert "google/ddpm-cifar10-32" in msg and "give that folder as model" in msg and "\n" not in msg


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({}))
    with pytest.raises(ModelNotFoundError, match="holds no pipeline edge-dm takes"):
        load_model(str(tmp_path))


def test_slug_is_file_name_safe():
    assert slug("google/ddpm-cifar10-32") == "google--ddpm-cifar10-32"
    assert "/" not in slug("/abs/path/")


def test_random_architecture_for_timing():
    m = load_model("random:ddpm-cifar10")
    assert sum(p.numel() for p in m.unet.parameters()) == pytest.approx(35.7e6, rel=0.01)
    with pytest.raises(ModelNotFoundError, match="unknown architecture"):
        load_model("random:sd-xl")


def test_shipped_model_quantizes_with_its_measured_float_set():
    """The registry's float-kept set for the shipped model: the family's default and more, every name a
    module of the model quantize converts, split or not (unsplit, a half names the whole convolution)."""
    from edge_dm.configs import QuantizeConfig

    m = load_model("edm-cifar10-ddpm")
    assert m.keep_float == REGISTRY["edm-cifar10-ddpm"].keep_float
    assert set(m.family.policy.keep_float) < set(m.keep_float)
    assert load_model(str(shipped_model_dir("edm-cifar10-ddpm"))).keep_float is None  # a folder: the family's
    for cfg in (QuantizeConfig(), QuantizeConfig(split_shortcut=False)):
        split = m.family.policy.splits(cfg)
        converted, _ = m.family.for_quantization(m, split)
        names = [n for n, _ in converted.unet.named_modules()]
        kept = m.family.float_names(m.keep_float, split)
        assert all(any(n.startswith(k) or f".{k}" in n for n in names) for k in kept), kept
        assert any(k.endswith(".conv_shortcut.a") for k in kept) == (cfg.split_shortcut is not False)


def test_shipped_text_to_image_models_calibrate_on_their_own_captions_by_default():
    from edge_dm.resources import shipped_dataset

    for name in ("edm-cifar10-t2i", "edm-cifar10-lcm"):
        assert load_model(name).prompts == str(shipped_dataset("cifar10-prompts.txt"))
        assert load_model(str(shipped_model_dir(name))).prompts is None  # a folder: the family's prompts
    assert load_model("edm-cifar10-ddpm").prompts is None

"""The shipped model and FID statistics are found through edge_dm.resources, however edge-dm is installed."""
import numpy as np
import pytest

from edge_dm import resources
from edge_dm.errors import DataError, ModelNotFoundError
from edge_dm.metrics import reference_stats
from edge_dm.models import resolve


def test_shipped_model_dir_holds_what_loading_needs():
    d = resources.shipped_model_dir("edm-cifar10-ddpm")
    for f in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
              "scheduler/scheduler_config.json"):
        assert (d / f).is_file(), f
    assert resolve("edm-cifar10-ddpm") == str(d)
    assert resolve("edm-cifar10-t2i") == str(resources.shipped_model_dir("edm-cifar10-t2i"))


def test_shipped_text_to_image_model_and_classifier_load_and_stay_small():
    """The issue's budgets: pipeline <= 15 MB, classifier <= 2 MB (the checkout travels to the GPU machine)."""
    from diffusers import StableDiffusionPipeline

    from edge_dm.classifier import load_classifier
    from edge_dm.families import for_folder

    t2i, clf = (resources.shipped_model_dir(n) for n in ("edm-cifar10-t2i", "edm-cifar10-classifier"))
    assert sum(f.stat().st_size for f in t2i.rglob("*") if f.is_file()) <= 15e6
    assert sum(f.stat().st_size for f in clf.rglob("*") if f.is_file()) <= 2e6
    pipe = StableDiffusionPipeline.from_pretrained(t2i)
    assert pipe.tokenizer("a photo of a horse").input_ids[1:-1] == [
        pipe.tokenizer.convert_tokens_to_ids(w + "</w>") for w in "a photo of a horse".split()]  # a token a word
    assert for_folder(t2i).name == "stable-diffusion"
    model, config = load_classifier("edm-cifar10-classifier")
    assert len(config["classes"]) == 10 and config["test_accuracy"] >= 0.85
    assert (resources.shipped_dataset("cifar10-prompts.txt").read_text().splitlines()[7] == "a photo of a horse")


def test_shipped_few_step_model_is_its_teachers_pipeline_distilled_and_stays_small():
    """edm-cifar10-lcm: an LCM pipeline <= 15 MB whose text encoder, tokenizer and VAE are the teacher's."""
    from diffusers import LatentConsistencyModelPipeline

    from edge_dm.families import for_folder

    lcm, t2i = (resources.shipped_model_dir(n) for n in ("edm-cifar10-lcm", "edm-cifar10-t2i"))
    assert sum(f.stat().st_size for f in lcm.rglob("*") if f.is_file()) <= 15e6
    for f in ("text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors", "tokenizer/tokenizer.json"):
        assert (lcm / f).read_bytes() == (t2i / f).read_bytes(), f
    pipe = LatentConsistencyModelPipeline.from_pretrained(lcm)
    assert pipe.unet.config.time_cond_proj_dim is not None
    assert for_folder(lcm).name == "lcm"
    assert resolve("edm-cifar10-lcm") == str(lcm)


def test_reference_short_name_reads_the_shipped_stats():
    path = resources.shipped_stats("cifar10-train")
    assert path.name == resources.SHIPPED_STATS["cifar10-train"]
    assert resources.shipped_stats(path.name) == path
    with np.load(path) as f:
        mu = f["mu"]
    assert np.array_equal(reference_stats("cifar10-train")["mu"], mu)


@pytest.mark.parametrize("call, error", [(resources.shipped_model_dir, ModelNotFoundError),
                                         (resources.shipped_stats, DataError)])
def test_unknown_or_missing_is_one_clear_line(call, error, monkeypatch):
    with pytest.raises(error, match="shipped") as e:
        call("no-such-thing")
    assert "\n" not in str(e.value)
    monkeypatch.setattr(resources, "_candidates", lambda kind, name: [])  # an install without the data
    with pytest.raises(error, match="missing from this edge-dm install") as e:
        call("edm-cifar10-ddpm" if error is ModelNotFoundError else "cifar10-train")
    assert "\n" not in str(e.value)

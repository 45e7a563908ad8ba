"""The shipped model and FID statistics are found through edge_dm.resources, however edge-dm is installed."""
import numpy as np
import pytest

from edge_dm import resources
from edge_dm.errors import DataError, ModelNotFoundError
from edge_dm.evaluate import reference_stats
from edge_dm.models import resolve


def test_shipped_model_dir_holds_what_loading_needs():
    d = resources.shipped_model_dir("edm-cifar10-ddpm")
    for f in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
              "scheduler/scheduler_config.json"):
        assert (d / f).is_file(), f
    assert resolve("edm-cifar10-ddpm") == str(d)


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

"""The README's main job on the shipped model, end to end (slow: about 2 minutes on 2 cores)."""
import pytest
from click.testing import CliRunner

from edge_dm.cli import main


@pytest.mark.e2e
def test_quantize_then_generate_on_the_shipped_model(tmp_path):
    r = CliRunner().invoke(main, ["quantize", "--num-samples", "16", "--eval-trajectories", "1"])
    assert r.exit_code == 0, r.output
    assert "FakeQuantize" in r.output
    r = CliRunner().invoke(main, ["generate", "--device", "CPU", "--num-images", "2", "--batch-size", "2",
                                  "--steps", "10", "--output", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s" / "grid.png").exists()


@pytest.mark.e2e
def test_quantize_then_generate_on_the_shipped_text_to_image_model(tmp_path):
    """The README's text-to-image line (fewer calibration samples and steps; about 2 minutes on 2 cores):
    without --prompts the shipped model calibrates on its own captions, as every measurement of it did."""
    import json

    from edge_dm.bundle import default_bundle_path
    from edge_dm.resources import shipped_dataset

    r = CliRunner().invoke(main, ["quantize", "--model", "edm-cifar10-t2i", "--num-samples", "16",
                                  "--eval-trajectories", "1", "--guidance-scale", "3", "--steps", "10"])
    assert r.exit_code == 0, r.output
    assert "longer than the text encoder" not in r.output
    recipe = json.loads((default_bundle_path("edm-cifar10-t2i", "int8") / "recipe.json").read_text())
    assert recipe["calibration"]["prompts"] == str(shipped_dataset("cifar10-prompts.txt"))
    r = CliRunner().invoke(main, ["generate", "--model", "edm-cifar10-t2i", "--prompt", "a photo of a horse",
                                  "--guidance-scale", "3", "--steps", "10", "--num-images", "2",
                                  "--output", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s" / "grid.png").exists()

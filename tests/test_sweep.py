"""`edge-dm sweep`: SPEC files (JSON, YAML), bad input in one line before any work, the table and the
plot, and end to end a sweep of the tiny model on a real Ray cluster that resumes where it stopped."""
import json
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edge_dm.cli import main
from edge_dm.configs import CalibrationConfig, ClusterConfig, QuantizeConfig, SamplingConfig
from edge_dm.errors import ConfigError, DataError
from edge_dm.jobs.sweep import SweepConfig, load_spec, markdown, plot, summarize, sweep

SPEC = {"model": "edm-cifar10-ddpm", "grid": {"preset": ["mixed", "performance"], "keep_float": [[], ["conv_in"]]},
        "seeds": [0, 1], "images": 8, "metrics": ["held_out_error", "psnr"], "sampling": {"steps": 4},
        "calibration": {"num_samples": 8}}
YAML = """\
model: edm-cifar10-ddpm
grid:
  preset: [mixed, performance]
  keep_float: [[], [conv_in]]
seeds: [0, 1]
images: 8
metrics: [held_out_error, psnr]
sampling: {steps: 4}
calibration: {num_samples: 8}
"""


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster of three nodes on this machine (a head without CPUs, two nodes of one), ended
    by its own shutdown only."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args=dict(num_cpus=0))
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def write(tmp_path, name, content) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_a_json_and_a_yaml_spec_make_one_config(tmp_path):
    pytest.importorskip("yaml")
    from_json = SweepConfig.from_spec(load_spec(write(tmp_path, "s.json", SPEC)))
    assert SweepConfig.from_spec(load_spec(write(tmp_path, "s.yaml", YAML))) == from_json
    assert from_json.grid == (("preset", ("mixed", "performance")), ("keep_float", ((), ("conv_in",))))
    assert from_json.calibration == CalibrationConfig(num_samples=8) and from_json.sampling == SamplingConfig(steps=4)


def test_a_yaml_spec_without_pyyaml_says_to_write_json(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # PyYAML not installed
    with pytest.raises(DataError, match="needs PyYAML .*; or write the SPEC as JSON"):
        load_spec(write(tmp_path, "s.yaml", YAML))
    with pytest.raises(DataError, match="is not valid JSON"):
        load_spec(write(tmp_path, "s.json", "{model: x"))


@pytest.mark.parametrize("change,named,allowed", [
    (dict(grid={"presett": ["mixed"]}), "presett", "mode, preset, model_type"),
    (dict(seed=[0]), "seed", "model, grid, seeds"),
    (dict(calibration={"samples": 8}), "samples", "kind, num_samples"),
    (dict(metrics=["fid", "lpips"]), "'lpips'", "fid, sfid, psnr, ssim, held_out_error"),
])
def test_an_unknown_option_is_named_with_the_allowed_ones(change, named, allowed):
    with pytest.raises(ConfigError) as err:
        SweepConfig.from_spec(dict(SPEC, **change))
    assert named in str(err.value) and allowed in str(err.value), str(err.value)


def test_bad_spec_is_one_line_before_any_work(tmp_path):
    for change in (dict(grid={"presett": ["mixed"]}), dict(grid={"preset": ["fast"]})):
        spec = write(tmp_path, "s.json", dict(SPEC, **change))
        r = CliRunner().invoke(main, ["sweep", spec, "--output", str(tmp_path / "out")])
        assert r.exit_code == 1 and r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1, r.output
        assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["sweep", write(tmp_path, "s.json", SPEC), "--output", str(tmp_path / "taken")])
    assert r.exit_code == 1 and "holds no sweep" in r.output


def test_the_table_gives_mean_and_spread_over_seeds_and_the_plot_a_panel_per_metric_and_option(tmp_path):
    from PIL import Image

    records = [dict(options={"preset": p, "keep_float": k}, seed=s, metrics={"fid": f, "psnr": None})
               for (p, k, s, f) in [("mixed", [], 0, 10.0), ("mixed", [], 1, 12.0), ("performance", [], 0, 20.0),
                                    ("mixed", ["conv_in"], 0, 11.0)]]
    rows = summarize(records, ["preset", "keep_float"], ["fid", "psnr"])
    assert [r["seeds"] for r in rows] == [[0, 1], [0], [0]] and rows[0]["psnr"] is None
    assert rows[0]["fid"] == dict(mean=11.0, std=pytest.approx(np.std([10, 12], ddof=1)), min=10.0, max=12.0, n=2)
    assert rows[1]["fid"]["std"] == 0.0
    table = markdown(rows, ["preset", "keep_float"], ["fid", "psnr"])
    assert table.splitlines()[0] == "| preset | keep_float | seeds | fid | psnr |"
    assert "| mixed |  | 0,1 | 11 ± 1.4 (10-12) | n/a |" in table and "| mixed | conv_in | 0 |" in table
    plot(records, ["preset", "keep_float"], ["fid", "psnr"], tmp_path / "plot.png")
    assert Image.open(tmp_path / "plot.png").size == (2 * 360, 2 * 240)


@pytest.mark.e2e
def test_a_sweep_on_a_cluster_scores_every_cell_and_resumes_where_it_stopped(ray_cluster, tiny_model_dir, tmp_path):
    from PIL import Image

    reference = tmp_path / "reference"
    reference.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(reference / f"{i}.png")
    spec = dict(model=tiny_model_dir, grid={"preset": ["mixed", "performance"]}, seeds=[0], images=8,
                metrics=["fid", "psnr", "held_out_error"], reference=str(reference), sampling={"steps": 4},
                calibration={"num_samples": 8, "samples_per_trajectory": 4},
                quantization={"fast_bias_correction": True}, runtime={"batch_size": 4, "precision_hint": "f32"})
    cluster = ClusterConfig(address=ray_cluster.address, timeout_s=60)
    out = tmp_path / "sweep"
    first = sweep(SweepConfig.from_spec(spec, output=str(out), cluster=cluster), progress=False)
    assert first["resumed_cells"] == 0 and len(first["cells"]) == 2
    assert all(v is not None for c in first["cells"] for v in c["metrics"].values())
    assert first["cells"][0]["timings"]["generate_samples"]["cluster"]["workers"] == 2

    # the sweep "stopped" after seed 0: asked again for mixed with a second seed, it runs only the new cell
    lines = []
    second = sweep(SweepConfig.from_spec(dict(spec, grid={"preset": ["mixed"]}, seeds=[0, 1]), output=str(out),
                                         cluster=cluster), progress=False, log=lines.append)
    assert second["resumed_cells"] == 1 and len(second["cells"]) == 2 and len(lines) == 1
    assert second["cells"][0] == json.loads(json.dumps(first["cells"][0], default=str))
    assert second["cells"][1]["seed"] == 1 and second["cells"][1]["options"]["preset"] == "mixed"
    assert [r["seeds"] for r in second["table"]] == [[0, 1]] and second["table"][0]["fid"]["n"] == 2
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 3 and all(sorted(p.name for p in c.iterdir() if p.name != ".edge-dm")
                                   == ["recipe.json", "result.json"] for c in cells)
    recipe = json.loads((cells[0] / "recipe.json").read_text())
    assert QuantizeConfig.from_dict(recipe["config"]["quantization"]).preset in ("mixed", "performance")
    assert (out / "results.md").read_text().startswith("| preset | seeds | fid | psnr | held_out_error |")
    assert Image.open(out / "plot.png").size == (360, 3 * 240)
    assert json.loads((out / "results.json").read_text())["table"] == json.loads(json.dumps(second["table"]))

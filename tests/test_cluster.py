"""generate and evaluate on a real Ray cluster of three nodes on this machine (ray.cluster_utils: a
head without CPUs, as in production, and two nodes of one CPU), through `cluster.address` as
`--cluster` takes it: the same PNG bytes and FID as one process, a worker killed mid-run, a driver
killed mid-run and resumed, and bad input refused in one line before any work.

Each test ends only the Ray processes it started (the cluster's shutdown), never `ray stop`."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_dm.configs import ClusterConfig, DeviceConfig, EvaluateConfig, GenerateConfig, SamplingConfig
from edge_dm.errors import ClusterError, ConfigError
from edge_dm.jobs import evaluate, generate
from edge_dm.jobs.cluster import layout

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")

SAMPLING = SamplingConfig(steps=8, seed=5)
RUNTIME = DeviceConfig(batch_size=4, precision_hint="f32")  # f32: the same bits on any core count


@pytest.fixture(scope="module")
def ray_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0))
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def on(cluster, **options) -> ClusterConfig:
    return ClusterConfig(address=cluster.address, timeout_s=60, **options)


def runs_folder() -> Path:
    return Path(os.environ["EDGE_DM_HOME"]) / "runs"


def pngs(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.png"))}


def generate_config(bundle, output, num_images=24, sampling=SAMPLING, **job) -> GenerateConfig:
    return GenerateConfig(model=str(bundle.path), output=str(output), num_images=num_images, sampling=sampling,
                          runtime=RUNTIME, **job)


# --- the layout and the config, without Ray -------------------------------------------------------

def test_layout_places_workers_by_the_nodes_cpus_or_says_why():
    assert layout(ClusterConfig(), [16]) == (4, 4)
    assert layout(ClusterConfig(), [2, 1]) == (1, 2)  # 4 CPUs unless no node has them
    assert layout(ClusterConfig(cpus_per_worker=1), [0, 1, 1]) == (2, 1)
    assert layout(ClusterConfig(workers=3, cpus_per_worker=2), [4, 2]) == (3, 2)
    with pytest.raises(ClusterError, match="workers 4 of cpus_per_worker 2: the cluster can place 3"):
        layout(ClusterConfig(workers=4, cpus_per_worker=2), [4, 2])
    with pytest.raises(ClusterError, match="no node of the cluster has cpus_per_worker 8 CPUs"):
        layout(ClusterConfig(cpus_per_worker=8), [4, 4])


def test_cluster_config_checks_itself():
    for bad, option in [(dict(address=""), "address"), (dict(workers=0), "workers"),
                        (dict(cpus_per_worker=-1), "cpus_per_worker"), (dict(timeout_s=0), "timeout_s"),
                        (dict(shard_images=1.5), "shard_images")]:
        with pytest.raises(ConfigError) as err:
            ClusterConfig(**bad)
        assert err.value.template.startswith(f"`{option}` must")
    cfg = GenerateConfig(cluster=ClusterConfig(address="ray://head:10001", workers=2))
    assert GenerateConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# --- bad input, one line, before any work ---------------------------------------------------------

def test_an_address_that_does_not_answer_is_one_line_with_rays_reason(tiny_bundle, tmp_path):
    from click.testing import CliRunner

    from edge_dm.cli import main

    r = CliRunner().invoke(main, ["generate", "--model", str(tiny_bundle.path), "--output", str(tmp_path / "out"),
                                  "--cluster", "127.0.0.1:1", "--cluster-timeout", "7", "--steps", "2"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert r.output.startswith("Error: Ray cluster 127.0.0.1:1 does not answer within 7 s: Failed to connect to GCS")
    assert "(--cluster-timeout waits longer)" in r.output and not (tmp_path / "out").exists()


def test_more_workers_than_the_cluster_can_place_are_refused_before_any_work(ray_cluster, tiny_bundle, tmp_path):
    with pytest.raises(ClusterError, match="workers 3 of cpus_per_worker 1: the cluster can place 2 "):
        generate(generate_config(tiny_bundle, tmp_path / "out", cluster=on(ray_cluster, workers=3)), progress=False)
    assert not (tmp_path / "out").exists() and not list(runs_folder().glob("*"))


# --- the same images, and a worker killed mid-run ----------------------------------------------------

@pytest.fixture(scope="module")
def single_process(tiny_bundle, tmp_path_factory):
    """24 images of the tiny bundle made in this process, the reference every cluster run must match."""
    out = tmp_path_factory.mktemp("single") / "out"
    generate(generate_config(tiny_bundle, out), progress=False)
    return out


def test_a_cluster_writes_the_bytes_one_process_writes(ray_cluster, tiny_bundle, single_process, tmp_path):
    r = generate(generate_config(tiny_bundle, tmp_path / "out", cluster=on(ray_cluster)), progress=False)
    assert pngs(tmp_path / "out") == pngs(single_process)  # every seed's PNG and the grid, byte for byte
    assert r["images"] == 24 and r["cluster"]["workers"] == 2 and r["cluster"]["nodes"] == 3
    assert r["unet_calls"] == 6 * 8 and r["cluster"]["resumed_shards"] == 0
    assert json.loads((tmp_path / "out" / "generate.json").read_text())["config"]["cluster"]["address"]
    assert not list(runs_folder().glob("*"))  # the work folder goes once the output is in place


def kill_a_worker_once_a_shard_is_saved(done: list) -> threading.Thread:
    """A thread that, as soon as the first shard of a job is saved (so the others are being made), kills
    one of the job's workers with ray.kill; `done` gets the name of the worker killed."""
    def watch():
        deadline = time.time() + 120
        while not list(runs_folder().glob("*/shard-*.npz")) and time.time() < deadline:
            time.sleep(0.005)
        names = sorted(n for n in ray.util.list_named_actors() if n.startswith("edge-dm-worker-"))
        ray.kill(ray.get_actor(names[0]))
        done.append(names[0])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_worker_killed_mid_run_is_replaced_and_no_image_is_missing_or_doubled(ray_cluster, tiny_bundle, tmp_path):
    slow = SAMPLING.replace(steps=300)  # shards long enough to be mid-way when the kill lands
    single = tmp_path / "single"
    generate(generate_config(tiny_bundle, single, 40, slow), progress=False)
    killed = []
    thread = kill_a_worker_once_a_shard_is_saved(killed)
    r = generate(generate_config(tiny_bundle, tmp_path / "out", 40, slow, cluster=on(ray_cluster, shard_images=4)),
                 progress=False)
    thread.join(10)
    assert killed and r["cluster"]["lost_workers"] == 1 and r["cluster"]["retried_shards"] >= 1, r["cluster"]
    assert sorted(pngs(tmp_path / "out")) == [f"{5 + i:05d}.png" for i in range(40)] + ["grid.png"]
    assert pngs(tmp_path / "out") == pngs(single)
    assert r["cluster"]["shards"] == 10  # each shard saved once, the retried ones included


# --- end to end: FID, a killed driver -------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A small FID reference: 6 seeded random 8x8 images."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("reference")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(folder)


@pytest.fixture(scope="module")
def single_fid(tiny_bundle, reference):
    return evaluate(EvaluateConfig(samples=str(tiny_bundle.path), reference=reference, num_images=16,
                                   sampling=SAMPLING, runtime=RUNTIME), progress=False)


@pytest.mark.e2e
def test_fid_from_features_made_on_the_workers_is_the_single_process_fid(ray_cluster, tiny_bundle, reference,
                                                                          single_fid):
    r = evaluate(EvaluateConfig(samples=str(tiny_bundle.path), reference=reference, num_images=16,
                                compare=str(tiny_bundle.path), sampling=SAMPLING, runtime=RUNTIME,
                                cluster=on(ray_cluster, shard_images=4)), progress=False)
    assert r["fid"] == pytest.approx(single_fid["fid"], rel=1e-6)
    assert r["sfid"] == pytest.approx(single_fid["sfid"], rel=1e-6)
    assert r["drift"]["mean_abs_diff"] == 0 and r["num_images"] == 16  # the same images, made twice
    assert r["timings"]["features"]["summed_over_workers"]
    assert r["timings"]["generate_samples"]["cluster"]["shards"] == 4
    assert not list(runs_folder().glob("*"))


@pytest.mark.e2e
def test_fid_after_a_worker_killed_mid_run_is_the_undisturbed_fid(ray_cluster, tiny_bundle, reference, single_fid):
    killed = []
    thread = kill_a_worker_once_a_shard_is_saved(killed)
    r = evaluate(EvaluateConfig(samples=str(tiny_bundle.path), reference=reference, num_images=16,
                                sampling=SAMPLING, runtime=RUNTIME, cluster=on(ray_cluster, shard_images=2)),
                 progress=False)
    thread.join(10)
    run = r["timings"]["generate_samples"]["cluster"]
    assert killed and run["lost_workers"] == 1 and run["retried_shards"] >= 1 and run["shards"] == 8, run
    assert r["fid"] == pytest.approx(single_fid["fid"], rel=1e-6) and r["num_images"] == 16


@pytest.mark.e2e
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 130), (signal.SIGKILL, -signal.SIGKILL)])
def test_a_driver_killed_mid_run_leaves_no_output_and_the_rerun_resumes(ray_cluster, tiny_bundle, tmp_path, sig, code):
    """SIGTERM ends the driver as Ctrl-C does (exit code 130: edge-dm's handler, not the one ray.init
    sets); SIGKILL gives it no chance to clean up. Either way no output appears, the finished shards
    stay, and the rerun makes only the rest and writes the single-process bytes."""
    slow = SAMPLING.replace(steps=300)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "edge_dm", "generate", "--model", str(tiny_bundle.path), "--output", str(out),
               "--num-images", "40", "--steps", "300", "--seed", "5", "--batch-size", "4", "--precision-hint", "f32",
               "--cluster", ray_cluster.address, "--shard-images", "4"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(runs_folder().glob("*/shard-*.npz"))) < 3 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.005)
    driver.send_signal(sig)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == code, err[-2000:]
    saved = len(list(runs_folder().glob("*/shard-*.npz")))
    assert 3 <= saved < 10 and not out.exists()  # stopped mid-run: shards kept, no output in place

    r = generate(generate_config(tiny_bundle, out, 40, slow, cluster=on(ray_cluster, shard_images=4)), progress=False)
    assert r["cluster"]["resumed_shards"] == saved and r["cluster"]["shards"] == 10 - saved
    generate(generate_config(tiny_bundle, tmp_path / "single", 40, slow), progress=False)
    assert pngs(out) == pngs(tmp_path / "single")
    assert not list(runs_folder().glob("*")) and not list(tmp_path.glob(".out.partial-*"))


@pytest.mark.e2e
def test_cluster_local_starts_an_embedded_ray_and_keeps_its_log_lines_off_the_output(tiny_bundle, single_process,
                                                                                  tmp_path):
    """`--cluster local` through the CLI, in a process of its own: an embedded Ray even where
    RAY_ADDRESS names another cluster, the single-process bytes, and edge-dm's lines only (no Ray log
    line on stdout or stderr)."""
    command = [sys.executable, "-m", "edge_dm", "generate", "--model", str(tiny_bundle.path), "--output",
               str(tmp_path / "out"), "--num-images", "24", "--steps", "8", "--seed", "5", "--batch-size", "4",
               "--precision-hint", "f32", "--cluster", "local", "--cpus-per-worker", "1"]
    r = subprocess.run(command, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, RAY_ADDRESS="127.0.0.1:1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert pngs(tmp_path / "out") == pngs(single_process)
    workers = len(os.sched_getaffinity(0))  # one a CPU
    assert r.stdout.splitlines()[1].startswith(f"Ray local: {workers} workers x 1 CPUs on 1 nodes, ")
    progress = [line for line in r.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert progress and all(f" on {workers} workers: " in line for line in progress), r.stderr[-3000:]

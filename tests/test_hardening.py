"""Bad input, any command: one `Error:` line, a non-zero exit, no traceback, nothing left behind.

Each row runs one command of the CLI on the tiny model with one bad input and checks that the
output's parent folder and $EDGE_DM_HOME are unchanged (a good output already there stays
byte-identical) and that no partial output is left anywhere.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_dm.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> dict:
    """Every path below folder (hidden ones too) with a hash of its bytes (None for folders)."""
    out = {}
    if not folder.exists():
        return out
    if folder.is_file():
        return {".": hashlib.sha1(folder.read_bytes()).hexdigest()}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else None
    return out


@pytest.fixture(scope="module")
def assets(tiny_model_dir, tiny_bundle, tmp_path_factory):
    """Inputs the rows refer to by name."""
    from edge_dm.calibration import CalibrationSet

    root = tmp_path_factory.mktemp("hardening")
    # a model folder whose scheduler config diffusers cannot build
    bad_sched = root / "bad-sched-model"
    shutil.copytree(tiny_model_dir, bad_sched)
    cfg = bad_sched / "scheduler" / "scheduler_config.json"
    cfg.write_text(json.dumps(dict(json.loads(cfg.read_text()), beta_schedule="wiggly")))
    # a bundle with the same fault, and one with a truncated weights file
    bad_sched_bundle = root / "bad-sched-bundle"
    shutil.copytree(tiny_bundle.path, bad_sched_bundle)
    cfg = bad_sched_bundle / "scheduler_config.json"
    cfg.write_text(json.dumps(dict(json.loads(cfg.read_text()), beta_schedule="wiggly")))
    corrupt = root / "corrupt-bundle"
    shutil.copytree(tiny_bundle.path, corrupt)
    data = (corrupt / "unet.bin").read_bytes()
    (corrupt / "unet.bin").write_bytes(data[: len(data) // 3])
    # a calibration set of 16x16 images for the 8x8 model
    n = 4
    CalibrationSet({"sample": np.zeros((n, 1, 3, 16, 16), np.float32), "timestep": np.full((n, 1), 10, np.int64)},
                   np.zeros(n, np.int64), {"family": "unet2d", "roles": {"sample": "sample", "timestep": "timestep"}}
                   ).save(root / "wrong-shape.npz")
    # images: a folder (evaluate) and a tar (train)
    imgs = root / "images" / "cat"
    imgs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    with tarfile.open(root / "images.tar", "w") as tar:
        tar.add(root / "images", arcname="images")
    # a training run of another architecture, to resume from
    from edge_dm.jobs.training import TrainConfig, train

    train(TrainConfig(data=str(root / "images.tar"), output=str(root / "run-32"), max_steps=1, batch_size=2,
                      block_out_channels=(32, 32), layers_per_block=1, attention_level=None, warmup_steps=1),
          log=lambda s: None)
    (root / "prompts.txt").write_text("a photo of a cat\n")
    (root / "no-images").mkdir()
    (root / "random.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    return dict(MODEL=tiny_model_dir, BUNDLE=str(tiny_bundle.path), BADSCHED=str(bad_sched),
                PROMPTS=str(root / "prompts.txt"), NOIMAGES=str(root / "no-images"), RANDOMNPZ=str(root / "random.npz"),
                BADSCHEDBUNDLE=str(bad_sched_bundle), CORRUPT=str(corrupt), WRONGCAL=str(root / "wrong-shape.npz"),
                IMAGES=str(root / "images"), TAR=str(root / "images.tar"), RUN32=str(root / "run-32"))


# (command line, what is at OUT first: None, "file", "folder" (a good edge-dm output) or "parent-file")
# OUT is the output path; HOMEFILE makes $EDGE_DM_HOME a file.
ROWS = {
    # export
    "export-no-model": ("export --model /no/such/model --output OUT", None),
    "export-out-file": ("export --model MODEL --output OUT", "file"),
    "export-out-exists": ("export --model MODEL --output OUT", "folder"),
    "export-parent-file": ("export --model MODEL --output OUT", "parent-file"),
    "export-home-file": ("export --model MODEL HOMEFILE", None),
    "export-bad-scheduler": ("export --model BADSCHED --output OUT", None),
    # quantize
    "quantize-no-model": ("quantize --model /no/such/model --output OUT", None),
    "quantize-out-file": ("quantize --model MODEL --output OUT", "file"),
    "quantize-out-exists": ("quantize --model MODEL --output OUT", "folder"),
    "quantize-parent-file": ("quantize --model MODEL --output OUT", "parent-file"),
    "quantize-home-file": ("quantize --model MODEL HOMEFILE", None),
    "quantize-steps-ddim": ("quantize --model MODEL --scheduler ddim --steps 1001 --output OUT", None),
    "quantize-steps-euler": ("quantize --model MODEL --scheduler euler --steps 1001 --output OUT", None),
    "quantize-mu": ("quantize --model MODEL --mu 1200 --output OUT", None),
    "quantize-sigma-inf": ("quantize --model MODEL --sigma inf --output OUT", None),
    "quantize-seed": ("quantize --model MODEL --seed -1 --output OUT", None),
    "quantize-num-samples": ("quantize --model MODEL --num-samples 0 --output OUT", None),
    "quantize-weights-mu": ("quantize --model MODEL --mode weights --mu 100 --output OUT", None),
    "quantize-ignore-pattern": ("quantize --model MODEL --ignore-pattern nothing_like_this --num-samples 2 "
                                "--steps 2 --output OUT", None),
    "quantize-keep-float": ("quantize --model MODEL --keep-float no_such_module --num-samples 2 --steps 2 "
                            "--output OUT", None),
    "quantize-calibration-shape": ("quantize --model MODEL --calibration-set WRONGCAL --steps 2 --output OUT", None),
    "quantize-bad-scheduler": ("quantize --model BADSCHED --output OUT", None),
    "quantize-max-drop-zero": ("quantize --model MODEL --max-drop 0 --output OUT", None),
    "quantize-max-drop-nan": ("quantize --model MODEL --max-drop nan --output OUT", None),
    "quantize-max-drop-weights": ("quantize --model MODEL --mode weights --max-drop 0.1 --output OUT", None),
    "quantize-max-iterations-alone": ("quantize --model MODEL --max-iterations 3 --output OUT", None),
    "quantize-max-iterations-zero": ("quantize --model MODEL --max-drop 0.1 --max-iterations 0 --output OUT", None),
    "quantize-prompts-unconditional": ("quantize --model MODEL --prompts PROMPTS --output OUT", None),
    "quantize-forward-no-images": ("quantize --model MODEL --calibration forward --data NOIMAGES --output OUT", None),
    "quantize-seed-huge": ("quantize --model MODEL --seed 1180591620717411303424 --output OUT", None),
    "quantize-calset-random-bytes": ("quantize --model MODEL --calibration-set RANDOMNPZ --output OUT", None),
    "quantize-bundle-as-model": ("quantize --model BUNDLE --output OUT", None),
    "quantize-vae-unconditional": ("quantize --model MODEL --vae int8 --output OUT", None),
    "quantize-ignore-pattern-regex": ("quantize --model MODEL --ignore-pattern ( --output OUT", None),
    "quantize-negative-prompt-unconditional": ("quantize --model MODEL --negative-prompt blur --output OUT", None),
    # generate
    "generate-no-bundle": ("generate --model /no/such/bundle --output OUT", None),
    "generate-out-file": ("generate --model BUNDLE --steps 2 --num-images 1 --output OUT", "file"),
    "generate-out-exists": ("generate --model BUNDLE --steps 2 --num-images 1 --output OUT", "folder"),
    "generate-parent-file": ("generate --model BUNDLE --steps 2 --num-images 1 --output OUT", "parent-file"),
    "generate-home-file": ("generate --model some-model HOMEFILE --output OUT", None),
    "generate-steps-ddim": ("generate --model BUNDLE --scheduler ddim --steps 1001 --output OUT", None),
    "generate-steps-euler": ("generate --model BUNDLE --scheduler euler --steps 1001 --output OUT", None),
    "generate-seed": ("generate --model BUNDLE --seed -1 --output OUT", None),
    "generate-num-images": ("generate --model BUNDLE --num-images 0 --output OUT", None),
    "generate-prompt-unconditional": ("generate --model BUNDLE --prompt a-cat --steps 2 --output OUT", None),
    "generate-precision-fp8": ("generate --model BUNDLE --precision-hint fp8 --steps 2 --num-images 1 "
                               "--output OUT", None),
    "generate-device": ("generate --model BUNDLE --device NPU7 --output OUT", None),
    "generate-corrupt-bin": ("generate --model CORRUPT --steps 2 --num-images 1 --output OUT", None),
    "generate-bad-scheduler": ("generate --model BADSCHEDBUNDLE --steps 2 --num-images 1 --output OUT", None),
    "generate-seed-huge": ("generate --model BUNDLE --seed 1180591620717411303424 --output OUT", None),
    "generate-one-leading-step": ("generate --model BUNDLE --steps 1 --output OUT", None),
    "generate-cache-as-long-as-the-run": ("generate --model BUNDLE --steps 4 --cache-interval 4 --output OUT", None),
    "generate-no-bundle-path": ("generate --model ./no/such/bundle --output OUT", None),
    # evaluate
    "evaluate-no-reference": ("evaluate --samples IMAGES --reference /no/such/ref.npz --output OUT", None),
    "evaluate-no-samples": ("evaluate --samples /no/such/samples --reference IMAGES --output OUT", None),
    "evaluate-out-folder": ("evaluate --samples IMAGES --reference IMAGES --output OUT", "folder"),
    "evaluate-out-file": ("evaluate --samples IMAGES --reference IMAGES --output OUT", "file"),
    "evaluate-parent-file": ("evaluate --samples IMAGES --reference IMAGES --output OUT", "parent-file"),
    "evaluate-home-file": ("evaluate --samples IMAGES --reference IMAGES HOMEFILE --output OUT", None),
    "evaluate-feature-cuda": ("evaluate --samples IMAGES --reference IMAGES --feature-device cuda --output OUT", None),
    "evaluate-bundle-seed": ("evaluate --samples BUNDLE --reference IMAGES --seed -1 --output OUT", None),
    "evaluate-bundle-steps": ("evaluate --samples BUNDLE --reference IMAGES --steps 1001 --output OUT", None),
    "evaluate-num-images": ("evaluate --samples BUNDLE --reference IMAGES --num-images 0 --output OUT", None),
    "evaluate-prompt-unconditional": ("evaluate --samples BUNDLE --reference IMAGES --prompt a-cat --output OUT", None),
    "evaluate-precision-fp8": ("evaluate --samples BUNDLE --reference IMAGES --precision-hint fp8 --output OUT",
                               None),
    # benchmark
    "benchmark-no-model": ("benchmark --model /no/such/model --int8 /no/such/bundle --output OUT", None),
    "benchmark-no-int8": ("benchmark --model MODEL --int8 /no/such/bundle --output OUT", None),
    "benchmark-out-file": ("benchmark --model MODEL --int8 BUNDLE --output OUT", "file"),
    "benchmark-out-exists": ("benchmark --model MODEL --int8 BUNDLE --output OUT", "folder"),
    "benchmark-parent-file": ("benchmark --model MODEL --int8 BUNDLE --output OUT", "parent-file"),
    "benchmark-home-file": ("benchmark --model MODEL HOMEFILE --output OUT", None),
    "benchmark-steps": ("benchmark --model MODEL --int8 BUNDLE --steps 1001 --output OUT", None),
    "benchmark-images": ("benchmark --model MODEL --int8 BUNDLE --images 0 --output OUT", None),
    "benchmark-device": ("benchmark --model MODEL --int8 BUNDLE --device NPU7 --output OUT", None),
    # train
    "train-no-data": ("train --data /no/such/images --output OUT", None),
    "train-out-file": ("train --data TAR --output OUT", "file"),
    "train-parent-file": ("train --data TAR --output OUT", "parent-file"),
    "train-batch-size": ("train --data TAR --batch-size 0 --output OUT", None),
    "train-channels": ("train --data TAR --channels 32,x --output OUT", None),
    "train-resume-no-data": ("train --data /no/such/images --channels 32,32 --layers-per-block 1 "
                             "--attention-level none --output RUN32", None),
    "train-resume-other-arch": ("train --data TAR --channels 64,64 --layers-per-block 1 --attention-level none "
                                "--output RUN32", None),
}
USAGE = {  # click usage errors: exit 2, the last line an Error: line
    "generate-scheduler": ("generate --model BUNDLE --scheduler lms9 --output OUT", None),
    "quantize-calibration": ("quantize --model MODEL --calibration gauss --output OUT", None),
    "train-no-output": ("train --data TAR", None),
}


def _prepare(kind, out: Path, assets, tmp_path):
    if kind == "file":
        out.write_bytes(b"earlier good output\n")
    elif kind == "folder":  # an earlier output edge-dm wrote (it holds the marker)
        out.mkdir()
        (out / ".edge-dm").write_text('{"tool": "edge-dm", "kind": "dir"}\n')
        (out / "earlier.json").write_text('{"good": true}\n')
    elif kind == "parent-file":
        out.parent.parent.mkdir(exist_ok=True)
        out.parent.write_bytes(b"a file where the output's folder should be\n")


def _invoke(line: str, kind, assets, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    out = work / "parent" / "out" if kind == "parent-file" else work / "out"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("EDGE_DM_HOME", str(home))
    if "RUN32" in line:  # resumes in place: a copy of the run, which must stay as it was
        shutil.copytree(assets["RUN32"], out)
        line = line.replace("RUN32", "OUT")
    args = []
    for a in line.split():
        if a == "HOMEFILE":
            home.rmdir()
            home.write_text("not a folder\n")
            continue
        args.append(str(out) if a == "OUT" else assets.get(a, a))
    _prepare(kind, out, assets, tmp_path)
    before = _tree(work), _tree(home)
    r = CliRunner().invoke(main, args, catch_exceptions=True)
    after = _tree(work), _tree(home)
    assert r.exception is None or isinstance(r.exception, SystemExit), \
        "".join(__import__("traceback").format_exception(r.exception))
    assert "Traceback" not in r.output, r.output
    assert before[0] == after[0], (r.output, set(after[0]) ^ set(before[0]))
    assert before[1] == after[1], (r.output, set(after[1]) ^ set(before[1]))
    if home.is_dir():
        assert not [p for p in home.rglob("*") if ".partial-" in p.name]
    return r


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input_is_one_error_line(row, assets, tmp_path, monkeypatch):
    r = _invoke(*ROWS[row], assets, tmp_path, monkeypatch)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1, (r.exit_code, r.output)
    assert len(lines) == 1 and lines[0].startswith("Error:") and len(lines[0]) > len("Error: "), r.output


@pytest.mark.parametrize("row", list(USAGE))
def test_usage_error_exits_2(row, assets, tmp_path, monkeypatch):
    r = _invoke(*USAGE[row], assets, tmp_path, monkeypatch)
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1].startswith("Error:"), r.output


def test_ctrl_c_inside_openvino_conversion_is_a_plain_interrupt(tiny_model_dir, tmp_path, monkeypatch):
    """OpenVINO's frontend wraps a KeyboardInterrupt raised in its Python decoder into a RuntimeError
    of many lines; export must still end as any Ctrl-C does: exit 130, one line, nothing written."""
    from openvino.frontend.pytorch import ts_decoder

    original, calls = ts_decoder.TorchScriptPythonDecoder.get_op_type, []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(ts_decoder.TorchScriptPythonDecoder, "get_op_type", interrupted)
    r = CliRunner().invoke(main, ["export", "--model", tiny_model_dir, "--output", str(tmp_path / "out")])
    assert len(calls) >= 20
    assert r.exit_code == 130 and "Traceback" not in r.output, r.output
    assert [ln for ln in r.output.splitlines() if ln.strip()] == ["Aborted: nothing was written."], r.output
    assert os.listdir(tmp_path) == []


def _start_quantize(tiny_model_dir, out: Path, home: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", EDGE_DM_HOME=str(home))
    return subprocess.Popen([sys.executable, "-m", "edge_dm", "quantize", "--model", tiny_model_dir, "--output",
                             str(out), "--steps", "1000", "--num-samples", "1024", "--samples-per-trajectory", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_partial(proc, parent: Path, timeout: float = 120) -> None:
    """Wait until the run has started writing (its hidden partial folder exists)."""
    end = time.time() + timeout
    while time.time() < end:
        if [p for p in os.listdir(parent) if ".partial-" in p]:
            time.sleep(0.5)  # a moment into the work
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    pytest.fail("quantize did not start writing in time")


def test_sigterm_during_quantize_exits_130_and_leaves_nothing(tiny_model_dir, tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    proc = _start_quantize(tiny_model_dir, work / "out", home)
    try:
        _wait_for_partial(proc, work)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "Aborted: nothing was written.", err
    assert os.listdir(work) == []
    assert not [p for p in home.rglob("*") if ".partial-" in p.name]


def test_a_new_run_cleans_what_a_killed_run_left(tiny_model_dir, tiny_bundle, tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    proc = _start_quantize(tiny_model_dir, work / "out", home)
    try:
        _wait_for_partial(proc, work)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stale = [p for p in os.listdir(work) if ".partial-" in p]
    assert stale and not (work / "out").exists()  # SIGKILL: no cleanup ran
    r = CliRunner().invoke(main, ["generate", "--model", str(tiny_bundle.path), "--num-images", "1", "--steps", "2",
                                  "--output", str(work / "out")])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(work)) == ["out"] and (work / "out" / "00000.png").is_file()


# --- data never lost, results never silently wrong (issue #35) ------------------------------------

def test_an_output_never_overlaps_an_input(tiny_bundle, tmp_path):
    before = _tree(tiny_bundle.path)
    for out in (tiny_bundle.path, tiny_bundle.path / "images", tiny_bundle.path.parent):
        r = CliRunner().invoke(main, ["generate", "--model", str(tiny_bundle.path), "--steps", "2", "--num-images", "1",
                                      "--output", str(out), "--overwrite"])
        assert r.exit_code == 1 and "overlaps" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert _tree(tiny_bundle.path) == before


def test_overwrite_replaces_only_what_edge_dm_wrote(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    args = ["generate", "--model", str(tiny_bundle.path), "--steps", "2", "--num-images", "1", "--output", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    (out / "my-notes.txt").write_text("mine")
    r = CliRunner().invoke(main, [*args, "--overwrite"])
    assert r.exit_code == 1 and "my-notes.txt" in r.output and "--overwrite would delete" in r.output, r.output
    assert (out / "my-notes.txt").read_text() == "mine"
    (out / "my-notes.txt").unlink()
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0  # edge-dm's own files only: replaced
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "scores"}')
    r = CliRunner().invoke(main, ["evaluate", "--samples", str(out), "--compare", str(out), "--output", str(mine),
                                  "--overwrite"])
    assert r.exit_code == 1 and "not written by edge-dm" in r.output and mine.read_text() == '{"my": "scores"}'
    ours = tmp_path / "ours.json"
    for _ in range(2):  # written, then replaced
        r = CliRunner().invoke(main, ["evaluate", "--samples", str(out), "--compare", str(out), "--output", str(ours),
                                      "--overwrite"])
        assert r.exit_code == 0, r.output


HOLD_ON = """
import sys
import numpy as np
from edge_dm.outputs import atomic_output, install_signal_handlers
install_signal_handlers()
try:
    with atomic_output(sys.argv[1]) as tmp:
        (tmp / "x").write_text("x")
        a = np.ones((16000, 16000), np.float32)
        print("ready", flush=True)
        a @ a  # one library call of a minute or more: Python's own signal handling waits for it to return
except KeyboardInterrupt:
    print("Aborted: nothing was written.", file=sys.stderr)
    sys.exit(130)
"""


def test_a_signal_ends_the_run_within_seconds_even_inside_a_long_library_call(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               EDGE_DM_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", HOLD_ON, str(tmp_path / "out")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)  # the loop alone would run for minutes
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "Aborted: nothing was written.", err
    assert os.listdir(tmp_path) == ["home"] or os.listdir(tmp_path) == []


def test_a_full_disk_is_one_line(tiny_bundle, tmp_path):
    """RLIMIT_FSIZE makes every write past 100 bytes fail as a full disk does (an OSError)."""
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100)); from edge_dm.cli import main; sys.exit(main())")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               EDGE_DM_HOME=str(tmp_path / "home"))
    r = subprocess.run([sys.executable, "-c", code, "generate", "--model", str(tiny_bundle.path), "--steps", "2",
                        "--num-images", "2", "--output", str(tmp_path / "out")], env=env, capture_output=True,
                       text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert r.returncode == 1 and len(lines) == 1 and "could not be written" in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_python_api_errors_are_edge_dms(tiny_bundle, tiny_int8):
    from edge_dm import CalibrationConfig, Pipeline, calibrate, quantize_model
    from edge_dm.calibration import CalibrationSet
    from edge_dm.errors import ConfigError

    pipe = Pipeline(tiny_bundle)
    for kwargs, words in ((dict(num_images=0), "num_images"), (dict(num_images=-2), "num_images"),
                          (dict(seed=1.5), "seed"), (dict(seed=2 ** 70), "seed"), (dict(steps=1), "first timestep"),
                          (dict(prompt=["a", "b"], num_images=1), "prompt"),
                          (dict(output_type="tensor"), "output_type"),
                          (dict(steps=4, cache_interval=4), "cache_interval")):
        with pytest.raises(ConfigError, match=words):
            pipe(**kwargs)
    int8, _ = tiny_int8
    with pytest.raises(ConfigError, match="quantized already"):
        quantize_model(int8.read_model(), CalibrationSet.load(int8.path / "calibration.npz"))
    with pytest.raises(ConfigError, match="full-precision"):
        calibrate(int8, CalibrationConfig(num_samples=2))


def test_prompts_cycle_and_files_are_read_as_written(sd_int8, tmp_path):
    from edge_dm.data import read_prompts

    bundle, _ = sd_int8
    file = tmp_path / "p.txt"
    file.write_text("\ufeffa photo of a horse\n\na red car\n", encoding="utf-8")
    assert read_prompts(file) == ["a photo of a horse", "a red car"]  # no byte-order mark in the first prompt
    r = CliRunner().invoke(main, ["generate", "--model", str(bundle.path), "--prompts", str(file), "--num-images", "3",
                                  "--steps", "2", "--output", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "out" / "generate.json").read_text())["config"]
    assert config["num_images"] == 3 and len(list((tmp_path / "out").glob("0*.png"))) == 3
    r = CliRunner().invoke(main, ["generate", "--model", str(bundle.path), "--prompts", str(file), "--steps", "2",
                                  "--output", str(tmp_path / "one-a-line")])
    assert r.exit_code == 0 and len(list((tmp_path / "one-a-line").glob("0*.png"))) == 2, r.output


@pytest.mark.e2e
def test_import_and_text_to_image_quantize_print_only_edge_dms_lines(sd_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               EDGE_DM_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", "import edge_dm, edge_dm.cli"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == r.stderr == "", r.stderr
    r = subprocess.run([sys.executable, "-m", "edge_dm", "quantize", "--model", sd_dir, "--num-samples", "2", "--steps",
                        "2", "--eval-trajectories", "1", "--report-images", "0", "--output", str(tmp_path / "q")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import re

    ours = r"(calibration \(dntc\)|held-out error): .*|Note: \d+ prompts? (is|are) longer than .*"
    others = [ln for ln in r.stderr.replace("\r", "\n").splitlines()
              if ln.strip() and not re.fullmatch(ours, ln.strip())]
    assert not others, others

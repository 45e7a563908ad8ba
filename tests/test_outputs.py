"""edge_dm.outputs on the real file system, with real processes; and errors.library_reason on real OpenVINO errors."""
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_dm import outputs
from edge_dm.errors import ConfigError, OutputExistsError, library_reason
from edge_dm.outputs import MARKER, atomic_output, check_output, clean_stale, write_atomic

ROOT = Path(__file__).resolve().parents[1]


def leftovers(parent: Path) -> list:
    return sorted(p.name for p in parent.iterdir()
                  if ".partial-" in p.name or ".old-" in p.name or p.name.endswith(".lock"))


def make(out: Path, **files) -> None:
    with atomic_output(out, overwrite=True) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)


def child(code: str, *args) -> subprocess.Popen:
    """A python process running `code` with this worktree's edge_dm, stdout piped."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True, env=env)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_publishes_a_folder_with_the_marker(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with atomic_output(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".out.partial-")
        assert (tmp / MARKER).is_file() and not out.exists()
        (tmp / "x.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "x.txt"]
    assert '"tool": "edge-dm"' in (out / MARKER).read_text()
    assert leftovers(out.parent) == []


def test_non_empty_folder_is_refused_without_overwrite(tmp_path):
    make(tmp_path / "out", x="old")
    with pytest.raises(OutputExistsError, match=r"\(pass overwrite to replace it\)$"):
        check_output(tmp_path / "out")
    with pytest.raises(OutputExistsError):
        with atomic_output(tmp_path / "out"):
            pytest.fail("the block must not run")
    assert (tmp_path / "out" / "x").read_text() == "old"
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty") == tmp_path / "empty"


def test_overwrite_replaces_an_edge_dm_folder_with_only_the_new_content(tmp_path):
    out = tmp_path / "out"
    make(out, old="1", keep="1")
    make(out, new="2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "new"]
    assert leftovers(tmp_path) == []


def test_overwrite_refuses_a_folder_edge_dm_did_not_make(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(OutputExistsError, match="not made by edge-dm and will not be replaced"):
        make(out, new="2")
    assert (out / "thesis.tex").read_text() == "precious"
    assert leftovers(tmp_path) == []
    legacy = lambda p: (p / "thesis.tex").is_file()  # noqa: E731  a layout the caller recognises
    with atomic_output(out, overwrite=True, legacy=legacy) as tmp:
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "new"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_an_error_in_the_block_leaves_nothing_and_the_old_output_intact(tmp_path, exc):
    out = tmp_path / "out"
    make(out, x="old")
    with pytest.raises(exc):
        with atomic_output(out, overwrite=True) as tmp:
            (tmp / "x").write_text("half")
            raise exc()
    assert (out / "x").read_text() == "old"
    with pytest.raises(exc):
        with atomic_output(tmp_path / "fresh") as tmp:
            raise exc()
    assert not (tmp_path / "fresh").exists() and leftovers(tmp_path) == []


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "out") as tmp:
            (tmp / "sub").mkdir()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / MARKER).stat().st_mode) == 0o644


def test_dot_in_an_empty_cwd_is_filled_in_place(tmp_path, monkeypatch):
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert check_output(".") == cwd and check_output("") == cwd
    inode = cwd.stat().st_ino
    with atomic_output(".") as tmp:
        (tmp / "unet.xml").write_text("ir")
    assert cwd.stat().st_ino == inode  # the shell standing in it still sees the output
    assert sorted(os.listdir(".")) == [MARKER, "unet.xml"]
    with pytest.raises(OutputExistsError):
        check_output(".")


def test_wrong_kinds_and_unwritable_parents_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    cases = [
        (OutputExistsError, dict(path=tmp_path / "file"), "a folder is wanted"),
        (OutputExistsError, dict(path=tmp_path / "folder", kind="file", overwrite=True), "a file is wanted"),
        (OutputExistsError, dict(path=tmp_path / "file", kind="file"), "pass overwrite"),
        (ConfigError, dict(path=tmp_path / "file" / "out"), "is a file, not a folder"),
        (ConfigError, dict(path=tmp_path / "file" / "a" / "b.json", kind="file"), "is a file, not a folder"),
        (ConfigError, dict(path="/"), "cannot be written"),
    ]
    for err, kw, words in cases:
        with pytest.raises(err, match=words) as info:
            check_output(**kw)
        assert "\n" not in str(info.value)
    with pytest.raises(OutputExistsError, match="not written by edge-dm"):  # a file edge-dm did not write
        check_output(tmp_path / "file", overwrite=True, kind="file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_parent_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="no permission"):
        check_output(ro / "sub" / "out")


def test_file_outputs_keep_their_suffix_and_replace_atomically(tmp_path):
    np = pytest.importorskip("numpy")
    out = tmp_path / "calib.npz"
    with atomic_output(out, kind="file") as tmp:
        assert not tmp.exists() and tmp.suffix == ".npz"
        np.savez(tmp, x=np.arange(3))
    assert list(np.load(out)["x"]) == [0, 1, 2]
    with atomic_output(out, overwrite=True, kind="file") as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new" and leftovers(tmp_path) == []


RACER = """
import os, sys, time
from edge_dm.errors import OutputExistsError
from edge_dm.outputs import atomic_output
out, go, me, kind = sys.argv[1:5]
try:
    with atomic_output(out, kind=kind) as tmp:
        (tmp / "who" if kind == "dir" else tmp).write_text(me)
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.002)
    print("won")
except OutputExistsError as exc:
    print("lost", exc)
"""


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_two_processes_into_one_output_exactly_one_wins(tmp_path, kind):
    out, go = tmp_path / "out", tmp_path / "go"
    procs = [child(RACER, out, go, me, kind) for me in ("A", "B")]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    go.touch()
    results = {me: p.communicate()[0] for me, p in zip("AB", procs)}
    won = [me for me, text in results.items() if text.startswith("won")]
    assert len(won) == 1, results
    lost = results["B" if won == ["A"] else "A"]
    assert lost.startswith("lost") and "exists" in lost
    assert (out / "who" if kind == "dir" else out).read_text() == won[0]
    assert leftovers(tmp_path) == []


SLEEPER = """
import sys, time
from edge_dm.outputs import atomic_output, install_signal_handlers
install_signal_handlers()
install_signal_handlers()
try:
    with atomic_output(sys.argv[1]) as tmp:
        (tmp / "half").write_text("x")
        print(tmp, flush=True)
        time.sleep(60)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_sigkill_leaves_a_partial_that_clean_stale_removes(tmp_path):
    p = child(SLEEPER, tmp_path / "out")
    partial = Path(p.stdout.readline().strip())
    assert clean_stale(tmp_path) == []  # its owner is alive
    # as seen from another pid namespace: the pid in the name is dead, but the owner's flock on the marker holds
    foreign = partial.with_name(f".out.partial-{dead_pid()}-0123abcd")
    partial.rename(foreign)
    assert clean_stale(tmp_path) == []
    p.kill()
    p.wait()
    assert foreign.is_dir()
    assert clean_stale(tmp_path) == [foreign]
    assert list(tmp_path.iterdir()) == []


def test_sigterm_runs_the_cleanup(tmp_path):
    p = child(SLEEPER, tmp_path / "out")
    partial = Path(p.stdout.readline().strip())
    assert partial.is_dir()
    p.send_signal(signal.SIGTERM)
    assert p.communicate(timeout=10)[0].strip() == "interrupted"
    assert list(tmp_path.iterdir()) == []


def test_clean_stale_restores_an_orphaned_old_output(tmp_path):
    pid = dead_pid()
    old = tmp_path / f".out.old-{pid}-0123abcd"
    old.mkdir()
    (old / MARKER).write_text("{}")
    (old / "x").write_text("old")
    partial = tmp_path / f".out.partial-{pid}-0123abcd"
    partial.mkdir()
    other = tmp_path / f".notes.old-{pid}"  # not a name edge-dm makes
    other.mkdir()
    assert clean_stale(tmp_path) == [partial]
    assert (tmp_path / "out" / "x").read_text() == "old" and other.is_dir()
    # NAME present: a leftover old output is just removed
    old.mkdir()
    assert clean_stale(tmp_path) == [old]


def test_overwrite_without_renameat2_uses_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)  # a libc without renameat2
    make(tmp_path / "out", old="1")
    make(tmp_path / "out", new="2")
    assert sorted(os.listdir(tmp_path / "out")) == [MARKER, "new"] and leftovers(tmp_path) == []


def test_write_atomic(tmp_path):
    write_atomic(tmp_path / "deep" / "r.json", '{"a": 1}')
    write_atomic(tmp_path / "deep" / "r.json", b'{"a": 2}')
    assert (tmp_path / "deep" / "r.json").read_text() == '{"a": 2}'
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "dir", b"x")  # os.replace cannot put a file over a folder
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "deep" / "r.json", 42)
    assert (tmp_path / "deep" / "r.json").read_text() == '{"a": 2}'
    assert sorted(os.listdir(tmp_path / "deep")) == ["r.json"] and os.listdir(tmp_path / "dir") == []
    assert sorted(os.listdir(tmp_path)) == ["deep", "dir"]


def _tiny_ov_model():
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 4], np.float32)
    return ov, ov.Model([ops.matmul(x, ops.constant(np.ones((4, 4), np.float32)), False, False)], [x])


def test_library_reason_of_real_openvino_errors(tmp_path):
    ov, model = _tiny_ov_model()
    with pytest.raises(RuntimeError) as info:
        ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "fp8"})
    assert "Exception from" in str(info.value)
    reason = library_reason(info.value)
    assert "Wrong value fp8 for property key INFERENCE_PRECISION_HINT" in reason
    assert "Exception from" not in reason and "\n" not in reason

    ov.save_model(model, tmp_path / "m.xml", compress_to_fp16=False)
    (tmp_path / "m.bin").write_bytes((tmp_path / "m.bin").read_bytes()[:10])
    with pytest.raises(RuntimeError) as info:
        ov.Core().read_model(tmp_path / "m.xml")
    reason = library_reason(info.value)
    assert "Incorrect weights in bin file!" in reason
    assert "Exception from" not in reason and "failed at" not in reason and "\n" not in reason


def test_library_reason_drops_tags_blank_lines_and_caps():
    exc = RuntimeError("Exception from src/a.cpp:1:\n[ GENERAL_ERROR ] first\n\nsecond\n")
    assert library_reason(exc) == "first; second"
    assert library_reason(RuntimeError("Exception from src/a.cpp:1:\n\n")) == "RuntimeError"
    assert len(library_reason(ValueError("x" * 1000))) <= 300

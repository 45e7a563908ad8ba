"""Atomic outputs: an output folder or file appears complete, or not at all.

Work goes into a hidden `.NAME.partial-<pid>-<rand>` beside the target, which is renamed into place
when complete. Every folder edge-dm makes holds a MARKER file listing what edge-dm wrote into it;
`overwrite` replaces only such folders, and only while they hold nothing else. A file output is
replaced only where edge-dm wrote it: a hidden `.NAME.edge-dm` beside it says so.

Signals: SIGTERM and SIGINT raise KeyboardInterrupt, so the cleanup of every `with` block runs; where a
library call does not return to Python within GRACE_S seconds (a long OpenVINO inference), the
temporary files of this process are removed and it exits with code 130 anyway.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from edge_dm.errors import ConfigError, OutputError, OutputExistsError

MARKER = ".edge-dm"


def home() -> Path:
    """Where edge-dm keeps what it makes by default (bundles, statistics): $EDGE_DM_HOME, else
    ~/.cache/edge-dm; ConfigError if a file stands in the way."""
    env = os.environ.get("EDGE_DM_HOME")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "edge-dm"
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        where = f"EDGE_DM_HOME={env}" if env else f"the edge-dm cache {path}"
        raise ConfigError(f"{where} cannot be used: {anc} is a file, not a folder (set EDGE_DM_HOME to a folder)")
    return path


def slug(spec: str) -> str:
    """A file-name-safe name for a model spec, used for its default bundle folder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", str(spec).strip("/")) or "model"


WRITTEN_BY = "edge-dm"  # a JSON file output's "written_by"
GRACE_S = 3.0  # after SIGTERM/SIGINT, how long library code may hold on before the process exits anyway
_live: set = set()  # this process's temporary outputs and scratch folders, removed at a forced exit
_publishing = threading.Lock()  # held while an output is renamed into place
_terminating = threading.Event()
_PARTIAL = re.compile(r"\..+\.partial-(\d{1,9})-[0-9a-f]{8}(\.[^.]*)?")
_OLD = re.compile(r"\.(.+)\.old-(\d{1,9})-[0-9a-f]{8}")
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def check_output(path, overwrite: bool = False, kind: str = "dir", legacy=None, inputs=()) -> Path:
    """Check before any work that `path` can be written without touching `inputs` (the paths the
    run reads: an output never is, holds or lies inside one of them); return it as an absolute path."""
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', not {kind!r}")
    try:
        target = Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
        raise ConfigError(f"output {path} cannot be resolved: {exc}") from None
    if not target.name:
        raise ConfigError(f"output {target} cannot be written: choose a path below it")
    for source in inputs:
        if not Path(source).exists():  # a model name or hub id, not a path
            continue
        source = Path(source).resolve()
        if target == source or source in target.parents or target in source.parents:
            raise ConfigError(f"output {target} overlaps {source}, which this run reads: choose another output")
    try:
        anc = target.parent
        while not anc.exists():
            anc = anc.parent
        if not anc.is_dir():
            raise ConfigError(f"output {target} cannot be written: {anc} is a file, not a folder")
        if not os.access(anc, os.W_OK | os.X_OK):
            raise ConfigError(f"output {target} cannot be written: no permission to write in {anc}")
        if kind == "file":
            if target.is_dir():
                raise OutputExistsError(f"output {target} is a folder; a file is wanted here")
            if target.exists() and not overwrite:
                raise OutputExistsError(f"output file {target} exists (pass `overwrite` to replace it)")
            if target.exists() and not _written_by_edge_dm(target):
                raise OutputExistsError(f"output file {target} was not written by edge-dm and will not be replaced")
        elif target.exists() and not target.is_dir():
            raise OutputExistsError(f"output {target} is a file; a folder is wanted here")
        elif os.path.ismount(target):
            raise ConfigError(f"output {target} is a mount point; choose a folder inside it")
        elif target.is_dir() and any(target.iterdir()):
            if not overwrite:
                raise OutputExistsError(f"output folder {target} exists and is not empty "
                                        "(pass `overwrite` to replace it)")
            if not (target / MARKER).is_file() and not (legacy and legacy(target)):
                raise OutputExistsError(f"output folder {target} was not made by edge-dm and will not be replaced")
            added = _not_written_by_edge_dm(target)
            if added:
                shown = ", ".join(added[:3]) + (f" and {len(added) - 3} more" if len(added) > 3 else "")
                raise OutputExistsError(f"output folder {target} holds files edge-dm did not write ({shown}); "
                                        "`overwrite` would delete them: move them or choose another output")
    except OSError as exc:
        raise ConfigError(f"output {target} cannot be written: {exc.strerror or exc}") from None
    return target


def _file_marker(path: Path) -> Path:
    return path.with_name(f".{path.name}{MARKER}")


def _written_by_edge_dm(path: Path) -> bool:
    """Whether edge-dm wrote the file output `path` (its marker beside it, or, for JSON from before the
    markers, "written_by": "edge-dm" in it)."""
    if _file_marker(path).is_file():
        return True
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("written_by") == WRITTEN_BY


def _not_written_by_edge_dm(folder: Path) -> list[str]:
    """Files in an edge-dm output folder that its marker does not list (none for markers of edge-dm
    versions that listed nothing)."""
    try:
        listed = json.loads((folder / MARKER).read_text()).get("files")
    except (OSError, ValueError):
        return []
    if listed is None:
        return []
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    return sorted(present - set(listed) - {MARKER})


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _locked(target: Path):
    """Hold an exclusive flock on `.NAME.lock` beside target; the lock file is removed afterwards."""
    lock = target.with_name(f".{target.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(st, os.stat(lock)):  # not unlinked by the previous holder
                    break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap a and b atomically with renameat2(RENAME_EXCHANGE); False where that is not available."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _publish(tmp: Path, target: Path, overwrite: bool, kind: str, legacy) -> Path | None:
    """Move tmp to target under the lock; return where the replaced old output now lies, if any."""
    with _locked(target):
        check_output(target, overwrite, kind, legacy)  # again: another run may have published meanwhile
        if kind == "file":
            _file_marker(target).write_text(json.dumps({"tool": "edge-dm", "kind": kind}) + "\n")
            os.replace(tmp, target)
            return None
        if not target.exists():
            os.replace(tmp, target)
            return None
        if not any(target.iterdir()):  # an empty folder (maybe the cwd): fill it in place, marker first
            moved = []
            try:
                for name in [MARKER] + sorted(set(os.listdir(tmp)) - {MARKER}):
                    os.rename(tmp / name, target / name)
                    moved.append(name)
            except BaseException:
                for name in moved:
                    _remove(target / name)
                raise
            return None
        if _exchange(tmp, target):
            return tmp
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(old, target)
            raise
        return old


@contextlib.contextmanager
def atomic_output(path, overwrite: bool = False, kind: str = "dir", legacy=None, inputs=()):
    """Yield a temporary path beside `path`; it replaces `path` on success and is removed on any error.
    `inputs`: what the run reads, which the output must not overlap (check_output)."""
    target = check_output(path, overwrite, kind, legacy, inputs)
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    if kind == "file":
        tmp = tmp.with_name(tmp.name + target.suffix)  # np.savez and friends insist on their suffix
    hold = None
    _live.add(tmp)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(target.parent)
        if kind == "dir":
            os.mkdir(tmp, 0o777)  # the umask applies
            (tmp / MARKER).write_text(json.dumps({"tool": "edge-dm", "kind": kind}) + "\n")
            hold = os.open(tmp / MARKER, os.O_RDWR)
            with contextlib.suppress(OSError):  # tells clean_stale in other pid namespaces we are alive
                fcntl.flock(hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        _remove(tmp)
        raise ConfigError(f"output {target} cannot be written: {exc.strerror or exc}") from None
    try:
        try:
            yield tmp
            if kind == "dir":  # the marker lists what edge-dm wrote
                files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")
                               if p.is_file() and p.name != MARKER)
                (tmp / MARKER).write_text(json.dumps({"tool": "edge-dm", "kind": kind, "files": files}) + "\n")
        except OSError as exc:  # a full disk, a vanished folder: one line, not a traceback
            raise OutputError(f"output {target} could not be written: {exc.strerror or exc}") from None
        if _terminating.is_set():  # a signal a library swallowed: nothing is put in place
            raise KeyboardInterrupt
        try:
            with _publishing:
                old = _publish(tmp, target, overwrite, kind, legacy)
        except OSError as exc:
            raise ConfigError(f"output {target} could not be put in place: {exc.strerror or exc}") from None
        if old is not None:
            _remove(old)
    finally:  # KeyboardInterrupt and SystemExit too
        if hold is not None:
            os.close(hold)
        _remove(tmp)
        _live.discard(tmp)


def write_atomic(path, data: bytes | str) -> None:
    """Write a small file through a temporary file beside it, so readers see the old or the new content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _alive(pid: int, path: Path) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        pass
    except PermissionError:
        return True
    try:  # a dead pid here may be a live run in another pid namespace: it holds a flock on its marker
        fd = os.open(path / MARKER, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def clean_stale(parent) -> list[Path]:
    """Remove partial outputs of dead runs in `parent`; put back an old output a dead run left aside."""
    parent, removed = Path(parent), []
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(parent)):
            m, old = _PARTIAL.fullmatch(name), _OLD.fullmatch(name)
            old = old if old and (parent / name).is_dir() else None  # only folders are put aside
            if not (m or old) or _alive(int((m or old).group(1 if m else 2)), parent / name):
                continue
            if old and not os.path.lexists(parent / old.group(1)):
                with contextlib.suppress(OSError):
                    os.rename(parent / name, parent / old.group(1))
                continue
            _remove(parent / name)
            removed.append(parent / name)
    return removed


class ScratchDir:
    """A private folder for temporary files under edge-dm's home (`home()/tmp`): removed by
    `cleanup()`, on garbage collection, at exit, or, where a process was killed, by the next run
    that makes one (clean_stale). `as_tempdir()` points Python's tempfile module at it meanwhile, so
    libraries' own temporary folders (optimum-intel's export) live and die with it."""

    def __init__(self):
        import weakref

        parent = home() / "tmp"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            clean_stale(parent)
            self.path = parent / f".scratch.partial-{os.getpid()}-{secrets.token_hex(4)}"
            os.mkdir(self.path)
            (self.path / MARKER).write_text(json.dumps({"tool": "edge-dm", "kind": "scratch"}) + "\n")
            self._hold = os.open(self.path / MARKER, os.O_RDWR)
        except OSError as exc:
            raise ConfigError(f"cannot make a temporary folder in {parent}: {exc.strerror or exc}") from None
        with contextlib.suppress(OSError):  # tells clean_stale in other pid namespaces we are alive
            fcntl.flock(self._hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _live.add(self.path)
        self._finalizer = weakref.finalize(self, ScratchDir._release, self._hold, self.path)

    @staticmethod
    def _release(hold: int, path: Path) -> None:
        with contextlib.suppress(OSError):
            os.close(hold)
        _remove(path)
        _live.discard(path)

    def cleanup(self) -> None:
        self._finalizer()

    def __enter__(self) -> "ScratchDir":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    @contextlib.contextmanager
    def as_tempdir(self):
        import tempfile

        before = tempfile.tempdir
        tempfile.tempdir = str(self.path)
        try:
            yield self.path
        finally:
            tempfile.tempdir = before


def _on_signal(signum, frame):
    """SIGTERM / SIGINT in the main thread: KeyboardInterrupt, so every cleanup runs."""
    _terminating.set()
    raise KeyboardInterrupt


def _watch(fd: int) -> None:
    """A thread reading the signal numbers Python's C handler writes at once, even while the main thread
    is inside a long library call: it gives the process GRACE_S seconds, then removes this process's
    temporary outputs and exits with 130."""
    while True:
        try:
            signums = os.read(fd, 16)
        except OSError:
            return
        if any(n in (signal.SIGTERM, signal.SIGINT) for n in signums):
            time.sleep(GRACE_S)
            with _publishing:  # never halfway through renaming an output into place
                for path in list(_live):
                    _remove(path)
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.write("\nAborted: nothing was written.\n")
                    sys.stderr.flush()
                os._exit(130)


_watching: list = []


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT end a run as Ctrl-C does (KeyboardInterrupt, every cleanup), and within GRACE_S
    seconds even where a library call holds the main thread (call it from the main thread)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) is not _on_signal:
            signal.signal(sig, _on_signal)
    if not _watching:
        read, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        _watching.append(threading.Thread(target=_watch, args=(read,), daemon=True, name="edge-dm-signals"))
        _watching[0].start()


def clean_scratch() -> None:
    """Remove the scratch folders (ScratchDir) that killed edge-dm processes left."""
    with contextlib.suppress(ConfigError):
        parent = home() / "tmp"
        if parent.is_dir():
            clean_stale(parent)


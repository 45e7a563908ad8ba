"""generate and evaluate on a Ray cluster: images sharded by seed ranges over workers, returned to
this process (the driver), which writes the outputs as it does without a cluster.

    with connect(ClusterConfig(address="local")) as cluster:            # or "auto", "ray://head:10001"
        run = cluster.sample(ClusterJob(bundle, sampling, 1000, runtime=DeviceConfig()))
        run.images                                                       # (1000, H, W, 3) uint8, seed order

How it works:
- `connect` starts an embedded Ray (`local`) or joins a running cluster, after checking in a child
  process, within `timeout_s`, that the address answers. It then checks that the cluster can place
  the workers asked for. Either failure is one ClusterError line, before any work.
- One worker (a Ray actor, `ShardWorker`) per `cpus_per_worker` CPUs. The bundle reaches it through
  Ray's object store as the bytes of its files (`pack_bundle`), unpacked into a private temporary
  folder on the worker (edge_dm.outputs.ScratchDir): no shared file system is needed. Each worker
  is pinned to cores of its own on its machine (`pick_cores`), where the machine has enough.
- The job's images [0, num_images) are cut into shards, contiguous ranges of image indices (image i
  comes from seed `sampling.seed + i`), handed out as workers finish (`SeedRanges`), large first and
  smaller towards the end so that the workers finish together. A shard is generated with the same
  Pipeline, batch size and seeds as in one process, so its images are the same bytes.
- With `feature_device`, a worker also computes the FID Inception features of its images; the
  driver sums them per shard into edge_dm.metrics.FeatureSums, which merge exactly.
- Faults: a worker that dies takes its shards with it; they go back to the queue, run on another
  worker, and a new worker replaces the dead one. Every finished shard is saved in a work folder
  keyed by the job (`WorkFolder`, under edge_dm.outputs.home()/runs), so a driver killed mid-run
  resumes from there; the caller removes the folder once its output is written.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_dm.bundle import CALIBRATION, Bundle, open_bundle
from edge_dm.configs import ClusterConfig, DeviceConfig, SamplingConfig
from edge_dm.errors import EdgeDMError, library_reason
from edge_dm.jobs.progress import bar
from edge_dm.metrics import FeatureSums, _feature_module, inception_features, load_inception  # _feature_module: below
from edge_dm.outputs import MARKER, ScratchDir, clean_stale, home, write_atomic
from edge_dm.pipeline import Pipeline
from edge_dm.sampling import check_steps

DEFAULT_CPUS_PER_WORKER = 4
MAX_SHARD_BATCHES = 32  # the largest automatic shard, in rounds of batches over a worker's streams
QUEUED_PER_WORKER = 2  # shards handed to a worker at once: one running, one waiting, so it never idles
MAX_ATTEMPTS = 3  # runs of one shard before the job gives up


class ClusterError(EdgeDMError):
    """The Ray cluster does not answer, cannot place the workers asked for, or keeps losing them."""


# --- the seed ranges ------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Shard:
    """Images [start, start + count) of a job: image i comes from seed sampling.seed + i."""
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count


class SeedRanges:
    """The images of a job not yet handed out, as sorted disjoint [start, end) ranges."""

    def __init__(self, num_images: int, done=()):
        self.ranges: list[list[int]] = [[0, num_images]]
        for shard in done:
            self._remove(shard)

    @property
    def remaining(self) -> int:
        return sum(end - start for start, end in self.ranges)

    def take(self, count: int) -> Shard | None:
        """The next shard, of at most `count` images from the first range left; None when none is left."""
        if not self.ranges:
            return None
        start, end = self.ranges[0]
        shard = Shard(start, min(count, end - start))
        self._remove(shard)
        return shard

    def give_back(self, shard: Shard) -> None:
        """Put a shard that did not finish back, to be handed out again (before anything later)."""
        self.ranges.append([shard.start, shard.end])
        self.ranges.sort()
        merged: list[list[int]] = []
        for start, end in self.ranges:
            if merged and merged[-1][1] == start:
                merged[-1][1] = end
            else:
                merged.append([start, end])
        self.ranges = merged

    def _remove(self, shard: Shard) -> None:
        out = []
        for start, end in self.ranges:
            if end <= shard.start or start >= shard.end:
                out.append([start, end])
                continue
            if start < shard.start:
                out.append([start, shard.start])
            if shard.end < end:
                out.append([shard.end, end])
        self.ranges = out


def shard_size(remaining: int, workers: int, unit: int, fixed: int | None = None) -> int:
    """Images of the next shard: `fixed` if given; else about a quarter of a worker's share of what
    remains, in whole `unit`s (one round of batches over a worker's streams) and at most
    MAX_SHARD_BATCHES units, so shards shrink as the job ends and the workers finish together."""
    if fixed:
        return fixed
    share = math.ceil(remaining / (4 * workers))
    return unit * min(max(1, math.ceil(share / unit)), MAX_SHARD_BATCHES)


# --- connecting -----------------------------------------------------------------------------------

_PROBE = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
ray.shutdown()
"""
_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\s*(\S+:\d+:\s*)?")


def ray_env() -> None:
    """The environment every Ray process of edge-dm's starts with: no usage statistics sent."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


class _SetupNotes(logging.Filter):
    """Drops Ray's notes on how it set itself up (which token authentication it chose, its own
    default; that it set no SIGTERM handler off the main thread): not edge-dm's output."""

    NOTES = ("Token authentication is", "SIGTERM handler is not set")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTES)


@contextlib.contextmanager
def _ray_setup():
    """While Ray starts or joins: its setup notes kept off edge-dm's output, and edge-dm's SIGTERM
    handler (edge_dm.outputs: SIGTERM ends a run as Ctrl-C does, exit code 130) put back after
    ray.init replaces it with its own."""
    import signal
    import threading

    loggers = [logging.getLogger(n) for n in ("ray._private.authentication.authentication_token_setup",
                                              "ray._private.worker")]
    notes = _SetupNotes()
    handler = signal.getsignal(signal.SIGTERM)
    for log in loggers:
        log.addFilter(notes)
    try:
        yield
    finally:
        for log in loggers:
            log.removeFilter(notes)
        if threading.current_thread() is threading.main_thread() and handler is not None:
            signal.signal(signal.SIGTERM, handler)


def init_ray(ray, address: str) -> None:
    """ray.init with Ray's log lines kept off edge-dm's output: `local` starts an embedded Ray on the
    CPUs this process may use (no dashboard), whatever RAY_ADDRESS says; any other address joins
    that cluster."""
    with _ray_setup():
        if address == "local":
            ray.init(address="local", num_cpus=len(usable_cpus()), include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING")
        else:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")


def import_ray():
    """The ray module; ClusterError naming the extra to install where it is missing."""
    ray_env()
    try:
        import ray
    except ImportError:
        raise ClusterError("`address` needs Ray: pip install 'edge-dm[cluster]'") from None
    return ray


def probe(address: str, timeout_s: float) -> None:
    """ClusterError unless a Ray driver can connect to `address` within `timeout_s`, tried in a child
    process (ray.init may wait minutes on an address that does not answer, and its C++ client
    logs to stderr meanwhile), with Ray's own reason, first line only. A Ray client (ray://) is
    told to give up within the time, so that its reason arrives too."""
    import_ray()
    env = dict(os.environ)
    if address.startswith("ray://"):  # Ray's client tries 3 times, each waiting this long
        wait = str(max(1, int(timeout_s / 4)))
        env.update(RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S=wait, RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S=wait)
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                           timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        reason = _ray_reason(err)
        raise ClusterError(f"Ray cluster {address} does not answer within {timeout_s:g} s"
                           + (f": {reason}" if reason else "") + " (`timeout_s` waits longer)") from None
    if r.returncode != 0:
        raise ClusterError(f"cannot connect to Ray cluster {address}: {_ray_reason(r.stderr) or 'no reason given'}")


def _ray_reason(stderr: str) -> str:
    """Ray's own reason in a failed driver's stderr, one line: the exception's message, else its
    first log line (backticks made quotes: in edge-dm's errors they mark option names)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reason = ""
    for line in reversed(lines):
        m = re.match(r"^[\w.]*(Error|Exception): (.+)$", line)
        if m:
            reason = library_reason(m.group(2)).split("; ")[0]
            break
    else:
        logged = [_LOG_PREFIX.sub("", line) for line in lines if line.startswith("[")]
        reason = logged[0] if logged else ""
    return reason.replace("`", "'")


def node_cpus(ray) -> list[int]:
    """CPUs of each alive node of the connected cluster."""
    return [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]


def layout(cfg: ClusterConfig, cpus: list[int]) -> tuple[int, int]:
    """(workers, cpus_per_worker) that cfg asks for on nodes of `cpus` CPUs each; ClusterError where
    the cluster cannot place them. Unset: 4 CPUs a worker (a node's CPUs if fewer), as many workers
    as fit."""
    per_worker = cfg.cpus_per_worker or min(DEFAULT_CPUS_PER_WORKER, max(cpus, default=0)) or 1
    fit = sum(c // per_worker for c in cpus)
    nodes = f"its nodes' CPUs: {', '.join(map(str, cpus)) or 'none'}"
    if fit == 0:
        raise ClusterError(f"no node of the cluster has `cpus_per_worker` {per_worker} CPUs ({nodes})")
    if (cfg.workers or fit) > fit:
        raise ClusterError(f"`workers` {cfg.workers} of `cpus_per_worker` {per_worker}: the cluster can place {fit} "
                           f"({nodes})")
    return cfg.workers or fit, per_worker


@contextlib.contextmanager
def connect(cfg: ClusterConfig):
    """A ClusterSession on the Ray cluster cfg names, checked before any work (ClusterError). A Ray
    this process already joined is used as it is; one this call started or joined is left (the
    embedded one stopped) on exit."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        if cfg.address != "local":
            probe(cfg.address, cfg.timeout_s)
        try:
            init_ray(ray, cfg.address)
        except Exception as exc:  # noqa: BLE001  Ray raises ConnectionError, RuntimeError, ...
            reason = library_reason(exc).split("; ")[0].replace("`", "'")
            raise ClusterError(f"cannot start or join Ray at {cfg.address}: {reason}") from None
    try:
        yield ClusterSession(ray, cfg, *layout(cfg, node_cpus(ray)))
    finally:
        if started:
            ray.shutdown()


# --- the bundle on the workers ----------------------------------------------------------------------

def pack_bundle(bundle: Bundle) -> dict[str, bytes]:
    """The files a worker needs to run `bundle`, by their path in it, as bytes: all but the
    calibration set, the fp32 copy of the denoiser, edge-dm's marker and temporary files."""
    fp32 = bundle.family.layout.fp32_copy
    skip = {MARKER, CALIBRATION} | ({fp32, str(Path(fp32).with_suffix(".bin"))} if fp32 else set())
    files = {}
    for path in sorted(bundle.path.rglob("*")):
        rel = path.relative_to(bundle.path).as_posix()
        if path.is_file() and rel not in skip and ".partial-" not in path.name:
            files[rel] = path.read_bytes()
    return files


def unpack_bundle(files: dict[str, bytes], folder: Path) -> Bundle:
    """The bundle of pack_bundle's `files`, written into `folder`."""
    for rel, data in files.items():
        path = Path(folder) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return open_bundle(folder)


def bundle_fingerprint(bundle: Bundle) -> str:
    """A key that changes with the bundle's files: their paths, sizes and modification times."""
    h = hashlib.sha1(str(bundle.path.resolve()).encode())
    for path in sorted(p for p in bundle.path.rglob("*") if p.is_file() and ".partial-" not in p.name):
        st = path.stat()
        h.update(f"{path.relative_to(bundle.path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (taskset, a container's cpuset), all of them where the
    system cannot tell (no sched_getaffinity)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pick_cores(cpus: list[int], taken: set[int], count: int) -> list[int] | None:
    """The first `count` of a machine's `cpus` not `taken` by another worker there, or None (the
    worker is not pinned) where fewer are free."""
    free = [c for c in cpus if c not in taken]
    return free[:count] if len(free) >= count else None


def pin_process(cores: list[int]) -> None:
    """Pin every thread of this process (Ray's own included) and those it starts to `cores`: OpenVINO
    then runs its streams on those cores only. Linux only; elsewhere nothing is pinned."""
    if not (hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")):
        return
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cores)


class FeatureNet:
    """The FID Inception network on a worker, loaded once and run on the images of every shard. For
    `openvino` it is converted and compiled once, from the torch module (metrics._feature_module)
    and with the options edge_dm.metrics converts and compiles it with on each call."""

    def __init__(self, device: str):
        self.device = device
        self.net = load_inception(device="cpu" if device == "openvino" else device)
        self.compiled = self._compile() if device == "openvino" else None

    def _compile(self):
        import openvino as ov
        import torch

        model = ov.convert_model(_feature_module(self.net), example_input=torch.zeros(2, 3, 32, 32),
                                 input=[([-1, 3, -1, -1], ov.Type.f32)])
        return ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT",
                                                      "INFERENCE_PRECISION_HINT": "f32"})

    def __call__(self, images: np.ndarray, batch_size: int = 50) -> dict:
        """{"pool": (N, 2048), "spatial": (N, 2023)} float64, as edge_dm.metrics.inception_features."""
        if self.compiled is None:
            return inception_features(images, batch_size, self.device, net=self.net)
        import openvino as ov

        queue = ov.AsyncInferQueue(self.compiled, max(1, int(self.compiled.get_property(
            "OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))
        starts = range(0, len(images), batch_size)
        outs: list = [None] * len(starts)

        def done(request, i):
            outs[i] = tuple(request.get_output_tensor(k).data.astype(np.float64) for k in (0, 1))

        queue.set_callback(done)
        for i, s in enumerate(starts):
            queue.start_async({0: np.ascontiguousarray(images[s:s + batch_size].transpose(0, 3, 1, 2),
                                                       dtype=np.float32)}, i)
        queue.wait_all()
        return {"pool": np.concatenate([o[0] for o in outs]), "spatial": np.concatenate([o[1] for o in outs])}


class ShardWorker:
    """A Ray actor (created by ClusterSession) that holds one bundle compiled on its device and makes
    shards of a job: `where` tells the driver its machine, `load` pins it and compiles, `run` makes
    a shard's images (and their Inception features)."""

    def where(self) -> dict:
        """Its machine (host name and address) and the CPUs it may run on."""
        return dict(host=f"{socket.gethostname()}/{_address()}", cpus=usable_cpus())

    def load(self, files: dict, runtime: DeviceConfig, sampling: SamplingConfig, cores: list[int] | None,
             feature_device: str | None) -> dict:
        """Pin to `cores` (None: not pinned), unpack and compile the bundle for `sampling` (and the
        Inception network for `feature_device`), and build its scheduler once (importing diffusers
        and torch), so the first shard runs at full speed; returns the batches it runs at once (its
        streams)."""
        if cores:
            pin_process(cores)
        self.scratch = ScratchDir()
        self.pipe = Pipeline(unpack_bundle(files, self.scratch.path), runtime)
        self.features = FeatureNet(feature_device) if feature_device else None
        check_steps(sampling.scheduler, self.pipe.bundle.scheduler_config, sampling.steps)
        return dict(parallel=self.pipe.denoiser(sampling).net.parallel)  # compiles

    def run(self, shard: Shard, sampling: SamplingConfig, prompts: list, keep_images: bool) -> dict:
        """Images (uint8, N x H x W x 3, if `keep_images`) and features (float32, exactly as computed)
        of `shard`, and how long they took."""
        t0 = time.perf_counter()
        images = self.pipe.sample(shard.count, sampling.replace(seed=sampling.seed + shard.start), prompts)
        den = self.pipe.last_denoiser
        out = dict(images=images if keep_images else None, seconds=time.perf_counter() - t0, unet_calls=den.calls,
                   unet_seconds=den.seconds, parallel=den.parallel)
        if self.features is not None:
            t1 = time.perf_counter()
            feats = self.features(images)
            out.update(pool=feats["pool"].astype(np.float32), spatial=feats["spatial"].astype(np.float32),
                       feature_seconds=time.perf_counter() - t1)
        return out


def _address() -> str:
    with contextlib.suppress(Exception):
        import ray

        return ray.util.get_node_ip_address()
    return "?"


# --- the work folder ------------------------------------------------------------------------------

class WorkFolder:
    """Finished shards of one job, kept under home()/runs/<key> until the job's output is written,
    so that a run killed midway resumes. One run at a time holds it (a lock on `.lock`); partial
    files of killed runs are removed on entry (edge_dm.outputs.clean_stale)."""

    def __init__(self, key: str, description: dict):
        self.path = home() / "runs" / key
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            clean_stale(self.path)
            self._lock = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise ClusterError(f"cannot use the work folder {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise ClusterError(f"another edge-dm run is working on this job (work folder {self.path}); "
                               "wait for it to finish") from None
        if not (self.path / "job.json").exists():
            write_atomic(self.path / "job.json", json.dumps(description, indent=2, sort_keys=True, default=str))

    def done(self) -> list[Shard]:
        shards = []
        for path in self.path.glob("shard-*.npz"):
            m = re.fullmatch(r"shard-(\d+)-(\d+)\.npz", path.name)
            if m:
                shards.append(Shard(int(m.group(1)), int(m.group(2))))
        return sorted(shards)

    def save(self, shard: Shard, arrays: dict) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: v for k, v in arrays.items() if v is not None})
        write_atomic(self.path / f"shard-{shard.start:09d}-{shard.count}.npz", buf.getvalue())

    def load(self, shard: Shard) -> dict:
        with np.load(self.path / f"shard-{shard.start:09d}-{shard.count}.npz") as z:
            return {k: z[k] for k in z.files}

    def release(self) -> None:
        """Let another run take the folder (its shards stay)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def remove(self) -> None:
        """Delete the folder, the job's output being written; left to a run that took it meanwhile."""
        import shutil

        with contextlib.suppress(OSError):
            fd = os.open(self.path / ".lock", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(self.path, ignore_errors=True)
            finally:
                os.close(fd)


# --- the job --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterJob:
    """What to make: `num_images` images of `bundle` (a bundle folder) from seeds sampling.seed + i,
    image i with prompts[i] (a prompt per image, or none), on `runtime`'s device of each worker; with
    `feature_device`, their Inception features too; `keep_images` False returns no images (only the
    features)."""
    bundle: Bundle
    sampling: SamplingConfig  # resolved (Pipeline.check's)
    num_images: int
    prompts: tuple = ()
    runtime: DeviceConfig = field(default_factory=DeviceConfig)
    feature_device: str | None = None
    keep_images: bool = True

    def key(self) -> str:
        """What the work folder is named by: everything that decides the job's images and features."""
        what = dict(bundle=bundle_fingerprint(self.bundle), sampling=self.sampling.to_dict(),
                    num_images=self.num_images, prompts=list(self.prompts), runtime=self.runtime.to_dict(),
                    feature_device=self.feature_device, keep_images=self.keep_images)
        return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class ClusterRun:
    """A finished job: its images in seed order (None unless kept), their feature sums (None without
    features), statistics of the run, and its work folder (unlocked; to remove once the output is
    written: `finish`). `stats`: the layout, shards made, resumed and retried, workers lost, UNet
    calls and seconds summed over workers, and seconds: in all, starting the workers (packing the
    bundle, compiling), and making the shards."""
    images: np.ndarray | None
    features: dict | None  # {"pool": FeatureSums, "spatial": FeatureSums}
    stats: dict
    work: WorkFolder

    def finish(self) -> None:
        """Remove the work folder: call once the job's output is written."""
        self.work.remove()


@dataclass
class _Worker:
    """The driver's view of one worker: its actor, machine, pinned cores and shards in flight."""
    actor: object
    host: str = ""
    cores: list | None = None
    unit: int = 1  # images of one round of batches over its streams
    parallel: int = 1
    queued: list = field(default_factory=list)  # object refs of its shards in flight


class ClusterSession:
    """A connected cluster (`connect`): `workers` workers of `cpus_per_worker` CPUs each make the
    shards of each job given to `sample`."""

    def __init__(self, ray, cfg: ClusterConfig, workers: int, cpus_per_worker: int):
        self.ray, self.cfg, self.workers, self.cpus_per_worker = ray, cfg, workers, cpus_per_worker
        self._started = 0  # workers started so far (they are named by this count)
        self._pinned: dict = {}  # machine -> cores pinned by this session's live workers

    def describe(self) -> dict:
        return dict(address=self.cfg.address, workers=self.workers, cpus_per_worker=self.cpus_per_worker,
                    nodes=len(node_cpus(self.ray)))

    def sample(self, job: ClusterJob, progress: bool = True, desc: str = "cluster") -> ClusterRun:
        """Run `job` on the cluster, resuming from its work folder; one progress bar for the job, from
        when its workers are ready."""
        work = WorkFolder(job.key(), dict(bundle=str(job.bundle.path), num_images=job.num_images,
                                          sampling=job.sampling.to_dict(), feature_device=job.feature_device))
        try:
            done = work.done()
            todo = SeedRanges(job.num_images, done)
            stats = dict(self.describe(), shards=0, resumed_shards=len(done), retried_shards=0, lost_workers=0,
                         unet_calls=0, unet_seconds=0.0, worker_seconds=0.0, feature_seconds=0.0, parallel=None,
                         start_seconds=0.0, run_seconds=0.0)
            t0 = time.perf_counter()
            if todo.remaining:
                self._run(job, todo, work, stats, progress, desc)
            stats["seconds"] = time.perf_counter() - t0
            images, features = _gather(work, job)
        finally:
            work.release()
        return ClusterRun(images, features, stats, work)

    def _run(self, job: ClusterJob, todo: SeedRanges, work: WorkFolder, stats: dict, progress: bool,
             desc: str) -> None:
        """Hand out the shards of `todo` to the workers, a few at a time each, until all are saved in
        `work`; a worker that dies is replaced and its shards handed out again."""
        ray = self.ray
        t0 = time.perf_counter()
        files = ray.put(pack_bundle(job.bundle))
        pool = self._start(files, job, self.workers)
        stats.update(parallel=pool[0].parallel, start_seconds=time.perf_counter() - t0)
        t0 = time.perf_counter()
        running: dict = {}  # object ref -> (worker, shard)
        attempts: dict = {}  # shard -> runs that failed
        try:
            with bar(progress, job.num_images, f"{desc} on {len(pool)} workers", "img") as b:
                if job.num_images > todo.remaining:
                    b.update(job.num_images - todo.remaining)  # resumed
                while todo.remaining or running:
                    for w in pool:
                        self._fill(w, job, todo, len(pool), running)
                    ref = ray.wait(list(running), num_returns=1)[0][0]
                    w, shard = running.pop(ref)
                    w.queued.remove(ref)
                    try:
                        out = _get(ray, ref)
                    except ray.exceptions.RayActorError as exc:
                        attempts[shard] = attempts.get(shard, 0) + 1
                        if attempts[shard] >= MAX_ATTEMPTS:
                            raise ClusterError(f"images {shard.start}-{shard.end - 1} failed {MAX_ATTEMPTS} times, "
                                               f"the last: {library_reason(exc).split('; ')[0]}") from None
                        todo.give_back(shard)
                        stats["retried_shards"] += 1
                        if w in pool:
                            stats["lost_workers"] += 1
                            pool.remove(w)
                            self._release(w)
                            pool += self._replace(files, job, bool(pool))
                        continue
                    work.save(shard, {k: out.get(k) for k in ("images", "pool", "spatial")})
                    stats["shards"] += 1
                    for k in ("unet_calls", "unet_seconds", "feature_seconds"):
                        stats[k] += out.get(k, 0)
                    stats["worker_seconds"] += out["seconds"]
                    b.update(shard.count)
            stats["run_seconds"] = time.perf_counter() - t0
        finally:
            for w in pool:
                ray.kill(w.actor)
                self._release(w)

    def _fill(self, w: _Worker, job: ClusterJob, todo: SeedRanges, workers: int, running: dict) -> None:
        """Give worker `w` shards until it has QUEUED_PER_WORKER in flight or none are left."""
        while len(w.queued) < QUEUED_PER_WORKER and todo.remaining:
            shard = todo.take(shard_size(todo.remaining, workers, w.unit, self.cfg.shard_images))
            ref = w.actor.run.remote(shard, job.sampling, list(job.prompts[shard.start:shard.end]), job.keep_images)
            w.queued.append(ref)
            running[ref] = (w, shard)

    def _replace(self, files, job: ClusterJob, others_left: bool) -> list[_Worker]:
        """A worker in place of a dead one; none if it cannot start while other workers go on."""
        try:
            return self._start(files, job, 1)
        except ClusterError:
            if others_left:
                return []
            raise

    def _start(self, files, job: ClusterJob, count: int) -> list[_Worker]:
        """`count` workers, each pinned to cores of its own where its machine has enough, loaded with
        the bundle; ClusterError if none starts within timeout_s."""
        ray = self.ray
        actor = ray.remote(ShardWorker)
        new = []
        for _ in range(count):
            self._started += 1  # named, so a person (or a test) can find them: ray.util.list_named_actors()
            new.append(_Worker(actor.options(name=f"edge-dm-worker-{os.getpid()}-{self._started}", max_restarts=0,
                                             num_cpus=self.cpus_per_worker, scheduling_strategy="SPREAD").remote()))
        places = [w.actor.where.remote() for w in new]
        ready, _ = ray.wait(places, num_returns=len(places), timeout=self.cfg.timeout_s)
        if len(ready) < len(places):
            for w in new:
                ray.kill(w.actor)
            raise ClusterError(f"{len(ready)} of {len(places)} workers started within {self.cfg.timeout_s:g} s: the "
                               "cluster's CPUs are taken (`timeout_s` waits longer)")
        loads = []
        for w, place in zip(new, ray.get(places)):
            w.host = place["host"]
            taken = self._pinned.setdefault(w.host, set())
            w.cores = pick_cores(place["cpus"], taken, self.cpus_per_worker)
            taken.update(w.cores or ())
            loads.append(w.actor.load.remote(files, job.runtime, job.sampling, w.cores, job.feature_device))
        started = []
        for w, ref in zip(new, loads):
            try:
                info = _get(ray, ref)
            except ray.exceptions.RayActorError:  # died while loading: the others go on without it
                self._release(w)
                continue
            w.parallel, w.unit = info["parallel"], job.runtime.batch_size * info["parallel"]
            started.append(w)
        if not started:
            raise ClusterError(f"none of {count} workers could load the bundle: each died while loading")
        return started

    def _release(self, w: _Worker) -> None:
        """Free the cores a worker that is gone was pinned to."""
        self._pinned.get(w.host, set()).difference_update(w.cores or ())


def _get(ray, refs):
    """ray.get, with an edge-dm error raised on a worker raised here as itself."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        raise exc.cause if isinstance(exc.cause, EdgeDMError) else exc from None


def _gather(work: WorkFolder, job: ClusterJob) -> tuple:
    """The job's images in seed order and its feature sums, from its saved shards, summed in seed
    order (so a rerun gives the same sums whatever order the shards finished in)."""
    images, sums = [], None
    for shard in work.done():
        arrays = work.load(shard)
        if job.keep_images:
            images.append(arrays["images"])
        if job.feature_device:
            part = {k: FeatureSums.of(arrays[k]) for k in ("pool", "spatial")}
            sums = part if sums is None else {k: sums[k] + part[k] for k in sums}
    return (np.concatenate(images) if job.keep_images else None), sums


def sample_on_cluster(job: ClusterJob, cluster: ClusterConfig, progress: bool = True) -> ClusterRun:
    """`job` on the cluster `cluster` names: connect, run, disconnect. The caller writes its output
    and then calls the run's `finish()`."""
    with connect(cluster) as session:
        return session.sample(job, progress)



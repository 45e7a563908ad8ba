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
  is pinned to cores of its own on its machine (`pick_cores`), where the machine has enough. What
  runs on the workers is edge_dm.jobs.workers.
- The job's images [0, num_images) are cut into shards, contiguous ranges of image indices (image i
  comes from seed `sampling.seed + i`), handed out as workers finish (edge_dm.jobs.shards), large
  first and smaller towards the end so that the workers finish together. A shard is generated with the same
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
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from edge_dm.bundle import Bundle
from edge_dm.configs import ClusterConfig, DeviceConfig, SamplingConfig
from edge_dm.errors import ClusterError, EdgeDMError, library_reason
from edge_dm.jobs.progress import bar
from edge_dm.jobs.shards import SeedRanges, WorkFolder, shard_size
from edge_dm.jobs.workers import ShardWorker, bundle_fingerprint, pack_bundle, pick_cores, usable_cpus
from edge_dm.metrics import FeatureSums

DEFAULT_CPUS_PER_WORKER = 4
QUEUED_PER_WORKER = 2  # shards handed to a worker at once: one running, one waiting, so it never idles
MAX_ATTEMPTS = 3  # runs of one shard before the job gives up


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

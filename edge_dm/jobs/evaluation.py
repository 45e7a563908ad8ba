"""`edge-dm evaluate`: FID and sFID against a reference, class accuracy (text-to-image), and the
paired drift of two image sets from the same seeds (edge_dm.metrics, edge_dm.classifier), of image
folders or of images a bundle generates.

With cfg.cluster, a bundle's images are generated on a Ray cluster (edge_dm.jobs.cluster), and the
Inception features of the samples computed there beside them; the driver merges the features'
sums (edge_dm.metrics.FeatureSums), so the scores are those of one process to float tolerance.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np

from edge_dm.bundle import Bundle, is_bundle
from edge_dm.classifier import class_accuracy, classifier_config, named_classes
from edge_dm.configs import EvaluateConfig
from edge_dm.data import cycled, load_images
from edge_dm.errors import BundleError, ConfigError, DataError
from edge_dm.jobs.cluster import ClusterJob, ClusterRun, ClusterSession, connect
from edge_dm.jobs.progress import bar
from edge_dm.metrics import check_feature_device, drift, inception_features, reference_path, reference_stats, scores
from edge_dm.outputs import atomic_output, check_output
from edge_dm.pipeline import Pipeline


def image_classes(cfg: EvaluateConfig) -> list | None:
    """The class each of cfg.num_images images should show (the one its prompt names), checked against
    cfg.classifier's classes; None without a classifier. DataError/ModelNotFoundError before any work."""
    if cfg.classifier is None:
        return None
    _, config = classifier_config(cfg.classifier)
    return cycled(named_classes(cfg.prompts, config["classes"]), cfg.num_images)


def check_sources(cfg: EvaluateConfig) -> dict:
    """Everything evaluate can check before any work: the sample and compare sources, the reference,
    the output. Returns the checked Pipeline of each source that is a bundle (its IR read once)."""
    pipes = {}
    for spec in filter(None, (cfg.samples, cfg.compare)):
        if Path(spec).exists() and not is_bundle(spec):
            continue  # an image folder
        try:  # a bundle folder, or the int8 bundle edge-dm made of a model name (as generate's --model)
            pipes[spec] = pipes.get(spec) or Pipeline(Bundle.from_pretrained(spec), cfg.runtime)
        except BundleError as e:
            raise DataError(f"samples not found: {spec} is no image folder or bundle ({e})") from None
        pipes[spec].check(cfg.sampling, cfg.prompts)
    if cfg.reference:
        reference_path(cfg.reference)
    if cfg.output:
        check_output(cfg.output, cfg.overwrite, kind="file", inputs=[p for p in (cfg.samples, cfg.compare) if p])
    check_feature_device(cfg.feature_device)
    return pipes


def images_of(spec: str, pipe: Pipeline | None, cfg: EvaluateConfig, progress: bool, timings: dict,
              label: str) -> np.ndarray:
    """uint8 images of the folder `spec`, or cfg.num_images images generated (seeded) with `pipe`
    (the checked pipeline of the bundle `spec`) on cfg.runtime's device; for a bundle, how long the
    generation took goes into `timings[label]`."""
    if pipe is None:
        generated = (Path(spec) / "generate.json").exists()  # `edge-dm generate`'s numbered PNGs, not its grid
        return load_images(spec, limit=cfg.num_images, pattern="[0-9]*.png" if generated else "*")
    t0 = time.perf_counter()
    with bar(progress, cfg.num_images, label, "img") as b:
        images = pipe.sample(cfg.num_images, cfg.sampling, cycled(cfg.prompts, cfg.num_images), b.update)
    seconds = time.perf_counter() - t0
    den = pipe.last_denoiser
    # images through the UNet per second of generation (calls overlap, so not per second in the UNet)
    timings[label] = dict(seconds=round(seconds, 2), images_per_s=round(len(images) / seconds, 2),
                          unet_images_per_s=round(den.images / seconds, 1), parallel=den.parallel,
                          batch_size=cfg.runtime.batch_size)
    return images


def cluster_images(cluster: ClusterSession, pipe: Pipeline, cfg: EvaluateConfig, progress: bool, timings: dict,
                   label: str, features: bool, keep_images: bool = True) -> ClusterRun:
    """cfg.num_images images of the checked pipeline `pipe`'s bundle made on `cluster` (and with
    `features`, their Inception features on cfg.feature_device there); how long it took goes into
    `timings[label]`."""
    sampling = pipe.check(cfg.sampling, cfg.prompts)
    job = ClusterJob(pipe.bundle, sampling, cfg.num_images, tuple(cycled(cfg.prompts, cfg.num_images)), cfg.runtime,
                     cfg.feature_device if features else None, keep_images)
    run = cluster.sample(job, progress, label)
    st = run.stats
    timings[label] = dict(seconds=round(st["seconds"], 2), images_per_s=round(cfg.num_images / st["seconds"], 2),
                          parallel=st["parallel"], batch_size=cfg.runtime.batch_size,
                          cluster={k: st[k] for k in ("address", "workers", "cpus_per_worker", "nodes", "shards",
                                                      "resumed_shards", "retried_shards", "lost_workers")})
    return run


def evaluate(cfg: EvaluateConfig, progress: bool = True) -> dict:
    """Score cfg.samples (folder or bundle) with FID/sFID against cfg.reference, the paired drift
    against cfg.compare (a second folder or bundle, same seeds), and/or the class accuracy by
    cfg.classifier (image i against the class prompt i names). Writes JSON to cfg.output if given.

    `timings` in the result: seconds spent generating each bundle's images and computing features
    (with cfg.cluster, features are computed on the workers: their seconds summed over workers).
    """
    pipes = check_sources(cfg)
    classes = image_classes(cfg)
    if cfg.cluster and not pipes:
        raise ConfigError("`address` generates a bundle's images on a cluster, and `samples` (and `compare`) "
                          "are image folders: evaluate them without it")
    with connect(cfg.cluster) if cfg.cluster else contextlib.nullcontext() as cluster:  # checked before any work
        runs: list[ClusterRun] = []
        result = _evaluate(cfg, pipes, classes, cluster, runs, progress)
        for run in runs:
            run.finish()  # the result is written: the shards kept for a resume go
    return result


def _evaluate(cfg: EvaluateConfig, pipes: dict, classes: list | None, cluster: ClusterSession | None,
              runs: list, progress: bool) -> dict:
    """evaluate's work once everything is checked: the cluster runs it made are appended to `runs`."""
    t0 = time.perf_counter()
    timings: dict = {}
    sums = None
    if cluster and cfg.samples in pipes:
        keep = bool(cfg.compare or classes is not None)  # FID alone needs only the features
        runs.append(cluster_images(cluster, pipes[cfg.samples], cfg, progress, timings, "generate_samples",
                                   features=bool(cfg.reference), keep_images=keep))
        images, sums = runs[-1].images, runs[-1].features
        if sums is not None:
            timings["features"] = dict(seconds=round(runs[-1].stats["feature_seconds"], 2),
                                       device=cfg.feature_device, summed_over_workers=True)
    else:
        images = images_of(cfg.samples, pipes.get(cfg.samples), cfg, progress, timings, "generate_samples")
    count = len(images) if images is not None else cfg.num_images
    result = dict(samples=cfg.samples, num_images=count, config=cfg.to_dict())
    if cfg.compare:
        if cluster and cfg.compare in pipes:
            runs.append(cluster_images(cluster, pipes[cfg.compare], cfg, progress, timings, "generate_compare",
                                       features=False))
            compare = runs[-1].images
        else:
            compare = images_of(cfg.compare, pipes.get(cfg.compare), cfg, progress, timings, "generate_compare")
        result["drift"] = drift(compare, images)
    if cfg.reference:
        if count < 2:
            raise DataError(f"FID needs at least 2 images, {cfg.samples} holds {count}")
        ref = reference_stats(cfg.reference, cfg.feature_device)
        if sums is None:
            t_feat = time.perf_counter()
            with bar(progress, len(images), "inception", "img") as b:
                sums = inception_features(images, device=cfg.feature_device, progress=b.update)
            timings["features"] = dict(seconds=round(time.perf_counter() - t_feat, 2), device=cfg.feature_device)
        result.update(scores(sums, ref))
        result["inception_score"] = None
        result["inception_score_note"] = "the FID Inception weights hold no classifier head, so IS is not computed"
    if classes is not None:
        result["class_accuracy"] = class_accuracy(cfg.classifier, images, classes[:len(images)])
    result["timings"] = timings
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if cfg.output:
        with atomic_output(cfg.output, cfg.overwrite, kind="file") as tmp:
            Path(tmp).write_text(json.dumps(result, indent=2))
    return result

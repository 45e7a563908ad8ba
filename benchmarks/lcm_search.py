"""Latent consistency distillations side by side on one GPU, every network each writes scored at the
deployed few steps: the search behind edm-cifar10-lcm's training (docs/experiments/2026-12-07-lcm-continued.md).

    python benchmarks/lcm_search.py --data cifar10-train-jpeg.tar.gz --workdir W --minutes 6 \\
        --variant "warm25:init=edm-cifar10-lcm,lr=3e-5,warmup_steps=100,solver_steps=25" \\
        --variant "warm:init=edm-cifar10-lcm,lr=3e-5,warmup_steps=100" --output lcm-search.json

A variant is NAME:FIELD=VALUE,... over `edge_dm.jobs.training_lcm.LCMTrainConfig` (every run also
keeps an EMA 0.999 beside the 0.95 target network, --ema-decays). `train` starts the variants at
once, one process each (on --train-cores, so the rest of the CPU stays free for other work), and
waits; `score` exports each run's pipeline-* folders (EMAs and the online student) and evaluates
them with `edge-dm evaluate` at --num-images, --steps and each --guidance-scale (f32, the model
card's rule), with the shipped model (--baseline) beside them. `all` does both. --schedules scores each
network at other LCMScheduler schedules too (its `original_inference_steps`, which fixes the few
timesteps the deployed steps visit; `own` is the one its run saved). JSON: one row per network,
schedule and guidance scale, best FID first.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from _common import emit


def parse_variant(text: str) -> tuple[str, dict]:
    """'NAME:FIELD=VALUE,...' -> (NAME, {FIELD: VALUE}), numbers as numbers; unknown fields are an error."""
    from edge_dm.jobs.training_lcm import LCMTrainConfig

    name, _, rest = text.partition(":")
    known = {f.name for f in fields(LCMTrainConfig)} - {"data", "output"}
    changes = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in known:
            raise SystemExit(f"--variant {name}: unknown field {key!r}; fields: {', '.join(sorted(known))}")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        changes[key] = value
    if not name or "/" in name:
        raise SystemExit(f"--variant {text!r}: give NAME:FIELD=VALUE,...")
    return name, changes


def configs(args, variants: dict) -> dict:
    """NAME -> the variant's LCMTrainConfig, each validated here, before any run starts."""
    from edge_dm.jobs.training_lcm import LCMTrainConfig

    runs = Path(args.workdir) / "runs"
    out = {}
    for name, changes in variants.items():
        try:
            out[name] = LCMTrainConfig(data=args.data, output=str(runs / name), minutes=args.minutes,
                                       compile=args.compile, ema_decays=tuple(args.ema_decays), **changes)
        except (TypeError, ValueError) as e:  # edge-dm's ConfigError is a ValueError
            raise SystemExit(f"--variant {name}: {e}") from None
    return out


def train(args, cfgs: dict) -> list:
    """Every variant at once, one process each; returns their run records."""
    runs = Path(args.workdir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    cores = {int(c) for part in args.train_cores.split(",") for c in _span(part)} if args.train_cores else None
    procs = {}
    for name, config in cfgs.items():
        cfg = asdict(config)
        log = open(runs / f"{name}.log", "w")
        procs[name] = (subprocess.Popen([sys.executable, __file__, "train-one", json.dumps(cfg)], stdout=log,
                                        stderr=subprocess.STDOUT, preexec_fn=(lambda: os.sched_setaffinity(0, cores))
                                        if cores else None), log, cfg)
    records = []
    for name, (proc, log, cfg) in procs.items():
        rc = proc.wait()
        log.close()
        state = runs / name / "train_state.json"
        steps = json.loads(state.read_text())["step"] if state.is_file() else None
        records.append(dict(name=name, config=cfg, returncode=rc, steps=steps))
        print(f"{name}: rc {rc}, {steps} steps", file=sys.stderr)
    return records


def _span(part: str) -> range:
    lo, _, hi = part.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def saved_schedule(source: str) -> int:
    """The original_inference_steps of `source`'s LCMScheduler (a pipeline folder or a model name)."""
    from diffusers import LCMScheduler

    from edge_dm.models import resolve

    return LCMScheduler.from_pretrained(resolve(source), subfolder="scheduler").config.original_inference_steps


def with_schedule(source: str, steps: int, folder: Path) -> str:
    """A copy of `source`'s pipeline in `folder` whose LCMScheduler's original_inference_steps is `steps`."""
    from edge_dm.models import resolve

    if not (folder / "model_index.json").is_file():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(resolve(source), tmp)
        config = tmp / "scheduler" / "scheduler_config.json"
        config.write_text(json.dumps(dict(json.loads(config.read_text()), original_inference_steps=steps), indent=2))
        tmp.rename(folder)
    return str(folder)


def score_one(args, run: str, net: str, network: str, schedule: int, saved: int, guidance: float,
              prompts: tuple) -> dict:
    """One network's row at one schedule and guidance scale: exported (a copy with that schedule unless
    it is the saved one) and evaluated like the model card."""
    from edge_dm import jobs
    from edge_dm.configs import DeviceConfig, EvaluateConfig, ExportConfig, SamplingConfig

    t0 = time.perf_counter()
    work = Path(args.workdir)
    name = f"{run}-{net}".replace("/", "_")
    if schedule != saved:
        name = f"{name}-o{schedule}"
        network = with_schedule(network, schedule, work / "schedules" / name)
    bundle = work / "bundles" / name
    if not (bundle / "recipe.json").is_file():
        jobs.export(ExportConfig(model=network, output=str(bundle), overwrite=True))
    r = jobs.evaluate(EvaluateConfig(
        samples=str(bundle), reference=None if args.reference == "none" else args.reference,
        classifier=args.classifier, num_images=args.num_images,
        prompts=prompts, feature_device=args.feature_device,
        sampling=SamplingConfig(steps=args.steps, guidance_scale=guidance),
        runtime=DeviceConfig(precision_hint="f32")), progress=False)
    print(f"{run} {net} (schedule {schedule}, guidance {guidance}): FID {r.get('fid')} sFID {r.get('sfid')} "
          f"class accuracy {r['class_accuracy']['accuracy']:.4f}", file=sys.stderr)
    return dict(run=run, network=net, original_inference_steps=schedule, guidance_scale=guidance,
                fid=r.get("fid"), sfid=r.get("sfid"),
                class_accuracy=r["class_accuracy"]["accuracy"], by_class=r["class_accuracy"]["by_class"],
                seconds=round(time.perf_counter() - t0, 1))


def score(args) -> list:
    """(run, network, schedule, guidance, FID, sFID, class accuracy, seconds) of every pipeline-* folder
    and the baseline, at each of args.schedules (each once) and args.guidance_scale."""
    from edge_dm.data import read_prompts

    work = Path(args.workdir)
    candidates = [(p.parent.name, p.name.removeprefix("pipeline-"), str(p))
                  for p in sorted(work.glob("runs/*/pipeline-*")) if (p / "model_index.json").is_file()
                  and (not args.networks or p.name.removeprefix("pipeline-") in args.networks.split(","))]
    if args.baseline:
        candidates.insert(0, ("baseline", args.baseline, args.baseline))
    prompts = tuple(read_prompts(args.prompts))
    rows = []
    for run, net, network in candidates:
        saved = saved_schedule(network)
        for schedule in dict.fromkeys(saved if steps is None else steps for steps in args.schedules):  # 'own': saved
            for guidance in args.guidance_scale:
                rows.append(score_one(args, run, net, network, schedule, saved, guidance, prompts))
    return sorted(rows, key=lambda row: (row["fid"] is None, row["fid"] or 0.0, -row["class_accuracy"]))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "train-one":  # one variant, in its own process
        from edge_dm.jobs.training_lcm import LCMTrainConfig, train_lcm

        train_lcm(LCMTrainConfig(**json.loads(sys.argv[2])), log=lambda s: print(s, flush=True))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("stage", choices=["train", "score", "all"])
    p.add_argument("--workdir", required=True, help="runs/ and bundles/ go here")
    p.add_argument("--variant", action="append", default=[], help="NAME:FIELD=VALUE,... (repeat)")
    p.add_argument("--data", help="train: captioned images, as edge-dm train --data")
    p.add_argument("--minutes", type=float, default=6.0, help="train: each variant's wall time")
    p.add_argument("--ema-decays", type=float, nargs="+", default=[0.95, 0.999])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--train-cores", help="train: the CPUs the training processes may use, e.g. 0-3")
    p.add_argument("--networks", help="score: only these, e.g. online,0.95  [default: every one a run wrote]")
    p.add_argument("--baseline", default="edm-cifar10-lcm", help="score: the model to beat ('' for none)")
    p.add_argument("--schedules", default="own", help="score: LCMScheduler original_inference_steps to score each "
                   "network at, comma-separated ('own': its run's)")
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--guidance-scale", default="2", help="score: one or more, comma-separated")
    p.add_argument("--prompts", default="datasets/cifar10-prompts.txt")
    p.add_argument("--reference", default="cifar10-train", help="FID reference, or none")
    p.add_argument("--classifier", default="edm-cifar10-classifier")
    p.add_argument("--feature-device", default="openvino", help="where Inception runs: openvino, cpu, cuda")
    p.add_argument("--output")
    args = p.parse_args()
    try:
        args.schedules = [None if s == "own" else int(s) for s in args.schedules.split(",")]
    except ValueError:
        p.error(f"--schedules takes 'own' or whole numbers, comma-separated, got {args.schedules!r}")
    from edge_dm.configs import SamplingConfig
    from edge_dm.errors import ConfigError

    try:
        args.guidance_scale = list(dict.fromkeys(float(g) for g in args.guidance_scale.split(",")))
        for g in args.guidance_scale:
            SamplingConfig(steps=args.steps, guidance_scale=g)  # checked before any work
    except ConfigError as exc:  # a ValueError too: first
        p.error(f"--guidance-scale: {exc}")
    except ValueError:
        p.error(f"--guidance-scale takes numbers, comma-separated, got {args.guidance_scale!r}")
    if any(s is not None and s < args.steps for s in args.schedules):
        p.error(f"--schedules: each must be at least --steps ({args.steps}), got {args.schedules}")
    variants = dict(parse_variant(v) for v in args.variant)
    if args.stage != "score" and (not variants or not args.data):
        p.error("train needs --data and one or more --variant")
    cfgs = configs(args, variants) if args.stage != "score" else {}
    from edge_dm.jobs.timing import machine_info

    result = dict(recipe="lcm_search", argv=sys.argv[1:], machine=machine_info())
    if args.stage in ("train", "all"):
        result["runs"] = train(args, cfgs)
    if args.stage in ("score", "all"):
        result["rows"] = score(args)
    emit(result, args.output)


if __name__ == "__main__":
    main()

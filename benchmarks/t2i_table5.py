"""The text-to-image Table 5: fp32 against edge-dm's int8 calibrations and optimum-intel's own int8, on
the same prompts and seeds: FID, sFID, class accuracy, drift from fp32, UNet latency.

    python benchmarks/t2i_table5.py all --workdir W [--num-images 10000] [--output table5.json]
    python benchmarks/t2i_table5.py bundles --workdir W [--rows ...] [--seeds 0,1,2] [--target amx]
    python benchmarks/t2i_table5.py images  --workdir W [--rows ...] [--num-images 10000]
    python benchmarks/t2i_table5.py latency --workdir W [--rows ...] [--rounds 5] [--iterations 60]
    python benchmarks/t2i_table5.py scores  --workdir W [--output table5.json]

The stages can run on different machines (the folder W travels between them):
- `bundles` writes W/bundles/ROW for each row: `fp32` (`edge-dm export`, into the bundle cache, where
  `edge-dm quantize` reuses it for the next rows, and copied); `dntc`, `uniform`, `pipeline`
  (`edge-dm quantize --calibration KIND` with the card's guidance and steps, on --prompts, for
  --target; the same NNCF settings for all three; `pipeline` is every step of the first trajectories,
  optimum-intel's way, at the same N); `optimum-hybrid` and `optimum-int8` (optimum-intel's own API,
  `OVStableDiffusionPipeline.from_pretrained(..., quantization_config=...)` with
  `OVWeightQuantizationConfig(bits=8, quant_method="hybrid")` or `OVQuantizationConfig()`, its
  calibration on the same prompts and its own defaults otherwise; its UNet, text encoder and VAE
  decoder put into an edge-dm bundle, so its images come from the same loop, noise and prompts).
  A calibration seed s > 0 adds rows `dntc-s1`, ... (edge-dm's rows) and `optimum-hybrid-s1`, ...
  (torch's seed for optimum's calibration pipeline).
- A row may name variants after its base, each after a `+`: a component quantized besides the base
  row's UNet (`+vae-int8`, `+text-encoder-int8`, `+text-encoder-int8-weights`: what `edge-dm quantize
  --vae/--text-encoder` makes, calibrated alike, put beside the very same UNet), the float precision
  its images are made at (`+f32`, `+bf16`: INFERENCE_PRECISION_HINT for every component) and DeepCache
  (`+deepcache3`: cache interval 3 at cache branch 1; `+deepcache3b0`: at branch 0). `dntc+vae-int8`, `fp32+bf16`,
  `dntc+f32+deepcache3`.
- `images` generates --num-images images of each row with OpenVINO on this CPU (image i: seed i,
  prompt i cycling through --prompts; fp32 with INFERENCE_PRECISION_HINT f32, int8 rows at
  OpenVINO's default, as a user runs them), into W/images/ROW.K.npz (parts of --part-size images,
  so they can be carried back in pieces), with the generation time in W/images/ROW.json.
- `latency` times every row's UNet request for 1 and 16 images (2 samples each with guidance), LATENCY
  hint, rows in turns; the fp32 row at f32 and, where AMX runs it, bf16; into W/latency.json.
- `scores` computes, for every row with images: FID and sFID against --reference, class accuracy by
  --classifier, and paired drift (PSNR, SSIM) from the fp32 row's images, into one JSON.
JSON on stdout or in --output: one row per UNet, and the UNet latency. Backs
docs/experiments/2026-12-01-text-to-image-table5.md. Steps and guidance default to the model's own;
any text-to-image family runs (the few-step table: `--model edm-cifar10-lcm`, optimum-intel's rows
through OVLatentConsistencyModelPipeline, its calibration at that pipeline's default steps).
"""
import argparse
import json
import re
import sys
import time
from pathlib import Path

from _common import emit  # benchmarks/ is the script folder: run as python benchmarks/X.py

EDGE_ROWS = ("dntc", "uniform", "pipeline")
OPTIMUM_ROWS = ("optimum-hybrid", "optimum-int8")
ROWS = ("fp32",) + EDGE_ROWS + OPTIMUM_ROWS
COMPONENTS = {"vae-int8": ("vae_decoder", "int8"), "text-encoder-int8": ("text_encoder", "int8"),
              "text-encoder-int8-weights": ("text_encoder", "int8-weights")}  # variant -> (component, mode)
PRECISIONS = ("f32", "bf16")


def _sampling(a):
    from edge_dm.configs import SamplingConfig

    return SamplingConfig(steps=a.steps, guidance_scale=a.guidance_scale, seed=0)


def _prompt_file(a) -> str:
    """--prompts, or the shipped caption prompts."""
    from edge_dm.resources import shipped_dataset

    return a.prompts or str(shipped_dataset("cifar10-prompts.txt"))


def _prompts(a) -> list:
    from edge_dm.data import read_prompts

    return read_prompts(_prompt_file(a))


def _rows(a) -> list:
    rows = [r for r in a.rows.split(",") if r]
    for row in rows:
        _variants(row)  # exits naming what is unknown
    seeds = [int(s) for s in a.seeds.split(",")]
    return [r if s == 0 else f"{r}-s{s}" for s in seeds for r in rows if s == 0 or r.split("+")[0] != "fp32"]


def _split(row: str) -> tuple[str, int]:
    """(row without its calibration seed, the seed)."""
    base, _, seed = row.rpartition("-s")
    return (base, int(seed)) if base and seed.isdigit() else (row, 0)


def _variants(row: str) -> dict:
    """A row's parts: base row, calibration seed, components quantized besides the UNet, the float
    precision of its images (None: the row's default), DeepCache interval, the bundle it uses and
    the plain row's (base and seed)."""
    name, seed = _split(row)
    base, *variants = name.split("+")
    parts = dict(base=base, seed=seed, components=[], precision=None, cache_interval=1, cache_branch=1)
    for v in variants:
        cache = re.fullmatch(r"deepcache(\d+)(?:b(\d+))?", v)
        if v in COMPONENTS and base in EDGE_ROWS:
            parts["components"].append(v)
        elif v in PRECISIONS:
            parts["precision"] = v
        elif cache and int(cache.group(1)) > 1:
            parts["cache_interval"], parts["cache_branch"] = int(cache.group(1)), int(cache.group(2) or 1)
        else:
            raise SystemExit(f"row {row!r}: unknown variant {v!r}; a row is one of {', '.join(ROWS)}, then any of "
                             f"+{', +'.join(COMPONENTS)} (edge-dm's rows), +f32, +bf16, +deepcacheN[bB]")
    if base not in ROWS:
        raise SystemExit(f"unknown row {base!r}; choose from {', '.join(ROWS)}")
    suffix = f"-s{seed}" if seed else ""
    parts.update(plain=base + suffix, bundle="+".join([base] + parts["components"]) + suffix)
    return parts


def bundles(a) -> dict:
    """W/bundles/ROW for each row not there yet; returns {row: seconds it took}."""
    from edge_dm import jobs
    from edge_dm.configs import CalibrationConfig, ExportConfig, QuantizeConfig, QuantizeJobConfig

    out, took = Path(a.workdir) / "bundles", {}
    prompts = _prompt_file(a)
    todo = []
    for v in map(_variants, _rows(a)):
        if v["components"]:  # quantized beside the UNet of its base row, calibrated with the fp32 bundle
            todo += [_variants("fp32"), _variants(v["plain"])]
        todo.append(v)
    for v in todo:
        row, base, seed = v["bundle"], v["base"], v["seed"]
        if (out / row / "recipe.json").exists():
            continue
        t0 = time.perf_counter()
        if v["components"]:
            _with_components(a, v, out / row)
        elif base == "fp32":
            # into the bundle cache, where edge-dm quantize copies it instead of exporting again for each row
            jobs.export(ExportConfig(model=a.model, overwrite=True)).save_pretrained(out / row)
        elif base in EDGE_ROWS:
            sampling = _sampling(a).replace(seed=seed)
            cal = CalibrationConfig(kind=base, num_samples=a.num_samples, prompts=prompts, sampling=sampling)
            jobs.quantize(QuantizeJobConfig(model=a.model, output=str(out / row), calibration=cal, report_images=0,
                                            quantization=QuantizeConfig(target=a.target)), progress=False)
        else:
            _optimum(a, base, seed, out / row)
        took[row] = round(time.perf_counter() - t0, 1)
        print(f"{row}: {took[row]} s", file=sys.stderr)
    return took


def _with_components(a, v: dict, out: Path) -> None:
    """The bundle of v's base row with v's components quantized beside its very UNet, as `edge-dm
    quantize --vae/--text-encoder` quantizes them (same calibration prompts, sampling and seed)."""
    from edge_dm.bundle import Bundle
    from edge_dm.configs import CalibrationConfig, QuantizeConfig
    from edge_dm.jobs.quantization import quantize_component_as
    from edge_dm.models import load_model

    folder = Path(a.workdir) / "bundles"
    fp32 = Bundle.from_pretrained(folder / "fp32")
    bundle = Bundle.from_pretrained(folder / v["plain"])
    cal = CalibrationConfig(kind=v["base"], num_samples=a.num_samples, prompts=_prompt_file(a),
                            sampling=_sampling(a).replace(seed=v["seed"]))
    # the job's settings: the model's SmoothQuant alpha reaches its components too
    q = QuantizeConfig(target=a.target, smooth_quant_alpha=load_model(a.model).smooth_quant_alpha)
    modes = {}
    for variant in v["components"]:
        component, mode = COMPONENTS[variant]
        model = quantize_component_as(fp32, component, bundle.read_model(component), mode, cal, q)
        modes[component] = mode
        bundle = bundle.with_model(model, component, components=dict(modes))
    bundle.save_pretrained(out)


def _optimum(a, base: str, seed: int, out: Path) -> None:
    """optimum-intel's quantization of the pipeline through its API, put into an edge-dm bundle."""
    import tempfile

    import openvino as ov
    import optimum.intel
    import torch
    from optimum.intel import OVQuantizationConfig, OVWeightQuantizationConfig

    from edge_dm.bundle import Bundle
    from edge_dm.families.stable_diffusion import per_sample_timestep
    from edge_dm.models import resolve

    n, prompts = a.optimum_samples, _prompts(a)
    config = (OVWeightQuantizationConfig(bits=8, quant_method="hybrid", dataset=prompts, num_samples=n)
              if base == "optimum-hybrid" else OVQuantizationConfig(dataset=prompts, num_samples=n))
    bundle = Bundle.from_pretrained(Path(a.workdir) / "bundles" / "fp32")
    pipeline_class = getattr(optimum.intel, bundle.family.optimum_class)  # OVStableDiffusionPipeline, OVLatent...
    torch.manual_seed(seed)  # optimum's calibration pipeline draws its noise from torch's global generator
    pipe = pipeline_class.from_pretrained(resolve(a.model), export=True, compile=False, quantization_config=config)
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp)
        for component in ("unet", "text_encoder", "vae_decoder"):
            model = ov.Core().read_model(Path(tmp) / bundle.family.layout.components[component])
            model = per_sample_timestep(model) if component == "unet" else model
            bundle = bundle.with_model(model, component, kind="optimum-intel", precision="int8",
                                       optimum=dict(config=config.to_dict(), calibration_seed=seed))
        bundle.save_pretrained(out)


def images(a) -> dict:
    """W/images/ROW.K.npz and ROW.json for each row with a bundle and no images yet."""
    import numpy as np
    from tqdm import tqdm

    from edge_dm.bundle import Bundle
    from edge_dm.configs import DeviceConfig
    from edge_dm.data import cycled
    from edge_dm.jobs.timing import machine_info
    from edge_dm.pipeline import Pipeline

    folder = Path(a.workdir) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    sampling, prompts, done = _sampling(a), cycled(_prompts(a), a.num_images), {}
    for row in _rows(a):
        if (folder / f"{row}.json").exists():
            continue
        v = _variants(row)
        bundle = Bundle.from_pretrained(Path(a.workdir) / "bundles" / v["bundle"])
        hint = v["precision"] or ("f32" if v["base"] == "fp32" else None)
        pipe = Pipeline(bundle, DeviceConfig(batch_size=a.batch_size, precision_hint=hint))
        t0 = time.perf_counter()
        with tqdm(total=a.num_images, desc=row, unit="img") as bar:
            x = pipe.sample(a.num_images, sampling.replace(cache_interval=v["cache_interval"],
                                                           cache_branch=v["cache_branch"]), prompts, bar.update)
        seconds = time.perf_counter() - t0
        for k, s in enumerate(range(0, len(x), a.part_size)):
            np.savez_compressed(folder / f"{row}.{k}.npz", images=x[s:s + a.part_size],
                                seeds=np.arange(s, min(s + a.part_size, len(x))))
        info = dict(row=row, num_images=len(x), generate_s=round(seconds, 1), images_per_s=round(len(x) / seconds, 2),
                    batch_size=a.batch_size, precision_hint=hint or "default", cache_interval=v["cache_interval"],
                    cache_branch=v["cache_branch"],
                    machine=machine_info())
        (folder / f"{row}.json").write_text(json.dumps(info, indent=2))
        done[row] = info
    return done


def latency(a) -> dict:
    """Median ms of one UNet request on all cores (LATENCY hint) for 1 and 16 images (2 samples each
    with guidance), every row and hint compiled first, then timed in turns (--rounds of --iterations
    each) so that a drift of the machine's speed reaches every row alike. The fp32 row runs at f32,
    and at bf16 where AMX runs it (the float a user picks there); int8 rows at OpenVINO's default."""
    import numpy as np

    from edge_dm.bundle import Bundle
    from edge_dm.jobs.timing import example_inputs, machine_info
    from edge_dm.runtime import compile_model

    sampling, isa = _sampling(a), machine_info()["isa"]
    requests = {}
    for images in (1, 16):
        for row in dict.fromkeys(_variants(r)["bundle"] for r in _rows(a)):  # each bundle once
            bundle = Bundle.from_pretrained(Path(a.workdir) / "bundles" / row)
            model, c, s = bundle.read_model(), bundle.family.conditioning, bundle.sampling(sampling)
            per_image = c.net_batch(s)
            x = example_inputs(model, images, c.sample_shape(bundle, s), per_image)
            shapes = {k: v.shape[1:] for k, v in x.items()}  # all static, as the pipeline compiles it
            hints = (["f32"] + (["bf16"] if "amx_bf16" in isa else [])) if row == "fp32" else [None]
            for hint in hints:
                request = compile_model(model, "CPU", per_image * images, "LATENCY", hint,
                                        shapes=shapes).create_infer_request()
                for _ in range(20):  # warm-up
                    request.infer(x)
                requests[(images, row, hint or "default")] = (request, x, [])
    for _ in range(a.rounds):
        for request, x, times in requests.values():
            for _ in range(a.iterations):
                t0 = time.perf_counter()
                request.infer(x)
                times.append(time.perf_counter() - t0)
    rows = [dict(images=k[0], row=k[1], precision=k[2], median_ms=round(1e3 * float(np.median(v[2])), 3),
                 p10_ms=round(1e3 * float(np.percentile(v[2], 10)), 3),
                 p90_ms=round(1e3 * float(np.percentile(v[2], 90)), 3))
            for k, v in requests.items()]
    result = dict(machine=machine_info(), rounds=a.rounds, iterations=a.iterations, rows=rows)
    (Path(a.workdir) / "latency.json").write_text(json.dumps(result, indent=2))
    return result


def _load(folder: Path, row: str):
    import numpy as np

    parts = sorted(folder.glob(f"{row}.[0-9]*.npz"), key=lambda p: int(p.suffixes[-2][1:]))
    return np.concatenate([np.load(p)["images"] for p in parts]) if parts else None


def scores(a) -> dict:
    """FID/sFID, class accuracy and drift from fp32 of every row with images."""
    from edge_dm.bundle import Bundle
    from edge_dm.classifier import class_accuracy, classifier_config, named_classes
    from edge_dm.data import cycled
    from edge_dm.metrics import drift, inception_features, reference_stats
    from edge_dm.metrics import scores as fid
    from edge_dm.quantize import op_counts

    folder = Path(a.workdir) / "images"
    ref = None if a.reference == "none" else reference_stats(a.reference, a.feature_device)
    classes = named_classes(_prompts(a), classifier_config(a.classifier)[1]["classes"])
    fp32 = _load(folder, "fp32")
    result = []
    for row in _rows(a):
        x = _load(folder, row)
        if x is None:
            continue
        info = json.loads((folder / f"{row}.json").read_text())
        r = dict(row=row, num_images=len(x))
        if ref is not None:
            r.update(fid(inception_features(x, device=a.feature_device), ref))
        r["class_accuracy"] = class_accuracy(a.classifier, x, cycled(classes, len(x)))
        if fp32 is not None and row != "fp32":
            r["drift_from_fp32"] = drift(fp32[:len(x)], x[:len(fp32)])
        path = Path(a.workdir) / "bundles" / _variants(row)["bundle"]
        bundle = Bundle.from_pretrained(path) if path.exists() else None  # images may travel without it
        r.update(images=info, ops=op_counts(bundle.read_model()) if bundle else None,
                 calibration=bundle.recipe.get("calibration") if bundle else None,
                 optimum=bundle.recipe.get("optimum") if bundle else None,
                 components=bundle.recipe.get("components") if bundle else None)
        result.append(r)
        print(f"{row}: FID {r.get('fid', float('nan')):.2f} sFID {r.get('sfid', float('nan')):.2f} "
              f"class acc {r['class_accuracy']['accuracy']:.3f}", file=sys.stderr)
    timing = Path(a.workdir) / "latency.json"
    fp32_bundle = Path(a.workdir) / "bundles" / "fp32"
    sampling = Bundle.from_pretrained(fp32_bundle).sampling(_sampling(a)) if fp32_bundle.exists() else _sampling(a)
    return dict(model=a.model, steps=sampling.steps, guidance_scale=sampling.guidance_scale, reference=a.reference,
                classifier=a.classifier, rows=result,
                unet_latency=json.loads(timing.read_text()) if timing.exists() else None)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=("all", "bundles", "images", "latency", "scores"))
    p.add_argument("--workdir", required=True, help="bundles/ and images/ go here (the stages share it)")
    p.add_argument("--model", default="edm-cifar10-t2i")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--seeds", default="0", help="calibration seeds (0: the plain rows; s > 0: ROW-sS rows)")
    p.add_argument("--target", default="auto", help="edge-dm quantize --target (amx for the AMX Xeon)")
    p.add_argument("--num-samples", type=int, default=32, help="edge-dm calibration N (its default)")
    p.add_argument("--optimum-samples", type=int, default=200, help="optimum-intel's num_samples (its default)")
    p.add_argument("--prompts", help="prompt file (default: the shipped cifar10-prompts.txt)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's own, its card's)")
    p.add_argument("--guidance-scale", type=float, help="(default: the model's own, its card's)")
    p.add_argument("--num-images", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--part-size", type=int, default=5000, help="images per .npz part")
    p.add_argument("--iterations", type=int, default=60, help="latency: timed requests of a row in a round")
    p.add_argument("--rounds", type=int, default=5, help="latency: turns over all rows")
    p.add_argument("--reference", default="cifar10-train", help="as `edge-dm evaluate --reference`, or none")
    p.add_argument("--classifier", default="edm-cifar10-classifier")
    p.add_argument("--feature-device", default="openvino")
    p.add_argument("--output", help="write the scores JSON here instead of stdout")
    a = p.parse_args(argv)
    result = {}
    if a.stage in ("all", "bundles"):
        result["bundle_s"] = bundles(a)
    if a.stage in ("all", "images"):
        result["images"] = images(a)
    if a.stage in ("all", "latency"):
        result["latency"] = latency(a)
    if a.stage in ("all", "scores"):
        result = scores(a)
    return emit(result, a.output)


if __name__ == "__main__":
    main()

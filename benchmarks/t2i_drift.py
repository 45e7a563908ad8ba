"""Quantization options for the shipped text-to-image model, scored by what its images lose: each
variant is quantized by `edge-dm quantize` (edge_dm.jobs.quantize) once per calibration seed, and its
images are compared with the fp32 bundle's.

    python benchmarks/t2i_drift.py --only before,defaults --seeds 0,1,2 --output t2i-drift.json

Per variant and calibration seed: the quantize job's held-out error (`summary.mean_rel_l2`: guided
trajectories of the held-out prompts, seed 1,000,003), its wall time and what it kept in float; then
`--num-images` images (image i: seed 100 + i, caption i of datasets/cifar10-prompts.txt, cycling; the
model's DDIM 25, guidance 3) of the int8 bundle with its float rest at f32 and at bf16, each scored by
drift from the fp32 bundle's images at f32 (PSNR, SSIM) and by the class accuracy of the shipped
classifier (edm-cifar10-classifier, the class its caption names). The fp32 bundle at bf16 is scored
the same way, so the share of bf16 in the drift is known. Per variant: mean, population std, min and
max over seeds. JSON on stdout or in --output, rewritten after every row. About 30 s a row on a 2-core
Xeon with AMX (`split-max-drop` 2.5-3 minutes); `--only before --seeds 0 --num-images 4` checks it in
one. Backs docs/experiments/2026-12-06-t2i-int8-quality.md.
"""
import argparse
import contextlib
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

MODEL = "edm-cifar10-t2i"
IMAGE_SEED = 100  # images of held-out seeds: calibration lanes use seeds 0.., the held-out set 1,000,003
XATTN_KV = ("attn2.to_k", "attn2.to_v")  # the cross-attention MatMuls that read the text embeddings
IO = ("conv_in", "conv_out")  # the UNet's first and last convolution
# what `--max-drop 0.02` returned to float on calibration seed 0 (the `.a` halves of the two shortcuts as
# their whole convolutions): docs/experiments/2026-12-06-t2i-int8-quality.md
MAX_DROP_SET = (*IO, "down_blocks.0.resnets.0.conv2", "up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2",
                "up_blocks.2.resnets.0.conv_shortcut", "up_blocks.2.resnets.1.conv_shortcut")
# name -> QuantizeConfig (algorithm) options; `before`: the family's defaults before 2026-12-06, spelled out
VARIANTS = {
    "before": dict(split_shortcut=False, keep_float=()),
    "defaults": {},  # edge-dm's defaults of the checkout that runs this
    "split": dict(split_shortcut=True, keep_float=()),
    "split-sq-off": dict(split_shortcut=True, keep_float=(), smooth_quant_alpha=-1),
    "split-sq-0.5": dict(split_shortcut=True, keep_float=(), smooth_quant_alpha=0.5),
    "split-model-type-none": dict(split_shortcut=True, keep_float=(), model_type="none"),
    "split-performance": dict(split_shortcut=True, keep_float=(), preset="performance"),
    "split-xattn-kv-float": dict(split_shortcut=True, keep_float=XATTN_KV),
    "split-io-float": dict(split_shortcut=True, keep_float=IO),
    "split-io-temb-float": dict(split_shortcut=True, keep_float=(*IO, "time_emb")),
    "split-io-float-sq-off": dict(split_shortcut=True, keep_float=IO, smooth_quant_alpha=-1),
    "split-io-xattn-kv-float": dict(split_shortcut=True, keep_float=(*IO, *XATTN_KV)),
    "io-float": dict(split_shortcut=False, keep_float=IO),
    "split-io-float-sq-0.5": dict(split_shortcut=True, keep_float=IO, smooth_quant_alpha=0.5),
    "split-io-xattn-kv-float-sq-off": dict(split_shortcut=True, keep_float=(*IO, *XATTN_KV), smooth_quant_alpha=-1),
    "io-float-sq-off": dict(split_shortcut=False, keep_float=IO, smooth_quant_alpha=-1),
    "split-max-drop-set": dict(split_shortcut=True, keep_float=MAX_DROP_SET),
    "split-max-drop-set-sq-0.5": dict(split_shortcut=True, keep_float=MAX_DROP_SET, smooth_quant_alpha=0.5),
    "max-drop-set": dict(split_shortcut=False, keep_float=MAX_DROP_SET),
    "split-max-drop": dict(split_shortcut=True, keep_float=(), max_drop=0.02, smooth_quant_alpha=-1),
}
METRICS = ("mean_rel_l2", "psnr_f32", "psnr_bf16", "class_acc_f32", "class_acc_bf16", "quantize_s")


def _log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def spread(values: list) -> dict:
    return dict(mean=round(statistics.fmean(values), 5), std=round(statistics.pstdev(values), 5),
                min=min(values), max=max(values))


@contextlib.contextmanager
def exported_ir_hook(split: bool):
    """While quantizing: the fp32 export rewritten by the family's `ir_for_quantization` (the IR shortcut
    split of the stable-diffusion family), where edge_dm.jobs.quantization does not call it itself yet.
    Applies the call the job is to make right after its fp32 export; nothing where the job makes it."""
    from edge_dm.jobs import quantization

    if "ir_for_quantization" in inspect.getsource(quantization):
        yield
        return
    export = quantization._fp32_export

    def export_then_rewrite(m, folder):
        fields, fp32 = export(m, folder)
        fp32, rewritten = m.family.ir_for_quantization(fp32, split)
        return {**fields, **rewritten}, fp32

    quantization._fp32_export = export_then_rewrite
    try:
        yield
    finally:
        quantization._fp32_export = export


def scored(images, reference, class_names, classifier) -> dict:
    from edge_dm.classifier import class_accuracy
    from edge_dm.metrics import drift

    d, accuracy = drift(reference, images), class_accuracy(classifier, images, class_names)["accuracy"]
    return dict(psnr=d["psnr_db"], ssim=d["ssim"], class_acc=round(accuracy, 4))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="before,defaults", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", default="0,1,2", help="calibration seeds (quantize's --seed), comma-separated")
    ap.add_argument("--num-samples", type=int, default=32, help="calibration set size N (quantize's default: 32)")
    ap.add_argument("--num-images", type=int, default=16)
    ap.add_argument("--max-drop", type=float, help="the budget of the split-max-drop variant (default 0.02)")
    ap.add_argument("--workdir", help="where the int8 bundles go (default: a temporary folder, emptied as it goes)")
    ap.add_argument("--output")
    a = ap.parse_args(argv)
    names = a.only.split(",")
    if set(names) - set(VARIANTS):
        ap.error(f"unknown variants {sorted(set(names) - set(VARIANTS))}; known: {', '.join(VARIANTS)}")

    import shutil

    from edge_dm import jobs
    from edge_dm.bundle import Bundle, BundleError
    from edge_dm.classifier import SHIPPED, classifier_config, named_classes
    from edge_dm.configs import (
        CalibrationConfig,
        DeviceConfig,
        ExportConfig,
        QuantizeConfig,
        QuantizeJobConfig,
        SamplingConfig,
    )
    from edge_dm.data import cycled, read_prompts
    from edge_dm.families import get
    from edge_dm.jobs.timing import machine_info
    from edge_dm.pipeline import Pipeline
    from edge_dm.resources import shipped_dataset

    prompts_file = str(shipped_dataset("cifar10-prompts.txt"))
    prompts = cycled(read_prompts(prompts_file), a.num_images)
    classifier, config = classifier_config(SHIPPED)
    classes = named_classes(prompts, config["classes"])
    try:
        fp32 = Bundle.from_pretrained(MODEL, "fp32")
    except BundleError:
        fp32 = jobs.export(ExportConfig(model=MODEL))
    images = SamplingConfig(seed=IMAGE_SEED)  # the model's own steps and guidance

    def sample(bundle, hint):
        return Pipeline(bundle, DeviceConfig(precision_hint=hint, batch_size=8)).sample(a.num_images, images, prompts)

    reference = sample(fp32, "f32")
    result = dict(recipe="benchmarks/t2i_drift.py", argv=sys.argv[1:] if argv is None else argv, machine=machine_info(),
                  model=MODEL, num_images=a.num_images, image_seeds=[IMAGE_SEED, IMAGE_SEED + a.num_images - 1],
                  prompts=prompts_file, num_samples=a.num_samples,
                  fp32=dict(f32=scored(reference, reference, classes, classifier),
                            bf16=scored(sample(fp32, "bf16"), reference, classes, classifier)),
                  variants={})
    _log("fp32", result["fp32"])
    save = lambda: emit(result, a.output) if a.output else None  # noqa: E731
    work = Path(a.workdir or tempfile.mkdtemp(prefix="edge-dm-t2i-drift-"))
    for name in names:
        options = dict(VARIANTS[name])
        if "max_drop" in options and a.max_drop is not None:
            options["max_drop"] = a.max_drop
        q = QuantizeConfig(**options)
        rows = []
        for seed in (int(s) for s in a.seeds.split(",")):
            cfg = QuantizeJobConfig(model=MODEL, output=str(work / f"{name}-s{seed}"), overwrite=True, quantization=q,
                                    report_images=0,
                                    calibration=CalibrationConfig(num_samples=a.num_samples, prompts=prompts_file,
                                                                  sampling=SamplingConfig(seed=seed)))
            t0 = time.perf_counter()
            with exported_ir_hook(get("stable-diffusion").policy.splits(q)):
                int8, summary = jobs.quantize(cfg, progress=False)
            row = dict(seed=seed, quantize_s=round(time.perf_counter() - t0, 1), mean_rel_l2=summary["mean_rel_l2"],
                       rel_l2={e["t"]: e["rel_l2"] for e in summary["noise_prediction_rel_l2"]},
                       fake_quantize=summary["ops"]["fake_quantize"], split_convs=int8.recipe.get("split_convs"),
                       kept_float=int8.recipe.get("kept_float"), target=int8.recipe.get("target"))
            if "accuracy_control" in summary:
                row["accuracy_control"] = summary["accuracy_control"]
            for hint in ("f32", "bf16"):
                s = scored(sample(int8, hint), reference, classes, classifier)
                row.update({f"psnr_{hint}": s["psnr"], f"ssim_{hint}": s["ssim"], f"class_acc_{hint}": s["class_acc"]})
            rows.append(row)
            _log(name, {k: v for k, v in row.items() if k not in ("rel_l2", "accuracy_control")})
            if not a.workdir:
                shutil.rmtree(int8.path, ignore_errors=True)
            result["variants"][name] = dict(options=options, rows=rows,
                                            **{m: spread([r[m] for r in rows]) for m in METRICS})
            save()
    return emit(result, a.output)


if __name__ == "__main__":
    main()

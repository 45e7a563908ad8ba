"""The `edge-dm` command: each command parses options, builds a config, calls one library function
and prints the result. Library errors (edge_dm.errors) become one-line click errors, exit code 1."""
from __future__ import annotations

import functools
import json

import click

from edge_dm.configs import DEFAULT_MODEL, MODEL_TYPES, OVERFLOW_FIXES, PRESETS, RANGE_ESTIMATORS


def library_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from edge_dm.errors import EdgeDMError

        try:
            return fn(*args, **kwargs)
        except EdgeDMError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.Abort() from None
    return wrapper


model_option = click.option("--model", default=DEFAULT_MODEL, show_default=True,
                            help="registry name, Hugging Face id, diffusers folder or bundle")
overwrite_option = click.option("--overwrite", is_flag=True, help="replace an existing, non-empty output folder")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-dm")
def main():
    """Post-training int8 quantization of diffusion models for Intel hardware (NNCF + OpenVINO)."""


@main.command()
@library_errors
def models():
    """List the registry names and where each model comes from."""
    from edge_dm.models import REGISTRY

    for e in REGISTRY.values():
        click.echo(f"{e.name:18s} {e.source:28s} {e.description}")


@main.command()
@library_errors
def devices():
    """List the OpenVINO devices here and their capabilities."""
    from edge_dm.runtime import device_capabilities

    for d in device_capabilities():
        flags = " ".join(k.upper() for k in ("int8", "bf16", "fp16") if d[k])
        click.echo(f"{d['device']:8s} {d['name']}  [{flags}]  {', '.join(d['capabilities'])}")


@main.command()
@model_option
@click.option("--output", type=click.Path(), help="bundle folder (default: the edge-dm bundle cache)")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@overwrite_option
@library_errors
def export(model, output, precision, overwrite):
    """Convert a model's UNet to an OpenVINO IR bundle."""
    from edge_dm.configs import ExportConfig
    from edge_dm.export import export as run

    b = run(ExportConfig(model=model, output=output, precision=precision, overwrite=overwrite))
    click.echo(f"wrote {b.precision} bundle {b.path} ({b.size_bytes() / 1e6:.1f} MB)")


def cache_options(fn):
    """DeepCache options, shared by generate and evaluate."""
    fn = click.option("--cache-branch", type=int, default=1, show_default=True,
                      help="DeepCache: UNet levels the cheap steps still run (1: the full-resolution one)")(fn)
    return click.option("--cache-interval", type=int, default=1, show_default=True,
                        help="DeepCache: run the whole UNet every N-th step and reuse its deep features "
                             "in between (1: off)")(fn)


@main.command()
@model_option
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device: CPU, GPU, NPU, AUTO, MULTI:...")
@click.option("--num-images", type=int, default=16, show_default=True)
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--scheduler", default="ddim", show_default=True, help="ddim, ddpm, dpm-solver, euler")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="images per UNet request")
@click.option("--parallel", type=int, default=None,
              help="batches in flight at once, one infer request each (default: the device's optimal number)")
@click.option("--output", type=click.Path(), default="samples", show_default=True)
@click.option("--precision-hint", default=None, help="OpenVINO INFERENCE_PRECISION_HINT (f32, bf16, f16)")
@cache_options
@overwrite_option
@library_errors
def generate(**kwargs):
    """Generate images with a bundle (default: the int8 bundle of --model) on an OpenVINO device."""
    from edge_dm.configs import GenerateConfig
    from edge_dm.runtime import generate as run

    r = run(GenerateConfig(**kwargs))
    click.echo(f"{r['images']} images -> {r['output']}  ({r['precision']} on {r['device']})")
    click.echo(f"UNet {r['unet_ms_per_call']:.2f} ms/call ({r['parallel']} in flight), {r['images_per_s']:.2f} images/s")


@main.command()
@click.option("--data", required=True, type=click.Path(), help="image folder or tar(.gz), e.g. CIFAR-10")
@click.option("--output", required=True, type=click.Path())
@click.option("--minutes", type=float, default=19.0, show_default=True, help="wall-time budget of this call")
@click.option("--batch-size", type=int, default=512, show_default=True)
@click.option("--lr", type=float, default=4e-4, show_default=True)
@click.option("--warmup-steps", type=int, default=1000, show_default=True)
@click.option("--dropout", type=float, default=0.0, show_default=True)
@click.option("--init", type=click.Path(),
              help="start from this UNet folder (fresh optimizer); a deeper one gives its blocks by position")
@click.option("--teacher", type=click.Path(), help="distil: regress onto this UNet folder's noise prediction")
@click.option("--distill", type=float, default=1.0, show_default=True,
              help="weight of the teacher's prediction in the target (the rest: the drawn noise)")
@click.option("--channels", default="64,128,128,128", show_default=True, help="UNet block_out_channels")
@click.option("--layers-per-block", type=int, default=2, show_default=True)
@click.option("--attention-level", default="1", show_default=True,
              help="the level with self-attention (0 = full resolution), or 'none'")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the UNet (CUDA)")
@library_errors
def train(data, output, minutes, batch_size, lr, warmup_steps, dropout, init, teacher, distill, channels,
          layers_per_block, attention_level, compile_):
    """Train a small DDPM (resumes from OUTPUT/checkpoint.pt)."""
    from edge_dm.train import TrainConfig, attention_level as level, train as run

    cfg = TrainConfig(data=data, output=output, minutes=minutes, batch_size=batch_size, lr=lr,
                      warmup_steps=warmup_steps, dropout=dropout, init=init, teacher=teacher, distill=distill,
                      compile=compile_,
                      block_out_channels=_int_list(channels, "--channels"), layers_per_block=layers_per_block,
                      attention_level=level(attention_level))
    click.echo(f"EMA model: {run(cfg, log=click.echo)}")


def _int_list(text: str, option: str) -> tuple:
    from edge_dm.errors import ConfigError

    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} must be integers separated by commas, got {text!r}") from None


def _print_json(obj):
    click.echo(json.dumps(obj, indent=2, default=str))


@main.command()
@model_option
@click.option("--output", type=click.Path(), help="int8 bundle folder (default: where `generate` finds it)")
@overwrite_option
@click.option("--calibration", "kind", default="dntc", show_default=True,
              help="dntc, uniform, fixed, noise or forward (needs --data)")
@click.option("--mu", type=float, default=400.0, show_default=True, help="DNTC mean, in training timesteps")
@click.option("--sigma", type=float, default=400.0, show_default=True, help="DNTC std, in training timesteps")
@click.option("--num-samples", type=int, default=32, show_default=True, help="calibration samples N (PTQ4DM: 1024)")
@click.option("--samples-per-trajectory", type=int, default=16, show_default=True,
              help="samples one FP trajectory serves (1: a trajectory per sample)")
@click.option("--fixed-t", type=int, default=None, help="timestep of --calibration fixed (default: mu)")
@click.option("--steps", type=int, default=100, show_default=True, help="sampler steps of deployment")
@click.option("--scheduler", default="ddim", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data", type=click.Path(), help="images for --calibration forward")
@click.option("--calibration-set", type=click.Path(), help="reuse a saved calibration.npz")
@click.option("--mode", type=click.Choice(["int8", "weights"]), default="int8", show_default=True)
@click.option("--preset", type=click.Choice(PRESETS), default="mixed", show_default=True)
@click.option("--model-type", type=click.Choice(MODEL_TYPES), default="transformer", show_default=True)
@click.option("--bias-correction", type=click.Choice(["fast", "full"]), default="fast", show_default=True)
@click.option("--smooth-quant-alpha", type=float, default=None)
@click.option("--subset-size", type=int, default=None)
@click.option("--ignore-name", multiple=True)
@click.option("--ignore-pattern", multiple=True)
@click.option("--ignore-type", multiple=True)
@click.option("--range-estimator", type=click.Choice(RANGE_ESTIMATORS), default="minmax", show_default=True)
@click.option("--overflow-fix", type=click.Choice(OVERFLOW_FIXES), default="enable", show_default=True,
              help="7-bit weights against int8 overflow on CPUs without VNNI (NNCF)")
@click.option("--keep-float", multiple=True, default=("conv_in", "conv_out", "time_emb"), show_default=True,
              help="UNet modules left in float (repeat the option; 'none' quantizes them all)")
@click.option("--eval-trajectories", type=int, default=4, show_default=True)
@library_errors
def quantize(model, output, overwrite, kind, mu, sigma, num_samples, samples_per_trajectory, fixed_t, steps,
             scheduler, seed, data, calibration_set, mode, preset, model_type, bias_correction,
             smooth_quant_alpha, subset_size, ignore_name, ignore_pattern, ignore_type, range_estimator,
             overflow_fix, keep_float, eval_trajectories):
    """Calibrate (DNTC by default) and quantize a model's UNet to an int8 OpenVINO bundle."""
    from edge_dm.configs import CalibrationConfig, QuantizeConfig
    from edge_dm.quantize import quantize as run

    cal = CalibrationConfig(kind=kind, num_samples=num_samples, mu=mu, sigma=sigma, fixed_t=fixed_t, steps=steps,
                            scheduler=scheduler, seed=seed, samples_per_trajectory=samples_per_trajectory,
                            data=data)
    cfg = QuantizeConfig(model=model, output=output, overwrite=overwrite, calibration=cal,
                         calibration_set=calibration_set, mode=mode, preset=preset, model_type=model_type,
                         fast_bias_correction=bias_correction == "fast", smooth_quant_alpha=smooth_quant_alpha,
                         subset_size=subset_size, ignored_names=ignore_name, ignored_patterns=ignore_pattern,
                         ignored_types=ignore_type, range_estimator=range_estimator,
                         overflow_fix=overflow_fix, eval_trajectories=eval_trajectories,
                         keep_float=tuple(n for n in keep_float if n != "none"))
    bundle, s = run(cfg)
    click.echo(f"int8 bundle: {bundle.path}")
    click.echo(f"calibration {s['calibration_s']:.1f} s ({s['calibration_samples']} samples, mean t "
               f"{s['calibration_t_mean']}), quantization {s['quantization_s']:.1f} s")
    click.echo(f"quantized ops: {s['ops']['fake_quantize']} FakeQuantize, {s['ops']['int8_constants']} int8 "
               f"constants; IR {s['ir_bytes_fp32'] / 1e6:.1f} MB fp32 -> {s['ir_bytes_int8'] / 1e6:.1f} MB int8")
    click.echo("int8 vs fp32 noise prediction, relative L2 by timestep (held-out trajectories):")
    click.echo("  " + "  ".join(f"t={e['t']}:{e['rel_l2']:.3f}" for e in s["noise_prediction_rel_l2"]))


@main.command()
@click.option("--samples", required=True, help="image folder, or a bundle to generate --num-images from")
@click.option("--reference", help="FID reference: stats .npz, cifar10-train (shipped), or image folder / tar (stats cached)")
@click.option("--compare", help="paired mode: a second bundle or folder with the same seeds (e.g. fp32)")
@click.option("--num-images", type=int, default=1000, show_default=True)
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device for generation")
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--scheduler", default="ddim", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="images per UNet request")
@click.option("--parallel", type=int, default=None,
              help="batches in flight at once, one infer request each (default: the device's optimal number)")
@click.option("--feature-device", default="openvino", show_default=True,
              help="where Inception runs: openvino (CPU, f32) or a torch device (cpu, cuda)")
@click.option("--output", type=click.Path(), help="write the results as JSON here")
@cache_options
@library_errors
def evaluate(**kwargs):
    """Sample quality: FID and sFID against a reference, and int8-vs-fp32 drift (PSNR, SSIM)."""
    from edge_dm.configs import EvaluateConfig
    from edge_dm.evaluate import evaluate as run

    r = run(EvaluateConfig(**kwargs))
    for key in ("fid", "sfid"):
        if key in r:
            click.echo(f"{key.upper():5s} {r[key]:.3f}  ({r['num_images']} images)")
    if "drift" in r:
        d = r["drift"]
        click.echo(f"drift PSNR {d['psnr_db']:.2f} dB, SSIM {d['ssim']:.4f}, mean |diff| {d['mean_abs_diff']:.2f}/255")
    if "fid" in r:
        click.echo("IS    n/a  (" + r["inception_score_note"] + ")")
    for what, tm in r["timings"].items():
        rate = f", {tm['images_per_s']:.1f} images/s" if "images_per_s" in tm else ""
        click.echo(f"time  {what} {tm['seconds']:.1f} s{rate}")


@main.command()
@model_option
@click.option("--device", default="CPU", show_default=True)
@click.option("--output", type=click.Path(), default="benchmark", show_default=True)
@overwrite_option
@click.option("--int8", "int8_bundle", help="int8 bundle (default: the model's, quantized if missing)")
@click.option("--iterations", type=int, default=50, show_default=True)
@click.option("--batch-sizes", default="1,8,32", show_default=True, help="throughput sweep, comma-separated")
@click.option("--steps", type=int, default=20, show_default=True, help="DDIM steps of the end-to-end run")
@click.option("--images", type=int, default=4, show_default=True, help="images of the end-to-end run")
@click.option("--no-torch", is_flag=True, help="skip the torch eager baseline")
@click.option("--min-int8-speedup", type=float, default=None, help="fail below this int8 / OV fp32 ratio")
@library_errors
def benchmark(model, device, output, overwrite, int8_bundle, iterations, batch_sizes, steps, images, no_torch,
              min_int8_speedup):
    """Speed side by side: torch fp32, OpenVINO fp32/bf16/fp16 and int8, as ratios from one run."""
    from edge_dm.benchmark import benchmark as run, markdown
    from edge_dm.configs import BenchmarkConfig

    sizes = _int_list(batch_sizes, "--batch-sizes")
    cfg = BenchmarkConfig(model=model, device=device, output=output, overwrite=overwrite, int8=int8_bundle,
                          iterations=iterations, batch_sizes=sizes, steps=steps, images=images,
                          torch_baseline=not no_torch, min_int8_speedup=min_int8_speedup)
    click.echo(markdown(run(cfg, log=lambda s: click.echo(s, err=True))))

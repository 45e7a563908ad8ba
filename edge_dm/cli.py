"""The `edge-dm` command: each command parses options, builds a config, calls one library function
and prints the result. Library errors (edge_dm.errors) become one-line click errors (exit code 1);
usage errors exit 2, Ctrl-C and SIGTERM 130. Option defaults come from the configs (edge_dm.configs)."""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import click

# diffusers logs at import time (e.g. "Multiple distributions found for package optimum", because
# optimum-intel also provides `optimum`): the CLI prints edge-dm's lines, not its dependencies' notes
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from edge_dm import jobs  # noqa: E402
from edge_dm.configs import (  # noqa: E402
    CALIBRATION_KINDS,
    COMPONENT_MODES,
    DEFAULT_MODEL,
    PRECISIONS,
    QUANTIZE_MODES,
    SCHEDULERS,
    BenchmarkConfig,
    CalibrationConfig,
    ClusterConfig,
    DeviceConfig,
    EvaluateConfig,
    ExportConfig,
    GenerateConfig,
    QuantizeConfig,
    QuantizeJobConfig,
    SamplingConfig,
    default,
)
from edge_dm.data import read_prompts  # noqa: E402
from edge_dm.errors import ConfigError, EdgeDMError  # noqa: E402
from edge_dm.jobs.summary import markdown  # noqa: E402
from edge_dm.jobs.sweep import SweepConfig, load_spec  # noqa: E402
from edge_dm.jobs.training import TrainConfig  # noqa: E402
from edge_dm.jobs.training import attention_level as parse_attention_level  # noqa: E402
from edge_dm.jobs.training_lcm import LCMTrainConfig, train_lcm  # noqa: E402
from edge_dm.jobs.training_t2i import STAGES as T2I_STAGES  # noqa: E402
from edge_dm.jobs.training_t2i import TextToImageTrainConfig, train_text_to_image  # noqa: E402
from edge_dm.models import REGISTRY  # noqa: E402
from edge_dm.outputs import clean_scratch, install_signal_handlers  # noqa: E402
from edge_dm.runtime import device_capabilities  # noqa: E402
from edge_dm.targets import TARGETS  # noqa: E402

T2I_ONLY = ("cross_attention_levels", "vae_channels", "text_width", "text_layers", "empty_caption_rate",
            "classifier_channels", "eval_data")
# library parameters whose option is named otherwise than the parameter
FLAGS = {"block_out_channels": "--channels", "fast_bias_correction": "--bias-correction", "model": "--model",
         "samples": "--samples", "output": "--output", "overwrite": "--overwrite", "init": "--init"}


def _flag(param: str) -> str:
    """The current command's option for a library parameter name (its Python name where none)."""
    ctx = click.get_current_context(silent=True)
    for p in ctx.command.params if ctx else ():
        if p.name == param and p.opts[0].startswith("--"):
            return p.opts[0]
    return FLAGS.get(param, param)


def library_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        install_signal_handlers()
        clean_scratch()  # what killed runs left in edge-dm's scratch folder
        try:
            return fn(*args, **kwargs)
        except EdgeDMError as exc:
            raise click.ClickException(exc.render(_flag)) from None
        except KeyboardInterrupt:
            click.echo("\nAborted: nothing was written.", err=True)
            raise SystemExit(130) from None
    return wrapper


def _pick(cls, kwargs: dict) -> dict:
    """The options in `kwargs` that are fields of the config class `cls` (removed from kwargs)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: kwargs.pop(k) for k in list(kwargs) if k in names}


def _options(*decorators):
    def apply(fn):
        for d in reversed(decorators):
            fn = d(fn)
        return fn
    return apply


def _opt(cls, name: str, *flags, **kw):
    """A click option for config field `name`, with the field's default."""
    flag = flags or (f"--{name.replace('_', '-')}",)
    return click.option(*flag, name, default=default(cls, name), show_default=True, **kw)


model_option = click.option("--model", default=DEFAULT_MODEL, show_default=True,
                            help="registry name (edge-dm models), Hugging Face id, or diffusers folder")
bundle_option = click.option("--model", default=DEFAULT_MODEL, show_default=True,
                             help="a bundle folder, or a model whose bundle edge-dm made (quantize / export)")
overwrite_option = click.option("--overwrite", is_flag=True,
                                help="replace an existing output that edge-dm wrote")

image_sampling = _options(
    _opt(SamplingConfig, "scheduler", type=click.Choice(list(SCHEDULERS)), help="[default: the model's]"),
    _opt(SamplingConfig, "steps", type=int, help="denoising steps  [default: the model's]"),
    _opt(SamplingConfig, "seed", type=int, help="image i comes from seed + i"),
    _opt(SamplingConfig, "guidance_scale", type=float,
         help="text-to-image: classifier-free guidance, 1 for none  [default: the model's]"),
    _opt(SamplingConfig, "height", type=int, help="text-to-image: image height in pixels  [default: the model's]"),
    _opt(SamplingConfig, "width", type=int, help="text-to-image: image width in pixels  [default: the model's]"),
    _opt(SamplingConfig, "negative_prompt", help="text-to-image: what guidance steers away from"),
)
cache_options = _options(
    _opt(SamplingConfig, "cache_interval", type=int,
         help="DeepCache: run the whole UNet every N-th step and reuse its deep features between (1: off)"),
    _opt(SamplingConfig, "cache_branch", type=int, help="DeepCache: UNet levels the cheap steps still run "
         "(0: only the last up layer, DeepCache's own setting for Stable Diffusion)  "
         "[default: the model's, 0]"),
)
device_options = _options(
    _opt(DeviceConfig, "device", help="OpenVINO device: CPU, GPU, NPU, AUTO, MULTI:..."),
    _opt(DeviceConfig, "batch_size", type=int, help="images per UNet request"),
    _opt(DeviceConfig, "parallel", type=int, help="batches in flight, one infer request each "
                                                  "(default: the device's optimal number)"),
    _opt(DeviceConfig, "precision_hint", help="OpenVINO INFERENCE_PRECISION_HINT (f32, bf16, f16)"),
)
cluster_options = _options(
    click.option("--cluster", "address",
                 help="run on Ray: local (an embedded Ray on this machine) or a Ray cluster's address "
                      "(auto, ray://host:10001, host:6379)  [default: in this process, no Ray]"),
    _opt(ClusterConfig, "workers", type=int,
         help="--cluster: Ray workers, each holding the compiled bundle  [default: as many as the cluster can place]"),
    _opt(ClusterConfig, "cpus_per_worker", type=int,
         help="--cluster: CPUs each worker reserves and is pinned to  [default: 4, or a node's CPUs if fewer]"),
    _opt(ClusterConfig, "shard_images", type=int,
         help="--cluster: images per piece of work  [default: shrinking as the job ends, whole batches]"),
    _opt(ClusterConfig, "timeout_s", "--cluster-timeout", type=float,
         help="--cluster: seconds the cluster may take to answer, and its workers to start"),
)


def _cluster(kwargs: dict) -> ClusterConfig | None:
    """The ClusterConfig of --cluster and its options (removed from kwargs); None without --cluster."""
    options = _pick(ClusterConfig, kwargs)
    if options["address"] is None:
        given = [k for k in options if k != "address" and not _defaulted(k)]
        if given:
            raise ConfigError(f"`{given[0]}` is an option of `address`: give both, or neither")
        return None
    return ClusterConfig(**options)


prompt_options = _options(
    click.option("--prompt", "prompt", multiple=True,
                 help="text-to-image: the prompt (repeat: image i takes prompt i, cycling)"),
    click.option("--prompts", "prompts_file", type=click.Path(),
                 help="text-to-image: a file, one prompt a line (image i takes line i, cycling)"),
)


def _prompts(prompt: tuple, prompts_file: str | None) -> tuple:
    if prompt and prompts_file:
        raise ConfigError("give --prompt or --prompts FILE, not both")
    return tuple(read_prompts(prompts_file)) if prompts_file else tuple(prompt)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-dm")
def main():
    """Post-training int8 quantization of diffusion models for Intel hardware (NNCF + OpenVINO)."""


@main.command()
@library_errors
def models():
    """List the registry names and where each model comes from."""
    for e in REGISTRY.values():
        click.echo(f"{e.name:18s} {e.source:44s} {e.description}")


@main.command()
@library_errors
def devices():
    """List the OpenVINO devices here and their capabilities."""
    for d in device_capabilities():
        flags = " ".join(k.upper() for k in ("int8", "bf16", "fp16") if d[k])
        click.echo(f"{d['device']:8s} {d['name']}  [{flags}]  {', '.join(d['capabilities'])}")


@main.command()
@model_option
@click.option("--output", type=click.Path(), help="bundle folder (default: the edge-dm bundle cache)")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@overwrite_option
@library_errors
def export(**kwargs):
    """Convert a model to an OpenVINO IR bundle (fp32 or fp16)."""
    b = jobs.export(ExportConfig(**kwargs))
    click.echo(f"wrote {b.precision} bundle {b.path} ({b.size_bytes() / 1e6:.1f} MB)")


@main.command()
@bundle_option
@prompt_options
@_opt(GenerateConfig, "num_images", type=int)
@image_sampling
@cache_options
@device_options
@cluster_options
@click.option("--output", type=click.Path(), default=default(GenerateConfig, "output"), show_default=True)
@overwrite_option
@library_errors
def generate(prompt, prompts_file, **kwargs):
    """Generate images with a bundle (default: the int8 bundle of --model) on an OpenVINO device, in
    this process or sharded by seeds over a Ray cluster's workers (--cluster): the same files either way."""
    prompts = _prompts(prompt, prompts_file)
    if prompts_file and _defaulted("num_images"):  # one image a line unless told how many
        kwargs["num_images"] = len(prompts)
    cluster = _cluster(kwargs)
    sampling, runtime = SamplingConfig(**_pick(SamplingConfig, kwargs)), DeviceConfig(**_pick(DeviceConfig, kwargs))
    r = jobs.generate(GenerateConfig(**kwargs, prompts=prompts, sampling=sampling, runtime=runtime, cluster=cluster))
    click.echo(f"{r['images']} images -> {r['output']}  ({r['precision']} on {r['device']})")
    if "cluster" in r:
        c = r["cluster"]
        click.echo(f"Ray {c['address']}: {c['workers']} workers x {c['cpus_per_worker']} CPUs on {c['nodes']} nodes, "
                   f"{c['shards']} shards ({c['resumed_shards']} resumed, {c['retried_shards']} retried)")
    click.echo(f"UNet {r['unet_ms_per_call']:.2f} ms/call ({r['parallel']} in flight), "
               f"{r['images_per_s']:.2f} images/s")


def _defaulted(param: str) -> bool:
    """Whether the current command's option `param` was left at its default."""
    return click.get_current_context().get_parameter_source(param) == click.core.ParameterSource.DEFAULT


@main.command()
@click.option("--data", required=True, type=click.Path(), help="image folder or tar(.gz), e.g. CIFAR-10")
@click.option("--output", required=True, type=click.Path())
@_opt(TrainConfig, "minutes", type=float, help="wall-time budget of this call")
@_opt(TrainConfig, "batch_size", type=int,
      help="stable-diffusion: the stage's own default unless given (edge_dm.jobs.training_t2i.STAGE_DEFAULTS)")
@_opt(TrainConfig, "lr", type=float,
      help="stable-diffusion: the stage's own default unless given (edge_dm.jobs.training_t2i.STAGE_DEFAULTS)")
@_opt(TrainConfig, "warmup_steps", type=int,
      help="stable-diffusion: the stage's own default unless given (edge_dm.jobs.training_t2i.STAGE_DEFAULTS)")
@_opt(TrainConfig, "dropout", type=float)
@click.option("--init", type=click.Path(),
              help="start from this UNet folder (fresh optimizer); a deeper one gives its blocks by position; "
                   "lcm: the student from this LCM pipeline's UNet")
@click.option("--teacher", type=click.Path(),
              help="unet2d: regress onto this UNet folder's noise prediction; lcm: the text-to-image pipeline "
                   "(folder or shipped name) to distil  [lcm default: edm-cifar10-t2i]")
@_opt(TrainConfig, "distill", type=float,
      help="weight of the teacher's prediction in the target (the rest: the drawn noise)")
@click.option("--channels", default=",".join(map(str, default(TrainConfig, "block_out_channels"))), show_default=True,
              help="UNet block_out_channels (stable-diffusion: 64,128,128 unless given)")
@_opt(TrainConfig, "layers_per_block", type=int, help="(stable-diffusion: 1 unless given)")
@click.option("--attention-level", default=str(default(TrainConfig, "attention_level")), show_default=True,
              help="the level with self-attention (0 = full resolution), or 'none'")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the UNet (CUDA)")
@click.option("--family", type=click.Choice(["unet2d", "stable-diffusion", "lcm"]), default="unet2d", show_default=True,
              help="unet2d: an unconditional pixel DDPM; stable-diffusion: a text-to-image pipeline on class "
                   "captions of labelled data (<class>/<image>), trained in --stage steps; lcm: --teacher "
                   "distilled into a latent consistency model (1-8 steps) on the same captions")
@click.option("--stage", type=click.Choice(list(T2I_STAGES)),
              help="stable-diffusion: vae, then unet (text encoder with it; writes OUTPUT/pipeline), and classifier")
@click.option("--cross-attention-levels", help="stable-diffusion: UNet levels with cross-attention  [default: 1]")
@click.option("--vae-channels", help="stable-diffusion: VAE block_out_channels  [default: 32,64]")
@click.option("--text-width", type=int, help="stable-diffusion: text encoder width  [default: 128]")
@click.option("--text-layers", type=int, help="stable-diffusion: text encoder layers  [default: 2]")
@click.option("--empty-caption-rate", type=float, help="stable-diffusion: share of empty captions  [default: 0.1]")
@click.option("--classifier-channels", help="stable-diffusion --stage classifier: widths  [default: 48,96,192]")
@click.option("--eval-data", type=click.Path(), help="--stage classifier: labelled held-out images to score")
@click.option("--guidance-range", help="lcm: guidance scales MIN,MAX the student learns  [default: 1.5,4.5]")
@click.option("--solver-steps", type=int,
              help="lcm: steps of the teacher's DDIM solver over [0, T] (each training pair is T/N timesteps "
                   "apart)  [default: 50]")
@library_errors
def train(data, output, channels, attention_level, compile_, family, stage, **kwargs):
    """Train a small DDPM (resumes from OUTPUT/checkpoint.pt), with --family stable-diffusion one
    stage of a text-to-image pipeline (resumes from OUTPUT/STAGE/checkpoint.pt), or with --family lcm
    distil a text-to-image pipeline into a few-step one (resumes from OUTPUT/checkpoint.pt)."""
    source = click.get_current_context().get_parameter_source
    t2i = {k: kwargs.pop(k) for k in T2I_ONLY}
    lcm = {k: kwargs.pop(k) for k in ("guidance_range", "solver_steps")}
    if family == "lcm":
        return _train_lcm(data, output, compile_, stage, t2i, lcm, kwargs, source)
    given = [k for k, v in lcm.items() if v is not None]
    if given:
        raise ConfigError(f"--{given[0].replace('_', '-')} is an option of --family lcm")
    if family == "stable-diffusion":
        return _train_text_to_image(data, output, channels, attention_level, compile_, stage, t2i, kwargs, source)
    given = [k for k, v in t2i.items() if v is not None] + (["stage"] if stage else [])
    if given:
        raise ConfigError(f"--{given[0].replace('_', '-')} is an option of --family stable-diffusion")
    cfg = TrainConfig(data=data, output=output, compile=compile_, block_out_channels=_int_list(channels, "--channels"),
                      attention_level=parse_attention_level(attention_level), **kwargs)
    click.echo(f"EMA model: {jobs.train(cfg, log=click.echo)}")


def _train_text_to_image(data, output, channels, attention_level, compile_, stage, t2i, kwargs, source):
    """`edge-dm train --family stable-diffusion`: options left at the DDPM's defaults take the stage's."""
    if stage is None:
        raise ConfigError(f"--family stable-diffusion trains in stages: give --stage ({', '.join(T2I_STAGES)})")
    ddpm_only = [k for k in ("init", "teacher", "distill", "dropout", "attention_level")
                 if source(k) != click.core.ParameterSource.DEFAULT]
    if ddpm_only:
        raise ConfigError(f"--{ddpm_only[0].replace('_', '-')} is an option of --family unet2d only")
    given = {k: v for k, v in kwargs.items() if k in ("minutes", "batch_size", "lr", "warmup_steps", "layers_per_block")
             and (k == "minutes" or source(k) != click.core.ParameterSource.DEFAULT)}
    if source("channels") != click.core.ParameterSource.DEFAULT:
        given["block_out_channels"] = _int_list(channels, "--channels")
    for k in ("cross_attention_levels", "vae_channels", "classifier_channels"):
        if t2i[k] is not None:
            given[k] = _int_list(t2i[k], f"--{k.replace('_', '-')}")
    given.update({k: t2i[k] for k in ("text_width", "text_layers", "empty_caption_rate", "eval_data")
                  if t2i[k] is not None})
    cfg = TextToImageTrainConfig(data=data, output=output, stage=stage, compile=compile_, **given)
    click.echo(f"{stage}: {train_text_to_image(cfg, log=click.echo)}")


def _train_lcm(data, output, compile_, stage, t2i, lcm, kwargs, source):
    """`edge-dm train --family lcm`: the shared options given, with the distillation's own defaults."""
    others = [k for k in ("distill", "dropout", "attention_level", "channels", "layers_per_block")
              if source(k) != click.core.ParameterSource.DEFAULT]
    others += [k for k, v in t2i.items() if v is not None] + (["stage"] if stage else [])
    if others:
        raise ConfigError(f"--{others[0].replace('_', '-')} is not an option of --family lcm")
    given = {k: kwargs[k] for k in ("minutes", "batch_size", "lr", "warmup_steps")
             if k == "minutes" or source(k) != click.core.ParameterSource.DEFAULT}
    given.update({k: kwargs[k] for k in ("teacher", "init") if kwargs[k] is not None})
    if lcm["guidance_range"] is not None:
        given["guidance_range"] = _float_list(lcm["guidance_range"], "--guidance-range")
    if lcm["solver_steps"] is not None:
        given["solver_steps"] = lcm["solver_steps"]
    cfg = LCMTrainConfig(data=data, output=output, compile=compile_, **given)
    click.echo(f"pipeline: {train_lcm(cfg, log=click.echo)}")


def _speedups(text: str | None) -> float | dict | None:
    """--min-int8-speedup: "1.2" (every CPU) or "avx2=0.6,vnni=0.9,amx=0.75" (per CPU class)."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return float(text)
        return {isa.strip(): float(v) for isa, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise ConfigError(f"--min-int8-speedup takes a number or CPU-class=number pairs separated by commas "
                          f"(avx2=0.6,vnni=0.9,amx=0.75), got {text!r}") from None


def _float_list(text: str, option: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} must be numbers separated by commas, got {text!r}") from None


def _int_list(text: str, option: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} must be integers separated by commas, got {text!r}") from None


@main.command()
@model_option
@click.option("--output", type=click.Path(), help="int8 bundle folder (default: where `generate` finds it)")
@overwrite_option
@_opt(CalibrationConfig, "kind", "--calibration", type=click.Choice(CALIBRATION_KINDS))
@_opt(CalibrationConfig, "mu", type=float, help="DNTC mean, in training timesteps")
@_opt(CalibrationConfig, "sigma", type=float, help="DNTC std, in training timesteps")
@_opt(CalibrationConfig, "num_samples", type=int, help="calibration samples N (PTQ4DM: 1024)")
@_opt(CalibrationConfig, "samples_per_trajectory", type=int,
      help="samples one FP trajectory serves (1: a trajectory per sample)")
@_opt(CalibrationConfig, "fixed_t", type=int, help="timestep of --calibration fixed (default: mu)")
@_opt(CalibrationConfig, "data", type=click.Path(), help="images for --calibration forward")
@_opt(CalibrationConfig, "prompts", type=click.Path(),
      help="text-to-image: calibration prompts, one a line (default: a shipped model's own, "
           "edm-cifar10-*: datasets/cifar10-prompts.txt; else the shipped datasets/prompts.txt)")
@image_sampling
@_opt(QuantizeJobConfig, "calibration_set", type=click.Path(), help="reuse a saved calibration.npz")
@_opt(QuantizeConfig, "mode", type=click.Choice(QUANTIZE_MODES))
@_opt(QuantizeConfig, "preset", help="NNCF QuantizationPreset: performance or mixed")
@_opt(QuantizeConfig, "model_type", help="NNCF ModelType (transformer) or none")
@_opt(QuantizeConfig, "target", type=click.Choice(TARGETS),
      help="the CPU class the int8 model is for (auto: this CPU): sets --overflow-fix and --target-device")
@_opt(QuantizeConfig, "target_device",
      help="NNCF TargetDevice: ANY, CPU, CPU_SPR, GPU, NPU  [default: by --target, CPU_SPR for amx, else CPU]")
@click.option("--bias-correction", type=click.Choice(["fast", "full"]), default="fast", show_default=True)
@_opt(QuantizeConfig, "smooth_quant_alpha", type=float)
@_opt(QuantizeConfig, "subset_size", type=int)
@click.option("--ignore-name", "ignored_names", multiple=True, help="an operation left in float (repeat)")
@click.option("--ignore-pattern", "ignored_patterns", multiple=True, help="a regex of operations left in float")
@click.option("--ignore-type", "ignored_types", multiple=True, help="an operation type left in float")
@_opt(QuantizeConfig, "range_estimator", help="NNCF range estimator: minmax, mean-minmax, histogram, ...")
@_opt(QuantizeConfig, "overflow_fix", help="7-bit weights against int8 overflow on CPUs without VNNI: enable, "
                                           "first_layer_only, disable  [default: by --target, enable for avx2, "
                                           "else disable]")
@click.option("--keep-float", multiple=True,
              help="a module left in float (repeat; 'none' quantizes them all)  "
                   "[default: the registry model's measured set, else its family's]")
@_opt(QuantizeConfig, "split_shortcut", "--split-shortcut/--no-split-shortcut",
      help="unet2d: convolve each up-path skip concatenation's two parts apart (same function), "
           "so each gets its own int8 scale  [default: the family's: on for unet2d int8]")
@_opt(QuantizeJobConfig, "eval_trajectories", type=int)
@_opt(QuantizeConfig, "max_drop", type=float,
      help="quality budget: the most mean held-out error (relative L2 of the noise prediction against fp32) the "
           "int8 model may have; NNCF returns the most sensitive operations to float until it holds")
@_opt(QuantizeConfig, "max_iterations", type=int,
      help="--max-drop: the most groups of operations NNCF returns to float before it gives up  [default: no limit]")
@_opt(QuantizeJobConfig, "report_images", type=int, help="text-to-image: prompts in report.png  [default: 4]")
@_opt(QuantizeJobConfig, "text_encoder", type=click.Choice(COMPONENT_MODES))
@_opt(QuantizeJobConfig, "vae", type=click.Choice(COMPONENT_MODES))
@library_errors
def quantize(bias_correction, keep_float, **kwargs):
    """Calibrate (DNTC by default) and quantize a model's UNet to an int8 OpenVINO bundle."""
    sampling = SamplingConfig(**_pick(SamplingConfig, kwargs))
    cal = CalibrationConfig(**_pick(CalibrationConfig, kwargs), sampling=sampling)
    keep = None if not keep_float else tuple(n for n in keep_float if n != "none")
    algorithm = QuantizeConfig(**_pick(QuantizeConfig, kwargs), fast_bias_correction=bias_correction == "fast",
                               keep_float=keep)
    bundle, s = jobs.quantize(QuantizeJobConfig(**kwargs, calibration=cal, quantization=algorithm))
    click.echo(f"int8 bundle: {bundle.path}")
    if bundle.recipe.get("target"):
        t = bundle.recipe["target"]
        click.echo(f"target {t['name']}{' (this CPU)' if algorithm.target == 'auto' else ''}: overflow fix "
                   f"{t['overflow_fix']}, NNCF target device {t['target_device']}")
    if "calibration_samples" in s:
        click.echo(f"calibration {s['calibration_s']:.1f} s ({s['calibration_samples']} samples, mean t "
                   f"{s['calibration_t_mean']}), quantization {s['quantization_s']:.1f} s, "
                   f"held-out error {s['error_eval_s']:.1f} s")
    click.echo(f"quantized ops: {s['ops']['fake_quantize']} FakeQuantize, {s['ops']['int8_constants']} int8 "
               f"constants; IR {s['ir_bytes_fp32'] / 1e6:.1f} MB fp32 -> {s['ir_bytes_int8'] / 1e6:.1f} MB int8")
    click.echo(f"int8 vs fp32 noise prediction, relative L2 on held-out trajectories: mean {s['mean_rel_l2']:.4f}; "
               "by timestep:")
    click.echo("  " + "  ".join(f"t={e['t']}:{e['rel_l2']:.3f}" for e in s["noise_prediction_rel_l2"]))
    if "accuracy_control" in s:
        a = s["accuracy_control"]
        click.echo(f"--max-drop {a['max_drop']}: {a['float_ops']} of {a['int8_ops_before']} int8 operations returned "
                   f"to float (held-out error {a['rel_l2_before']:.4f} -> {a['rel_l2_after']:.4f}; "
                   "recipe.json lists them)")


@main.command()
@click.option("--samples", required=True, help="image folder, or a bundle to generate --num-images from (a model "
                                                "name: its int8 bundle edge-dm made)")
@click.option("--reference", help="FID reference: stats .npz, an image folder / tar (stats cached), "
                                  "or a shipped name (cifar10-train)")
@click.option("--compare", help="paired mode: a second bundle or folder with the same seeds (e.g. fp32)")
@click.option("--classifier", help="class accuracy: a classifier folder or edm-cifar10-classifier; each image's "
                                   "class is the one its prompt names (prompts cycle over the images)")
@_opt(EvaluateConfig, "num_images", type=int)
@prompt_options
@image_sampling
@cache_options
@device_options
@_opt(EvaluateConfig, "feature_device", help="where Inception runs: openvino (CPU, f32) or a torch device (cpu, cuda)")
@cluster_options
@click.option("--output", type=click.Path(), help="write the results as JSON here")
@overwrite_option
@library_errors
def evaluate(prompt, prompts_file, **kwargs):
    """Sample quality: FID and sFID against a reference, class accuracy, and int8-vs-fp32 drift (PSNR, SSIM).
    With --cluster, bundles' images and their Inception features are made on a Ray cluster's workers."""
    cluster = _cluster(kwargs)
    sampling, runtime = SamplingConfig(**_pick(SamplingConfig, kwargs)), DeviceConfig(**_pick(DeviceConfig, kwargs))
    r = jobs.evaluate(EvaluateConfig(**kwargs, prompts=_prompts(prompt, prompts_file), sampling=sampling,
                                     runtime=runtime, cluster=cluster))
    for key in ("fid", "sfid"):
        if key in r:
            click.echo(f"{key.upper():5s} {r[key]:.3f}  ({r['num_images']} images)")
    if "caveat" in r:
        click.echo(f"note: {r['caveat']}")
    if "drift" in r:
        d = r["drift"]
        click.echo(f"drift PSNR {d['psnr_db']:.2f} dB, SSIM {d['ssim']:.4f}, mean |diff| {d['mean_abs_diff']:.2f}/255")
    if "fid" in r:
        click.echo("IS    n/a  (" + r["inception_score_note"] + ")")
    if "class_accuracy" in r:
        a = r["class_accuracy"]
        click.echo(f"class accuracy {a['accuracy']:.4f}  ({r['num_images']} images; worst "
                   + ", ".join(f"{c} {v:.3f}" for c, v in sorted(a["by_class"].items(), key=lambda kv: kv[1])[:3])
                   + ")")
    for what, tm in r["timings"].items():
        rate = f", {tm['images_per_s']:.1f} images/s" if "images_per_s" in tm else ""
        click.echo(f"time  {what} {tm['seconds']:.1f} s{rate}")


@main.command()
@click.option("--model", help="registry name (edge-dm models), Hugging Face id, or diffusers folder  "
                               f"[default: the --int8 bundle's model, else {DEFAULT_MODEL}]")
@_opt(BenchmarkConfig, "device")
@click.option("--output", type=click.Path(), default=default(BenchmarkConfig, "output"), show_default=True)
@overwrite_option
@click.option("--int8", "int8", help="int8 bundle (default: the model's, quantized if missing)")
@_opt(BenchmarkConfig, "iterations", type=int)
@click.option("--batch-sizes", default=",".join(map(str, default(BenchmarkConfig, "batch_sizes"))),
              show_default=True, help="throughput sweep, comma-separated")
@_opt(BenchmarkConfig, "steps", type=int, help="sampler steps of the whole images (default: the model's own)")
@_opt(BenchmarkConfig, "images", type=int, help="images of the end-to-end run")
@_opt(BenchmarkConfig, "height", type=int, help="text-to-image: image height in pixels  [default: the model's]")
@_opt(BenchmarkConfig, "width", type=int, help="text-to-image: image width in pixels  [default: the model's]")
@click.option("--float-precisions", default=",".join(default(BenchmarkConfig, "float_precisions")), show_default=True,
              help="OpenVINO float variants to time (f32, bf16, f16), where the device has them")
@click.option("--cache-intervals", default=",".join(map(str, default(BenchmarkConfig, "cache_intervals"))),
              help="DeepCache intervals to time whole images at, comma-separated, for int8 and the float a user "
                   "would pick on this CPU (bf16 with AMX, else f32)  [default: none]")
@_opt(BenchmarkConfig, "cache_branch", type=int, help="DeepCache branch of --cache-intervals: UNet levels the "
      "cheap steps still run (0: only the last up layer)  [default: the model's]")
@click.option("--no-torch", is_flag=True, help="skip the torch eager baseline")
@click.option("--min-int8-speedup", "min_int8_speedup",
              help="fail when int8 at batch 1 is below this many times the float a user would pick here "
                   "(bf16 with AMX, else f32): one number, or one per CPU class, e.g. avx2=0.6,vnni=0.9,amx=0.75")
@library_errors
def benchmark(batch_sizes, cache_intervals, no_torch, min_int8_speedup, float_precisions, **kwargs):
    """Speed side by side: torch fp32, OpenVINO fp32/bf16/fp16 and int8, as ratios from one run; with
    --cache-intervals, whole images with DeepCache too."""
    cfg = BenchmarkConfig(**kwargs, batch_sizes=_int_list(batch_sizes, "--batch-sizes"), torch_baseline=not no_torch,
                          cache_intervals=_int_list(cache_intervals, "--cache-intervals") if cache_intervals else (),
                          min_int8_speedup=_speedups(min_int8_speedup),
                          float_precisions=tuple(p.strip() for p in float_precisions.split(",") if p.strip()))
    click.echo(markdown(jobs.benchmark(cfg, log=lambda s: click.echo(s, err=True))))


@main.command()
@click.argument("spec", type=click.Path())
@click.option("--output", type=click.Path(), default=default(SweepConfig, "output"), show_default=True,
              help="the sweep's folder: finished cells, results.json, results.md, plot.png; a rerun resumes it")
@click.option("--overwrite", is_flag=True, help="start the sweep in --output afresh")
@cluster_options
@library_errors
def sweep(spec, output, overwrite, **kwargs):
    """Quantize a model over a grid of quantize options and calibration seeds (SPEC: a JSON file, or YAML
    with PyYAML), score each cell's images (on a Ray cluster with --cluster), and tabulate each metric's
    mean and spread over the seeds. A stopped sweep resumes where it stopped."""
    cfg = SweepConfig.from_spec(load_spec(spec), output=output, overwrite=overwrite, cluster=_cluster(kwargs))
    r = jobs.sweep(cfg, log=lambda line: click.echo(line, err=True))
    click.echo((Path(r["output"]) / "results.md").read_text(), nl=False)
    click.echo(f"{len(r['cells'])} cells ({r['resumed_cells']} resumed) -> {r['output']}: results.json, results.md, "
               "plot.png")


def reference() -> str:
    """docs/CLI.md: every command's --help, as Markdown (tests/test_docs.py keeps the file up to date;
    regenerate it with `python -c "from edge_dm.cli import reference; print(reference(), end='')" > docs/CLI.md`)."""
    lines = ["# Command reference", "", "Generated from `edge-dm COMMAND --help` (`edge_dm.cli.reference`).", ""]
    parent = click.Context(main, info_name="edge-dm", terminal_width=100, max_content_width=100,
                           **main.context_settings)
    for name, command in sorted(main.commands.items()):
        ctx = click.Context(command, parent=parent, info_name=name, terminal_width=100, max_content_width=100)
        lines += [f"## edge-dm {name}", "", "```", command.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(lines)

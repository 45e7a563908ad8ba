"""The `edge-dm` command: each command parses options, builds a config, calls one library function
and prints the result. Library errors (edge_dm.errors) become one-line click errors, exit code 1."""
from __future__ import annotations

import functools
import json

import click

from edge_dm.configs import DEFAULT_MODEL


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


@main.command()
@model_option
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device: CPU, GPU, NPU, AUTO, MULTI:...")
@click.option("--num-images", type=int, default=16, show_default=True)
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--scheduler", default="ddim", show_default=True, help="ddim, ddpm, dpm-solver, euler")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--output", type=click.Path(), default="samples", show_default=True)
@click.option("--precision-hint", default=None, help="OpenVINO INFERENCE_PRECISION_HINT (f32, bf16, f16)")
@overwrite_option
@library_errors
def generate(**kwargs):
    """Generate images with a bundle (default: the int8 bundle of --model) on an OpenVINO device."""
    from edge_dm.configs import GenerateConfig
    from edge_dm.runtime import generate as run

    r = run(GenerateConfig(**kwargs))
    click.echo(f"{r['images']} images -> {r['output']}  ({r['precision']} on {r['device']})")
    click.echo(f"UNet {r['unet_ms_per_call']:.2f} ms/call, {r['images_per_s']:.2f} images/s")


@main.command()
@click.option("--data", required=True, type=click.Path(), help="image folder or tar(.gz), e.g. CIFAR-10")
@click.option("--output", required=True, type=click.Path())
@click.option("--minutes", type=float, default=19.0, show_default=True, help="wall-time budget of this call")
@click.option("--batch-size", type=int, default=512, show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the UNet (CUDA)")
@library_errors
def train(data, output, minutes, batch_size, compile_):
    """Train a small DDPM (resumes from OUTPUT/checkpoint.pt)."""
    from edge_dm.train import TrainConfig, train as run

    ema = run(TrainConfig(data=data, output=output, minutes=minutes, batch_size=batch_size, compile=compile_),
              log=click.echo)
    click.echo(f"EMA model: {ema}")


def _print_json(obj):
    click.echo(json.dumps(obj, indent=2, default=str))

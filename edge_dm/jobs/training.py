"""Train a small DDPM (diffusers UNet2DModel + DDPMScheduler) on CIFAR-10-like images.

This is how edge-dm's shipped default model (`models/edm-cifar10-ddpm`) was made, on one GPU:

    edge-dm train --data cifar10-train-jpeg.tar.gz --output runs/cifar10 --minutes 19

Recipe (Ho et al. 2020, shortened for a budget of minutes): epsilon-prediction MSE loss,
1000 linear-beta steps, AdamW with warm-up, gradient clipping 1.0, random horizontal flips, an EMA
of the weights (the EMA is what ships), bf16 autocast on CUDA. The run checkpoints every few minutes
and resumes from its last checkpoint, so a training budget can be spread over several shorter calls.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_dm.data import load_images
from edge_dm.errors import ConfigError, DataError, ModelNotFoundError, OutputExistsError, library_reason

# The google/ddpm-cifar10-32 family (see RESOURCES.md) at half width: 4 levels, attention at 16x16.
# A smaller (32, 64, 128, 128) variant with one block a level runs 3x faster on a 2-core CPU but
# scored FID 27.8 against this one's 16.7 after the same training time (models/edm-cifar10-ddpm/README.md).
DEFAULT_UNET = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(64, 128, 128, 128),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_eps=1e-6,
    freq_shift=1,
    flip_sin_to_cos=False,
    downsample_padding=0,
    attention_head_dim=None,
    dropout=0.0,
)
# Ho et al.'s noise schedule, shared by every model edge-dm trains
DDPM_BETAS = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


@dataclass(frozen=True)
class TrainConfig:
    data: str
    output: str
    minutes: float = 24.0
    max_steps: int = 1_000_000
    batch_size: int = 512
    lr: float = 4e-4
    warmup_steps: int = 1000
    ema_decays: tuple = (0.9995, 0.9999)  # one EMA per decay, saved as ema-<decay>/; the first also as ema/
    seed: int = 0
    checkpoint_minutes: float = 3.0
    compile: bool = False
    block_out_channels: tuple = DEFAULT_UNET["block_out_channels"]
    layers_per_block: int = DEFAULT_UNET["layers_per_block"]
    attention_level: int | None = 1  # the level (0 = 32x32) whose blocks have self-attention; None: none
    dropout: float = 0.0  # a run of minutes underfits: DDPM's 0.1 only slows it down
    # fine-tune: start the model and its EMAs from this UNet folder, with a fresh optimizer. The EMAs
    # then use their full decay from the first step: the init is already an average worth keeping,
    # whereas from scratch the decay warms up as min(d, (1 + s) / (10 + s)). The init may be deeper
    # (more layers per block, same widths): the student then takes its blocks by position, as BK-SDM
    # does (see `init_weights`).
    init: str | None = None
    # distil: a trained UNet folder whose noise prediction at the same x_t is the regression target
    # (weight `distill`; the rest stays on the drawn noise). Its target has none of the drawn noise's
    # variance, so a small student learns the teacher's E[eps | x_t] from far fewer images.
    teacher: str | None = None
    distill: float = 1.0

    def __post_init__(self):
        if self.minutes <= 0 or self.max_steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("minutes, max_steps, batch_size and lr must be positive")
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"distill weight must lie in [0, 1], got {self.distill}")
        if not self.ema_decays or not all(0.0 < d < 1.0 for d in self.ema_decays):
            raise ConfigError("ema_decays must be one or more numbers in (0, 1)")
        if self.layers_per_block < 1 or not self.block_out_channels or any(c % 32 for c in self.block_out_channels):
            raise ConfigError("layers_per_block must be >= 1 and every channel count a multiple of 32 (GroupNorm)")
        if self.attention_level is not None and not 0 <= self.attention_level < len(self.block_out_channels):
            raise ConfigError(f"attention_level must name one of the {len(self.block_out_channels)} levels "
                              f"(0-{len(self.block_out_channels) - 1}) or be None, got {self.attention_level}")

    def unet_config(self) -> dict:
        cfg = dict(DEFAULT_UNET)
        cfg["block_out_channels"] = tuple(self.block_out_channels)
        cfg["layers_per_block"] = self.layers_per_block
        cfg["dropout"] = self.dropout
        n = len(self.block_out_channels)
        down, up = ["DownBlock2D"] * n, ["UpBlock2D"] * n
        if self.attention_level is not None:  # the up path mirrors the down path
            down[self.attention_level], up[n - 1 - self.attention_level] = "AttnDownBlock2D", "AttnUpBlock2D"
        cfg["down_block_types"], cfg["up_block_types"] = tuple(down), tuple(up)
        return cfg


def attention_level(text: str) -> int | None:
    """`--attention-level` as TrainConfig takes it: a level number, or None for 'none'."""
    if text == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--attention-level must be a level number or 'none', got {text!r}") from None


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a killed run keeps the previous checkpoint


def _load_unet(path: str, option: str):
    """The fp32 UNet2DModel in the UNet folder `path`, or ModelNotFoundError naming `option`."""
    from diffusers import UNet2DModel

    if not (Path(path) / "config.json").exists():
        raise ModelNotFoundError(f"{option} {path}: no UNet folder (config.json + weights) there")
    try:
        return UNet2DModel.from_pretrained(path).float()
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{option} {path}: cannot load it: {str(exc).splitlines()[0]}") from None


def _source_key(key: str, student_layers: int, init_layers: int) -> str:
    """The init's name for the student's tensor `key` when the init has more layers per block: the
    down path keeps each level's first resnets, the up path its first ones and its last (the one that
    takes the level's input skip), attention following its resnet."""
    import re

    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m and int(m.group(3)) == student_layers:  # an up block has layers + 1 resnets
        return f"up_blocks.{m.group(1)}.{m.group(2)}.{init_layers}.{m.group(4)}"
    return key


def init_weights(model, init) -> tuple[int, int]:
    """Copy the UNet2DModel `init`'s weights into `model`, block by position when `init` is deeper.

    Returns (tensors copied, tensors in `model`). Raises ValueError when the widths or levels differ
    (a tensor of `model` outside attention finds no tensor of the same shape). Attention at a level
    where `init` has none starts as the identity: its output projection is zeroed, so the student
    starts as `init` with the dropped blocks (and attention) left out.
    """
    src, dst = init.state_dict(), model.state_dict()
    student_layers, init_layers = model.config.layers_per_block, init.config.layers_per_block
    if student_layers > init_layers:
        raise ValueError(f"the init has {init_layers} layers per block, fewer than {student_layers}")
    copied, fresh = {}, {}
    for key, tensor in dst.items():
        source = src.get(_source_key(key, student_layers, init_layers))
        if source is not None and source.shape == tensor.shape:
            copied[key] = source
        elif ".attentions." not in key:
            raise ValueError(f"no tensor of shape {tuple(tensor.shape)} for {key}")
        elif ".to_out." in key:  # a fresh attention block starts as the identity (it adds to a residual)
            fresh[key] = tensor.new_zeros(tensor.shape)
    model.load_state_dict({**copied, **fresh}, strict=False)
    return len(copied), len(dst)


def _load_init(model, path: str) -> str:
    """Copy the weights of the UNet folder `path` into `model` (see `init_weights`), or ModelNotFoundError;
    returns the line that says so."""
    try:
        copied, total = init_weights(model, _load_unet(path, "--init"))
    except ValueError as exc:
        raise ModelNotFoundError(f"--init {path}: its architecture differs from --channels / --layers-per-block "
                                 f"({exc})") from None
    blocks = f" ({copied} of {total} tensors, blocks by position)" if copied < total else ""
    return f"fine-tuning from {path}{blocks}"


def _check_train_output(output) -> Path:
    """The run folder (resumed in place if it holds a checkpoint), checked before any work: it must be
    a folder or not exist yet, below folders."""
    out = Path(output).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {out} is a file; train writes a run folder there")
    anc = out.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"output {out} cannot be written: {anc} is a file, not a folder")
    return out


def resume(ckpt: Path, model, emas, opt, device: str, options: str) -> int:
    """Load the checkpoint `ckpt` into `model`, its EMAs and the optimizer; returns its step. A model of
    another architecture is a ConfigError naming `options` (the options that set it)."""
    import torch

    try:
        state = torch.load(ckpt, map_location=device)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise DataError(f"cannot read the checkpoint {ckpt}: {library_reason(exc)}") from None
    try:
        model.load_state_dict(state["model"])
        for ema, ema_state in zip(emas, state["emas"]):
            ema.load_state_dict(ema_state)
    except RuntimeError:
        raise ConfigError(f"{ckpt} was made with another architecture ({options}): pass the options it was "
                          "trained with, or another --output") from None
    opt.load_state_dict(state["opt"])
    torch.set_rng_state(state["rng_cpu"].cpu())  # map_location moved it to the GPU
    return state["step"]


def start(model, ema_decays, lr: float, device: str, ckpt: Path, options: str):
    """(model on `device`, one EMA copy of it per decay, AdamW over its trainable parameters, step):
    step 0, or the checkpoint's where `ckpt` exists, resumed into all three (`options`: see resume)."""
    import copy

    import torch

    model = model.to(device)
    emas = [copy.deepcopy(model).eval().requires_grad_(False) for _ in ema_decays]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=device == "cuda")
    step = resume(ckpt, model, emas, opt, device, options) if ckpt.exists() else 0
    return model, emas, opt, step


def begin(cfg, folder: Path, model, device: str, log, said: list, options: str, resumed: str = "resumed"):
    """(model, EMAs, optimizer, step, generator) of a run writing into `folder`, resumed from its
    checkpoint.pt (see start). Called once every check has passed: only then logs `said` (and
    "`resumed` at step N"), makes `folder` and saves `cfg` there as train_config.json."""
    import torch

    model, emas, opt, step = start(model, cfg.ema_decays, cfg.lr, device, folder / "checkpoint.pt", options)
    if step:
        said.append(f"{resumed} at step {step}")
    for line in said:
        log(line)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 100_003 + step)
    return model, emas, opt, step, gen


def random_batch(images, batch_size: int, gen):
    """(`batch_size` random images of uint8 N,H,W,3 `images` as floats in [-1, 1], NCHW, each flipped
    left-right with probability 1/2; their indices), drawn from the torch generator `gen`."""
    import torch

    idx = torch.randint(0, len(images), (batch_size,), device=images.device, generator=gen)
    x = images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0
    flip = torch.rand(batch_size, device=images.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x), idx


def fit(cfg, model, emas, opt, step: int, loss_fn, ckpt: Path, log, ema_warmup: bool = True,
        log_every: int = 500) -> tuple[int, float | None]:
    """The training loop every edge-dm model shares: `loss_fn()` (a batch's loss) minimised by `opt`
    with linear lr warm-up over `cfg.warmup_steps` to `cfg.lr`, gradients clipped to norm 1, one EMA
    of `model` per decay in `cfg.ema_decays` (decay warmed up as min(d, (1 + s) / (10 + s)) where
    `ema_warmup`), until `cfg.max_steps` or `cfg.minutes` of this call; checkpoints to `ckpt` every
    `cfg.checkpoint_minutes` and at the end. Returns (step, mean loss of the steps since the last log)."""
    import torch

    def save():
        _save_checkpoint(ckpt, dict(model=model.state_dict(), emas=[e.state_dict() for e in emas],
                                    opt=opt.state_dict(), step=step, rng_cpu=torch.get_rng_state()))

    start, last_ckpt, losses, mean = time.time(), time.time(), [], None
    model.train()
    model_params = list(model.parameters())
    ema_params = [list(ema.parameters()) for ema in emas]
    while step < cfg.max_steps and time.time() - start < cfg.minutes * 60:
        loss = loss_fn()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model_params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            for params, ema_decay in zip(ema_params, cfg.ema_decays):
                decay = min(ema_decay, (1 + step) / (10 + step)) if ema_warmup else ema_decay
                torch._foreach_lerp_(params, model_params, 1 - decay)
        losses.append(loss.detach())
        if step % log_every == 0:
            mean = torch.stack(losses).mean().item()
            losses = []
            log(f"step {step} loss {mean:.4f} {(time.time() - start) / 60:.1f} min")
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            save()
            last_ckpt = time.time()
    save()
    model.eval()
    if losses:  # the mean loss of the steps since the last log line
        mean = torch.stack(losses).mean().item()
    return step, mean


def train(cfg: TrainConfig, log=print) -> Path:
    """Train until `cfg.minutes` of wall time (this call) or `cfg.max_steps`; returns the EMA model dir."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    # every check (output, init, teacher, checkpoint, data) before any line is logged or file written
    out = _check_train_output(cfg.output)
    ckpt = out / "checkpoint.pt"
    said = []  # the lines to log once every check has passed
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = UNet2DModel(**cfg.unet_config())
    if cfg.init and not ckpt.exists():
        said.append(_load_init(model, cfg.init))
    teacher = _load_unet(cfg.teacher, "--teacher").eval().requires_grad_(False) if cfg.teacher else None
    t0 = time.time()
    images = torch.from_numpy(load_images(cfg.data)).to(device)  # N,H,W,3 uint8, all on the device
    said.append(f"loaded {len(images)} images in {time.time() - t0:.1f}s")
    model, emas, opt, step, gen = begin(cfg, out, model, device, log, said,
                                        "--channels, --layers-per-block, --attention-level")
    sched = DDPMScheduler(**DDPM_BETAS)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"UNet2DModel {n_params / 1e6:.2f}M parameters on {device}")

    fwd = torch.compile(model) if cfg.compile else model
    if teacher is not None:
        teacher = teacher.to(device)
        teach = torch.compile(teacher) if cfg.compile else teacher
        log(f"distilling from {cfg.teacher} (weight {cfg.distill})")
    alphas = sched.alphas_cumprod.to(device)

    def loss_fn():
        x0, _ = random_batch(images, cfg.batch_size, gen)
        t = torch.randint(0, 1000, (cfg.batch_size,), device=device, generator=gen)
        noise = torch.randn(x0.shape, device=device, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            pred = fwd(xt, t).sample
            target = noise
            if teacher is not None:
                with torch.no_grad():
                    target = cfg.distill * teach(xt, t).sample.float() + (1 - cfg.distill) * noise
        return torch.nn.functional.mse_loss(pred.float(), target)

    step, mean = fit(cfg, model, emas, opt, step, loss_fn, ckpt, log, ema_warmup=not cfg.init)
    for ema, ema_decay in zip(emas, cfg.ema_decays):
        ema.save_pretrained(out / f"ema-{ema_decay}")
    ema_dir = out / "ema"
    emas[0].save_pretrained(ema_dir)
    sched.save_pretrained(out / "scheduler")
    (out / "train_state.json").write_text(json.dumps(dict(step=step, params=n_params, loss=mean)))
    log(f"saved EMA weights at step {step} to {ema_dir}")
    return ema_dir

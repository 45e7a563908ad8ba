"""Distil a trained text-to-image pipeline into a latent consistency model (LCM) that samples in 1-8
steps, as Luo et al. (2023) distilled Stable Diffusion into LCM-SD1.5: `edm-cifar10-lcm` is
`edm-cifar10-t2i` distilled this way, on the same captioned images.

    edge-dm train --family lcm --teacher edm-cifar10-t2i --data cifar10-train-jpeg.tar.gz \\
        --output runs/lcm --minutes 10 --compile

One stage, resumable (`<output>/checkpoint.pt`), writing `<output>/pipeline`: a
`LatentConsistencyModelPipeline` of the teacher's VAE, text encoder and tokenizer (unchanged), the
distilled UNet and an `LCMScheduler` with the teacher's betas. Method (latent consistency
distillation, the paper's Algorithm 1, as diffusers' `train_lcm_distill_sd_wds.py` runs it):

- The student is the teacher's UNet with a guidance-scale embedding (`time_cond_proj_dim`) added to
  its time embedding; that projection starts at zero, so the student starts as the teacher.
- A training point: a latent of a captioned image noised to a timestep t_{n+k} of the solver's
  `solver_steps`-step DDIM schedule (skip k = T / solver_steps), a guidance scale g drawn uniformly
  from `guidance_range` (the pipeline's `guidance_scale`: the embedding is of w = g - 1, the teacher's
  classifier-free guidance against the empty caption is at scale g).
- The teacher's guided DDIM step from t_{n+k} to t_n gives x_n; the target is the target network's
  consistency output at (x_n, t_n), the student's at (x_{n+k}, t_{n+k}) must match it (pseudo-Huber
  loss). The consistency output is LCMScheduler's own: c_skip(t) x + c_out(t) x0_pred(x, t).
- `init` starts the student from an LCM pipeline's UNet instead (a second stage of distillation).
- The target network is the EMA of the student at `ema_decays[0]` (no warm-up): what ships
  (`<output>/pipeline`); the online student is written beside it (`<output>/pipeline-online`).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

from edge_dm.data import load_labelled_images
from edge_dm.errors import ConfigError, ModelNotFoundError, library_reason
from edge_dm.families.lcm import guidance_embedding_tensor
from edge_dm.families.stable_diffusion import quiet
from edge_dm.jobs.training import _check_train_output, begin, fit
from edge_dm.jobs.training_t2i import caption_latents
from edge_dm.models import resolve


@dataclass(frozen=True)
class LCMTrainConfig:
    """Latent consistency distillation of the text-to-image pipeline `teacher` (a folder or a shipped
    name) on the captioned images `data`, into the run folder `output`."""
    data: str
    output: str
    teacher: str = "edm-cifar10-t2i"
    init: str | None = None  # start the student from this LCM pipeline's UNet (folder or shipped name)
    minutes: float = 10.0
    max_steps: int = 1_000_000
    batch_size: int = 512
    lr: float = 1e-4
    warmup_steps: int = 500
    ema_decays: tuple = (0.95,)  # the first is the target network and what the pipeline gets
    seed: int = 0
    checkpoint_minutes: float = 3.0
    compile: bool = False
    solver_steps: int = 50  # the teacher's DDIM schedule; LCMScheduler's original_inference_steps
    guidance_range: tuple = (1.5, 4.5)  # guidance_scale drawn uniformly from it (edm-cifar10-t2i's best: 3)
    guidance_dim: int = 256  # time_cond_proj_dim: the guidance embedding's size (diffusers' LCM default)
    huber_c: float = 0.001  # pseudo-Huber loss sqrt(d^2 + c^2) - c, per element

    def __post_init__(self):
        object.__setattr__(self, "ema_decays", tuple(self.ema_decays))
        object.__setattr__(self, "guidance_range", tuple(float(g) for g in self.guidance_range))
        if self.minutes <= 0 or self.max_steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.warmup_steps < 1:
            raise ConfigError("minutes, max_steps, batch_size, lr and warmup_steps must be positive")
        if not self.ema_decays or not all(0.0 < d < 1.0 for d in self.ema_decays):
            raise ConfigError("ema_decays must be one or more numbers in (0, 1)")
        if len(self.guidance_range) != 2 or not 1.0 <= self.guidance_range[0] <= self.guidance_range[1]:
            raise ConfigError(f"guidance_range must be two guidance scales MIN,MAX with 1 <= MIN <= MAX, "
                              f"got {list(self.guidance_range)}")
        if self.solver_steps < 2 or self.guidance_dim < 2 or self.guidance_dim % 2 or self.huber_c < 0:
            raise ConfigError("solver_steps must be >= 2, guidance_dim an even number >= 2, huber_c >= 0")


def load_teacher(spec: str):
    """The StableDiffusionPipeline `spec` (a folder or a shipped name), fp32 on the CPU, or
    ModelNotFoundError / ConfigError saying why it cannot be a teacher."""
    import torch
    from diffusers import StableDiffusionPipeline

    path = resolve(spec)
    if not (Path(path) / "model_index.json").is_file():
        raise ModelNotFoundError(f"--teacher {spec}: no diffusers pipeline folder (model_index.json) at {path}")
    try:
        with quiet():  # no loading bars
            pipe = StableDiffusionPipeline.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelNotFoundError(f"--teacher {spec}: cannot load it as a Stable Diffusion pipeline: "
                                 f"{library_reason(exc)}") from None
    if pipe.scheduler.config.get("prediction_type", "epsilon") != "epsilon":
        raise ConfigError(f"--teacher {spec} predicts {pipe.scheduler.config['prediction_type']}; "
                          "distillation here takes epsilon-prediction teachers")
    if pipe.unet.config.time_cond_proj_dim is not None:
        raise ConfigError(f"--teacher {spec} already takes a guidance embedding (a distilled model)")
    return pipe.to(dtype=torch.float32)


def student_from_teacher(teacher_unet, guidance_dim: int):
    """The teacher's UNet with a guidance embedding of `guidance_dim` added to its time embedding,
    zero-initialised: it predicts what the teacher predicts, whatever the guidance."""
    import torch
    from diffusers import UNet2DConditionModel

    student = UNet2DConditionModel(**{**teacher_unet.config, "time_cond_proj_dim": guidance_dim})
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    if unexpected or missing != ["time_embedding.cond_proj.weight"]:
        raise ConfigError(f"the teacher's UNet does not carry over: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        student.time_embedding.cond_proj.weight.zero_()
    return student


def load_student(spec: str, guidance_dim: int):
    """The UNet of the LCM pipeline (or UNet folder) `spec`, fp32, to go on distilling from: it must
    take a guidance embedding of `guidance_dim`."""
    import torch
    from diffusers import UNet2DConditionModel

    path = Path(resolve(spec))
    folder = path / "unet" if (path / "unet" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"--init {spec}: no UNet folder (config.json) at {folder}")
    try:
        with quiet():
            unet = UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelNotFoundError(f"--init {spec}: cannot load its UNet: {library_reason(exc)}") from None
    if unet.config.time_cond_proj_dim != guidance_dim:
        raise ConfigError(f"--init {spec}: its UNet takes a guidance embedding of "
                          f"{unet.config.time_cond_proj_dim}, not --guidance-dim {guidance_dim}")
    return unet


def lcm_scheduler(teacher_scheduler_config: dict, solver_steps: int):
    """The LCMScheduler of the teacher's betas whose skipping-step schedule is the solver's."""
    from diffusers import LCMScheduler

    cfg = {k: v for k, v in teacher_scheduler_config.items() if not k.startswith("_")}
    return LCMScheduler.from_config({**cfg, "original_inference_steps": solver_steps, "clip_sample": False,
                                     "timestep_spacing": "leading", "prediction_type": "epsilon"})


def solver_timesteps(T: int, solver_steps: int):
    """The DDIM solver's timesteps t_{n+k}, ascending: k - 1, 2k - 1, ..., T - 1 (k = T // solver_steps),
    the set LCMScheduler draws its inference steps from."""
    import torch

    k = T // solver_steps
    return torch.arange(1, solver_steps + 1) * k - 1


def ddim_step(x0, eps, alphas_cumprod_prev):
    """One deterministic DDIM step to the timestep of `alphas_cumprod_prev` from the predictions
    (x0, eps) at the current one (DDIMScheduler.step with eta 0), per sample."""
    return alphas_cumprod_prev.sqrt() * x0 + (1 - alphas_cumprod_prev).sqrt() * eps


def consistency_output(scheduler, eps, x, t):
    """The consistency function's value at (x, t) given the UNet's noise prediction `eps`, per sample:
    c_skip(t) x + c_out(t) x0_pred, with the LCMScheduler `scheduler`'s boundary scalings and
    alphas (what its `step` returns as `denoised`)."""
    a = scheduler.alphas_cumprod.to(x.device)[t].view(-1, 1, 1, 1)
    c_skip, c_out = (c.view(-1, 1, 1, 1) for c in scheduler.get_scalings_for_boundary_condition_discrete(t))
    return c_skip * x + c_out * (x - (1 - a).sqrt() * eps) / a.sqrt()


def train_lcm(cfg: LCMTrainConfig, log=print) -> Path:
    """Distil until `cfg.minutes` (this call) or `cfg.max_steps`, resuming from the run's checkpoint;
    returns the pipeline folder."""
    import torch

    run = _check_train_output(cfg.output)
    teacher = load_teacher(cfg.teacher)
    torch.manual_seed(cfg.seed)
    student = student_from_teacher(teacher.unet, cfg.guidance_dim) if cfg.init is None else \
        load_student(cfg.init, cfg.guidance_dim)  # a bad --init fails here, before the data loads
    t0 = time.time()
    images, labels, names = load_labelled_images(cfg.data)
    said = [f"loaded {len(images)} images of {len(names)} classes in {time.time() - t0:.1f}s"]
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = "cuda" if torch.cuda.is_available() else "cpu"
    student, emas, opt, step, gen = begin(cfg, run, student, device, log, said, "--teacher, --guidance-dim")
    origin = "the teacher's UNet" if cfg.init is None else f"{cfg.init}'s UNet"
    log(f"student: {origin} ({sum(p.numel() for p in student.parameters()) / 1e6:.2f}M parameters) "
        f"with a {cfg.guidance_dim}-d guidance embedding, on {device}")

    unet = teacher.unet.to(device).eval().requires_grad_(False)
    text_encoder = teacher.text_encoder.to(device).eval().requires_grad_(False)
    latents, labels, table, empty = caption_latents(images, labels, names, teacher.vae, teacher.tokenizer, device)
    with torch.no_grad():
        uncond = text_encoder(empty).last_hidden_state
    scheduler = lcm_scheduler(teacher.scheduler.config, cfg.solver_steps)
    alphas = scheduler.alphas_cumprod.to(device)
    T = scheduler.config.num_train_timesteps
    starts = solver_timesteps(T, cfg.solver_steps).to(device)
    skip = T // cfg.solver_steps
    log(f"encoded {len(latents)} latents {tuple(latents.shape[1:])}; "
        f"DDIM solver {cfg.solver_steps} steps (skip {skip}), "
        f"guidance scale {cfg.guidance_range[0]}-{cfg.guidance_range[1]}")
    fwd = torch.compile(student) if cfg.compile else student
    teach = torch.compile(unet) if cfg.compile else unet
    lo, hi = cfg.guidance_range

    def loss_fn():
        b = cfg.batch_size
        idx = torch.randint(0, len(latents), (b,), device=device, generator=gen)
        template = torch.randint(0, table.shape[1], (b,), device=device, generator=gen)
        z0 = latents[idx]
        t_start = starts[torch.randint(0, len(starts), (b,), device=device, generator=gen)]
        t_end = (t_start - skip).clamp(min=0)
        noise = torch.randn(z0.shape, device=device, generator=gen)
        a = alphas[t_start].view(-1, 1, 1, 1)
        x = a.sqrt() * z0 + (1 - a).sqrt() * noise
        g = lo + (hi - lo) * torch.rand(b, device=device, generator=gen)
        w_emb = guidance_embedding_tensor(g - 1, cfg.guidance_dim)
        with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            text = text_encoder(table[labels[idx], template]).last_hidden_state
            both = teach(torch.cat([x, x]), torch.cat([t_start, t_start]),
                         encoder_hidden_states=torch.cat([text, uncond.expand(b, -1, -1)])).sample.float()
            cond, free = both.chunk(2)
            eps = free + g.view(-1, 1, 1, 1) * (cond - free)
            x_prev = ddim_step((x - (1 - a).sqrt() * eps) / a.sqrt(), eps, alphas[t_end].view(-1, 1, 1, 1))
            aim = emas[0](x_prev, t_end, encoder_hidden_states=text, timestep_cond=w_emb).sample.float()
            target = consistency_output(scheduler, aim, x_prev, t_end)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            pred = fwd(x, t_start, encoder_hidden_states=text, timestep_cond=w_emb).sample
        d = consistency_output(scheduler, pred.float(), x, t_start) - target
        return (torch.sqrt(d ** 2 + cfg.huber_c ** 2) - cfg.huber_c).mean()

    step, mean = fit(cfg, student, emas, opt, step, loss_fn, run / "checkpoint.pt", log, ema_warmup=False)
    for ema, decay in zip(emas, cfg.ema_decays):
        save_pipeline(run / f"pipeline-{decay}", teacher, ema, scheduler)
    save_pipeline(run / "pipeline-online", teacher, student, scheduler)  # diffusers' script keeps both nets too
    out = save_pipeline(run / "pipeline", teacher, emas[0], scheduler)
    mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    (run / "train_state.json").write_text(json.dumps(dict(step=step, loss=mean, classes=names, pipeline_mb=mb)))
    log(f"saved the pipeline (EMA {cfg.ema_decays[0]}) at step {step} to {out} ({mb:.1f} MB)")
    return out


def save_pipeline(folder, teacher, unet, scheduler) -> Path:
    """A LatentConsistencyModelPipeline of the teacher's VAE, text encoder and tokenizer with `unet`
    and `scheduler`, saved into `folder` in the teacher's storage precision per part (the UNet and
    VAE as fp16 safetensors, loaded as fp32; the text encoder fp32)."""
    from diffusers import LatentConsistencyModelPipeline

    pipe = LatentConsistencyModelPipeline(
        vae=copy.deepcopy(teacher.vae).cpu().half(), text_encoder=copy.deepcopy(teacher.text_encoder).cpu().float(),
        tokenizer=teacher.tokenizer, unet=copy.deepcopy(unet).cpu().half(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with quiet():  # no writing bars
        pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)

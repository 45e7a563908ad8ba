"""Train `edm-cifar10-t2i`: a small Stable-Diffusion-format text-to-image pipeline on CIFAR-10, and
the small CIFAR-10 classifier that scores whether its images follow their prompt.

No text-to-image weights can be had offline, so edge-dm trains its own, as it did the unconditional
`edm-cifar10-ddpm` (edge_dm.train, whose loop, checkpoints, EMAs and resume this module shares).
The result is what diffusers' `StableDiffusionPipeline.save_pretrained` writes (AutoencoderKL,
CLIPTextModel, CLIPTokenizer, UNet2DConditionModel with cross-attention, a scheduler), so diffusers,
optimum-intel and edge-dm's stable-diffusion family load it unchanged. Three stages, each resumable
in its own folder of the run (`<output>/vae`, `<output>/unet`, `<output>/classifier`), each one
`edge-dm train` call (or several: a call stops after `--minutes` and the next resumes):

    edge-dm train --family stable-diffusion --stage vae        --data cifar10-train-jpeg.tar.gz \\
        --output runs/t2i --minutes 3
    edge-dm train --family stable-diffusion --stage unet       --data cifar10-train-jpeg.tar.gz \\
        --output runs/t2i --minutes 14 --compile
    edge-dm train --family stable-diffusion --stage classifier --data cifar10-train-jpeg.tar.gz \\
        --output runs/t2i --minutes 2 --eval-data cifar10-test-jpeg.tar.gz

The pipeline is then `runs/t2i/pipeline` (ships as models/edm-cifar10-t2i), the classifier
`runs/t2i/classifier/model`. Design, and why:

- Latents 4x16x16 (the VAE downsamples 2x). At 4x8x8 (4x) the autoencoder keeps 256 numbers of a
  32x32x3 image, 12x fewer, and without a perceptual or adversarial loss (their VGG and
  discriminator weights cannot be had offline, nor trained in minutes) its blur alone would cost
  FID points the issue's FID <= 20 cannot spare; 4x16x16 keeps a third of the numbers and
  reconstructs nearly losslessly. The UNet at 16x16 still costs about a quarter of the
  pixel-space UNet at 32x32. Loss: L1 reconstruction + 1e-6 KL (Latent Diffusion's weight); the
  latents' scaling_factor is set to 1 / their std after training, as Stable Diffusion's was.
- Sizes: the saved pipeline must stay <= 15 MB. Cross-attention blocks are heavy (a transformer with
  a GEGLU feed-forward each), so the UNet is (64, 128, 128) channels at 16/8/4, one resnet a level,
  cross-attention at the 8x8 level (down and up) and in the 4x4 mid block: 5.6M parameters. It and
  the VAE ((32, 64), 0.66M) are stored in fp16: diffusers loads them as fp32 models. The text
  encoder (0.35M) is stored in fp32, because transformers loads fp16 weights as an fp16 model,
  which the fp32 UNet would then be fed. About 14 MB in all.
- Captions: every class name in TEMPLATES' phrasings ("a photo of a horse", "a blurry photo of a
  ship", ...), one template drawn per image and step; 10% of captions are empty, so the model also
  learns the unconditional prediction that classifier-free guidance subtracts.
- Tokenizer: a CLIPTokenizer (byte-level BPE, as SD's) whose merges are learnt from the caption
  words, so each caption word is one token; the 256 byte characters stay in the vocabulary, so any
  other text still tokenizes (character by character). model_max_length stays 77, SD's, which
  optimum-intel's export and OpenVINO GenAI are known to run with.
- Text encoder: a tiny CLIPTextModel (width 128, 2 layers) trained jointly with the UNet, as Latent
  Diffusion trained its text transformer from scratch. A frozen random encoder would work for ten
  class words, but its outputs mix the class token with the template's tokens through random
  attention and a final LayerNorm; trained, the encoder can make the class what the UNet sees,
  at about 1% of the UNet's cost. Its EMA is kept with the UNet's (one module, one EMA).
- UNet: epsilon prediction, DDPM 1000 steps, linear betas 1e-4..0.02 (edge_dm.train's; the
  latents have unit variance like pixels), AdamW with warm-up, EMAs, bf16 autocast on CUDA. The
  shipped scheduler is DDIM with those betas and clip_sample off (latents are not in [-1, 1]).
- Classifier: see edge_dm.classifier (VGG-style, 0.64M parameters, fp16 storage, 1.3 MB), trained
  with flips and +-4 pixel shifts, cross-entropy with label smoothing 0.1.
"""
from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_dm.classifier import DEFAULT_CHANNELS as CLASSIFIER_CHANNELS
from edge_dm.classifier import build_classifier, class_word, predict, save_classifier
from edge_dm.data import load_images, load_labelled_images
from edge_dm.errors import ConfigError, ModelNotFoundError
from edge_dm.families.stable_diffusion import quiet
from edge_dm.jobs.training import DDPM_BETAS, _check_train_output, begin, fit, random_batch

STAGES = ("vae", "unet", "classifier")
TEMPLATES = (
    "a photo of {a} {c}", "a blurry photo of {a} {c}", "a picture of {a} {c}", "a small photo of {a} {c}",
    "a photo of the {c}", "a close photo of {a} {c}", "a bright photo of {a} {c}", "a dark photo of {a} {c}",
    "an image of {a} {c}", "a cropped photo of {a} {c}",
)
EMPTY = ""
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77  # SD's; what optimum-intel and OpenVINO GenAI are known to run
# per stage: what lr, batch_size, warmup_steps and ema_decays left unset become
STAGE_DEFAULTS = {
    "vae": dict(lr=4e-4, batch_size=256, warmup_steps=200, ema_decays=(0.999,)),
    "unet": dict(lr=4e-4, batch_size=512, warmup_steps=1000, ema_decays=(0.9995, 0.9999)),
    "classifier": dict(lr=2e-3, batch_size=512, warmup_steps=200, ema_decays=(0.999,)),
}
KL_WEIGHT = 1e-6  # Latent Diffusion's KL-f* autoencoders


@dataclass(frozen=True)
class TextToImageTrainConfig:
    """One stage of the text-to-image run `output` (a sibling of edge_dm.train.TrainConfig; the
    options they share mean the same). lr, batch_size, warmup_steps, ema_decays: None takes the
    stage's default (STAGE_DEFAULTS), filled in on construction so the saved config says what ran."""
    data: str
    output: str
    stage: str = "unet"
    minutes: float = 24.0
    max_steps: int = 1_000_000
    batch_size: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    ema_decays: tuple | None = None  # one EMA per decay; the first is what the pipeline gets
    seed: int = 0
    checkpoint_minutes: float = 3.0
    compile: bool = False
    block_out_channels: tuple = (64, 128, 128)  # UNet, at latent 16x16, 8x8, 4x4
    layers_per_block: int = 1
    cross_attention_levels: tuple = (1,)  # UNet levels with cross-attention (the 4x4 mid block always has it)
    vae_channels: tuple = (32, 64)  # AutoencoderKL levels: the latent is 2 ** (levels - 1) times smaller
    text_width: int = 128  # CLIPTextModel hidden size = the UNet's cross_attention_dim
    text_layers: int = 2
    empty_caption_rate: float = 0.1
    classifier_channels: tuple = CLASSIFIER_CHANNELS
    eval_data: str | None = None  # classifier: labelled held-out images whose accuracy is logged and saved

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ConfigError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        for name, value in STAGE_DEFAULTS[self.stage].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        object.__setattr__(self, "ema_decays", tuple(self.ema_decays))
        if self.minutes <= 0 or self.max_steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.warmup_steps < 1:
            raise ConfigError("minutes, max_steps, batch_size, lr and warmup_steps must be positive")
        if not self.ema_decays or not all(0.0 < d < 1.0 for d in self.ema_decays):
            raise ConfigError("ema_decays must be one or more numbers in (0, 1)")
        if not 0.0 <= self.empty_caption_rate < 1.0:
            raise ConfigError(f"empty_caption_rate must lie in [0, 1), got {self.empty_caption_rate}")
        for name in ("block_out_channels", "vae_channels"):
            channels = getattr(self, name)
            if len(channels) < 2 or any(c % 32 for c in channels):
                raise ConfigError(f"{name} needs two or more levels, each a multiple of 32 channels (GroupNorm)")
        if self.layers_per_block < 1 or self.text_layers < 1 or self.text_width % 32:
            raise ConfigError("layers_per_block and text_layers must be >= 1, text_width a multiple of 32")
        if not set(self.cross_attention_levels) <= set(range(len(self.block_out_channels))):
            raise ConfigError(f"cross_attention_levels must name levels 0-{len(self.block_out_channels) - 1}, "
                              f"got {list(self.cross_attention_levels)}")

    def vae_config(self) -> dict:
        n = len(self.vae_channels)
        return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(self.vae_channels),
                    layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * n,
                    up_block_types=("UpDecoderBlock2D",) * n, norm_num_groups=32, sample_size=32)

    def unet_config(self, image_size: int = 32) -> dict:
        n = len(self.block_out_channels)
        down = tuple("CrossAttnDownBlock2D" if i in self.cross_attention_levels else "DownBlock2D" for i in range(n))
        up = tuple(b.replace("Down", "Up") for b in reversed(down))
        return dict(sample_size=image_size // 2 ** (len(self.vae_channels) - 1), in_channels=4, out_channels=4,
                    block_out_channels=tuple(self.block_out_channels), layers_per_block=self.layers_per_block,
                    down_block_types=down, up_block_types=up, cross_attention_dim=self.text_width,
                    attention_head_dim=8, norm_num_groups=32)

    def text_config(self, tokenizer) -> dict:
        return dict(vocab_size=len(tokenizer), hidden_size=self.text_width, num_hidden_layers=self.text_layers,
                    num_attention_heads=max(1, self.text_width // 32), intermediate_size=2 * self.text_width,
                    max_position_embeddings=MAX_LENGTH, projection_dim=self.text_width,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)


# --- captions and their tokenizer ------------------------------------------------------------------
def captions(class_name: str) -> list[str]:
    """The class in every template (index = template), with "an" before a vowel."""
    c = class_word(class_name)
    return [t.format(a="an" if c[:1] in "aeiou" else "a", c=c) for t in TEMPLATES]


def caption_tokenizer(folder, texts):
    """A CLIPTokenizer written into `folder` whose BPE merges are learnt from the words of `texts`, so
    each of those words is one token (vocab.json holds the 256 byte characters, alone and
    word-final, then the merged tokens, then the two special tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    words = sorted({w for t in texts for w in t.lower().split()})
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bpe.train_from_iterator(words, trainers.BpeTrainer(vocab_size=1_000_000, min_frequency=1, show_progress=False,
                                                       end_of_word_suffix="</w>"))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(bpe.to_str())["model"]["merges"]]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    known = set(vocab)
    for a, b in merges:
        if a + b not in known:
            vocab.append(a + b)
            known.add(a + b)
    vocab += [BOS, EOS]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), "utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_LENGTH, bos_token=BOS, eos_token=EOS,
                                              unk_token=EOS, pad_token=EOS)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _token_ids(tokenizer, texts):
    return tokenizer(texts, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt").input_ids


def caption_latents(images, labels, names, vae, tokenizer, device: str):
    """What a text-to-image UNet trains on, on `device`: (the scaled latents of every image and of its
    mirror image, encoded once by the frozen `vae`; their labels; the token ids of every caption as
    [class, template, token]; the empty caption's token ids)."""
    import torch

    vae = vae.to(device)
    scale = vae.config.scaling_factor
    with torch.no_grad():
        x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        latents = torch.cat([vae.encode(v[i:i + 500]).latent_dist.mean * scale
                             for v in (x, x.flip(3)) for i in range(0, len(v), 500)])
        del x
    labels = torch.from_numpy(labels).to(device).repeat(2)
    table = torch.stack([_token_ids(tokenizer, captions(n)) for n in names]).to(device)
    return latents, labels, table, _token_ids(tokenizer, [EMPTY]).to(device)


# --- the stages ----------------------------------------------------------------------------------------
def train_text_to_image(cfg: TextToImageTrainConfig, log=print) -> Path:
    """Run stage `cfg.stage` until `cfg.minutes` (this call) or `cfg.max_steps`, resuming from its
    checkpoint; returns what it made: the VAE folder, the pipeline folder, or the classifier folder."""
    import torch

    run = _check_train_output(cfg.output)
    torch.manual_seed(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    stage = {"vae": _train_vae, "unet": _train_unet, "classifier": _train_classifier}[cfg.stage]
    return stage(cfg, run, "cuda" if torch.cuda.is_available() else "cpu", log)


def _start(cfg, run: Path, model, device: str, log, said: list, options: str):
    """The EMAs, optimizer and step of stage `cfg.stage` (resumed from its checkpoint), its folder made
    and its config saved. Called once every check has passed: nothing is written before."""
    folder = run / cfg.stage
    model, emas, opt, step, gen = begin(cfg, folder, model, device, log, said, options, f"resumed {cfg.stage}")
    n = sum(p.numel() for p in model.parameters())
    log(f"{cfg.stage}: {n / 1e6:.2f}M parameters on {device}")
    return folder, folder / "checkpoint.pt", emas, opt, step, gen


def _train_vae(cfg, run, device, log) -> Path:
    import torch
    from diffusers import AutoencoderKL

    t0 = time.time()
    images = torch.from_numpy(load_images(cfg.data)).to(device)
    said = [f"loaded {len(images)} images in {time.time() - t0:.1f}s"]
    model = AutoencoderKL(**cfg.vae_config())
    folder, ckpt, emas, opt, step, gen = _start(cfg, run, model, device, log, said, "--vae-channels")

    def loss_fn():  # the VAE is small and this stage short: no torch.compile
        x, _ = random_batch(images, cfg.batch_size, gen)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            posterior = model.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, device=device, generator=gen)
            rec = model.decode(z).sample
        return (rec.float() - x).abs().mean() + KL_WEIGHT * posterior.kl().float().mean()

    step, mean = fit(cfg, model, emas, opt, step, loss_fn, ckpt, log, log_every=200)
    vae = emas[0]
    with torch.no_grad():  # latents of unit variance for the UNet, as SD's scaling_factor makes them
        x = images[:2000].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        z = torch.cat([vae.encode(x[i:i + 250]).latent_dist.mean for i in range(0, len(x), 250)])
        rec = torch.cat([vae.decode(z[i:i + 250]).sample for i in range(0, len(z), 250)]).clamp(-1, 1)
        mse = ((rec - x) / 2).pow(2).mean().item()
        psnr = 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()
        scale = 1.0 / z.float().std().item()
    vae.register_to_config(scaling_factor=scale)
    out = folder / "model"
    vae.save_pretrained(out)
    (folder / "train_state.json").write_text(json.dumps(dict(step=step, loss=mean, psnr=psnr, scaling_factor=scale)))
    log(f"saved the VAE (EMA {cfg.ema_decays[0]}) at step {step} to {out}: reconstruction PSNR {psnr:.2f} dB "
        f"on {len(x)} training images, latent scaling factor {scale:.4f}")
    return out


def _text_to_image_model(cfg, tokenizer, image_size: int):
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    return torch.nn.ModuleDict(dict(
        unet=UNet2DConditionModel(**cfg.unet_config(image_size)),
        text_encoder=CLIPTextModel(CLIPTextConfig(**cfg.text_config(tokenizer))),
    ))


def _train_unet(cfg, run, device, log) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler

    vae_dir = run / "vae" / "model"
    if not (vae_dir / "config.json").is_file():
        raise ConfigError(f"no trained VAE in {vae_dir}: run `edge-dm train --family stable-diffusion --stage vae` "
                          f"with --output {cfg.output} first")
    try:
        vae = AutoencoderKL.from_pretrained(vae_dir).float().eval().requires_grad_(False)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load the VAE in {vae_dir}: {str(exc).splitlines()[0]}") from None
    if tuple(vae.config.block_out_channels) != tuple(cfg.vae_channels):
        raise ConfigError(f"the VAE in {vae_dir} has channels {list(vae.config.block_out_channels)}, not "
                          f"--vae-channels {list(cfg.vae_channels)}: pass the ones it was trained with")
    t0 = time.time()
    images, labels, names = load_labelled_images(cfg.data)
    said = [f"loaded {len(images)} images of {len(names)} classes in {time.time() - t0:.1f}s"]
    with tempfile.TemporaryDirectory() as tmp:  # the tokenizer follows from the class names
        tokenizer = caption_tokenizer(Path(tmp) / "tokenizer", [c for n in names for c in captions(n)])
    model = _text_to_image_model(cfg, tokenizer, images.shape[1])
    folder, ckpt, emas, opt, step, gen = _start(
        cfg, run, model, device, log, said, "--channels, --layers-per-block, --cross-attention-levels, --text-width, "
        "--text-layers, or the data's classes")
    latents, labels, table, empty = caption_latents(images, labels, names, vae, tokenizer, device)
    log(f"encoded {len(latents)} latents {tuple(latents.shape[1:])} (with mirror images); "
        f"{len(TEMPLATES)} caption templates, {cfg.empty_caption_rate:.0%} empty")
    sched = DDPMScheduler(**DDPM_BETAS)
    alphas = sched.alphas_cumprod.to(device)
    unet = torch.compile(model["unet"]) if cfg.compile else model["unet"]

    def loss_fn():
        b = cfg.batch_size
        idx = torch.randint(0, len(latents), (b,), device=device, generator=gen)
        template = torch.randint(0, table.shape[1], (b,), device=device, generator=gen)
        ids = table[labels[idx], template]
        drop = torch.rand(b, device=device, generator=gen) < cfg.empty_caption_rate
        ids = torch.where(drop[:, None], empty, ids)
        z0 = latents[idx]
        t = torch.randint(0, 1000, (b,), device=device, generator=gen)
        noise = torch.randn(z0.shape, device=device, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            text = model["text_encoder"](ids).last_hidden_state
            pred = unet(zt, t, encoder_hidden_states=text).sample
        return torch.nn.functional.mse_loss(pred.float(), noise)

    step, mean = fit(cfg, model, emas, opt, step, loss_fn, ckpt, log)
    vae = AutoencoderKL.from_pretrained(vae_dir)  # as trained, on the CPU
    for ema, decay in zip(emas, cfg.ema_decays):
        save_pipeline(folder / f"pipeline-{decay}", ema, vae, tokenizer)
    out = save_pipeline(run / "pipeline", emas[0], vae, tokenizer)
    mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    (folder / "train_state.json").write_text(json.dumps(dict(step=step, loss=mean, classes=names, pipeline_mb=mb)))
    log(f"saved the pipeline (EMA {cfg.ema_decays[0]}) at step {step} to {out} ({mb:.1f} MB)")
    return out


def scheduler():
    """The shipped scheduler: DDIM with the training betas; clip_sample off (latents are not in [-1, 1])."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**DDPM_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                         prediction_type="epsilon")


def save_pipeline(folder, model, vae, tokenizer) -> Path:
    """A StableDiffusionPipeline of `model`'s UNet and text encoder (a ModuleDict), `vae` and
    `tokenizer`, saved into `folder`: UNet and VAE weights in fp16 (diffusers loads them as fp32),
    the text encoder in fp32 (transformers would load fp16 weights as an fp16 model)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).cpu().half(), text_encoder=copy.deepcopy(model["text_encoder"]).cpu().float(),
        tokenizer=tokenizer, unet=copy.deepcopy(model["unet"]).cpu().half(), scheduler=scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with quiet():  # no writing bars
        pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def _train_classifier(cfg, run, device, log) -> Path:
    import torch
    import torch.nn.functional as F

    t0 = time.time()
    images, labels, names = load_labelled_images(cfg.data)
    held_out = None
    if cfg.eval_data:
        eval_images, eval_labels, eval_names = load_labelled_images(cfg.eval_data)
        if eval_names != names:
            raise ConfigError(f"--eval-data {cfg.eval_data} has classes {eval_names}, the training data {names}")
        held_out = (eval_images, eval_labels)
    said = [f"loaded {len(images)} images of {len(names)} classes in {time.time() - t0:.1f}s"]
    model = build_classifier(tuple(cfg.classifier_channels), len(names))
    folder, ckpt, emas, opt, step, gen = _start(cfg, run, model, device, log, said, "--classifier-channels")
    x_all = torch.from_numpy(images).to(device)
    y_all = torch.from_numpy(labels).to(device)
    fwd = torch.compile(model) if cfg.compile else model
    eye = torch.eye(2, device=device)

    def loss_fn():
        x, idx = random_batch(x_all, cfg.batch_size, gen)
        shift = torch.randint(-4, 5, (len(x), 2), device=device, generator=gen).float() * 2 / x.shape[-1]
        theta = torch.cat([eye.expand(len(x), 2, 2), shift[:, :, None]], 2)  # +-4 pixel shifts, mirrored edges
        x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), mode="nearest",
                          padding_mode="reflection", align_corners=False)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = fwd(x)
        return F.cross_entropy(logits.float(), y_all[idx], label_smoothing=0.1)

    step, mean = fit(cfg, model, emas, opt, step, loss_fn, ckpt, log, log_every=200)
    best = emas[0]
    extra = dict(step=step, train_accuracy=float((predict(best, images[::10]) == labels[::10]).mean()))
    if held_out is not None:
        extra["test_accuracy"] = float((predict(best, held_out[0]) == held_out[1]).mean())
    out = save_classifier(best, folder / "model", cfg.classifier_channels, names, images.shape[1], **extra)
    (folder / "train_state.json").write_text(json.dumps(dict(loss=mean, **extra)))
    log(f"saved the classifier (EMA {cfg.ema_decays[0]}) at step {step} to {out}: "
        + ", ".join(f"{k} {v:.4f}" for k, v in extra.items() if k != "step"))
    return out

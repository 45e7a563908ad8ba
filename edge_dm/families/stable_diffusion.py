"""Text-to-image latent diffusion: Stable Diffusion 1.x/2.x and the models that share their UNet
(SD-Turbo): a UNet2DConditionModel on VAE latents, conditioned on CLIP text embeddings, with
classifier-free guidance.

Bundles are exported through optimum-intel into the OpenVINO diffusers layout that
`optimum.intel.OVStableDiffusionPipeline` and `openvino_genai.Text2ImagePipeline` load unchanged:
text_encoder/, unet/, vae_decoder/, vae_encoder/ (each openvino_model.xml/.bin + config.json),
tokenizer/ (with openvino_tokenizer.xml and openvino_detokenizer.xml for GenAI), scheduler/,
model_index.json; edge-dm adds recipe.json, calibration.npz and report.png.

The denoiser with guidance g runs the UNet on [x, x] with [uncond, text] conditioning and returns
eps_u + g (eps_c - eps_u), as diffusers' StableDiffusionPipeline does; a calibration record is that
batch of two, as the UNet receives it.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import re
from pathlib import Path

import numpy as np

from edge_dm.configs import SamplingConfig
from edge_dm.data import read_prompts
from edge_dm.errors import BundleError, ConfigError, ModelNotFoundError, interrupted, library_reason
from edge_dm.families.base import (
    SAMPLE,
    TIMESTEP,
    BundleFiles,
    Components,
    Conditioning,
    Family,
    Layout,
    LoadedModel,
    QuantizationPolicy,
)
from edge_dm.families.unet2d import cache_cuts
from edge_dm.images import to_uint8
from edge_dm.outputs import ScratchDir, atomic_output, home
from edge_dm.resources import shipped_prompts
from edge_dm.runtime import save_ir

TEXT = "encoder_hidden_states"
UNCOND = "uncond:"  # prefix of a conditioning entry's unconditional (negative prompt) half
MAX_SIZE_FACTOR = 2  # the largest image side edge-dm takes, in multiples of the model's own
# a text-to-image model's own scheduler, where edge-dm offers it, is its default (others: the family's)
OWN_SCHEDULERS = {"DDIMScheduler": "ddim", "EulerDiscreteScheduler": "euler", "LCMScheduler": "lcm",
                  "EulerAncestralDiscreteScheduler": "euler-ancestral", "DPMSolverMultistepScheduler": "dpm-solver"}

# Stable Diffusion 1.5's architecture (diffusers configs), for timing with seeded random weights
SD15 = dict(
    unet=dict(sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=768, attention_head_dim=8,
              block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
              down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
              up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
    vae=dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
             layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
             up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512),
    text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu"),
)

log = logging.getLogger("edge_dm")


def part_config(folder: Path, part: str) -> dict:
    """A bundle component's config.json (unet/, vae_decoder/, ...)."""
    try:
        return json.loads((Path(folder) / part / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"unreadable {part}/config.json in {folder}: {exc}") from None


def vae_config(folder: Path) -> dict:
    """The VAE's config.json: vae_decoder/ in a bundle, vae/ in a diffusers folder."""
    return part_config(folder, "vae_decoder" if (Path(folder) / "vae_decoder").is_dir() else "vae")


def byte_level_tokenizer(folder: Path, max_length: int = 77):
    """A CLIPTokenizer of the 256 byte-level characters (no merges), written into `folder`: the
    tokenizer of random-weight architectures, which have no vocabulary of their own."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", "utf-8")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=max_length, bos_token="<|startoftext|>",
                                         eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                         pad_token="<|endoftext|>")


def tokenize(folder: Path, texts: list) -> np.ndarray:
    """Token ids (N, max_length) of `texts` by the CLIP tokenizer in `folder`, padded as diffusers
    pads; a text cut to the tokenizer's length is named in one line (logger "edge_dm")."""
    from transformers import CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    tokenizer = CLIPTokenizer.from_pretrained(folder)
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="np").input_ids
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its own note on long texts, which edge-dm gives once below
    try:
        lengths = [len(tokenizer(text).input_ids) for text in texts]
    finally:
        transformers_logging.set_verbosity(level)
    cut = [t for t, n in zip(texts, lengths) if n > tokenizer.model_max_length and t not in _cut]
    if cut:
        _cut.update(cut)
        log.warning(f"Note: {len(cut)} prompt{'s are' if len(cut) > 1 else ' is'} longer than the text encoder's "
                    f"{tokenizer.model_max_length} tokens; it reads the first {tokenizer.model_max_length} "
                    f"(first: {cut[0][:60]!r})")
    return ids


_cut: set = set()  # prompts named as cut already


class TextConditioning(Conditioning):
    """CLIP text embeddings per image, classifier-free guidance, the VAE decoder's pixels."""

    takes_prompts = True
    sampling_defaults = {**Conditioning.sampling_defaults, "guidance_scale": 7.5}  # diffusers' SD defaults
    net_inputs_names = (SAMPLE, TIMESTEP, TEXT)
    guided = True  # takes classifier-free guidance

    def vae_scale(self, folder: Path) -> int:
        return 2 ** (len(vae_config(folder).get("block_out_channels", [0] * 4)) - 1)

    def trained_size(self, folder: Path) -> int:
        """The image side the UNet was made for, in pixels."""
        size = part_config(folder, "unet").get("sample_size", 64)
        return (size if isinstance(size, int) else size[0]) * self.vae_scale(folder)

    def image_size(self, folder: Path, sampling: SamplingConfig) -> tuple[int, int]:
        default = self.trained_size(folder)
        return sampling.height or default, sampling.width or default

    def sample_shape(self, bundle: BundleFiles, sampling: SamplingConfig) -> tuple:
        h, w = self.image_size(bundle.path, sampling)
        f = self.vae_scale(bundle.path)
        return (part_config(bundle.path, "unet").get("in_channels", 4), h // f, w // f)

    def guidance(self, sampling: SamplingConfig) -> float | None:
        g = sampling.guidance_scale
        g = self.sampling_defaults.get("guidance_scale", 1.0) if g is None else g
        return g if self.guided and g > 1 else None

    def check(self, bundle: BundleFiles, sampling: SamplingConfig, prompts: list) -> None:
        if not prompts:
            raise ConfigError(f"{bundle.path} holds a text-to-image model: give `prompt`")
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise ConfigError(f"prompts must be strings, got {type(bad[0]).__name__}")
        self.check_sampling(bundle, sampling)

    def check_sampling(self, bundle: BundleFiles, sampling: SamplingConfig) -> None:
        h, w = self.image_size(bundle.path, sampling)
        unet = part_config(bundle.path, "unet")
        multiple = self.vae_scale(bundle.path) * 2 ** (len(unet.get("block_out_channels", [0] * 4)) - 1)
        largest = MAX_SIZE_FACTOR * self.trained_size(bundle.path)
        for name, v in (("height", h), ("width", w)):
            if v % multiple:
                raise ConfigError(f"`{name}` {v} does not suit this model: it must be a multiple of {multiple} "
                                  "(the VAE's and the UNet's downsampling)")
            if v > largest:
                raise ConfigError(f"`{name}` {v} is more than {MAX_SIZE_FACTOR}x the "
                                  f"{largest // MAX_SIZE_FACTOR} pixels "
                                  f"this model was made for: its images would not hold together, and memory and time "
                                  f"grow with the area ({(h * w) / (largest / MAX_SIZE_FACTOR) ** 2:.0f}x)")

    def calibration_prompts(self, prompts_file: str | None) -> tuple[list, list]:
        prompts = read_prompts(prompts_file or shipped_prompts())
        return prompts, read_prompts(shipped_prompts(held_out=True))

    def embed(self, parts: Components, texts: list) -> dict:
        """{net input: array (N, ...)} of each text: here the text encoder's last hidden state."""
        ids = tokenize(parts.path / "tokenizer", texts)
        first = [next(iter(parts.run("text_encoder", ids[i:i + 1]).values())) for i in range(len(texts))]
        return {TEXT: np.concatenate(first)}  # the last hidden state

    def encode(self, parts: Components, prompts: list, sampling: SamplingConfig) -> dict | None:
        """Each net input the prompts give, per image, and where guided the negative prompt's
        (UNCOND + name)."""
        if not prompts:
            return None
        guided = self.guidance(sampling) is not None
        texts = sorted(set(prompts) | ({sampling.negative_prompt} if guided else set()))
        table = self.embed(parts, texts)
        index = {t: i for i, t in enumerate(texts)}
        rows = np.array([index[p] for p in prompts])
        cond = {k: v[rows] for k, v in table.items()}
        if guided:
            neg = np.full(len(prompts), index[sampling.negative_prompt])
            cond.update({UNCOND + k: v[neg] for k, v in table.items()})
        return cond

    def net_inputs(self, x, t, cond, guidance) -> dict:
        own = {k: v for k, v in cond.items() if not k.startswith(UNCOND)}
        if guidance:
            x, t = np.concatenate([x, x]), np.concatenate([t, t])
            own = {k: np.concatenate([cond.get(UNCOND + k, v), v]) for k, v in own.items()}
        return {SAMPLE: x, TIMESTEP: t, **own}

    def combine(self, out, guidance):
        if not guidance:
            return out
        uncond, text = np.split(out, 2)
        return uncond + guidance * (text - uncond)

    def component_inputs(self, bundle: BundleFiles, component: str, prompts: list, latents) -> list[tuple]:
        """A text encoder's: the token ids of each prompt and of the empty prompt; the VAE decoder's:
        each final latent, scaled as decode scales it."""
        if component == "vae_decoder":
            scale = vae_config(bundle.path).get("scaling_factor", 0.18215)
            return [(x[None] / scale,) for x in latents]
        tokenizer = "tokenizer_2" if component == "text_encoder_2" else "tokenizer"
        ids = tokenize(Path(bundle.path) / tokenizer, [*dict.fromkeys([*prompts, ""])])
        return [(ids[i:i + 1],) for i in range(len(ids))]

    def decode(self, parts: Components, x):
        """The VAE decoder's images of the final latents, one latent a request."""
        scale = vae_config(parts.path).get("scaling_factor", 0.18215)
        images = [next(iter(parts.run("vae_decoder", x[i:i + 1] / scale).values())) for i in range(len(x))]
        return to_uint8(np.concatenate(images))


class StableDiffusion(Family):
    name = "stable-diffusion"
    architectures = ("sd15",)
    layout = Layout(components={"unet": "unet/openvino_model.xml", "text_encoder": "text_encoder/openvino_model.xml",
                                "vae_decoder": "vae_decoder/openvino_model.xml"},
                    scheduler_file="scheduler/scheduler_config.json")
    conditioning = TextConditioning()
    # Q-Diffusion's shortcut split, made on the exported IR (ir_for_quantization); nothing float by default
    # (a model's measured set is its registry entry's): docs/QUANTIZATION.md, "Text-to-image defaults"
    policy = QuantizationPolicy(split_shortcut=True, report_images=4)
    reuse_export = True  # optimum-intel's export of a full pipeline takes minutes
    pipeline_classes = ("StableDiffusionPipeline",)  # diffusers' _class_name in model_index.json
    parts = ("text_encoder", "tokenizer", "unet", "vae", "scheduler")  # the pipeline's folders
    optimum_class = "OVStableDiffusionPipeline"
    tokenizers = ("tokenizer",)

    def recognises(self, path: Path) -> bool:
        index = Path(path) / "model_index.json"
        try:
            data = json.loads(index.read_text())
            unet = json.loads((Path(path) / "unet" / "config.json").read_text())
        except (OSError, ValueError):
            return False
        folders = {k for k, v in data.items() if isinstance(v, list) and v[0]}
        return (set(self.parts) <= folders and data.get("_class_name") in self.pipeline_classes
                and self.takes_unet(unet))

    def takes_unet(self, unet_config: dict) -> bool:
        """Whether a UNet of this config belongs to this family (LCM's has a guidance embedding)."""
        return not unet_config.get("time_cond_proj_dim")

    def load(self, spec: str, source: str) -> LoadedModel:
        from diffusers import DDPMScheduler, UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")
        sched = dict(DDPMScheduler.load_config(source, subfolder="scheduler"))
        own = OWN_SCHEDULERS.get(sched.get("_class_name"))
        return LoadedModel(spec, str(source), self, {"unet": unet.float().eval()}, sched,
                           sampling=dict(scheduler=own) if own else {})

    def random(self, arch: str) -> LoadedModel | None:
        """`random:sd15`: SD 1.5's UNet, text encoder and VAE with seeded random weights (timing only),
        saved as a diffusers pipeline in the edge-dm cache so optimum-intel can export it."""
        if arch not in self.architectures:
            return None
        folder = home() / "random" / arch
        if not (folder / "model_index.json").exists():
            with atomic_output(folder, overwrite=True) as tmp:
                self.random_pipeline(arch).save_pretrained(tmp)
        return self.load(f"random:{arch}", str(folder))

    def random_pipeline(self, arch: str):
        return random_sd15_pipeline()

    def export(self, m: LoadedModel, folder: Path, precision: str):
        """The optimum-intel OpenVINO layout of the pipeline (fp32, or fp16 weights), with each
        tokenizer converted for OpenVINO GenAI."""
        import openvino as ov
        import optimum.intel

        with ScratchDir() as scratch, scratch.as_tempdir(), quiet():  # optimum's own temporary export folder
            try:
                pipe = getattr(optimum.intel, self.optimum_class).from_pretrained(
                    m.source, export=True, compile=False, load_in_8bit=False)
            except Exception as exc:  # optimum and its exporters raise many kinds
                if interrupted(exc):  # Ctrl-C or SIGTERM while exporting: end like any other interrupt
                    raise KeyboardInterrupt from None
                raise ModelNotFoundError(f"optimum-intel could not export {m.spec}: {library_reason(exc)}") from None
            pipe.save_pretrained(folder)
            del pipe
            gc.collect()  # optimum's temporary folder goes with its pipeline, before the scratch folder
        for name, rel in self.layout.components.items():
            if name != "unet" and precision == "fp16":
                save_ir(ov.Core().read_model(Path(folder) / rel), Path(folder) / rel, fp16=True)
        for tokenizer in self.tokenizers:
            convert_tokenizer(Path(folder) / tokenizer)
        unet = per_sample_timestep(ov.Core().read_model(Path(folder) / self.layout.components["unet"]))
        save_ir(unet, Path(folder) / self.layout.components["unet"], fp16=precision == "fp16")
        shapes = {i.get_any_name(): str(i.get_partial_shape()) for i in unet.inputs}
        return dict(inputs=shapes, sample_shape=list(m.sample_shape)), unet

    def cache_features(self, model) -> dict:
        return cache_cuts(model)

    def for_quantization(self, m: LoadedModel, split_shortcut: bool) -> tuple[LoadedModel, dict]:
        """`m` unchanged, split or not: optimum-intel exports the pipeline from the model's folder, not
        from `m`'s torch modules, so the shortcut split is made on the exported IR (ir_for_quantization)."""
        return m, {}

    def ir_for_quantization(self, model, split_shortcut: bool) -> tuple[object, dict]:
        """The fp32 denoiser IR `edge-dm quantize` calibrates, quantizes and measures against: `model`
        (the openvino.Model of the fp32 export, left unchanged) rewritten into the same function as
        asked, and recipe fields saying what changed. The quantize job calls it right after the fp32
        export, with the split flag it passed to for_quantization.

        With the split, each Convolution that reads a channel Concat (each up-path resnet's 1x1
        `conv_shortcut` of cat(running state, skip)) becomes `conv_shortcut.a` + `conv_shortcut.b` on
        the two parts (edge_dm.families.shortcut_split.split_concat_convolutions), so NNCF gives each
        part a quantizer of its own; `split_convs` counts them. `conv1` reads the Concat through
        GroupNorm and SiLU and stays whole, as in unet2d."""
        if not split_shortcut:
            return model, dict(split_convs=0)
        from edge_dm.families.shortcut_split import split_concat_convolutions

        model, n = split_concat_convolutions(model)
        return model, dict(split_convs=n)

    def float_names(self, names: tuple, split_shortcut: bool) -> tuple:
        """Without the split, a half of one shortcut convolution (`conv_shortcut.a`) keeps the whole
        convolution in float."""
        if split_shortcut:
            return names
        return tuple(dict.fromkeys(re.sub(r"\.conv_shortcut\.[ab]$", ".conv_shortcut", n) for n in names))


@contextlib.contextmanager
def quiet():
    """While optimum-intel exports: its libraries' notes (tracer warnings, deprecations, the HF cache's
    missing-file lines, transformers' and optimum's info and warnings) kept off edge-dm's output."""
    import io
    import warnings

    loggers = [logging.getLogger(name) for name in ("optimum", "transformers", "diffusers", "nncf", "torch")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def per_sample_timestep(unet):
    """`unet` (an openvino.Model of optimum-intel's export) with its timestep input reshaped from [1],
    broadcast over the batch, to [-1], one per sample: a request can then hold images at different
    steps, and optimum-intel and OpenVINO GenAI still run it unchanged. Returns the same model."""
    import openvino as ov

    unet.reshape({TIMESTEP: ov.PartialShape([-1])})
    return unet


def convert_tokenizer(folder: Path) -> None:
    """openvino_tokenizer.xml and openvino_detokenizer.xml beside the Hugging Face tokenizer files,
    which OpenVINO GenAI needs (optimum-intel writes them when it can; this makes sure)."""
    if (folder / "openvino_tokenizer.xml").exists() and (folder / "openvino_detokenizer.xml").exists():
        return
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer as convert
    from transformers import CLIPTokenizer

    tokenizer, detokenizer = convert(CLIPTokenizer.from_pretrained(folder), with_detokenizer=True)
    ov.save_model(tokenizer, folder / "openvino_tokenizer.xml")
    ov.save_model(detokenizer, folder / "openvino_detokenizer.xml")


def random_sd15_pipeline(seed: int = 0):
    """A diffusers StableDiffusionPipeline of SD 1.5's architecture with seeded random weights."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = byte_level_tokenizer(Path(tmp) / "tokenizer")
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), **SD15["text"]))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1)
    return StableDiffusionPipeline(vae=AutoencoderKL(**SD15["vae"]), text_encoder=text, tokenizer=tokenizer,
                                   unet=UNet2DConditionModel(**SD15["unet"]), scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)

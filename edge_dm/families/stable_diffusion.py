"""Text-to-image latent diffusion: Stable Diffusion 1.x/2.x and the models that share their UNet
(LCM, SD-Turbo): a UNet2DConditionModel on VAE latents, conditioned on CLIP text embeddings, with
classifier-free guidance.

Bundles are exported through optimum-intel into the OpenVINO diffusers layout that
`optimum.intel.OVStableDiffusionPipeline` and `openvino_genai.Text2ImagePipeline` load unchanged:
text_encoder/, unet/, vae_decoder/, vae_encoder/ (each openvino_model.xml/.bin + config.json),
tokenizer/ (with openvino_tokenizer.xml and openvino_detokenizer.xml for GenAI), scheduler/,
model_index.json; edge-dm adds recipe.json, calibration.npz and report.png.

The denoiser with guidance g runs the UNet on [x, x] with [uncond, text] embeddings and returns
eps_u + g (eps_c - eps_u), as diffusers' StableDiffusionPipeline does; a calibration record is that
batch of two, as the UNet receives it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_dm.errors import ConfigError, DataError, ModelNotFoundError
from edge_dm.families.base import SAMPLE, TEXT, TIMESTEP, Family, LoadedModel

DEFAULT_GUIDANCE = 7.5  # diffusers' StableDiffusionPipeline default
PIPELINE_PARTS = ("text_encoder", "tokenizer", "unet", "vae", "scheduler")

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


def read_prompts(path) -> list[str]:
    """The prompts in a text file, one a line (blank lines skipped); DataError if there are none."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the prompt file {path}: {exc}") from None
    prompts = [ln.strip() for ln in lines if ln.strip()]
    if not prompts:
        raise DataError(f"the prompt file {path} holds no prompt")
    return prompts


def shipped_prompts(held_out: bool = False) -> Path:
    """datasets/prompts.txt (calibration) or datasets/prompts-heldout.txt (error tables, report)."""
    from edge_dm.resources import shipped_dataset

    return shipped_dataset("prompts-heldout.txt" if held_out else "prompts.txt")


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


class StableDiffusion(Family):
    name = "stable-diffusion"
    conditional = True
    architectures = ("sd15",)
    components = {"unet": "unet/openvino_model.xml", "text_encoder": "text_encoder/openvino_model.xml",
                  "vae_decoder": "vae_decoder/openvino_model.xml"}
    scheduler_file = "scheduler/scheduler_config.json"
    report_images = 4
    reuse_export = True  # optimum-intel's export of a full pipeline takes minutes

    # --- where models come from -------------------------------------------------------------
    def recognises(self, path: Path) -> bool:
        index = Path(path) / "model_index.json"
        if not index.is_file():
            return False
        try:
            parts = {k for k, v in json.loads(index.read_text()).items() if isinstance(v, list)}
        except (OSError, ValueError):
            return False
        return set(PIPELINE_PARTS) <= parts and (Path(path) / "unet" / "config.json").is_file()

    def load(self, spec: str, source: str) -> LoadedModel:
        from diffusers import DDPMScheduler, UNet2DConditionModel

        local = Path(source).expanduser().exists()
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")
        sched = DDPMScheduler.load_config(source, subfolder="scheduler")
        return LoadedModel(spec, str(source), self, {"unet": unet.float().eval()}, dict(sched),
                           dict(local=local))

    def random(self, arch: str) -> LoadedModel | None:
        """`random:sd15`: SD 1.5's UNet, text encoder and VAE with seeded random weights (timing only),
        saved as a diffusers pipeline in the edge-dm cache so optimum-intel can export it."""
        if arch not in self.architectures:
            return None
        from edge_dm.outputs import home

        folder = home() / "random" / arch
        if not (folder / "model_index.json").exists():
            from edge_dm.outputs import atomic_output

            with atomic_output(folder, overwrite=True) as tmp:
                random_sd15_pipeline().save_pretrained(tmp)
        return self.load(f"random:{arch}", str(folder))

    def model_sample_shape(self, m: LoadedModel) -> tuple:
        c = m.unet.config
        return (c.in_channels, c.sample_size, c.sample_size)

    def export(self, m: LoadedModel, folder: Path, precision: str):
        """The optimum-intel OpenVINO layout of the pipeline (fp32, or fp16 weights), with the
        tokenizer converted for OpenVINO GenAI."""
        import openvino as ov
        from optimum.intel import OVStableDiffusionPipeline

        try:
            pipe = OVStableDiffusionPipeline.from_pretrained(m.source, export=True, compile=False, load_in_8bit=False)
        except Exception as exc:  # optimum and its exporters raise many kinds
            from edge_dm.errors import library_reason

            raise ModelNotFoundError(f"optimum-intel could not export {m.spec}: {library_reason(exc)}") from None
        pipe.save_pretrained(folder)
        if precision == "fp16":
            for component in ("text_encoder", "vae_decoder"):
                model = ov.Core().read_model(Path(folder) / self.components[component])
                self.write_component(folder, model, component, fp16=True)
        convert_tokenizer(Path(folder) / "tokenizer")
        unet = per_sample_timestep(ov.Core().read_model(Path(folder) / self.components["unet"]))
        self.write_component(folder, unet, fp16=precision == "fp16")
        shapes = {i.get_any_name(): str(i.get_partial_shape()) for i in unet.inputs}
        return dict(inputs=shapes, sample_shape=list(m.sample_shape)), unet

    # --- sampling ------------------------------------------------------------------------------
    def _config(self, bundle, part: str) -> dict:
        try:
            return json.loads((Path(bundle.path) / part / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"unreadable {part}/config.json in {bundle.path}: {exc}") from None

    def vae_scale(self, bundle) -> int:
        return 2 ** (len(self._config(bundle, "vae_decoder").get("block_out_channels", [0] * 4)) - 1)

    def image_size(self, bundle, sampling) -> tuple[int, int]:
        unet = self._config(bundle, "unet")
        size = unet.get("sample_size", 64)
        size = size if isinstance(size, int) else size[0]
        default = size * self.vae_scale(bundle)
        return sampling.height or default, sampling.width or default

    def sample_shape(self, bundle, sampling) -> tuple:
        h, w = self.image_size(bundle, sampling)
        f = self.vae_scale(bundle)
        return (self._config(bundle, "unet").get("in_channels", 4), h // f, w // f)

    def guidance(self, sampling) -> float | None:
        g = DEFAULT_GUIDANCE if sampling.guidance_scale is None else sampling.guidance_scale
        return g if g > 1 else None

    def net_batch(self, sampling) -> int:
        return 2 if self.guidance(sampling) else 1

    def check_request(self, bundle, sampling, prompts) -> None:
        if not prompts:
            raise ConfigError(f"{bundle.path} holds a text-to-image model: give --prompt TEXT or --prompts FILE")
        self.check_sampling(bundle, sampling)

    def check_sampling(self, bundle, sampling) -> None:
        h, w = self.image_size(bundle, sampling)
        unet = self._config(bundle, "unet")
        multiple = self.vae_scale(bundle) * 2 ** (len(unet.get("block_out_channels", [0] * 4)) - 1)
        for name, v in (("height", h), ("width", w)):
            if v % multiple:
                raise ConfigError(f"--{name} {v} does not suit this model: it must be a multiple of {multiple} "
                                  "(the VAE's and the UNet's downsampling)")

    def prompts_for_calibration(self, cfg) -> tuple[list, list]:
        prompts = read_prompts(cfg.prompts) if cfg.prompts else read_prompts(shipped_prompts())
        return prompts, read_prompts(shipped_prompts(held_out=True))

    def encode(self, pipeline, prompts: list, sampling) -> dict | None:
        """Text embeddings per image ("text"), and the negative prompt's ("uncond") where guided."""
        if not prompts:
            return None
        texts = sorted(set(prompts) | ({sampling.negative_prompt} if self.guidance(sampling) else set()))
        table = dict(zip(texts, self._embed(pipeline, texts)))
        cond = {TEXT: np.stack([table[p] for p in prompts])}
        if self.guidance(sampling):
            cond["uncond"] = np.repeat(table[sampling.negative_prompt][None], len(prompts), 0)
        return cond

    def _embed(self, pipeline, texts: list) -> list:
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(Path(pipeline.bundle.path) / "tokenizer")
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="np").input_ids
        encoder = pipeline.component("text_encoder")
        name = encoder.model.inputs[0].get_any_name()
        return [encoder.run({name: ids[i:i + 1]})[0][0] for i in range(len(texts))]

    def net_inputs(self, roles: dict, x, t, cond, guidance) -> dict:
        text = cond[TEXT]
        if guidance:
            x, t, text = np.concatenate([x, x]), np.concatenate([t, t]), np.concatenate([cond["uncond"], text])
        return {roles[SAMPLE]: x, roles[TIMESTEP]: t, roles[TEXT]: text}

    def combine(self, out, guidance):
        if not guidance:
            return out
        uncond, text = np.split(out, 2)
        return uncond + guidance * (text - uncond)

    def decode(self, pipeline, x):
        """The VAE decoder's images of the final latents, one latent a request."""
        from edge_dm.images import to_uint8

        scale = self._config(pipeline.bundle, "vae_decoder").get("scaling_factor", 0.18215)
        vae = pipeline.component("vae_decoder")
        name = vae.model.inputs[0].get_any_name()
        images = np.concatenate([vae.run({name: x[i:i + 1] / scale})[0] for i in range(len(x))])
        return to_uint8(images)

    # --- quantization -----------------------------------------------------------------------------
    def compress_components(self, folder: Path, cfg) -> None:
        """NNCF int8 weight compression of the text encoder and the VAE decoder, where asked."""
        import openvino as ov

        from edge_dm.quantize import compress_weights

        for component, mode in (("text_encoder", cfg.text_encoder), ("vae_decoder", cfg.vae)):
            if mode == "int8-weights":
                model = ov.Core().read_model(Path(folder) / self.components[component])
                self.write_component(folder, compress_weights(model), component)

    def cache_features(self, model) -> dict:
        from edge_dm.families.unet2d import UNet2D

        return UNet2D().cache_features(model)


def per_sample_timestep(unet):
    """`unet` (an openvino.Model of optimum-intel's export) with its timestep input reshaped from [1],
    broadcast over the batch, to [-1], one per sample: a request can then hold images at different
    steps, and optimum-intel and OpenVINO GenAI still run it unchanged. Returns the same model."""
    import openvino as ov

    name = next(i.get_any_name() for i in unet.inputs if i.get_partial_shape().rank.get_length() <= 1)
    unet.reshape({name: ov.PartialShape([-1])})
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

"""Re-checks the facts the Stable Diffusion adapter relies on (not a test; about 2 minutes on 2 cores).

    HF_HUB_OFFLINE=1 python tests/_sd_facts.py [WORKDIR]

Builds tests/tiny_sd.py's pipeline, exports it with optimum-intel's public API (fp32), adds the
OpenVINO tokenizer GenAI needs, prints each IR's inputs/outputs, quantizes the UNet with NNCF, and
runs the int8 folder in optimum-intel and OpenVINO GenAI against each other. Prints timings.
"""
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402
import torch  # noqa: E402

from tiny_sd import IMAGE, build_tiny_sd  # noqa: E402

PROMPT = "a photo of a horse"


def clock(label, t0):
    print(f"[time] {label}: {time.perf_counter() - t0:.1f} s")


def describe(xml):
    m = ov.Core().read_model(xml)
    print(f"== {Path(xml).parent.name}")
    for p in m.inputs:
        print("   in ", p.get_any_name(), p.get_partial_shape(), p.get_element_type())
    for p in m.outputs:
        print("   out", p.get_any_name(), p.get_partial_shape(), p.get_element_type())
    consts = {str(op.get_element_type()) for op in m.get_ops() if op.get_type_name() == "Constant"}
    print("   constant types", sorted(consts))


def main(work: Path):
    from openvino_tokenizers import convert_tokenizer
    from optimum.intel import OVStableDiffusionPipeline
    from transformers import CLIPTokenizer

    src, fp32, int8 = work / "torch", work / "ov-fp32", work / "ov-int8"
    t0 = time.perf_counter()
    build_tiny_sd(src, seed=0)
    clock("build_tiny_sd", t0)

    # 2a: export. load_in_8bit=False pins fp32 (None lets optimum int8-compress submodels >= 1e9 weights).
    t0 = time.perf_counter()
    pipe = OVStableDiffusionPipeline.from_pretrained(src, export=True, compile=False, load_in_8bit=False)
    pipe.save_pretrained(fp32)
    clock("optimum export + save_pretrained", t0)
    # from_pretrained(export=True) writes no openvino_tokenizer.xml; GenAI needs it.
    tok, detok = convert_tokenizer(CLIPTokenizer.from_pretrained(fp32 / "tokenizer"), with_detokenizer=True)
    ov.save_model(tok, fp32 / "tokenizer" / "openvino_tokenizer.xml")
    ov.save_model(detok, fp32 / "tokenizer" / "openvino_detokenizer.xml")
    print("files:", sorted(str(p.relative_to(fp32)) for p in fp32.rglob("*") if p.is_file()))

    # 2b: the IRs.
    for part in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
        describe(fp32 / part / "openvino_model.xml")
    names = [op.get_friendly_name() for op in ov.Core().read_model(fp32 / "unet" / "openvino_model.xml").get_ops()]
    print("   up_blocks.0 concat ops:", [n for n in names if n.startswith("__module.up_blocks.0/aten::cat")])

    # 2d: NNCF over the UNet; write next to the old files, then replace them (saving over the .bin the
    # model was read from, which OpenVINO memory-maps, dies with SIGBUS).
    import nncf

    shutil.copytree(fp32, int8)
    xml = int8 / "unet" / "openvino_model.xml"
    rng = np.random.default_rng(0)
    data = [{"sample": rng.standard_normal((2, 4, 8, 8), dtype=np.float32),
             "timestep": np.array([t], np.int64),
             "encoder_hidden_states": rng.standard_normal((2, 77, 32), dtype=np.float32)} for t in (999, 500, 1)]
    t0 = time.perf_counter()
    quantized = nncf.quantize(ov.Core().read_model(xml), nncf.Dataset(data), subset_size=len(data),
                              model_type=nncf.ModelType.TRANSFORMER)
    clock("nncf.quantize", t0)
    tmp = xml.with_name("quantized.xml")
    ov.save_model(quantized, tmp, compress_to_fp16=False)
    del quantized
    os.replace(tmp, xml)
    os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))

    # 2d: both runtimes load the int8 folder unchanged and agree.
    import openvino_genai

    for folder in (fp32, int8):
        t0 = time.perf_counter()
        genai = openvino_genai.Text2ImagePipeline(str(folder), "CPU")
        a = np.array(genai.generate(PROMPT, num_inference_steps=2, width=IMAGE, height=IMAGE,
                                    generator=openvino_genai.TorchGenerator(42)).data)
        clock(f"GenAI load + generate ({folder.name})", t0)
        t0 = time.perf_counter()
        opt = OVStableDiffusionPipeline.from_pretrained(folder)
        b = opt(PROMPT, num_inference_steps=2, height=IMAGE, width=IMAGE, output_type="np",
                generator=torch.Generator().manual_seed(42)).images
        clock(f"optimum load + generate ({folder.name})", t0)
        diff = np.abs(np.round(b * 255).astype(int) - a.astype(int)).max()
        print(f"{folder.name}: GenAI {a.shape} {a.dtype} vs optimum {b.shape}: max |diff| {diff} of 255")

    # 2e: torch reference with per-image generators and per-step latents.
    from diffusers import StableDiffusionPipeline

    ref = StableDiffusionPipeline.from_pretrained(src)
    steps = []
    out = ref([PROMPT, "a red car at night"], num_inference_steps=2, height=IMAGE, width=IMAGE,
              generator=[torch.Generator().manual_seed(s) for s in (3, 7)], output_type="latent",
              callback_on_step_end=lambda p, i, t, kw: steps.append((i, int(t), kw["latents"].clone())) or {},
              callback_on_step_end_tensor_inputs=["latents"])
    print("torch steps:", [(i, t, tuple(x.shape)) for i, t, x in steps],
          "final == last callback latents:", torch.equal(out.images, steps[-1][2]))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as d:
            main(Path(d))

"""The CPU class an int8 model is quantized for (`edge-dm quantize --target`), and what it changes.

Read from the CPU flags Linux reports in /proc/cpuinfo:
- avx2: no int8 dot product (anything without the flags below). oneDNN's int8 convolutions multiply
  u8 activations by s8 weights with vpmaddubsw, which adds pairs of products in saturating 16-bit
  integers: full 8-bit weights overflow it, so weights keep to 7 bits (NNCF's overflow fix).
- vnni: AVX-512 VNNI or AVX-VNNI (vpdpbusd adds the products in 32 bits): full 8-bit weights.
- amx: AMX-INT8 (Intel Xeon from Sapphire Rapids on): as vnni, with NNCF's TargetDevice.CPU_SPR.
`auto`, the default, is the CPU that quantizes. What each target sets is `nncf_defaults`; explicit
`--overflow-fix` / `--target-device` win over it. The int8 IR carries what it was made for in its
rt_info (`stamp`, `made_for`), so a bundle made for vnni warns where it runs without VNNI.
"""
from __future__ import annotations

from pathlib import Path

TARGETS = ("auto", "avx2", "vnni", "amx")
RT_INFO = "edge_dm"  # the section of an int8 IR's rt_info that says what it was quantized for
# the flags that decide int8 and bf16 speed (benchmark.machine_info reports them)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_fp16")


def cpu_info() -> tuple[str, list]:
    """This CPU's model name and the ISA_FLAGS it has, from /proc/cpuinfo (no flags where there is none)."""
    import platform

    cpu, flags = platform.processor(), set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
        flags = set(next(ln.split(":", 1)[1] for ln in lines if ln.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    return cpu, [f for f in ISA_FLAGS if f in flags]


def cpu_isa() -> list[str]:
    """The ISA_FLAGS this CPU has."""
    return cpu_info()[1]


def target_of(isa) -> str:
    """The target of a CPU with the flags `isa`: amx (AMX-INT8), vnni (AVX-512 VNNI or AVX-VNNI), else avx2."""
    isa = set(isa)
    if "amx_int8" in isa:
        return "amx"
    if isa & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    return "avx2"


def resolve(target: str, isa=None) -> str:
    """`target`, with auto replaced by the target of the CPU whose flags are `isa` (default: this one)."""
    if target != "auto":
        return target
    return target_of(cpu_isa() if isa is None else isa)


def nncf_defaults(target: str) -> dict:
    """NNCF's overflow fix and target device for a resolved target. CPU_SPR (NNCF 3.4.0, OpenVINO
    backend) differs from CPU in the quantizer placement only (docs/QUANTIZATION.md, "Targets")."""
    return dict(overflow_fix="enable" if target == "avx2" else "disable",
                target_device="CPU_SPR" if target == "amx" else "CPU")


def float_rest(isa, text_to_image: bool) -> str | None:
    """The INFERENCE_PRECISION_HINT edge-dm gives an int8 model's float operations on a CPU with the flags
    `isa` (None: OpenVINO's own choice, bf16 where the CPU runs it natively, else f32): f32 for a
    text-to-image UNet on a CPU with native BF16 but no AMX, where its bf16 rest was the slower one
    (docs/BENCHMARKS.md, "The float rest of an int8 model")."""
    isa = set(isa)
    return "f32" if text_to_image and "avx512_bf16" in isa and "amx_bf16" not in isa else None


def stamp(model, target: dict) -> None:
    """Record in an int8 openvino.Model's rt_info (saved in its IR) what it was quantized for:
    `target` holds name, overflow_fix and target_device."""
    for key, value in target.items():
        model.set_rt_info(value, [RT_INFO, "target", key])


def made_for(model) -> dict | None:
    """What `stamp` recorded in an openvino.Model, or None (a model edge-dm did not quantize, or
    quantized before --target)."""
    if not model.has_rt_info([RT_INFO, "target", "name"]):
        return None
    return {k: model.get_rt_info([RT_INFO, "target", k]).astype(str) for k in ("name", "overflow_fix", "target_device")}


def overflow_risk(made: dict, isa) -> str | None:
    """Why an int8 model made for `made` (made_for's dict; only its overflow_fix where older) may
    compute wrong int8 convolutions on a CPU with the flags `isa`, or None: a model without the
    overflow fix on every layer, on a CPU without VNNI. An unknown overflow fix is None."""
    fix = made.get("overflow_fix")
    if target_of(isa) != "avx2" or fix in (None, "enable"):
        return None
    return f"made for {made['name']}" if made.get("name") else "made before --target"

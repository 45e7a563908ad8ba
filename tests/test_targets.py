"""--target: the CPU class from ISA flags, what it sets in NNCF, and the warning where a bundle does not fit."""
import logging

import pytest

from edge_dm.bundle import Bundle
from edge_dm.configs import QuantizeConfig
from edge_dm.errors import ConfigError
from edge_dm.pipeline import warn_overflow_risk
from edge_dm.targets import resolve, stamp, target_of

AVX2 = ["avx2"]  # the development VM (AMD EPYC)
VNNI = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]  # the AVX-512 VM
ALDER_LAKE = ["avx2", "avx_vnni"]
XEON_AMX = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]


@pytest.mark.parametrize("isa, target", [(AVX2, "avx2"), ([], "avx2"), (VNNI, "vnni"), (ALDER_LAKE, "vnni"),
                                         (XEON_AMX, "amx"), (["avx512f", "avx512_bf16"], "avx2")])
def test_auto_resolves_from_the_isa_flags(isa, target):
    assert target_of(isa) == target
    assert resolve("auto", isa) == target
    assert resolve("vnni", isa) == "vnni"  # an explicit target is kept whatever the CPU


@pytest.mark.parametrize("target, isa, fix, device", [
    ("auto", AVX2, "enable", "CPU"), ("auto", VNNI, "disable", "CPU"), ("auto", XEON_AMX, "disable", "CPU_SPR"),
    ("avx2", XEON_AMX, "enable", "CPU"), ("amx", AVX2, "disable", "CPU_SPR")])
def test_the_target_sets_overflow_fix_and_target_device(target, isa, fix, device):
    cfg = QuantizeConfig(target=target).for_target(isa)
    assert (cfg.target, cfg.overflow_fix, cfg.target_device) == (resolve(target, isa), fix, device)


def test_explicit_options_win_over_the_target():
    cfg = QuantizeConfig(target="amx", overflow_fix="first_layer_only", target_device="ANY").for_target(AVX2)
    assert (cfg.target, cfg.overflow_fix, cfg.target_device) == ("amx", "first_layer_only", "ANY")
    assert QuantizeConfig(overflow_fix="enable").for_target(VNNI).overflow_fix == "enable"
    with pytest.raises(ConfigError, match="unknown target 'sse'"):
        QuantizeConfig(target="sse")


def test_recipes_from_before_target_keep_what_they_were_made_with():
    """Recipe format 1 held one flat config: the job's and the algorithm's options side by side."""
    from edge_dm.configs import QuantizeJobConfig

    old = dict(QuantizeJobConfig().to_dict(), **QuantizeConfig().to_dict())
    del old["quantization"], old["target"]
    old.update(overflow_fix="enable", target_device="ANY")
    cfg = QuantizeJobConfig.from_recipe(old, format=1).quantization.for_target(VNNI)
    assert (cfg.overflow_fix, cfg.target_device) == ("enable", "ANY")
    del old["overflow_fix"], old["target_device"]  # before --overflow-fix: NNCF's defaults
    cfg = QuantizeJobConfig.from_recipe(old, format=1).quantization.for_target(AVX2)
    assert (cfg.overflow_fix, cfg.target_device) == ("first_layer_only", "ANY")
    del old["keep_float"], old["split_shortcut"]  # before keep_float and the split: everything quantized, unsplit
    cfg = QuantizeJobConfig.from_recipe(old, format=1).quantization
    assert cfg.keep_float == () and cfg.split_shortcut is False


def _bundle(path, target: dict | None = None, **recipe):
    """An int8 bundle in memory: a one-op IR stamped with `target` (as quantize_model stamps)."""
    import numpy as np
    import openvino as ov

    x = ov.opset8.parameter([1], np.float32)
    model = ov.Model([ov.opset8.relu(x)], [x])
    if target:
        stamp(model, target)
    recipe = dict(dict(family="unet2d", precision="int8", config=QuantizeConfig().to_dict()), **recipe)
    return Bundle(path, recipe).with_model(model)


def test_a_vnni_bundle_on_a_cpu_without_vnni_warns_once(tmp_path, caplog):
    vnni = _bundle(tmp_path / "vnni", dict(name="vnni", overflow_fix="disable", target_device="CPU"))
    with caplog.at_level(logging.WARNING, logger="edge_dm"):
        msg = warn_overflow_risk(vnni, "CPU", AVX2)
        assert warn_overflow_risk(vnni, "CPU", AVX2) == msg  # the same finding ...
    assert [r.getMessage() for r in caplog.records] == [msg]  # ... logged once, one line
    assert "\n" not in msg and "made for vnni (overflow fix disable)" in msg and "--target avx2" in msg
    assert warn_overflow_risk(vnni, "CPU", VNNI) is None
    assert warn_overflow_risk(vnni, "CPU", XEON_AMX) is None
    assert warn_overflow_risk(vnni, "GPU", AVX2) is None  # only the CPU's int8 kernels overflow


def test_bundles_with_the_overflow_fix_or_without_a_record_do_not_warn(tmp_path):
    avx2 = _bundle(tmp_path / "a", dict(name="avx2", overflow_fix="enable", target_device="CPU"))
    assert warn_overflow_risk(avx2, "CPU", AVX2) is None
    forced = _bundle(tmp_path / "f", dict(name="amx", overflow_fix="enable", target_device="CPU_SPR"))
    assert warn_overflow_risk(forced, "CPU", AVX2) is None
    # before --target: the recipe's overflow fix; none recorded (e.g. a Python caller's bundle): no warning
    old = _bundle(tmp_path / "o", config=dict(QuantizeConfig().to_dict(), overflow_fix="enable"))
    assert warn_overflow_risk(old, "CPU", AVX2) is None
    assert warn_overflow_risk(_bundle(tmp_path / "n", config={}), "CPU", AVX2) is None
    old_first = _bundle(tmp_path / "p", config=dict(QuantizeConfig().to_dict(), overflow_fix="first-layer"))
    assert "made before --target (overflow fix first-layer)" in warn_overflow_risk(old_first, "CPU", AVX2)
    weights = _bundle(tmp_path / "w", precision="int8-weights")  # weights decompressed to float: no int8 convolutions
    assert warn_overflow_risk(weights, "CPU", AVX2) is None

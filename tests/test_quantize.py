import json
import os
import re

import numpy as np
import pytest
from conftest import quantize_job

from edge_dm.bundle import open_bundle
from edge_dm.calibration import CalibrationSet
from edge_dm.configs import QuantizeConfig, QuantizeJobConfig, SamplingConfig
from edge_dm.errors import ConfigError
from edge_dm.jobs import quantize
from edge_dm.quantize import int8_ops, nncf_options, op_counts, quantize_model
from edge_dm.targets import cpu_isa, made_for, target_of


@pytest.fixture(scope="module")
def int8(tiny_int8):
    return tiny_int8


def again(int8, model, out, **quantization):
    """The tiny model quantized again on int8's calibration set, with other quantization options."""
    cal = str(int8[0].path / "calibration.npz")
    return quantize(quantize_job(model, out, calibration_set=cal, quantization=QuantizeConfig(**quantization)),
                    progress=False)


def test_int8_ir_really_holds_quantizers_and_int8_weights(int8):
    bundle, summary = int8
    ops = op_counts(bundle.read_model())
    assert ops["fake_quantize"] > 0 and ops["int8_constants"] > 0
    assert summary["ops"] == ops
    assert op_counts(bundle.read_model(bundle.fp32_ir))["fake_quantize"] == 0


def test_summary_and_recipe(int8):
    bundle, s = int8
    assert s["calibration_samples"] == 24 and s["calibration_s"] > 0 and s["quantization_s"] > 0
    assert len(s["noise_prediction_rel_l2"]) == 10
    assert all(0 <= e["rel_l2"] < 1 for e in s["noise_prediction_rel_l2"])
    r = json.loads((bundle.path / "recipe.json").read_text())
    assert r["precision"] == "int8" and r["summary"]["calibration_s"] == s["calibration_s"]
    # unet2d int8 splits the up path's shortcut convolutions unless told not to (the family's default)
    assert r["format"] == 2 and r["config"]["quantization"]["split_shortcut"] is None and r["split_convs"] > 0
    cfg = QuantizeJobConfig.from_recipe(r["config"], r["format"])
    assert cfg.calibration.mu == 400 and cfg.calibration.kind == "dntc" and cfg.calibration.sampling.steps == 10
    assert QuantizeJobConfig.from_dict(cfg.to_dict()) == cfg
    assert (bundle.path / "calibration.npz").exists()


def test_int8_bundle_generates_close_to_fp32(int8, tiny_bundle, tmp_path):
    """The same seeds through the int8 and the fp32 bundle: a PSNR floor about 2 dB below what three
    calibration seeds gave on the AMX VM (19.1-21.3 dB: a tiny random UNet is hard to quantize)."""
    from edge_dm.metrics import drift
    from edge_dm.pipeline import Pipeline

    bundle, _ = int8
    s = SamplingConfig(steps=10, seed=1)
    assert drift(Pipeline(tiny_bundle).sample(4, s), Pipeline(bundle).sample(4, s))["psnr_db"] >= 17.0


def _int8_weight_range(model):
    vals = [op.get_data() for op in model.get_ops()
            if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8"]
    return min(int(v.min()) for v in vals), max(int(v.max()) for v in vals)


def test_the_target_decides_the_overflow_fix_unless_it_is_given(int8, tiny_bundle):
    # avx2: int8 weights keep to 7 bits (|w| <= 64), so AVX2's saturating vpmaddubsw can't overflow;
    # vnni and amx add in 32 bits and get NNCF's full 8-bit range
    bundle, _ = int8
    cal = CalibrationSet.load(bundle.path / "calibration.npz")

    def widest(**options):
        lo, hi = _int8_weight_range(quantize_model(tiny_bundle.read_model(), cal, QuantizeConfig(**options)))
        return max(-lo, hi)

    assert widest(target="avx2") <= 64
    assert widest(target="vnni") > 100
    assert widest(target="vnni", overflow_fix="enable") <= 64  # an explicit option wins (tests/test_targets.py)
    spr = nncf_options(QuantizeConfig(target="amx").for_target(), tiny_bundle.read_model(), ())["target_device"]
    assert spr.value == "CPU_SPR"


def test_the_recipe_records_the_resolved_target(int8, tiny_model_dir, tmp_path):
    bundle, _ = int8
    algorithm = bundle.recipe["config"]["quantization"]
    assert algorithm["target"] == "auto" and algorithm["overflow_fix"] is None
    this_cpu = target_of(cpu_isa())
    fix = "enable" if this_cpu == "avx2" else "disable"
    assert bundle.recipe["target"] == dict(name=this_cpu, overflow_fix=fix,
                                           target_device="CPU_SPR" if this_cpu == "amx" else "CPU")
    assert made_for(bundle.read_model()) == bundle.recipe["target"]  # the IR carries it too
    lo, hi = _int8_weight_range(bundle.read_model())
    assert (max(-lo, hi) <= 64) == (fix == "enable")
    amx, _ = again(int8, tiny_model_dir, tmp_path / "amx", target="amx", overflow_fix="enable")
    assert amx.recipe["target"] == dict(name="amx", overflow_fix="enable", target_device="CPU_SPR")
    assert QuantizeJobConfig.from_recipe(amx.recipe["config"]).quantization == QuantizeConfig(target="amx",
                                                                                             overflow_fix="enable")


def _weight_types(model) -> dict:
    """Element type of the constant behind each Convolution / MatMul's weights, by op name."""
    out = {}
    for op in model.get_ops():
        if op.get_type_name() in ("Convolution", "MatMul"):
            node = op.input_value(1).get_node()
            while node.get_type_name() != "Constant" and node.get_input_size():
                node = node.input_value(0).get_node()
            out[op.get_friendly_name()] = node.get_element_type().get_type_name()
    return out


def test_first_last_convolutions_and_time_embedding_stay_float(int8, tiny_model_dir, tmp_path):
    bundle, _ = int8
    kept = lambda name: any(k in name for k in (".conv_in/", ".conv_out/", ".time_emb"))  # noqa: E731
    types = _weight_types(bundle.read_model())
    assert sum(map(kept, types)) >= 4  # conv_in, conv_out, the embedding MLP, time_emb_proj layers
    assert all(t != "i8" for n, t in types.items() if kept(n))
    assert all(t == "i8" for n, t in types.items() if not kept(n) and "Convolution" in n)
    everything, _ = again(int8, tiny_model_dir, tmp_path / "all", keep_float=())
    assert all(t == "i8" for n, t in _weight_types(everything.read_model()).items() if "Convolution" in n)
    with pytest.raises(ConfigError, match="conv_middle"):
        again(int8, tiny_model_dir, tmp_path / "typo", keep_float=("conv_middle",))
    assert not (tmp_path / "typo").exists()


def test_split_shortcut_gives_each_part_of_a_skip_concatenation_its_own_quantizer(int8, tiny_model_dir, tiny_bundle,
                                                                                  tmp_path):
    from edge_dm.families.shortcut_split import split_shortcuts
    from edge_dm.models import load_model

    split, s = again(int8, tiny_model_dir, tmp_path / "split", split_shortcut=True)
    assert split.recipe["config"]["quantization"]["split_shortcut"] is True
    assert split.recipe["split_convs"] == split_shortcuts(load_model(tiny_model_dir).unet)[1] > 0
    assert 0 <= s["mean_rel_l2"] < 1
    # the fp32 IR it was quantized from is the same function as the plain export
    x = {"sample": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32),
         "timestep": np.array([700, 20], np.int64)}
    from edge_dm.runtime import OpenVINOModel

    want, got = (OpenVINOModel(m, precision_hint="f32").run(x)[0]
                 for m in (tiny_bundle.read_model(), split.read_model(split.fp32_ir)))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # each half of a split shortcut reads its input through a FakeQuantize of its own
    convs = {op.get_friendly_name(): op for op in split.read_model().get_ops() if op.get_type_name() == "Convolution"}
    pairs = [(op, convs[name.replace("conv_shortcut.a/", "conv_shortcut.b/")])
             for name, op in convs.items() if "conv_shortcut.a/" in name]
    assert len(pairs) == split.recipe["split_convs"]
    quantizers = [tuple(c.input_value(0).get_node() for c in pair) for pair in pairs]
    assert all(a.get_type_name() == b.get_type_name() == "FakeQuantize" for a, b in quantizers)
    assert all(a.get_friendly_name() != b.get_friendly_name() for a, b in quantizers)


def test_saved_calibration_set_is_reused(int8, tiny_model_dir, tmp_path):
    bundle, s = again(int8, tiny_model_dir, tmp_path / "again")
    assert s["calibration_samples"] == 24
    assert open_bundle(bundle.path).recipe["calibration"]["num_samples"] == 24
    # the same calibration set and options give the same int8 IR
    a, b = (np.concatenate([op.get_data().ravel() for op in m.get_ordered_ops() if op.get_type_name() == "Constant"])
            for m in (bundle.read_model(), int8[0].read_model()))
    np.testing.assert_array_equal(a, b)


def test_weights_only_mode(tiny_model_dir, tmp_path):
    b, s = quantize(quantize_job(tiny_model_dir, tmp_path / "w", quantization=QuantizeConfig(mode="weights")),
                    progress=False)
    assert s["ops"]["fake_quantize"] == 0 and s["ops"]["int8_constants"] > 0
    assert b.recipe["precision"] == "int8-weights" and b.recipe["split_convs"] == 0  # no activation scales to split for


def test_bad_input_writes_nothing(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="preset"):
        QuantizeConfig(preset="ultra")
    with pytest.raises(ConfigError, match="overflow_fix"):
        QuantizeConfig(overflow_fix="sometimes")
    from click.testing import CliRunner

    from edge_dm.cli import main

    for args in (["--mu", "1200"], ["--sigma", "0"], ["--num-samples", "0"], ["--calibration", "gauss"],
                 ["--calibration", "forward"], ["--keep-float", "conv in"]):
        r = CliRunner().invoke(main, ["quantize", "--model", tiny_model_dir, "--output", str(tmp_path / "x"), *args])
        assert r.exit_code != 0 and "Traceback" not in r.output, args
        assert not (tmp_path / "x").exists()


def test_cli_output_is_edge_dms_bars_and_summary_only(tiny_model_dir, tmp_path):
    """NNCF draws its own progress bars (rich, on stdout) and logs INFO records; `edge-dm quantize`
    shows neither: every line is one of edge-dm's two bars or its summary, and NNCF's log level is
    as it was afterwards."""
    import logging

    from click.testing import CliRunner

    from edge_dm.cli import main

    nncf_level = logging.getLogger("nncf").level
    r = CliRunner().invoke(main, ["quantize", "--model", tiny_model_dir, "--output", str(tmp_path / "q"),
                                  "--num-samples", "4", "--steps", "4", "--eval-trajectories", "1"])
    assert r.exit_code == 0, r.output
    for title in ("Statistics collection", "Smooth Quant", "Bias correction", "INFO:nncf"):
        assert title not in r.output, r.output
    bar = r"(calibration \(dntc\)|held-out error): +\d+%\|[^|]*\| \d+/\d+ \[[^\]]*\]"  # a tqdm state
    summary = [r"int8 bundle: .*", r"target \w+ \(this CPU\): .*", r"calibration [\d.]+ s .*", r"quantized ops: .*",
               r"int8 vs fp32 noise prediction.*", r"  t=\d+:.*"]
    lines = [ln for ln in re.sub(bar, "", r.output).replace("\r", "\n").splitlines() if ln.strip()]
    assert len(lines) == len(summary) and all(map(re.fullmatch, summary, lines)), r.output
    assert logging.getLogger("nncf").level == nncf_level


# Accuracy-aware mode (--max-drop): NNCF's accuracy control on the tiny model, one held-out trajectory
@pytest.fixture(scope="module")
def loose(int8, tiny_model_dir, tmp_path_factory):
    return again(int8, tiny_model_dir, tmp_path_factory.mktemp("loose") / "q", max_drop=0.9)


def test_loose_budget_returns_nothing_to_float(loose):
    bundle, s = loose
    a = s["accuracy_control"]
    assert a["max_drop"] == 0.9 and a["float_ops"] == 0 and a["float_ops_by_module"] == {}
    assert 0 < a["rel_l2_before"] == a["rel_l2_after"] == s["mean_rel_l2"] < 0.9
    assert len(int8_ops(bundle.read_model())) == a["int8_ops_before"] > 0
    assert (bundle.recipe["summary"]["accuracy_control"] == a
            and bundle.recipe["config"]["quantization"]["max_drop"] == 0.9)


@pytest.mark.slow
def test_tight_budget_returns_operations_to_float_until_it_holds(loose, int8, tiny_model_dir, tmp_path):
    default, s0 = loose
    budget = round(0.9 * s0["mean_rel_l2"], 5)
    bundle, s = again(int8, tiny_model_dir, tmp_path / "q", max_drop=budget)
    a = s["accuracy_control"]
    assert a["rel_l2_before"] == pytest.approx(s0["mean_rel_l2"], rel=1e-3) and a["rel_l2_before"] > budget
    assert a["float_ops"] >= 1 and a["rel_l2_after"] == s["mean_rel_l2"] <= budget
    listed = {f"__module.{module}/{op}" for module, ops in a["float_ops_by_module"].items() for op in ops}
    before, after = int8_ops(default.read_model()), int8_ops(bundle.read_model())
    # the written IR is the restored one
    assert len(listed) == a["float_ops"] and listed <= before and not listed & after
    assert len(after) == len(before) - a["float_ops"]
    assert json.loads((bundle.path / "recipe.json").read_text())["summary"]["accuracy_control"] == a


@pytest.mark.slow
def test_budget_it_cannot_meet_is_refused_in_one_line_and_writes_nothing(int8, tiny_model_dir, tmp_path):
    from click.testing import CliRunner

    from edge_dm.cli import main

    bundle, _ = int8
    r = CliRunner().invoke(main, ["quantize", "--model", tiny_model_dir, "--output", str(tmp_path / "q"),
                                  "--calibration-set", str(bundle.path / "calibration.npz"), "--eval-trajectories", "1",
                                  "--max-drop", "1e-6", "--max-iterations", "1"])
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert len(errors) == 1 and errors[0] == r.output.strip().splitlines()[-1], r.output
    assert "--max-drop 1e-06 cannot be met" in errors[0] and "--max-iterations 1" in errors[0]
    assert os.listdir(tmp_path) == []

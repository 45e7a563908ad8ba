"""NNCF post-training quantization of a denoiser's OpenVINO model with a calibration set, in memory:
`quantize_model(model, calibration, QuantizeConfig())`, as `nncf.quantize(model, dataset)`.

The defaults (QuantizeConfig: preset MIXED, model type TRANSFORMER, fast bias correction, min-max
ranges, the family's float-kept modules) are explained in docs/QUANTIZATION.md. The overflow fix and
NNCF's target device follow the target CPU class (QuantizeConfig.target, edge_dm.targets).

Accuracy-aware mode (cfg.max_drop, a budget on the mean held-out error): where the int8 model misses
it, NNCF's `quantize_with_accuracy_control` returns the most sensitive operations to float, judged by
`validation_metric` on held-out items (the records of each held-out timestep, with fp32's prediction).
"""
from __future__ import annotations

import contextlib
import math
import re

import numpy as np

from edge_dm.calibration import CalibrationSet
from edge_dm.configs import QuantizeConfig, nncf_enums
from edge_dm.errors import ConfigError, QuantizationError
from edge_dm.families import get
from edge_dm.targets import stamp


def keep_float_patterns(model, names) -> list[str]:
    """NNCF ignored-scope patterns for the modules `names`, matched against the op names the
    PyTorch frontend gives (`__module.<path>/aten::...`); ConfigError if a name matches no op."""
    patterns, ops = [], [op.get_friendly_name() for op in model.get_ops()]
    for name in names:
        pattern = rf".*[./]{re.escape(name)}[^/]*/.*"
        if not any(re.fullmatch(pattern, op) for op in ops):
            raise ConfigError(f"`keep_float` {name!r}: no module of this model is named so")
        patterns.append(pattern)
    return patterns


def kept_float(cfg: QuantizeConfig, calibration: CalibrationSet | None = None) -> tuple:
    """The modules left in float: cfg.keep_float, else the policy of the model family the calibration
    set was made for (none when there is no calibration set to tell)."""
    if cfg.keep_float is not None:
        return cfg.keep_float
    if calibration is None:
        return ()
    return get(calibration.recipe.get("family")).policy.keep_float


def check_quantizable(model, cfg: QuantizeConfig, calibration: CalibrationSet | None = None) -> None:
    """Everything quantize_model checks, run before calibration: `model` is not quantized yet, the
    calibration set fits it, the ignored scope and the kept-float modules match operations of it."""
    done = op_counts(model)
    if done["fake_quantize"] or done["int8_constants"]:
        raise ConfigError(f"the model is quantized already ({done['fake_quantize']} FakeQuantize, "
                          f"{done['int8_constants']} int8 constants): quantize its fp32 model")
    if cfg.mode == "weights":
        return
    if calibration is not None:
        calibration.check_fits(model)
    check_ignored(model, cfg)
    keep_float_patterns(model, kept_float(cfg, calibration))


def check_ignored(model, cfg: QuantizeConfig) -> None:
    """ConfigError for an ignored-scope name, pattern or type that matches nothing in `model`
    (NNCF would otherwise quantize everything without a word)."""
    ops = model.get_ops()
    names = {op.get_friendly_name() for op in ops}
    types = {op.get_type_name() for op in ops}
    for n in cfg.ignored_names:
        if n not in names:
            raise ConfigError(f"`ignored_names` {n!r}: no operation of this model has that name")
    for p in cfg.ignored_patterns:
        rx = re.compile(p)  # QuantizeConfig checked that it compiles
        if not any(rx.fullmatch(n) for n in names):
            raise ConfigError(f"`ignored_patterns` {p!r}: matches no operation of this model")
    for t in cfg.ignored_types:
        if t not in types:
            raise ConfigError(f"`ignored_types` {t!r}: this model has no operation of that type")


def nncf_options(cfg: QuantizeConfig, model, keep_float) -> dict:
    """nncf.quantize's keyword arguments for cfg, whose target the caller has resolved
    (QuantizeConfig.for_target), with `keep_float` module names in float."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    enums = nncf_enums(cfg)
    adv = dict(activations_range_estimator_params=enums["range_estimator"], overflow_fix=enums["overflow_fix"])
    if cfg.smooth_quant_alpha is not None:
        adv["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=cfg.smooth_quant_alpha)
    ignored = None
    patterns = [*cfg.ignored_patterns, *keep_float_patterns(model, keep_float)]
    if cfg.ignored_names or patterns or cfg.ignored_types:
        ignored = nncf.IgnoredScope(names=list(cfg.ignored_names), patterns=patterns,
                                    types=list(cfg.ignored_types), validate=False)
    return dict(preset=enums["preset"], model_type=enums["model_type"], target_device=enums["target_device"],
                fast_bias_correction=cfg.fast_bias_correction, ignored_scope=ignored,
                advanced_parameters=AdvancedQuantizationParameters(**adv))


def quantize_model(model, calibration: CalibrationSet | None, config: QuantizeConfig | None = None):
    """The int8 openvino.Model of `model` (left unchanged): W8A8 with NNCF on `calibration` for the CPU
    class config.target (auto: this CPU), or with config.mode "weights" int8 weight compression (no
    calibration). Modules left in float: config.keep_float, else the policy of the model family the
    calibration set was made for. The int8 model's rt_info records the target (edge_dm.targets.made_for)."""
    import nncf

    cfg = config or QuantizeConfig()
    check_quantizable(model, cfg, calibration)
    if cfg.mode == "weights":
        return compress_weights(model.clone())
    if calibration is None:
        raise ConfigError("int8 `mode` quantizes activations too: it needs a calibration set")
    cfg = cfg.for_target()  # auto: this CPU's class
    options = nncf_options(cfg, model, kept_float(cfg, calibration))
    with nncf_quiet():
        q = nncf.quantize(model.clone(), calibration.nncf_dataset(),
                          subset_size=cfg.subset_size or len(calibration), **options)
    _stamp(q, cfg)
    return q


def quantize_component(model, inputs: list[dict], config: QuantizeConfig | None = None):
    """The int8 openvino.Model (weights and activations) of a component besides the denoiser (a text
    encoder, a VAE decoder), calibrated on `inputs` (each a dict of the model's named inputs), for the
    CPU class config.target; nothing kept in float. `model` is left unchanged. NNCF's target device is
    CPU unless the config names one (NNCF 3.4's CPU_SPR placement fails on CLIP text encoders with an
    IndexError)."""
    import nncf

    cfg = config or QuantizeConfig()
    cfg = cfg.replace(keep_float=(), ignored_names=(), ignored_patterns=(), ignored_types=(),
                      target_device=cfg.target_device or "CPU").for_target()
    options = nncf_options(cfg, model, ())
    with nncf_quiet():
        q = nncf.quantize(model.clone(), nncf.Dataset(inputs), subset_size=cfg.subset_size or len(inputs), **options)
    _stamp(q, cfg)
    return q


def _stamp(q, cfg: QuantizeConfig) -> None:
    """Record in `q` the target its quantization was for (cfg with its target resolved)."""
    stamp(q, dict(name=cfg.target, overflow_fix=cfg.overflow_fix, target_device=cfg.target_device))


def compress_weights(model):
    """`model` (changed in place) with NNCF int8 weight compression (asymmetric), no calibration."""
    import nncf

    with nncf_quiet():
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)


@contextlib.contextmanager
def nncf_quiet():
    """While NNCF runs: its warnings only, and none of its progress bars.

    NNCF 3.4 logs INFO records that would bury edge-dm's summary (`nncf.set_log_level` silences them)
    and draws rich progress bars ("Statistics collection", "Applying Smooth Quant", "Applying Fast Bias
    correction") on rich's global console, i.e. on sys.stdout, whatever its log level: its `track` has
    no switch. So sys.stdout goes to a discarded buffer meanwhile. NNCF's log handler holds the real
    stdout and Python's warnings go to stderr, so warnings still show. Both are restored afterwards.
    """
    import io
    import logging

    import nncf

    level = logging.getLogger("nncf").level  # the logger nncf.set_log_level sets
    nncf.set_log_level(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf.set_log_level(level)


def op_counts(model) -> dict:
    """How much of an OpenVINO model is quantized: FakeQuantize nodes and low-precision constants."""
    ops = model.get_ops()
    fq = sum(op.get_type_name() == "FakeQuantize" for op in ops)
    low = sum(op.get_type_name() == "Constant" and op.get_element_type().get_type_name() in ("i8", "u8")
              for op in ops)
    compute = sum(op.get_type_name() in ("Convolution", "MatMul") for op in ops)
    return dict(fake_quantize=fq, int8_constants=low, conv_matmul=compute)


def held_out_items(fp32_model, held: CalibrationSet) -> list[dict]:
    """The held-out records as validation items, one per timestep (largest first): the inputs of every
    held-out trajectory at that timestep as one batch, and the fp32 model's noise prediction for them."""
    compiled = _compile_f32(fp32_model)
    items = []
    for t in sorted(set(held.t.tolist()), reverse=True):
        idx = np.flatnonzero(held.t == t)
        item = dict(t=int(t), samples=len(idx), inputs={k: np.concatenate(v[idx]) for k, v in held.inputs.items()})
        items.append(dict(item, reference=_predict(compiled, item)))
    return items


def _compile_f32(model):
    """`model` compiled on the CPU at f32 precision, as NNCF's accuracy control compiles what it validates."""
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _predict(compiled, item: dict) -> np.ndarray:
    types = {i.get_any_name(): i.get_element_type().to_dtype() for i in compiled.inputs}
    return np.array(compiled({k: np.asarray(v, types.get(k)) for k, v in item["inputs"].items()})[0])


def _errors(compiled, items) -> list[float]:
    """Each item's relative L2 error of `compiled`'s noise prediction against its fp32 one."""
    out = []
    for item in items:
        diff = _predict(compiled, item) - item["reference"]
        out.append(math.sqrt(float(np.sum(diff * diff)) / float(np.sum(item["reference"] ** 2))))
    return out


def validation_metric(compiled, items) -> tuple[float, list[float]]:
    """NNCF's validation_fn: 1 - the held-out error, the mean of the items' (timesteps') relative L2
    errors (higher is better; fp32 scores 1, so NNCF's absolute drop is the error itself, while a
    score of 0 would make NNCF 3.4 divide by zero), and each item's score (NNCF ranks its quantizers
    on the items where the int8 model loses most)."""
    scores = [1 - e for e in _errors(compiled, items)]
    return float(np.mean(scores)), scores


def error_table(model, items: list[dict]) -> dict:
    """The held-out error of `model` (an openvino.Model) against fp32: by timestep, and their mean."""
    errors = _errors(_compile_f32(model), items)
    return dict(mean_rel_l2=round(float(np.mean(errors)), 5),
                by_t=[dict(t=i["t"], rel_l2=round(e, 5), samples=i["samples"]) for i, e in zip(items, errors)])


def noise_prediction_error(fp32_model, q_model, held: CalibrationSet) -> list[dict]:
    """Relative L2 error of the int8 noise prediction vs fp32, per held-out timestep (both in f32)."""
    return error_table(q_model, held_out_items(fp32_model, held))["by_t"]


LAYOUT_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Interpolate", "Split", "VariadicSplit",
              "StridedSlice", "Gather", "MaxPool", "ShapeOf"}


def int8_ops(model) -> set[str]:
    """Names of the operations of `model` that take an int8 input: one from a FakeQuantize, directly or
    through operations that only move data (NNCF quantizes those with their consumer)."""
    out = set()
    for op in model.get_ops():
        if op.get_type_name() in LAYOUT_OPS or op.get_type_name() == "FakeQuantize":
            continue
        for value in op.input_values():
            node = value.get_node()
            while node.get_type_name() in LAYOUT_OPS and node.get_input_size():
                node = node.input_value(0).get_node()
            if node.get_type_name() == "FakeQuantize":
                out.add(op.get_friendly_name())
                break
    return out


def by_module(op_names) -> dict:
    """Op names grouped by the PyTorch module they came from (`__module.<path>/<op>`: {path: [op]})."""
    out: dict = {}
    for name in sorted(op_names):
        m = re.fullmatch(r"__module\.([^/]+)/(.*)", name)
        module, op = m.groups() if m else ("", name)
        out.setdefault(module, []).append(op)
    return out


def restore_accuracy(model, calibration: CalibrationSet, items: list[dict], cfg: QuantizeConfig) -> tuple:
    """(int8 model, its error_table): NNCF's accuracy control on `model` with the budget cfg.max_drop on
    the held-out `items`. NNCF quantizes as quantize_model does, ranks groups of quantizers by the
    held-out score with each group's operations back in float, and returns groups to float greedily,
    best first, until the budget holds; where it cannot, it returns its best effort without a word."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    cfg = cfg.for_target()  # auto: this CPU's class, as quantize_model
    opts = nncf_options(cfg, model, kept_float(cfg, calibration))
    restorer = AdvancedAccuracyRestorerParameters(ranking_subset_size=len(items))
    if cfg.max_iterations is not None:
        restorer.max_num_iterations = cfg.max_iterations
    with nncf_quiet():
        restored = nncf.quantize_with_accuracy_control(
            model.clone(), calibration.nncf_dataset(), nncf.Dataset(items), validation_metric, max_drop=cfg.max_drop,
            drop_type=nncf.DropType.ABSOLUTE, subset_size=cfg.subset_size or len(calibration),
            advanced_quantization_parameters=opts.pop("advanced_parameters"),
            advanced_accuracy_restorer_parameters=restorer, **opts)
    _stamp(restored, cfg)
    return restored, error_table(restored, items)


def hold_budget(model, q, errors: dict, calibration: CalibrationSet, items: list[dict], cfg: QuantizeConfig) -> tuple:
    """(int8 model, its error_table, report) within cfg.max_drop: `q` (quantize_model's int8 model of
    `model`, whose error_table is `errors`) where it holds, else restore_accuracy's. The report: the
    budget, the held-out error before and after, the operations that went back to float by module.
    QuantizationError where NNCF's best effort misses the budget, or meets it only in all-float."""
    before, ops = errors["mean_rel_l2"], int8_ops(q)
    report = dict(max_drop=cfg.max_drop, rel_l2_before=before, int8_ops_before=len(ops), float_ops=0,
                  float_ops_by_module={})
    if before > cfg.max_drop:
        q, errors = restore_accuracy(model, calibration, items, cfg)
        left, after = int8_ops(q), errors["mean_rel_l2"]
        bound = "" if cfg.max_iterations is None else f", `max_iterations` {cfg.max_iterations}"
        if after > cfg.max_drop:
            raise QuantizationError(f"`max_drop` {cfg.max_drop} cannot be met: NNCF's accuracy control took the "
                                    f"held-out error from {before:.4g} to {after:.4g} at best ({len(left)} of "
                                    f"{len(ops)} operations left in int8{bound}); raise the budget")
        if not left:
            raise QuantizationError(f"`max_drop` {cfg.max_drop} is met only with every operation back in float: "
                                    "that is the fp32 model (edge-dm export); raise the budget")
        report.update(float_ops=len(ops - left), float_ops_by_module=by_module(ops - left))
    return q, errors, dict(report, rel_l2_after=errors["mean_rel_l2"])

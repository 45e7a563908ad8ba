"""NNCF post-training quantization of a denoiser's OpenVINO model with a calibration set, in memory.

Defaults (preset MIXED, model_type TRANSFORMER, i.e. SmoothQuant on the attention MatMuls, fast bias
correction, min-max ranges, the family's float-kept modules) were chosen by the fp32-vs-int8 error of
the noise prediction and the drift of whole images: see docs/QUANTIZATION.md for the measurements.
The overflow fix and NNCF's target device follow the target CPU class (cfg.target, edge_dm/targets.py:
7-bit weights on every layer for avx2 only; CPU_SPR for amx).
"""
from __future__ import annotations

import contextlib
import re

import numpy as np

from edge_dm.calibration import CalibrationSet
from edge_dm.configs import QuantizeConfig, nncf_enums
from edge_dm.errors import ConfigError
from edge_dm.targets import stamp


def keep_float_patterns(model, names) -> list[str]:
    """NNCF ignored-scope patterns for the modules `names`, matched against the op names the
    PyTorch frontend gives (`__module.<path>/aten::...`); ConfigError if a name matches no op."""
    patterns, ops = [], [op.get_friendly_name() for op in model.get_ops()]
    for name in names:
        pattern = rf".*[./]{re.escape(name)}[^/]*/.*"
        if not any(re.fullmatch(pattern, op) for op in ops):
            raise ConfigError(f"--keep-float {name}: no module of this model is named so")
        patterns.append(pattern)
    return patterns


def kept_float(cfg: QuantizeConfig, keep_float: tuple | None = None, calibration=None) -> tuple:
    """The modules left in float: cfg.keep_float, else `keep_float`, else the default of the model
    family the calibration set was made for (none when there is no calibration set to tell)."""
    if cfg.keep_float is not None:
        return cfg.keep_float
    if keep_float is not None:
        return keep_float
    if calibration is None:
        return ()
    from edge_dm.families import get

    return get(calibration.recipe.get("family")).default_keep_float


def check_quantizable(model, cfg: QuantizeConfig, calibration=None, keep_float: tuple | None = None) -> None:
    """Everything quantize_model checks, run before calibration: the calibration set fits `model`, the
    ignored scope and the kept-float modules match operations of it."""
    if cfg.mode == "weights":
        return
    if calibration is not None:
        calibration.check_fits(model)
    check_ignored(model, cfg)
    keep_float_patterns(model, kept_float(cfg, keep_float, calibration))


def check_ignored(model, cfg: QuantizeConfig) -> None:
    """ConfigError for an ignored-scope name, pattern or type that matches nothing in `model`
    (NNCF would otherwise quantize everything without a word)."""
    ops = model.get_ops()
    names = {op.get_friendly_name() for op in ops}
    types = {op.get_type_name() for op in ops}
    for n in cfg.ignored_names:
        if n not in names:
            raise ConfigError(f"--ignore-name {n}: no operation of this model has that name")
    for p in cfg.ignored_patterns:
        try:
            rx = re.compile(p)
        except re.error as exc:
            raise ConfigError(f"--ignore-pattern {p}: not a regular expression ({exc})") from None
        if not any(rx.fullmatch(n) for n in names):
            raise ConfigError(f"--ignore-pattern {p}: matches no operation of this model")
    for t in cfg.ignored_types:
        if t not in types:
            raise ConfigError(f"--ignore-type {t}: this model has no operation of that type")


def nncf_options(cfg: QuantizeConfig, model, keep_float) -> dict:
    """nncf.quantize's keyword arguments for cfg (its target resolved: QuantizeConfig.for_target),
    with `keep_float` module names in float."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    enums = nncf_enums(cfg.for_target())
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


def quantize_model(model, calibration: CalibrationSet | None, cfg: QuantizeConfig = QuantizeConfig(),
                   keep_float: tuple | None = None):
    """The int8 openvino.Model of `model` (left unchanged): W8A8 with NNCF on `calibration` for the CPU
    class cfg.target (auto: this CPU), or with cfg.mode "weights" int8 weight compression (no
    calibration). Modules left in float: cfg.keep_float, else `keep_float`, else the default of the
    model family the calibration set was made for. The int8 model's rt_info records the target
    (edge_dm.targets.made_for)."""
    import nncf

    if cfg.mode == "weights":
        return compress_weights(model.clone())
    check_quantizable(model, cfg, calibration, keep_float)
    cfg = cfg.for_target()  # auto: this CPU's class
    options = nncf_options(cfg, model, kept_float(cfg, keep_float, calibration))
    with nncf_quiet():
        q = nncf.quantize(model.clone(), calibration.nncf_dataset(),
                          subset_size=cfg.subset_size or len(calibration), **options)
    stamp(q, dict(name=cfg.target, overflow_fix=cfg.overflow_fix, target_device=cfg.target_device))
    return q


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


def noise_prediction_error(fp32_model, q_model, held: CalibrationSet) -> list[dict]:
    """Relative L2 error of the int8 noise prediction vs fp32, per held-out timestep (both in f32)."""
    from edge_dm.denoiser import OpenVINOModel

    out = []
    nets = [OpenVINOModel(m, "CPU", "LATENCY", precision_hint="f32") for m in (fp32_model, q_model)]
    for t in sorted(set(held.t.tolist()), reverse=True):
        idx = np.flatnonzero(held.t == t)
        num = den = 0.0
        for i in idx:
            a, b = (net.run(held.record(i))[0] for net in nets)
            num += float(np.sum((b - a) ** 2))
            den += float(np.sum(a ** 2))
        out.append(dict(t=int(t), rel_l2=round(float(np.sqrt(num / den)), 5), samples=len(idx)))
    return out

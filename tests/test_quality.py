"""Quality regression: the default int8 of the shipped model against its fp32, so a change that costs
quality fails CI (about a minute on 2 quiet cores; see "Why N = 8").

`edge-dm quantize`'s defaults through the library (calibrate + quantize_model, for the target this
CPU resolves to) but with N = 8 calibration samples instead of 32, then two checks against fp32 at
f32 precision:
- held-out noise-prediction error (relative L2) at 4 timesteps of 2 held-out DDIM-20 trajectories
  (seed HELD_OUT_SEED, never used for calibration);
- drift: PSNR of 4 int8 images (seeds 0-3, DDIM 10) from the fp32 images of the same seeds.
Why N = 8: the defaults' N = 32 took 98.5 s on the 2-core AVX2 VM with other jobs on it (export 26.6 s,
DNTC collection 25.2 s on 4 trajectories, NNCF 25.3 s, checks 14.8 s, imports 6 s; 98 s of CPU).
N = 8 needs one trajectory: 86 s of CPU, 59-62 s of wall time a seed in a quieter moment (imports
excluded; 98-129 s at a load of 3-5). Export (~24 s of CPU) and NNCF's fixed work (~22 s) remain.
The limits depend on the target because the overflow fix does (7-bit weights for avx2 only). The
int8 kernels of a VNNI or AMX target can only be measured on such a CPU: avx2 and vnni have limits,
amx skips until someone measures it there.
"""
from pathlib import Path

import pytest

from edge_dm.configs import CalibrationConfig, DeviceConfig, QuantizeJobConfig, SamplingConfig

pytestmark = pytest.mark.e2e

DEFAULTS = QuantizeJobConfig(calibration=CalibrationConfig(num_samples=8))  # edge-dm quantize's defaults, N = 8
# Measured on the 2-core VNNI development VM (Intel Xeon, AVX-512 VNNI, no AMX), 2026-12-01, at the defaults
# of then: the shortcut split, the shipped model's float-kept set (edge_dm.models) and GroupNorm compiled as
# one MVN a group; `measure` below for calibration seeds 0, 1, 2 and each target: PYTHONPATH=tests python -c
# "from test_quality import *; print(measure('/tmp/q', DEFAULTS.replace(quantization=QuantizeConfig(target=T),
# calibration=CalibrationConfig(num_samples=8, sampling=SamplingConfig(seed=S)))))"
#   held-out rel. L2 at t = 950 / 650 / 300 / 0      drift PSNR
# vnni (8-bit weights):
#   seed 0: 0.01071 / 0.01015 / 0.00493 / 0.14384    39.04 dB   (the test's: the default seed)
#   seed 1: 0.00718 / 0.00639 / 0.00410 / 0.05364    40.30 dB
#   seed 2: 0.00722 / 0.00640 / 0.00542 / 0.05446    38.84 dB
# avx2 (7-bit weights, the overflow fix; forced on the VNNI VM, whose int8 sums of 7-bit weights are those of
# an AVX2 CPU: the family's float set gave 0.01132 / 0.00986 / 0.00800 / 0.16285 and 26.76 dB there, against
# 0.01134 / 0.00982 / 0.00798 / 0.16462 and 26.83 dB on the AVX2 VM, AMD EPYC, the day before):
#   seed 0: 0.01080 / 0.00928 / 0.00488 / 0.14732    27.42 dB
#   seed 1: 0.00732 / 0.00603 / 0.00414 / 0.06721    30.50 dB
#   seed 2: 0.00664 / 0.00556 / 0.00530 / 0.07512    29.59 dB
# Each limit lies about 7% beyond the worst seed (0.4 dB for PSNR), so run-to-run noise passes and a loss of
# quality does not: with the family's float set (conv_in, conv_out, time_emb) seed 0 measures 0.01175 /
# 0.01124 / 0.00774 / 0.15902 and 37.57 dB on vnni, 0.00800 at t = 300 and 26.76 dB on avx2.
LIMITS = {
    "avx2": dict(rel_l2={950: 0.0116, 650: 0.0100, 300: 0.0057, 0: 0.158}, psnr_db=27.0),
    "vnni": dict(rel_l2={950: 0.0115, 650: 0.0109, 300: 0.0058, 0: 0.154}, psnr_db=38.4),
}


def measure(folder, cfg: QuantizeJobConfig = DEFAULTS, points: int = 4) -> tuple[dict, dict]:
    """The int8 of `cfg` (default: DEFAULTS) against fp32 on the shipped model, made by `edge-dm
    quantize` (edge_dm.jobs.quantize, so with the family's rewrites such as the shortcut split),
    working in `folder`: held-out rel. L2 by timestep, and drift (edge_dm.evaluate.drift)."""
    from edge_dm.calibration import HELD_OUT_SEED, held_out_set, reference_denoiser
    from edge_dm.jobs import quantize
    from edge_dm.metrics import drift
    from edge_dm.pipeline import Pipeline
    from edge_dm.quantize import noise_prediction_error

    int8, _ = quantize(cfg.replace(output=str(Path(folder) / "int8"), overwrite=True, eval_trajectories=1),
                       progress=False)
    q, fp32_model = int8.read_model(), int8.read_model(int8.fp32_ir)  # the fp32 IR it was quantized from
    fp32 = int8.with_model(fp32_model, precision="fp32")
    ref = Pipeline(fp32, DeviceConfig(precision_hint="f32", batch_size=4))
    s = SamplingConfig(steps=20)
    s = fp32.sampling(s)
    held = held_out_set(reference_denoiser(fp32, s), fp32.scheduler_config, fp32.sample_shape, s, 2, HELD_OUT_SEED,
                        points=points)
    errors = {e["t"]: e["rel_l2"] for e in noise_prediction_error(fp32_model, q, held)}
    images = SamplingConfig(steps=10)
    return errors, drift(Pipeline(int8, DeviceConfig(batch_size=4)).sample(4, images), ref.sample(4, images))


def test_default_int8_stays_close_to_fp32_on_the_shipped_model(tmp_path):
    target = DEFAULTS.quantization.for_target().target
    if target not in LIMITS:
        pytest.skip(f"no quality limits measured for target {target}: its int8 kernels (8-bit weights) run "
                    "only on a CPU with VNNI; measure them there and add them to LIMITS")
    limits = LIMITS[target]
    errors, d = measure(tmp_path, points=len(limits["rel_l2"]))
    assert set(errors) == set(limits["rel_l2"])
    assert all(errors[t] <= limits["rel_l2"][t] for t in errors), (errors, limits["rel_l2"])
    assert d["psnr_db"] >= limits["psnr_db"], d

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
int8 kernels of a VNNI or AMX target can only be measured on such a CPU, so those targets skip
until someone measures them there.
"""
from pathlib import Path

import pytest

from edge_dm.configs import CalibrationConfig, DeviceConfig, ExportConfig, QuantizeConfig, SamplingConfig

DEFAULTS = QuantizeConfig(calibration=CalibrationConfig(num_samples=8))  # edge-dm quantize's defaults, N = 8
# Measured on the 2-core AVX2 development VM (AMD EPYC, no VNNI), 2026-11-30, with `measure` below for
# calibration seeds 0, 1, 2: PYTHONPATH=tests python -c "from test_quality import *; print(measure('/tmp/q',
# DEFAULTS.replace(calibration=CalibrationConfig(num_samples=8, sampling=SamplingConfig(seed=S)))))"
#   held-out rel. L2 at t = 950 / 650 / 300 / 0      drift PSNR
#   seed 0: 0.01455 / 0.01351 / 0.01393 / 0.21441    26.75 dB   (the test's: the default seed)
#   seed 1: 0.01218 / 0.01143 / 0.01321 / 0.16471    28.33 dB
#   seed 2: 0.01171 / 0.01092 / 0.01339 / 0.15936    27.96 dB
# (N = 32, the default, gave 0.0113-0.0121 / 0.0109-0.0115 / 0.0134-0.0140 / 0.165-0.170 and 27.83-28.19 dB.)
# Each limit lies just beyond the worst seed, so run-to-run noise passes and a loss of quality does not.
LIMITS = {
    "avx2": dict(rel_l2={950: 0.0155, 650: 0.0145, 300: 0.0150, 0: 0.23}, psnr_db=26.3),
}


def measure(folder, cfg: QuantizeConfig = DEFAULTS, points: int = 4) -> tuple[dict, dict]:
    """The int8 of `cfg` (default: DEFAULTS) against fp32 on the shipped model,
    working in `folder`: held-out rel. L2 by timestep, and drift (edge_dm.evaluate.drift)."""
    from edge_dm.calibration import HELD_OUT_SEED, calibrate, held_out_set
    from edge_dm.evaluate import drift
    from edge_dm.jobs import export
    from edge_dm.pipeline import Pipeline
    from edge_dm.quantize import noise_prediction_error, quantize_model

    fp32 = export(ExportConfig(output=str(Path(folder) / "fp32"), overwrite=True))
    q = quantize_model(fp32.read_model(), calibrate(fp32, cfg.calibration), cfg)

    ref = Pipeline(fp32, DeviceConfig(precision_hint="f32", batch_size=4))
    s = SamplingConfig(steps=20)
    held = held_out_set(ref.reference_denoiser(s), fp32.scheduler_config, fp32.sample_shape, s, 2, HELD_OUT_SEED,
                        points=points)
    errors = {e["t"]: e["rel_l2"] for e in noise_prediction_error(fp32.read_model(), q, held)}
    images = SamplingConfig(steps=10)
    int8 = Pipeline(fp32.with_model(q, precision="int8"), DeviceConfig(batch_size=4))
    return errors, drift(int8.sample(4, images), ref.sample(4, images))


def test_default_int8_stays_close_to_fp32_on_the_shipped_model(tmp_path):
    target = DEFAULTS.for_target().target
    if target not in LIMITS:
        pytest.skip(f"no quality limits measured for target {target}: its int8 kernels (8-bit weights) run "
                    "only on a CPU with VNNI; measure them there and add them to LIMITS")
    limits = LIMITS[target]
    errors, d = measure(tmp_path, points=len(limits["rel_l2"]))
    assert set(errors) == set(limits["rel_l2"])
    assert all(errors[t] <= limits["rel_l2"][t] for t in errors), (errors, limits["rel_l2"])
    assert d["psnr_db"] >= limits["psnr_db"], d

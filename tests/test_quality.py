"""Quality regression: the default int8 of the shipped model against its fp32, so a change that costs
quality fails CI (e2e: about a minute on 2 cores).

`edge-dm quantize`'s defaults (edge_dm.jobs.quantize, for the target this CPU resolves to) with N = 8
calibration samples, then two checks against fp32 at f32:
- held-out noise-prediction error (relative L2) at 4 timesteps of 2 held-out DDIM-20 trajectories
  (seed HELD_OUT_SEED, never used for calibration);
- drift: PSNR of 4 int8 images (seeds 0-3, DDIM 10, the target's default float precision) from the
  fp32 images of the same seeds.
Each target's limits lie about 7% beyond the worst of calibration seeds 0-2 (0.4 dB for PSNR), measured
with `measure` on a CPU of that class: docs/experiments/2026-12-01-quality-test-limits.md (avx2, vnni)
and docs/experiments/2026-12-06-quality-test-limits-amx.md (amx).
"""
from pathlib import Path

import pytest

from edge_dm.configs import CalibrationConfig, DeviceConfig, QuantizeJobConfig, SamplingConfig

pytestmark = pytest.mark.e2e

DEFAULTS = QuantizeJobConfig(calibration=CalibrationConfig(num_samples=8))  # edge-dm quantize's defaults, N = 8
LIMITS = {
    "avx2": dict(rel_l2={950: 0.0116, 650: 0.0100, 300: 0.0057, 0: 0.158}, psnr_db=27.0),
    "vnni": dict(rel_l2={950: 0.0115, 650: 0.0109, 300: 0.0058, 0: 0.154}, psnr_db=38.4),
    "amx": dict(rel_l2={950: 0.0115, 650: 0.0109, 300: 0.0058, 0: 0.154}, psnr_db=35.9),  # the drift of a bf16 rest
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
    limits = LIMITS[DEFAULTS.quantization.for_target().target]
    errors, d = measure(tmp_path, points=len(limits["rel_l2"]))
    assert set(errors) == set(limits["rel_l2"])
    assert all(errors[t] <= limits["rel_l2"][t] for t in errors), (errors, limits["rel_l2"])
    assert d["psnr_db"] >= limits["psnr_db"], d

"""edge-dm: post-training int8 quantization of diffusion models (PTQ4DM's DNTC) with NNCF and OpenVINO.

The Python API, in diffusers' style (objects in, objects out; nothing is written unless asked):

    Pipeline.from_pretrained(bundle_or_model, device=...)(...)  images from a bundle on a device
    load_model(spec)                                           a diffusers model and its family
    calibrate(fp32_bundle, CalibrationConfig(...))             a CalibrationSet (DNTC by default)
    quantize_model(ov_model, calibration_set, QuantizeConfig())  the int8 openvino.Model
    Bundle.from_pretrained(...), bundle.with_model(...).save_pretrained(path)

edge_dm.jobs holds what the CLI runs (export, quantize, generate), each writing its output.
"""

__version__ = "0.2.0"

from edge_dm import jobs  # noqa: E402
from edge_dm.bundle import Bundle  # noqa: E402
from edge_dm.calibration import CalibrationSet, calibrate  # noqa: E402
from edge_dm.configs import (CalibrationConfig, DeviceConfig, ExportConfig, GenerateConfig,  # noqa: E402
                             QuantizeConfig, SamplingConfig)
from edge_dm.models import load_model  # noqa: E402
from edge_dm.pipeline import Pipeline, PipelineOutput  # noqa: E402
from edge_dm.quantize import quantize_model  # noqa: E402

__all__ = ["jobs", "Bundle", "CalibrationConfig", "CalibrationSet", "DeviceConfig", "ExportConfig", "GenerateConfig",
           "Pipeline", "PipelineOutput", "QuantizeConfig", "SamplingConfig", "calibrate", "load_model",
           "quantize_model"]

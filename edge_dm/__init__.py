"""edge-dm: post-training int8 quantization of diffusion models (PTQ4DM's DNTC) with NNCF and OpenVINO.

The Python API, in diffusers' and NNCF's style (objects in, objects out; nothing is written unless asked):

    load_model(spec)                                  a diffusers model and its family
    Bundle.from_pretrained(...)                       an OpenVINO bundle edge-dm made (or export(...) one)
    calibrate(fp32_bundle, CalibrationConfig(...))    a CalibrationSet (DNTC by default)
    quantize_model(ov_model, calibration_set, QuantizeConfig())   the int8 openvino.Model
    bundle.with_model(int8).save_pretrained(path)     write a bundle
    Pipeline(bundle, DeviceConfig(...))(...)          images, on an OpenVINO device

edge_dm.jobs holds what the CLI runs (export, quantize, generate, evaluate, benchmark), each writing
its output.
"""
import os
from importlib.metadata import PackageNotFoundError, version

# diffusers logs at import time ("Multiple distributions found for package optimum": optimum-intel also
# provides `optimum`); edge-dm's output shows edge-dm's lines (a caller's own setting wins)
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

try:
    __version__ = version("edge-dm")
except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
    __version__ = "unknown"

from edge_dm.bundle import Bundle  # noqa: E402
from edge_dm.calibration import CalibrationSet, calibrate  # noqa: E402
from edge_dm.configs import (  # noqa: E402
    CalibrationConfig,
    DeviceConfig,
    EvaluateConfig,
    ExportConfig,
    GenerateConfig,
    QuantizeConfig,
    QuantizeJobConfig,
    SamplingConfig,
)
from edge_dm.models import load_model  # noqa: E402
from edge_dm.pipeline import Pipeline, PipelineOutput  # noqa: E402
from edge_dm.quantize import quantize_model  # noqa: E402

__all__ = ["Bundle", "CalibrationConfig", "CalibrationSet", "DeviceConfig", "EvaluateConfig", "ExportConfig",
           "GenerateConfig", "Pipeline", "PipelineOutput", "QuantizeConfig", "QuantizeJobConfig", "SamplingConfig",
           "calibrate", "load_model", "quantize_model"]

"""edge-dm: post-training int8 quantization of diffusion models (PTQ4DM's DNTC) with NNCF and OpenVINO."""

__version__ = "0.1.0"

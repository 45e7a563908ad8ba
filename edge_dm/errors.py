"""edge-dm's errors: one base class, one subclass per kind of bad input.

The library raises these with a one-line message meant for a person; the CLI turns any of them into
a click error (one line, exit code 1) and never shows a traceback for them.
"""
import re


class EdgeDMError(Exception):
    """Base class of every error edge-dm raises on purpose."""


class ConfigError(EdgeDMError, ValueError):
    """An option or a combination of options is invalid."""


class ModelNotFoundError(EdgeDMError):
    """A model name, hub id or directory could not be resolved to a model."""


class BundleError(EdgeDMError):
    """An edge-dm bundle (OpenVINO IR + scheduler + recipe) is missing, incomplete or corrupt."""


class DeviceError(EdgeDMError):
    """An OpenVINO device is not present or cannot run the model."""


class DataError(EdgeDMError):
    """Image data or a calibration/statistics file is missing or unreadable."""


class OutputExistsError(EdgeDMError):
    """The output path exists and is not empty, and overwriting was not asked for."""


class QuantizationError(EdgeDMError):
    """Quantization ran but could not meet the quality budget it was asked to hold (--max-drop)."""


class BenchmarkError(EdgeDMError):
    """A benchmark ran but missed the speed-up it was asked to hold."""


_SOURCE_LOCATION = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)\s*")
_STATUS_TAG = re.compile(r"\[\s*[A-Z_]+\s*\]")


def library_reason(exc: BaseException) -> str:
    """The human reason in a library exception's message (e.g. OpenVINO's), as one line."""
    text = ""
    for line in str(exc).splitlines():
        line = _STATUS_TAG.sub("", _SOURCE_LOCATION.sub("", line.strip())).strip()
        if line:
            text += (" " if text.endswith(":") else "; " if text else "") + line
    if len(text) > 300:
        text = text[:297].rstrip() + "..."
    return text or type(exc).__name__

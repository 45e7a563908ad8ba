"""edge-dm's errors: one base class, one subclass per kind of bad input.

The library raises these with a one-line message meant for a person. A message names the options
it is about in backticks, by their Python names (`keep_float`); `str(error)` shows those names, and
the CLI shows the command's flag for each (`--keep-float`). The CLI turns any of these errors into
one line and exit code 1, never a traceback.
"""
from __future__ import annotations

import re
from typing import Callable

_PARAM = re.compile(r"`(\w+)`")


class EdgeDMError(Exception):
    """Base class of every error edge-dm raises on purpose."""

    def __init__(self, message: str = ""):
        self.template = message
        super().__init__(self.render())

    def render(self, name: Callable[[str], str] = str) -> str:
        """The message with each `param` written as name(param) (default: the Python name)."""
        return _PARAM.sub(lambda m: name(m.group(1)), self.template)


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


class OutputError(EdgeDMError):
    """An output could not be written (a full disk, a vanished folder)."""


class QuantizationError(EdgeDMError):
    """Quantization ran but could not meet the quality budget it was asked to hold (`max_drop`)."""


class BenchmarkError(EdgeDMError):
    """A benchmark ran but missed the speed-up it was asked to hold."""


class ClusterError(EdgeDMError):
    """The Ray cluster does not answer, cannot place the workers asked for, or keeps losing them."""


def interrupted(exc: BaseException) -> bool:
    """Whether a library error is a KeyboardInterrupt (Ctrl-C, or SIGTERM as edge-dm maps it) that the
    library wrapped into an exception of its own (OpenVINO's converters and optimum's exporters carry
    only its text), directly or as a cause."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt) or "KeyboardInterrupt" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


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

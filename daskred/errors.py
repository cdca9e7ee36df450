"""The few exception and warning classes of daskred.

Every class subclasses a built-in so that callers may catch either the precise
daskred class or the familiar built-in (``OSError``, ``ValueError``...).  The
command-line interface prints any :class:`DaskredError` as one line.
"""

from __future__ import annotations

__all__ = [
    "DaskredError",
    "FitsFileError",
    "HeaderError",
    "ShapeMismatchError",
    "CalibrationError",
    "RegistrationError",
    "ConfigError",
    "DaskredWarning",
]


class DaskredError(Exception):
    """Base class of every error raised on purpose by daskred."""


class FitsFileError(DaskredError, OSError):
    """A FITS file cannot be opened, is truncated, or holds no usable image."""


class HeaderError(DaskredError, ValueError):
    """A header keyword daskred needs is missing or holds an unusable value."""


class ShapeMismatchError(DaskredError, ValueError):
    """Frames (or a frame and a master) do not share the same shape."""


class CalibrationError(DaskredError, ValueError):
    """Calibration data cannot be applied (e.g. an all-zero flat)."""


class RegistrationError(DaskredError, RuntimeError):
    """A frame cannot be registered onto the reference frame."""


class ConfigError(DaskredError, ValueError):
    """A configuration value is unknown or out of range."""


class DaskredWarning(UserWarning):
    """Something was done that the user may not have expected (recorded, not fatal)."""

"""FITS input and output: lazy frame cubes, header reading, section parsing, writers.

This is the only module that knows FITS conventions (1-based, x-first sections,
BZERO/BSCALE scaling).  Everything else sees 0-based ``(y, x)`` numpy slices and
float32 pixels.
"""

from __future__ import annotations

import re

from .errors import HeaderError

__all__ = ["parse_section"]

_SECTION = re.compile(r"^\s*\[\s*(\d+|\*)\s*(?::\s*(\d+))?\s*,\s*(\d+|\*)\s*(?::\s*(\d+))?\s*\]\s*$")


def _axis_slice(start: str, stop: str | None, length: int | None, text: str) -> slice:
    if start == "*":
        return slice(0, length)
    first = int(start)
    last = int(stop) if stop is not None else first
    if first < 1 or last < 1:
        raise HeaderError(f"FITS section {text!r} has an index below 1; sections are 1-based")
    if length is not None and max(first, last) > length:
        raise HeaderError(
            f"FITS section {text!r} reaches {max(first, last)}, beyond the image axis of length {length}"
        )
    if last < first:
        # FITS allows reversed sections (read-out direction); the pixels covered are the same.
        first, last = last, first
    return slice(first - 1, last)


def parse_section(text: str, shape: tuple[int, int] | None = None) -> tuple[slice, slice]:
    """Translate a FITS section such as ``'[18:1382,1:1370]'`` into numpy slices.

    Parameters
    ----------
    text : str
        FITS/IRAF section, 1-based and inclusive, x (columns) first.  ``*`` stands for a
        whole axis.
    shape : tuple of int, optional
        ``(ny, nx)`` of the image; when given, the section is checked against it.

    Returns
    -------
    (slice, slice)
        0-based ``(y, x)`` slices, usable as ``data[ys, xs]``.

    Examples
    --------
    >>> parse_section("[18:1382,1:1370]")
    (slice(0, 1370, None), slice(17, 1382, None))
    """
    if not isinstance(text, str):
        raise HeaderError(f"a FITS section must be a string like '[1:100,1:200]', got {text!r}")
    match = _SECTION.match(text)
    if match is None:
        raise HeaderError(f"cannot parse FITS section {text!r}; expected '[x1:x2,y1:y2]' (1-based, x first)")
    x0, x1, y0, y1 = match.groups()
    ny, nx = shape if shape is not None else (None, None)
    return _axis_slice(y0, y1, ny, text), _axis_slice(x0, x1, nx, text)

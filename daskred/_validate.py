"""Argument checks shared by the stage modules (validation at the public boundary)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .errors import ConfigError, ShapeMismatchError


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ConfigError naming the allowed values when ``value`` is not one of them."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}")


def frame_cube(frames: xr.DataArray | xr.Dataset, mask: Any = None) -> tuple[xr.DataArray, Any, bool]:
    """Frames as ``(frame, y, x)``; a Dataset's ``mask`` joins ``mask``; True when given 2-D.

    Returns ``(cube, mask, single)``.
    """
    if isinstance(frames, xr.Dataset):
        if "data" not in frames:
            raise ConfigError(f"a Dataset of frames needs a 'data' variable, got {list(frames)}")
        if "mask" in frames:
            bad = frames["mask"].astype(bool)
            if mask is not None:
                other = mask if isinstance(mask, xr.DataArray) else xr.DataArray(mask, dims=bad.dims[-np.ndim(mask):])
                bad = bad | other
            mask = bad
        frames = frames["data"]
    if not isinstance(frames, xr.DataArray):
        raise TypeError(f"frames must be an xarray.DataArray or Dataset, got {type(frames).__name__}")
    single = frames.dims == ("y", "x")
    if single:
        frames = frames.expand_dims("frame")
    if frames.dims != ("frame", "y", "x"):
        raise ShapeMismatchError(
            f"frames must have dims ('frame', 'y', 'x') or ('y', 'x'), got {frames.dims}; "
            "use .transpose('frame', 'y', 'x')"
        )
    return frames, mask, single


def mask_cube(mask: Any, frames: xr.DataArray, chunks: tuple[tuple[int, ...], ...], *,
              name: str = "mask") -> da.Array | None:
    """A user mask (``(y, x)`` for every frame or ``(frame, y, x)``) as a dask bool cube."""
    if mask is None:
        return None
    if isinstance(mask, xr.DataArray):
        if mask.dims not in (("y", "x"), ("frame", "y", "x")):
            raise ShapeMismatchError(f"{name} must have dims ('y', 'x') or ('frame', 'y', 'x'), got {mask.dims}")
        values = mask.data
    elif isinstance(mask, (np.ndarray, da.Array)):
        values = mask
    else:
        raise TypeError(f"{name} must be a boolean DataArray or array, got {type(mask).__name__}")
    if values.dtype != np.bool_:
        raise ConfigError(f"{name} must be boolean (True = ignore the pixel), got dtype {values.dtype}")
    if values.shape not in (frames.shape[1:], frames.shape):
        raise ShapeMismatchError(
            f"{name} has shape {values.shape}; expected {frames.shape[1:]} (one mask for every "
            f"frame) or {frames.shape} (one per frame)"
        )
    if not isinstance(values, da.Array):
        values = da.from_array(values, chunks=chunks[-values.ndim:])
    if values.ndim == 2:
        values = da.broadcast_to(values[None], frames.shape, chunks=chunks)
    return values.rechunk(chunks)

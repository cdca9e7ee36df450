"""Frames and masters as dask planes: the plumbing shared by calibration and pixel quality.

A stack of frames arrives as an ``xr.DataArray`` with dims ``("frame", "y", "x")`` (or a
single ``("y", "x")`` image) or as an ``xr.Dataset`` holding the variables ``"data"``,
``"variance"`` and (optionally) ``"mask"``.  ``_unpack`` turns it into float32
``(frame, y, x)`` dask planes and ``_pack`` wraps new planes back into the same kind;
``_unpack_master`` reads a calibration master (``("y", "x")`` array, Dataset or
:class:`daskred.masters.Master`) chunked like the frames, and ``_per_frame`` reads one
number per frame (gain, exposure time, saturation level) from an override or a frame
coordinate; ``_one_section`` reads the one FITS section (BIASSEC, TRIMSEC, DATASEC) that
every frame shares.  Used by :mod:`daskred.calibrate` and :mod:`daskred.quality`; nothing
here computes.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from astropy import units as u

from .errors import ConfigError, HeaderError, ShapeMismatchError

Frames = xr.DataArray | xr.Dataset
Master = xr.DataArray | xr.Dataset


@dataclass(frozen=True)
class _Planes:
    """The planes of a stack of frames, as ``(frame, y, x)`` dask arrays."""

    data: da.Array
    variance: da.Array | None
    mask: da.Array | None
    template: xr.DataArray  # the data variable as a (frame, y, x) DataArray
    squeeze: bool  # the input was a single (y, x) image
    dataset: bool  # the input was a Dataset


def _as_cube(arr: xr.DataArray, what: str) -> tuple[xr.DataArray, bool]:
    dims = set(arr.dims)
    if dims == {"y", "x"}:
        return arr.transpose("y", "x").expand_dims("frame"), True
    if dims == {"frame", "y", "x"}:
        return arr.transpose("frame", "y", "x"), False
    raise ShapeMismatchError(
        f"{what} must have dims ('frame', 'y', 'x') or ('y', 'x'), got {arr.dims}; "
        "rename the dimensions (e.g. `.rename({'dim_0': 'y', 'dim_1': 'x'})`)"
    )


def _as_dask(arr: xr.DataArray) -> da.Array:
    """The dask array behind a (frame, y, x) DataArray, one chunk per frame if it had none."""
    data = arr.data
    if isinstance(data, da.Array):
        return data
    chunks = {"frame": 1, "y": -1, "x": -1} if "frame" in arr.dims else {"y": -1, "x": -1}
    return arr.chunk(chunks).data


def _unpack(frames: Frames, what: str = "frames") -> _Planes:
    if isinstance(frames, xr.Dataset):
        if "data" not in frames:
            raise ConfigError(
                f"a Dataset of {what} must hold a 'data' variable (and optionally 'variance' and "
                f"'mask'); it holds {sorted(map(str, frames.data_vars))}"
            )
        data, squeeze = _as_cube(frames["data"], what)
        variance = mask = None
        if "variance" in frames:
            variance = _as_dask(_as_cube(frames["variance"], f"{what} variance")[0]).astype(np.float32)
        if "mask" in frames:
            mask = _as_dask(_as_cube(frames["mask"], f"{what} mask")[0]).astype(bool)
        dataset = True
    elif isinstance(frames, xr.DataArray):
        data, squeeze = _as_cube(frames, what)
        variance = mask = None
        dataset = False
    else:
        raise ConfigError(f"{what} must be an xarray DataArray or Dataset, got {type(frames).__name__}")
    for plane, label in ((variance, "variance"), (mask, "mask")):
        if plane is not None and plane.shape != data.shape:
            raise ShapeMismatchError(
                f"the {label} of {what} has shape {plane.shape} but the data has shape {data.shape}"
            )
    darr = _as_dask(data)
    if darr.dtype != np.float32:
        darr = darr.astype(np.float32)
    if variance is not None:
        variance = variance.rechunk(darr.chunks)
    if mask is not None:
        mask = mask.rechunk(darr.chunks)
    return _Planes(darr, variance, mask, data, squeeze, dataset)


def _pack(
    planes: _Planes,
    data: da.Array,
    variance: da.Array | None,
    mask: da.Array | None,
    *,
    history: str,
    units: str | None = None,
    force_dataset: bool = False,
) -> Frames:
    attrs = dict(planes.template.attrs)
    attrs["history"] = [*list(attrs.get("history", [])), history]
    if units is not None:
        attrs["units"] = units
    tmpl = planes.template

    def wrap(arr: da.Array, keep_attrs: bool) -> xr.DataArray:
        out = xr.DataArray(arr, dims=("frame", "y", "x"), coords=tmpl.coords, attrs=attrs if keep_attrs else {})
        return out.isel(frame=0) if planes.squeeze else out

    out_data = wrap(data, True)
    out_data.name = tmpl.name
    if not (planes.dataset or force_dataset):
        return out_data
    variables = {"data": out_data}
    if variance is not None:
        variables["variance"] = wrap(variance, False)
    if mask is not None:
        variables["mask"] = wrap(mask, False)
    return xr.Dataset(variables)


def _frame_labels(arr: xr.DataArray, index: Sequence[int] | np.ndarray) -> str:
    paths = _coord_values(arr, "path")
    labels = [str(paths[i]) if paths is not None and str(paths[i]) else f"frame {i}" for i in index]
    shown = ", ".join(labels[:5])
    return shown + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")


def _coord_values(arr: xr.DataArray, name: str) -> np.ndarray | None:
    """Values of a frame coordinate (metadata, never dask) as one entry per frame."""
    nframe = arr.sizes.get("frame", 1)
    if name not in arr.coords:
        return None
    coord = arr.coords[name]
    values = np.asarray(coord.values)
    if coord.ndim == 0:
        return np.full(nframe, values.item(), dtype=object)
    if coord.dims == ("frame",):
        return values
    return None


def _as_master(master: Any) -> Any:
    """Accept a :class:`daskred.masters.Master` (or anything with a DataArray ``data``)."""
    if not isinstance(master, (xr.DataArray, xr.Dataset)) and isinstance(getattr(master, "data", None), xr.DataArray):
        return master.data
    return master


def _master_label(master: Master, what: str) -> str:
    master = _as_master(master)
    arr = master["data"] if isinstance(master, xr.Dataset) else master
    if "path" in arr.coords and arr.coords["path"].ndim == 0 and str(arr.coords["path"].values):
        return f"{what} {str(arr.coords['path'].values)!r}"
    if arr.attrs.get("path"):
        return f"{what} {str(arr.attrs['path'])!r}"
    if arr.name is not None:
        return f"{what} {str(arr.name)!r}"
    return what


def _master_scalar(master: Master, name: str) -> Any:
    master = _as_master(master)
    arr = master["data"] if isinstance(master, xr.Dataset) else master
    if name in arr.coords and arr.coords[name].ndim == 0:
        return arr.coords[name].values.item()
    if name in arr.attrs:
        return arr.attrs[name]
    return None


def _unpack_master(master: Master, planes: _Planes, what: str) -> tuple[da.Array, da.Array | None, str]:
    """A master as a (y, x) float32 dask array chunked like the frames, with its variance."""
    master = _as_master(master)
    label = _master_label(master, what)
    if isinstance(master, xr.Dataset):
        if "data" not in master:
            raise ConfigError(f"{label} is a Dataset without a 'data' variable")
        arrays = {"data": master["data"], "variance": master.get("variance")}
    elif isinstance(master, xr.DataArray):
        arrays = {"data": master, "variance": None}
    else:
        raise ConfigError(f"{label} must be an xarray DataArray or Dataset, got {type(master).__name__}")
    ny, nx = planes.data.shape[1:]
    out: dict[str, da.Array | None] = {}
    for key, arr in arrays.items():
        if arr is None:
            out[key] = None
            continue
        if "frame" in arr.dims and arr.sizes["frame"] == 1:
            arr = arr.isel(frame=0)
        if set(arr.dims) != {"y", "x"}:
            raise ShapeMismatchError(
                f"{label} must be a single image with dims ('y', 'x'), got dims {arr.dims}; "
                "combine a stack into a master first"
            )
        arr = arr.transpose("y", "x")
        if arr.shape != (ny, nx):
            raise ShapeMismatchError(
                f"{label} has shape {arr.shape} but the frames have shape {(ny, nx)}; "
                "calibration frames and science frames must be trimmed (and binned) the same way"
            )
        darr = arr.data if isinstance(arr.data, da.Array) else da.from_array(np.asarray(arr.data), chunks=-1)
        out[key] = darr.astype(np.float32).rechunk(planes.data.chunks[1:])
    return out["data"], out["variance"], label  # type: ignore[return-value]


def _per_frame(
    arr: xr.DataArray,
    value: Any,
    *,
    coord: str,
    what: str,
    unit: u.UnitBase,
    option: str,
) -> np.ndarray:
    """One float per frame from an override (number, Quantity, coordinate name) or a coordinate."""
    nframe = arr.sizes.get("frame", 1)
    if isinstance(value, u.Quantity):
        try:
            number = value.to_value(unit)
        except u.UnitConversionError as err:
            raise ConfigError(f"{option}={value} cannot be converted to {unit}") from err
        values = np.broadcast_to(np.asarray(number, dtype=np.float64), (nframe,)).copy()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        values = np.full(nframe, float(value))
    elif value is None or isinstance(value, str):
        name = coord if value is None else value.lower()
        raw = _coord_values(arr, name)
        if raw is None:
            raise HeaderError(
                f"the frames carry no {name!r} coordinate, so the {what} is unknown; pass "
                f"{option}=<value in {unit}> or read the header keyword that holds it into the "
                f"{name!r} coordinate"
            )
        try:
            values = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise HeaderError(f"the {name!r} coordinate holds non-numeric values: {raw!r}") from err
    else:
        raise ConfigError(
            f"{option} must be a number, an astropy Quantity or a coordinate name, got {value!r}"
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise HeaderError(
            f"the {what} is unknown (missing or NaN) for {_frame_labels(arr, bad)}; pass "
            f"{option}=<value in {unit}> or fix the header"
        )
    return values


def _column(values: np.ndarray, like: Any = None) -> Any:
    """Per-frame values as a ``(frame, 1, 1)`` column; chunked along frame like ``like``.

    A numpy column times a 2-D master broadcast to ``(1, y, x)`` would put every frame in
    one block (a whole cube per task); chunking the column like the frames keeps one frame
    a task.
    """
    column = np.asarray(values, dtype=np.float64).reshape(-1, 1, 1)
    if isinstance(like, da.Array):
        return da.from_array(column, chunks=(like.chunks[0], 1, 1))
    return column


def _one_section(arr: xr.DataArray, section: str | None, coords: Sequence[str], what: str, option: str) -> str:
    """The single FITS section shared by every frame (explicit, or from coordinates)."""
    if section is not None:
        if not isinstance(section, str):
            raise ConfigError(f"{option} must be a FITS section string like '[1:100,1:200]', got {section!r}")
        return section
    for name in coords:
        values = _coord_values(arr, name)
        if values is None:
            continue
        texts = np.array([str(v).strip() if v is not None else "" for v in values], dtype=object)
        if not any(texts):
            continue
        first = texts[0]
        differ = np.flatnonzero(texts != first)
        if differ.size:
            raise HeaderError(
                f"the frames do not share one {name.upper()}: {first!r} for {_frame_labels(arr, [0])} "
                f"but {texts[differ[0]]!r} for {_frame_labels(arr, differ)}; process frames with "
                f"different layouts separately, or pass {option}= explicitly"
            )
        return first
    keys = "/".join(c.upper() for c in coords)
    raise HeaderError(
        f"no {what} is known: the frames have no (or empty) {keys}; pass {option}='[x1:x2,y1:y2]'"
    )

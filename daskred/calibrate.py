"""Science-frame calibration: overscan, trim, bias, dark, flat, gain, masks and variance.

Every step takes a stack of frames, an ``xr.DataArray`` with dims ``("frame", "y", "x")``
(or a single ``("y", "x")`` image), and returns a new lazy object of the same kind.  A step
can also take an ``xr.Dataset`` holding the variables ``"data"``, ``"variance"`` and
(optionally) ``"mask"``; it then propagates the variance the way ccdproc propagates a
``StdDevUncertainty`` (uncorrelated first-order propagation) and ORs new bad pixels into
the mask.  :func:`calibrate` chains the steps in the usual order and always returns such a
Dataset.

Calibration masters (bias, dark, flat) are ``("y", "x")`` arrays, Datasets with
``"data"`` and ``"variance"`` when their own noise should be propagated, or
:class:`daskred.masters.Master` objects (their ``data`` is used; masters from
:func:`daskred.masters.make_masters` carry no variance, so their noise is not propagated).  Scalar
coordinates ``path`` (used in messages) and ``exptime`` (used to scale darks) are read from
them when present.

Nothing here computes.  The only data-dependent numbers, the flat normalisation and the
statistics of :func:`make_bad_pixel_mask`, are 0-d dask arrays; a flat without a single
usable pixel therefore cannot be detected from metadata and raises
:class:`~daskred.errors.CalibrationError` (naming the flat) when the graph runs.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr
from astropy import units as u
from dask.base import tokenize

from ._validate import check_choice
from .errors import CalibrationError, ConfigError, FitsFileError, HeaderError, ShapeMismatchError
from .io import parse_section

__all__ = [
    "subtract_overscan",
    "trim",
    "subtract_bias",
    "subtract_dark",
    "flat_correct",
    "gain_correct",
    "make_variance",
    "mask_saturated",
    "make_bad_pixel_mask",
    "load_mask",
    "calibrate",
]

Frames = xr.DataArray | xr.Dataset
Master = xr.DataArray | xr.Dataset

_OVERSCAN_METHODS = ("median", "mean")
_OVERSCAN_FITS = ("none", "polynomial")
_OVERSCAN_AXES = ("auto", "x", "y")
_NORMS = ("mean", "median")
_UNITS = ("adu", "electron")


# --------------------------------------------------------------------------------------
# Private plumbing: unpack DataArray / Dataset inputs into dask planes and back.
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Overscan and trim
# --------------------------------------------------------------------------------------


def _overscan_profile(block: np.ndarray, *, collapse: int, method: str, fit: str, order: int) -> np.ndarray:
    """Kernel: per-line overscan level of one frame's overscan strip, optionally fitted.

    ``block`` is ``(1, ny_os, nx_os)``; ``collapse`` is the image axis (1 = y, 2 = x) that is
    reduced.  Returns float64 of shape ``(1, L, 1)`` (collapse x) or ``(1, 1, L)``.
    """
    values = block.astype(np.float64)
    reduce = np.nanmedian if method == "median" else np.nanmean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN lines give NaN, as intended
        profile = reduce(values, axis=collapse)[0]
    if fit == "polynomial":
        pos = np.arange(profile.size, dtype=np.float64)
        good = np.isfinite(profile)
        if good.sum() > order:
            poly = np.polynomial.Polynomial.fit(pos[good], profile[good], order)
            profile = poly(pos)
    return profile.reshape((1, -1, 1) if collapse == 2 else (1, 1, -1))


def subtract_overscan(
    frames: Frames,
    *,
    section: str | None = None,
    method: Literal["median", "mean"] = "median",
    fit: Literal["none", "polynomial"] = "none",
    order: int = 1,
    axis: Literal["auto", "x", "y"] = "auto",
) -> Frames:
    """Subtract the overscan level, line by line, from each frame.

    Follows :func:`ccdproc.subtract_overscan`: the overscan strip is collapsed across its
    short side with a median or mean (one value per detector line), optionally replaced by a
    least-squares polynomial of ``order`` along the lines, and the result is subtracted from
    every pixel of that line.

    Parameters
    ----------
    frames : xarray.DataArray or xarray.Dataset
        Raw frames, dims ``("frame", "y", "x")`` or ``("y", "x")``; a Dataset holds ``data``
        (and optionally ``variance``, ``mask``, passed through unchanged as in ccdproc).
    section : str, optional
        FITS section of the overscan (1-based, x first), e.g. ``'[1388:1432,1:1370]'``.
        Default: the frames' ``biassec`` coordinate, which must be the same for every frame.
    method : {"median", "mean"}
        How each overscan line is collapsed (NaN pixels ignored).  ccdproc: ``median=True``.
    fit : {"none", "polynomial"}
        ``"polynomial"`` replaces the per-line values by a least-squares polynomial fit along
        the lines (ccdproc: ``model=Polynomial1D(order)``; Chebyshev/Legendre models of the
        same degree span the same functions and give the same fit).
    order : int
        Degree of the polynomial when ``fit="polynomial"``.
    axis : {"auto", "x", "y"}
        Axis the overscan is collapsed along.  ``"x"``: the strip is a block of columns and
        one value per row is subtracted (ccdproc ``overscan_axis=1``); ``"y"``: a block of
        rows, one value per column (``overscan_axis=0``); ``"auto"``: the strip's shorter
        side (ccdproc ``overscan_axis=None``).

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Same kind, shape and coordinates as ``frames``, float32, lazy.

    Raises
    ------
    HeaderError
        No section given and no ``biassec`` coordinate, or frames with different sections.
    ShapeMismatchError
        The overscan strip does not span the full image along its lines.
    ConfigError
        Unknown ``method``, ``fit`` or ``axis``, or a negative ``order``.

    Notes
    -----
    Each frame's overscan strip (small) is gathered into one block to compute its profile;
    the subtraction itself stays blockwise on the frames' ``(1, band, W)`` chunks.  Nothing
    is computed.

    Examples
    --------
    >>> frames = subtract_overscan(raw, section="[1388:1432,1:1370]", method="median")  # doctest: +SKIP
    """
    check_choice("method", method, _OVERSCAN_METHODS)
    check_choice("fit", fit, _OVERSCAN_FITS)
    check_choice("axis", axis, _OVERSCAN_AXES)
    if not isinstance(order, numbers.Integral) or order < 0:
        raise ConfigError(f"order must be a non-negative integer, got {order!r}")
    planes = _unpack(frames)
    text = _one_section(planes.template, section, ("biassec",), "overscan section", "section")
    nf, ny, nx = planes.data.shape
    ys, xs = parse_section(text, (ny, nx))
    os_ny, os_nx = ys.stop - ys.start, xs.stop - xs.start
    if axis == "auto":
        axis = "y" if os_nx > os_ny else "x"
    if axis == "x" and os_ny not in (1, ny):
        raise ShapeMismatchError(
            f"overscan section {text!r} spans rows {ys.start + 1}..{ys.stop} but the frames have "
            f"{ny} rows; an overscan collapsed along x must cover every row"
        )
    if axis == "y" and os_nx not in (1, nx):
        raise ShapeMismatchError(
            f"overscan section {text!r} spans columns {xs.start + 1}..{xs.stop} but the frames have "
            f"{nx} columns; an overscan collapsed along y must cover every column"
        )
    strip = planes.data[:, ys, xs].rechunk((1, -1, -1))
    collapse = 2 if axis == "x" else 1
    length = os_ny if axis == "x" else os_nx
    out_chunks = (strip.chunks[0], (length,), (1,)) if axis == "x" else (strip.chunks[0], (1,), (length,))
    kwargs = {"collapse": collapse, "method": method, "fit": fit, "order": int(order)}
    profile = da.map_blocks(
        _overscan_profile,
        strip,
        chunks=out_chunks,
        dtype=np.float64,
        meta=np.empty((0, 0, 0), np.float64),
        name="overscan-profile-" + tokenize(strip, kwargs),
        **kwargs,
    )
    if axis == "x" and length == ny:
        profile = profile.rechunk((planes.data.chunks[0], planes.data.chunks[1], (1,)))
    elif axis == "y" and length == nx:
        profile = profile.rechunk((planes.data.chunks[0], (1,), planes.data.chunks[2]))
    data = (planes.data.astype(np.float64) - profile).astype(np.float32)
    desc = f"overscan {text} {method}" + (f", polynomial order {order}" if fit == "polynomial" else "")
    return _pack(planes, data, planes.variance, planes.mask, history=f"subtract_overscan: {desc}, axis {axis}")


def trim(frames: Frames, *, section: str | None = None) -> Frames:
    """Cut every frame to its light-sensitive region.

    Parameters
    ----------
    frames : xarray.DataArray or xarray.Dataset
        Frames, dims ``("frame", "y", "x")`` or ``("y", "x")``.  Every variable of a Dataset
        is trimmed.
    section : str, optional
        FITS section to keep (1-based, x first), e.g. ``'[18:1382,1:1370]'``.  Default: the
        ``trimsec`` coordinate, else ``datasec``; it must be the same for every frame (frames
        of one cube share a shape).

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        The trimmed frames, lazy.  ``biassec``/``trimsec``/``datasec`` coordinates are set to
        ``""`` since they no longer describe the array.

    Raises
    ------
    HeaderError
        No section is known, the frames' sections differ, or the section leaves the image.

    Notes
    -----
    Equivalent to :func:`ccdproc.trim_image` with ``fits_section``.  Pure slicing; nothing is
    computed.

    Examples
    --------
    >>> science = trim(raw, section="[18:1382,1:1370]")  # doctest: +SKIP
    """
    return _trim_frames(frames, section=section)


def _trim_frames(frames: Frames, *, section: str | None = None) -> Frames:
    data = frames["data"] if isinstance(frames, xr.Dataset) else frames
    if not isinstance(data, xr.DataArray):
        raise ConfigError(f"frames must be an xarray DataArray or Dataset, got {type(frames).__name__}")
    cube, _ = _as_cube(data, "frames")
    text = _one_section(cube, section, ("trimsec", "datasec"), "trim section", "section")
    ys, xs = parse_section(text, (cube.sizes["y"], cube.sizes["x"]))
    out = frames.isel(y=ys, x=xs)
    reset = {}
    for name in ("biassec", "trimsec", "datasec"):
        if name in out.coords:
            reset[name] = out.coords[name].copy(data=np.full(out.coords[name].shape, "", dtype=object))
    out = out.assign_coords(reset)
    target = out["data"] if isinstance(out, xr.Dataset) else out
    target.attrs = {**target.attrs, "history": [*list(target.attrs.get("history", [])), f"trim: {text}"]}
    if isinstance(out, xr.Dataset):
        out["data"] = target
    return out


# --------------------------------------------------------------------------------------
# Bias, dark, flat, gain
# --------------------------------------------------------------------------------------


def subtract_bias(frames: Frames, bias: Master) -> Frames:
    """Subtract a master bias from every frame.

    Parameters
    ----------
    frames : xarray.DataArray or xarray.Dataset
        Frames, dims ``("frame", "y", "x")`` or ``("y", "x")``.
    bias : xarray.DataArray, xarray.Dataset or daskred.masters.Master
        Master bias ``("y", "x")``, processed (overscan, trim) like the frames.  With a
        ``variance`` variable its variance is added to the frames' variance.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        ``frames - bias``, lazy; variance ``var + var_bias`` (as ccdproc).

    Raises
    ------
    ShapeMismatchError
        The bias's shape differs from the frames' (the message names the bias).

    Examples
    --------
    >>> calibrated = subtract_bias(frames, master_bias)  # doctest: +SKIP
    """
    planes = _unpack(frames)
    bias_data, bias_var, label = _unpack_master(bias, planes, "bias")
    data = (planes.data - bias_data[None]).astype(np.float32)
    variance = planes.variance
    if variance is not None and bias_var is not None:
        variance = (variance + bias_var[None]).astype(np.float32)
    return _pack(planes, data, variance, planes.mask, history=f"subtract_bias: {label}")


def subtract_dark(
    frames: Frames,
    dark: Master,
    *,
    exposure: str | float | u.Quantity = "exptime",
    dark_exptime: float | u.Quantity | None = None,
    scale: bool = True,
) -> Frames:
    """Subtract a (bias-subtracted) master dark, scaled to each frame's exposure time.

    Parameters
    ----------
    frames : xarray.DataArray or xarray.Dataset
        Frames, dims ``("frame", "y", "x")`` or ``("y", "x")``, bias already subtracted.
    dark : xarray.DataArray, xarray.Dataset or daskred.masters.Master
        Master dark ``("y", "x")`` with its bias removed; its exposure time comes from a
        scalar ``exptime`` coordinate (or attribute) unless ``dark_exptime`` is given.
    exposure : str, float or astropy.units.Quantity
        The frames' exposure time: the name of a frame coordinate, or a value (seconds).
    dark_exptime : float or astropy.units.Quantity, optional
        Exposure time of the dark in seconds, overriding its coordinate.
    scale : bool
        Scale the dark by ``t_frame / t_dark`` (ccdproc ``scale=True``).  With ``False`` the
        dark is subtracted as is and every frame must have the dark's exposure time.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        ``frames - dark * t_frame / t_dark``, lazy; variance
        ``var + var_dark * (t_frame / t_dark)**2``.

    Raises
    ------
    HeaderError
        An exposure time is unknown (the dark's has no EXPTIME and no ``dark_exptime``, or a
        frame's is missing), or ``scale=False`` and the exposure times differ.
    ShapeMismatchError
        The dark's shape differs from the frames'.

    Examples
    --------
    >>> science = subtract_dark(science, master_dark, scale=True)  # doctest: +SKIP
    """
    planes = _unpack(frames)
    dark_data, dark_var, label = _unpack_master(dark, planes, "dark")
    t_dark_value = dark_exptime if dark_exptime is not None else _master_scalar(dark, "exptime")
    if isinstance(t_dark_value, u.Quantity):
        try:
            t_dark = float(t_dark_value.to_value(u.s))
        except u.UnitConversionError as err:
            raise ConfigError(f"dark_exptime={t_dark_value} is not a time") from err
    else:
        try:
            t_dark = float(t_dark_value) if t_dark_value is not None else np.nan
        except (TypeError, ValueError):
            t_dark = np.nan
    if not np.isfinite(t_dark) or (scale and t_dark <= 0):
        raise HeaderError(
            f"{label} has no usable exposure time (EXPTIME = {t_dark_value!r}); give the dark an "
            "'exptime' coordinate or pass dark_exptime=<seconds>"
        )
    t_frames = _per_frame(
        planes.template, exposure, coord="exptime", what="exposure time", unit=u.s, option="exposure"
    )
    if scale:
        ratio = t_frames / t_dark
    else:
        differ = np.flatnonzero(~np.isclose(t_frames, t_dark, rtol=1e-6, atol=1e-6))
        if differ.size:
            raise HeaderError(
                f"scale=False needs the dark's exposure time ({t_dark} s) for every frame, but "
                f"{_frame_labels(planes.template, differ)} have {sorted(set(t_frames[differ].tolist()))} s; "
                "use scale=True or a dark of matching exposure"
            )
        ratio = np.ones_like(t_frames)
    factor = _column(ratio, like=planes.data)
    data = (planes.data - dark_data[None] * factor).astype(np.float32)
    variance = planes.variance
    if variance is not None and dark_var is not None:
        variance = (variance + dark_var[None] * factor**2).astype(np.float32)
    how = f"scaled by t/{t_dark:g} s" if scale else "unscaled"
    return _pack(planes, data, variance, planes.mask, history=f"subtract_dark: {label}, {how}")


def _checked_mean(total: np.ndarray, count: np.ndarray, *, label: str) -> np.ndarray:
    if count == 0:
        raise CalibrationError(
            f"{label} has no positive, finite pixel (all zero, negative or NaN); it cannot "
            "flat-field anything: check that file or rebuild the master flat"
        )
    return np.asarray(total / count, dtype=np.float64)


def _checked_median(block: np.ndarray, *, lower: float, label: str) -> np.ndarray:
    values = block[np.isfinite(block) & (block > lower)]
    if values.size == 0:
        raise CalibrationError(
            f"{label} has no positive, finite pixel (all zero, negative or NaN); it cannot "
            "flat-field anything: check that file or rebuild the master flat"
        )
    return np.asarray(np.median(values.astype(np.float64)), dtype=np.float64)


def _checked_value(count: np.ndarray, *, value: float, label: str) -> np.ndarray:
    return _checked_mean(np.asarray(value * count), count, label=label)


def _flat_valid(flat: da.Array, lower: float) -> da.Array:
    return da.isfinite(flat) & (flat > lower)


def _flat_norm(flat: da.Array, *, norm: str | float, lower: float, label: str) -> da.Array:
    """Lazy 0-d normalisation of a flat over its usable pixels; raises in the graph if none."""
    valid = _flat_valid(flat, lower)
    count = valid.sum()
    if isinstance(norm, str) and norm == "mean":
        total = da.where(valid, flat, 0).astype(np.float64).sum()
        return da.map_blocks(
            _checked_mean, total, count, dtype=np.float64, label=label,
            name="flat-norm-mean-" + tokenize(flat, lower, label),
        )
    if isinstance(norm, str) and norm == "median":
        whole = flat.rechunk(-1)
        return da.map_blocks(
            _checked_median, whole, drop_axis=list(range(whole.ndim)), dtype=np.float64,
            lower=lower, label=label, name="flat-norm-median-" + tokenize(flat, lower, label),
        )
    return da.map_blocks(
        _checked_value, count, dtype=np.float64, value=float(norm), label=label,
        name="flat-norm-value-" + tokenize(flat, lower, label, norm),
    )


def flat_correct(
    frames: Frames,
    flat: Master,
    *,
    norm: Literal["mean", "median"] | float = "mean",
    min_value: float | None = None,
) -> Frames:
    """Divide every frame by the flat normalised to unit mean (or median).

    Parameters
    ----------
    frames : xarray.DataArray or xarray.Dataset
        Bias/dark-corrected frames, dims ``("frame", "y", "x")`` or ``("y", "x")``.
    flat : xarray.DataArray, xarray.Dataset or daskred.masters.Master
        Master flat ``("y", "x")``; with a ``variance`` variable its noise is propagated.
    norm : {"mean", "median"} or float
        Normalisation of the flat: the mean or median of its usable pixels (a lazy scalar),
        or a given positive value (ccdproc ``norm_value``).
    min_value : float, optional
        Flat pixels at or below this value (in the flat's units, before normalisation) are
        unusable, besides zero, negative and NaN pixels, which always are.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        ``frames / (flat / norm)``, lazy.  Where the flat is unusable the result is NaN and,
        for a Dataset, the mask is set; such pixels are never divided by.  Variance (ccdproc
        propagation): ``(var + result**2 * var_flat_n) / flat_n**2``.

    Raises
    ------
    ShapeMismatchError
        The flat's shape differs from the frames' (the message names the flat).
    ConfigError
        Unknown ``norm``, or a ``norm`` value that is not positive.
    CalibrationError
        At compute time, when the flat has no usable pixel at all (e.g. all zero): this
        depends on pixel values and cannot be known from metadata.  The message names the
        flat.

    Notes
    -----
    Matches :func:`ccdproc.flat_correct` for a flat whose pixels are all usable; ccdproc
    instead clips pixels below ``min_value`` to ``min_value`` and divides by zero otherwise.
    The mean is a chunked reduction; the median gathers the flat (one image) into one block.

    Examples
    --------
    >>> science = flat_correct(science, master_flat, norm="median")  # doctest: +SKIP
    """
    if isinstance(norm, str):
        check_choice("norm", norm, _NORMS)
    elif not isinstance(norm, numbers.Real) or isinstance(norm, bool) or not norm > 0:
        raise ConfigError(f"norm must be 'mean', 'median' or a positive number, got {norm!r}")
    if min_value is not None and not isinstance(min_value, numbers.Real):
        raise ConfigError(f"min_value must be a number or None, got {min_value!r}")
    lower = 0.0 if min_value is None else max(0.0, float(min_value))
    planes = _unpack(frames)
    flat_data, flat_var, label = _unpack_master(flat, planes, "flat")
    scale = _flat_norm(flat_data, norm=norm, lower=lower, label=label)
    valid = _flat_valid(flat_data, lower)
    flat_n = da.where(valid, flat_data.astype(np.float64) / scale, np.nan)
    data64 = planes.data.astype(np.float64) / flat_n[None]
    data = data64.astype(np.float32)
    variance = planes.variance
    if variance is not None:
        var64 = variance.astype(np.float64)
        if flat_var is not None:
            var64 = var64 + data64**2 * (flat_var.astype(np.float64) / scale**2)[None]
        variance = (var64 / flat_n[None] ** 2).astype(np.float32)
    mask = planes.mask
    if planes.dataset:
        bad = ~valid[None]
        mask = bad if mask is None else mask | bad
        mask = da.broadcast_to(mask, planes.data.shape, chunks=planes.data.chunks)
    how = norm if isinstance(norm, str) else f"{norm:g}"
    return _pack(planes, data, variance, mask, history=f"flat_correct: {label}, normalised by {how}")


def gain_correct(frames: Frames, *, gain: float | str | u.Quantity | None = None) -> Frames:
    """Convert frames from ADU to electrons by multiplying by the gain.

    Parameters
    ----------
    frames : xarray.DataArray or xarray.Dataset
        Frames in ADU, dims ``("frame", "y", "x")`` or ``("y", "x")``.
    gain : float, str or astropy.units.Quantity, optional
        Gain in electron/ADU, a Quantity convertible to it, or the name of a frame
        coordinate.  Default: the ``gain`` coordinate (one value per frame).

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        ``frames * gain`` with ``attrs["units"] = "electron"``, lazy; variance times
        ``gain**2``.

    Raises
    ------
    HeaderError
        The gain is unknown (no coordinate, or NaN) for some frame; the message names them.
    CalibrationError
        The frames are already in electrons.

    Examples
    --------
    >>> electrons = gain_correct(frames, gain=4.95 * u.electron / u.adu)  # doctest: +SKIP
    """
    planes = _unpack(frames)
    if str(planes.template.attrs.get("units", "")).lower() in ("electron", "electrons", "e-"):
        raise CalibrationError("the frames are already in electrons (attrs['units']); do not apply the gain twice")
    g = _per_frame(planes.template, gain, coord="gain", what="gain", unit=u.electron / u.adu, option="gain")
    factor = _column(g)
    data = (planes.data * factor).astype(np.float32)
    variance = None if planes.variance is None else (planes.variance * factor**2).astype(np.float32)
    desc = ", ".join(f"{v:g}" for v in sorted(set(g.tolist())))
    return _pack(planes, data, variance, planes.mask, history=f"gain_correct: x {desc} e-/ADU", units="electron")


# --------------------------------------------------------------------------------------
# Variance and masks
# --------------------------------------------------------------------------------------


def make_variance(
    frames: xr.DataArray,
    *,
    gain: float | str | u.Quantity | None = None,
    rdnoise: float | str | u.Quantity | None = None,
    bias: Master | None = None,
) -> xr.DataArray:
    """Build the variance plane: read noise squared plus Poisson noise of the signal.

    In the frames' units: ``(max(signal, 0) * g + rdnoise**2) / g**2`` with ``g`` the gain
    (1 when the frames are already in electrons) and ``signal = frames - bias``.

    Parameters
    ----------
    frames : xarray.DataArray
        Frames in ADU (or electrons, ``attrs["units"] == "electron"``), overscan-subtracted
        or with a ``bias`` given so that the Poisson term sees only the photo-electrons.
    gain : float, str or astropy.units.Quantity, optional
        Gain in electron/ADU, or a frame-coordinate name.  Default: the ``gain`` coordinate.
    rdnoise : float, str or astropy.units.Quantity, optional
        Read noise in electrons, or a frame-coordinate name.  Default: ``rdnoise``.
    bias : xarray.DataArray, optional
        Level to remove before the Poisson term (a master bias); the data are unchanged.

    Returns
    -------
    xarray.DataArray
        float32 variance, same dims/coords as ``frames``, lazy.

    Raises
    ------
    HeaderError
        Gain or read noise unknown for some frame (message names them and the fix).
    ConfigError
        ``gain`` given for frames already in electrons.

    Notes
    -----
    Equals the square of :func:`ccdproc.create_deviation` with ``disregard_nan=True``
    (negative signal contributes no Poisson noise).

    Examples
    --------
    >>> var = make_variance(frames, gain=4.95, rdnoise=9.3)  # doctest: +SKIP
    """
    if not isinstance(frames, xr.DataArray):
        raise ConfigError(f"frames must be an xarray DataArray, got {type(frames).__name__}")
    planes = _unpack(frames)
    in_electrons = str(planes.template.attrs.get("units", "")).lower() in ("electron", "electrons", "e-")
    nframe = planes.data.shape[0]
    if in_electrons:
        if gain is not None:
            raise ConfigError("the frames are already in electrons; do not pass gain=")
        g = np.ones(nframe)
    else:
        g = _per_frame(planes.template, gain, coord="gain", what="gain", unit=u.electron / u.adu, option="gain")
    rn = _per_frame(planes.template, rdnoise, coord="rdnoise", what="read noise", unit=u.electron, option="rdnoise")
    signal = planes.data.astype(np.float64)
    if bias is not None:
        bias_data, _, _ = _unpack_master(bias, planes, "bias")
        signal = signal - bias_data[None]
    gc, rc = _column(g), _column(rn)
    var = ((da.maximum(signal, 0.0) * gc + rc**2) / gc**2).astype(np.float32)
    out = _pack(replace(planes, dataset=False), var, None, None, history="make_variance")
    out.attrs = {"units": f"({planes.template.attrs.get('units', 'adu')})**2"}
    out.name = "variance"
    return out


def mask_saturated(frames: xr.DataArray, *, level: float | str | u.Quantity | None = None) -> xr.DataArray:
    """Flag pixels at or above the saturation level.

    Parameters
    ----------
    frames : xarray.DataArray
        Raw frames (before overscan subtraction, where the saturation level applies).
    level : float, str or astropy.units.Quantity, optional
        Saturation level in ADU, or a frame-coordinate name.  Default: ``saturate``.

    Returns
    -------
    xarray.DataArray
        Boolean mask, True where saturated, same dims/coords as ``frames``, lazy.

    Raises
    ------
    HeaderError
        The level is unknown for some frame.

    Examples
    --------
    >>> saturated = mask_saturated(raw, level=65000)  # doctest: +SKIP
    """
    if not isinstance(frames, xr.DataArray):
        raise ConfigError(f"frames must be an xarray DataArray, got {type(frames).__name__}")
    planes = _unpack(frames)
    sat = _per_frame(planes.template, level, coord="saturate", what="saturation level", unit=u.adu, option="level")
    mask = planes.data >= _column(sat).astype(np.float32)
    out = _pack(replace(planes, dataset=False), mask, None, None, history="mask_saturated")
    out.attrs = {}
    out.name = "mask"
    return out


def _median_mad(block: np.ndarray) -> np.ndarray:
    values = block[np.isfinite(block)].astype(np.float64)
    if values.size == 0:
        return np.array([np.nan, np.nan])
    med = np.median(values)
    return np.array([med, 1.482602218505602 * np.median(np.abs(values - med))])


def make_bad_pixel_mask(
    *,
    flat: xr.DataArray | None = None,
    dark: xr.DataArray | None = None,
    flat_range: tuple[float, float] = (0.5, 1.5),
    dark_sigma: float = 5.0,
) -> xr.DataArray:
    """Derive a bad-pixel mask from a master flat and/or a master dark.

    A flat pixel is bad when, divided by the flat's median, it falls outside ``flat_range``
    or is not finite; a dark pixel is bad (hot) when it exceeds the dark's median by more
    than ``dark_sigma`` robust standard deviations (1.4826 × MAD).

    Parameters
    ----------
    flat, dark : xarray.DataArray, optional
        Master flat / master dark, dims ``("y", "x")``; at least one is required.
    flat_range : (float, float)
        Accepted range of the median-normalised flat.
    dark_sigma : float
        Threshold of the hot-pixel test in robust sigmas.

    Returns
    -------
    xarray.DataArray
        Boolean ``(y, x)`` mask, True = bad, lazy.

    Raises
    ------
    ConfigError
        Neither input given, or a bad ``flat_range``/``dark_sigma``.
    ShapeMismatchError
        Flat and dark differ in shape.

    Notes
    -----
    The medians and MAD are lazy scalars computed over each image gathered into one block.

    Examples
    --------
    >>> bpm = make_bad_pixel_mask(flat=master_flat, dark=master_dark, dark_sigma=5)  # doctest: +SKIP
    """
    if flat is None and dark is None:
        raise ConfigError("make_bad_pixel_mask needs flat=, dark= or both")
    lo, hi = (float(v) for v in flat_range)
    if not lo < hi:
        raise ConfigError(f"flat_range must be (low, high) with low < high, got {flat_range!r}")
    if not dark_sigma > 0:
        raise ConfigError(f"dark_sigma must be positive, got {dark_sigma!r}")
    parts: list[da.Array] = []
    template: xr.DataArray | None = None
    for arr, what in ((flat, "flat"), (dark, "dark")):
        if arr is None:
            continue
        if not isinstance(arr, xr.DataArray) or set(arr.dims) != {"y", "x"}:
            raise ShapeMismatchError(f"the {what} must be a (y, x) DataArray")
        arr = arr.transpose("y", "x")
        if template is not None and arr.shape != template.shape:
            raise ShapeMismatchError(
                f"{_master_label(arr, what)} has shape {arr.shape} but the flat has {template.shape}"
            )
        template = arr if template is None else template
        data = arr.data if isinstance(arr.data, da.Array) else da.from_array(np.asarray(arr.data))
        data = data.astype(np.float32)
        stats = da.map_blocks(
            _median_mad, data.rechunk(-1), drop_axis=[0, 1], new_axis=0, chunks=((2,),), dtype=np.float64,
            name=f"{what}-median-mad-" + tokenize(data),
        )
        if what == "flat":
            ratio = data.astype(np.float64) / stats[0]
            parts.append(~da.isfinite(ratio) | (ratio < lo) | (ratio > hi))
        else:
            parts.append(~da.isfinite(data) | (data > stats[0] + dark_sigma * stats[1]))
    mask = parts[0] if len(parts) == 1 else parts[0] | parts[1].rechunk(parts[0].chunks)
    assert template is not None
    return xr.DataArray(mask, dims=("y", "x"), name="mask", attrs={"history": ["make_bad_pixel_mask"]})


def _read_mask(path: str, hdu: int | str) -> np.ndarray:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul[hdu].data) != 0


def load_mask(path: str | Path, *, hdu: int | str = 0) -> xr.DataArray:
    """Open a user-supplied bad-pixel mask FITS image (non-zero = bad) lazily.

    Parameters
    ----------
    path : str or pathlib.Path
        FITS file; only its header is read now.
    hdu : int or str
        HDU holding the mask image.

    Returns
    -------
    xarray.DataArray
        Boolean ``(y, x)`` mask with a scalar ``path`` coordinate, lazy.

    Raises
    ------
    FitsFileError
        The file cannot be opened or the HDU is not a 2-D image.

    Examples
    --------
    >>> bpm = load_mask("bpm.fits")  # doctest: +SKIP
    """
    from astropy.io import fits

    path = str(path)
    try:
        header = fits.getheader(path, hdu)
    except (OSError, KeyError, IndexError) as err:
        raise FitsFileError(f"cannot read the mask {path!r} (HDU {hdu!r}): {err}") from err
    if header.get("NAXIS") != 2:
        raise FitsFileError(f"the mask {path!r} (HDU {hdu!r}) is not a 2-D image (NAXIS={header.get('NAXIS')})")
    shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    name = "mask-" + tokenize(path, hdu, Path(path).stat().st_mtime_ns)
    arr = da.from_delayed(dask.delayed(_read_mask, pure=True)(path, hdu, dask_key_name=name), shape, dtype=bool)
    return xr.DataArray(arr, dims=("y", "x"), coords={"path": path}, name="mask")


# --------------------------------------------------------------------------------------
# One call
# --------------------------------------------------------------------------------------


def _resolve_mask(mask: xr.DataArray | str | Path, planes: _Planes) -> da.Array:
    if isinstance(mask, (str, Path)):
        mask = load_mask(mask)
    if not isinstance(mask, xr.DataArray) or set(mask.dims) != {"y", "x"}:
        raise ShapeMismatchError("bad_pixels must be a (y, x) boolean DataArray or a FITS file path")
    mask = mask.transpose("y", "x")
    if mask.shape != planes.data.shape[1:]:
        raise ShapeMismatchError(
            f"{_master_label(mask, 'bad-pixel mask')} has shape {mask.shape} but the frames have shape "
            f"{planes.data.shape[1:]} after overscan/trim; give a mask of the trimmed size"
        )
    data = mask.data if isinstance(mask.data, da.Array) else da.from_array(np.asarray(mask.data))
    return data.astype(bool).rechunk(planes.data.chunks[1:])


def calibrate(
    frames: xr.DataArray,
    *,
    bias: Master | None = None,
    dark: Master | None = None,
    flat: Master | None = None,
    overscan: str | Mapping[str, Any] | None = "auto",
    trim: str | None = "auto",
    exposure: str | float | u.Quantity = "exptime",
    scale_dark: bool = True,
    norm: Literal["mean", "median"] | float = "mean",
    gain: float | str | u.Quantity | None = None,
    rdnoise: float | str | u.Quantity | None = None,
    saturate: float | str | u.Quantity | None | Literal[False] = None,
    bad_pixels: xr.DataArray | str | Path | None = None,
    variance: bool = True,
    units: Literal["adu", "electron"] = "adu",
) -> xr.Dataset:
    """Calibrate raw science frames in one call: overscan, trim, bias, dark, flat, gain.

    ``data = (raw - overscan - bias - dark * t / t_dark) / (flat / <flat>)``, optionally
    times the gain, with a variance plane and a mask carried alongside.

    Parameters
    ----------
    frames : xarray.DataArray
        Raw frames, dims ``("frame", "y", "x")`` or ``("y", "x")``, in ADU.
    bias, dark, flat : xarray.DataArray, xarray.Dataset or daskred.masters.Master, optional
        Masters, already overscan-subtracted and trimmed like the frames will be; the dark
        bias-subtracted.  Steps whose master is None are skipped.
    overscan : str, mapping or None
        ``"auto"``: subtract the overscan when the frames carry a ``biassec``; a section
        string: use it; a mapping: keyword arguments of :func:`subtract_overscan`
        (e.g. ``{"method": "mean", "fit": "polynomial", "order": 2}``); None: skip.
    trim : str or None
        ``"auto"``: trim to ``trimsec``/``datasec`` when present; a section string; None: skip.
    exposure : str, float or astropy.units.Quantity
        Exposure time of the frames (coordinate name or seconds), for dark scaling.
    scale_dark : bool
        Scale the dark by exposure time (see :func:`subtract_dark`).
    norm : {"mean", "median"} or float
        Flat normalisation (see :func:`flat_correct`).
    gain : float, str or astropy.units.Quantity, optional
        Gain in electron/ADU or a coordinate name; default the ``gain`` coordinate.  Needed
        for the variance and for ``units="electron"``.
    rdnoise : float, str or astropy.units.Quantity, optional
        Read noise in electrons or a coordinate name; default ``rdnoise``.
    saturate : float, str, astropy.units.Quantity, None or False
        Saturation level in raw ADU (or coordinate name).  None: the ``saturate``
        coordinate when it is known for every frame, otherwise no saturation mask (recorded
        in the history); False: no saturation mask.
    bad_pixels : xarray.DataArray, str or pathlib.Path, optional
        Bad-pixel mask of the trimmed size (True/non-zero = bad), or a FITS file of one.
    variance : bool
        Build and propagate the variance plane (needs gain and read noise).
    units : {"adu", "electron"}
        Units of the result.

    Returns
    -------
    xarray.Dataset
        ``data`` (float32), ``variance`` (float32, when ``variance``) and ``mask`` (bool:
        saturated, bad pixel, unusable flat or non-finite), dims as ``frames``, lazy.

    Raises
    ------
    HeaderError, ShapeMismatchError, ConfigError
        As the individual steps, before any graph is built.
    CalibrationError
        At compute time for a flat with no usable pixel.

    Notes
    -----
    Order: saturation mask on the raw frames; overscan; trim; variance from the
    bias-subtracted signal (read noise² + Poisson); bias; dark; flat; gain.  Variance
    propagation through the steps follows ccdproc.  Nothing is computed.

    Examples
    --------
    >>> ds = calibrate(raw, bias=mbias, flat=mflat, gain=4.95, rdnoise=9.3)  # doctest: +SKIP
    >>> ds.data, ds.variance, ds.mask  # doctest: +SKIP
    """
    if not isinstance(frames, xr.DataArray):
        raise ConfigError(f"frames must be an xarray DataArray of raw frames, got {type(frames).__name__}")
    check_choice("units", units, _UNITS)
    planes = _unpack(frames)
    notes: list[str] = []

    # Saturation mask on the raw values.
    sat_mask: xr.DataArray | None = None
    if saturate is not False:
        known = saturate is not None
        if not known:
            values = _coord_values(planes.template, "saturate")
            try:
                known = values is not None and bool(np.all(np.isfinite(np.asarray(values, dtype=np.float64))))
            except (TypeError, ValueError):
                known = False
        if known:
            sat_mask = mask_saturated(frames, level=saturate)
        else:
            notes.append("saturation level unknown: no saturation mask")

    work: xr.DataArray = frames
    # Overscan.
    if overscan is not None:
        options: dict[str, Any]
        if isinstance(overscan, Mapping):
            options = dict(overscan)
        elif overscan == "auto":
            biassec = _coord_values(planes.template, "biassec")
            options = {} if biassec is not None and any(str(v).strip() for v in biassec) else None  # type: ignore[assignment]
            if options is None:
                notes.append("no BIASSEC: overscan not subtracted")
        elif isinstance(overscan, str):
            options = {"section": overscan}
        else:
            raise ConfigError(f"overscan must be 'auto', a FITS section, a mapping or None, got {overscan!r}")
        if options is not None:
            unknown = set(options) - {"section", "method", "fit", "order", "axis"}
            if unknown:
                raise ConfigError(
                    f"unknown overscan option(s) {sorted(unknown)}; allowed: section, method, fit, order, axis"
                )
            work = subtract_overscan(work, **options)  # type: ignore[assignment]
    # Trim.
    if trim is not None:
        if trim == "auto":
            has = any(
                (vals := _coord_values(planes.template, name)) is not None and any(str(v).strip() for v in vals)
                for name in ("trimsec", "datasec")
            )
            if has:
                section = _one_section(planes.template, None, ("trimsec", "datasec"), "trim section", "trim")
                work = _trim_frames(work, section=section)  # type: ignore[assignment]
                if sat_mask is not None:
                    sat_mask = _trim_frames(sat_mask, section=section)  # type: ignore[assignment]
            else:
                notes.append("no TRIMSEC/DATASEC: not trimmed")
        else:
            work = _trim_frames(work, section=trim)  # type: ignore[assignment]
            if sat_mask is not None:
                sat_mask = _trim_frames(sat_mask, section=trim)  # type: ignore[assignment]

    # Variance from the bias-subtracted signal, before any plane changes.
    current = _unpack(work)
    var_plane = None
    if variance:
        var_plane = make_variance(work, gain=gain, rdnoise=rdnoise, bias=bias)
    mask_plane = da.zeros(current.data.shape, dtype=bool, chunks=current.data.chunks)
    if sat_mask is not None:
        mask_plane = mask_plane | _unpack(sat_mask).data.astype(bool).rechunk(current.data.chunks)
    if bad_pixels is not None:
        mask_plane = mask_plane | _resolve_mask(bad_pixels, current)[None]
    planes_ds = {"data": work, "mask": work.copy(data=mask_plane.reshape(work.shape))}
    if var_plane is not None:
        planes_ds["variance"] = var_plane.copy(data=var_plane.data)
    ds: Frames = xr.Dataset(planes_ds)
    if bias is not None:
        ds = subtract_bias(ds, bias)
    if dark is not None:
        ds = subtract_dark(ds, dark, exposure=exposure, scale=scale_dark)
    if flat is not None:
        ds = flat_correct(ds, flat, norm=norm)
    if units == "electron":
        ds = gain_correct(ds, gain=gain)
    out = _unpack(ds)
    mask = out.mask if out.mask is not None else da.zeros(out.data.shape, dtype=bool, chunks=out.data.chunks)
    mask = mask | ~da.isfinite(out.data)
    result = _pack(replace(out, dataset=True), out.data, out.variance, mask, history="calibrate")
    assert isinstance(result, xr.Dataset)
    if notes:
        result["data"].attrs["history"] = [*result["data"].attrs["history"], *(f"calibrate: {n}" for n in notes)]
    return result

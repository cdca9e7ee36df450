"""Science-frame calibration: overscan, trim, bias, dark, flat and gain.

Every step takes a stack of frames, an ``xr.DataArray`` with dims ``("frame", "y", "x")``
(or a single ``("y", "x")`` image), and returns a new lazy object of the same kind.  A step
can also take an ``xr.Dataset`` holding the variables ``"data"``, ``"variance"`` and
(optionally) ``"mask"``; it then propagates the variance the way ccdproc propagates a
``StdDevUncertainty`` (uncorrelated first-order propagation) and ORs new bad pixels into
the mask.  :func:`calibrate` chains the steps in the usual order and always returns such a
Dataset, with the variance plane and masks of :mod:`daskred.quality`.

Calibration masters (bias, dark, flat) are ``("y", "x")`` arrays, Datasets with
``"data"`` and ``"variance"`` when their own noise should be propagated, or
:class:`daskred.masters.Master` objects (their ``data`` is used; masters from
:func:`daskred.masters.make_masters` carry no variance, so their noise is not propagated).  Scalar
coordinates ``path`` (used in messages) and ``exptime`` (used to scale darks) are read from
them when present.

Nothing here computes.  The only data-dependent number, the flat normalisation, is a 0-d
dask array (as are the statistics of :func:`daskred.quality.make_bad_pixel_mask`); a flat
without a single usable pixel therefore cannot be detected from metadata and raises
:class:`~daskred.errors.CalibrationError` (naming the flat) when the graph runs.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr
from astropy import units as u
from dask.base import tokenize

from ._frames import (
    Frames,
    Master,
    _as_cube,
    _column,
    _coord_values,
    _frame_labels,
    _master_label,
    _master_scalar,
    _one_section,
    _pack,
    _per_frame,
    _Planes,
    _unpack,
    _unpack_master,
)
from ._validate import check_choice
from .errors import CalibrationError, ConfigError, HeaderError, ShapeMismatchError
from .io import parse_section
from .quality import load_mask, make_variance, mask_saturated

__all__ = [
    "subtract_overscan",
    "trim",
    "subtract_bias",
    "subtract_dark",
    "flat_correct",
    "gain_correct",
    "calibrate",
]

_OVERSCAN_METHODS = ("median", "mean")
_OVERSCAN_FITS = ("none", "polynomial")
_OVERSCAN_AXES = ("auto", "x", "y")
_NORMS = ("mean", "median")
_UNITS = ("adu", "electron")


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

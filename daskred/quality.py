"""Pixel quality: variance planes and bad-pixel masks.

:func:`make_variance` builds the variance plane (read noise plus the Poisson noise of the
signal), :func:`mask_saturated` flags saturated raw pixels, :func:`make_bad_pixel_mask`
derives a bad-pixel mask from a master flat and/or a master dark, and :func:`load_mask`
opens a user-supplied mask FITS image.  :func:`daskred.calibrate.calibrate` carries these
planes alongside the calibrated frames as the ``"variance"`` and ``"mask"`` variables of
its Dataset.

Frames are an ``xr.DataArray`` with dims ``("frame", "y", "x")`` (or a single ``("y", "x")``
image); gain, read noise and saturation level come from frame coordinates unless given.
Nothing here computes: the median and MAD behind :func:`make_bad_pixel_mask` are lazy, and
:func:`load_mask` reads only the FITS header.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from astropy import units as u
from dask.base import tokenize

from ._frames import Master, _column, _master_label, _pack, _per_frame, _unpack, _unpack_master
from .errors import ConfigError, FitsFileError, ShapeMismatchError

__all__ = [
    "make_variance",
    "mask_saturated",
    "make_bad_pixel_mask",
    "load_mask",
]


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

"""Aperture photometry of standard stars, and the standard-star catalogs they come from.

The last step of a reduction turns counts into magnitudes.  :func:`aperture_photometry`
measures stars through circular apertures with a sigma-clipped local background
(photutils) and marks doubtful measurements with :class:`PhotFlag` bits;
:func:`read_standards` reads the standard-star catalog whose stars it measures.  The
zero points and the extinction fitted to these measurements are in
:mod:`daskred.zeropoint` (:func:`daskred.zeropoint.zero_point`,
:func:`daskred.zeropoint.fit_extinction`).

Photometry needs numbers: unlike the rest of daskred these functions compute their
(dask-backed) inputs and say so in their docstrings.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np
import xarray as xr
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.stats import SigmaClip, mad_std
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from .errors import CalibrationError, ConfigError

__all__ = [
    "PhotFlag",
    "aperture_photometry",
    "read_standards",
]

_RESERVED = ("name", "ra", "dec")


class PhotFlag(enum.IntFlag):
    """Bit flags of the ``flags`` column of :func:`aperture_photometry`.

    A star with any flag set is left out of :func:`daskred.zeropoint.zero_point`.
    """

    EDGE = 1  #: the aperture crosses the image border
    SATURATED = 2  #: a pixel of the aperture reaches the saturation level
    MASKED = 4  #: a pixel of the aperture is masked or not finite
    RECENTER = 8  #: re-centring failed or moved too far; the input position was kept
    BACKGROUND = 16  #: fewer than half of the annulus pixels were usable
    OUTSIDE = 32  #: the position lies outside the image (flux is NaN)


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------


def _scalar_coord(image: Any, name: str) -> Any:
    """Return the 0-d coordinate ``name`` of a DataArray as a Python value, or None."""
    if not isinstance(image, xr.DataArray) or name not in image.coords:
        return None
    coord = image.coords[name]
    if coord.ndim != 0:
        return None
    value = coord.values.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_2d(array: Any, name: str, shape: tuple[int, int] | None) -> Any:
    """Check that ``array`` is 2-D (and of ``shape``); return the underlying array."""
    if isinstance(array, xr.DataArray):
        if "frame" in array.dims and array.sizes["frame"] == 1:
            array = array.isel(frame=0)
        if array.ndim != 2:
            raise ConfigError(
                f"{name} must be one image with dims ('y', 'x'), got dims {array.dims}; "
                "select one frame with .isel(frame=i)"
            )
        array = array.data
    elif not hasattr(array, "shape"):
        array = np.asarray(array)
    if len(array.shape) != 2:
        raise ConfigError(f"{name} must be a 2-D image, got shape {tuple(array.shape)}")
    if shape is not None and tuple(array.shape) != shape:
        raise ConfigError(
            f"{name} has shape {tuple(array.shape)} but the image has shape {shape}; "
            "pass planes that cover the same pixels as the image"
        )
    return array


def _image_wcs(image: Any, wcs: Any) -> WCS | None:
    """The WCS given explicitly, or the one carried by a DataArray's attrs."""
    if wcs is not None:
        return wcs if isinstance(wcs, WCS) else WCS(wcs)
    if not isinstance(image, xr.DataArray):
        return None
    if isinstance(image.attrs.get("wcs"), WCS):
        return image.attrs["wcs"]
    header = image.attrs.get("header")
    if header is None:
        return None
    if isinstance(header, Mapping) and not isinstance(header, fits.Header):
        header = fits.Header(dict(header))
    if isinstance(header, str):
        header = fits.Header.fromstring(header)
    candidate = WCS(header, naxis=2)
    return candidate if candidate.has_celestial else None


def _column(table: Table, name: str) -> str | None:
    """Case-insensitive column lookup; the actual column name or None."""
    if name in table.colnames:
        return name
    matches = [c for c in table.colnames if c.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def _as_table(sources: Any) -> Table | None:
    if isinstance(sources, Table):
        return sources
    if hasattr(sources, "to_dict") and hasattr(sources, "columns"):  # pandas.DataFrame
        return Table.from_pandas(sources)
    return None


def _sky_coords(table: Table, label: str) -> SkyCoord:
    ra, dec = table[_column(table, "ra")], table[_column(table, "dec")]
    if ra.dtype.kind in "US":  # sexagesimal strings
        return SkyCoord(np.asarray(ra, str), np.asarray(dec, str), unit=(u.hourangle, u.deg))
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    if not (np.all(np.isfinite(ra)) and np.all(np.abs(dec) <= 90.0)):
        raise CalibrationError(f"{label}: ra/dec must be finite degrees with |dec| <= 90")
    return SkyCoord(ra * u.deg, dec * u.deg)


def _resolve_positions(
    sources: Any, wcs: WCS | None, coords: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    """Return x, y, names (or None) and whether the positions came from the sky."""
    if isinstance(sources, SkyCoord):
        table, sky = None, sources
    else:
        table = _as_table(sources)
        sky = None
    names = None
    if table is not None:
        name_col = _column(table, "name")
        names = np.asarray(table[name_col]).astype(str) if name_col else None
        has_xy = _column(table, "x") is not None and _column(table, "y") is not None
        has_sky = _column(table, "ra") is not None and _column(table, "dec") is not None
        if not (has_xy or has_sky):
            raise ConfigError(
                f"sources need columns 'x' and 'y' (pixels) or 'ra' and 'dec' (degrees), got {table.colnames}"
            )
        use_sky = coords == "sky" or (coords == "auto" and not has_xy)
        if use_sky and not has_sky:
            raise ConfigError(
                f"sources need columns 'ra' and 'dec' (degrees) for coords='sky', got {table.colnames}"
            )
        if not use_sky and not has_xy:
            raise ConfigError(f"sources need columns 'x' and 'y' (pixels) for coords='pixel', got {table.colnames}")
        if use_sky:
            sky = _sky_coords(table, "sources")
        else:
            x = np.asarray(table[_column(table, "x")], dtype=float)
            y = np.asarray(table[_column(table, "y")], dtype=float)
            return x, y, names, False
    if sky is not None:
        if wcs is None:
            raise ConfigError(
                "sky positions (ra/dec) need a WCS: pass wcs=, or give the image an attrs['wcs'] "
                "or attrs['header'] with a celestial WCS"
            )
        x, y = wcs.world_to_pixel(sky)
        return np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float)), names, True
    xy = np.asarray(sources, dtype=float)
    if xy.ndim == 1 and xy.size == 2:
        xy = xy[None, :]
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ConfigError(
            f"sources must be an (N, 2) array of (x, y) pixels, a table or a SkyCoord; got shape {xy.shape}"
        )
    return xy[:, 0].copy(), xy[:, 1].copy(), None, False


def _pixel_radius(value: Any, what: str, wcs: WCS | None) -> tuple[float, bool]:
    """Turn a radius into (number, already_in_pixels)."""
    if isinstance(value, u.Quantity):
        if value.unit.is_equivalent(u.pix):
            return float(value.to_value(u.pix)), True
        if value.unit.is_equivalent(u.deg):
            if wcs is None:
                raise ConfigError(f"{what} given as an angle ({value}) needs a WCS to convert it to pixels")
            scale = float(np.mean(proj_plane_pixel_scales(wcs.celestial))) * u.deg
            return float((value / scale).decompose()), True
        raise ConfigError(f"{what} must be in pixels or an angle, got unit {value.unit}")
    return float(value), False


# --------------------------------------------------------------------------------------
# aperture photometry kernels (numpy, one image)
# --------------------------------------------------------------------------------------


def _recenter(
    data: np.ndarray, bad: np.ndarray, x: float, y: float, box_size: int, niter: int = 3
) -> tuple[float, float]:
    """Centre of mass of the background-subtracted box around (x, y), iterated."""
    from photutils.centroids import centroid_com

    half = box_size // 2
    ny, nx = data.shape
    cx, cy = x, y
    for _ in range(niter):
        ix, iy = int(round(cx)), int(round(cy))
        x0, x1 = max(ix - half, 0), min(ix + half + 1, nx)
        y0, y1 = max(iy - half, 0), min(iy + half + 1, ny)
        if x1 - x0 < 3 or y1 - y0 < 3:
            return math.nan, math.nan
        box = data[y0:y1, x0:x1].astype(np.float64)
        boxbad = bad[y0:y1, x0:x1]
        edge = np.ones(box.shape, bool)
        edge[1:-1, 1:-1] = False
        level = np.median(box[edge & ~boxbad]) if np.any(edge & ~boxbad) else math.nan
        if not math.isfinite(level):
            return math.nan, math.nan
        weights = np.where(boxbad, 0.0, np.clip(box - level, 0.0, None))
        if not np.any(weights > 0):
            return math.nan, math.nan
        bx, by = centroid_com(weights)
        nxt, nyt = x0 + float(bx), y0 + float(by)
        if abs(nxt - cx) < 1e-3 and abs(nyt - cy) < 1e-3:
            return nxt, nyt
        cx, cy = nxt, nyt
    return cx, cy


def _measure_fwhm(
    data: np.ndarray, bad: np.ndarray, x: np.ndarray, y: np.ndarray, box_size: int
) -> float:
    """Median FWHM (pixels) of circular Gaussians fitted to background-subtracted cutouts."""
    from photutils.psf import fit_fwhm

    half = box_size // 2
    ny, nx = data.shape
    work = np.zeros(data.shape, dtype=np.float64)
    keep = np.ones(data.shape, dtype=bool)  # True = masked for the fit
    xy = []
    for xi, yi in zip(x, y, strict=True):
        ix, iy = int(round(xi)), int(round(yi))
        x0, x1, y0, y1 = ix - half - 2, ix + half + 3, iy - half - 2, iy + half + 3
        if x0 < 0 or y0 < 0 or x1 > nx or y1 > ny:
            continue
        box = data[y0:y1, x0:x1].astype(np.float64)
        boxbad = bad[y0:y1, x0:x1]
        edge = np.ones(box.shape, bool)
        edge[2:-2, 2:-2] = False
        ring = box[edge & ~boxbad]
        if ring.size < 8:
            continue
        level, noise = float(np.median(ring)), float(mad_std(ring))
        peak = float(np.max(np.where(boxbad, -np.inf, box))) - level
        if not (math.isfinite(level) and peak > 5.0 * noise and peak > 0):
            continue  # no star to fit here
        work[y0:y1, x0:x1] = np.where(boxbad, 0.0, box - level)
        keep[y0:y1, x0:x1] = boxbad
        xy.append((xi, yi))
    if not xy:
        return math.nan
    fwhm = fit_fwhm(work, xypos=xy, fit_shape=box_size, mask=keep, fwhm=box_size / 3.0)
    fwhm = np.asarray(fwhm, float)
    fwhm = fwhm[np.isfinite(fwhm) & (fwhm > 0.3) & (fwhm < box_size)]
    return float(np.median(fwhm)) if fwhm.size else math.nan


def aperture_photometry(
    image: xr.DataArray | np.ndarray,
    sources: Any,
    *,
    radius: float | u.Quantity = 3.0,
    annulus: tuple[float, float] | tuple[u.Quantity, u.Quantity] = (5.0, 8.0),
    radius_unit: Literal["pixel", "fwhm"] = "pixel",
    fwhm: float | None = None,
    variance: xr.DataArray | np.ndarray | None = None,
    gain: float | None = None,
    rdnoise: float | None = None,
    mask: xr.DataArray | np.ndarray | None = None,
    saturate: float | None = None,
    recenter: bool = True,
    box_size: int = 11,
    wcs: WCS | fits.Header | None = None,
    coords: Literal["auto", "pixel", "sky"] = "auto",
    background: Literal["median", "mean"] = "median",
    sigma: float = 3.0,
    maxiters: int = 5,
    method: Literal["exact", "center", "subpixel"] = "exact",
) -> Table:
    """Measure stars through circular apertures with a sigma-clipped local background.

    Parameters
    ----------
    image : xarray.DataArray or numpy.ndarray
        One image, dims ``("y", "x")``; may be dask-backed.  Scalar coordinates
        ``filter``, ``exptime``, ``airmass``, ``object``, ``night``, ``date_obs``,
        ``path``, ``gain``, ``rdnoise`` and ``saturate`` are read when present (explicit
        keywords win) and the first ones are copied into the table's ``meta``.
    sources : array_like, astropy.table.Table, pandas.DataFrame or astropy.coordinates.SkyCoord
        Where to measure: an ``(N, 2)`` array of ``(x, y)`` pixels (0-based), a table
        with columns ``x``, ``y`` (pixels) or ``ra``, ``dec`` (degrees, e.g. from
        :func:`read_standards`) and optionally ``name``, or a SkyCoord.
    radius : float or astropy.units.Quantity
        Aperture radius, in ``radius_unit`` (a Quantity in pixels or in an angle
        overrides ``radius_unit``).
    annulus : (float, float)
        Inner and outer radius of the background annulus, in the same unit as ``radius``.
    radius_unit : {"pixel", "fwhm"}
        Unit of ``radius`` and ``annulus``: pixels, or multiples of the FWHM (``fwhm``,
        or measured on the stars when ``fwhm`` is None).
    fwhm : float, optional
        Full width at half maximum of the stars, in pixels.  Measured (median of
        circular-Gaussian fits, photutils ``fit_fwhm``) when needed and not given.
    variance : xarray.DataArray or numpy.ndarray, optional
        Pixel variance of ``image`` (Poisson + read noise), in image units squared.
    gain : float, optional
        Electrons per image unit, for the CCD noise model when no ``variance`` is given.
        Defaults to the ``gain`` coordinate, or 1 when ``image.attrs["units"]`` is
        ``"electron"``.
    rdnoise : float, optional
        Read noise in electrons, for the CCD noise model (default: ``rdnoise``
        coordinate, else 0).
    mask : xarray.DataArray or numpy.ndarray of bool, optional
        True for bad pixels; they (and non-finite pixels) are left out of every sum.
    saturate : float, optional
        Saturation level in image units (default: ``saturate`` coordinate).
    recenter : bool
        Move each position to the centre of mass of the background-subtracted light in a
        ``box_size`` box (three iterations).
    box_size : int
        Odd side of the re-centring box and of the FWHM fitting box, in pixels.
    wcs : astropy.wcs.WCS or astropy.io.fits.Header, optional
        Celestial WCS of the image (default: ``image.attrs["wcs"]`` or a WCS built from
        ``image.attrs["header"]``).  Needed for sky positions; adds ``ra``/``dec`` columns.
    coords : {"auto", "pixel", "sky"}
        Which columns of a table give the positions; ``"auto"`` uses ``x``/``y`` when
        present, else ``ra``/``dec``.
    background : {"median", "mean"}
        Estimator of the sigma-clipped annulus level.
    sigma, maxiters : float, int
        Sigma clipping of the annulus pixels (astropy ``SigmaClip``, median centre, std).
    method : {"exact", "center", "subpixel"}
        Aperture/pixel overlap, as in photutils.

    Returns
    -------
    astropy.table.Table
        One row per source: ``id``, ``name`` (when given), ``x``, ``y``, ``x_init``,
        ``y_init``, ``ra``, ``dec`` (with a WCS), ``flux`` (background-subtracted aperture
        sum, image units), ``flux_err``, ``background`` (per pixel), ``background_err``
        (uncertainty of that level), ``area`` (unmasked aperture area, pixels), ``nsky``
        (annulus pixels used) and ``flags`` (:class:`PhotFlag` bits).  ``meta`` holds the
        radii in pixels, the FWHM, the noise model and the image's coordinates.

    Raises
    ------
    ConfigError
        Bad option values, planes of the wrong shape, sky positions without a WCS.
    CalibrationError
        No source falls on the image, or the FWHM cannot be measured.

    Notes
    -----
    This function computes: it evaluates ``image`` (and ``variance``, ``mask``) in one
    ``dask.compute`` call and works on the numbers in memory.

    Noise model, per aperture of area ``A`` (``meta["noise_model"]`` says which applied),
    with ``n`` annulus pixels of clipped standard deviation ``s`` and local level ``b``:
    ``flux_err**2 = P + (A * background_err)**2``, ``background_err = s / sqrt(n)`` (times
    ``sqrt(pi / 2)`` for the median), and ``P`` is

    - ``"variance"`` (a ``variance`` plane given): the aperture sum of the variance
      (photutils convention, aperture weights times variance), which holds every term;
    - ``"ccd"`` (a gain known): ``max(flux, 0) / gain + A * max(s**2, max(b, 0) / gain +
      (rdnoise / gain)**2)``, the CCD equation; the sky term is never smaller than the
      measured annulus scatter, so a background-subtracted image (whose sky no longer
      shows in its pixel values) does not get too small an error;
    - ``"background"`` (neither): ``A * s**2``, sky and read noise only, no Poisson term
      for the star (right for faint stars, too small for bright ones).

    Sources given as sky coordinates whose centre falls outside the image are dropped (a
    catalog usually covers more sky than one image); pixel positions outside the image
    are kept and flagged ``OUTSIDE``.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:41, :53]
    >>> img = 10.0 + 500.0 * np.exp(-((xx - 20) ** 2 + (yy - 25) ** 2) / (2 * 1.5**2))
    >>> phot = aperture_photometry(img, [(20.3, 24.8)], radius=6, annulus=(9, 14))
    >>> round(float(phot["flux"][0]) / (500.0 * 2 * np.pi * 1.5**2), 3)
    1.0
    """
    from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture

    if radius_unit not in ("pixel", "fwhm"):
        raise ConfigError(f"radius_unit must be 'pixel' or 'fwhm', got {radius_unit!r}")
    if coords not in ("auto", "pixel", "sky"):
        raise ConfigError(f"coords must be 'auto', 'pixel' or 'sky', got {coords!r}")
    if background not in ("median", "mean"):
        raise ConfigError(f"background must be 'median' or 'mean', got {background!r}")
    if method not in ("exact", "center", "subpixel"):
        raise ConfigError(f"method must be 'exact', 'center' or 'subpixel', got {method!r}")
    if int(box_size) != box_size or box_size < 3 or box_size % 2 == 0:
        raise ConfigError(f"box_size must be an odd integer >= 3, got {box_size!r}")
    box_size = int(box_size)
    if len(annulus) != 2:
        raise ConfigError(f"annulus must be (r_in, r_out), got {annulus!r}")

    data = _as_2d(image, "image", None)
    shape = tuple(int(n) for n in data.shape)
    var = _as_2d(variance, "variance", shape) if variance is not None else None
    msk = _as_2d(mask, "mask", shape) if mask is not None else None
    the_wcs = _image_wcs(image, wcs)

    r_ap, ap_pix = _pixel_radius(radius, "radius", the_wcs)
    r_in, in_pix = _pixel_radius(annulus[0], "annulus[0]", the_wcs)
    r_out, out_pix = _pixel_radius(annulus[1], "annulus[1]", the_wcs)
    if not (r_ap > 0 and 0 <= r_in < r_out):
        raise ConfigError(
            f"need radius > 0 and 0 <= annulus inner < outer, got radius={radius!r}, annulus={annulus!r}"
        )
    if fwhm is not None and not fwhm > 0:
        raise ConfigError(f"fwhm must be positive (pixels), got {fwhm!r}")

    units = image.attrs.get("units") if isinstance(image, xr.DataArray) else None
    if gain is None:
        gain = _scalar_coord(image, "gain")
        if units == "electron":
            gain = 1.0
    if gain is not None and not gain > 0:
        raise ConfigError(f"gain must be positive (electrons per image unit), got {gain!r}")
    if rdnoise is None:
        rdnoise = _scalar_coord(image, "rdnoise") or 0.0
    if rdnoise < 0:
        raise ConfigError(f"rdnoise must be >= 0 electrons, got {rdnoise!r}")
    if saturate is None:
        saturate = _scalar_coord(image, "saturate")

    x_init, y_init, names, from_sky = _resolve_positions(sources, the_wcs, coords)

    # The one place this function computes: everything in a single pass.
    data, var, msk = dask.compute(data, var, msk)
    data = np.asarray(data)
    var = np.asarray(var, dtype=np.float64) if var is not None else None
    bad = ~np.isfinite(data)
    if msk is not None:
        bad |= np.asarray(msk, dtype=bool)
    ny, nx = shape

    inside = (x_init >= -0.5) & (x_init < nx - 0.5) & (y_init >= -0.5) & (y_init < ny - 0.5)
    inside &= np.isfinite(x_init) & np.isfinite(y_init)
    if not np.any(inside):
        raise CalibrationError(
            f"none of the {len(x_init)} sources falls on the {ny}x{nx} image"
            + (" (check the catalog and the image's WCS)" if from_sky else "")
        )
    if from_sky:
        x_init, y_init = x_init[inside], y_init[inside]
        names = names[inside] if names is not None else None
        inside = inside[inside]
    n = len(x_init)
    flags = np.where(inside, 0, int(PhotFlag.OUTSIDE)).astype(np.int32)

    x, y = x_init.copy(), y_init.copy()
    if recenter:
        for i in np.flatnonzero(inside):
            cx, cy = _recenter(data, bad, x_init[i], y_init[i], box_size)
            moved = math.hypot(cx - x_init[i], cy - y_init[i])
            if math.isfinite(moved) and moved <= box_size / 2:
                x[i], y[i] = cx, cy
            else:
                flags[i] |= PhotFlag.RECENTER

    if radius_unit == "fwhm" and not (ap_pix and in_pix and out_pix):
        if fwhm is None:
            fwhm = _measure_fwhm(data, bad, x[inside], y[inside], box_size)
            if not math.isfinite(fwhm):
                raise CalibrationError(
                    "cannot measure the FWHM of the sources (too few usable stars); pass fwhm= in pixels"
                )
        r_ap = r_ap if ap_pix else r_ap * fwhm
        r_in = r_in if in_pix else r_in * fwhm
        r_out = r_out if out_pix else r_out * fwhm

    # Geometry flags.
    on = inside.copy()
    edge = (x - r_ap < -0.5) | (x + r_ap > nx - 0.5) | (y - r_ap < -0.5) | (y + r_ap > ny - 0.5)
    flags[edge & on] |= PhotFlag.EDGE

    model = "variance" if var is not None else ("ccd" if gain is not None else "background")
    flux = np.full(n, np.nan)
    flux_err = np.full(n, np.nan)
    bkg = np.full(n, np.nan)
    bkg_err = np.full(n, np.nan)
    area = np.full(n, np.nan)
    nsky = np.zeros(n, dtype=np.int64)
    idx = np.flatnonzero(on)
    if idx.size:
        positions = np.column_stack([x[idx], y[idx]])
        aper = CircularAperture(positions, r=r_ap)
        ann = CircularAnnulus(positions, r_in=max(r_in, 1e-6), r_out=r_out)
        clip = SigmaClip(sigma=sigma, maxiters=maxiters, cenfunc="median", stdfunc="std")
        sky = ApertureStats(data, ann, mask=bad, sigma_clip=clip)
        level = np.atleast_1d(sky.median if background == "median" else sky.mean)
        scatter = np.atleast_1d(sky.std)
        used = np.nan_to_num(np.atleast_1d(np.asarray(sky.center_aper_area.value)), nan=0.0)
        geometric = np.pi * (r_out**2 - r_in**2)
        ok_sky = np.isfinite(level) & (used >= 0.5 * geometric)
        flags[idx[~ok_sky]] |= PhotFlag.BACKGROUND
        level = np.where(np.isfinite(level), level, 0.0)
        scatter = np.where(np.isfinite(scatter), scatter, np.nan)
        factor = math.sqrt(math.pi / 2.0) if background == "median" else 1.0
        level_err = factor * scatter / np.sqrt(np.maximum(used, 1))

        err_map = np.sqrt(np.clip(var, 0.0, None)) if var is not None else None
        stats = ApertureStats(
            data, aper, error=err_map, mask=bad, local_bkg=level, sum_method=method
        )
        sums = np.atleast_1d(stats.sum)
        areas = np.atleast_1d(np.asarray(stats.sum_aper_area.value))
        if var is not None:
            pixvar = np.atleast_1d(stats.sum_err) ** 2
        elif gain is not None:
            sky_var = np.fmax(scatter**2, np.clip(level, 0.0, None) / gain + (rdnoise / gain) ** 2)
            pixvar = np.clip(sums, 0.0, None) / gain + areas * sky_var
        else:
            pixvar = areas * scatter**2
        flux[idx] = sums
        flux_err[idx] = np.sqrt(pixvar + (areas * level_err) ** 2)
        bkg[idx] = level
        bkg_err[idx] = level_err
        area[idx] = areas
        nsky[idx] = used.astype(np.int64)

        # Pixel flags: any pixel touched by the aperture.
        for j, apmask in zip(idx, aper.to_mask(method="exact"), strict=True):
            large, small = apmask.get_overlap_slices(shape)
            if large is None:
                continue
            touched = apmask.data[small] > 0
            cut_bad = bad[large][touched]
            if np.any(cut_bad):
                flags[j] |= PhotFlag.MASKED
            if saturate is not None and np.any(data[large][touched][~cut_bad] >= saturate):
                flags[j] |= PhotFlag.SATURATED

    table = Table()
    table["id"] = np.arange(1, n + 1)
    if names is not None:
        table["name"] = names
    table["x"], table["y"] = x, y
    table["x_init"], table["y_init"] = x_init, y_init
    if the_wcs is not None and the_wcs.has_celestial:
        world = the_wcs.pixel_to_world(x, y)
        table["ra"] = np.atleast_1d(world.icrs.ra.deg)
        table["dec"] = np.atleast_1d(world.icrs.dec.deg)
    table["flux"] = flux
    table["flux_err"] = flux_err
    table["background"] = bkg
    table["background_err"] = bkg_err
    table["area"] = area
    table["nsky"] = nsky
    table["flags"] = flags
    table.meta.update(
        radius=r_ap, annulus=(r_in, r_out), fwhm=fwhm, noise_model=model, units=units,
        background=background, recenter=recenter,
    )
    for key in ("filter", "exptime", "airmass", "object", "night", "date_obs", "path"):
        value = _scalar_coord(image, key)
        if value is not None:
            table.meta[key] = value
    return table


# --------------------------------------------------------------------------------------
# standard-star catalogs
# --------------------------------------------------------------------------------------


def _magnitude_columns(table: Table) -> list[str]:
    return [
        c for c in table.colnames
        if c.lower() not in _RESERVED and not c.lower().startswith("err_")
        and table[c].dtype.kind in "fiu"
    ]


def read_standards(path: str | os.PathLike) -> Table:
    """Read a standard-star catalog (CSV or FITS table).

    Parameters
    ----------
    path : str or os.PathLike
        A CSV file (first line = column names) or a FITS file whose first table HDU
        holds the catalog.  Columns: ``name``, ``ra``, ``dec`` (degrees, or sexagesimal
        strings ``hh:mm:ss`` / ``dd:mm:ss``), one magnitude column per filter named
        after the filter (``V``, ``R``...), and optionally ``err_<filter>``.  Empty
        cells mean "no magnitude in this filter".

    Returns
    -------
    astropy.table.Table
        Columns ``name`` (str), ``ra``, ``dec`` (float degrees) and the magnitude and
        error columns as float (NaN where missing); ``meta["path"]`` is the file.

    Raises
    ------
    CalibrationError
        The file is missing or unreadable, a required column is missing, there is no
        magnitude column, or a value is not a number.

    Examples
    --------
    >>> cat = read_standards("examples/standards.csv")  # doctest: +SKIP
    >>> cat.colnames[:3]  # doctest: +SKIP
    ['name', 'ra', 'dec']
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"standard-star catalog {path} does not exist; check [photometry] standards")
    is_fits = path.suffix.lower() in (".fits", ".fit", ".fts") or path.name.lower().endswith(".fits.gz")
    try:
        if is_fits:
            table = Table.read(path, format="fits")
        else:
            table = Table.read(path, format="ascii.csv")
    except (OSError, ValueError, TypeError) as err:
        kind = "FITS table" if is_fits else "CSV"
        raise CalibrationError(f"cannot read standard-star catalog {path} as {kind}: {err}") from err
    table = Table(table, masked=False)
    for key in _RESERVED:
        col = _column(table, key)
        if col is None:
            raise CalibrationError(
                f"standard-star catalog {path} lacks column {key!r} (has {table.colnames}); "
                "the columns are name, ra, dec (degrees) and one magnitude column per filter"
            )
        if col != key:
            table.rename_column(col, key)
    table["name"] = np.asarray(table["name"]).astype(str)
    coords = _sky_coords(table, f"standard-star catalog {path}")
    table["ra"] = coords.ra.deg
    table["dec"] = coords.dec.deg
    for col in table.colnames:
        if col in _RESERVED:
            continue
        try:
            values = np.ma.filled(np.ma.asarray(table[col], dtype=float), np.nan)
        except (TypeError, ValueError) as err:
            raise CalibrationError(
                f"standard-star catalog {path}: column {col!r} must hold numbers (magnitudes), "
                f"found {table[col][0]!r}"
            ) from err
        table[col] = np.asarray(values, dtype=float)
    mags = _magnitude_columns(table)
    if not mags:
        raise CalibrationError(
            f"standard-star catalog {path} has no magnitude column; add one column per filter named "
            "after the filter (e.g. V, R)"
        )
    for col in table.colnames:
        if col.lower().startswith("err_") and _column(table, col[4:]) is None:
            raise CalibrationError(
                f"standard-star catalog {path}: {col!r} has no matching magnitude column {col[4:]!r}"
            )
    table.meta["path"] = str(path)
    return table

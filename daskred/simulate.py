"""Realistic synthetic raw CCD datasets with known truth.

:func:`simulate` writes what a small observatory would hand over after a few nights:
uint16 raw frames (``BITPIX=16``, ``BZERO=32768``) with prescan and overscan columns,
calibration frames taken in the afternoon, dithered science frames and a standard-star
field observed at several airmasses, and, beside them, the truth every stage of a
reduction can be checked against.

Directory layout
----------------
::

    DIR/
      raw/
        20240312/                   one folder per night, named by the local date of the evening
          bias_0001.fits            files numbered in observing order within the night
          ...
          dark_0006.fits
          flat_V_0009.fits          dome flats, one series per filter
          flat_R_0014.fits
          std_V_0019.fits           standard-star field: std_<filter>_<NNNN>.fits
          std_R_0020.fits
          simfield_V_0021.fits      science frames: <object>_<filter>_<NNNN>.fits
          ...
        20240313/
          ...
      truth/
        parameters.json             camera, site, zero points, extinction, geometry, options
        stars.csv                   every star rendered (both fields)
        standards.csv               standard stars only (the catalog the photometry stage reads)
        frames.csv                  one row per raw file
        cosmics.csv                 one row per pixel hit by a cosmic ray
        bias.fits                   noiseless bias (ADU) in the full raw geometry, frame offset 0
        dark.fits                   dark current (electron / s) of the imaging area
        flat_<filter>.fits          pixel response x illumination of the imaging area, mean 1

Only ``raw/`` holds frames, so ``dr.scan(DIR / "raw")`` never sees the truth images.

Truth tables
------------
``stars.csv``
    ``name, field, ra, dec, <one column per filter>, err_<filter>..., standard``; ``field`` is
    ``science`` or ``standard``; ``err_*`` are the quoted catalog errors of standard stars (NaN
    for others; magnitudes themselves are exact, rounded to 1 mmag before rendering).
``standards.csv``
    ``name, ra, dec, <filters>, err_<filters>``, e.g. ``name, ra, dec, V, R, err_V, err_R``.
``frames.csv``
    ``path`` (relative to DIR), ``night`` (YYYY-MM-DD), ``seq``, ``imagetyp`` (bias, dark, flat,
    light, standard), ``object``, ``filter`` (header FILTER; for bias and dark the filter left in
    the wheel), ``exptime``, ``date_obs``, ``airmass``, ``bias_offset`` (ADU added to
    ``bias.fits`` in this frame), ``overscan_level`` (noiseless mean of BIASSEC, ADU),
    ``flat_level`` (electrons per pixel of a flat before the flat response), ``sky``
    (electrons per pixel at the centre, before the flat), ``sky_gx, sky_gy`` (fractional sky
    change across the width / height), ``fwhm`` (pixels), ``beta`` (Moffat), ``crval1, crval2``
    (pointing, degrees), ``rotation`` (degrees, counter-clockwise), ``dx, dy`` (where the
    reference frame's centre pixel lands, minus the centre), ``a, b, c, d, tx, ty`` (affine map
    ``x' = a x + b y + tx``, ``y' = c x + d y + ty`` from the reference frame's trimmed pixels to
    this frame's, fitted to the two WCSs, < 0.01 px residual), ``reference`` (path of the first
    frame of the same field), ``n_cosmic_pixels``.  Empty where not applicable.
``cosmics.csv``
    ``path, x, y, electrons``: every pixel a cosmic ray deposited charge in.

Headers
-------
Raw headers carry ``BITPIX=16, BZERO=32768, BSCALE=1`` and ``BUNIT, OBSERVAT, TELESCOP,
INSTRUME, DETECTOR, LATITUDE, LONGITUD`` (east positive) ``, ALTITUDE, IMAGEID, IMAGETYP``
(``BIAS, DARK, FLAT, OBJECT, STANDARD``) ``, OBJECT, FILTER, EXPTIME, DATE-OBS`` (UTC start,
``YYYY-MM-DDThh:mm:ss.sss``) ``, MJD-OBS, LST, RA, DEC`` (sexagesimal strings) ``, AIRMASS,
GAIN, RDNOISE, SATURATE, CCDSUM, PRESCAN, OVERSCAN, TRIMSEC, DATASEC, BIASSEC``; light and
standard frames add a TAN WCS (``WCSAXES, CTYPEi, CUNITi, CRVALi, CRPIXi, CDi_j, RADESYS,
EQUINOX``).  Calibration frames point at the zenith (``AIRMASS = 1``).

Physical model
--------------
All light is counted in electrons and converted to ADU by ``ADU = electrons / GAIN``.
The flux of a star of magnitude ``m`` in filter ``f`` observed for ``t`` seconds at airmass
``X`` (``sec z``, plane parallel, at mid-exposure; the ``AIRMASS`` card) is::

    flux_e = t * 10 ** (-0.4 * (m - zeropoint_e[f] + extinction[f] * X))

so that ``m = -2.5 log10(flux_e / t) + zeropoint_e[f] - extinction[f] * X``; in ADU the
zero point is ``zeropoint_adu = zeropoint_e - 2.5 log10(GAIN)`` (both in ``parameters.json``).
Stars have a Moffat profile (per-frame ``fwhm`` and ``beta`` in ``frames.csv``) integrated
over each pixel; the sky is a plane ``sky * (1 + sky_gx * (x - xc) / nx + sky_gy * (y - yc) / ny)``
(electrons per pixel for the exposure, ``xc, yc`` the centre of the imaging area).  Stars and
sky are multiplied by the true flat (normalised to mean 1, so a flat-fielded frame follows the
zero point), dark current is added, photon noise is Poisson, cosmic rays add electrons after
that, charge above the full well bleeds along columns, then the bias (2-D structure plus a
per-frame offset) and Gaussian read noise are added in ADU and the result is rounded and
clipped to 0..65535.  The prescan and overscan hold bias and read noise only (the first
overscan columns, excluded from ``BIASSEC``, carry a small charge-transfer tail).

Coordinates in the truth tables (``x``, ``y``) are 0-based pixels of the trimmed imaging
area (``TRIMSEC``); add the prescan width (``parameters.json`` ``prescan``) to ``x`` for raw
array columns.  The WCS in a raw header describes the raw array (``CRPIX1`` includes the
prescan), as a telescope would write it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from .errors import ConfigError

__all__ = ["simulate", "SimulatedDataset"]

Scale = Literal["tiny", "small", "medium", "large"]

#: Imaging-area shape ``(ny, nx)`` of each scale preset (prescan and overscan come on top).
SCALES: dict[str, tuple[int, int]] = {
    "tiny": (101, 131),
    "small": (260, 300),
    "medium": (1030, 1200),
    "large": (4112, 4096),
}


@dataclass(frozen=True)
class _Band:
    zeropoint: float  # magnitude giving 1 electron / s above the atmosphere
    extinction: float  # magnitudes per airmass
    sky: float  # sky surface brightness at zenith, mag / arcsec^2
    colour: float  # m_f = V + colour * (B - V)


_BANDS: dict[str, _Band] = {
    "U": _Band(22.8, 0.45, 22.0, 1.6),
    "B": _Band(24.0, 0.25, 22.6, 1.0),
    "V": _Band(24.2, 0.15, 21.6, 0.0),
    "R": _Band(24.4, 0.10, 20.9, -0.55),
    "I": _Band(23.9, 0.06, 19.9, -1.1),
    "g": _Band(24.6, 0.18, 22.0, 0.6),
    "r": _Band(24.4, 0.10, 21.0, -0.4),
    "i": _Band(24.0, 0.06, 20.2, -0.8),
    "z": _Band(23.3, 0.05, 19.3, -1.0),
}

# Site (east longitude, degrees; a dark site in Arizona) and camera constants.
_LATITUDE = 35.0
_LONGITUDE = -111.5
_ALTITUDE = 2200.0
_PIXEL_SCALE = 0.6  # arcsec / pixel
_PRESCAN = 10
_OVERSCAN = 30
_OVERSCAN_SKIP = 5  # overscan columns left out of BIASSEC (charge-transfer tail)
_BIAS_LEVEL = 1000.0  # ADU
_FULL_WELL = 90000.0  # electrons
_SCIENCE_DEC = 30.0
_STANDARD_DEC = 1.0
_SCIENCE_OBJECT = "SIMFIELD"
_STANDARD_OBJECT = "SIMSTD"
_READOUT = 25.0  # seconds between the end of one exposure and the start of the next
_BIAS_CADENCE = 15.0
_SIDEREAL_DAY = 86164.0905  # seconds
_MAX_AIRMASS = 3.5
_OVERSAMPLE = 3  # sub-pixels per axis when integrating the PSF over a pixel
_IMAGETYP = {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "light": "OBJECT", "standard": "STANDARD"}


@dataclass(frozen=True, eq=False)
class SimulatedDataset:
    """What :func:`simulate` wrote, and the truth needed to check a reduction.

    Attributes
    ----------
    directory : pathlib.Path
        The dataset folder (``raw/`` and ``truth/`` inside).
    raw_dir : pathlib.Path
        Folder holding one sub-folder of raw frames per night.
    truth_dir : pathlib.Path
        Folder holding the truth files (see the module documentation).
    files : tuple of pathlib.Path
        Every raw FITS file, night by night in observing order.
    nights : tuple of str
        Night labels ``"YYYY-MM-DD"`` (local date of the evening).
    filters : tuple of str
        Filters observed.
    shape : tuple of int
        ``(ny, nx)`` of the imaging area (``TRIMSEC``).
    raw_shape : tuple of int
        ``(ny, nx)`` of a raw frame, prescan and overscan included.
    trimsec, biassec : str
        FITS sections (1-based, x first) written in every header.
    gain : float
        Electrons per ADU.
    rdnoise : float
        Read noise, electrons.
    bias_level : float
        Nominal bias level, ADU (each frame adds its ``bias_offset`` from ``frames.csv``).
    saturate : float
        ``SATURATE`` header value, ADU.
    zeropoints : dict
        Filter -> zero point in electrons (``m`` of a star giving 1 e-/s above the atmosphere).
    extinction : dict
        Filter -> extinction coefficient, magnitudes per airmass.
    seed : int
        Seed the dataset was made from.
    parameters_path, stars_path, standards_path, frames_path, cosmics_path, bias_path, dark_path : pathlib.Path
        Truth files.
    flat_paths : dict
        Filter -> true flat (FITS).
    """

    directory: Path
    raw_dir: Path
    truth_dir: Path
    files: tuple[Path, ...]
    nights: tuple[str, ...]
    filters: tuple[str, ...]
    shape: tuple[int, int]
    raw_shape: tuple[int, int]
    trimsec: str
    biassec: str
    gain: float
    rdnoise: float
    bias_level: float
    saturate: float
    zeropoints: dict[str, float]
    extinction: dict[str, float]
    seed: int
    parameters_path: Path
    stars_path: Path
    standards_path: Path
    frames_path: Path
    cosmics_path: Path
    bias_path: Path
    dark_path: Path
    flat_paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        """Return a few human-readable lines describing the dataset.

        Examples
        --------
        >>> print(ds.summary())                                       # doctest: +SKIP
        64 raw frames, 2 nights (2024-03-12 .. 2024-03-13), filters V, R, ...
        """
        ny, nx = self.shape
        rny, rnx = self.raw_shape
        size = sum(p.stat().st_size for p in self.files)
        return "\n".join([
            f"{len(self.files)} raw frames, {len(self.nights)} night(s) ({self.nights[0]} .. {self.nights[-1]}), "
            f"filters {', '.join(self.filters)}, {size / 1e6:.1f} MB",
            f"imaging area {ny} x {nx} (TRIMSEC {self.trimsec}), raw {rny} x {rnx} (BIASSEC {self.biassec})",
            f"gain {self.gain:g} e-/ADU, read noise {self.rdnoise:g} e-, bias {self.bias_level:g} ADU, seed {self.seed}",
            f"raw frames in {self.raw_dir}",
            f"truth in {self.truth_dir} (stars.csv, standards.csv, frames.csv, parameters.json, ...)",
        ])

    def frames(self) -> pd.DataFrame:
        """Return the per-frame truth table (``truth/frames.csv``).

        Examples
        --------
        >>> ds = simulate(tmp_path, scale="tiny")                      # doctest: +SKIP
        >>> ds.frames().groupby(["night", "imagetyp"]).size()         # doctest: +SKIP
        """
        return pd.read_csv(self.frames_path, keep_default_na=False, na_values=[""])

    def stars(self) -> pd.DataFrame:
        """Return the catalog of every rendered star (``truth/stars.csv``)."""
        return pd.read_csv(self.stars_path)

    def select(
        self, *, imagetyp: str | None = None, filter: str | None = None, night: str | None = None
    ) -> list[Path]:
        """Return the raw files of one frame type, filter and/or night, in observing order.

        Examples
        --------
        >>> ds.select(imagetyp="light", filter="V", night=ds.nights[0])   # doctest: +SKIP
        """
        table = self.frames()
        keep = np.ones(len(table), dtype=bool)
        for column, value in (("imagetyp", imagetyp), ("filter", filter), ("night", night)):
            if value is not None:
                keep &= table[column].astype(str).to_numpy() == value
        return [self.directory / p for p in table["path"][keep]]


@dataclass(frozen=True)
class _Options:
    shape: tuple[int, int]
    nights: int
    filters: tuple[str, ...]
    n_bias: int
    n_dark: int
    n_flat: int
    n_science: int
    n_standard: int
    exptime: float
    exptime_dark: float
    exptime_flat: float
    exptime_standard: float
    n_stars: int | None
    dither: float
    rotation: float
    cosmic_rate: float
    gain: float
    rdnoise: float
    seed: int
    start_night: date


@dataclass
class _Exposure:
    kind: str  # bias | dark | flat | light | standard
    night: int
    start: datetime  # UTC, naive
    exptime: float
    filter: str
    seq: int = 0
    path: str = ""
    airmass: float = 1.0
    ra: float = math.nan  # pointing, degrees
    dec: float = math.nan
    dx: float = 0.0
    dy: float = 0.0
    rotation: float = 0.0
    reference: str = ""


# ----------------------------------------------------------------------------- validation


def _int(value: Any, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _float(value: Any, name: str, *, unit: str, positive: bool = True) -> float:
    """A float in ``unit``, or an astropy Quantity convertible to it."""
    if hasattr(value, "unit") and hasattr(value, "to_value"):
        try:
            value = value.to_value(unit)
        except Exception as err:  # astropy.units.UnitConversionError
            raise ConfigError(f"{name} must be in {unit}, got {value!r}") from err
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number in {unit}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{name} must be finite and {bound} ({unit}), got {value}")
    return value


def _validate(
    *,
    scale: str,
    shape: Any,
    nights: Any,
    filters: Any,
    counts: dict[str, Any],
    exptimes: dict[str, Any],
    n_stars: Any,
    dither: Any,
    rotation: Any,
    cosmic_rate: Any,
    gain: Any,
    rdnoise: Any,
    seed: Any,
    start_night: Any,
) -> _Options:
    if shape is None:
        if scale not in SCALES:
            allowed = ", ".join(map(repr, SCALES))
            raise ConfigError(f"unknown scale {scale!r}; choose one of {allowed} or pass shape=(ny, nx)")
        shape = SCALES[scale]
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 2
        or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) for n in shape)
    ):
        raise ConfigError(f"shape must be a pair of integers (ny, nx), got {shape!r}")
    if min(shape) < 48:
        raise ConfigError(f"shape must be at least (48, 48) pixels to hold stars and dithers, got {tuple(shape)}")
    shape = (int(shape[0]), int(shape[1]))
    nights = _int(nights, "nights", minimum=1)
    if isinstance(filters, str):
        filters = (filters,)
    if not isinstance(filters, Sequence) or len(filters) == 0:
        raise ConfigError(f"filters must be a non-empty sequence of filter names, got {filters!r}")
    filters = tuple(filters)
    unknown = [f for f in filters if f not in _BANDS]
    if unknown:
        raise ConfigError(f"unknown filter(s) {unknown}; the simulator knows {', '.join(_BANDS)}")
    if len(set(filters)) != len(filters):
        raise ConfigError(f"filters must not repeat, got {list(filters)}")
    n = {name: _int(value, name) for name, value in counts.items()}
    if sum(n.values()) == 0:
        raise ConfigError("every frame count is 0; ask for at least one frame (e.g. n_bias=1)")
    t = {name: _float(value, name, unit="s") for name, value in exptimes.items()}
    if n_stars is not None:
        n_stars = _int(n_stars, "n_stars")
    if dither is None:
        dither = float(min(40, 3 + round(0.04 * min(shape))))
    dither = _float(dither, "dither", unit="pix", positive=False)
    if dither > 0.25 * min(shape):
        raise ConfigError(f"dither must be at most a quarter of the image ({0.25 * min(shape):g} px), got {dither:g}")
    rotation = _float(rotation, "rotation", unit="deg", positive=False)
    if rotation > 5:
        raise ConfigError(
            f"rotation is the largest field rotation between frames and must be <= 5 deg, got {rotation:g}"
        )
    cosmic_rate = _float(cosmic_rate, "cosmic_rate", unit="1 / (pix s)", positive=False)
    gain = _float(gain, "gain", unit="electron / adu")
    rdnoise = _float(rdnoise, "rdnoise", unit="electron", positive=False)
    seed = _int(seed, "seed")
    if isinstance(start_night, datetime):
        start_night = start_night.date()
    if isinstance(start_night, str):
        try:
            start_night = date.fromisoformat(start_night)
        except ValueError as err:
            raise ConfigError(f"start_night must be an ISO date 'YYYY-MM-DD', got {start_night!r}") from err
    if not isinstance(start_night, date):
        raise ConfigError(f"start_night must be an ISO date 'YYYY-MM-DD', got {start_night!r}")
    return _Options(
        shape=shape,
        nights=nights,
        filters=filters,
        **n,
        exptime=t["exptime"],
        exptime_dark=t["exptime_dark"],
        exptime_flat=t["exptime_flat"],
        exptime_standard=t["exptime_standard"],
        n_stars=n_stars,
        dither=dither,
        rotation=rotation,
        cosmic_rate=cosmic_rate,
        gain=gain,
        rdnoise=rdnoise,
        seed=seed,
        start_night=start_night,
    )


# ----------------------------------------------------------------------------- time and sky


def _jd(moment: datetime) -> float:
    return 2440587.5 + moment.replace(tzinfo=timezone.utc).timestamp() / 86400.0


def _lst(moment: datetime) -> float:
    """Local sidereal time (degrees) at the site, from the GMST polynomial (good to ~0.1 s)."""
    d = _jd(moment) - 2451545.0
    return (280.46061837 + 360.98564736629 * d + _LONGITUDE) % 360.0


def _airmass(ra: float, dec: float, moment: datetime) -> float:
    ha = math.radians(_lst(moment) - ra)
    lat, dec = math.radians(_LATITUDE), math.radians(dec)
    cosz = math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(ha)
    return 1.0 / cosz if cosz > 0 else math.inf


def _local(day: date, hours: float) -> datetime:
    """UTC moment of local mean solar time ``hours`` on ``day`` at the site."""
    return datetime(day.year, day.month, day.day) + timedelta(hours=hours - _LONGITUDE / 15.0)


def _sexagesimal(value: float, *, hours: bool) -> str:
    if hours:
        total = round((value % 360.0) / 15.0 * 36000)  # tenths of a second of time
        h, rest = divmod(total, 36000)
        m, rest = divmod(rest, 600)
        return f"{h % 24:02d}:{m:02d}:{rest / 10:04.1f}"
    sign = "-" if value < 0 else "+"
    total = round(abs(value) * 3600)
    d, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{d:02d}:{m:02d}:{s:02d}"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


# ----------------------------------------------------------------------------- WCS


def _wcs_cards(ra: float, dec: float, rotation: float, shape: tuple[int, int]) -> dict[str, Any]:
    """Tangent-plane WCS of the raw array: centre of the imaging area at (ra, dec)."""
    ny, nx = shape
    s = _PIXEL_SCALE / 3600.0
    c, n = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return {
        "WCSAXES": 2,
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg",
        "CUNIT2": "deg",
        "CRVAL1": ra,
        "CRVAL2": dec,
        "CRPIX1": _PRESCAN + (nx + 1) / 2.0,
        "CRPIX2": (ny + 1) / 2.0,
        "CD1_1": -s * c,
        "CD1_2": s * n,
        "CD2_1": s * n,
        "CD2_2": s * c,
        "RADESYS": "ICRS",
        "EQUINOX": 2000.0,
    }


def _wcs(ra: float, dec: float, rotation: float, shape: tuple[int, int]) -> WCS:
    header = fits.Header()
    for key, value in _wcs_cards(ra, dec, rotation, shape).items():
        header[key] = value
    return WCS(header)


def _to_pixels(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based (x, y) in the trimmed imaging area."""
    x, y = wcs.wcs_world2pix(ra, dec, 0)
    return x - _PRESCAN, y


def _affine(ref: WCS, this: WCS, shape: tuple[int, int]) -> np.ndarray:
    """Least-squares affine map from reference to this frame's trimmed pixel coordinates."""
    ny, nx = shape
    gy, gx = np.meshgrid(np.linspace(0, ny - 1, 7), np.linspace(0, nx - 1, 7), indexing="ij")
    gx, gy = gx.ravel(), gy.ravel()
    ra, dec = ref.wcs_pix2world(gx + _PRESCAN, gy, 0)
    x, y = _to_pixels(this, ra, dec)
    design = np.column_stack([gx, gy, np.ones_like(gx)])
    (a, b, tx), *_ = np.linalg.lstsq(design, x, rcond=None)
    (c, d, ty), *_ = np.linalg.lstsq(design, y, rcond=None)
    return np.array([a, b, c, d, tx, ty])


# ----------------------------------------------------------------------------- catalog


def _standard_limits(opts: _Options) -> dict[str, float]:
    """Brightest magnitude per filter whose peak stays below 40 % of the full well."""
    t = opts.exptime_standard
    return {f: _BANDS[f].zeropoint - 2.5 * math.log10(0.4 * _FULL_WELL / (0.16 * t)) for f in opts.filters}


def _make_catalog(opts: _Options, rng: np.random.Generator, centres: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Stars of the science field and of the standard field, magnitudes rounded to 1 mmag."""
    ny, nx = opts.shape
    rows: list[dict[str, Any]] = []
    margin = opts.dither + 25.0
    half = 0.5 * math.hypot(ny, nx) + margin  # covers any dither and rotation

    def mags(v: np.ndarray, bv: np.ndarray) -> dict[str, np.ndarray]:
        return {f: np.round(v + _BANDS[f].colour * bv, 3) for f in opts.filters}

    def add(field_name: str, prefix: str, x: np.ndarray, y: np.ndarray, m: dict[str, np.ndarray],
            err: dict[str, np.ndarray] | None, start: int) -> None:
        wcs = _wcs(*centres[field_name], 0.0, opts.shape)
        ra, dec = wcs.wcs_pix2world(x + _PRESCAN, y, 0)
        for i in range(len(x)):
            row = {"name": f"{prefix}-{start + i:05d}", "field": field_name, "ra": float(ra[i]), "dec": float(dec[i])}
            for f in opts.filters:
                row[f] = float(m[f][i])
            for f in opts.filters:
                row[f"err_{f}"] = float(err[f][i]) if err is not None else math.nan
            row["standard"] = err is not None
            rows.append(row)

    # science field: power-law luminosity function, a few stars bright enough to saturate
    t = opts.exptime
    zp_v = _BANDS["V"].zeropoint
    bright = zp_v - 2.5 * math.log10(2.0 * _FULL_WELL / (0.15 * t))
    faint = bright + 8.0
    area = (2 * half) ** 2
    n = opts.n_stars if opts.n_stars is not None else int(round(1.5e-3 * area))
    x = rng.uniform(nx / 2 - half, nx / 2 + half, n)
    y = rng.uniform(ny / 2 - half, ny / 2 + half, n)
    u = rng.uniform(0, 1, n)
    v = np.log10(10 ** (0.3 * bright) + u * (10 ** (0.3 * faint) - 10 ** (0.3 * bright))) / 0.3
    bv = np.clip(rng.normal(0.7, 0.3, n), -0.2, 1.8)
    if n >= 20:  # two saturated stars well inside the field
        v[:2] = bright - rng.uniform(1.5, 3.0, 2)
        x[:2] = rng.uniform(0.25 * nx, 0.75 * nx, 2)
        y[:2] = rng.uniform(0.25 * ny, 0.75 * ny, 2)
    add("science", "S", x, y, mags(v, bv), None, 1)

    # standard field: well separated, unsaturated stars of known magnitude, plus faint field stars
    n_std = int(np.clip(ny * nx / 4000, 5, 25))
    edge = opts.dither + 15.0
    xs: list[float] = []
    ys: list[float] = []
    for _ in range(200 * n_std):
        if len(xs) == n_std:
            break
        cx, cy = rng.uniform(edge, nx - 1 - edge), rng.uniform(edge, ny - 1 - edge)
        if all(math.hypot(cx - a, cy - b) > 15.0 for a, b in zip(xs, ys)):
            xs.append(cx)
            ys.append(cy)
    n_std = len(xs)
    bv = np.round(rng.uniform(-0.1, 1.3, n_std), 3)
    v = rng.uniform(0.0, 3.0, n_std)
    limits = _standard_limits(opts)
    offset = max(limits[f] - float(np.min(v + _BANDS[f].colour * bv)) for f in opts.filters)
    std_mags = mags(v + offset, bv)
    err = {f: np.round(rng.uniform(0.002, 0.012, n_std), 4) for f in opts.filters}
    add("standard", "STD", np.array(xs), np.array(ys), std_mags, err, 1)
    n_bg = int(round(0.3e-3 * area))
    xb = rng.uniform(nx / 2 - half, nx / 2 + half, n_bg)
    yb = rng.uniform(ny / 2 - half, ny / 2 + half, n_bg)
    vb = float(np.max(v + offset)) + rng.uniform(1.0, 5.0, n_bg)
    add("standard", "F", xb, yb, mags(vb, np.clip(rng.normal(0.7, 0.3, n_bg), -0.2, 1.8)), None, 1)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- detector


@dataclass
class _Detector:
    bias: np.ndarray  # raw geometry, ADU, level included, frame offset 0
    dark: np.ndarray  # imaging area, electron / s
    flats: dict[str, np.ndarray]  # imaging area, mean 1


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Low-frequency random field (sum of six random plane waves), mean ~0, std ~1, float32."""
    ny, nx = shape
    y = np.arange(ny) / scale
    x = np.arange(nx) / scale
    out = np.zeros(shape, dtype=np.float32)
    for _ in range(6):
        kx, ky = rng.normal(0, 1, 2)
        phase = rng.uniform(0, 2 * np.pi)
        # cos(a + b) = cos a cos b - sin a sin b: two outer products, no full-frame cosine
        a, b = kx * x + phase, ky * y
        out += np.outer(np.cos(b), np.cos(a)).astype(np.float32)
        out -= np.outer(np.sin(b), np.sin(a)).astype(np.float32)
    out /= math.sqrt(3.0)
    return out


def _donuts(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    """Shadows of out-of-focus dust: rings with a shallower disk inside (float32, 1 = clear)."""
    ny, nx = shape
    out = np.ones(shape, dtype=np.float32)
    for _ in range(count):
        radius = rng.uniform(4.0, max(5.0, min(25.0, 0.08 * min(ny, nx))))
        depth = rng.uniform(0.02, 0.06)
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        reach = int(math.ceil(2 * radius + 10))
        y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, ny)
        x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, nx)
        r = np.hypot(np.arange(y0, y1)[:, None] - cy, np.arange(x0, x1)[None, :] - cx)
        ring = np.exp(-0.5 * ((r - radius) / (0.25 * radius)) ** 2)
        disk = 0.5 * (1.0 - np.tanh((r - radius) / 1.4))  # logistic edge, 0.7 px scale
        out[y0:y1, x0:x1] *= (1.0 - depth * (0.6 * ring + 0.4 * disk)).astype(np.float32)
    return out


def _make_detector(opts: _Options, rng: np.random.Generator) -> _Detector:
    ny, nx = opts.shape
    nraw = _PRESCAN + nx + _OVERSCAN
    yy = np.arange(ny, dtype=np.float64)[:, None]
    xx = np.arange(nx, dtype=np.float64)[None, :]

    # bias: level, a readout transient along rows shared with the overscan, a fixed column
    # pattern, a smooth gradient and two warm columns in the imaging area
    rows = 4.0 * np.exp(-yy / 25.0) + 0.6 * np.sin(2 * np.pi * yy / max(ny, 1) * 1.3)
    bias = np.empty((ny, nraw), dtype=np.float32)
    bias[:] = _BIAS_LEVEL + rows
    columns = 0.35 * rng.standard_normal(nx) + 1.2 * (xx[0] / nx)
    for col in rng.choice(nx, 2, replace=False):
        columns[col] += rng.uniform(4.0, 8.0)
    bias[:, _PRESCAN:_PRESCAN + nx] += (columns[None, :] - 0.8 * (yy / ny) ** 2).astype(np.float32)
    bias[:, _PRESCAN + nx:] += (0.1 * rng.standard_normal(_OVERSCAN)[None, :]).astype(np.float32)

    # dark current: a gentle gradient, amplifier glow in one corner, hot pixels
    dark = np.empty((ny, nx), dtype=np.float32)
    dark[:] = (0.08 * (1.0 + 0.15 * xx / nx)).astype(np.float32)
    glow = min(ny, nx, 200)
    corner = np.hypot(xx[:, nx - glow:] - (nx - 1), yy[:glow])
    dark[:glow, nx - glow:] += (1.5 * np.exp(-corner / 30.0)).astype(np.float32)
    n_hot = max(3, int(1e-3 * nx * ny))
    hy, hx = rng.integers(0, ny, n_hot), rng.integers(0, nx, n_hot)
    dark[hy, hx] += (10 ** rng.uniform(0.0, 1.5, n_hot)).astype(np.float32)

    # flat: vignetting, pixel-to-pixel response, a low-response column, dust donuts
    cy, cx = (ny - 1) / 2 + rng.normal(0, 0.05 * ny), (nx - 1) / 2 + rng.normal(0, 0.05 * nx)
    r2 = ((yy - cy) ** 2).astype(np.float32) + ((xx - cx) ** 2).astype(np.float32)
    r2 /= np.float32(0.25 * (ny**2 + nx**2))
    shared = 1.0 - 0.08 * r2 - 0.04 * r2**2
    del r2
    shared *= 1.0 + 0.008 * rng.standard_normal((ny, nx), dtype=np.float32)
    shared *= 1.0 + 0.01 * _smooth_noise(rng, (ny, nx), 0.15 * min(ny, nx))
    shared[:, rng.integers(nx // 4, 3 * nx // 4)] *= 0.85
    shared *= _donuts(rng, (ny, nx), 3)  # dust on the dewar window, common to all filters
    flats = {}
    for f in opts.filters:
        flat = shared * _donuts(rng, (ny, nx), 2)  # dust on the filter
        flat *= 1.0 + 0.003 * rng.standard_normal((ny, nx), dtype=np.float32)
        flat /= np.float32(flat.mean(dtype=np.float64))
        flats[f] = flat
    return _Detector(bias=bias, dark=dark, flats=flats)


# ----------------------------------------------------------------------------- schedule


def _plan(opts: _Options, rng: np.random.Generator) -> tuple[list[_Exposure], dict[str, tuple[float, float]]]:
    """Observing log of every night (no pixels): times, pointings, dithers, airmasses."""
    first = opts.start_night
    std_transit0 = _local(first, 20.25)
    sci_transit0 = _local(first, 23.5)
    centres = {
        "science": (round(_lst(sci_transit0), 4), _SCIENCE_DEC),
        "standard": (round(_lst(std_transit0), 4), _STANDARD_DEC),
    }
    lat, dec = math.radians(_LATITUDE), math.radians(_STANDARD_DEC)
    x_transit = 1.0 / math.cos(lat - dec)
    n_std = opts.n_standard
    targets = np.linspace(x_transit + 0.08, 2.1, n_std) if n_std > 1 else np.array([x_transit + 0.08])[:n_std]
    cos_h = (1.0 / targets - math.sin(lat) * math.sin(dec)) / (math.cos(lat) * math.cos(dec))
    ha_seconds = np.degrees(np.arccos(np.clip(cos_h, -1, 1))) / 15.0 * 3600.0 / 1.0027379093
    step = {"light": opts.exptime + _READOUT, "standard": opts.exptime_standard + _READOUT}
    log: list[_Exposure] = []
    for night in range(opts.nights):
        day = first + timedelta(days=night)
        wheel = opts.filters[0]  # the filter left in the wheel during biases and darks
        calib: list[tuple[str, float, str]] = [("bias", 0.0, wheel)] * opts.n_bias
        calib += [("dark", opts.exptime_dark, wheel)] * opts.n_dark
        for f in opts.filters:
            calib += [("flat", opts.exptime_flat, f)] * opts.n_flat
        duration = sum(_BIAS_CADENCE if k == "bias" else t + _READOUT for k, t, _ in calib)
        clock = _local(day, 18.5) - timedelta(seconds=duration)
        if clock < _local(day, 12.5):
            raise ConfigError(
                f"the calibration frames of one night take {duration / 3600:.1f} h and do not fit into the "
                "afternoon (12:30-18:30 local time); lower n_bias, n_dark, n_flat or exptime_dark"
            )
        for kind, t, f in calib:
            log.append(_Exposure(kind, night, clock, t, f))
            clock += timedelta(seconds=_BIAS_CADENCE if kind == "bias" else t + _READOUT)

        shift = timedelta(seconds=night * _SIDEREAL_DAY)
        visits = [std_transit0 + shift + timedelta(seconds=float(s)) for s in ha_seconds]
        science = [(f, i) for f in opts.filters for i in range(opts.n_science)]
        sci_duration = len(science) * step["light"]
        clock = max(_local(day, 19.75), sci_transit0 + shift - timedelta(seconds=sci_duration / 2))
        clock = min(clock, visits[0]) if visits else clock

        def observe_standards(clock: datetime, visit: int) -> datetime:
            clock = max(clock, visits[visit])
            for f in opts.filters:
                log.append(_Exposure("standard", night, clock, opts.exptime_standard, f))
                clock += timedelta(seconds=step["standard"])
            return clock

        visit = 0
        for f, i in science:
            while visit < len(visits) and visits[visit] <= clock + timedelta(seconds=step["light"]):
                clock = observe_standards(clock, visit)
                visit += 1
            log.append(_Exposure("light", night, clock, opts.exptime, f))
            clock += timedelta(seconds=step["light"])
        while visit < len(visits):
            clock = observe_standards(clock, visit)
            visit += 1
        if clock > _local(day + timedelta(days=1), 11.0):
            raise ConfigError(
                f"night {night + 1} would end at {_iso(clock)} UT, after 11:00 local time; "
                "lower n_science, n_standard or the exposure times"
            )

    # numbering, names, pointings, dithers and airmasses
    per_night: dict[int, int] = {}
    references: dict[str, str] = {}
    for exp in log:
        per_night[exp.night] = exp.seq = per_night.get(exp.night, 0) + 1
        folder = (opts.start_night + timedelta(days=exp.night)).strftime("%Y%m%d")
        stem = {
            "bias": "bias",
            "dark": "dark",
            "flat": f"flat_{exp.filter}",
            "light": f"{_SCIENCE_OBJECT.lower()}_{exp.filter}",
            "standard": f"std_{exp.filter}",
        }[exp.kind]
        exp.path = f"raw/{folder}/{stem}_{exp.seq:04d}.fits"
        mid = exp.start + timedelta(seconds=exp.exptime / 2)
        if exp.kind in ("light", "standard"):
            field_name = "science" if exp.kind == "light" else "standard"
            if field_name not in references:
                references[field_name] = exp.path  # first frame of a field: the nominal pointing
            else:
                exp.dx, exp.dy = rng.uniform(-opts.dither, opts.dither, 2)
                exp.rotation = float(rng.uniform(-opts.rotation, opts.rotation))
            exp.reference = references[field_name]
            ref = _wcs(*centres[field_name], 0.0, opts.shape)
            ny, nx = opts.shape
            exp.ra, exp.dec = (float(v) for v in ref.wcs_pix2world(
                _PRESCAN + (nx - 1) / 2 - exp.dx, (ny - 1) / 2 - exp.dy, 0))
            exp.airmass = _airmass(exp.ra, exp.dec, mid)
            if not exp.airmass <= _MAX_AIRMASS:
                raise ConfigError(
                    f"{exp.path} would be observed at airmass {exp.airmass:.2f} (> {_MAX_AIRMASS}); "
                    "the night is too long: lower n_science, n_standard or the exposure times"
                )
        else:  # calibrations: telescope parked at the zenith
            exp.ra, exp.dec, exp.airmass = _lst(mid), _LATITUDE, 1.0
    return log, centres


# ----------------------------------------------------------------------------- rendering


def _moffat_stamps(x: np.ndarray, y: np.ndarray, flux: np.ndarray, alpha: float, beta: float,
                   radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-integrated Moffat profiles (electrons) on square stamps of one radius.

    Returns the row and column of each stamp's first pixel and the stamps ``(m, n, n)``.
    """
    offsets = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    iy, ix = np.rint(y).astype(int), np.rint(x).astype(int)
    grid = (np.arange(-radius, radius + 1, dtype=np.float64)[:, None] + offsets[None, :]).ravel()
    sub_y = (iy - y)[:, None] + grid[None, :]  # (m, n * k)
    sub_x = (ix - x)[:, None] + grid[None, :]
    sub_y, sub_x = (sub_y / alpha).astype(np.float32), (sub_x / alpha).astype(np.float32)
    r2 = sub_y[:, :, None] ** 2 + sub_x[:, None, :] ** 2
    profile = np.exp(np.float32(-beta) * np.log1p(r2))
    n, k = 2 * radius + 1, _OVERSAMPLE
    pixels = profile.reshape(len(x), n, k, n, k).mean(axis=(2, 4), dtype=np.float64)
    norm = (beta - 1.0) / (math.pi * alpha**2)
    return iy - radius, ix - radius, pixels * (norm * flux)[:, None, None]


def _add_stars(image: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray,
               fwhm: float, beta: float) -> None:
    """Add Moffat stars (electrons) to ``image`` in place; stars off the image are skipped."""
    ny, nx = image.shape
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    # stamp radius: where the profile falls below 0.05 e-/pixel (flux lost beyond it << noise)
    threshold = 0.05
    ratio = np.maximum(flux * (beta - 1.0) / (math.pi * alpha**2 * threshold), 1.0)
    radii = np.clip(np.ceil(alpha * np.sqrt(ratio ** (1.0 / beta) - 1.0)), math.ceil(2 * fwhm), 120).astype(int)
    visible = (x > -radii) & (y > -radii) & (x < nx - 1 + radii) & (y < ny - 1 + radii)
    for radius in np.unique(radii[visible]):
        members = np.flatnonzero(visible & (radii == radius))
        batch = max(1, int(2e6 // (2 * radius + 1) ** 2 // _OVERSAMPLE**2))  # ~16 MB of profile
        for first in range(0, len(members), batch):
            idx = members[first:first + batch]
            rows, cols, stamps = _moffat_stamps(x[idx], y[idx], flux[idx], alpha, beta, int(radius))
            for y0, x0, stamp in zip(rows, cols, stamps):
                ya, xa = max(y0, 0), max(x0, 0)
                yb, xb = min(y0 + stamp.shape[0], ny), min(x0 + stamp.shape[1], nx)
                if ya < yb and xa < xb:
                    image[ya:yb, xa:xb] += stamp[ya - y0:yb - y0, xa - x0:xb - x0]


def _cosmic_rays(rng: np.random.Generator, shape: tuple[int, int],
                 expected: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Electrons deposited by cosmic-ray hits (compact) and tracks (straight lines).

    Returns ``(y, x, electrons)`` of every pixel hit, each pixel once, in raster order.
    """
    ny, nx = shape
    ys: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    es: list[np.ndarray] = []
    for _ in range(rng.poisson(expected)):
        x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
        if rng.uniform() < 0.6:  # a hit: one bright pixel and some charge in its neighbours
            core = rng.lognormal(math.log(2500.0), 0.6)
            share = np.where(rng.uniform(size=4) < 0.5, rng.uniform(0.05, 0.35, 4), 0.0)
            py = int(y0) + np.array([0, 0, 1, 0, -1])
            px = int(x0) + np.array([0, 1, 0, -1, 0])
            e = core * np.concatenate([[1.0], share])
        else:  # a track through the silicon at a grazing angle
            length = rng.uniform(3.0, 40.0)
            angle = rng.uniform(0, 2 * np.pi)
            per_pixel = rng.lognormal(math.log(600.0), 0.5)
            steps = np.linspace(0.0, length, int(length * 4) + 1)
            px = (x0 + steps * math.cos(angle)).astype(int)
            py = (y0 + steps * math.sin(angle)).astype(int)
            e = per_pixel / 4.0 * rng.uniform(0.7, 1.3, steps.size)
        keep = (px >= 0) & (px < nx) & (py >= 0) & (py < ny) & (e > 0)
        ys.append(py[keep])
        xs.append(px[keep])
        es.append(e[keep])
    if not es:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp), np.zeros(0)
    flat_index = np.concatenate(ys) * nx + np.concatenate(xs)
    pixels, where = np.unique(flat_index, return_inverse=True)
    electrons = np.bincount(where, weights=np.concatenate(es))
    return pixels // nx, pixels % nx, electrons


def _bleed(electrons: np.ndarray, full_well: float) -> None:
    """Move charge above the full well up and down its column (in place)."""
    ny = electrons.shape[0]
    for col in np.flatnonzero((electrons > full_well).any(axis=0)):
        v = electrons[:, col]
        while True:
            over = np.flatnonzero(v > full_well)
            if over.size == 0:
                break
            start = over[0]
            stop = start
            while stop + 1 < ny and v[stop + 1] > full_well:
                stop += 1
            excess = float(v[start:stop + 1].sum() - full_well * (stop + 1 - start))
            v[start:stop + 1] = full_well
            for direction, share in ((1, 0.5 * excess), (-1, 0.5 * excess)):
                row = stop + 1 if direction > 0 else start - 1
                while share > 0 and 0 <= row < ny:
                    room = full_well - v[row]
                    if room > 0:
                        take = min(room, share)
                        v[row] += take
                        share -= take
                    row += direction
            # charge pushed past the ends of the column is lost in the serial register


def _render(exp: _Exposure, opts: _Options, det: _Detector, stars: pd.DataFrame,
            rng: np.random.Generator, truth: dict[str, Any]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Raw uint16 pixels of one exposure, and the cosmic-ray hits ``(y, x, electrons)``."""
    ny, nx = opts.shape
    t = exp.exptime
    signal = np.zeros((ny, nx))
    if exp.kind == "flat":
        level = float(rng.uniform(0.30, 0.55)) * _FULL_WELL
        truth["flat_level"] = level
        signal += level * det.flats[exp.filter]
    elif exp.kind in ("light", "standard"):
        band = _BANDS[exp.filter]
        fwhm = float(rng.uniform(1.3, 2.1) * exp.airmass**0.6 / _PIXEL_SCALE)
        beta = float(rng.uniform(2.5, 3.5))
        sky_rate = _PIXEL_SCALE**2 * 10 ** (-0.4 * (band.sky - band.zeropoint))
        sky = float(sky_rate * t * exp.airmass**0.7 * rng.uniform(0.95, 1.05))
        gx, gy = (float(g) for g in rng.uniform(-0.04, 0.04, 2))
        yy = (np.arange(ny) - (ny - 1) / 2)[:, None] / ny
        xx = (np.arange(nx) - (nx - 1) / 2)[None, :] / nx
        signal += sky * (1.0 + gx * xx + gy * yy)
        field_name = "science" if exp.kind == "light" else "standard"
        here = stars[stars["field"] == field_name]
        wcs = _wcs(exp.ra, exp.dec, exp.rotation, opts.shape)
        x, y = _to_pixels(wcs, here["ra"].to_numpy(), here["dec"].to_numpy())
        mag = here[exp.filter].to_numpy()
        flux = t * 10 ** (-0.4 * (mag - band.zeropoint + band.extinction * exp.airmass))
        _add_stars(signal, x, y, flux, fwhm, beta)
        signal *= det.flats[exp.filter]
        truth.update(fwhm=fwhm, beta=beta, sky=sky, sky_gx=gx, sky_gy=gy)
    signal += det.dark * t
    electrons = rng.poisson(signal).astype(np.float64)
    del signal
    cosmics = _cosmic_rays(rng, (ny, nx), opts.cosmic_rate * ny * nx * (t + 5.0))
    electrons[cosmics[0], cosmics[1]] += cosmics[2]
    _bleed(electrons, _FULL_WELL)

    offset = float(rng.normal(0.0, 1.5))
    truth["bias_offset"] = offset
    raw = det.bias.astype(np.float64) + offset
    raw[:, _PRESCAN:_PRESCAN + nx] += electrons / opts.gain
    tail = electrons[:, -1] / opts.gain
    for j in range(_OVERSCAN_SKIP):  # charge-transfer tail in the first overscan columns
        raw[:, _PRESCAN + nx + j] += 2e-3 * 0.25**j * tail
    raw += rng.standard_normal(raw.shape, dtype=np.float32) * (opts.rdnoise / opts.gain)
    np.rint(raw, out=raw)
    np.clip(raw, 0, 65535, out=raw)
    return raw.astype(np.uint16), cosmics


# ----------------------------------------------------------------------------- writing


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp)`` to a temporary name, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_image(path: Path, data: np.ndarray, header: fits.Header) -> None:
    hdu = fits.PrimaryHDU(data=data)  # uint16 gets BSCALE/BZERO right after NAXISn, as cameras write it
    hdu.header.extend(header.cards)
    _atomic(path, hdu.writeto)


def _header(exp: _Exposure, opts: _Options, geometry: dict[str, Any]) -> fits.Header:
    h = fits.Header()
    mid = exp.start + timedelta(seconds=exp.exptime / 2)
    obj = {
        "bias": "bias",
        "dark": "dark",
        "flat": f"dome flat {exp.filter}",
        "light": _SCIENCE_OBJECT,
        "standard": _STANDARD_OBJECT,
    }[exp.kind]
    cards: list[tuple[str, Any, str]] = [
        ("BUNIT", "ADU", "pixel values are raw ADU"),
        ("OBSERVAT", "daskred simulated observatory", "observatory"),
        ("TELESCOP", "SIM 1.0m", "telescope"),
        ("INSTRUME", "SIMCAM", "instrument"),
        ("DETECTOR", "SIM CCD", "detector"),
        ("LATITUDE", _LATITUDE, "site latitude, degrees"),
        ("LONGITUD", _LONGITUDE, "site east longitude, degrees"),
        ("ALTITUDE", _ALTITUDE, "site altitude, meters"),
        ("IMAGEID", exp.seq, "image number within the night"),
        ("IMAGETYP", _IMAGETYP[exp.kind], "bias, dark, flat, object, standard"),
        ("OBJECT", obj, "object name"),
        ("FILTER", exp.filter, "filter in the beam"),
        ("EXPTIME", exp.exptime, "exposure time, seconds"),
        ("DATE-OBS", _iso(exp.start), "UTC start of exposure"),
        ("MJD-OBS", round(_jd(exp.start) - 2400000.5, 8), "modified Julian date of the start"),
        ("LST", _sexagesimal(_lst(mid), hours=True), "local sidereal time at mid-exposure"),
        ("RA", _sexagesimal(exp.ra, hours=True), "telescope right ascension (ICRS)"),
        ("DEC", _sexagesimal(exp.dec, hours=False), "telescope declination (ICRS)"),
        ("AIRMASS", round(exp.airmass, 6), "airmass (sec z) at mid-exposure"),
        ("GAIN", opts.gain, "electrons per ADU"),
        ("RDNOISE", opts.rdnoise, "read noise, electrons"),
        ("SATURATE", geometry["saturate"], "saturation level, ADU"),
        ("CCDSUM", "1 1", "on-chip binning"),
        ("PRESCAN", _PRESCAN, "prescan columns"),
        ("OVERSCAN", _OVERSCAN, "overscan columns"),
        ("TRIMSEC", geometry["trimsec"], "light-sensitive pixels"),
        ("DATASEC", geometry["trimsec"], "light-sensitive pixels"),
        ("BIASSEC", geometry["biassec"], "overscan region for the bias level"),
    ]
    for key, value, comment in cards:
        h[key] = (value, comment)
    if exp.kind in ("light", "standard"):
        for key, value in _wcs_cards(exp.ra, exp.dec, exp.rotation, opts.shape).items():
            h[key] = value
    h["COMMENT"] = f"Simulated raw frame (daskred.simulate, seed {opts.seed}); truth in ../../truth/"
    return h


def _prepare(directory: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a folder; pass a folder path to simulate()")
    raw, truth = directory / "raw", directory / "truth"
    occupied = [p for p in (raw, truth) if p.exists() and any(p.iterdir())]
    if not occupied:
        return
    if not overwrite:
        raise ConfigError(
            f"{occupied[0]} is not empty; pass overwrite=True to replace an earlier simulation "
            "or choose an empty folder"
        )
    if not (truth / "parameters.json").is_file():
        raise ConfigError(
            f"{directory} holds files that simulate() did not write (no truth/parameters.json); "
            "refusing to delete them, choose an empty folder"
        )
    for p in (raw, truth):
        if p.exists():
            shutil.rmtree(p)


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n"))


# ----------------------------------------------------------------------------- public


def simulate(
    directory: str | os.PathLike[str],
    *,
    scale: Scale = "small",
    shape: tuple[int, int] | None = None,
    nights: int = 2,
    filters: Sequence[str] = ("V", "R"),
    n_bias: int = 5,
    n_dark: int = 3,
    n_flat: int = 5,
    n_science: int = 4,
    n_standard: int = 3,
    exptime: float = 60.0,
    exptime_dark: float = 120.0,
    exptime_flat: float = 5.0,
    exptime_standard: float = 10.0,
    n_stars: int | None = None,
    dither: float | None = None,
    rotation: float = 0.3,
    cosmic_rate: float = 1.5e-6,
    gain: float = 1.5,
    rdnoise: float = 6.0,
    seed: int = 0,
    start_night: str | date = "2024-03-12",
    overwrite: bool = False,
    progress: Callable[[int, int, Path], None] | None = None,
) -> SimulatedDataset:
    """Write a realistic raw multi-night CCD dataset and its truth.

    Every night has afternoon biases, darks and dome flats (one series per filter), then
    dithered science frames of one field in every filter, interleaved with visits to a
    standard-star field at increasing airmass (every filter at each visit).  Frames are
    rendered and written one at a time, each to a temporary name renamed into place.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder to write ``raw/`` and ``truth/`` into (created if needed).
    scale : {"tiny", "small", "medium", "large"}
        Imaging-area size preset: 101 x 131, 260 x 300, 1030 x 1200 or 4112 x 4096 pixels
        (rows x columns); prescan (10) and overscan (30) columns come on top.
    shape : tuple of int, optional
        Explicit ``(ny, nx)`` of the imaging area, at least (48, 48); overrides ``scale``.
    nights : int
        Number of consecutive nights.
    filters : sequence of str
        Filters, from U, B, V, R, I, g, r, i, z.
    n_bias, n_dark, n_flat : int
        Calibration frames per night (``n_flat`` per filter).
    n_science : int
        Dithered science frames per filter and night.
    n_standard : int
        Visits to the standard field per night, at airmasses from near transit to ~2.1;
        each visit takes one frame per filter.
    exptime, exptime_dark, exptime_flat, exptime_standard : float or Quantity
        Exposure times in seconds (science, dark, flat, standard).
    n_stars : int, optional
        Stars in the science-field catalog; by default 1.5 per 1000 pixels of the area the
        dithers can reach.
    dither : float or Quantity, optional
        Largest pointing offset between frames, pixels; by default 4 % of the smaller side
        plus 3 (at most 40).
    rotation : float or Quantity
        Largest field rotation of a frame relative to the first one of its field, degrees.
    cosmic_rate : float
        Cosmic-ray events per pixel per second (exposure time plus 5 s of readout).
    gain : float or Quantity
        Electrons per ADU.
    rdnoise : float or Quantity
        Read noise, electrons.
    seed : int
        Seed of every random draw: the same seed and options give byte-identical files.
    start_night : str or datetime.date
        Local date of the first evening, ``"YYYY-MM-DD"``.
    overwrite : bool
        Replace ``raw/`` and ``truth/`` of an earlier simulation in ``directory``.
    progress : callable, optional
        Called as ``progress(done, total, path)`` after each raw file is written.

    Returns
    -------
    SimulatedDataset
        Paths written and the scalar truth; ``.frames()``, ``.stars()`` and ``.select()``
        read the truth tables.

    Raises
    ------
    ConfigError
        An option is out of range, the frames do not fit into the nights, or ``directory``
        already holds data (without ``overwrite``).

    Notes
    -----
    Computes and writes eagerly (this is a data generator, not a lazy stage).  Memory holds
    one frame plus the detector truth (bias, dark and one flat per filter), whatever the
    number of frames, so ``scale="large"`` with more frames makes gigabytes in bounded
    memory.  See the module documentation for the layout, truth files and physical model.

    Examples
    --------
    >>> import daskred as dr
    >>> ds = dr.simulate("sim/", scale="tiny", nights=1, filters=["V"])   # doctest: +SKIP
    >>> ds.select(imagetyp="bias")[:2]                                    # doctest: +SKIP
    [PosixPath('sim/raw/20240312/bias_0001.fits'), PosixPath('sim/raw/20240312/bias_0002.fits')]
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise ConfigError(f"directory must be a path, got {directory!r}")
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite must be True or False, got {overwrite!r}")
    if progress is not None and not callable(progress):
        raise ConfigError(f"progress must be a callable progress(done, total, path), got {progress!r}")
    opts = _validate(
        scale=scale,
        shape=shape,
        nights=nights,
        filters=filters,
        counts={"n_bias": n_bias, "n_dark": n_dark, "n_flat": n_flat, "n_science": n_science,
                "n_standard": n_standard},
        exptimes={"exptime": exptime, "exptime_dark": exptime_dark, "exptime_flat": exptime_flat,
                  "exptime_standard": exptime_standard},
        n_stars=n_stars,
        dither=dither,
        rotation=rotation,
        cosmic_rate=cosmic_rate,
        gain=gain,
        rdnoise=rdnoise,
        seed=seed,
        start_night=start_night,
    )
    root = Path(directory)
    seeds = np.random.SeedSequence(opts.seed)
    rng_plan, rng_catalog, rng_detector = (np.random.default_rng(s) for s in seeds.spawn(3))
    log, centres = _plan(opts, rng_plan)  # raises before anything is written
    _prepare(root, overwrite)

    ny, nx = opts.shape
    raw_shape = (ny, _PRESCAN + nx + _OVERSCAN)
    trimsec = f"[{_PRESCAN + 1}:{_PRESCAN + nx},1:{ny}]"
    biassec = f"[{_PRESCAN + nx + _OVERSCAN_SKIP + 1}:{raw_shape[1]},1:{ny}]"
    saturation_adu = min(_BIAS_LEVEL + _FULL_WELL / opts.gain, 65535.0)
    saturate = float(math.floor(saturation_adu - 5 * opts.rdnoise / opts.gain - 5))
    geometry = {"trimsec": trimsec, "biassec": biassec, "saturate": saturate}
    raw_dir, truth_dir = root / "raw", root / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)

    stars = _make_catalog(opts, rng_catalog, centres)
    det = _make_detector(opts, rng_detector)

    # parameters first: they mark the folder as simulate() output, so an interrupted run can be
    # replaced with overwrite=True; frames.csv, written last, marks a complete dataset
    zeropoints = {f: _BANDS[f].zeropoint for f in opts.filters}
    extinction = {f: _BANDS[f].extinction for f in opts.filters}
    nights_list = tuple((opts.start_night + timedelta(days=i)).isoformat() for i in range(opts.nights))
    parameters = {
        "generator": "daskred.simulate",
        "seed": opts.seed,
        "flux_equation": "flux_e = exptime * 10**(-0.4 * (mag - zeropoint_e + extinction * airmass))",
        "zeropoint_e": zeropoints,
        "zeropoint_adu": {f: zp - 2.5 * math.log10(opts.gain) for f, zp in zeropoints.items()},
        "extinction": extinction,
        "sky_mag_per_arcsec2": {f: _BANDS[f].sky for f in opts.filters},
        "colour_model": {f"{f}-V": _BANDS[f].colour for f in opts.filters} | {"of": "B-V"},
        "gain": opts.gain,
        "rdnoise": opts.rdnoise,
        "bias_level": _BIAS_LEVEL,
        "full_well": _FULL_WELL,
        "saturate": saturate,
        "dark_mean": float(det.dark.mean()),
        "pixel_scale": _PIXEL_SCALE,
        "shape": list(opts.shape),
        "raw_shape": list(raw_shape),
        "prescan": _PRESCAN,
        "overscan": _OVERSCAN,
        "trimsec": trimsec,
        "biassec": biassec,
        "site": {"latitude": _LATITUDE, "longitude": _LONGITUDE, "altitude": _ALTITUDE},
        "fields": {
            name: {"object": obj, "ra": centres[name][0], "dec": centres[name][1]}
            for name, obj in (("science", _SCIENCE_OBJECT), ("standard", _STANDARD_OBJECT))
        },
        "nights": list(nights_list),
        "filters": list(opts.filters),
        "options": {
            "n_bias": opts.n_bias, "n_dark": opts.n_dark, "n_flat": opts.n_flat, "n_science": opts.n_science,
            "n_standard": opts.n_standard, "exptime": opts.exptime, "exptime_dark": opts.exptime_dark,
            "exptime_flat": opts.exptime_flat, "exptime_standard": opts.exptime_standard,
            "dither": opts.dither, "rotation": opts.rotation, "cosmic_rate": opts.cosmic_rate,
            "start_night": opts.start_night.isoformat(),
        },
    }
    parameters_path = truth_dir / "parameters.json"
    _atomic(parameters_path, lambda tmp: tmp.write_text(json.dumps(parameters, indent=2) + "\n"))

    # truth images
    def truth_header(unit: str, what: str) -> fits.Header:
        h = fits.Header()
        h["BUNIT"] = unit
        h["TRUTH"] = what
        h["TRIMSEC"] = trimsec
        h["BIASSEC"] = biassec
        h["GAIN"] = opts.gain
        return h

    paths = {
        "bias": truth_dir / "bias.fits",
        "dark": truth_dir / "dark.fits",
        "flats": {f: truth_dir / f"flat_{f}.fits" for f in opts.filters},
    }
    _write_image(paths["bias"], det.bias, truth_header("ADU", "noiseless bias, offset 0, raw geometry"))
    _write_image(paths["dark"], det.dark, truth_header("electron/s", "dark current of the imaging area"))
    for f, p in paths["flats"].items():
        _write_image(p, det.flats[f], truth_header("", f"flat {f}, mean 1"))
    stars_path, standards_path = truth_dir / "stars.csv", truth_dir / "standards.csv"
    _write_csv(stars_path, stars)
    std = stars[stars["standard"]]
    _write_csv(standards_path, std[["name", "ra", "dec", *opts.filters, *(f"err_{f}" for f in opts.filters)]])

    # frames, one at a time
    rows: list[dict[str, Any]] = []
    written: list[Path] = []
    refs = {name: _wcs(*centres[name], 0.0, opts.shape) for name in ("science", "standard")}
    cosmics_path = truth_dir / "cosmics.csv"
    cosmics_tmp = cosmics_path.with_name(f".{cosmics_path.name}.{os.getpid()}.tmp")
    try:
        with open(cosmics_tmp, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["path", "x", "y", "electrons"])
            for number, exp in enumerate(log):
                frame_seed = np.random.SeedSequence(opts.seed, spawn_key=(7, exp.night, exp.seq))
                truth: dict[str, Any] = {}
                data, cosmics = _render(exp, opts, det, stars, np.random.default_rng(frame_seed), truth)
                path = root / exp.path
                _write_image(path, data, _header(exp, opts, geometry))
                written.append(path)
                hy, hx, he = cosmics
                writer.writerows(
                    (exp.path, xi, yi, repr(round(ei, 2))) for yi, xi, ei in zip(hy.tolist(), hx.tolist(), he.tolist())
                )
                row = _frame_row(exp, opts, truth, det, int(len(hy)), refs)
                rows.append(row)
                if progress is not None:
                    progress(number + 1, len(log), path)
        os.replace(cosmics_tmp, cosmics_path)
    except BaseException:
        cosmics_tmp.unlink(missing_ok=True)
        raise
    frames_path = truth_dir / "frames.csv"
    _write_csv(frames_path, pd.DataFrame(rows))
    return SimulatedDataset(
        directory=root,
        raw_dir=raw_dir,
        truth_dir=truth_dir,
        files=tuple(written),
        nights=nights_list,
        filters=opts.filters,
        shape=opts.shape,
        raw_shape=raw_shape,
        trimsec=trimsec,
        biassec=biassec,
        gain=opts.gain,
        rdnoise=opts.rdnoise,
        bias_level=_BIAS_LEVEL,
        saturate=saturate,
        zeropoints=zeropoints,
        extinction=extinction,
        seed=opts.seed,
        parameters_path=parameters_path,
        stars_path=stars_path,
        standards_path=standards_path,
        frames_path=frames_path,
        cosmics_path=cosmics_path,
        bias_path=paths["bias"],
        dark_path=paths["dark"],
        flat_paths=paths["flats"],
    )


def _frame_row(exp: _Exposure, opts: _Options, truth: dict[str, Any], det: _Detector, n_cosmic_pixels: int,
               refs: dict[str, WCS]) -> dict[str, Any]:
    ny, nx = opts.shape
    on_sky = exp.kind in ("light", "standard")
    biassec_cols = slice(_PRESCAN + nx + _OVERSCAN_SKIP, _PRESCAN + nx + _OVERSCAN)
    overscan = float(det.bias[:, biassec_cols].astype(np.float64).mean()) + truth["bias_offset"]
    row: dict[str, Any] = {
        "path": exp.path,
        "night": (opts.start_night + timedelta(days=exp.night)).isoformat(),
        "seq": exp.seq,
        "imagetyp": exp.kind,
        "object": {"light": _SCIENCE_OBJECT, "standard": _STANDARD_OBJECT}.get(exp.kind, exp.kind),
        "filter": exp.filter,
        "exptime": exp.exptime,
        "date_obs": _iso(exp.start),
        "airmass": round(exp.airmass, 6),
        "bias_offset": truth["bias_offset"],
        "overscan_level": overscan,
        "flat_level": truth.get("flat_level", math.nan),
        "sky": truth.get("sky", math.nan),
        "sky_gx": truth.get("sky_gx", math.nan),
        "sky_gy": truth.get("sky_gy", math.nan),
        "fwhm": truth.get("fwhm", math.nan),
        "beta": truth.get("beta", math.nan),
        "crval1": exp.ra if on_sky else math.nan,
        "crval2": exp.dec if on_sky else math.nan,
        "rotation": exp.rotation if on_sky else math.nan,
        "dx": exp.dx if on_sky else math.nan,
        "dy": exp.dy if on_sky else math.nan,
    }
    if on_sky and exp.path == exp.reference:
        coeffs = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    elif on_sky:
        ref = refs["science" if exp.kind == "light" else "standard"]
        coeffs = _affine(ref, _wcs(exp.ra, exp.dec, exp.rotation, opts.shape), opts.shape)
        a, b, c, d, tx, ty = coeffs
        cx, cy = (nx - 1) / 2, (ny - 1) / 2  # where the reference centre lands, relative to the centre
        row["dx"], row["dy"] = a * cx + b * cy + tx - cx, c * cx + d * cy + ty - cy
    else:
        coeffs = np.full(6, math.nan)
    row.update(zip(("a", "b", "c", "d", "tx", "ty"), (float(v) for v in coeffs)))
    row["reference"] = exp.reference
    row["n_cosmic_pixels"] = n_cosmic_pixels
    return row

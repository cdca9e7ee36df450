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

Coordinates in the truth tables (``x``, ``y``) are 0-based pixels of the trimmed imaging
area (``TRIMSEC``); add the prescan width (``parameters.json`` ``prescan``) to ``x`` for raw
array columns.  The WCS in a raw header describes the raw array (``CRPIX1`` includes the
prescan), as a telescope would write it.

The raw headers are described in :mod:`daskred.simulate_observe`, and the physical model the pixels
follow (flux equation, PSF, sky, flat, dark, noise, cosmic rays, saturation, bias) in
:mod:`daskred.simulate_render`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from astropy.io import fits

from .errors import ConfigError
from .simulate_observe import (
    _ALTITUDE,
    _LATITUDE,
    _LONGITUDE,
    _SCIENCE_OBJECT,
    _STANDARD_OBJECT,
    _frame_row,
    _header,
    _plan,
)
from .simulate_render import (
    _BANDS,
    _BIAS_LEVEL,
    _FULL_WELL,
    _OVERSCAN,
    _OVERSCAN_SKIP,
    _PIXEL_SCALE,
    _PRESCAN,
    _make_catalog,
    _make_detector,
    _render,
    _wcs,
)

__all__ = ["simulate", "SimulatedDataset"]

Scale = Literal["tiny", "small", "medium", "large"]

#: Imaging-area shape ``(ny, nx)`` of each scale preset (prescan and overscan come on top).
SCALES: dict[str, tuple[int, int]] = {
    "tiny": (101, 131),
    "small": (260, 300),
    "medium": (1030, 1200),
    "large": (4112, 4096),
}


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
    memory.  See the module documentation for the layout and truth files, :mod:`daskred.simulate_observe`
    for the headers and :mod:`daskred.simulate_render` for the physical model.

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

"""Nights of the simulated observatory: site, clock, observing plan, headers and truth rows.

The observing side of :func:`daskred.simulate.simulate`: sidereal time and airmass at the
site, the plan of every night (afternoon biases, darks and dome flats, then dithered science
frames interleaved with visits to a standard field at increasing airmass) as a list of
exposures without pixels, the FITS header the camera writes for each of them and their rows
of the ``frames.csv`` truth table.  The pixels come from :mod:`daskred.simulate_render`.

Headers
-------
Raw headers carry ``BITPIX=16, BZERO=32768, BSCALE=1`` and ``BUNIT, OBSERVAT, TELESCOP,
INSTRUME, DETECTOR, LATITUDE, LONGITUD`` (east positive) ``, ALTITUDE, IMAGEID, IMAGETYP``
(``BIAS, DARK, FLAT, OBJECT, STANDARD``) ``, OBJECT, FILTER, EXPTIME, DATE-OBS`` (UTC start,
``YYYY-MM-DDThh:mm:ss.sss``) ``, MJD-OBS, LST, RA, DEC`` (sexagesimal strings) ``, AIRMASS,
GAIN, RDNOISE, SATURATE, CCDSUM, PRESCAN, OVERSCAN, TRIMSEC, DATASEC, BIASSEC``; light and
standard frames add a TAN WCS (``WCSAXES, CTYPEi, CUNITi, CRVALi, CRPIXi, CDi_j, RADESYS,
EQUINOX``).  Calibration frames point at the zenith (``AIRMASS = 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .errors import ConfigError
from .simulate_render import _OVERSCAN, _OVERSCAN_SKIP, _PRESCAN, _Detector, _affine, _wcs, _wcs_cards

if TYPE_CHECKING:
    from .simulate import _Options

# Site (east longitude, degrees; a dark site in Arizona), fields and observing cadence.
_LATITUDE = 35.0
_LONGITUDE = -111.5
_ALTITUDE = 2200.0
_SCIENCE_DEC = 30.0
_STANDARD_DEC = 1.0
_SCIENCE_OBJECT = "SIMFIELD"
_STANDARD_OBJECT = "SIMSTD"
_READOUT = 25.0  # seconds between the end of one exposure and the start of the next
_BIAS_CADENCE = 15.0
_SIDEREAL_DAY = 86164.0905  # seconds
_MAX_AIRMASS = 3.5
_IMAGETYP = {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "light": "OBJECT", "standard": "STANDARD"}


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


# ----------------------------------------------------------------------------- headers and truth rows


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

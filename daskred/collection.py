"""Header collection: find FITS files, read their headers, classify and group frames.

:func:`scan` reads headers only (never pixel data) and returns one row per image HDU
with normalised columns.  Real observatories write headers inconsistently, so every
concept (frame type, filter, exposure time, ...) is looked up through a list of
candidate keywords, and frame-type values are mapped onto five classes.  Both lists
can be extended or overridden by the user (and by the ``[collection]`` table of the
pipeline configuration).
"""

from __future__ import annotations

import glob as _glob
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from astropy.io import fits

from .errors import ConfigError, FitsFileError

__all__ = ["scan", "DEFAULT_KEYWORDS", "DEFAULT_CLASSES", "FITS_SUFFIXES", "summarize"]

#: File name endings that :func:`scan` looks at when given a directory.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz", ".fit.gz")

#: Candidate header keywords for each normalised column, tried in order.
DEFAULT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "imagetyp": ("IMAGETYP", "OBSTYPE", "IMGTYPE", "FRAMETYP", "FRAMETYPE", "EXPTYPE"),
    "filter": ("FILTER", "FILTNAME", "FILTNAM", "FILTER1", "FILT1", "INSFILTE", "FILTERS"),
    "exptime": ("EXPTIME", "EXPOSURE", "EXP_TIME", "ITIME", "EXPOSED", "TEXP"),
    "date_obs": ("DATE-OBS", "DATE_OBS", "DATEOBS"),
    "time_obs": ("UTCSTART", "UTSTART", "UT-START", "UTC-OBS", "TIME-OBS", "UT", "UTC", "TIME"),
    "mjd_obs": ("MJD-OBS", "MJD_OBS", "MJD"),
    "jd": ("JD", "JD-OBS"),
    "object": ("OBJECT", "OBJNAME", "TARGNAME", "TARGET"),
    "gain": ("GAIN", "EGAIN", "CCDGAIN", "GAIN1", "AGAIN_01"),
    "rdnoise": ("RDNOISE", "READNOIS", "READNOISE", "RON", "RDNOISE1", "ARDNS_01"),
    "saturate": ("SATURATE", "SATLEVEL", "MAXLIN", "SATURATN"),
    "airmass": ("AIRMASS", "SECZ", "AMSTART"),
    "ra": ("RA", "OBJCTRA", "TELRA", "RA_OBJ", "CRVAL1"),
    "dec": ("DEC", "OBJCTDEC", "TELDEC", "DEC_OBJ", "CRVAL2"),
    "biassec": ("BIASSEC", "BIAS01"),
    "trimsec": ("TRIMSEC", "TRIM01"),
    "datasec": ("DATASEC",),
    "longitude": ("LONGITUD", "SITELONG", "LONG-OBS", "OBSGEO-L", "LONGITUDE"),
}

#: Frame-type header values (lowercase, spaces collapsed) mapped to the five classes.
DEFAULT_CLASSES: dict[str, str] = {
    **{v: "bias" for v in ("bias", "zero", "bias frame", "zero frame", "bias_frame", "biases", "zeros")},
    **{v: "dark" for v in ("dark", "dark frame", "dark_frame", "darks", "dark current")},
    **{
        v: "flat"
        for v in (
            "flat", "flats", "flat frame", "flat_frame", "flat field", "flatfield", "flat-field",
            "skyflat", "sky flat", "sky_flat", "domeflat", "dome flat", "dome_flat", "twflat",
            "twilight flat", "twilight", "lampflat", "lamp flat", "dflat", "sflat", "tflat",
        )
    },
    **{
        v: "light"
        for v in ("light", "light frame", "light_frame", "object", "science", "sci", "obj", "target", "lights")
    },
    **{v: "standard" for v in ("standard", "std", "standard star", "std star", "stdstar", "photstd")},
}

_CLASSES = ("bias", "dark", "flat", "light", "standard")
_OBJECT_HINTS = (
    (re.compile(r"\b(sky|dome|twi\w*|lamp)?\s*flats?\b", re.I), "flat"),
    (re.compile(r"^\s*(bias|zero)s?\b", re.I), "bias"),
    (re.compile(r"^\s*darks?\b", re.I), "dark"),
)


def _keyword_value(header: fits.Header, names: Sequence[str]) -> Any:
    for name in names:
        if name in header:
            value = header[name]
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            return value
    return None


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return math.nan


def _angle_deg(value: Any, *, hours: bool) -> float:
    """Header RA/Dec as degrees: numbers are degrees, sexagesimal RA strings are hours."""
    if value is None:
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    number = _as_float(text)
    if not math.isnan(number):
        return number
    parts = re.split(r"[:\s hdms°'\"]+", text.strip(" +"))
    parts = [p for p in parts if p]
    try:
        d, m, s = (float(parts[i]) if i < len(parts) else 0.0 for i in range(3))
    except ValueError:
        return math.nan
    sign = -1.0 if text.lstrip().startswith("-") else 1.0
    deg = sign * (abs(d) + m / 60.0 + s / 3600.0)
    return deg * 15.0 if hours else deg


def _parse_datetime(header: fits.Header, keywords: Mapping[str, Sequence[str]]) -> datetime | None:
    date = _keyword_value(header, keywords["date_obs"])
    if isinstance(date, str):
        text = date.strip().replace(" ", "T")
        if "T" not in text:
            clock = _keyword_value(header, keywords["time_obs"])
            if isinstance(clock, str) and re.match(r"^\d{1,2}:\d{2}(:\d{2}(\.\d*)?)?$", clock.strip()):
                text = f"{text}T{clock.strip()}"
            elif isinstance(clock, (int, float)) and 0 <= float(clock) < 24:
                text = f"{text}T00:00:00"
                return datetime.fromisoformat(text) + timedelta(hours=float(clock))
        try:
            moment = datetime.fromisoformat(text.rstrip("Z"))
            return moment.replace(tzinfo=None)
        except ValueError:
            pass
    mjd = _as_float(_keyword_value(header, keywords["mjd_obs"]))
    if math.isnan(mjd):
        jd = _as_float(_keyword_value(header, keywords["jd"]))
        mjd = jd - 2400000.5 if not math.isnan(jd) else math.nan
    if not math.isnan(mjd):
        return datetime(1858, 11, 17) + timedelta(days=mjd)
    return None


def _night(moment: datetime | None, longitude: float, offset_hours: float | None) -> str:
    """Local date of the evening: shift UT to local solar time, then by 12 h (noon boundary)."""
    if moment is None:
        return ""
    hours = offset_hours if offset_hours is not None else (0.0 if math.isnan(longitude) else longitude / 15.0)
    return (moment + timedelta(hours=hours) - timedelta(hours=12)).date().isoformat()


def _binning(header: fits.Header) -> str:
    ccdsum = header.get("CCDSUM")
    if isinstance(ccdsum, str) and ccdsum.split():
        parts = ccdsum.split()
        if len(parts) >= 2:
            return f"{parts[0]}x{parts[1]}"
    for kx, ky in (("XBINNING", "YBINNING"), ("CCDXBIN", "CCDYBIN"), ("BINX", "BINY"), ("HBIN", "VBIN")):
        if kx in header and ky in header:
            return f"{int(header[kx])}x{int(header[ky])}"
    binning = header.get("BINNING")
    if isinstance(binning, str) and re.match(r"^\s*\d+\s*[x* ]\s*\d+\s*$", binning):
        a, b = re.findall(r"\d+", binning)
        return f"{a}x{b}"
    if isinstance(binning, (int, float)):
        return f"{int(binning)}x{int(binning)}"
    return "1x1"


def _classify(
    raw: Any,
    object_name: str,
    exptime: float,
    classes: Mapping[str, str],
    standards: Sequence[str],
) -> tuple[str, str]:
    """Return (class, reason) for one frame."""
    value = re.sub(r"\s+", " ", str(raw or "").strip().lower())
    cls = classes.get(value)
    if cls is None:
        # values such as 'Light Frame' or 'FLAT-V': try the words
        for word in re.split(r"[\s_\-/]+", value):
            if word in classes:
                cls = classes[word]
                break
    if cls is None and value == "" and object_name:
        cls = "light"
    if cls == "dark" and exptime == 0.0:
        return "bias", "zero-second dark treated as bias"
    if cls == "light" and object_name:
        for pattern, hinted in _OBJECT_HINTS:
            if pattern.search(object_name):
                return hinted, f"{value or 'untyped'} frame with OBJECT={object_name!r}"
        if any(re.search(p, object_name, re.I) for p in standards):
            return "standard", "OBJECT matches a standard-field pattern"
    if cls is None:
        return "unknown", f"frame type {raw!r} not recognised; map it with classes={{'{value}': 'light'}}"
    return cls, ""


@dataclass(frozen=True)
class _Settings:
    keywords: dict[str, tuple[str, ...]]
    classes: dict[str, str]
    standards: tuple[str, ...]
    extra: tuple[str, ...]
    night_offset: float | None


def _rows_for_file(path: str, settings: _Settings) -> list[dict[str, Any]]:
    rows = []
    stat = os.stat(path)
    with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
        for index, hdu in enumerate(hdul):
            header = hdu.header
            naxis = int(header.get("ZNAXIS", header.get("NAXIS", 0))) if isinstance(hdu, fits.CompImageHDU) \
                else int(header.get("NAXIS", 0))
            if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)) and not isinstance(hdu, fits.CompImageHDU):
                continue
            if naxis < 2:
                continue
            if naxis > 2 and any(int(header.get(f"NAXIS{k}", 1)) != 1 for k in range(3, naxis + 1)):
                continue  # data cubes are not CCD frames
            nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
            merged = header
            if index > 0:
                # extensions inherit keywords such as IMAGETYP or DATE-OBS from the primary header
                merged = hdul[0].header.copy()
                merged.update({k: v for k, v in header.items() if k not in ("", "COMMENT", "HISTORY")})
            rows.append(_normalise(path, index, hdu, merged, nx, ny, stat, settings))
    return rows


def _pixel_dtype(hdu: Any) -> str:
    header = hdu.header
    bitpix = int(header.get("ZBITPIX", header["BITPIX"])) if isinstance(hdu, fits.CompImageHDU) else int(header["BITPIX"])
    bzero = float(header.get("BZERO", 0.0))
    bscale = float(header.get("BSCALE", 1.0))
    base = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32", -64: "float64"}.get(bitpix, f"bitpix{bitpix}")
    if bscale == 1.0 and bitpix == 16 and bzero == 32768:
        return "uint16"
    if bscale == 1.0 and bitpix == 32 and bzero == 2**31:
        return "uint32"
    if bscale != 1.0 or (bzero != 0.0 and bitpix > 0):
        return f"{base} (scaled)"
    return base


def _layout(hdu: Any) -> dict[str, Any]:
    """Where and how the pixels are stored, so readers can skip header parsing."""
    header = hdu.header
    compressed = isinstance(hdu, fits.CompImageHDU)
    blank = header.get("BLANK")
    return {
        "data_offset": -1 if compressed else int(hdu.fileinfo()["datLoc"]),
        "bitpix": int(header.get("ZBITPIX", header["BITPIX"]) if compressed else header["BITPIX"]),
        "bzero": float(header.get("BZERO", 0.0)),
        "bscale": float(header.get("BSCALE", 1.0)),
        "blank": float(blank) if isinstance(blank, (int, float)) else math.nan,
    }


def _normalise(path: str, index: int, hdu: Any, header: fits.Header, nx: int, ny: int,
               stat: os.stat_result, settings: _Settings) -> dict[str, Any]:
    kw = settings.keywords
    exptime = _as_float(_keyword_value(header, kw["exptime"]))
    obj = str(_keyword_value(header, kw["object"]) or "").strip()
    raw_type = _keyword_value(header, kw["imagetyp"])
    imagetyp, reason = _classify(raw_type, obj, exptime, settings.classes, settings.standards)
    moment = _parse_datetime(header, kw)
    longitude = _as_float(_keyword_value(header, kw["longitude"]))
    filt = str(_keyword_value(header, kw["filter"]) or "").strip()
    section = {k: str(_keyword_value(header, kw[k]) or "").strip() for k in ("biassec", "trimsec", "datasec")}
    row: dict[str, Any] = {
        "path": path,
        "hdu": index,
        "extname": str(header.get("EXTNAME", "")) if index > 0 else "",
        "ny": ny,
        "nx": nx,
        "shape": f"{ny}x{nx}",
        "dtype": _pixel_dtype(hdu),
        "compressed": isinstance(hdu, fits.CompImageHDU),
        **_layout(hdu),
        "imagetyp": imagetyp,
        "imagetyp_raw": "" if raw_type is None else str(raw_type).strip(),
        "classified_by": reason,
        "filter": "" if imagetyp in ("bias", "dark") else filt,
        "exptime": exptime,
        "date_obs": moment.isoformat(timespec="milliseconds") if moment else "",
        "night": _night(moment, longitude, settings.night_offset),
        "object": obj,
        "binning": _binning(header),
        "gain": _as_float(_keyword_value(header, kw["gain"])),
        "rdnoise": _as_float(_keyword_value(header, kw["rdnoise"])),
        "saturate": _as_float(_keyword_value(header, kw["saturate"])),
        "airmass": _as_float(_keyword_value(header, kw["airmass"])),
        "ra": _angle_deg(_keyword_value(header, kw["ra"]), hours=True),
        "dec": _angle_deg(_keyword_value(header, kw["dec"]), hours=False),
        **section,
        "size": stat.st_size,
        "mtime": stat.st_mtime_ns,
    }
    for key in settings.extra:
        row[_extra_column(key, row)] = header.get(key.upper())
    return row


def _extra_column(key: str, normalised: Mapping[str, Any]) -> str:
    """Column name of an extra keyword: lowercase, ``_raw`` appended on a clash."""
    name = key.lower()
    return f"{name}_raw" if name in normalised else name


def _expand(source: str | os.PathLike | Iterable[str | os.PathLike], recursive: bool) -> list[str]:
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[str] = []
    for item in items:
        text = os.fspath(item)
        if os.path.isdir(text):
            pattern = "**/*" if recursive else "*"
            for candidate in sorted(Path(text).glob(pattern)):
                name = candidate.name.lower()
                if candidate.is_file() and name.endswith(FITS_SUFFIXES) and not name.startswith("."):
                    paths.append(str(candidate))
        elif any(ch in text for ch in "*?["):
            paths.extend(sorted(p for p in _glob.glob(text, recursive=True) if os.path.isfile(p)))
        else:
            paths.append(text)
    return paths


def scan(
    source: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    keywords: Mapping[str, str | Sequence[str]] | None = None,
    classes: Mapping[str, str] | None = None,
    standards: Sequence[str] = (),
    extra: Sequence[str] = (),
    night_offset: float | None = None,
    recursive: bool = True,
    on_error: Literal["skip", "raise"] = "skip",
) -> pd.DataFrame:
    """Read the headers of FITS files into a table, one row per image HDU.

    Parameters
    ----------
    source : path, glob or list of paths
        A directory (searched for FITS files, recursively by default), a glob pattern,
        a file, or a list of any of these.
    keywords : mapping, optional
        Header keywords to try first for a column, e.g. ``{"filter": ["FILTER2"]}``; they
        are tried before :data:`DEFAULT_KEYWORDS`.
    classes : mapping, optional
        Extra frame-type values (lowercase) and their class, e.g. ``{"flatv": "flat"}``;
        classes are ``bias``, ``dark``, ``flat``, ``light``, ``standard``.
    standards : sequence of str
        Regular expressions matched against OBJECT: matching light frames are
        classified ``standard`` (e.g. ``["^SA ?\\d+", "^PG\\d"]``).
    extra : sequence of str
        More header keywords to copy into the table, as they are in the header (column
        names in lowercase, with ``_raw`` appended when the name is a normalised column, e.g.
        ``FILTER`` -> ``filter_raw``).
    night_offset : float, optional
        Hours from UT to local time for the night boundary (local noon).  By default the
        site longitude from the header (LONGITUD, SITELONG, OBSGEO-L ...) gives local solar
        time; without one, UT is used.
    recursive : bool
        Search directories recursively.
    on_error : {"skip", "raise"}
        Unreadable or non-FITS files are listed in ``table.attrs["skipped"]`` with the
        reason ("skip"), or raise :class:`~daskred.errors.FitsFileError`.

    Returns
    -------
    pandas.DataFrame
        Columns ``path, hdu, extname, ny, nx, shape, dtype, compressed, imagetyp,
        imagetyp_raw, classified_by, filter, exptime, date_obs, night, object, binning,
        gain, rdnoise, saturate, airmass, ra, dec, biassec, trimsec, datasec, size, mtime``
        plus the ``extra`` keywords.  ``attrs["skipped"]`` lists ``(path, reason)``.

    Notes
    -----
    Reads headers only; pixel data are never touched.  ``filter`` is left empty for
    bias and dark frames, whose filter position does not matter.  A zero-second dark is
    classified as a bias; a light/object frame whose OBJECT says "flat" (or "bias",
    "dark") is classified by its OBJECT; ``classified_by`` says why.

    Examples
    --------
    >>> table = dr.scan("raw/")                                   # doctest: +SKIP
    >>> table.groupby(["night", "imagetyp", "filter"]).size()     # doctest: +SKIP
    """
    if on_error not in ("skip", "raise"):
        raise ConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    merged = {k: tuple(v) for k, v in DEFAULT_KEYWORDS.items()}
    for column, names in (keywords or {}).items():
        if column not in merged:
            raise ConfigError(f"unknown column {column!r} in keywords; known: {', '.join(sorted(merged))}")
        names = (names,) if isinstance(names, str) else tuple(names)
        merged[column] = tuple(n.upper() for n in names) + merged[column]
    mapping = dict(DEFAULT_CLASSES)
    for value, cls in (classes or {}).items():
        if cls not in _CLASSES:
            raise ConfigError(f"class for {value!r} must be one of {', '.join(_CLASSES)}, got {cls!r}")
        mapping[str(value).strip().lower()] = cls
    settings = _Settings(merged, mapping, tuple(standards), tuple(extra), night_offset)

    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    paths = _expand(source, recursive)
    for path in paths:
        try:
            found = _rows_for_file(path, settings)
        except (OSError, ValueError, TypeError, KeyError, IndexError) as err:
            reason = f"cannot read FITS header ({type(err).__name__}: {err})"
            if on_error == "raise":
                raise FitsFileError(f"{path}: {reason}; check the file or leave it out") from err
            skipped.append((path, reason))
            continue
        if not found:
            reason = "no 2-D image HDU"
            if on_error == "raise":
                raise FitsFileError(f"{path}: {reason}; pass an image file")
            skipped.append((path, reason))
        rows.extend(found)
    columns = [
        "path", "hdu", "extname", "ny", "nx", "shape", "dtype", "compressed", "data_offset",
        "bitpix", "bzero", "bscale", "blank", "imagetyp",
        "imagetyp_raw", "classified_by", "filter", "exptime", "date_obs", "night", "object",
        "binning", "gain", "rdnoise", "saturate", "airmass", "ra", "dec", "biassec",
        "trimsec", "datasec", "size", "mtime",
    ]
    columns += [_extra_column(k, dict.fromkeys(columns)) for k in extra]
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["skipped"] = skipped
    return table


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Count frames per night, type, filter, exposure time and shape.

    Examples
    --------
    >>> dr.collection.summarize(dr.scan("raw/"))                  # doctest: +SKIP
    """
    keys = ["night", "imagetyp", "filter", "exptime", "binning", "shape"]
    if table.empty:
        return pd.DataFrame(columns=[*keys, "count"])
    return table.groupby(keys, dropna=False).size().rename("count").reset_index()

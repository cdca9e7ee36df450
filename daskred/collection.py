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
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from astropy.io import fits

from .errors import ConfigError, FitsFileError, HeaderError

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


class _NoImage(Exception):
    """A readable FITS file without a 2-D image HDU; the message says what it holds."""


def _data_bytes(hdu: Any) -> int:
    """Bytes the header of an uncompressed HDU promises after it (without padding)."""
    header = hdu.header
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    count = 1
    for k in range(1, naxis + 1):
        count *= int(header.get(f"NAXIS{k}", 0))
    count = int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + count)
    return abs(int(header.get("BITPIX", 8))) // 8 * count


def _check_length(path: str, index: int, hdu: Any, size: int) -> None:
    info = hdu.fileinfo()
    if isinstance(hdu, fits.CompImageHDU):
        needed = info["datLoc"] + max(0, info["datSpan"] - 2879)  # the table, less at most its padding
    else:
        needed = info["datLoc"] + _data_bytes(hdu)
    if needed > size:
        raise FitsFileError(
            f"{path}: truncated: HDU {index} needs {needed} bytes, the file holds {size}; the copy is "
            "incomplete: copy the file again or leave it out"
        )


def _rows_for_file(path: str, settings: _Settings) -> list[dict[str, Any]]:
    rows = []
    stat = os.stat(path)
    if stat.st_size == 0:
        raise FitsFileError(f"{path}: empty file (0 bytes); copy it again or leave it out")
    found: list[str] = []
    with warnings.catch_warnings():
        # astropy warns about short files; the length check below turns that into a clear error
        warnings.filterwarnings("ignore", message=".*may have been truncated.*")
        with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            for index, hdu in enumerate(hdul):
                _check_length(path, index, hdu, stat.st_size)
                header = hdu.header
                naxis = int(header.get("ZNAXIS", header.get("NAXIS", 0))) if isinstance(hdu, fits.CompImageHDU) \
                    else int(header.get("NAXIS", 0))
                if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)) and not isinstance(hdu, fits.CompImageHDU):
                    found.append(f"HDU {index}: table")
                    continue
                axes = [int(header.get(f"NAXIS{k}", 1)) for k in range(1, naxis + 1)]
                if naxis < 2:
                    found.append(f"HDU {index}: " + ("header only (NAXIS=0)" if naxis == 0 else f"NAXIS={naxis}, {axes[0]} values"))
                    continue
                if naxis > 2 and any(n != 1 for n in axes[2:]):
                    # data cubes are not CCD frames
                    found.append(f"HDU {index}: NAXIS={naxis} cube {' x '.join(map(str, reversed(axes)))}")
                    continue
                nx, ny = axes[0], axes[1]
                merged = header
                if index > 0:
                    # extensions inherit keywords such as IMAGETYP or DATE-OBS from the primary header
                    merged = hdul[0].header.copy()
                    merged.update({k: v for k, v in header.items() if k not in ("", "COMMENT", "HISTORY")})
                row = _normalise(path, index, hdu, merged, nx, ny, stat, settings)
                row["_header_token"] = _header_token(merged)
                rows.append(row)
    if not rows:
        raise _NoImage("no 2-D image HDU (" + "; ".join(found or ["no HDU"]) + ")")
    return rows


_VOLATILE = ("CHECKSUM", "DATASUM", "ZHECKSUM", "ZDATASUM", "COMMENT", "HISTORY", "")


def _header_token(header: fits.Header) -> str:
    """Identity of a header's content: equal for copies of one exposure (also fpacked)."""
    import hashlib

    cards = [(k, str(v)) for k, v in header.items()
             if k not in _VOLATILE and k not in _STRUCTURAL and not re.fullmatch(r"NAXIS\d+", k)]
    return hashlib.sha1(repr(cards).encode()).hexdigest()


_STRUCTURAL = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "BZERO", "BSCALE",
               "BLANK", "EXTNAME", "EXTVER")


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
    raw_date = _keyword_value(header, kw["date_obs"])
    raw_exptime = _keyword_value(header, kw["exptime"])
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
    row["_date_raw"] = raw_date if moment is None else None
    row["_exptime_raw"] = raw_exptime
    row["_procsoft"] = str(header.get("PROCSOFT", ""))
    return row


def _extra_column(key: str, normalised: Mapping[str, Any]) -> str:
    """Column name of an extra keyword: lowercase, ``_raw`` appended on a clash."""
    name = key.lower()
    return f"{name}_raw" if name in normalised else name


def _expand(
    source: str | os.PathLike | Iterable[str | os.PathLike], recursive: bool
) -> tuple[list[str], list[tuple[str, str]]]:
    """FITS paths to read, and (path, reason) for FITS-named entries that cannot be files."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[str] = []
    skipped: list[tuple[str, str]] = []

    def consider(candidate: str) -> None:
        if os.path.islink(candidate) and not os.path.exists(candidate):
            skipped.append((candidate, f"broken symbolic link to {os.readlink(candidate)}; fix or remove the link"))
        elif os.path.isfile(candidate):
            paths.append(candidate)
        elif not os.path.isdir(candidate):
            skipped.append((candidate, "not a regular file (a pipe, socket or device)"))

    for item in items:
        text = os.fspath(item)
        if os.path.isdir(text):
            pattern = "**/*" if recursive else "*"
            for candidate in sorted(Path(text).glob(pattern)):
                name = candidate.name.lower()
                if name.endswith(FITS_SUFFIXES) and not name.startswith("."):
                    consider(str(candidate))
        elif any(ch in text for ch in "*?["):
            for candidate in sorted(_glob.glob(text, recursive=True)):
                consider(candidate)
        elif os.path.islink(text) and not os.path.exists(text):
            consider(text)
        else:
            paths.append(text)
    return paths, skipped


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
    check: Literal["none", "headers", "pixels"] = "none",
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
        Unusable files (unreadable, truncated, not FITS, no 2-D image, broken links, and
        the frames ``check`` rejects) are listed in ``table.attrs["skipped"]`` with a
        one-line reason ("skip"), or raise an error naming the file ("raise").
    check : {"none", "headers", "pixels"}
        How far to vet frames for a reduction.  ``"none"`` lists every 2-D image.
        ``"headers"`` also rejects, for frames of a known type: a date keyword that is
        present but cannot be parsed (frames without any date are kept, night ``""``); a
        missing, non-numeric or negative exposure time on darks, flats and science
        frames; files holding several image HDUs (mosaics); files written by daskred
        (``PROCSOFT`` card, e.g. an earlier run's output inside the input folder); and
        duplicates (same header and pixels under another name: the first path in sorted
        order is kept).  ``"pixels"`` also reads a few rows of every frame and rejects
        frames whose sampled pixels are all NaN/inf, all equal (a failed readout, an
        all-zero flat), mostly saturated (median at or above ``SATURATE``), and flats
        whose level is not positive.

    Returns
    -------
    pandas.DataFrame
        Columns ``path, hdu, extname, ny, nx, shape, dtype, compressed, imagetyp,
        imagetyp_raw, classified_by, filter, exptime, date_obs, night, object, binning,
        gain, rdnoise, saturate, airmass, ra, dec, biassec, trimsec, datasec, size, mtime``
        plus the ``extra`` keywords, sorted by path and HDU whatever the order of
        ``source``.  ``attrs["skipped"]`` lists ``(path, reason)``.

    Raises
    ------
    FitsFileError
        With ``on_error="raise"``, for an unreadable, truncated or unusable file.
    HeaderError
        With ``on_error="raise"``, for a header value ``check`` rejects.

    Notes
    -----
    Reads headers only (and the declared file length, so truncated files are caught);
    pixel data are touched only with ``check="pixels"`` (a few rows per frame) and to
    confirm duplicates (files with identical headers).  ``filter`` is left empty for
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

    if check not in ("none", "headers", "pixels"):
        raise ConfigError(f"check must be 'none', 'headers' or 'pixels', got {check!r}")

    rows: list[dict[str, Any]] = []
    paths, skipped = _expand(source, recursive)
    if skipped and on_error == "raise":
        path, reason = skipped[0]
        raise FitsFileError(f"{path}: {reason}")
    for path in paths:
        try:
            found = _rows_for_file(path, settings)
        except FitsFileError as err:
            if on_error == "raise":
                raise
            skipped.append((path, str(err).removeprefix(f"{path}: ")))
            continue
        except _NoImage as err:
            if on_error == "raise":
                raise FitsFileError(f"{path}: {err}; pass an image file") from err
            skipped.append((path, str(err)))
            continue
        except (OSError, ValueError, TypeError, KeyError, IndexError) as err:
            if "SIMPLE card" in str(err):
                reason = "not a FITS file (it does not start with a SIMPLE card)"
            else:
                reason = f"cannot read FITS header ({type(err).__name__}: {err})"
            if on_error == "raise":
                raise FitsFileError(f"{path}: {reason}; check the file or leave it out") from err
            skipped.append((path, reason))
            continue
        rows.extend(found)
    rows.sort(key=lambda r: (r["path"], r["hdu"]))
    if check != "none":
        rows = _vet(rows, check, on_error, skipped)
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


# --------------------------------------------------------------------------- vetting
def _vet(rows: list[dict[str, Any]], check: str, on_error: str,
         skipped: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Drop (or raise for) frames a reduction cannot use; see ``scan(check=...)``."""
    images = pd.Series([r["path"] for r in rows]).value_counts()
    kept: list[dict[str, Any]] = []
    for row in rows:
        problem = _header_problem(row, int(images[row["path"]]))
        error: type[Exception] = HeaderError
        if not problem and check == "pixels" and row["imagetyp"] != "unknown":
            problem, error = _pixel_problem(row), FitsFileError
        if problem:
            _reject(row, problem, error, on_error, skipped)
        else:
            kept.append(row)
    return _drop_duplicates(kept, on_error, skipped)


def _reject(row: Mapping[str, Any], problem: str, error: type[Exception], on_error: str,
            skipped: list[tuple[str, str]]) -> None:
    where = row["path"] if row["hdu"] == 0 else f"{row['path']}[{row['hdu']}]"
    if on_error == "raise":
        raise error(f"{where}: {problem}")
    if not any(p == row["path"] and r == problem for p, r in skipped):
        skipped.append((row["path"], problem))


def _header_problem(row: Mapping[str, Any], images_in_file: int) -> str:
    if row["_procsoft"].lower().startswith("daskred"):
        return (f"written by {row['_procsoft']} (a product, not a raw frame); keep outputs outside "
                "the raw folder or remove them")
    if images_in_file > 1:
        return (f"holds {images_in_file} image HDUs (a mosaic or multi-amplifier readout); daskred reduces "
                "single-image frames: split the extensions into files")
    if row["imagetyp"] == "unknown":
        return ""  # listed as such; the pipeline reports the classification reason
    if row["_date_raw"] is not None:
        return (f"DATE-OBS {row['_date_raw']!r} is not a date (expected YYYY-MM-DDThh:mm:ss), and no "
                "MJD-OBS/JD to fall back on; fix the header")
    if row["imagetyp"] in ("dark", "flat", "light", "standard"):
        raw, value = row["_exptime_raw"], row["exptime"]
        if raw is None:
            return (f"no exposure time in the header of this {row['imagetyp']} frame (EXPTIME or "
                    "EXPOSURE); add it, or map another keyword with keywords={'exptime': [...]}")
        if not math.isfinite(value):
            return f"exposure time {raw!r} is not a number; fix EXPTIME"
        if value < 0 or (row["imagetyp"] == "dark" and value == 0):
            return f"exposure time {value:g} s is not usable for a {row['imagetyp']} frame; fix EXPTIME"
    return ""


_SAMPLE_ROWS = 16


def _sample(row: Mapping[str, Any]) -> np.ndarray:
    """A few evenly spaced rows of one frame (float32, BZERO/BSCALE applied)."""
    from .io import _read_band

    ny = int(row["ny"])
    layout = None if bool(row["compressed"]) or int(row["data_offset"]) < 0 else (
        int(row["data_offset"]), int(row["bitpix"]), int(row["nx"]), float(row["bzero"]),
        float(row["bscale"]), float(row["blank"]))
    picks = np.unique(np.linspace(0, ny - 1, min(ny, _SAMPLE_ROWS)).round().astype(int))
    return np.concatenate([_read_band(row["path"], int(row["hdu"]), int(y), int(y) + 1, layout)[0] for y in picks])


def _pixel_problem(row: Mapping[str, Any]) -> str:
    try:
        pixels = _sample(row)
    except FitsFileError as err:
        return str(err).removeprefix(f"{row['path']}: ")
    finite = pixels[np.isfinite(pixels)]
    if finite.size == 0:
        return "every sampled pixel is NaN or infinite; the frame holds no data"
    median = float(np.median(finite))
    saturate = float(row["saturate"])
    if row["imagetyp"] != "bias" and math.isfinite(saturate) and median >= saturate:
        return f"saturated: median {median:g} ADU is at or above SATURATE = {saturate:g} ADU"
    if float(finite.min()) == float(finite.max()):
        return f"every sampled pixel equals {median:g} ADU (a failed readout or blank frame)"
    if row["imagetyp"] == "flat" and median <= 0:
        return f"flat level {median:g} ADU is not positive; it cannot be normalised"
    return ""


def _fingerprint(row: Mapping[str, Any]) -> str:
    import hashlib

    from .io import _read_band

    layout = None if bool(row["compressed"]) or int(row["data_offset"]) < 0 else (
        int(row["data_offset"]), int(row["bitpix"]), int(row["nx"]), float(row["bzero"]),
        float(row["bscale"]), float(row["blank"]))
    pixels = _read_band(row["path"], int(row["hdu"]), 0, int(row["ny"]), layout)
    return hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def _drop_duplicates(rows: list[dict[str, Any]], on_error: str,
                     skipped: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Keep the first (by path) of frames with the same header and the same pixels."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault((row["_header_token"], row["ny"], row["nx"]), []).append(i)
    drop: set[int] = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        seen: dict[str, int] = {}
        for i in members:
            try:
                token = _fingerprint(rows[i])
            except FitsFileError as err:
                _reject(rows[i], str(err).removeprefix(f"{rows[i]['path']}: "), FitsFileError, on_error, skipped)
                drop.add(i)
                continue
            if token in seen:
                first = rows[seen[token]]["path"]
                _reject(rows[i], f"duplicate of {first} (same header and pixels); remove one copy",
                        FitsFileError, on_error, skipped)
                drop.add(i)
            else:
                seen[token] = i
    return [row for i, row in enumerate(rows) if i not in drop]


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

"""Offline astrometry: fit a WCS by matching detected stars to a reference catalog.

No network service is used.  The user supplies a catalog (RA, Dec, magnitude; e.g. an export
from Gaia) as an astropy Table, a pandas DataFrame, or a CSV/FITS file.  The solution starts
from the header's approximate pointing and pixel scale (or a given approximate WCS), matches
star asterisms (astroalign), refines by nearest neighbours and fits a TAN projection (with SIP
distortion when asked) with :func:`astropy.wcs.utils.fit_wcs_from_points`.

:func:`repair_wcs_header` fixes headers whose WCS numbers are stored as strings (seen in real
files: ``CRVAL1 = '124.6186'``), which astropy otherwise silently reads as zeros.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from .align import _detect_stars, _mutual_matches
from .errors import ConfigError, FitsFileError, HeaderError, RegistrationError, ShapeMismatchError

__all__ = ["WcsSolution", "repair_wcs_header", "solve_wcs", "write_wcs"]

# Numeric WCS keywords (FITS WCS papers I-III, SIP, TPV) and the equinox/epoch.
_NUMERIC_WCS = re.compile(
    r"^(CRVAL\d+[A-Z]?|CRPIX\d+[A-Z]?|CDELT\d+[A-Z]?|CROTA\d+|CD\d+_\d+[A-Z]?|PC\d+_\d+[A-Z]?|"
    r"PV\d+_\d+[A-Z]?|PS\d+_\d+[A-Z]?|LONPOLE[A-Z]?|LATPOLE[A-Z]?|EQUINOX[A-Z]?|EPOCH|MJD-OBS|"
    r"(A|B|AP|BP)_\d+_\d+|(A|B|AP|BP)_ORDER|(A|B)_DMAX|WCSAXES[A-Z]?)$"
)
_INTEGER_WCS = re.compile(r"^((A|B|AP|BP)_ORDER|WCSAXES[A-Z]?)$")
_WCS_KEYS = re.compile(
    r"^(CTYPE\d+[A-Z]?|CUNIT\d+[A-Z]?|CRVAL\d+[A-Z]?|CRPIX\d+[A-Z]?|CDELT\d+[A-Z]?|CROTA\d+|"
    r"CD\d+_\d+[A-Z]?|PC\d+_\d+[A-Z]?|PV\d+_\d+[A-Z]?|PS\d+_\d+[A-Z]?|LONPOLE[A-Z]?|LATPOLE[A-Z]?|"
    r"(A|B|AP|BP)_\d+_\d+|(A|B|AP|BP)_ORDER|(A|B)_DMAX|WCSAXES[A-Z]?|WCSNAME[A-Z]?|"
    r"WCSRMS|WCSNMAT)$"
)
_ASTERISM_STARS = 50
_RA_NAMES = ("ra", "ra_icrs", "raj2000", "_raj2000", "ra_deg", "radeg", "alpha_j2000")
_DEC_NAMES = ("dec", "de", "dec_icrs", "dej2000", "_dej2000", "dec_deg", "decdeg", "delta_j2000")
_MAG_NAMES = ("mag", "phot_g_mean_mag", "gmag", "rmag", "vmag", "magnitude", "g", "r", "v")


def repair_wcs_header(header: fits.Header) -> fits.Header:
    """Return a copy of ``header`` whose WCS numbers stored as strings are numbers.

    Some pipelines (e.g. the Lowell files processed by the Photometry Pipeline/SCAMP) write
    ``CRVAL1 = '124.6186089902'``, ``CD1_1``, ``PV1_*`` and ``EQUINOX`` as quoted strings.
    ``astropy.wcs.WCS`` does not fail on them: it warns and yields ``CRVAL = [0, 0]``.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header to repair; it is not modified.

    Returns
    -------
    astropy.io.fits.Header
        A copy in which every string-valued numeric WCS card (``CRVALi``, ``CRPIXi``,
        ``CDELTi``, ``CROTAi``, ``CDi_j``, ``PCi_j``, ``PVi_m``, ``LONPOLE``, ``LATPOLE``,
        ``EQUINOX``, ``EPOCH``, ``MJD-OBS``, SIP ``A_i_j``... and ``*_ORDER``) holds a float
        (an int for orders and ``WCSAXES``); comments are kept.  ``EQUINOX = 'J2000'`` becomes
        2000.0.

    Raises
    ------
    HeaderError
        When such a card holds a string that is not a number.

    Notes
    -----
    SCAMP writes its polynomial distortion as ``PVi_m`` on ``RA---TAN``/``DEC--TAN`` axes
    (the TPV convention); WCSLIB, hence astropy, applies them once they are numbers.

    Examples
    --------
    >>> header = fits.Header({"CTYPE1": "RA---TAN", "CRVAL1": "124.5"})
    >>> repair_wcs_header(header)["CRVAL1"]
    124.5
    """
    if not isinstance(header, fits.Header):
        raise HeaderError(f"expected an astropy.io.fits.Header, got {type(header).__name__}")
    fixed = header.copy()
    for card in header.cards:
        key, value = card.keyword, card.value
        if not isinstance(value, str) or not _NUMERIC_WCS.match(key):
            continue
        text = value.strip()
        if key.startswith(("EQUINOX", "EPOCH")) and text[:1] in ("J", "B"):
            text = text[1:]
        try:
            number: float | int = float(text.replace("D", "E").replace("d", "e"))
        except ValueError as err:
            raise HeaderError(
                f"header card {key} = {value!r} should be a number; correct or delete the card"
            ) from err
        if _INTEGER_WCS.match(key):
            number = int(round(number))
        fixed[key] = (number, card.comment)
    return fixed


def _quiet_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, relax=True)


def _parse_angle(value: Any, *, hours: bool) -> float:
    """Degrees from a float (degrees) or a sexagesimal string (hours for RA)."""
    from astropy.coordinates import Angle

    if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if not text:
        raise ValueError("empty")
    if re.search(r"[:\s hdms]", text):
        return float(Angle(text, unit="hourangle" if hours else "deg").deg)
    return float(text)


def _pixel_scale(header: fits.Header) -> float | None:
    """Arcsec per pixel from common keywords, or None."""
    for key in ("SECPIX", "SECPIXX", "PIXSCALE", "PIXSCAL1", "SCALE", "PLTSCALE"):
        if key in header:
            try:
                value = float(header[key])
            except (TypeError, ValueError):
                continue
            if value > 0:
                return value
    if "PIXSCAL" in header:
        try:
            scale = float(header["PIXSCAL"])
        except (TypeError, ValueError):
            return None
        binning = str(header.get("CCDSUM", "1 1")).split()
        factor = float(binning[0]) if binning and binning[0].replace(".", "").isdigit() else 1.0
        return scale * factor
    return None


def _approx_wcs_from_header(header: fits.Header, shape: tuple[int, int]) -> WCS:
    """Approximate TAN WCS: the header's own WCS when usable, else pointing + pixel scale."""
    repaired = repair_wcs_header(header)
    w = _quiet_wcs(repaired)
    if w.has_celestial and "CRVAL1" in repaired and not np.allclose(w.celestial.wcs.crval, 0.0):
        return w.celestial
    ra = dec = None
    for ra_key, dec_key in (("RA", "DEC"), ("OBJCTRA", "OBJCTDEC"), ("TELRA", "TELDEC"), ("RA_OBJ", "DEC_OBJ")):
        if ra_key in repaired and dec_key in repaired:
            try:
                ra = _parse_angle(repaired[ra_key], hours=isinstance(repaired[ra_key], str))
                dec = _parse_angle(repaired[dec_key], hours=False)
                break
            except ValueError:
                continue
    scale = _pixel_scale(repaired)
    if ra is None or dec is None or scale is None:
        raise HeaderError(
            "cannot build an approximate WCS from the header: it needs a pointing (RA/DEC, OBJCTRA/OBJCTDEC "
            "or TELRA/TELDEC) and a pixel scale (SECPIXX, PIXSCALE, PIXSCAL1 or PIXSCAL x CCDSUM); "
            "pass approx_wcs= instead"
        )
    ny, nx = shape
    approx = WCS(naxis=2)
    approx.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    approx.wcs.crval = [ra, dec]
    approx.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    approx.wcs.cd = np.array([[-scale / 3600.0, 0.0], [0.0, scale / 3600.0]])  # north up, east left
    return approx


def _find_column(table: Table, names: tuple[str, ...], given: str | None, what: str, source: str) -> str | None:
    lower = {c.lower(): c for c in table.colnames}
    if given is not None:
        if given in table.colnames:
            return given
        if given.lower() in lower:
            return lower[given.lower()]
        raise ConfigError(f"catalog {source} has no column {given!r} for {what}; columns are {table.colnames}")
    for name in names:
        if name in lower:
            return lower[name]
    return None


def _read_catalog(catalog: Any, columns: tuple[str, str, str | None] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RA (deg), Dec (deg), magnitude (NaN when absent) arrays of the catalog."""
    import pandas as pd

    source = "table"
    if isinstance(catalog, (str, Path)):
        path = Path(catalog)
        source = str(path)
        if not path.is_file():
            raise FitsFileError(f"catalog file {path} does not exist; give a CSV or FITS table with RA, Dec, mag")
        suffixes = "".join(path.suffixes).lower()
        try:
            if ".fit" in suffixes:
                table = Table.read(path)
            else:
                table = Table.read(path, format="ascii.csv" if suffixes.endswith(".csv") else "ascii")
        except (OSError, ValueError) as err:
            raise FitsFileError(f"cannot read catalog {path}: {err}; give a CSV or FITS table") from err
    elif isinstance(catalog, pd.DataFrame):
        table = Table.from_pandas(catalog)
    elif isinstance(catalog, Table):
        table = catalog
    else:
        raise ConfigError(
            f"catalog must be an astropy Table, a pandas DataFrame or a CSV/FITS path, got {type(catalog).__name__}"
        )
    ra_name, dec_name, mag_name = columns if columns is not None else (None, None, None)
    ra_col = _find_column(table, _RA_NAMES, ra_name, "RA", source)
    dec_col = _find_column(table, _DEC_NAMES, dec_name, "Dec", source)
    if ra_col is None or dec_col is None:
        raise ConfigError(
            f"catalog {source} has no recognisable RA/Dec columns (columns: {table.colnames}); "
            "pass columns=('ra_name', 'dec_name', 'mag_name')"
        )
    mag_col = _find_column(table, _MAG_NAMES, mag_name, "magnitude", source)

    def _degrees(col: str) -> np.ndarray:
        values = table[col]
        unit = getattr(values, "unit", None)
        if unit is not None and str(unit) not in ("", "deg"):
            return np.asarray(values.quantity.to_value("deg"), dtype=float)
        return np.asarray(values, dtype=float)

    ra, dec = _degrees(ra_col), _degrees(dec_col)
    mag = np.asarray(table[mag_col], dtype=float) if mag_col else np.full(len(ra), np.nan)
    good = np.isfinite(ra) & np.isfinite(dec)
    return ra[good], dec[good], mag[good]


@dataclass(frozen=True)
class WcsSolution:
    """Result of :func:`solve_wcs`.

    Attributes
    ----------
    wcs : astropy.wcs.WCS
        Fitted celestial WCS (TAN, with SIP when asked), for 0-based pixels of the image.
    matches : astropy.table.Table
        One row per matched star: ``x``, ``y`` (detected, 0-based pixels), ``ra``, ``dec``,
        ``mag`` (catalog), ``sep_arcsec`` (fit residual).
    n_matches : int
        Number of matched stars used by the fit.
    rms_arcsec : float
        RMS of the residual separations, in arcsec.
    """

    wcs: WCS
    matches: Table
    n_matches: int
    rms_arcsec: float

    def to_header(self, header: fits.Header | None = None) -> fits.Header:
        """Return ``header`` (or a new one) carrying this WCS; see :func:`write_wcs`."""
        return write_wcs(header if header is not None else fits.Header(), self.wcs,
                         rms_arcsec=self.rms_arcsec, n_matches=self.n_matches)


def write_wcs(
    header: fits.Header, wcs: WCS, *, rms_arcsec: float | None = None, n_matches: int | None = None
) -> fits.Header:
    """Return a copy of ``header`` whose WCS cards are replaced by ``wcs``.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header of the image the WCS describes; not modified.
    wcs : astropy.wcs.WCS
        Celestial WCS (SIP terms included when present).
    rms_arcsec : float, optional
        Written as ``WCSRMS`` (astrometric fit RMS, arcsec).
    n_matches : int, optional
        Written as ``WCSNMAT`` (number of catalog stars in the fit).

    Returns
    -------
    astropy.io.fits.Header
        Copy of ``header`` without any previous WCS card (string-valued ones included; the
        old ``PVi_m`` distortion would otherwise be applied on top of the new solution), with
        the new WCS.

    Examples
    --------
    >>> out = write_wcs(fits.Header(), solution.wcs, rms_arcsec=solution.rms_arcsec)  # doctest: +SKIP
    """
    if not isinstance(wcs, WCS) or not wcs.has_celestial:
        raise ConfigError("wcs must be an astropy.wcs.WCS with celestial axes (e.g. WcsSolution.wcs)")
    out = header.copy()
    for key in [k for k in out.keys() if _WCS_KEYS.match(k)]:
        del out[key]
    out.update(wcs.to_header(relax=True))
    if rms_arcsec is not None:
        out["WCSRMS"] = (float(rms_arcsec), "[arcsec] RMS of the astrometric fit")
    if n_matches is not None:
        out["WCSNMAT"] = (int(n_matches), "catalog stars used in the astrometric fit")
    return out


def _fit(x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray, sip_degree: int | None) -> WCS:
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import fit_wcs_from_points

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return fit_wcs_from_points(
            (x, y), SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"), projection="TAN", sip_degree=sip_degree
        )


def _separations(w: WCS, x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    fra, fdec = w.pixel_to_world_values(x, y)
    dra = (np.mod(fra - ra + 180.0, 360.0) - 180.0) * np.cos(np.radians(dec))
    return np.hypot(dra, fdec - dec) * 3600.0


def solve_wcs(
    image: xr.DataArray | np.ndarray,
    catalog: Table | Any,
    *,
    approx_wcs: WCS | None = None,
    header: fits.Header | None = None,
    sip_degree: int | None = None,
    search_radius: float = 120.0,
    match_radius: float = 2.0,
    fwhm: float = 3.0,
    threshold: float = 5.0,
    max_stars: int = 200,
    min_matches: int = 6,
    columns: tuple[str, str, str | None] | None = None,
) -> WcsSolution:
    """Fit a WCS to an image by matching its stars to a reference catalog.

    Parameters
    ----------
    image : xarray.DataArray or numpy.ndarray
        One image, dims ``("y", "x")``.  NaN pixels are ignored.
    catalog : astropy.table.Table, pandas.DataFrame, str or pathlib.Path
        Reference stars with RA and Dec in degrees (columns found case-insensitively:
        ``ra``/``ra_icrs``/``raj2000``..., ``dec``/``de``/``dej2000``..., and optionally
        ``mag``/``phot_g_mean_mag``/``gmag``...), or the path of a CSV or FITS table.
    approx_wcs : astropy.wcs.WCS, optional
        Approximate WCS of the image.  When omitted it comes from ``header``: its own WCS
        (after :func:`repair_wcs_header`) when it has one, else a north-up TAN WCS from the
        pointing (RA/DEC, OBJCTRA/OBJCTDEC or TELRA/TELDEC) and the pixel scale (SECPIXX,
        PIXSCALE, PIXSCAL1, or PIXSCAL times the CCDSUM binning).
    header : astropy.io.fits.Header, optional
        Header of the image, used when ``approx_wcs`` is omitted.
    sip_degree : int, optional
        Fit SIP distortion polynomials of this degree (2-5); default a pure TAN projection.
    search_radius : float, default 120.0
        Arcsec: how far the true pointing may be from the approximate one; catalog stars up
        to this distance outside the approximate footprint take part in the match.
    match_radius : float, default 2.0
        Arcsec: a detected star and a catalog star match when they are mutual nearest
        neighbours closer than this after the asterism match.
    fwhm : float, default 3.0
        Star FWHM in pixels for the detection kernel.
    threshold : float, default 5.0
        Detection threshold in background standard deviations.
    max_stars : int, default 200
        Brightest detected stars and catalog stars kept (the 50 brightest of each seed the
        asterism match).
    min_matches : int, default 6
        Fewer matched stars raise :class:`~daskred.errors.RegistrationError`.
    columns : (str, str, str or None), optional
        Explicit RA, Dec and magnitude column names of the catalog.

    Returns
    -------
    WcsSolution
        The fitted WCS, the matched stars, their number and the RMS residual in arcsec.

    Raises
    ------
    RegistrationError
        When the stars cannot be matched to the catalog (wrong field, pointing further off
        than ``search_radius``, too few stars).
    HeaderError
        When no approximate WCS can be built from the header.
    ConfigError
        For an invalid option or catalog.

    Notes
    -----
    This function computes: it loads the image (one frame) to detect stars.  The fit is a
    least-squares TAN (+SIP) fit of the matched pairs, iterated three times (match, fit,
    re-project the catalog, match again).

    Examples
    --------
    >>> solution = solve_wcs(image, "gaia_field.csv", header=header)  # doctest: +SKIP
    >>> solution.rms_arcsec, solution.n_matches  # doctest: +SKIP
    >>> new_header = solution.to_header(header)  # doctest: +SKIP
    """
    import astroalign

    if isinstance(image, xr.DataArray):
        if image.ndim != 2:
            raise ShapeMismatchError(f"image must have dims ('y', 'x'), got {image.dims}; select one frame first")
        pixels = np.asarray(image.data, dtype=np.float64)  # computes: documented
    else:
        pixels = np.asarray(image, dtype=np.float64)
        if pixels.ndim != 2:
            raise ShapeMismatchError(f"image must be 2-D (y, x), got shape {pixels.shape}")
    if sip_degree is not None and (not isinstance(sip_degree, (int, np.integer)) or not 2 <= sip_degree <= 5):
        raise ConfigError(f"sip_degree={sip_degree!r} must be None or an integer from 2 to 5")
    for name, value in (("search_radius", search_radius), ("match_radius", match_radius),
                        ("fwhm", fwhm), ("threshold", threshold)):
        if not value > 0:
            raise ConfigError(f"{name}={value!r} must be > 0")
    if approx_wcs is None:
        if header is None:
            raise ConfigError("solve_wcs needs approx_wcs= or header= (pointing and pixel scale) to start from")
        approx_wcs = _approx_wcs_from_header(header, pixels.shape)
    elif not isinstance(approx_wcs, WCS) or not approx_wcs.has_celestial:
        raise ConfigError("approx_wcs must be an astropy.wcs.WCS with celestial axes")
    approx_wcs = approx_wcs.celestial
    ra, dec, mag = _read_catalog(catalog, columns)

    ny, nx = pixels.shape
    scale = float(np.sqrt(abs(np.linalg.det(approx_wcs.pixel_scale_matrix)))) * 3600.0  # arcsec / px
    with np.errstate(invalid="ignore"):
        cx, cy = approx_wcs.world_to_pixel_values(ra, dec)
    margin = search_radius / scale
    near = (np.isfinite(cx) & np.isfinite(cy) & (cx > -margin) & (cx < nx - 1 + margin)
            & (cy > -margin) & (cy < ny - 1 + margin))
    order = np.argsort(np.where(np.isfinite(mag), mag, np.inf), kind="stable")
    order = order[near[order]][:max_stars]
    ra, dec, mag, cx, cy = ra[order], dec[order], mag[order], cx[order], cy[order]
    if len(ra) < 3:
        raise RegistrationError(
            f"only {len(ra)} catalog star(s) fall within search_radius={search_radius} arcsec of the image; "
            "check the catalog covers this field and the approximate pointing"
        )
    stars = _detect_stars(pixels, float(fwhm), float(threshold), int(max_stars))
    if len(stars) < 3:
        raise RegistrationError(
            f"found {len(stars)} star(s) in the image, at least 3 are needed; lower threshold= or check fwhm="
        )
    try:
        seed, _ = astroalign.find_transform(
            np.column_stack([cx, cy])[:_ASTERISM_STARS], stars[:_ASTERISM_STARS, :2],
            max_control_points=_ASTERISM_STARS,
        )
    except (astroalign.MaxIterError, ValueError) as err:
        raise RegistrationError(
            f"no asterism of the image matches the catalog ({err}); check the catalog covers the field, "
            "widen search_radius=, or give a better approx_wcs="
        ) from err

    predicted = seed(np.column_stack([cx, cy]))
    detected = stars[:, :2]
    w = approx_wcs
    i = j = np.empty(0, int)
    for _ in range(3):
        radius_px = match_radius / scale if w is not approx_wcs else max(match_radius / scale, 2.0)
        i, j = _mutual_matches(predicted, detected, radius_px)
        needed = max(min_matches, 3, 0 if sip_degree is None else (sip_degree + 1) * (sip_degree + 2) // 2)
        if len(i) < needed:
            raise RegistrationError(
                f"only {len(i)} star(s) matched the catalog, {needed} are needed; lower threshold=, "
                "use a deeper catalog, or widen match_radius="
            )
        w = _fit(detected[j, 0], detected[j, 1], ra[i], dec[i], sip_degree)
        scale = float(np.sqrt(abs(np.linalg.det(w.pixel_scale_matrix)))) * 3600.0
        with np.errstate(invalid="ignore"):
            predicted = np.column_stack(w.world_to_pixel_values(ra, dec))
    sep = _separations(w, detected[j, 0], detected[j, 1], ra[i], dec[i])
    matches = Table(
        {"x": detected[j, 0], "y": detected[j, 1], "ra": ra[i], "dec": dec[i], "mag": mag[i], "sep_arcsec": sep}
    )
    rms = float(math.sqrt(np.mean(sep**2)))
    return WcsSolution(wcs=w, matches=matches, n_matches=len(i), rms_arcsec=rms)

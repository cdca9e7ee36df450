"""Photometric zero points and atmospheric extinction from measured standard stars.

:func:`zero_point` compares the count rates measured by
:func:`daskred.photometry.aperture_photometry` with a standard-star catalog read by
:func:`daskred.photometry.read_standards`, :func:`fit_extinction` fits the zero point
above the atmosphere and the extinction coefficient from standards at several airmasses,
:func:`write_zeropoints` writes the per-image zero-point table and :func:`set_photzp`
the header cards.

These functions work on in-memory tables and compute nothing lazy.

The magnitude convention throughout is::

    m_cat = -2.5 log10(flux / exptime) + zp           (one image)
    zp    = zp0 - k * airmass [+ c * colour]          (one night, one filter)
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.stats import mad_std
from astropy.table import Table

from .errors import CalibrationError, ConfigError
from .photometry import _column, _magnitude_columns, _sky_coords, read_standards

__all__ = [
    "ZeroPoint",
    "ExtinctionFit",
    "zero_point",
    "fit_extinction",
    "write_zeropoints",
    "set_photzp",
    "ZEROPOINT_COLUMNS",
]

#: Column order of the per-image zero-point table written by :func:`write_zeropoints`.
ZEROPOINT_COLUMNS = ("image", "object", "filter", "night", "airmass", "zp", "zp_err", "nstars")

_MAG = 2.5 / math.log(10.0)  # d(mag) = _MAG * d(flux) / flux


# --------------------------------------------------------------------------------------
# zero points and extinction
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ZeroPoint:
    """Zero point of one image: ``m = -2.5 log10(flux / exptime) + zp``.

    Attributes
    ----------
    zp, zp_err : float
        Zero point for count rates (image units per second) and its 1-sigma uncertainty;
        with a colour term, the zero point at colour 0.
    nstars, nrejected : int
        Stars used, and stars rejected by the sigma clipping.
    filter : str
    exptime, airmass : float
        Exposure time (s) and airmass (NaN when unknown) of the image.
    method : str
        Short description, written to ``PHOTZPMT``.
    colour_term, colour_term_err : float
        Colour coefficient ``c`` (``zp_star = zp + c * colour``), NaN without a colour.
    colour : str or None
        The colour used, e.g. ``"B-V"``.
    stars : astropy.table.Table
        Every matched star with its catalog magnitude, measured flux, ``zp`` and
        ``zp_err`` per star and a ``status`` (``used``, ``clipped``, ``flagged``,
        ``bad_flux``, ``no_magnitude``).
    """

    zp: float
    zp_err: float
    nstars: int
    nrejected: int
    filter: str
    exptime: float
    airmass: float
    method: str
    colour_term: float = math.nan
    colour_term_err: float = math.nan
    colour: str | None = None
    stars: Table = field(default_factory=Table, repr=False)


@dataclass(frozen=True, eq=False)
class ExtinctionFit:
    """Zero point above the atmosphere and extinction: ``zp(X) = zp0 - k * X [+ c * colour]``.

    Attributes
    ----------
    zp0, zp0_err : float
        Zero point at airmass 0 and its uncertainty.
    k, k_err : float
        Extinction coefficient (mag per airmass) and its uncertainty.
    colour_term, colour_term_err : float
        Colour coefficient, NaN when no colour was fitted.
    covariance : numpy.ndarray
        Covariance of ``(zp0, k[, colour_term])``.
    nstars, nrejected, nimages : int
        Star measurements used and rejected, and images contributing.
    filter : str
    stars : astropy.table.Table
        Every star measurement with ``image`` (index in the input), ``airmass``, ``zp``,
        ``zp_err`` and ``used``.
    """

    zp0: float
    zp0_err: float
    k: float
    k_err: float
    covariance: np.ndarray
    nstars: int
    nrejected: int
    nimages: int
    filter: str
    colour_term: float = math.nan
    colour_term_err: float = math.nan
    stars: Table = field(default_factory=Table, repr=False)

    def zero_point_at(self, airmass: float) -> tuple[float, float]:
        """Return the zero point (colour 0) and its uncertainty at ``airmass``."""
        grad = np.zeros(len(self.covariance))
        grad[0], grad[1] = 1.0, -airmass
        return self.zp0 - self.k * airmass, float(np.sqrt(grad @ self.covariance @ grad))


def _clipped_fit(
    y: np.ndarray,
    err: np.ndarray,
    design: np.ndarray,
    *,
    sigma: float,
    maxiters: int,
    weighting: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted linear least squares with iterative sigma clipping of the residuals.

    Returns the parameters, their covariance and the boolean mask of points used.
    Residuals (in units of their errors for inverse-variance weighting) are clipped
    about their median at ``sigma`` times their MAD standard deviation, but never
    within ``sigma`` times their own error: a point consistent with the fit within its
    uncertainty is kept even when the others agree better than their errors say.
    The covariance is scaled by the reduced chi-square when that exceeds 1.
    """
    npar = design.shape[1]
    weighted = weighting == "inverse_variance"
    used = np.ones(len(y), dtype=bool)
    for _ in range(int(maxiters)):
        if used.sum() <= npar + 1:
            break
        params, _ = _wls(y[used], err[used], design[used], weighted)
        resid = y - design @ params
        scaled = resid / err if weighted else resid
        floor = 1.0 if weighted else float(np.median(err[used]))
        spread = max(float(mad_std(scaled[used])), floor)
        out = used & (np.abs(scaled - np.median(scaled[used])) > sigma * spread)
        if not np.any(out) or used.sum() - out.sum() < npar:
            break
        used &= ~out
    params, cov = _wls(y[used], err[used], design[used], weighted)
    return params, cov, used


def _wls(y: np.ndarray, err: np.ndarray, design: np.ndarray, weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    n, npar = design.shape
    w = 1.0 / err**2 if weighted else np.ones(n)
    normal = design.T @ (design * w[:, None])
    cov = np.linalg.pinv(normal)
    params = cov @ (design.T @ (w * y))
    resid = y - design @ params
    if weighted:
        if n > npar:
            cov = cov * max(1.0, float(np.sum(w * resid**2)) / (n - npar))
    elif n > npar:
        cov = cov * float(np.sum(resid**2)) / (n - npar)
    else:
        cov = cov * float(np.mean(err**2))
    return params, cov


def _check_fit_options(sigma: float, maxiters: int, weighting: str) -> None:
    if weighting not in ("inverse_variance", "equal"):
        raise ConfigError(f"weighting must be 'inverse_variance' or 'equal', got {weighting!r}")
    if not sigma > 0:
        raise ConfigError(f"sigma must be positive, got {sigma!r}")
    if int(maxiters) != maxiters or maxiters < 0:
        raise ConfigError(f"maxiters must be an integer >= 0, got {maxiters!r}")


def _catalog_label(catalog: Table) -> str:
    return f"standard-star catalog {catalog.meta['path']}" if "path" in catalog.meta else "the standard-star catalog"


def _catalog_values(catalog: Table, name: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    col = _column(catalog, name)
    if col is None or col not in _magnitude_columns(catalog):
        raise CalibrationError(
            f"{label} has no magnitude column {name!r}; magnitude columns are "
            f"{_magnitude_columns(catalog)} (name them after the filter as the headers give it)"
        )
    mag = np.asarray(catalog[col], dtype=float)
    err_col = _column(catalog, f"err_{col}")
    err = np.asarray(catalog[err_col], dtype=float) if err_col else np.zeros(len(catalog))
    return mag, np.where(np.isfinite(err), err, 0.0)


def _match(
    phot: Table, catalog: Table, match: str, radius: u.Quantity, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (phot, catalog) of matched pairs."""
    pname, cname = _column(phot, "name"), _column(catalog, "name")
    if match == "auto":
        by_name = pname is not None and cname is not None and bool(
            set(np.asarray(phot[pname]).astype(str)) & set(np.asarray(catalog[cname]).astype(str))
        )
        match = "name" if by_name else "sky"
    if match == "name":
        if pname is None or cname is None:
            raise CalibrationError(f"match='name' needs a 'name' column in the photometry table and in {label}")
        where = {str(v): i for i, v in enumerate(catalog[cname])}
        pairs = [(i, where[str(v)]) for i, v in enumerate(phot[pname]) if str(v) in where]
    else:
        for tab, what in ((phot, "the photometry table"), (catalog, label)):
            if _column(tab, "ra") is None or _column(tab, "dec") is None:
                raise CalibrationError(
                    f"matching by sky position needs 'ra' and 'dec' in {what}; give the image a WCS "
                    "or match by name"
                )
        pc, cc = _sky_coords(phot, "photometry table"), _sky_coords(catalog, label)
        ci, sep, _ = pc.match_to_catalog_sky(cc)
        best: dict[int, tuple[float, int]] = {}
        for i, (j, s) in enumerate(zip(np.atleast_1d(ci), np.atleast_1d(sep.arcsec), strict=True)):
            if s <= radius.to_value(u.arcsec) and (j not in best or s < best[j][0]):
                best[int(j)] = (s, i)
        pairs = sorted((i, j) for j, (_, i) in best.items())
    if not pairs:
        return np.zeros(0, int), np.zeros(0, int)
    pi, cj = np.array(pairs).T
    return pi, cj


def _colour_values(catalog: Table, colour: Any, label: str) -> tuple[np.ndarray, str]:
    if isinstance(colour, str):
        col = _column(catalog, colour)
        if col is None:
            raise CalibrationError(f"{label} has no colour column {colour!r}; columns are {catalog.colnames}")
        return np.asarray(catalog[col], dtype=float), col
    if isinstance(colour, Sequence) and len(colour) == 2:
        a, _ = _catalog_values(catalog, colour[0], label)
        b, _ = _catalog_values(catalog, colour[1], label)
        return a - b, f"{colour[0]}-{colour[1]}"
    raise ConfigError(f"colour must be a column name or a pair of filters like ('B', 'V'), got {colour!r}")


def zero_point(
    photometry: Table,
    catalog: Table | str | os.PathLike,
    *,
    filter: str | None = None,
    exptime: float | u.Quantity | None = None,
    airmass: float | None = None,
    match: Literal["auto", "name", "sky"] = "auto",
    match_radius: float | u.Quantity = 2.0,
    colour: str | tuple[str, str] | None = None,
    sigma: float = 3.0,
    maxiters: int = 5,
    weighting: Literal["inverse_variance", "equal"] = "inverse_variance",
) -> ZeroPoint:
    """Compute the zero point of one image from measured standard stars.

    Parameters
    ----------
    photometry : astropy.table.Table
        Output of :func:`daskred.photometry.aperture_photometry` (columns ``flux``,
        ``flux_err``, ``flags`` and ``name`` or ``ra``/``dec``).
    catalog : astropy.table.Table, str or os.PathLike
        Standard-star catalog (see :func:`daskred.photometry.read_standards`), or its path.
    filter : str, optional
        Catalog magnitude column to use (default: ``photometry.meta["filter"]``); matched
        exactly, then case-insensitively.
    exptime : float or astropy.units.Quantity, optional
        Exposure time in seconds (default: ``photometry.meta["exptime"]``).
    airmass : float, optional
        Airmass of the image (default: ``photometry.meta["airmass"]``, else NaN); stored
        for :func:`fit_extinction`.
    match : {"auto", "name", "sky"}
        Pair stars by ``name`` or by position; ``"auto"`` uses names when both tables
        have them and share at least one.
    match_radius : float or astropy.units.Quantity
        Largest separation for a sky match, in arcseconds.
    colour : str or (str, str), optional
        Fit a colour term against this catalog colour: a column name, or two magnitude
        columns whose difference is the colour (``("B", "V")`` for B-V).
    sigma, maxiters : float, int
        Sigma clipping of the per-star zero points: a star is rejected when it lies more
        than ``sigma`` times the MAD standard deviation from the median (residuals in
        units of each star's error for inverse-variance weighting), and more than
        ``sigma`` times its own error.
    weighting : {"inverse_variance", "equal"}
        Weighted mean (error scaled by sqrt of the reduced chi-square when above 1) or
        plain mean (error = standard error of the clipped mean).

    Returns
    -------
    ZeroPoint

    Raises
    ------
    CalibrationError
        Missing filter column (the message lists the available ones), no star matched,
        or every matched star flagged or without a positive flux.
    ConfigError
        Non-positive or missing exposure time, bad option values.

    Notes
    -----
    Per star: ``zp_i = m_cat + 2.5 log10(flux / exptime)`` with
    ``zp_err_i = hypot(err_cat, 1.0857 * flux_err / flux)``.  Stars with any
    :class:`daskred.photometry.PhotFlag` set, a non-positive flux or no catalog
    magnitude are left out.  Works on in-memory tables (computes nothing lazy).

    Examples
    --------
    >>> from astropy.table import Table
    >>> phot = Table({"name": ["a", "b"], "flux": [1000.0, 2512.0], "flux_err": [10.0, 20.0],
    ...               "flags": [0, 0]})
    >>> cat = Table({"name": ["a", "b"], "ra": [0.0, 0.1], "dec": [0.0, 0.0], "V": [15.0, 14.0]})
    >>> round(zero_point(phot, cat, filter="V", exptime=10.0).zp, 3)
    20.0
    """
    _check_fit_options(sigma, maxiters, weighting)
    if match not in ("auto", "name", "sky"):
        raise ConfigError(f"match must be 'auto', 'name' or 'sky', got {match!r}")
    if not isinstance(catalog, Table):
        catalog = read_standards(catalog)
    label = _catalog_label(catalog)
    for col in ("flux", "flux_err"):
        if col not in photometry.colnames:
            raise ConfigError(f"the photometry table lacks column {col!r}; pass the output of aperture_photometry")
    filter = filter if filter is not None else photometry.meta.get("filter")
    if filter is None:
        raise ConfigError("no filter given and none in the photometry table's meta; pass filter='V'")
    exptime = exptime if exptime is not None else photometry.meta.get("exptime")
    if exptime is None:
        raise ConfigError("no exposure time given and none in the photometry table's meta; pass exptime= (s)")
    if isinstance(exptime, u.Quantity):
        exptime = exptime.to_value(u.s)
    exptime = float(exptime)
    if not (math.isfinite(exptime) and exptime > 0):
        raise ConfigError(f"exptime must be a positive number of seconds, got {exptime!r}")
    airmass = airmass if airmass is not None else photometry.meta.get("airmass", math.nan)
    airmass = float(airmass) if airmass is not None else math.nan
    radius = match_radius if isinstance(match_radius, u.Quantity) else float(match_radius) * u.arcsec
    mag_all, magerr_all = _catalog_values(catalog, filter, label)
    colour_all, colour_name = (None, None) if colour is None else _colour_values(catalog, colour, label)

    pi, cj = _match(photometry, catalog, match, radius, label)
    if len(pi) == 0:
        raise CalibrationError(
            f"no measured star matched {label} ({len(photometry)} measured, {len(catalog)} in the catalog, "
            f"match={match!r}, radius {radius.to_value(u.arcsec):g} arcsec); check the WCS or the names"
        )
    flux = np.asarray(photometry["flux"], float)[pi]
    flux_err = np.asarray(photometry["flux_err"], float)[pi]
    flags = np.asarray(photometry["flags"], int)[pi] if "flags" in photometry.colnames else np.zeros(len(pi), int)
    mag, magerr = mag_all[cj], magerr_all[cj]
    col_vals = colour_all[cj] if colour_all is not None else np.zeros(len(pi))

    status = np.full(len(pi), "used", dtype="U12")
    good_flux = np.isfinite(flux) & (flux > 0) & np.isfinite(flux_err) & (flux_err >= 0)
    status[~good_flux] = "bad_flux"
    status[flags != 0] = "flagged"
    status[~np.isfinite(mag) | ~np.isfinite(col_vals)] = "no_magnitude"
    with np.errstate(divide="ignore", invalid="ignore"):
        mag_inst = -2.5 * np.log10(flux / exptime)
        mag_inst_err = _MAG * flux_err / flux
    zp_star = mag - mag_inst
    zp_star_err = np.hypot(magerr, mag_inst_err)

    candidates = status == "used"
    if not np.any(candidates):
        counts = {s: int(np.sum(status == s)) for s in ("flagged", "bad_flux", "no_magnitude")}
        raise CalibrationError(
            f"{len(pi)} stars matched {label} but none is usable for filter {filter!r} "
            f"({', '.join(f'{k}: {v}' for k, v in counts.items() if v)}); "
            "flagged stars touch the edge, saturate or cover masked pixels"
        )
    fit_weighting = weighting
    if weighting == "inverse_variance" and not np.all(zp_star_err[candidates] > 0):
        fit_weighting = "equal"  # errors unknown: fall back to the plain mean
    design = np.ones((len(pi), 1)) if colour is None else np.column_stack([np.ones(len(pi)), col_vals])
    sel = np.flatnonzero(candidates)
    errs = zp_star_err[sel] if fit_weighting == "inverse_variance" else np.where(
        zp_star_err[sel] > 0, zp_star_err[sel], 0.0)
    params, cov, used = _clipped_fit(
        zp_star[sel], errs, design[sel], sigma=sigma, maxiters=maxiters, weighting=fit_weighting
    )
    status[sel[~used]] = "clipped"

    stars = Table()
    for src, dst in (("name", "name"), ("ra", "ra"), ("dec", "dec"), ("x", "x"), ("y", "y")):
        col = _column(photometry, src)
        if col is not None:
            stars[dst] = photometry[col][pi]
    stars["mag_cat"], stars["mag_cat_err"] = mag, magerr
    if colour is not None:
        stars["colour"] = col_vals
    stars["flux"], stars["flux_err"], stars["flags"] = flux, flux_err, flags
    stars["mag_inst"], stars["mag_inst_err"] = mag_inst, mag_inst_err
    stars["zp"], stars["zp_err"] = zp_star, zp_star_err
    stars["status"] = status
    stars.meta.update(filter=filter, exptime=exptime, airmass=airmass)

    how = "weighted mean" if fit_weighting == "inverse_variance" else "mean"
    method = f"aperture; {sigma:g}-sigma clipped {how}" + (f" + {colour_name} term" if colour else "")
    return ZeroPoint(
        zp=float(params[0]),
        zp_err=float(np.sqrt(cov[0, 0])),
        nstars=int(used.sum()),
        nrejected=int((~used).sum()),
        filter=str(filter),
        exptime=exptime,
        airmass=airmass,
        method=method,
        colour_term=float(params[1]) if colour is not None else math.nan,
        colour_term_err=float(np.sqrt(cov[1, 1])) if colour is not None else math.nan,
        colour=colour_name,
        stars=stars,
    )


def fit_extinction(
    results: Sequence[ZeroPoint],
    *,
    colour: bool = False,
    sigma: float = 3.0,
    maxiters: int = 5,
    weighting: Literal["inverse_variance", "equal"] = "inverse_variance",
) -> ExtinctionFit:
    """Fit the zero point above the atmosphere and the extinction coefficient.

    Fits every valid star measurement of every image at once by (weighted) least
    squares with sigma clipping: ``zp_i = zp0 - k * X_image [+ c * colour_i]``.

    Parameters
    ----------
    results : sequence of ZeroPoint
        Zero points of images of one night and one filter, taken at different airmasses
        (from :func:`zero_point`, with their ``airmass`` set).
    colour : bool
        Fit a colour term too; needs ``zero_point(..., colour=...)`` results with the
        same colour.
    sigma, maxiters, weighting
        As in :func:`zero_point`.

    Returns
    -------
    ExtinctionFit

    Raises
    ------
    CalibrationError
        Fewer than two distinct airmasses, unknown airmass, mixed filters or colours,
        or too few stars.

    Notes
    -----
    Stars rejected by each image's own clipping are given a second chance here: the
    fit clips all measurements together.  Works on in-memory tables.

    Examples
    --------
    >>> fit = fit_extinction([zp_at_x1, zp_at_x2])  # doctest: +SKIP
    >>> fit.k, fit.k_err  # doctest: +SKIP
    """
    _check_fit_options(sigma, maxiters, weighting)
    results = list(results)
    if not results or not all(isinstance(r, ZeroPoint) for r in results):
        raise ConfigError("fit_extinction needs a non-empty list of ZeroPoint results from zero_point()")
    filters = sorted({r.filter for r in results})
    if len(filters) != 1:
        raise CalibrationError(f"fit_extinction needs one filter at a time, got {filters}; group the images by filter")
    bad = [i for i, r in enumerate(results) if not math.isfinite(r.airmass)]
    if bad:
        raise CalibrationError(
            f"images {bad} have no airmass; pass airmass= to zero_point (or an AIRMASS header value)"
        )
    if colour:
        colours = {r.colour for r in results}
        if None in colours or len(colours) != 1:
            raise CalibrationError(
                f"colour=True needs every result computed with the same colour; got {sorted(map(str, colours))}"
            )
    rows = []
    for i, r in enumerate(results):
        st = r.stars
        keep = np.isin(np.asarray(st["status"]), ("used", "clipped"))
        for j in np.flatnonzero(keep):
            rows.append((i, r.airmass, st["zp"][j], st["zp_err"][j], st["colour"][j] if colour else 0.0,
                         str(st["name"][j]) if "name" in st.colnames else ""))
    airmasses = sorted({round(r.airmass, 6) for r in results})
    if len(airmasses) < 2:
        raise CalibrationError(
            f"extinction needs standards at two or more airmasses, got only X={airmasses[0]:g}"
        )
    npar = 3 if colour else 2
    if len(rows) < npar + 1:
        raise CalibrationError(f"extinction fit needs at least {npar + 1} star measurements, got {len(rows)}")
    image, x, zp, err, col, names = (np.array(v) for v in zip(*rows, strict=True))
    design = np.column_stack([np.ones(len(x)), -x] + ([col] if colour else []))
    w = weighting if np.all(err > 0) else "equal"
    params, cov, used = _clipped_fit(zp, err, design, sigma=sigma, maxiters=maxiters, weighting=w)
    stars = Table({"image": image.astype(int), "name": names, "airmass": x, "zp": zp, "zp_err": err})
    if colour:
        stars["colour"] = col
    stars["used"] = used
    return ExtinctionFit(
        zp0=float(params[0]),
        zp0_err=float(np.sqrt(cov[0, 0])),
        k=float(params[1]),
        k_err=float(np.sqrt(cov[1, 1])),
        covariance=cov,
        nstars=int(used.sum()),
        nrejected=int((~used).sum()),
        nimages=len({int(i) for i in image[used]}),
        filter=filters[0],
        colour_term=float(params[2]) if colour else math.nan,
        colour_term_err=float(np.sqrt(cov[2, 2])) if colour else math.nan,
        stars=stars,
    )


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "nan" if not math.isfinite(value) else repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def write_zeropoints(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write the per-image zero-point table as CSV, atomically.

    Parameters
    ----------
    rows : iterable of mapping
        One mapping per image with keys ``image, object, filter, night, airmass, zp,
        zp_err, nstars`` (:data:`ZEROPOINT_COLUMNS`); extra keys become extra columns
        after those, in first-seen order.  A pandas DataFrame's ``to_dict("records")``
        works.
    path : str or os.PathLike
        Output file; its folder is created.  Written to a temporary name in the same
        folder, then renamed, so an interrupted run leaves no half file.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    CalibrationError
        A row lacks one of the required keys.

    Examples
    --------
    >>> write_zeropoints([{"image": "a.fits", "object": "SA95", "filter": "V",
    ...                    "night": "2024-03-01", "airmass": 1.2, "zp": 24.1,
    ...                    "zp_err": 0.01, "nstars": 7}], "zp.csv")  # doctest: +SKIP
    """
    rows = [dict(r) for r in rows]
    columns = list(ZEROPOINT_COLUMNS)
    for i, row in enumerate(rows):
        missing = [c for c in ZEROPOINT_COLUMNS if c not in row]
        if missing:
            raise CalibrationError(f"zero-point row {i} lacks {missing}; each row needs {list(ZEROPOINT_COLUMNS)}")
        columns += [k for k in row if k not in columns]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_format(row.get(c)) for c in columns])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def set_photzp(
    header: fits.Header,
    zp: ZeroPoint | float,
    *,
    zp_err: float | None = None,
    method: str | None = None,
    nstars: int | None = None,
    exptime: float | None = None,
    units: Literal["image", "per_second"] = "image",
) -> fits.Header:
    """Return a copy of ``header`` with the photometric zero-point cards.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header of the image the zero point applies to (not modified).
    zp : ZeroPoint or float
        Zero point for count rates (``m = -2.5 log10(flux / exptime) + zp``).  A
        :class:`ZeroPoint` also supplies ``zp_err``, ``method`` and ``nstars`` unless
        they are given.
    zp_err : float, optional
        Uncertainty of ``zp`` (mag).
    method : str, optional
        How the zero point was obtained (``PHOTZPMT``).
    nstars : int, optional
        Standard stars used (``PHOTZPN``).
    exptime : float, optional
        Exposure time (s) the image's pixel values correspond to, for ``units="image"``;
        default: the header's ``EXPTIME``, else the ZeroPoint's.
    units : {"image", "per_second"}
        ``"image"`` writes ``PHOTZP = zp + 2.5 log10(exptime)``, so that
        ``m = -2.5 log10(pixel sum) + PHOTZP`` on this image (the SExtractor/SWarp
        convention); ``"per_second"`` writes ``zp`` itself.

    Returns
    -------
    astropy.io.fits.Header
        The copy, with ``PHOTZP``, ``PHOTZPER``, ``PHOTZPMT`` and (when known) ``PHOTZPN``.

    Raises
    ------
    ConfigError
        ``units="image"`` without any exposure time, or bad values.

    Examples
    --------
    >>> from astropy.io import fits
    >>> hdr = set_photzp(fits.Header({"EXPTIME": 100.0}), 24.0, zp_err=0.01, method="test")
    >>> hdr["PHOTZP"]
    29.0
    """
    if units not in ("image", "per_second"):
        raise ConfigError(f"units must be 'image' or 'per_second', got {units!r}")
    if isinstance(zp, ZeroPoint):
        zp_err = zp.zp_err if zp_err is None else zp_err
        method = zp.method if method is None else method
        nstars = zp.nstars if nstars is None else nstars
        fallback_exptime = zp.exptime
        value = zp.zp
    else:
        value, fallback_exptime = float(zp), None
    if not math.isfinite(value):
        raise ConfigError(f"zero point must be finite, got {value!r}")
    out = header.copy()
    if units == "image":
        t = exptime if exptime is not None else out.get("EXPTIME", fallback_exptime)
        if t is None or not float(t) > 0:
            raise ConfigError(
                f"units='image' needs a positive exposure time (pass exptime= or set EXPTIME), got {t!r}"
            )
        out["PHOTZP"] = (round(value + 2.5 * math.log10(float(t)), 6), "[mag] m = -2.5 log10(pixel sum) + PHOTZP")
    else:
        out["PHOTZP"] = (round(value, 6), "[mag] m = -2.5 log10(pixel sum / EXPTIME) + PHOTZP")
    if zp_err is not None:
        out["PHOTZPER"] = (round(float(zp_err), 6), "[mag] uncertainty of PHOTZP")
    out["PHOTZPMT"] = (method or "unspecified", "how PHOTZP was obtained")
    if nstars is not None:
        out["PHOTZPN"] = (int(nstars), "standard stars used for PHOTZP")
    return out

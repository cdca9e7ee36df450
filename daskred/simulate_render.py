"""Sky and camera of the simulated observatory: the raw pixels of one exposure.

The kernels behind :func:`daskred.simulate.simulate` that make pixels: the filter bands (zero
points, extinction, sky brightness), the camera geometry and its TAN WCS, the star catalog of
the science and standard fields, the detector truth (bias structure, dark current, flats) and
the rendering of one exposure (Moffat stars, sky plane, Poisson noise, cosmic rays, bleeding,
bias, read noise and the overscan's charge-transfer tail).  When and where each exposure is
taken comes from :mod:`daskred.simulate_observe`.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

if TYPE_CHECKING:
    from .simulate_observe import _Exposure
    from .simulate import _Options


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

# Camera constants.
_PIXEL_SCALE = 0.6  # arcsec / pixel
_PRESCAN = 10
_OVERSCAN = 30
_OVERSCAN_SKIP = 5  # overscan columns left out of BIASSEC (charge-transfer tail)
_BIAS_LEVEL = 1000.0  # ADU
_FULL_WELL = 90000.0  # electrons
_OVERSAMPLE = 3  # sub-pixels per axis when integrating the PSF over a pixel


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

"""Simulated frames with known truth, and the quality figures of a combined image.

:func:`_simulate` writes float32 FITS frames of one aligned field: sky with a gentle
gradient, bright and faint Gaussian stars, Gaussian noise of the CCD model and recorded
artifacts (cosmic-ray hits, satellite trails, dithered hot pixels).  :func:`_quality`
scores a combined image against that truth: noise relative to the ideal sigma/sqrt(N),
bias, the fraction of artifact pixels that survive, good pixels wrongly rejected and the
signal-to-noise of faint stars; on the user's frames, which have no truth, a robust noise
estimate and the fraction of values rejected.  :func:`_relative_difference` compares a
result with a baseline's.

These are the figures of :func:`daskred.bench.run`; the runs that produce the images are
measured by :mod:`daskred.bench_measure`.  The module imports only numpy when loaded (it is
loaded, through :mod:`daskred.bench_measure`, by the measured runs' fresh interpreters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

# Simulated frames: sky + Gaussian stars, Gaussian noise of the CCD model, known artifacts.
_GAIN, _RDNOISE, _SKY, _FWHM = 2.0, 10.0, 1000.0, 3.0  # e-/ADU, e-, ADU, pixels
_COSMIC_RATE = 5e-4  # cosmic-ray hits per pixel per frame
_HOT_FRACTION = 1e-3  # hot pixels per detector pixel
_KINDS = ("cosmic", "trail", "hot")
_SIGNIFICANT = 8.0  # an artifact pixel counts when a plain mean would leave it this many ideal sigmas high
_VISIBLE = 5.0  # ... and it survives when the result is still this many ideal sigmas above the truth
_APERTURE = 1.5  # faint-star aperture radius, in FWHM


# =========================================================================== simulated frames
@dataclass(frozen=True)
class _Truth:
    """What the simulated frames contain, in ADU."""

    image: np.ndarray  # sky + stars, (ny, nx) float64
    sky: np.ndarray
    sigma: np.ndarray  # noise of one frame per pixel
    events: Mapping[str, np.ndarray]  # artifacts: frame, y, x, amplitude, kind (index in _KINDS)
    faint: np.ndarray  # (m, 3): x, y, flux of the faint stars
    fwhm: float

    def masks(self, nframes: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Pixels untouched by any artifact, and each kind's significant artifact pixels."""
        ev = self.events
        sel = ev["frame"] < nframes
        total = np.zeros((len(_KINDS), *self.image.shape))
        np.add.at(total, (ev["kind"][sel], ev["y"][sel], ev["x"][sel]), ev["amplitude"][sel])
        touched = total.sum(axis=0) > 0
        dominant = total.argmax(axis=0)
        ideal = self.sigma / math.sqrt(nframes)
        significant = {name: touched & (dominant == k) & (total[k] / nframes >= _SIGNIFICANT * ideal)
                       for k, name in enumerate(_KINDS)}
        return ~touched, significant

    def describe(self, nframes: int) -> dict[str, Any]:
        _, significant = self.masks(nframes)
        sel = self.events["frame"] < nframes
        return {
            "sky_adu": _SKY, "gain": _GAIN, "rdnoise": _RDNOISE, "fwhm_px": self.fwhm,
            "sigma_sky_adu": float(np.median(self.sigma)),
            "faint_stars": int(len(self.faint)),
            "faint_star_snr_single_frame": 3.0,
            "artifact_pixels_injected": {k: int((self.events["kind"][sel] == i).sum()) for i, k in enumerate(_KINDS)},
            "artifact_pixels_counted": {k: int(v.sum()) for k, v in significant.items()},
        }


def _add_stars(image: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray, fwhm: float) -> None:
    """Add pixel-integrated circular Gaussian stars to ``image`` in place."""
    from scipy.special import ndtr

    s = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    r = int(math.ceil(5 * s))
    ny, nx = image.shape
    for x0, y0, f in zip(x, y, flux):
        iy, ix = int(round(y0)), int(round(x0))
        ys = np.arange(max(iy - r, 0), min(iy + r + 1, ny))
        xs = np.arange(max(ix - r, 0), min(ix + r + 1, nx))
        if ys.size == 0 or xs.size == 0:
            continue
        py = ndtr((ys + 0.5 - y0) / s) - ndtr((ys - 0.5 - y0) / s)
        px = ndtr((xs + 0.5 - x0) / s) - ndtr((xs - 0.5 - x0) / s)
        image[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] += f * np.outer(py, px)


def _simulate(folder: Path, *, frames: int, shape: tuple[int, int], seed: int) -> tuple[list[str], _Truth]:
    """Write ``frames`` float32 FITS frames of one aligned field and return their truth.

    Every frame is the same true image (sky with a gentle gradient, bright and faint
    Gaussian stars) plus Gaussian noise of the CCD model, sigma^2 = (rdnoise/gain)^2 +
    level/gain, plus artifacts whose pixels are recorded: cosmic-ray hits (a core and some
    charge in its neighbours), a satellite trail in one frame of ten, and hot pixels of
    the detector, which land on different sky pixels in each frame because the frames
    were dithered and aligned.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    sky = _SKY * (1.0 + 0.05 * (xx / nx - 0.5) + 0.03 * (yy / ny - 0.5))
    sigma_sky = math.sqrt((_RDNOISE / _GAIN) ** 2 + _SKY / _GAIN)
    s = _FWHM / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    margin = int(math.ceil(3 * _FWHM))
    stars = np.zeros(shape)
    n_bright = max(2, ny * nx // 20000)
    peak = sigma_sky * 10 ** rng.uniform(1.7, 3.3, n_bright)  # 50 to 2000 sigma
    _add_stars(stars, rng.uniform(margin, nx - margin, n_bright), rng.uniform(margin, ny - margin, n_bright),
               peak * 2 * math.pi * s**2, _FWHM)
    n_faint = max(16, ny * nx // 4000)
    radius = _APERTURE * _FWHM
    flux = 3.0 * sigma_sky * math.sqrt(math.pi * radius**2)  # S/N 3 in one frame
    faint = np.column_stack([rng.uniform(margin, nx - margin, n_faint), rng.uniform(margin, ny - margin, n_faint),
                             np.full(n_faint, flux)])
    _add_stars(stars, faint[:, 0], faint[:, 1], faint[:, 2], _FWHM)
    image = sky + stars
    sigma = np.sqrt((_RDNOISE / _GAIN) ** 2 + image / _GAIN)

    reach = max(2, min(12, min(ny, nx) // 10), math.ceil((math.sqrt(frames) - 1) / 2) + 1)
    grid = np.array([(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)])
    dithers = grid[rng.choice(len(grid), frames, replace=False)]
    n_hot = max(4, round(_HOT_FRACTION * ny * nx))
    hot_y, hot_x = rng.integers(0, ny, n_hot), rng.integers(0, nx, n_hot)
    hot_amp = sigma_sky * np.clip(rng.lognormal(math.log(60.0), 0.5, n_hot), 15.0, 500.0)
    trail_frames = set(rng.choice(frames, max(1, frames // 10), replace=False).tolist())

    parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int]] = []
    for i in range(frames):
        n_cr = int(rng.poisson(_COSMIC_RATE * ny * nx))
        cy, cx = rng.integers(0, ny, n_cr), rng.integers(0, nx, n_cr)
        core = sigma_sky * np.clip(rng.lognormal(math.log(200.0), 0.8, n_cr), 20.0, 3000.0)
        parts.append((i, cy, cx, core, 0))
        for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            keep = (rng.random(n_cr) < 0.5) & (cy + dy >= 0) & (cy + dy < ny) & (cx + dx >= 0) & (cx + dx < nx)
            parts.append((i, cy[keep] + dy, cx[keep] + dx, core[keep] * rng.uniform(0.05, 0.35, keep.sum()), 0))
        if i in trail_frames:
            angle = rng.uniform(0, math.pi)
            py, px = rng.uniform(0.25, 0.75) * ny, rng.uniform(0.25, 0.75) * nx
            d = np.abs((xx - px) * math.sin(angle) - (yy - py) * math.cos(angle))
            ty, tx = np.nonzero(d < 4.0)
            parts.append((i, ty, tx, 100.0 * sigma_sky * np.exp(-0.5 * d[ty, tx] ** 2), 1))
        hy, hx = hot_y + dithers[i, 0], hot_x + dithers[i, 1]
        keep = (hy >= 0) & (hy < ny) & (hx >= 0) & (hx < nx)
        parts.append((i, hy[keep], hx[keep], hot_amp[keep], 2))
    events = {
        "frame": np.concatenate([np.full(len(p[1]), p[0], np.int32) for p in parts]),
        "y": np.concatenate([p[1] for p in parts]).astype(np.int32),
        "x": np.concatenate([p[2] for p in parts]).astype(np.int32),
        "amplitude": np.concatenate([p[3] for p in parts]).astype(np.float64),
        "kind": np.concatenate([np.full(len(p[1]), p[4], np.int8) for p in parts]),
    }

    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(frames):
        data = image + rng.standard_normal(shape) * sigma
        sel = events["frame"] == i
        np.add.at(data, (events["y"][sel], events["x"][sel]), events["amplitude"][sel])
        header = fits.Header()
        header.update({"IMAGETYP": "LIGHT", "OBJECT": "bench", "EXPTIME": 60.0, "GAIN": _GAIN,
                       "RDNOISE": _RDNOISE, "BUNIT": "adu", "DATE-OBS": f"2024-03-12T03:{i // 60:02d}:{i % 60:02d}"})
        path = folder / f"bench{i:04d}.fits"
        fits.PrimaryHDU(data.astype(np.float32), header=header).writeto(path, overwrite=True)
        paths.append(str(path))
    truth = _Truth(image=image, sky=sky, sigma=sigma, events=MappingProxyType(events), faint=faint, fwhm=_FWHM)
    return paths, truth


# =========================================================================== quality
def _quality(image: np.ndarray, counts: Mapping[str, np.ndarray] | None, truth: _Truth | None,
             nframes: int) -> dict[str, Any]:
    """Quality figures of one combined image (against the truth when there is one)."""
    out: dict[str, Any] = {"nan_pixels": int(np.isnan(image).sum()), "noise_est": _noise_estimate(image)}
    if counts is not None:
        rejected = counts["rejected_low"].astype(np.int64) + counts["rejected_high"]
    if truth is None:
        if counts is not None:
            out["rejected_fraction"] = float(rejected.sum() / (nframes * image.size))
        return out
    clean, significant = truth.masks(nframes)
    ideal = truth.sigma / math.sqrt(nframes)
    z = (image - truth.image) / ideal
    zc = z[clean & np.isfinite(z)]
    out["noise_ratio"] = float(np.std(zc)) if zc.size > 1 else None
    out["bias_sigma"] = float(np.mean(zc)) if zc.size else None
    for name, mask in significant.items():
        hits = z[mask]
        out[f"survive_{name}"] = float(np.mean(np.nan_to_num(hits, nan=0.0) > _VISIBLE)) if hits.size else None
    out["rejected_good"] = float(rejected[clean].sum() / (nframes * clean.sum())) if counts is not None else None
    # faint stars: aperture sums over the known sky, noise from star-free clean pixels
    stars = truth.image - truth.sky
    background = clean & (stars < 0.01 * truth.sigma) & np.isfinite(image)
    noise = float(np.std((image - truth.image)[background]))
    radius = _APERTURE * truth.fwhm
    ny, nx = image.shape
    snr, ratio = [], []
    for x0, y0, total in truth.faint:
        ys = slice(max(0, int(y0 - radius)), min(ny, int(y0 + radius) + 2))
        xs = slice(max(0, int(x0 - radius)), min(nx, int(x0 + radius) + 2))
        yy, xx = np.mgrid[ys, xs]
        inside = (yy - y0) ** 2 + (xx - x0) ** 2 <= radius**2
        alone = np.zeros(inside.shape)  # this star without its neighbours
        _add_stars(alone, np.array([x0 - xs.start]), np.array([y0 - ys.start]), np.array([total]), truth.fwhm)
        residual = (image - truth.image)[ys, xs][inside]
        good = np.isfinite(residual)
        if good.sum() < 0.9 * inside.sum():
            continue
        true_flux = alone[inside].sum()
        flux = true_flux + residual[good].sum() * inside.sum() / good.sum()
        snr.append(flux / (noise * math.sqrt(inside.sum())) if noise > 0 else math.inf)
        ratio.append(flux / true_flux)
    out["faint_snr"] = float(np.median(snr)) if snr else None
    out["faint_flux_ratio"] = float(np.median(ratio)) if ratio else None
    return out


def _noise_estimate(image: np.ndarray) -> float | None:
    """Robust pixel-to-pixel noise (1.4826 MAD of neighbour differences / sqrt 2)."""
    d = np.diff(image, axis=-1).ravel()
    d = d[np.isfinite(d)]
    if d.size < 10:
        return None
    return float(1.482602218505602 * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0))


def _relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest ``|a - b| / |b|`` over pixels (inf where only one of them is NaN)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return math.inf
    good = ~nan_a
    if not good.any():
        return 0.0
    scale = np.abs(b[good])
    floor = 1e-6 * float(scale.max()) if scale.max() > 0 else 1.0
    return float(np.max(np.abs(a[good] - b[good]) / np.maximum(scale, floor)))

"""Benchmark combine strategies side by side: speed, memory and quality.

:func:`run` combines the same frames with several strategies (median, mean, sigma / MAD /
min-max / winsorized / CCD-noise clipping ...) and reports, for each one, the wall time,
throughput, CPU use and peak memory, and — on simulated frames whose truth is known —
the noise of the result relative to the ideal sigma/sqrt(N), its bias, the fraction of
injected cosmic rays, satellite-trail and hot pixels that survive, the fraction of good
pixels wrongly rejected and the signal-to-noise of faint stars.  Baselines run in the same
benchmark on the same files: numpy/bottleneck on an in-memory cube and
``ccdproc.combine`` with matching settings, so every figure is also a ratio, and their
results are compared with daskred's (maximum relative difference).

Each measured run happens in a fresh Python process (``isolate=True``): its peak memory
(Linux: the process high-water mark, reset after imports; elsewhere ``ru_maxrss``) and
CPU time are its own, and so are those of the worker processes of the ``processes`` and
``distributed`` schedulers.  Imports, the start of a cluster and the first call of the
compiled kernels happen before the clock starts.

The module imports only numpy when loaded: the measured runs load this file in fresh
interpreters, where the baselines should not pay for importing dask and daskred.

>>> import daskred as dr
>>> result = dr.bench.run(frames=20, size=(512, 768), out="bench/")     # doctest: +SKIP
>>> print(result.to_markdown())                                         # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import numpy as np

__all__ = ["run", "main", "BenchResult", "STRATEGIES", "DEFAULT_METHODS", "Scheduler", "Sweep", "Baseline"]

Scheduler = Literal["threads", "processes", "distributed"]
Sweep = Literal["frames", "size", "chunks", "scheduler"]
Baseline = Literal["numpy", "ccdproc"]

#: Named combine strategies: keyword arguments of :func:`daskred.combine`.
STRATEGIES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "mean": MappingProxyType({"method": "mean"}),
    "median": MappingProxyType({"method": "median"}),
    "sigma": MappingProxyType({"method": "mean", "clip": "sigma", "sigma": 3.0, "maxiters": 5,
                               "cenfunc": "median", "stdfunc": "std"}),
    "mad": MappingProxyType({"method": "mean", "clip": "mad", "sigma": 3.0, "maxiters": 5}),
    "minmax": MappingProxyType({"method": "mean", "clip": "minmax", "nlow": 1, "nhigh": 1}),
    "percentile": MappingProxyType({"method": "mean", "clip": "percentile", "percentiles": (10.0, 90.0)}),
    "winsorized": MappingProxyType({"method": "mean", "clip": "winsorized", "sigma": 3.0, "maxiters": 5}),
    "ccdclip": MappingProxyType({"method": "mean", "clip": "ccdclip", "sigma": 3.0, "maxiters": 5}),
})
#: Strategies run by default.
DEFAULT_METHODS = ("mean", "median", "sigma", "mad", "minmax", "winsorized", "ccdclip")

# Simulated frames: sky + Gaussian stars, Gaussian noise of the CCD model, known artifacts.
_GAIN, _RDNOISE, _SKY, _FWHM = 2.0, 10.0, 1000.0, 3.0  # e-/ADU, e-, ADU, pixels
_COSMIC_RATE = 5e-4  # cosmic-ray hits per pixel per frame
_HOT_FRACTION = 1e-3  # hot pixels per detector pixel
_KINDS = ("cosmic", "trail", "hot")
_SIGNIFICANT = 8.0  # an artifact pixel counts when a plain mean would leave it this many ideal sigmas high
_VISIBLE = 5.0  # ... and it survives when the result is still this many ideal sigmas above the truth
_APERTURE = 1.5  # faint-star aperture radius, in FWHM

# A measuring subprocess loads this file as ``daskred.bench`` inside a bare ``daskred``
# package, so that ``daskred.combine`` imports only what it needs (io, errors) rather than
# every stage the package's ``__init__`` exports; anything else falls back to the package.
_CHILD = """
import importlib.util, json, os, sys, types
bench, job = sys.argv[1], sys.argv[2]
package = types.ModuleType("daskred")
package.__path__ = [os.path.dirname(bench)]
sys.modules["daskred"] = package
with open(job) as fh:
    impl = json.load(fh)["impl"]
if impl == "daskred":
    try:
        import daskred.combine, daskred.io
    except ImportError:
        for name in [m for m in sys.modules if m == "daskred" or m.startswith("daskred.")]:
            del sys.modules[name]
        import daskred
spec = importlib.util.spec_from_file_location("daskred.bench", bench)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
sys.exit(module._child_main(job))
"""


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


# =========================================================================== baselines
def _options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Combine keywords from JSON (lists back to tuples)."""
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items()}


def _ccdproc_settings(options: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any], str]:
    """``ccdproc.combine`` keywords matching ``options``, the daskred options they equal, a note."""
    method = {"mean": "average", "median": "median"}.get(options.get("method", "median"))
    extra = set(options) - {"method", "clip", "sigma", "sigma_lower", "sigma_upper", "maxiters", "cenfunc",
                            "stdfunc", "nlow", "nhigh", "low", "high"}
    if method is None or extra:
        return None, dict(options), "no ccdproc.combine equivalent"
    clip = options.get("clip")
    kw: dict[str, Any] = {"method": method}
    same = dict(options)
    note = ""
    if clip in ("sigma", "mad"):
        sigma = float(options.get("sigma", 3.0))
        kw.update(sigma_clip=True,
                  sigma_clip_low_thresh=float(options.get("sigma_lower") or sigma),
                  sigma_clip_high_thresh=float(options.get("sigma_upper") or sigma),
                  sigma_clip_func="median" if clip == "mad" else options.get("cenfunc", "median"),
                  sigma_clip_dev_func="mad_std" if clip == "mad" else options.get("stdfunc", "std"))
        if options.get("maxiters", 5) != 1:
            same["maxiters"] = 1
            note = "ccdproc.combine clips once (maxiters=1); compared with daskred at maxiters=1"
    elif clip == "minmax":
        kw.update(clip_extrema=True, nlow=int(options.get("nlow", 1)), nhigh=int(options.get("nhigh", 1)))
    elif clip == "range":
        kw.update(minmax_clip=True, minmax_clip_min=options.get("low"), minmax_clip_max=options.get("high"))
    elif clip is not None:
        return None, same, f"ccdproc.combine has no {clip!r} rejection"
    return kw, same, note


def _numpy_supported(options: Mapping[str, Any]) -> bool:
    extra = set(options) - {"method", "clip", "sigma", "sigma_lower", "sigma_upper", "maxiters", "cenfunc",
                            "stdfunc", "nlow", "nhigh", "low", "high"}
    return (not extra and options.get("method", "median") in ("mean", "median", "sum")
            and options.get("clip") in (None, "sigma", "mad", "minmax", "range"))


def _numpy_combine(cube: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
    """The combine a notebook would write: astropy sigma_clip / sort, then bottleneck/numpy."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        return _numpy_reduce(cube, options)


def _numpy_reduce(cube: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
    import bottleneck as bn

    clip = options.get("clip")
    data = cube
    sigma = float(options.get("sigma", 3.0))
    lower, upper = options.get("sigma_lower") or sigma, options.get("sigma_upper") or sigma
    stdfunc = "mad_std" if clip == "mad" else options.get("stdfunc", "std")
    if clip in ("sigma", "mad") and stdfunc == "std":
        from astropy.stats import sigma_clip

        data = sigma_clip(cube, axis=0, masked=False, copy=True, maxiters=options.get("maxiters", 5),
                          sigma_lower=lower, sigma_upper=upper, stdfunc="std",
                          cenfunc="median" if clip == "mad" else options.get("cenfunc", "median"))
    elif clip in ("sigma", "mad"):
        # astropy's fast path takes another middle value of even samples for mad_std, and its
        # path for callables is slow: the same iteration with bottleneck, on the float32 cube
        data = cube.copy()
        maxiters = options.get("maxiters", 5)
        done = 0
        while maxiters is None or done < maxiters:
            done += 1
            with np.errstate(invalid="ignore"):
                median = bn.nanmedian(data, axis=0)
                center = median if clip == "mad" or options.get("cenfunc", "median") == "median" \
                    else np.nanmean(data, axis=0, dtype=np.float64)
                spread = 1.482602218505602 * bn.nanmedian(np.abs(data - median), axis=0)
                out = (data < center - lower * spread) | (data > center + upper * spread)
            if not out.any():
                break
            data[out] = np.nan
    elif clip == "minmax":
        n = cube.shape[0]
        data = np.sort(cube, axis=0)[int(options.get("nlow", 1)):n - int(options.get("nhigh", 1))]
    elif clip == "range":
        data = np.where((cube < options.get("low", -np.inf)) | (cube > options.get("high", np.inf)), np.nan, cube)
    method = options.get("method", "median")
    if method == "median":
        return bn.nanmedian(data, axis=0).astype(np.float32)
    if method == "sum":
        return np.nansum(data, axis=0, dtype=np.float64).astype(np.float32)
    return np.nanmean(data, axis=0, dtype=np.float64).astype(np.float32)


# =========================================================================== measuring
def _status_kb(pid: int | str, key: str) -> int | None:
    """A ``kB`` line of ``/proc/<pid>/status`` (Linux), None elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _reset_peak(pid: int | str) -> bool:
    """Reset the resident-memory high-water mark of a process (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rss_kb() -> int:
    now = _status_kb("self", "VmRSS")
    if now is not None:
        return now
    try:
        import psutil

        return int(psutil.Process().memory_info().rss // 1024)
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return 0


def _maxrss_kb() -> int:
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value // 1024) if sys.platform == "darwin" else int(value)


class _Meter:
    """Wall time, CPU time and peak memory of what runs between start() and stop()."""

    def __init__(self, *, isolated: bool, watch_children: bool) -> None:
        self.isolated = isolated
        self.watch_children = watch_children

    def _children(self) -> list[Any]:
        if not self.watch_children:
            return []
        try:
            import psutil

            return psutil.Process().children(recursive=True)
        except (ImportError, OSError):
            return []

    def start(self) -> None:
        import tracemalloc

        gc.collect()
        self.before: dict[int, tuple[Any, float, int]] = {}
        for child in self._children():
            with contextlib.suppress(Exception):
                times = child.cpu_times()
                _reset_peak(child.pid)
                self.before[child.pid] = (child, times.user + times.system, int(child.memory_info().rss // 1024))
        if self.isolated:
            self.rss0 = _rss_kb()
            self.reset = _reset_peak("self")
        else:
            self.started_tracing = not tracemalloc.is_tracing()
            if self.started_tracing:
                tracemalloc.start()
            tracemalloc.reset_peak()
            self.traced0 = tracemalloc.get_traced_memory()[0]
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        import tracemalloc

        seconds = time.perf_counter() - self.t0
        cpu = time.process_time() - self.cpu0
        if self.isolated:
            peak_kb = _status_kb("self", "VmHWM") if self.reset else None
            if peak_kb is None:
                peak_kb = _maxrss_kb()
            process_mb = max(0, peak_kb - self.rss0) / 1024.0
            method = "high-water mark" if self.reset else "ru_maxrss"
        else:
            process_mb = max(0, tracemalloc.get_traced_memory()[1] - self.traced0) / 2**20
            if self.started_tracing:
                tracemalloc.stop()
            method = "tracemalloc"
        workers = []
        for child in self._children():
            with contextlib.suppress(Exception):
                times = child.cpu_times()
                _, cpu0, rss0 = self.before.get(child.pid, (child, 0.0, 0))
                cpu += times.user + times.system - cpu0
                peak = _status_kb(child.pid, "VmHWM") if child.pid in self.before else None
                if peak is None:
                    peak = int(child.memory_info().rss // 1024)
                workers.append(max(0, peak - rss0) / 1024.0)
        workers = [w for w in sorted(workers, reverse=True) if w > 0.5]
        return {"seconds": seconds, "cpu_seconds": cpu, "peak_process_mb": process_mb,
                "peak_workers_mb": workers, "peak_mb": process_mb + sum(workers), "memory_method": method}


def _open(job: Mapping[str, Any]) -> Any:
    from daskred.io import open_frames

    paths = [p for p, _ in job["paths"]]
    return open_frames(paths, hdu=int(job["paths"][0][1]))


def _warm_up(options: Mapping[str, Any]) -> None:
    """Call the strategy once on a tiny cube, so compiled kernels load before the clock starts."""
    import xarray as xr

    from daskred.combine import combine

    tiny = xr.DataArray(np.random.default_rng(0).normal(100.0, 1.0, (7, 3, 5)).astype(np.float32),
                        dims=("frame", "y", "x"))
    extra = {"gain": 1.0, "rdnoise": 1.0} if options.get("clip") == "ccdclip" else {}
    combine(tiny, with_counts=True, **{**options, **extra}).compute(scheduler="sync")


def _prepare_daskred(job: Mapping[str, Any], stack: contextlib.ExitStack) -> tuple[Callable, Callable]:
    from daskred.combine import combine

    options = _options(job["options"])
    _warm_up(options)
    scheduler, workers = job["scheduler"], int(job["workers"])
    how: dict[str, Any] = {}
    if scheduler == "threads":
        how = {"scheduler": "threads", "num_workers": workers}
    elif scheduler == "processes":
        import concurrent.futures
        import multiprocessing

        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        stack.callback(pool.shutdown)
        list(pool.map(_warm_up, [options] * (2 * workers)))
        how = {"scheduler": "processes", "pool": pool}
    else:
        import logging

        from distributed import Client, LocalCluster

        cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                   dashboard_address=None, silence_logs=logging.ERROR))
        client = stack.enter_context(Client(cluster))
        client.run(_warm_up, options)
    band = job.get("band")

    def compute() -> tuple[np.ndarray, dict[str, Any]]:
        result = combine(_open(job), band=band, **options)
        return np.asarray(result.compute(**how).values), {"band_rows": int(max(result.data.chunks[0]))}

    def extras() -> dict[str, np.ndarray]:
        ds = combine(_open(job), band=band, with_counts=True, **options).compute(**how)
        return {k: ds[k].values for k in ("count", "rejected_low", "rejected_high")}

    return compute, extras


def _prepare_numpy(job: Mapping[str, Any], stack: contextlib.ExitStack) -> tuple[Callable, None]:
    from astropy.io import fits

    options = _options(job["options"])
    _numpy_combine(np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32), options)

    def compute() -> tuple[np.ndarray, dict[str, Any]]:
        cube = np.stack([np.asarray(fits.getdata(p, ext=int(h)), dtype=np.float32) for p, h in job["paths"]])
        return _numpy_combine(cube, options), {}

    return compute, None


def _prepare_ccdproc(job: Mapping[str, Any], stack: contextlib.ExitStack) -> tuple[Callable, None]:
    import warnings

    import ccdproc

    kwargs, _, _ = _ccdproc_settings(_options(job["options"]))
    if kwargs is None:
        raise ValueError(f"no ccdproc equivalent of {job['options']}")
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    paths = [p for p, _ in job["paths"]]

    def compute() -> tuple[np.ndarray, dict[str, Any]]:
        out = ccdproc.combine(paths, hdu=int(job["paths"][0][1]), unit="adu", **kwargs)
        return np.asarray(out.data, dtype=np.float32), {}

    return compute, None


def _execute(job: Mapping[str, Any], *, isolated: bool) -> dict[str, Any]:
    """Run one measured combine in this process; save the result arrays to ``job["save"]``."""
    prepare = {"daskred": _prepare_daskred, "numpy": _prepare_numpy, "ccdproc": _prepare_ccdproc}[job["impl"]]
    with contextlib.ExitStack() as stack:
        compute, extras = prepare(job, stack)
        meter = _Meter(isolated=isolated, watch_children=job["impl"] == "daskred" and job["scheduler"] != "threads")
        meter.start()
        image, info = compute()
        figures = meter.stop()
        figures.update(info)
        arrays = extras() if extras is not None else {}
    np.savez(job["save"], image=image, **arrays)
    return figures


def _child_main(job_path: str) -> int:
    """Entry point of a measuring subprocess: run the job, print its figures as JSON."""
    with open(job_path) as fh:
        job = json.load(fh)
    figures = _execute(job, isolated=True)
    print(json.dumps(figures))
    return 0


def _spawn(job: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    spec = folder / (Path(job["save"]).stem + ".json")
    spec.write_text(json.dumps(job))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(Path(__file__).resolve()), str(spec)],
                          capture_output=True, text=True, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"error": tail[-1] if tail else f"exit code {proc.returncode}"}
    return json.loads(lines[-1])


# =========================================================================== the benchmark
@dataclass(frozen=True)
class _Dataset:
    key: str
    paths: tuple[tuple[str, int], ...]
    shape: tuple[int, int]
    truth: _Truth | None
    ccd_model: bool  # frames carry one common gain and read noise

    @property
    def frames(self) -> int:
        return len(self.paths)

    def subset(self, n: int) -> _Dataset:
        return replace(self, key=f"{self.key}[:{n}]", paths=self.paths[:n])


@dataclass(frozen=True)
class BenchResult:
    """Every figure of one benchmark run.

    Attributes
    ----------
    config : dict
        The settings of the run (frames, size, strategies, scheduler ...).
    machine : dict
        Platform, CPU, cores, memory, package versions and load averages.
    rows : list of dict
        One row per (strategy, implementation) on the main data set: time, throughput,
        CPU use, peak memory, ratios to the baselines, quality figures, agreement.
    sweeps : dict of str to list of dict
        Rows of each sweep ("frames", "size", "chunks", "scheduler").
    truth : dict or None
        Description of the simulated data (None for the user's frames).
    notes : list of str
        What was skipped and why, and how figures are defined.
    files : dict of str to str
        Files written (JSON, markdown, PNG plots).
    """

    config: dict[str, Any]
    machine: dict[str, Any]
    rows: list[dict[str, Any]]
    sweeps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    truth: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-compatible values (NaN and inf become None)."""
        return _jsonable({"config": self.config, "machine": self.machine, "truth": self.truth,
                          "rows": self.rows, "sweeps": self.sweeps, "notes": self.notes, "files": self.files})

    def to_json(self) -> str:
        """Every figure and the machine description as a JSON document."""
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        """Markdown tables: speed and memory, quality, then one table per sweep."""
        return _markdown(self)

    def summary(self) -> str:
        """A short ranked summary of the daskred strategies, for the terminal."""
        return _summary(self)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _ncores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _machine() -> dict[str, Any]:
    from importlib import metadata

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    memory = None
    with contextlib.suppress(ImportError):
        import psutil

        memory = psutil.virtual_memory().total / 2**30
    versions = {}
    for name in ("daskred", "numpy", "dask", "distributed", "xarray", "astropy", "bottleneck", "numba", "ccdproc"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cores": _ncores(), "logical_cpus": os.cpu_count(), "memory_gib": memory, "versions": versions}


def _available_memory() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        return math.inf


class _Runner:
    """Runs measured combines, caches their rows, adds quality figures."""

    def __init__(self, *, folder: Path, isolate: bool, repeat: int, workers: int, ncores: int,
                 log: Callable[[str], None]) -> None:
        self.folder, self.isolate, self.repeat = folder, isolate, repeat
        self.workers, self.ncores, self.log = workers, ncores, log
        self.rows: dict[tuple, dict[str, Any]] = {}
        self.images: dict[tuple, Path] = {}
        self.count = 0

    def case(self, ds: _Dataset, name: str, options: Mapping[str, Any], impl: str, *,
             band: int | None = None, scheduler: str = "threads") -> dict[str, Any]:
        if impl != "daskred":
            band, scheduler = None, "-"
        key = (ds.key, name, impl, band, scheduler)
        if key in self.rows:
            return self.rows[key]
        self.count += 1
        save = self.folder / f"run{self.count:04d}.npz"
        job = {"impl": impl, "options": dict(options), "paths": [list(p) for p in ds.paths], "band": band,
               "scheduler": scheduler, "workers": self.workers, "save": str(save)}
        best: dict[str, Any] | None = None
        for _ in range(self.repeat):
            figures = _spawn(job, self.folder) if self.isolate else self._in_process(job)
            if "error" in figures:
                best = figures
                break
            if best is None or figures["seconds"] < best["seconds"]:
                peak = max(figures["peak_mb"], best["peak_mb"]) if best else figures["peak_mb"]
                best = {**figures, "peak_mb": peak}
        assert best is not None
        ny, nx = ds.shape
        row: dict[str, Any] = {"strategy": name, "implementation": impl, "frames": ds.frames, "ny": ny, "nx": nx,
                               "mpix_frame": ny * nx / 1e6,
                               "band": "-" if impl != "daskred" else "auto" if band is None else band,
                               "scheduler": scheduler, "options": dict(options)}
        if "error" in best:
            row["error"] = best["error"]
            self.log(f"{name:>10} {impl:>8} {ds.frames:4d} x {ny}x{nx}: FAILED {best['error']}")
        else:
            seconds = best["seconds"]
            row.update({k: v for k, v in best.items() if k != "cpu_seconds"})
            row["mpix_per_s"] = ds.frames * ny * nx / 1e6 / seconds
            row["cpu_utilisation"] = best["cpu_seconds"] / (seconds * self.ncores)
            with np.load(save) as arrays:
                image = arrays["image"]
                counts = {k: arrays[k] for k in ("count", "rejected_low", "rejected_high") if k in arrays}
            row.update(_quality(image, counts or None, ds.truth, ds.frames))
            self.images[key] = save
            where = f" band {row['band']} {scheduler}" if impl == "daskred" else ""
            self.log(f"{name:>10} {impl:>8} {ds.frames:4d} x {ny}x{nx}{where}: {seconds:7.2f} s, "
                     f"peak {row['peak_mb']:7.1f} MB")
        self.rows[key] = row
        return row

    def _in_process(self, job: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return _execute(job, isolated=False)
        except Exception as err:  # a failing strategy is reported in its row, the benchmark goes on
            return {"error": f"{type(err).__name__}: {err}"}

    def image(self, ds: _Dataset, name: str, impl: str, band: int | None = None,
              scheduler: str = "threads") -> np.ndarray | None:
        key = (ds.key, name, impl, band, scheduler) if impl == "daskred" else (ds.key, name, impl, None, "-")
        path = self.images.get(key)
        if path is None:
            return None
        with np.load(path) as arrays:
            return arrays["image"]


def _add_ratios(rows: Iterable[dict[str, Any]]) -> None:
    """Time and memory of each daskred row relative to the baselines on the same data."""
    rows = list(rows)
    for row in rows:
        if row["implementation"] != "daskred" or "error" in row:
            continue
        for base in ("numpy", "ccdproc"):
            ref = next((r for r in rows if r["implementation"] == base and r["strategy"] == row["strategy"]
                        and r["frames"] == row["frames"] and (r["ny"], r["nx"]) == (row["ny"], row["nx"])
                        and "error" not in r), None)
            if ref is not None:
                row[f"time_vs_{base}"] = row["seconds"] / ref["seconds"]
                row[f"memory_vs_{base}"] = row["peak_mb"] / ref["peak_mb"] if ref["peak_mb"] > 0 else None


def _agreement(runner: _Runner, ds: _Dataset, name: str, options: Mapping[str, Any], row: dict[str, Any],
               band: int | None, scheduler: str) -> None:
    """Largest relative difference between daskred's result and each baseline's."""
    import dask

    from .combine import combine
    from .io import open_frames

    mine = runner.image(ds, name, "daskred", band, scheduler)
    if mine is None:
        return
    for base in ("numpy", "ccdproc"):
        ref = runner.image(ds, name, base)
        if ref is None:
            continue
        ours = mine
        if base == "ccdproc":
            _, same, note = _ccdproc_settings(options)
            if same != dict(options):
                frames = open_frames([p for p, _ in ds.paths], hdu=ds.paths[0][1])
                with dask.config.set(scheduler="threads"):
                    ours = combine(frames, **same).values
            if note:
                row["ccdproc_note"] = note
        row[f"agreement_{base}"] = _relative_difference(ours, ref)


def _validate(data: Any, frames: int, size: tuple[int, int], methods: Any, chunks: Sequence[int | None],
              scheduler: str, sweep: Sequence[str], baselines: Sequence[str], repeat: int,
              workers: int | None) -> dict[str, dict[str, Any]]:
    import inspect

    import xarray as xr

    from .combine import combine
    from .errors import ConfigError

    def choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}")

    choice("scheduler", scheduler, get_args(Scheduler))
    for s in sweep:
        choice("sweep", s, get_args(Sweep))
    for b in baselines:
        choice("baselines", b, get_args(Baseline))
    if int(frames) < 3:
        raise ConfigError(f"frames must be at least 3 to compare rejection strategies, got {frames}")
    if len(size) != 2 or min(int(n) for n in size) < 16:
        raise ConfigError(f"size must be (rows, columns), each at least 16, got {size!r}")
    if int(repeat) < 1:
        raise ConfigError(f"repeat must be at least 1, got {repeat}")
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if not chunks:
        raise ConfigError("chunks needs at least one band height (or None for combine's memory budget)")
    for band in chunks:
        if band is not None and int(band) < 1:
            raise ConfigError(f"band heights in chunks must be positive rows or None, got {band!r}")
    if data is not None and "size" in sweep:
        raise ConfigError("sweep='size' needs simulated frames; drop --data or the size sweep")
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        strategies = {str(k): dict(v) for k, v in methods.items()}
    else:
        unknown = [m for m in methods if m not in STRATEGIES]
        if unknown:
            raise ConfigError(f"unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)} "
                              "(or pass a mapping of names to daskred.combine keywords)")
        strategies = {m: dict(STRATEGIES[m]) for m in methods}
    if not strategies:
        raise ConfigError("methods is empty: name at least one strategy, e.g. methods=('median', 'sigma')")
    allowed = set(inspect.signature(combine).parameters) - {"frames", "with_counts", "band"}
    tiny = xr.DataArray(np.zeros((3, 2, 2), np.float32), dims=("frame", "y", "x"))
    for name, options in strategies.items():
        bad = sorted(set(options) - allowed)
        if bad:
            raise ConfigError(f"strategy {name!r}: {bad[0]!r} is not a daskred.combine keyword; "
                              f"use {', '.join(sorted(allowed))}")
        trial = {**options, **({"gain": 1.0, "rdnoise": 1.0} if options.get("clip") == "ccdclip" else {})}
        try:
            combine(tiny, **trial)  # builds a graph only: checks every value
        except ConfigError as err:
            raise ConfigError(f"strategy {name!r}: {err}") from err
    return strategies


def _user_dataset(data: Any) -> _Dataset:
    from .collection import scan
    from .errors import ConfigError, FitsFileError

    table = scan(data if isinstance(data, (str, os.PathLike)) else list(data), on_error="skip")
    if table.empty:
        raise FitsFileError(f"no FITS frames found in {data}; point --data at a folder of FITS images")
    if table["path"].duplicated().any():
        raise ConfigError(f"files in {data} hold several image HDUs; benchmark a folder of single-image files")
    shapes = list(zip(table["ny"].astype(int), table["nx"].astype(int)))
    common = max(set(shapes), key=shapes.count)
    keep = [s == common for s in shapes]
    table = table[keep].sort_values("path")
    if len(table) < 3:
        raise ConfigError(f"{data}: need at least 3 frames of one shape, found {len(table)} of {common[0]}x{common[1]}")
    ccd = all(c in table.columns for c in ("gain", "rdnoise")) and all(
        np.isfinite(table[c].astype(float)).all() and table[c].astype(float).nunique() == 1 for c in ("gain", "rdnoise"))
    paths = tuple((str(p), int(h)) for p, h in zip(table["path"], table["hdu"]))
    return _Dataset(key=f"data:{data}", paths=paths, shape=common, truth=None, ccd_model=bool(ccd))


def run(
    data: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    frames: int = 20,
    size: tuple[int, int] = (512, 768),
    methods: Sequence[str] | Mapping[str, Mapping[str, Any]] = DEFAULT_METHODS,
    chunks: Sequence[int | None] = (None,),
    scheduler: Scheduler = "threads",
    workers: int | None = None,
    sweep: Sequence[Sweep] = ("frames",),
    baselines: Sequence[Baseline] = ("numpy", "ccdproc"),
    out: str | os.PathLike | None = "daskred-bench",
    repeat: int = 1,
    isolate: bool = True,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Benchmark combine strategies on the same frames: speed, memory and quality.

    Parameters
    ----------
    data : path, glob or list of paths, optional
        The user's frames (one image HDU per file; the most common shape is used).  By
        default ``frames`` frames of ``size`` are simulated with known truth.
    frames : int
        Number of simulated frames.
    size : (int, int)
        Rows and columns of a simulated frame.
    methods : sequence of str or mapping
        Strategy names from :data:`STRATEGIES`, or a mapping of names to
        :func:`daskred.combine` keywords.
    chunks : sequence of int or None
        Band heights (rows per combine block); None lets :func:`daskred.combine` choose from
        its memory budget.  The main table uses the first; the ``chunks`` sweep runs them
        all (a default ladder when only one is given).
    scheduler : {"threads", "processes", "distributed"}
        Where daskred's graph runs: the threaded scheduler, a pool of processes, or a
        ``distributed.LocalCluster`` (one thread per worker process).
    workers : int, optional
        Threads or processes; default: the cores available to this process.
    sweep : sequence of {"frames", "size", "chunks", "scheduler"}
        Sweeps to run after the main table (for the first two strategies among median and
        sigma, or the first two given): number of frames (N/4, N/2, N), frame size (half,
        same, double each side), band height, and scheduler.
    baselines : sequence of {"numpy", "ccdproc"}
        Baselines run with matching settings where one exists (numpy on an in-memory cube
        only when it fits comfortably in the memory available).
    out : path-like or None
        Folder for ``bench.json``, ``bench.md`` and the PNG plots; None writes nothing.
    repeat : int
        Runs of each measurement; the fastest is kept (and the largest peak memory).
    isolate : bool
        Measure each run in a fresh Python process (True), or in this process (False:
        faster, memory from :mod:`tracemalloc`, for tests and quick looks).
    seed : int
        Seed of the simulated frames.
    log : callable, optional
        Called with one line of progress per measured run.

    Returns
    -------
    BenchResult
        Every figure; ``to_json()``, ``to_markdown()`` and ``summary()`` format them.

    Raises
    ------
    ConfigError
        An unknown strategy, scheduler, sweep or baseline, or an impossible setting.

    Notes
    -----
    Computes (it is a benchmark).  Simulated frames are float32 FITS files in a temporary
    folder, so daskred really reads files, as do the baselines.  Quality figures on
    simulated data: ``noise_ratio`` is the standard deviation of (result - truth) /
    (sigma / sqrt(N)) over pixels no artifact touched; ``bias_sigma`` its mean;
    ``survive_<kind>`` the fraction of artifact pixels (those a plain mean would leave at
    least 8 ideal sigma high) still more than 5 ideal sigma high in the result;
    ``rejected_good`` the fraction of values of untouched pixels that the rejection
    dropped; ``faint_snr`` the median aperture S/N of faint stars (3 in one frame).
    ``agreement_<baseline>`` is the largest relative difference between daskred's result
    and the baseline's (for ccdproc, whose sigma clipping always stops after one
    iteration, daskred's result at ``maxiters=1``).

    Examples
    --------
    >>> result = dr.bench.run(frames=12, size=(256, 384), methods=("median", "sigma"),
    ...                       sweep=(), out="bench/")                  # doctest: +SKIP
    >>> print(result.summary())                                         # doctest: +SKIP
    """
    strategies = _validate(data, frames, size, methods, chunks, scheduler, sweep, baselines, repeat, workers)
    emit = log or (lambda line: None)
    ncores = _ncores()
    nworkers = int(workers or ncores)
    machine = _machine()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    notes: list[str] = []
    band0 = None if chunks[0] is None else int(chunks[0])
    sweeps: dict[str, list[dict[str, Any]]] = {}
    have_ccdproc = True
    try:
        import ccdproc  # noqa: F401
    except ImportError:
        have_ccdproc = False
        if "ccdproc" in baselines:
            notes.append("ccdproc is not installed: no ccdproc baseline")

    with tempfile.TemporaryDirectory(prefix="daskred-bench-") as tmp:
        folder = Path(tmp)
        runner = _Runner(folder=folder, isolate=isolate, repeat=int(repeat), workers=nworkers, ncores=ncores, log=emit)
        if data is None:
            shape = (int(size[0]), int(size[1]))
            emit(f"simulating {frames} frames of {shape[0]}x{shape[1]} ...")
            paths, truth = _simulate(folder / "frames", frames=int(frames), shape=shape, seed=seed)
            main = _Dataset(key=f"sim:{shape}", paths=tuple((p, 0) for p in paths), shape=shape, truth=truth,
                            ccd_model=True)
        else:
            main = _user_dataset(data)
            truth = None
        runnable = dict(strategies)
        if not main.ccd_model:
            for name in [n for n, o in strategies.items() if o.get("clip") == "ccdclip" and "gain" not in o]:
                runnable.pop(name)
                notes.append(f"{name}: skipped, the frames carry no common GAIN and RDNOISE")
        cube_bytes = main.frames * main.shape[0] * main.shape[1] * 4

        def fits_in_memory(n: int, shape: tuple[int, int]) -> bool:
            return n * shape[0] * shape[1] * 4 * 6 < 0.5 * _available_memory()

        def baseline_rows(ds: _Dataset, name: str, options: Mapping[str, Any], which: Sequence[str]) -> list:
            rows = []
            if "numpy" in which and _numpy_supported(options):
                if fits_in_memory(ds.frames, ds.shape):
                    rows.append(runner.case(ds, name, options, "numpy"))
                elif f"numpy skipped for {ds.key}" not in notes:
                    notes.append(f"numpy skipped for {ds.key}")
            if "ccdproc" in which and have_ccdproc and _ccdproc_settings(options)[0] is not None:
                rows.append(runner.case(ds, name, options, "ccdproc"))
            return rows

        rows: list[dict[str, Any]] = []
        for name, options in runnable.items():
            mine = runner.case(main, name, options, "daskred", band=band0, scheduler=scheduler)
            rows.append(mine)
            rows += baseline_rows(main, name, options, baselines)
            _agreement(runner, main, name, options, mine, band0, scheduler)
        _add_ratios(rows)
        if main.truth is None:
            ref = next((r for r in rows if r["strategy"] == "mean" and r["implementation"] == "daskred"
                        and r.get("noise_est")), None)
            for r in rows:
                if ref is not None and r.get("noise_est"):
                    r["noise_vs_mean"] = r["noise_est"] / ref["noise_est"]

        picked = [m for m in ("median", "sigma") if m in runnable] or list(runnable)[:2]
        for kind in sweep:
            out_rows: list[dict[str, Any]] = []
            if kind == "frames":
                counts = sorted({max(3, main.frames // 4), max(3, main.frames // 2), main.frames})
                for n in counts:
                    ds = main.subset(n) if n < main.frames else main
                    for name in picked:
                        out_rows.append(runner.case(ds, name, runnable[name], "daskred", band=band0, scheduler=scheduler))
                        out_rows += baseline_rows(ds, name, runnable[name], [b for b in baselines if b == "numpy"])
            elif kind == "size":
                ny, nx = main.shape
                for shape in [(max(16, ny // 2), max(16, nx // 2)), (ny, nx), (2 * ny, 2 * nx)]:
                    if shape == main.shape:
                        ds = main
                    else:
                        emit(f"simulating {main.frames} frames of {shape[0]}x{shape[1]} ...")
                        paths, _ = _simulate(folder / f"frames-{shape[0]}x{shape[1]}", frames=main.frames,
                                             shape=shape, seed=seed)
                        ds = _Dataset(key=f"sim:{shape}", paths=tuple((p, 0) for p in paths), shape=shape,
                                      truth=None, ccd_model=True)
                    for name in picked:
                        out_rows.append(runner.case(ds, name, runnable[name], "daskred", band=band0, scheduler=scheduler))
                        out_rows += baseline_rows(ds, name, runnable[name], [b for b in baselines if b == "numpy"])
            elif kind == "chunks":
                ny = main.shape[0]
                bands = list(dict.fromkeys(chunks)) if len(chunks) > 1 else [
                    max(1, ny // 64), max(1, ny // 16), max(1, ny // 4), None]
                for band in dict.fromkeys(None if b is None else int(b) for b in bands):
                    for name in picked:
                        out_rows.append(runner.case(main, name, runnable[name], "daskred", band=band, scheduler=scheduler))
            else:
                for sched in get_args(Scheduler):
                    for name in picked:
                        out_rows.append(runner.case(main, name, runnable[name], "daskred", band=band0, scheduler=sched))
            _add_ratios(out_rows)
            sweeps[kind] = out_rows

    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    machine = {**machine, "load_average_start": load_start, "load_average_end": load_end}
    notes.append("peak memory: growth of the resident set during the run (process high-water mark reset after "
                 "imports), plus that of each worker process; time includes opening/reading the files")
    if truth is not None:
        notes.append(f"quality on simulated truth: artifact pixels count when a plain mean would leave them at least "
                     f"{_SIGNIFICANT:g} ideal sigma high; they survive when still above {_VISIBLE:g} ideal sigma")
    config = {"frames": main.frames, "size": list(main.shape), "data": None if data is None else str(data),
              "methods": {k: dict(v) for k, v in runnable.items()}, "chunks": [c for c in chunks],
              "scheduler": scheduler, "workers": nworkers, "sweep": list(sweep), "baselines": list(baselines),
              "repeat": int(repeat), "isolate": bool(isolate), "seed": int(seed), "cube_mb": cube_bytes / 2**20}
    result = BenchResult(config=config, machine=machine, rows=rows, sweeps=sweeps,
                         truth=None if truth is None else truth.describe(main.frames), notes=notes)
    if out is not None:
        result = _write(result, Path(out))
    return result


# =========================================================================== reporting
def _fmt(value: Any, spec: str = ".3g", *, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if percent:
        return f"{100.0 * value:.2f} %"
    return format(value, spec)


def _markdown(result: BenchResult) -> str:
    cfg, machine = result.config, result.machine
    load = machine.get("load_average_start")
    lines = [
        f"# daskred bench: {cfg['frames']} frames of {cfg['size'][0]} x {cfg['size'][1]} "
        f"(float32, {cfg['cube_mb']:.0f} MB), {cfg['scheduler']} scheduler, {cfg['workers']} workers",
        "",
        f"{machine.get('cpu')}, {machine.get('cores')} cores, "
        f"{_fmt(machine.get('memory_gib'), '.0f')} GiB; load average at start "
        f"{'/'.join(f'{v:.1f}' for v in load) if load else '–'}; python {machine.get('python')}, "
        f"daskred {machine.get('versions', {}).get('daskred', '?')}",
        "",
        "## Speed and memory",
        "",
        "| strategy | implementation | time (s) | Mpix/s | CPU use | peak memory (MB) | "
        "time vs numpy | time vs ccdproc | memory vs numpy | memory vs ccdproc |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.rows:
        if "error" in r:
            lines.append(f"| {r['strategy']} | {r['implementation']} | failed: {r['error']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['strategy']} | {r['implementation']} | {r['seconds']:.3f} | {r['mpix_per_s']:.1f} | "
            f"{_fmt(r.get('cpu_utilisation'), percent=True)} | {r['peak_mb']:.1f} | "
            f"{_fmt(r.get('time_vs_numpy'), '.2f')} | {_fmt(r.get('time_vs_ccdproc'), '.2f')} | "
            f"{_fmt(r.get('memory_vs_numpy'), '.2f')} | {_fmt(r.get('memory_vs_ccdproc'), '.2f')} |")
    ok = [r for r in result.rows if "error" not in r]
    if result.truth is not None:
        lines += ["", "## Quality (simulated truth; ideal noise = sigma / sqrt(N))", "",
                  "| strategy | implementation | noise / ideal | bias (ideal sigma) | cosmic rays left | "
                  "trail left | hot pixels left | good pixels rejected | faint-star S/N | faint-star flux / true | "
                  "max rel. diff. vs numpy | vs ccdproc |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ok:
            lines.append(
                f"| {r['strategy']} | {r['implementation']} | {_fmt(r.get('noise_ratio'), '.3f')} | "
                f"{_fmt(r.get('bias_sigma'), '+.3f')} | {_fmt(r.get('survive_cosmic'), percent=True)} | "
                f"{_fmt(r.get('survive_trail'), percent=True)} | {_fmt(r.get('survive_hot'), percent=True)} | "
                f"{_fmt(r.get('rejected_good'), percent=True)} | {_fmt(r.get('faint_snr'), '.1f')} | "
                f"{_fmt(r.get('faint_flux_ratio'), '.3f')} | "
                f"{_fmt(r.get('agreement_numpy'), '.1e')} | {_fmt(r.get('agreement_ccdproc'), '.1e')} |")
    else:
        lines += ["", "## Quality (your frames: no truth)", "",
                  "| strategy | implementation | noise estimate | noise vs mean | values rejected | "
                  "max rel. diff. vs numpy | vs ccdproc |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in ok:
            lines.append(
                f"| {r['strategy']} | {r['implementation']} | {_fmt(r.get('noise_est'))} | "
                f"{_fmt(r.get('noise_vs_mean'), '.3f')} | {_fmt(r.get('rejected_fraction'), percent=True)} | "
                f"{_fmt(r.get('agreement_numpy'), '.1e')} | {_fmt(r.get('agreement_ccdproc'), '.1e')} |")
    for kind, rows in result.sweeps.items():
        lines += ["", f"## Sweep: {kind}", "",
                  "| frames | size | band | scheduler | strategy | implementation | time (s) | Mpix/s | CPU use | "
                  "peak memory (MB) | per worker (MB) | time vs numpy |",
                  "|---:|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            head = f"| {r['frames']} | {r['ny']} x {r['nx']} | {r.get('band_rows', r['band'])} | {r['scheduler']} | " \
                   f"{r['strategy']} | {r['implementation']} |"
            if "error" in r:
                lines.append(f"{head} failed: {r['error']} | | | | | |")
                continue
            workers = ", ".join(f"{w:.0f}" for w in r.get("peak_workers_mb", [])) or "–"
            lines.append(f"{head} {r['seconds']:.3f} | {r['mpix_per_s']:.1f} | "
                         f"{_fmt(r.get('cpu_utilisation'), percent=True)} | {r['peak_mb']:.1f} | {workers} | "
                         f"{_fmt(r.get('time_vs_numpy'), '.2f')} |")
    plots = {k: v for k, v in result.files.items() if v.endswith(".png")}
    if plots:
        lines += ["", "## Plots", ""] + [f"![{k}]({Path(v).name})" for k, v in plots.items()]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def _summary(result: BenchResult) -> str:
    mine = [r for r in result.rows if r["implementation"] == "daskred" and "error" not in r]
    if not mine:
        return "no daskred strategy completed"
    truth = result.truth is not None

    def left(r: Mapping[str, Any]) -> float:
        values = [r.get(f"survive_{k}") for k in _KINDS]
        return max([v for v in values if v is not None] or [0.0])

    if truth:
        ranked = sorted(mine, key=lambda r: (left(r) > 0.01, r.get("noise_ratio") or math.inf, r["seconds"]))
        lines = ["daskred strategies, ranked (artifacts removed first, then lowest noise):"]
    else:
        ranked = sorted(mine, key=lambda r: r["seconds"])
        lines = ["daskred strategies, fastest first:"]
    for i, r in enumerate(ranked, 1):
        parts = [f"{r['seconds']:.2f} s"]
        if r.get("time_vs_ccdproc"):
            parts.append(f"{1 / r['time_vs_ccdproc']:.1f}x ccdproc's speed")
        parts.append(f"peak {r['peak_mb']:.0f} MB")
        if truth:
            parts = [f"noise {r['noise_ratio']:.3f}x ideal", f"artifacts left {100 * left(r):.1f} %"] + parts
        lines.append(f"  {i}. {r['strategy']:<11} " + ", ".join(parts))
    fastest = min(mine, key=lambda r: r["seconds"])
    lightest = min(mine, key=lambda r: r["peak_mb"])
    lines.append(f"fastest: {fastest['strategy']} ({fastest['mpix_per_s']:.0f} Mpix/s); "
                 f"least memory: {lightest['strategy']} ({lightest['peak_mb']:.0f} MB)")
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(result: BenchResult, out: Path) -> BenchResult:
    """Write the PNG plots, then the markdown and JSON files naming them."""
    from .plotting import bar_figure, quality_figure, save_png, scaling_figure

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    mine = [r for r in result.rows if r["implementation"] == "daskred" and "error" not in r]
    if result.truth is not None and mine:
        files["noise_vs_strategy"] = str(save_png(quality_figure(
            mine, title=f"{result.config['frames']} frames: noise and artifacts left"), out / "noise_vs_strategy.png"))
    axes = {"frames": ("frames", "frames combined"), "size": ("mpix_frame", "frame size (megapixels)"),
            "chunks": ("band_rows", "band height (rows per block)")}
    for kind, rows in result.sweeps.items():
        rows = [r for r in rows if "error" not in r]
        if not rows:
            continue
        if kind == "scheduler":
            files["scheduler_time"] = str(save_png(bar_figure(
                rows, category="scheduler", value="seconds", ylabel="wall time (s)",
                title="combine time per scheduler"), out / "time_vs_scheduler.png"))
            files["scheduler_memory"] = str(save_png(bar_figure(
                rows, category="scheduler", value="peak_mb", ylabel="peak memory, all processes (MB)",
                title="peak memory per scheduler"), out / "memory_vs_scheduler.png"))
            continue
        x, label = axes[kind]
        by = ("strategy",) if kind == "chunks" else ("strategy", "implementation")
        logx = kind == "chunks"
        name = {"frames": "frames", "size": "size", "chunks": "band"}[kind]
        files[f"time_vs_{name}"] = str(save_png(scaling_figure(
            rows, x=x, y="seconds", xlabel=label, ylabel="wall time (s)", by=by, logx=logx,
            title=f"combine time vs {label}"), out / f"time_vs_{name}.png"))
        files[f"memory_vs_{name}"] = str(save_png(scaling_figure(
            rows, x=x, y="peak_mb", xlabel=label, ylabel="peak memory above start (MB)", by=by, logx=logx,
            title=f"peak memory vs {label}"), out / f"memory_vs_{name}.png"))
    files["markdown"] = str(out / "bench.md")
    files["json"] = str(out / "bench.json")
    result = replace(result, files=files)
    _write_text(out / "bench.md", result.to_markdown())
    _write_text(out / "bench.json", result.to_json())
    return result


# =========================================================================== command line
def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"size must look like 512x768 (rows x columns), got {text!r}")
    return int(parts[0]), int(parts[1])


def _band(text: str) -> int | None:
    if text.lower() in ("auto", "none"):
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"band heights are positive row counts or 'auto', got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    """``daskred bench``: run the benchmark from the command line; returns the exit code.

    Examples
    --------
    >>> main(["--quick", "--out", "bench"])                          # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(
        prog="daskred bench",
        description="Combine strategies side by side: speed, memory and quality (JSON, markdown, PNG plots).")
    parser.add_argument("--frames", type=int, help="simulated frames (default 20; --quick: 9)")
    parser.add_argument("--size", type=_size, help="simulated frame size HxW (default 512x768; --quick: 96x128)")
    parser.add_argument("--methods", nargs="+", choices=list(STRATEGIES), metavar="NAME",
                        help=f"strategies, from {', '.join(STRATEGIES)} (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--chunks", nargs="+", type=_band, metavar="ROWS",
                        help="band heights (rows per combine block) or 'auto'; the first is used for the table")
    parser.add_argument("--scheduler", choices=list(get_args(Scheduler)), default="threads")
    parser.add_argument("--workers", type=int, help="threads or processes (default: available cores)")
    parser.add_argument("--data", help="benchmark your own frames (a folder or glob of FITS files)")
    parser.add_argument("--out", default="daskred-bench", help="output folder (default: daskred-bench)")
    parser.add_argument("--sweep", nargs="+", choices=[*get_args(Sweep), "none"],
                        help="sweeps to run (default: frames)")
    parser.add_argument("--baselines", nargs="+", choices=[*get_args(Baseline), "none"],
                        help="baselines (default: numpy ccdproc)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement, fastest kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (faster; memory from tracemalloc)")
    parser.add_argument("--quick", action="store_true", help="a small, fast run: 9 frames of 96x128, 3 strategies")
    args = parser.parse_args(list(argv) if argv is not None else None)

    quick = args.quick
    sweep = ["frames"] if args.sweep is None else [s for s in args.sweep if s != "none"]
    baselines = ["numpy", "ccdproc"] if args.baselines is None else [b for b in args.baselines if b != "none"]

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(
        args.data,
        frames=args.frames or (9 if quick else 20),
        size=args.size or ((96, 128) if quick else (512, 768)),
        methods=args.methods or (("mean", "median", "sigma") if quick else DEFAULT_METHODS),
        chunks=args.chunks or (None,),
        scheduler=args.scheduler,
        workers=args.workers,
        sweep=sweep,
        baselines=baselines,
        out=args.out,
        repeat=args.repeat,
        isolate=not args.in_process,
        seed=args.seed,
        log=progress,
    )
    print(result.summary())
    print(f"wrote {result.files.get('markdown')}, {result.files.get('json')} and "
          f"{sum(1 for v in result.files.values() if v.endswith('.png'))} plots")
    failed = [r for r in result.rows if r["implementation"] == "daskred" and "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

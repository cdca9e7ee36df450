"""Combine a stack of frames into one image: the one reduction used for masters and stacks.

:func:`combine` regroups a ``(frame, y, x)`` cube into blocks ``(N, band, W)`` holding every
frame of a band of rows (by concatenating the same band of each frame: no shuffle), and
runs a small numpy/bottleneck kernel on each block: optional scaling, optional rejection,
then the reduction along ``frame``.  Every pixel is independent of the others, so the
result is the same for any chunking.

The rejection vocabulary follows :func:`astropy.stats.sigma_clip` (``sigma``,
``sigma_lower``, ``sigma_upper``, ``maxiters``, ``cenfunc``, ``stdfunc``) and IRAF's
``imcombine`` (``minmax`` with ``nlow``/``nhigh``, ``ccdclip`` with ``gain``/``rdnoise``/
``snoise``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import bottleneck as bn
import numba
import dask
import dask.array as da
import numpy as np
import xarray as xr

from ._validate import check_choice
from .errors import ConfigError, ShapeMismatchError
from .io import frame_band_height, parse_section

__all__ = ["combine", "Method", "Clip", "Scale"]

Method = Literal["median", "mean", "sum", "min", "max"]
Clip = Literal["sigma", "mad", "minmax", "range", "percentile", "winsorized", "ccdclip"]
Scale = Literal["exptime", "median", "mean"]
Zero = Literal["median", "mean"]
CenFunc = Literal["median", "mean"]
StdFunc = Literal["std", "mad_std"]

_MAD_TO_STD = 1.482602218505602  # 1 / Phi^-1(3/4), as astropy.stats.mad_std
#: float32 copies of a block each rejection holds at once (sets the band height): the
#: concatenated block, its pixel-major copy and the sorted copy (+2 when values are scaled
#: into float64); winsorization also holds a float64 working copy.
_COPIES = {None: 3.0, "range": 3.5, "percentile": 3.0, "minmax": 3.0,
           "sigma": 3.0, "mad": 3.0, "ccdclip": 3.0, "winsorized": 6.5}


@dataclass(frozen=True)
class _Rejection:
    clip: str | None
    sigma_lower: float
    sigma_upper: float
    maxiters: float
    cenfunc: str
    stdfunc: str
    nlow: int
    nhigh: int
    low: float
    high: float
    percentiles: tuple[float, float]
    gain: float
    rdnoise: float
    snoise: float


# --------------------------------------------------------------------------- kernels
# Kernels see one block as ``x[pixel, frame]`` (C order, float64): every statistic then
# runs along the contiguous last axis, and the pixels still being clipped are whole rows.
def _winsorized_sigma(x: np.ndarray, center: np.ndarray, passes: int = 10) -> np.ndarray:
    """Robust spread by iterative winsorization at 1.5 sigma (1.134 restores a normal sigma).

    Each pixel stops on its own when its spread changes by less than 0.05 %, so the result
    does not depend on which other pixels share the block.
    """
    w = x.copy()
    sigma = bn.nanstd(w, axis=-1)
    todo = np.ones(sigma.shape, bool)
    for _ in range(passes):
        lo, hi = (center - 1.5 * sigma)[:, None], (center + 1.5 * sigma)[:, None]
        np.clip(w, lo, hi, out=w, where=~np.isnan(w) & todo[:, None])
        new = 1.134 * bn.nanstd(w, axis=-1)
        with np.errstate(invalid="ignore"):
            converged = np.abs(new - sigma) < 5e-4 * sigma
        sigma = np.where(todo, new, sigma)
        todo &= ~converged
        if not todo.any():
            break
    return sigma


_STD, _MAD, _CCD = 0, 1, 2
_REDUCE_CODES = {"mean": 0, "sum": 1, "median": 2, "min": 3, "max": 4}


@numba.njit(nogil=True, cache=True)
def _median_sorted(buf, lo, hi):  # pragma: no cover - compiled
    m = hi - lo
    if m <= 0:
        return np.nan
    mid = lo + m // 2
    return buf[mid] if m % 2 == 1 else 0.5 * (float(buf[mid - 1]) + float(buf[mid]))


@numba.njit(nogil=True, cache=True)
def _mad_sorted(buf, lo, hi, med):  # pragma: no cover - compiled
    """Median absolute deviation of sorted ``buf[lo:hi]`` from ``med``, by merging both sides."""
    m = hi - lo
    right = lo
    while right < hi and buf[right] < med:
        right += 1
    left = right - 1
    want_hi = m // 2
    want_lo = (m - 1) // 2
    d_lo = 0.0
    d = 0.0
    for step in range(want_hi + 1):
        if left < lo or (right < hi and buf[right] - med <= med - buf[left]):
            d = buf[right] - med
            right += 1
        else:
            d = med - buf[left]
            left -= 1
        if step == want_lo:
            d_lo = d
    return 0.5 * (d_lo + d)


@numba.njit(nogil=True, cache=True)
def _keep_between(buf, lo, hi, bound_lo, bound_hi):  # pragma: no cover - compiled
    """Shrink the sorted range ``buf[lo:hi]`` to the values within ``[bound_lo, bound_hi]``."""
    while lo < hi and buf[lo] < bound_lo:
        lo += 1
    while hi > lo and buf[hi - 1] > bound_hi:
        hi -= 1
    return lo, hi


@numba.njit(nogil=True, cache=True)
def _clip_sorted(s, cen_median, spread_kind, lower, upper, maxiters, gain, rdnoise, snoise,
                 lo_out, hi_out):  # pragma: no cover - compiled
    """Iterative clipping of every row of ``s[pixel, frame]``, sorted with NaN last.

    Clipping around a centre only ever removes values from the two ends of a sorted row,
    so each pixel's kept values are the range ``s[p, lo:hi]``; ``lo_out``/``hi_out`` start as
    ``0``/number of valid values and end as the kept range.  Statistics are those of
    :func:`astropy.stats.sigma_clip`: median (mean of the two middle values for an even
    count) or mean; population standard deviation or 1.4826 x MAD; or the CCD noise model.
    """
    for p in range(s.shape[0]):
        buf = s[p]
        lo = lo_out[p]
        hi = hi_out[p]
        it = 0
        while it < maxiters and hi > lo:
            it += 1
            m = hi - lo
            mean = 0.0
            for k in range(lo, hi):
                mean += buf[k]
            mean /= m
            c = _median_sorted(buf, lo, hi) if cen_median else mean
            if spread_kind == 0:
                ss = 0.0
                for k in range(lo, hi):
                    ss += (buf[k] - mean) ** 2
                spread = np.sqrt(ss / m)
            elif spread_kind == 1:
                spread = 1.482602218505602 * _mad_sorted(buf, lo, hi, _median_sorted(buf, lo, hi))
            else:
                level = max(c, 0.0)
                spread = np.sqrt((rdnoise / gain) ** 2 + level / gain + (snoise * level) ** 2)
            new_lo, new_hi = _keep_between(buf, lo, hi, c - lower * spread, c + upper * spread)
            if new_lo == lo and new_hi == hi:
                break
            lo = new_lo
            hi = new_hi
        lo_out[p] = lo
        hi_out[p] = hi


@numba.njit(nogil=True, cache=True)
def _percentile_range(s, lo_out, hi_out, p_low, p_high):  # pragma: no cover - compiled
    """Keep the values of each sorted row between its two percentiles (numpy's linear rule)."""
    for p in range(s.shape[0]):
        n = hi_out[p]
        if n == 0:
            continue
        bounds = np.empty(2)
        for j, q in enumerate((p_low, p_high)):
            pos = q / 100.0 * (n - 1)
            below = int(np.floor(pos))
            above = min(below + 1, n - 1)
            bounds[j] = s[p, below] + (pos - below) * (s[p, above] - s[p, below])
        lo_out[p], hi_out[p] = _keep_between(s[p], 0, n, bounds[0], bounds[1])


@numba.njit(nogil=True, cache=True)
def _reduce_sorted(s, lo, hi, code, out):  # pragma: no cover - compiled
    """Mean/sum/median/min/max of each sorted row's kept range ``s[p, lo:hi]`` (NaN if empty)."""
    for p in range(s.shape[0]):
        a = lo[p]
        b = hi[p]
        if b <= a:
            out[p] = np.nan
        elif code == 2:
            out[p] = _median_sorted(s[p], a, b)
        elif code == 3:
            out[p] = s[p, a]
        elif code == 4:
            out[p] = s[p, b - 1]
        else:
            total = 0.0
            for k in range(a, b):
                total += s[p, k]
            out[p] = total / (b - a) if code == 0 else total


def _reject(x: np.ndarray, rej: _Rejection) -> tuple[np.ndarray, np.ndarray]:
    """Replace rejected values of ``x[pixel, frame]`` (float64, in place) by NaN.

    Returns the per-pixel counts of values rejected below and above the centre.
    """
    n_low = np.zeros(x.shape[0], np.int32)
    n_high = np.zeros(x.shape[0], np.int32)
    clip = rej.clip
    if clip == "range":
        with np.errstate(invalid="ignore"):
            low, high = x < rej.low, x > rej.high
        x[low | high] = np.nan
        return low.sum(-1, dtype=np.int32), high.sum(-1, dtype=np.int32)
    # Winsorized clipping (the other iterative clips work on sorted rows, see _combine_block).  A pixel
    # whose values did not change in an iteration has converged (the same values give the same bounds), so later iterations
    # only revisit the pixels that changed: after the first pass that is a few per cent.
    active = np.arange(x.shape[0])
    iteration = 0
    while iteration < rej.maxiters and active.size:
        iteration += 1
        sub = x if active.size == x.shape[0] else x[active]
        with np.errstate(all="ignore"):
            center = bn.nanmedian(sub, axis=-1)
        spread = _winsorized_sigma(sub, center)
        with np.errstate(invalid="ignore"):
            low = sub < (center - rej.sigma_lower * spread)[:, None]
            high = sub > (center + rej.sigma_upper * spread)[:, None]
        nlow_now = low.sum(-1, dtype=np.int32)
        nhigh_now = high.sum(-1, dtype=np.int32)
        changed = (nlow_now + nhigh_now) > 0
        if not changed.any():
            break
        n_low[active] += nlow_now
        n_high[active] += nhigh_now
        sub[low | high] = np.nan
        if sub is not x:
            x[active] = sub
        active = active[changed]
    return n_low, n_high


def _reduce(x: np.ndarray, method: str, weights: np.ndarray | None) -> np.ndarray:
    """Reduce ``x[pixel, frame]`` along frames; ``weights`` has one value per frame."""
    with np.errstate(all="ignore"):
        if method == "median":
            return bn.nanmedian(x, axis=-1)
        if method == "min":
            return np.fmin.reduce(x, axis=-1)
        if method == "max":
            return np.fmax.reduce(x, axis=-1)
        valid = ~np.isnan(x)
        if weights is None:
            total = bn.nansum(x, axis=-1)
            if method == "sum":
                return np.where(valid.any(-1), total, np.nan)
            return total / valid.sum(-1)
        total = bn.nansum(x * weights, axis=-1)
        if method == "sum":
            return np.where(valid.any(-1), total, np.nan)
        return total / (valid * weights).sum(-1)


def _combine_block(
    block: np.ndarray,
    scales: np.ndarray,
    zeros: np.ndarray,
    weights: np.ndarray,
    *,
    method: str,
    rejection: _Rejection,
    scaled: bool,
    weighted: bool,
    with_counts: bool,
) -> np.ndarray:
    """Combine one ``(N, band, W)`` block; returns ``(k, band, W)`` float32 (k = 1 or 4).

    ``scales``, ``zeros`` and ``weights`` arrive as ``(N, 1, 1)`` arrays.  Every rejection
    but ``range`` and ``winsorized`` keeps a contiguous range of each pixel's sorted values
    (numpy's vectorised sort, then :func:`_clip_sorted` / :func:`_percentile_range`); those
    two mark values as NaN.
    """
    nframes, rows, width = block.shape
    x = np.ascontiguousarray(block.reshape(nframes, -1).T)  # x[pixel, frame], a private copy
    if scaled:
        x = x.astype(np.float64)
        x *= scales.reshape(-1)
        x += zeros.reshape(-1)
    clip = rejection.clip
    if clip in (None, "sigma", "mad", "ccdclip", "minmax", "percentile"):
        s = np.sort(x, axis=-1)  # NaN sort last
        n = np.count_nonzero(~np.isnan(s), axis=-1).astype(np.int64)
        lo, hi = np.zeros_like(n), n.copy()
        if clip == "minmax":
            lo = np.minimum(rejection.nlow, n)
            hi = np.maximum(lo, n - rejection.nhigh)
        elif clip == "percentile":
            _percentile_range(s, lo, hi, *rejection.percentiles)
        elif clip is not None:
            spread = {"sigma": _MAD if rejection.stdfunc == "mad_std" else _STD, "mad": _MAD, "ccdclip": _CCD}[clip]
            cen_median = clip == "mad" or rejection.cenfunc == "median"
            maxiters = np.iinfo(np.int64).max if np.isinf(rejection.maxiters) else int(rejection.maxiters)
            _clip_sorted(s, cen_median, spread, rejection.sigma_lower, rejection.sigma_upper, maxiters,
                         rejection.gain, rejection.rdnoise, rejection.snoise, lo, hi)
        if weighted:
            rows_ = np.arange(s.shape[0])
            keep_lo = np.where(hi > lo, s[rows_, np.minimum(lo, nframes - 1)], np.inf)
            keep_hi = np.where(hi > lo, s[rows_, np.maximum(hi - 1, 0)], -np.inf)
            x = x.astype(np.float64)
            with np.errstate(invalid="ignore"):
                x[(x < keep_lo[:, None]) | (x > keep_hi[:, None])] = np.nan
            image = _reduce(x, method, weights.reshape(-1))
        else:
            image = np.empty(s.shape[0], np.float64)
            _reduce_sorted(s, lo, hi, _REDUCE_CODES[method], image)
        n_low, n_high, count = lo, n - hi, hi - lo
    else:
        x = x.astype(np.float64)
        nvalid = np.count_nonzero(~np.isnan(x), axis=-1)
        n_low, n_high = _reject(x, rejection)
        image = _reduce(x, method, weights.reshape(-1) if weighted else None)
        count = nvalid - n_low - n_high
    if not with_counts:
        return image.astype(np.float32).reshape(1, rows, width)
    return np.stack([image, count, n_low, n_high]).astype(np.float32).reshape(4, rows, width)


def _frame_statistic(block: np.ndarray, statistic: str) -> np.ndarray:
    values = block.reshape(block.shape[0], -1).astype(np.float64)
    with np.errstate(all="ignore"):
        out = bn.nanmedian(values, axis=1) if statistic == "median" else bn.nanmean(values, axis=1)
    return out


# --------------------------------------------------------------------------- helpers
def _per_frame(name: str, values: Any, nframes: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (nframes,):
        raise ShapeMismatchError(f"{name} needs one value per frame ({nframes}), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} must be finite for every frame; got {values!r}")
    return arr


def _statistics(data: da.Array, statistic: str, section: str | None) -> da.Array:
    """Lazy per-frame median or mean, over the whole frame or a FITS section."""
    if section is not None:
        ys, xs = parse_section(section, data.shape[1:])
        data = data[:, ys, xs]
    if statistic == "mean":
        return da.nanmean(data.astype(np.float64), axis=(1, 2))
    whole = data.rechunk({0: 1, 1: -1, 2: -1}, method="tasks")
    return whole.map_blocks(_frame_statistic, statistic, drop_axis=[1, 2], dtype=np.float64,
                            meta=np.empty((0,), np.float64))


def _scaling(
    frames: xr.DataArray,
    scale: str | Sequence[float] | None,
    zero: str | Sequence[float] | None,
    section: str | None,
) -> tuple[Any, Any, bool]:
    """Per-frame multiplicative scales and additive zeros (lazy where data-dependent).

    Frames are brought to the mean level of the stack: ``x * s_i + z_i`` with
    ``s_i = <stat> / stat_i`` and ``z_i = <stat'> - stat'_i`` (``stat'`` of the scaled frame).
    """
    nframes = frames.sizes["frame"]
    data = frames.data
    ones, zeros_ = np.ones(nframes), np.zeros(nframes)
    if scale is None and zero is None:
        return ones, zeros_, False
    if scale is None:
        scales: Any = ones
    elif isinstance(scale, str):
        check_choice("scale", scale, get_args(Scale))
        if scale == "exptime":
            if "exptime" not in frames.coords:
                raise ConfigError("scale='exptime' needs an 'exptime' coordinate along frame (open the "
                                  "frames with daskred.open_frames, or pass scale=[...] factors)")
            t = np.asarray(frames.coords["exptime"].values, dtype=np.float64)
            names = frames.coords["path"].values if "path" in frames.coords else range(nframes)
            bad = [str(p) for p, v in zip(names, t) if not (np.isfinite(v) and v > 0)]
            if bad:
                raise ConfigError(f"scale='exptime' needs a positive EXPTIME; missing or <= 0 in {', '.join(bad[:5])}")
            scales = t.mean() / t
        else:
            stat = _statistics(data, scale, section)
            scales = stat.mean() / stat
    else:
        scales = 1.0 / _per_frame("scale", scale, nframes)
    if zero is None:
        zeros: Any = zeros_
    elif isinstance(zero, str):
        check_choice("zero", zero, get_args(Zero))
        stat = _statistics(data, zero, section) * scales
        zeros = stat.mean() - stat
    else:
        zeros = -_per_frame("zero", zero, nframes)
    return scales, zeros, True


# --------------------------------------------------------------------------- public
def combine(
    frames: xr.DataArray,
    *,
    method: Method = "median",
    clip: Clip | None = None,
    sigma: float = 3.0,
    sigma_lower: float | None = None,
    sigma_upper: float | None = None,
    maxiters: int | None = 5,
    cenfunc: CenFunc = "median",
    stdfunc: StdFunc = "std",
    nlow: int = 1,
    nhigh: int = 1,
    low: float = -np.inf,
    high: float = np.inf,
    percentiles: tuple[float, float] = (10.0, 90.0),
    gain: float | None = None,
    rdnoise: float | None = None,
    snoise: float = 0.0,
    scale: Scale | Sequence[float] | None = None,
    zero: Zero | Sequence[float] | None = None,
    section: str | None = None,
    weights: Sequence[float] | None = None,
    with_counts: bool = False,
    band: int | None = None,
) -> xr.DataArray | xr.Dataset:
    """Combine frames into one image, with optional scaling, weighting and rejection.

    Parameters
    ----------
    frames : xarray.DataArray
        ``(frame, y, x)`` cube, e.g. from :func:`daskred.open_frames`; NaN marks missing
        pixels, which never contribute.
    method : {"median", "mean", "sum", "min", "max"}
        Reduction along ``frame`` of the values that survive rejection.  ``sum`` is the sum
        of the kept values (rejected and missing pixels add nothing).
    clip : {"sigma", "mad", "minmax", "range", "percentile", "winsorized", "ccdclip"}, optional
        Rejection before the reduction:

        * ``"sigma"`` — iterative clipping as :func:`astropy.stats.sigma_clip` (``cenfunc``,
          ``stdfunc``, ``sigma``/``sigma_lower``/``sigma_upper``, ``maxiters``);
        * ``"mad"`` — the same with the median and the MAD-based standard deviation;
        * ``"minmax"`` — drop the ``nlow`` lowest and ``nhigh`` highest values of each pixel;
        * ``"range"`` — drop values below ``low`` or above ``high``;
        * ``"percentile"`` — drop values outside the per-pixel ``percentiles``;
        * ``"winsorized"`` — iterative clipping around the median with a spread from
          1.5-sigma winsorization (robust for few frames);
        * ``"ccdclip"`` — iterative clipping with the spread of the CCD noise model
          ``sqrt((rdnoise/gain)^2 + level/gain + (snoise*level)^2)`` in ADU.
    sigma, sigma_lower, sigma_upper : float
        Clipping thresholds in units of the spread; the one-sided ones default to ``sigma``.
    maxiters : int or None
        Iterations of iterative clipping; None iterates until nothing changes.
    cenfunc : {"median", "mean"}
        Centre for ``clip="sigma"`` and ``"ccdclip"``.
    stdfunc : {"std", "mad_std"}
        Spread for ``clip="sigma"``.
    nlow, nhigh : int
        Values dropped per pixel by ``clip="minmax"``.
    low, high : float
        Accepted range for ``clip="range"``.
    percentiles : (float, float)
        Accepted per-pixel percentile range for ``clip="percentile"``.
    gain, rdnoise : float, optional
        e-/ADU and e- for ``clip="ccdclip"``; default to the frames' ``gain`` and ``rdnoise``
        coordinates (from the headers).
    snoise : float
        Fractional "sensitivity noise" for ``clip="ccdclip"``.
    scale : {"exptime", "median", "mean"} or sequence of float, optional
        Bring the frames to a common level before rejection: each frame is multiplied by
        ``<s>/s_i`` where ``s_i`` is its exposure time or pixel statistic (``<s>`` the mean
        over frames), or divided by the given per-frame values.
    zero : {"median", "mean"} or sequence of float, optional
        Additive offsets to a common level (after scaling), or per-frame values to subtract.
    section : str, optional
        FITS section (e.g. ``"[100:900,100:900]"``) from which ``scale``/``zero`` statistics
        are taken.
    weights : sequence of float, optional
        Per-frame weights for ``mean`` and ``sum``.
    with_counts : bool
        Return a Dataset with ``image``, ``count`` (frames contributing to each pixel),
        ``rejected_low`` and ``rejected_high``.
    band : int, optional
        Rows per block; by default chosen from the memory budget
        ``dask.config["daskred.block-bytes"]`` (32 MiB) and the copies the method needs.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Lazy ``(y, x)`` float32 image (or the Dataset described above), with ``attrs``
        ``ncombine``, ``method``, ``clip`` settings, ``inputs`` and ``history``.

    Notes
    -----
    Does not compute.  The cube is regrouped into blocks ``(N, band, W)``: when the
    frames' own bands fit the budget they are only concatenated along ``frame``.
    Statistics for ``scale="median"``/``zero="median"`` need each frame (or its
    ``section``) in one task, and read the data once more.  Blocks accumulate in float64
    whenever values are scaled, clipped or summed; the result is float32 and does not depend
    on the chunking.

    Examples
    --------
    >>> bias = dr.combine(frames, method="median")                          # doctest: +SKIP
    >>> flat = dr.combine(flats, method="mean", clip="sigma", sigma=3.0,
    ...                   maxiters=5, cenfunc="median", stdfunc="std", scale="median")  # doctest: +SKIP
    """
    if not isinstance(frames, xr.DataArray) or frames.dims != ("frame", "y", "x"):
        dims = getattr(frames, "dims", type(frames).__name__)
        raise ShapeMismatchError(
            f"combine expects an xarray.DataArray with dims ('frame', 'y', 'x'), got {dims}; "
            "build one with daskred.open_frames(...) or .transpose('frame', 'y', 'x')"
        )
    nframes = frames.sizes["frame"]
    if nframes == 0:
        raise ShapeMismatchError("combine received no frames")
    check_choice("method", method, get_args(Method))
    check_choice("clip", clip, (None, *get_args(Clip)))
    check_choice("cenfunc", cenfunc, get_args(CenFunc))
    check_choice("stdfunc", stdfunc, get_args(StdFunc))
    if weights is not None and method not in ("mean", "sum"):
        raise ConfigError(f"weights apply to method='mean' or 'sum', not {method!r}")
    if clip == "minmax" and (nlow < 0 or nhigh < 0):
        raise ConfigError(f"nlow and nhigh must be >= 0, got {nlow}, {nhigh}")
    if clip == "percentile" and not (0 <= percentiles[0] < percentiles[1] <= 100):
        raise ConfigError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles}")
    if clip == "range" and not low < high:
        raise ConfigError(f"clip='range' needs low < high, got low={low}, high={high}")
    lower = sigma if sigma_lower is None else sigma_lower
    upper = sigma if sigma_upper is None else sigma_upper
    if clip in ("sigma", "mad", "winsorized", "ccdclip") and (lower <= 0 or upper <= 0):
        raise ConfigError(f"sigma thresholds must be positive, got lower={lower}, upper={upper}")
    if clip == "ccdclip":
        gain = _header_number(frames, "gain", gain)
        rdnoise = _header_number(frames, "rdnoise", rdnoise)
    rejection = _Rejection(
        clip=clip, sigma_lower=float(lower), sigma_upper=float(upper),
        maxiters=np.inf if maxiters is None else int(maxiters), cenfunc=cenfunc, stdfunc=stdfunc,
        nlow=int(nlow), nhigh=int(nhigh), low=float(low), high=float(high),
        percentiles=(float(percentiles[0]), float(percentiles[1])),
        gain=float(gain or 1.0), rdnoise=float(rdnoise or 0.0), snoise=float(snoise),
    )
    w = _per_frame("weights", weights, nframes) if weights is not None else np.ones(nframes)
    if weights is not None and (w < 0).any():
        raise ConfigError("weights must be >= 0")
    scales, zeros, scaled = _scaling(frames, scale, zero, section)

    data = frames.data if isinstance(frames.data, da.Array) else da.from_array(frames.data)
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    ny, nx = data.shape[1:]
    rows = band or frame_band_height(nframes, nx, copies=_COPIES[clip] + (2.0 if scaled else 0.0))
    in_rows = max(data.chunks[1])
    if band is None and in_rows <= rows:
        ychunks = data.chunks[1]  # keep the frames' bands: a pure concatenation along frame
    else:
        rows = min(rows, ny)
        ychunks = (rows,) * (ny // rows) + ((ny % rows,) if ny % rows else ())
    # task-based: each band block gathers its rows of every frame (bounded by ``rows``); dask's
    # peer-to-peer rechunking, its choice for big cubes on a cluster, buffers far more
    cube = data.rechunk({0: -1, 1: ychunks, 2: -1}, method="tasks")
    scale_arr = da.asarray(scales, dtype=np.float64).rechunk(-1)
    zero_arr = da.asarray(zeros, dtype=np.float64).rechunk(-1)
    weight_arr = da.from_array(w, chunks=-1)
    nout = 4 if with_counts else 1
    token = dask.base.tokenize(cube.name, scale_arr.name, zero_arr.name, w, method, rejection, with_counts)
    out = da.map_blocks(
        _combine_block, cube, scale_arr[:, None, None], zero_arr[:, None, None], weight_arr[:, None, None],
        method=method, rejection=rejection, scaled=scaled, weighted=weights is not None,
        with_counts=with_counts,
        chunks=((nout,), cube.chunks[1], cube.chunks[2]), dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32), name=f"combine-{method}-{token}",
    )
    attrs = _provenance(frames, method, rejection, scale, zero, weights is not None)
    image = xr.DataArray(out[0], dims=("y", "x"), name="image", attrs=attrs)
    if not with_counts:
        return image
    return xr.Dataset(
        {
            "image": image,
            "count": (("y", "x"), out[1].astype(np.int16), {"long_name": "frames contributing"}),
            "rejected_low": (("y", "x"), out[2].astype(np.int16), {"long_name": "values rejected below"}),
            "rejected_high": (("y", "x"), out[3].astype(np.int16), {"long_name": "values rejected above"}),
        },
        attrs=attrs,
    )


def _header_number(frames: xr.DataArray, name: str, value: float | None) -> float:
    if value is not None:
        return float(getattr(value, "value", value))
    if name in frames.coords:
        values = np.asarray(frames.coords[name].values, dtype=np.float64)
        if np.all(np.isfinite(values)) and np.ptp(values) == 0:
            return float(values[0])
    raise ConfigError(
        f"clip='ccdclip' needs {name}: pass {name}=... or open frames whose headers give one common "
        f"value (the '{name}' coordinate is missing, NaN or differs between frames)"
    )


def _provenance(frames: xr.DataArray, method: str, rej: _Rejection, scale: Any, zero: Any,
                weighted: bool) -> dict[str, Any]:
    settings = [f"method={method}"]
    if rej.clip is not None:
        settings.append(f"clip={rej.clip}")
        if rej.clip in ("sigma", "mad", "winsorized", "ccdclip"):
            settings.append(f"sigma_lower={rej.sigma_lower:g} sigma_upper={rej.sigma_upper:g} maxiters={rej.maxiters:g}")
        if rej.clip == "sigma":
            settings.append(f"cenfunc={rej.cenfunc} stdfunc={rej.stdfunc}")
        if rej.clip == "minmax":
            settings.append(f"nlow={rej.nlow} nhigh={rej.nhigh}")
        if rej.clip == "range":
            settings.append(f"low={rej.low:g} high={rej.high:g}")
        if rej.clip == "percentile":
            settings.append(f"percentiles={rej.percentiles}")
        if rej.clip == "ccdclip":
            settings.append(f"gain={rej.gain:g} rdnoise={rej.rdnoise:g} snoise={rej.snoise:g}")
    if scale is not None:
        settings.append(f"scale={scale if isinstance(scale, str) else 'given'}")
    if zero is not None:
        settings.append(f"zero={zero if isinstance(zero, str) else 'given'}")
    if weighted:
        settings.append("weighted")
    inputs = [str(p) for p in frames.coords["path"].values] if "path" in frames.coords else []
    history = list(frames.attrs.get("history", []) or [])
    history.append(f"combined {frames.sizes['frame']} frames: {' '.join(settings)}")
    attrs: dict[str, Any] = {
        "ncombine": int(frames.sizes["frame"]),
        "combine": " ".join(settings),
        "inputs": inputs,
        "history": history,
    }
    if "units" in frames.attrs:
        attrs["units"] = frames.attrs["units"]
    return attrs

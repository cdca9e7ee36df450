"""Property tests (hypothesis): the combine kernels against numpy/astropy, and section parsing.

Random shapes (including 1-pixel axes and single frames), random NaN patterns and random
parameters.  References: numpy's nan-aware reductions and ``astropy.stats.sigma_clip`` with
its centre/spread functions pinned to numpy's; a pixel with no valid value is NaN on both
sides.  Tolerances: float32 results against float64 references, ``rtol=2e-6`` (plus an
``atol`` of 1e-6 of the data range for means of values that cancel).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import daskred as dr  # noqa: E402
from daskred.errors import HeaderError  # noqa: E402
from daskred.io import parse_section  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cubes(draw, min_frames: int = 1, max_frames: int = 9) -> np.ndarray:
    """(n, ny, nx) float32 cubes of moderate values with a random NaN pattern."""
    shape = (draw(st.integers(min_frames, max_frames)), draw(st.integers(1, 7)), draw(st.integers(1, 9)))
    values = draw(hnp.arrays(np.float32, shape,
                             elements=st.floats(-1000, 1000, width=32, allow_nan=False, allow_infinity=False)))
    missing = draw(hnp.arrays(np.bool_, shape, elements=st.booleans()))
    if not draw(st.booleans()):
        missing[:] = False
    cube = values.copy()
    cube[missing] = np.nan
    return cube


def _frames(cube: np.ndarray, ychunk: int = 1) -> xr.DataArray:
    return xr.DataArray(cube, dims=("frame", "y", "x")).chunk({"frame": 1, "y": ychunk, "x": -1})


def _quiet(func, *args, **kwargs):
    """Call a reference without its all-NaN/invalid-value warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


def _valid_or_nan(expected: np.ndarray, cube: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(cube).any(axis=0), expected, np.nan)


def _close(got: np.ndarray, expected: np.ndarray, cube: np.ndarray) -> None:
    span = float(np.nanmax(np.abs(cube))) if np.isfinite(cube).any() else 1.0
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6 * max(span, 1.0), equal_nan=True)


# ------------------------------------------------------------------ plain reductions vs numpy
@SETTINGS
@given(cube=cubes(), method=st.sampled_from(["median", "mean", "sum", "min", "max"]))
def test_plain_reductions_match_numpy(cube, method):
    reference = {"median": np.nanmedian, "mean": np.nanmean, "sum": np.nansum, "min": np.nanmin, "max": np.nanmax}
    expected = _valid_or_nan(_quiet(reference[method], cube.astype(np.float64), axis=0), cube)
    got = dr.combine(_frames(cube), method=method).values
    assert got.dtype == np.float32 and got.shape == cube.shape[1:]
    _close(got, expected, cube)


# ------------------------------------------------------------------ rejection vs astropy / numpy
@SETTINGS
@given(cube=cubes(min_frames=3), sigma_lower=st.sampled_from([1.5, 2.0, 3.0]),
       sigma_upper=st.sampled_from([1.5, 2.5, 4.0]), maxiters=st.sampled_from([1, 2, 5, None]),
       cenfunc=st.sampled_from(["median", "mean"]), stdfunc=st.sampled_from(["std", "mad_std"]),
       method=st.sampled_from(["mean", "median"]))
def test_sigma_clip_matches_astropy(cube, sigma_lower, sigma_upper, maxiters, cenfunc, stdfunc, method):
    from astropy.stats import mad_std, sigma_clip

    data = cube.astype(np.float64)
    cen = {"median": np.nanmedian, "mean": np.nanmean}[cenfunc]
    std = {"std": np.nanstd, "mad_std": lambda d, axis: mad_std(d, axis=axis, ignore_nan=True)}[stdfunc]
    clipped = _quiet(sigma_clip, data, sigma_lower=sigma_lower, sigma_upper=sigma_upper, maxiters=maxiters,
                     cenfunc=cen, stdfunc=std, axis=0, masked=False, copy=True)
    reduce = {"mean": np.nanmean, "median": np.nanmedian}[method]
    expected = _quiet(reduce, clipped, axis=0)
    got = dr.combine(_frames(cube), method=method, clip="sigma", sigma_lower=sigma_lower,
                     sigma_upper=sigma_upper, maxiters=maxiters, cenfunc=cenfunc, stdfunc=stdfunc).values
    # a value exactly on a clipping bound may fall either side in float32 vs float64: compare
    # only pixels whose values are not within 1e-5 (relative) of any bound astropy used
    _close(got[_away_from_bounds(data, cen, std, sigma_lower, sigma_upper, maxiters)],
           expected[_away_from_bounds(data, cen, std, sigma_lower, sigma_upper, maxiters)], cube)


def _away_from_bounds(data, cen, std, lower, upper, maxiters) -> np.ndarray:
    """Pixels where no value sits on a clipping bound in any iteration (float64 replay)."""
    work = data.copy()
    safe = np.ones(data.shape[1:], bool)
    for _ in range(maxiters or 50):
        c = _quiet(cen, work, axis=0)
        s = _quiet(std, work, axis=0)
        lo, hi = c - lower * s, c + upper * s
        tol = 1e-5 * (np.abs(c) + np.abs(s) + 1.0)
        near = (np.abs(work - lo) < tol) | (np.abs(work - hi) < tol)
        safe &= ~near.any(axis=0)
        out = (work < lo) | (work > hi)
        if not out.any():
            break
        work = np.where(out, np.nan, work)
    return safe


@SETTINGS
@given(cube=cubes(min_frames=1), nlow=st.integers(0, 3), nhigh=st.integers(0, 3),
       method=st.sampled_from(["mean", "median", "sum"]))
def test_minmax_clip_matches_sorted_numpy(cube, nlow, nhigh, method):
    data = cube.astype(np.float64)
    ordered = np.sort(data, axis=0)  # NaN last
    valid = np.isfinite(data).sum(axis=0)
    rank = np.arange(data.shape[0])[:, None, None]
    keep = (rank >= nlow) & (rank < valid - nhigh)
    kept = np.where(keep, ordered, np.nan)
    reduce = {"mean": np.nanmean, "median": np.nanmedian, "sum": np.nansum}[method]
    expected = _quiet(reduce, kept, axis=0)
    expected = np.where(keep.any(axis=0), expected, np.nan)
    got = dr.combine(_frames(cube), method=method, clip="minmax", nlow=nlow, nhigh=nhigh).values
    _close(got, expected, cube)


# ------------------------------------------------------------------ chunk invariance, bit for bit
@SETTINGS
@given(cube=cubes(min_frames=2), ychunk=st.integers(1, 7), band=st.one_of(st.none(), st.integers(1, 7)),
       options=st.sampled_from([
           {"method": "median"},
           {"method": "mean"},
           {"method": "sum"},
           {"method": "mean", "clip": "sigma", "sigma": 2.0, "maxiters": None},
           {"method": "median", "clip": "mad", "sigma": 2.5},
           {"method": "mean", "clip": "minmax", "nlow": 1, "nhigh": 1},
           {"method": "mean", "clip": "winsorized", "sigma": 2.0},
           {"method": "mean", "scale": "median", "clip": "sigma"},
       ]))
def test_combine_is_bit_identical_across_chunkings(cube, ychunk, band, options):
    whole = dr.combine(_frames(cube, ychunk=cube.shape[1]), **options).values
    chunked = dr.combine(_frames(cube, ychunk=ychunk), band=band, **options).values
    assert np.array_equal(whole, chunked, equal_nan=True)


# ------------------------------------------------------------------ FITS sections
@st.composite
def sections(draw):
    ny, nx = draw(st.integers(1, 60)), draw(st.integers(1, 60))
    x1, x2 = draw(st.integers(1, nx)), draw(st.integers(1, nx))
    y1, y2 = draw(st.integers(1, ny)), draw(st.integers(1, ny))
    return (ny, nx), (x1, x2, y1, y2)


@settings(max_examples=200, deadline=None)
@given(case=sections(), spaces=st.sampled_from(["", " ", "  "]))
def test_parse_section_selects_the_1_based_inclusive_x_first_box(case, spaces):
    (ny, nx), (x1, x2, y1, y2) = case
    image = np.arange(ny * nx).reshape(ny, nx)
    text = f"{spaces}[{x1}{spaces}:{x2},{spaces}{y1}:{y2}{spaces}]{spaces}"
    ys, xs = parse_section(text, (ny, nx))
    # reference: the FITS pixel (x, y), 1-based, is image[y - 1, x - 1]; reversed ranges cover the same pixels
    rows = range(min(y1, y2), max(y1, y2) + 1)
    cols = range(min(x1, x2), max(x1, x2) + 1)
    expected = np.array([[image[y - 1, x - 1] for x in cols] for y in rows])
    np.testing.assert_array_equal(image[ys, xs], expected)
    assert parse_section(text) == (ys, xs)  # the shape only validates


@settings(max_examples=100, deadline=None)
@given(case=sections(), axis=st.sampled_from(["x", "y"]), beyond=st.integers(1, 5))
def test_parse_section_rejects_boxes_outside_the_image(case, axis, beyond):
    (ny, nx), (x1, x2, y1, y2) = case
    if axis == "x":
        x2 = nx + beyond
    else:
        y2 = ny + beyond
    with pytest.raises(HeaderError, match="beyond the image axis"):
        parse_section(f"[{x1}:{x2},{y1}:{y2}]", (ny, nx))


@settings(max_examples=100, deadline=None)
@given(ny=st.integers(1, 40), nx=st.integers(1, 40), x1=st.integers(1, 40), y1=st.integers(1, 40))
def test_parse_section_star_and_single_pixels(ny, nx, x1, y1):
    assert parse_section("[*,*]", (ny, nx)) == (slice(0, ny), slice(0, nx))
    if x1 <= nx and y1 <= ny:
        ys, xs = parse_section(f"[{x1},{y1}]", (ny, nx))
        assert (ys, xs) == (slice(y1 - 1, y1), slice(x1 - 1, x1))
        ys, xs = parse_section(f"[*,{y1}:{y1}]", (ny, nx))
        assert (ys, xs) == (slice(y1 - 1, y1), slice(0, nx))


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=20))
def test_parse_section_never_fails_with_anything_but_header_error(text):
    try:
        ys, xs = parse_section(text, (50, 50))
    except HeaderError as err:
        assert repr(text)[1:-1][:10] in str(err) or "index below 1" in str(err) or "beyond" in str(err)
    else:
        assert isinstance(ys, slice) and isinstance(xs, slice)

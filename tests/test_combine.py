import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from astropy.nddata import CCDData
from astropy.stats import mad_std, sigma_clip

import daskred as dr
from daskred.errors import ConfigError, ShapeMismatchError

from conftest import raise_if_dask_computes

ccdproc = pytest.importorskip("ccdproc")

SHAPE = (9, 37, 53)  # odd, non-square; chunks below do not divide it


def _cube(seed=0, nan=True, outliers=True, shape=SHAPE):
    rng = np.random.default_rng(seed)
    cube = rng.normal(100.0, 5.0, shape).astype(np.float32)
    if outliers:
        idx = rng.integers(0, cube.size, 60)
        cube.flat[idx] += rng.choice([-1, 1], 60) * rng.uniform(40, 400, 60).astype(np.float32)
    if nan:
        cube[rng.integers(0, shape[0], 25), rng.integers(0, shape[1], 25), rng.integers(0, shape[2], 25)] = np.nan
        cube[:, 0, 0] = np.nan  # a pixel with no data at all
    return cube


def _frames(cube, chunks=(1, 10, 53)):
    return xr.DataArray(da.from_array(cube, chunks=chunks), dims=("frame", "y", "x"))


def _ccds(cube):
    return [CCDData(plane.astype(np.float64), unit="adu") for plane in cube]


# ------------------------------------------------------------------ plain reductions vs numpy
@pytest.mark.parametrize(
    "method, oracle",
    [("median", np.nanmedian), ("mean", np.nanmean), ("min", np.nanmin), ("max", np.nanmax)],
)
def test_methods_match_numpy(method, oracle):
    cube = _cube()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = oracle(cube.astype(np.float64), axis=0)
    got = dr.combine(_frames(cube), method=method).values
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)
    assert np.isnan(got[0, 0])


def test_sum_ignores_missing_and_empty_is_nan():
    cube = _cube()
    got = dr.combine(_frames(cube), method="sum").values
    expected = np.nansum(cube.astype(np.float64), axis=0)
    expected[0, 0] = np.nan
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)


def test_weighted_mean_matches_numpy_average():
    cube = _cube(nan=False)
    w = np.linspace(0.5, 2.0, cube.shape[0])
    got = dr.combine(_frames(cube), method="mean", weights=w).values
    np.testing.assert_allclose(got, np.average(cube.astype(np.float64), axis=0, weights=w), rtol=1e-6)


# ------------------------------------------------------------------ rejection vs astropy
@pytest.mark.parametrize("cenfunc", ["median", "mean"])
@pytest.mark.parametrize("stdfunc", ["std", "mad_std"])
@pytest.mark.parametrize("maxiters", [1, 3, None])
def test_sigma_clip_matches_astropy(cenfunc, stdfunc, maxiters):
    cube = _cube(seed=1).astype(np.float64)
    # astropy's C fast path (string cenfunc/stdfunc with axis) takes a different middle value of
    # even-sized samples for mad_std than numpy's median; pass numpy's functions to pin them.
    cen = {"median": np.nanmedian, "mean": np.nanmean}[cenfunc]
    std = {"std": np.nanstd, "mad_std": lambda d, axis: mad_std(d, axis=axis, ignore_nan=True)}[stdfunc]
    clipped = sigma_clip(cube, sigma_lower=2.0, sigma_upper=2.5, maxiters=maxiters, cenfunc=cen,
                         stdfunc=std, axis=0, masked=False, copy=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmean(clipped, axis=0)
    got = dr.combine(_frames(cube.astype(np.float32)), method="mean", clip="sigma", sigma_lower=2.0,
                     sigma_upper=2.5, maxiters=maxiters, cenfunc=cenfunc, stdfunc=stdfunc).values
    np.testing.assert_allclose(got, expected, rtol=2e-6, equal_nan=True)


def test_mad_clip_is_sigma_clip_with_median_and_mad():
    cube = _cube(seed=2).astype(np.float64)
    clipped = sigma_clip(cube, sigma=3.0, maxiters=5, cenfunc=np.nanmedian,
                         stdfunc=lambda d, axis: mad_std(d, axis=axis, ignore_nan=True), axis=0, masked=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(clipped, axis=0)
    got = dr.combine(_frames(cube.astype(np.float32)), method="median", clip="mad", sigma=3.0, maxiters=5).values
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)


def test_counts_of_rejections():
    cube = _cube(seed=3, nan=True)
    result = dr.combine(_frames(cube), method="mean", clip="sigma", sigma=2.0, maxiters=None,
                        with_counts=True).compute()
    clipped = sigma_clip(cube.astype(np.float64), sigma=2.0, maxiters=None, axis=0, masked=True)
    rejected = clipped.mask & ~np.isnan(cube)
    # every kept value passed every iteration's lower bound, so a value rejected low lies below them all
    below = rejected & (cube < np.nanmin(np.where(clipped.mask, np.nan, cube), axis=0))
    np.testing.assert_array_equal(result["count"].values, (~clipped.mask).sum(0))
    np.testing.assert_array_equal(result["rejected_low"].values + result["rejected_high"].values, rejected.sum(0))
    np.testing.assert_array_equal(result["rejected_low"].values, below.sum(0))
    assert result["count"].values[0, 0] == 0


# ------------------------------------------------------------------ vs ccdproc, every parameter pinned
def test_median_matches_ccdproc():
    cube = _cube(seed=4, nan=False)
    combiner = ccdproc.Combiner(_ccds(cube), dtype=np.float64)
    expected = combiner.median_combine(median_func=np.ma.median).data
    got = dr.combine(_frames(cube), method="median").values
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sigma_clipped_mean_matches_ccdproc():
    cube = _cube(seed=5, nan=False)
    combiner = ccdproc.Combiner(_ccds(cube), dtype=np.float64)
    # ccdproc clips once (it passes maxiters=1 to astropy and cannot take another value)
    combiner.sigma_clipping(low_thresh=2.5, high_thresh=2.5, func="median", dev_func="std")
    expected = combiner.average_combine().data
    got = dr.combine(_frames(cube), method="mean", clip="sigma", sigma=2.5, maxiters=1,
                     cenfunc="median", stdfunc="std").values
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_minmax_matches_ccdproc_clip_extrema():
    cube = _cube(seed=6, nan=False)
    combiner = ccdproc.Combiner(_ccds(cube), dtype=np.float64)
    combiner.clip_extrema(nlow=1, nhigh=2)
    expected = combiner.average_combine().data
    got = dr.combine(_frames(cube), method="mean", clip="minmax", nlow=1, nhigh=2).values
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_range_matches_ccdproc_minmax_clipping():
    cube = _cube(seed=7, nan=False)
    combiner = ccdproc.Combiner(_ccds(cube), dtype=np.float64)
    combiner.minmax_clipping(min_clip=92.0, max_clip=110.0)
    expected = combiner.sum_combine().data
    got = dr.combine(_frames(cube), method="sum", clip="range", low=92.0, high=110.0).values
    fully_rejected = ((cube < 92) | (cube > 110)).all(0)
    np.testing.assert_allclose(got[~fully_rejected], expected[~fully_rejected], rtol=1e-6)
    assert np.isnan(got[fully_rejected]).all()


def test_scaled_median_matches_ccdproc():
    rng = np.random.default_rng(8)
    levels = rng.uniform(0.5, 2.0, SHAPE[0])
    cube = (_cube(seed=8, nan=False) * levels[:, None, None]).astype(np.float32)
    combiner = ccdproc.Combiner(_ccds(cube), dtype=np.float64)
    medians = np.median(cube.astype(np.float64).reshape(SHAPE[0], -1), axis=1)
    combiner.scaling = medians.mean() / medians
    expected = combiner.median_combine(median_func=np.ma.median).data
    got = dr.combine(_frames(cube), method="median", scale="median").values
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ------------------------------------------------------------------ other rejections vs direct references
def test_minmax_with_missing_values():
    cube = _cube(seed=9, nan=True)
    got = dr.combine(_frames(cube), method="mean", clip="minmax", nlow=2, nhigh=1).values
    expected = np.full(cube.shape[1:], np.nan)
    for y in range(cube.shape[1]):
        for x in range(cube.shape[2]):
            v = np.sort(cube[:, y, x][~np.isnan(cube[:, y, x])].astype(np.float64))
            kept = v[2:len(v) - 1]
            if kept.size:
                expected[y, x] = kept.mean()
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)


def test_percentile_clip_matches_numpy():
    cube = _cube(seed=10, nan=False).astype(np.float64)
    lo, hi = np.percentile(cube, [20, 80], axis=0)
    expected = np.where((cube >= lo) & (cube <= hi), cube, np.nan)
    got = dr.combine(_frames(cube.astype(np.float32)), method="mean", clip="percentile", percentiles=(20, 80)).values
    np.testing.assert_allclose(got, np.nanmean(expected, 0), rtol=1e-6)


def _reference_iterative(values, spread_func, lower, upper, maxiters):
    v = values.astype(np.float64)
    v = v[~np.isnan(v)]
    for _ in range(maxiters):
        c = np.median(v)
        s = spread_func(v, c)
        keep = (v >= c - lower * s) & (v <= c + upper * s)
        if keep.all():
            break
        v = v[keep]
    return v


def test_ccdclip_matches_noise_model_reference():
    gain, rdnoise = 2.0, 8.0
    cube = _cube(seed=11, nan=False, shape=(11, 13, 17))
    got = dr.combine(_frames(cube, chunks=(1, 4, 17)), method="mean", clip="ccdclip", sigma=2.0,
                     maxiters=4, gain=gain, rdnoise=rdnoise, cenfunc="median").values

    def model(v, c):
        return np.sqrt((rdnoise / gain) ** 2 + max(c, 0.0) / gain)

    for y in range(13):
        for x in range(17):
            ref = _reference_iterative(cube[:, y, x], model, 2.0, 2.0, 4)
            assert got[y, x] == pytest.approx(ref.mean(), rel=1e-6)


def test_ccdclip_reads_gain_from_coordinates():
    cube = _cube(seed=12, nan=False, shape=(7, 9, 11))
    frames = _frames(cube, chunks=(1, 4, 11)).assign_coords(gain=("frame", [2.0] * 7), rdnoise=("frame", [8.0] * 7))
    explicit = dr.combine(frames, method="mean", clip="ccdclip", gain=2.0, rdnoise=8.0).values
    np.testing.assert_array_equal(dr.combine(frames, method="mean", clip="ccdclip").values, explicit)
    with pytest.raises(ConfigError, match="needs gain"):
        dr.combine(_frames(cube), method="mean", clip="ccdclip")


def test_winsorized_clip_rejects_outliers_like_reference():
    cube = _cube(seed=13, nan=False, shape=(12, 11, 13))
    got = dr.combine(_frames(cube, chunks=(1, 5, 13)), method="mean", clip="winsorized", sigma=2.5,
                     maxiters=5).values

    def winsorized(v, c):
        w = v.copy()
        s = np.std(w)
        for _ in range(10):
            w = np.clip(w, c - 1.5 * s, c + 1.5 * s)
            new = 1.134 * np.std(w)
            done = abs(new - s) / s < 5e-4
            s = new
            if done:
                break
        return s

    for y in range(11):
        for x in range(13):
            ref = _reference_iterative(cube[:, y, x], winsorized, 2.5, 2.5, 5)
            assert got[y, x] == pytest.approx(ref.mean(), rel=1e-5)


# ------------------------------------------------------------------ scaling
def test_exptime_scaling_and_zero_offsets():
    base = _cube(seed=14, nan=False, outliers=False)
    t = np.arange(1.0, SHAPE[0] + 1)
    cube = (base * t[:, None, None]).astype(np.float32)
    frames = _frames(cube).assign_coords(exptime=("frame", t))
    got = dr.combine(frames, method="mean", scale="exptime").values
    np.testing.assert_allclose(got, (base.astype(np.float64) * t.mean()).mean(0), rtol=1e-5)
    offsets = np.linspace(-20, 20, SHAPE[0])
    shifted = (base + offsets[:, None, None]).astype(np.float32)
    zeroed = dr.combine(_frames(shifted), method="median", zero=list(offsets)).values
    np.testing.assert_allclose(zeroed, np.median(base, 0), rtol=1e-5)
    auto = dr.combine(_frames(shifted), method="median", zero="median", section="[5:40,3:30]").values
    meds = np.median(shifted[:, 2:30, 4:40].reshape(SHAPE[0], -1).astype(np.float64), axis=1)
    ref = np.median(shifted + (meds.mean() - meds)[:, None, None], axis=0)
    np.testing.assert_allclose(auto, ref, rtol=1e-5)


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize("kwargs", [dict(method="median"), dict(method="mean", clip="sigma", sigma=2.0),
                                    dict(method="median", clip="minmax", with_counts=True),
                                    dict(method="mean", scale="median"),
                                    dict(method="mean", clip="winsorized", sigma=2.0),
                                    dict(method="mean", clip="ccdclip", gain=1.0, rdnoise=5.0, sigma=2.0),
                                    dict(method="mean", clip="mad", maxiters=None, with_counts=True)])
def test_chunk_invariance(kwargs):
    cube = _cube(seed=15)
    results = []
    for chunks, band in [((1, 37, 53), None), ((1, 5, 53), None), ((3, 7, 53), 4), ((9, 37, 53), 1)]:
        out = dr.combine(_frames(cube, chunks=chunks), band=band, **kwargs).compute()
        results.append(out.to_array().values if isinstance(out, xr.Dataset) else out.values)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_combine_is_lazy_and_deterministic(make_frames):
    paths, cube = make_frames(n=5, shape=(31, 23), uint16=True)
    with raise_if_dask_computes():
        frames = dr.open_frames(paths, chunks=6)
        a = dr.combine(frames, method="mean", clip="sigma", scale="median", with_counts=True)
        b = dr.combine(frames, method="mean", clip="sigma", scale="median", with_counts=True)
    assert a["image"].data.name == b["image"].data.name
    assert dr.combine(frames, method="mean", clip="sigma", sigma=2.0).data.name != a["image"].data.name
    np.testing.assert_allclose(dr.combine(frames).values, np.median(cube, 0))


def test_budget_sets_band_height():
    import dask

    cube = _cube(seed=16, nan=False)
    frames = _frames(cube, chunks=(1, 37, 53))
    with dask.config.set({"daskred.block-bytes": 9 * 53 * 4 * 3 * 5}):  # 3 copies for sigma clipping
        small = dr.combine(frames, method="mean", clip="sigma")
    assert max(small.data.chunks[0]) == 5
    np.testing.assert_array_equal(small.values, dr.combine(frames, method="mean", clip="sigma").values)


def test_provenance_attrs(make_frames):
    paths, _ = make_frames(n=3)
    out = dr.combine(dr.open_frames(paths), method="mean", clip="sigma", sigma=2.5, maxiters=3)
    assert out.attrs["ncombine"] == 3
    assert out.attrs["inputs"] == [str(p) for p in paths]
    assert "clip=sigma sigma_lower=2.5 sigma_upper=2.5 maxiters=3" in out.attrs["combine"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="avg"), ConfigError, "method='avg' is not supported; choose one of 'median', 'mean'"),
        (dict(clip="sigmaclip"), ConfigError, "clip='sigmaclip' is not supported"),
        (dict(cenfunc="mode"), ConfigError, "cenfunc='mode'"),
        (dict(method="median", weights=[1.0] * 9), ConfigError, "weights apply to method='mean'"),
        (dict(method="mean", weights=[1.0] * 4), ShapeMismatchError, r"one value per frame \(9\)"),
        (dict(clip="sigma", sigma=0), ConfigError, "must be positive"),
        (dict(clip="percentile", percentiles=(90, 10)), ConfigError, "percentiles"),
        (dict(scale="exptime"), ConfigError, "needs an 'exptime' coordinate"),
        (dict(scale="max"), ConfigError, "scale='max'"),
    ],
)
def test_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        dr.combine(_frames(_cube()), **kwargs)


def test_wrong_dims_error():
    with pytest.raises(ShapeMismatchError, match=r"dims \('frame', 'y', 'x'\)"):
        dr.combine(xr.DataArray(np.zeros((3, 4)), dims=("y", "x")))

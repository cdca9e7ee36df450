"""Tests for daskred.background against photutils Background2D on whole frames."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from astropy.stats import SigmaClip, sigma_clipped_stats
from photutils.background import Background2D, MedianBackground, SExtractorBackground
from photutils.segmentation import detect_sources, detect_threshold
from photutils.utils.exceptions import NoDetectionsWarning

from daskred.background import estimate_background, subtract_background
from daskred.errors import CalibrationError, ConfigError, ShapeMismatchError

SHAPE = (237, 311)


def _sky(shape):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return 1000.0 + 0.04 * yy + 0.02 * xx + 8.0 * np.sin(xx / 150.0)


@pytest.fixture(scope="module")
def scene():
    """Two seeded frames: smooth sky (known) + stars + Poisson noise; returns (cube, sky)."""
    rng = np.random.default_rng(11)
    sky = _sky(SHAPE)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    frames = []
    for scale in (1.0, 1.2):
        truth = scale * sky
        for _ in range(60):
            y0, x0 = rng.uniform(0, SHAPE[0]), rng.uniform(0, SHAPE[1])
            flux, s = 10 ** rng.uniform(3, 5.3), 1.5
            truth = truth + flux / (2 * np.pi * s * s) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * s * s))
        frames.append(rng.normal(truth, np.sqrt(truth)))
    return np.stack(frames).astype(np.float32), np.stack([sky, 1.2 * sky])


def _frames(cube, chunks, **coords):
    arr = xr.DataArray(da.from_array(cube, chunks=chunks), dims=("frame", "y", "x"))
    return arr.assign_coords({k: ("frame", np.asarray(v)) for k, v in coords.items()})


def _photutils(frame, *, box_size=(32, 40), filter_size=3, sigma=3.0, maxiters=10, nsigma=2.0, npixels=5,
               dilate_size=11, mask=None, mask_sources=True, estimator=SExtractorBackground, **kwargs):
    """The reference recipe, photutils on one whole frame, every parameter pinned."""
    sigma_clip = SigmaClip(sigma=sigma, maxiters=maxiters)
    bad = ~np.isfinite(frame) if mask is None else (mask | ~np.isfinite(frame))
    if mask_sources:
        threshold = detect_threshold(frame, nsigma, mask=bad, sigma_clip=sigma_clip)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDetectionsWarning)
            segm = detect_sources(frame, threshold, npixels, mask=bad)
        if segm is not None:
            bad = bad | segm.make_source_mask(size=dilate_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Background2D(frame, box_size, mask=bad, filter_size=filter_size, sigma_clip=sigma_clip,
                            bkg_estimator=estimator(sigma_clip=None), **kwargs)


def _estimate(frames, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy: empty partial boxes
        return estimate_background(frames, **kwargs).compute()


# --------------------------------------------------------------------------------------
# oracle and chunk invariance
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [(1, 50, 100), (1, 17, 23), (2, 237, 311), (1, 64, 311)])
def test_mesh_matches_photutils_whole_frame(scene, chunks):
    cube, _ = scene
    result = _estimate(_frames(cube, chunks), box_size=(32, 40), filter_size=3)
    assert result["background"].dtype == np.float32
    for k in range(2):
        ref = _photutils(cube[k])
        tolerance = 1e-4 * np.median(ref.background_rms)  # the stated contract
        np.testing.assert_allclose(result["background"].values[k], ref.background, rtol=0, atol=tolerance)
        np.testing.assert_allclose(result["rms"].values[k], ref.background_rms, rtol=0, atol=tolerance)


def test_output_chunks_follow_the_input(scene):
    cube, _ = scene
    frames = _frames(cube, (1, 17, 23))
    result = estimate_background(frames, box_size=32)
    assert result["background"].data.chunks == frames.data.chunks
    assert result["rms"].data.chunks == frames.data.chunks


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (dict(statistic="median", filter_size=(1, 3)), dict(estimator=MedianBackground, filter_size=(1, 3))),
        (dict(mask_sources=False, exclude_percentile=50.0), dict(mask_sources=False, exclude_percentile=50.0)),
        (dict(sigma=2.5, maxiters=3, nsigma_sources=3.0, npixels=9, dilate_size=5),
         dict(sigma=2.5, maxiters=3, nsigma=3.0, npixels=9, dilate_size=5)),
        (dict(box_size=64, filter_size=1), dict(box_size=64, filter_size=1)),
    ],
)
def test_options_match_photutils(scene, ours, theirs):
    cube, _ = scene
    kwargs = dict(box_size=(32, 40)) | ours
    result = _estimate(_frames(cube[:1], (1, 60, 311)), **kwargs)
    ref = _photutils(cube[0], **theirs)
    tolerance = 1e-4 * np.median(ref.background_rms)
    np.testing.assert_allclose(result["background"].values[0], ref.background, rtol=0, atol=tolerance)
    np.testing.assert_allclose(result["rms"].values[0], ref.background_rms, rtol=0, atol=tolerance)
    default = _photutils(cube[0])
    assert np.abs(ref.background - default.background).max() > tolerance  # the option mattered


def test_user_mask_and_nan_pixels(scene):
    cube, _ = scene
    frame = cube[:1].copy()
    frame[0, 100:140, 50:90] = np.nan
    bad = np.zeros(SHAPE, dtype=bool)
    bad[:, 200:230] = True
    result = _estimate(_frames(frame, (1, 60, 100)), box_size=(32, 40), mask=xr.DataArray(bad, dims=("y", "x")))
    ref = _photutils(frame[0], mask=bad)
    tolerance = 1e-4 * np.median(ref.background_rms)
    np.testing.assert_allclose(result["background"].values[0], ref.background, rtol=0, atol=tolerance)
    assert np.isfinite(result["background"].values).all()


def test_global_level_matches_sigma_clipped_stats(scene):
    cube, _ = scene
    result = _estimate(_frames(cube, (1, 50, 100)), method="global")
    for k in range(2):
        sigma_clip = SigmaClip(sigma=3.0, maxiters=10)
        threshold = detect_threshold(cube[k], 2.0, sigma_clip=sigma_clip)
        sources = detect_sources(cube[k], threshold, 5).make_source_mask(size=11)
        _, median, std = sigma_clipped_stats(cube[k], mask=sources, sigma=3.0, maxiters=10)
        np.testing.assert_allclose(result["background"].values[k], median, rtol=1e-6)
        np.testing.assert_allclose(result["rms"].values[k], std, rtol=1e-6)


def test_single_image(scene):
    cube, _ = scene
    result = _estimate(xr.DataArray(cube[0], dims=("y", "x")), box_size=(32, 40))
    assert result["background"].dims == ("y", "x")
    np.testing.assert_allclose(result["background"].values, _photutils(cube[0]).background, rtol=0, atol=1e-3)


# --------------------------------------------------------------------------------------
# science: the known sky is recovered, sources masked
# --------------------------------------------------------------------------------------


def test_recovers_the_known_sky(scene):
    cube, sky = scene
    result = _estimate(_frames(cube, (1, 50, 100)), box_size=(32, 40))
    for k in range(2):
        rms = np.sqrt(sky[k]).mean()
        error = result["background"].values[k] - sky[k]
        assert np.median(np.abs(error)) < 0.1 * rms
        np.testing.assert_allclose(result["rms"].values[k].mean(), rms, rtol=0.05)


def test_subtract_background(scene):
    cube, sky = scene
    frames = _frames(cube, (1, 50, 100))
    frames.attrs.update(units="electron", history=["calibrated"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        flat = subtract_background(frames, box_size=(32, 40)).compute()
    assert flat.dtype == np.float32 and flat.attrs["units"] == "electron"
    assert flat.attrs["history"] == ["calibrated", "subtract_background()"]
    ref = _photutils(cube[1])
    np.testing.assert_allclose(flat.values[1], cube[1] - ref.background, rtol=0, atol=1e-4 * np.median(ref.background_rms) + 1e-3)
    # an explicit background, as a Dataset or a DataArray
    level = estimate_background(frames, method="global")
    a = subtract_background(frames, level)
    b = subtract_background(frames, level["background"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_array_equal(a.values, b.values)
    # a calibrated Dataset keeps its other variables
    ds = xr.Dataset({"data": frames, "variance": frames * 0 + 7.0})
    out = subtract_background(ds, level)
    assert set(out) == {"data", "variance"}
    assert float(out["variance"][0, 0, 0]) == 7.0


# --------------------------------------------------------------------------------------
# laziness, determinism
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mesh", "global"])
def test_does_not_compute(scene, no_compute, method):
    cube, _ = scene
    frames = _frames(cube, (1, 50, 100))
    with no_compute():
        result = estimate_background(frames, method=method, box_size=32)
        again = estimate_background(frames, method=method, box_size=32)
        subtracted = subtract_background(frames, method=method, box_size=32)
    assert result["background"].data.name == again["background"].data.name
    assert estimate_background(frames, method=method, box_size=48)["background"].data.name != result["background"].data.name
    assert isinstance(subtracted.data, da.Array)


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (dict(method="poly"), ConfigError, "method='poly' is not supported; choose one of 'mesh', 'global'"),
        (dict(statistic="mode"), ConfigError, "statistic"),
        (dict(box_size=500), ShapeMismatchError, "box_size .* is larger than the frames"),
        (dict(box_size=0), ConfigError, "box_size must be a positive integer"),
        (dict(filter_size=4), ConfigError, "filter_size must be odd"),
        (dict(dilate_size=4), ConfigError, "dilate_size must be odd"),
        (dict(exclude_percentile=120), ConfigError, "exclude_percentile"),
        (dict(sigma=0), ConfigError, "sigma must be a positive number"),
        (dict(mask=np.zeros((3, 3), bool)), ShapeMismatchError, "mask has shape"),
        (dict(mask=np.zeros(SHAPE)), ConfigError, "mask must be boolean"),
    ],
)
def test_bad_options(scene, options, error, match):
    with pytest.raises(error, match=match):
        estimate_background(_frames(scene[0], (1, 50, 100)), **options)


def test_frame_without_usable_pixels_is_named(scene):
    cube = scene[0].copy()
    cube[1] = np.nan
    frames = _frames(cube, (1, 50, 100), path=["a.fits", "b.fits"])
    result = estimate_background(frames, box_size=32)  # lazily fine...
    with pytest.raises(CalibrationError, match=r"frame 1 \(b.fits\)"):
        result.compute()  # ...the frame is named when the graph runs


def test_subtract_background_errors(scene):
    frames = _frames(scene[0], (1, 50, 100))
    level = estimate_background(frames, method="global")
    with pytest.raises(ConfigError, match="only used to estimate the background"):
        subtract_background(frames, level, box_size=32)
    with pytest.raises(ShapeMismatchError, match="does not match the frames"):
        subtract_background(frames, level["background"][:, :10])

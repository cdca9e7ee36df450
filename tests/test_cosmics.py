"""Tests for daskred.cosmics: blocked L.A.Cosmic against astroscrappy on whole frames."""

from __future__ import annotations

import os

import astroscrappy
import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage as ndi
from threadpoolctl import threadpool_info, threadpool_limits

import daskred.cosmics as cosmics
from daskred.cosmics import cosmics_halo, detect_cosmics
from daskred.errors import ConfigError, HeaderError, ShapeMismatchError

RN = 5.0  # read noise (electrons) of the synthetic frames
FWHM = 3.0  # stellar FWHM (pixels) of the synthetic frames


def _scene(rng, shape, *, nstars=40, nhits=150, sky=500.0):
    """Seeded frame in electrons: sky + Gaussian stars + read noise + injected cosmic rays.

    Returns the frame (float32), the star centres and a label image of the injected hits.
    """
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    sigma = FWHM / 2.3548
    truth = np.full(shape, sky)
    # isolated stars: a jittered grid with 18 px spacing, away from the frame edges
    grid = [(y, x) for y in range(12, ny - 11, 18) for x in range(12, nx - 11, 18)]
    stars = []
    for i in rng.permutation(len(grid))[:nstars]:
        y0, x0 = grid[i][0] + rng.uniform(-2, 2), grid[i][1] + rng.uniform(-2, 2)
        flux = 10 ** rng.uniform(3.5, 5.5)
        truth += flux / (2 * np.pi * sigma**2) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * sigma**2))
        stars.append((y0, x0))
    image = (rng.poisson(truth) + rng.normal(0, RN, shape)).astype(np.float32)
    hits = np.zeros(shape, dtype=np.int32)
    for label in range(1, nhits + 1):
        y, x = rng.integers(2, ny - 4), rng.integers(2, nx - 4)
        length, width = rng.integers(1, 4), rng.integers(1, 3)
        image[y : y + length, x : x + width] += rng.uniform(300, 5000)
        hits[y : y + length, x : x + width] = label
    return image, stars, hits


@pytest.fixture(scope="module")
def cube():
    """Three seeded (211, 173) frames in electrons with stars and cosmic rays."""
    rng = np.random.default_rng(7)
    return np.stack([_scene(rng, (211, 173))[0] for _ in range(3)])


def _frames(cube, chunks, **coords):
    arr = xr.DataArray(da.from_array(cube, chunks=chunks), dims=("frame", "y", "x"))
    return arr.assign_coords({k: ("frame", np.asarray(v)) for k, v in coords.items()})


def _oracle(frame, **kwargs):
    """astroscrappy on one whole frame, single-threaded (its OpenMP edge loops race)."""
    kwargs.setdefault("satlevel", np.inf)
    with threadpool_limits(limits=1, user_api="openmp"):
        return astroscrappy.detect_cosmics(frame, **kwargs)


# --------------------------------------------------------------------------------------
# halo derivation
# --------------------------------------------------------------------------------------


def test_halo_follows_the_derivation():
    # Hand-derived in the docstring: 10 px per iteration (+1) with the separable medians.
    assert [cosmics_halo(niter=n) for n in (1, 2, 4)] == [11, 21, 41]
    # Full medians (5x5, 3x3, 7x7): 6 px mask, then 8 px per iteration (+2).
    assert cosmics_halo(niter=4, sepmed=False) == 34
    # PSF-convolved fine structure with a 7x7 kernel: 14 px per iteration.
    assert cosmics_halo(niter=4, fsmode="convolve", psfsize=7) == 56
    assert cosmics_halo(niter=2, fsmode="convolve", psfsize=11) > cosmics_halo(niter=2, fsmode="convolve", psfsize=7)


# --------------------------------------------------------------------------------------
# oracle and chunk invariance
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks",
    [
        (1, 17, 23),  # much smaller than the 41 px halo (merged before overlapping)
        (1, 41, 173),  # exactly the halo
        (1, 64, 100),  # bands not dividing the frame
        (2, 211, 173),  # whole frames, two per block
        (3, 97, 61),
    ],
)
def test_matches_whole_frame_astroscrappy(cube, chunks):
    result = detect_cosmics(_frames(cube, chunks), gain=1.0, readnoise=RN).compute()
    assert result["data"].dtype == np.float32 and result["mask"].dtype == bool
    assert result["data"].data.shape == cube.shape
    for k, frame in enumerate(cube):
        mask, clean = _oracle(frame, gain=1.0, readnoise=RN)
        assert mask.sum() > 50  # the frame really has cosmic rays
        differing = np.count_nonzero(result["mask"].values[k] != mask)
        # Contract: at most 0.01 % of the pixels differ; on these frames none do.
        assert differing <= 1e-4 * mask.size
        assert differing == 0
        np.testing.assert_array_equal(result["data"].values[k], clean)


def test_output_chunks_follow_the_input(cube):
    result = detect_cosmics(_frames(cube, (1, 17, 23)), gain=1.0, readnoise=RN)
    assert result["data"].data.chunks == da.from_array(cube, chunks=(1, 17, 23)).chunks
    assert result["mask"].data.chunks == result["data"].data.chunks


def test_too_small_halo_would_differ(cube, monkeypatch):
    # The synthetic frames are sensitive to the halo: with 2 px the blocks disagree, so the
    # equality above is a real check of the derived halo, not a property of the data.
    monkeypatch.setattr(cosmics, "cosmics_halo", lambda **kwargs: 2)
    result = detect_cosmics(_frames(cube[:1], (1, 40, 50)), gain=1.0, readnoise=RN).compute()
    mask, _ = _oracle(cube[0], gain=1.0, readnoise=RN)
    assert np.count_nonzero(result["mask"].values[0] != mask) > 0


@pytest.mark.parametrize(
    "options",
    [
        dict(sepmed=False, cleantype="medmask", niter=2),
        dict(fsmode="convolve", psfmodel="moffat", psffwhm=3.0, psfsize=9, niter=2),
        dict(cleantype="idw", sigclip=5.0, sigfrac=0.5, objlim=3.0, niter=3),
    ],
)
def test_options_reach_astroscrappy(cube, options):
    result = detect_cosmics(_frames(cube[:1], (1, 50, 60)), gain=1.0, readnoise=RN, **options).compute()
    mask, clean = _oracle(cube[0], gain=1.0, readnoise=RN, **options)
    assert np.count_nonzero(result["mask"].values[0] != mask) <= 1e-4 * mask.size
    np.testing.assert_allclose(result["data"].values[0], clean, rtol=0, atol=0)
    # ... and the option changed something compared with the defaults.
    default_mask, default_clean = _oracle(cube[0], gain=1.0, readnoise=RN)
    assert not (np.array_equal(mask, default_mask) and np.array_equal(clean, default_clean))


def test_single_image_and_numpy_input(cube):
    image = xr.DataArray(cube[0], dims=("y", "x"))
    result = detect_cosmics(image, gain=1.0, readnoise=RN)
    assert result["mask"].dims == ("y", "x")
    assert isinstance(result["mask"].data, da.Array)
    mask, _ = _oracle(cube[0], gain=1.0, readnoise=RN)
    np.testing.assert_array_equal(result["mask"].values, mask)


# --------------------------------------------------------------------------------------
# header defaults, units, user masks, NaN
# --------------------------------------------------------------------------------------


def test_gain_readnoise_saturation_from_coordinates(cube):
    adu = cube / np.array([2.0, 1.5, 3.0], dtype=np.float32)[:, None, None]
    gains, rdnoise, saturate = [2.0, 1.5, 3.0], [5.0, 6.0, 4.0], [900.0, 1200.0, 700.0]
    frames = _frames(adu, (1, 70, 173), gain=gains, rdnoise=rdnoise, saturate=saturate)
    frames.attrs["units"] = "adu"
    result = detect_cosmics(frames).compute()
    for k in range(3):
        mask, clean = _oracle(adu[k], gain=gains[k], readnoise=rdnoise[k], satlevel=saturate[k] * gains[k])
        np.testing.assert_array_equal(result["mask"].values[k], mask)
        np.testing.assert_allclose(result["data"].values[k], clean, rtol=1e-6)
    # the saturation level mattered (stars above it are masked, not flagged)
    unsaturated, _ = _oracle(adu[0], gain=gains[0], readnoise=rdnoise[0])
    assert not np.array_equal(result["mask"].values[0], unsaturated)


def test_electron_units_use_unit_gain(cube):
    frames = _frames(cube, (1, 70, 90), gain=[2.0, 2.0, 2.0], rdnoise=[RN] * 3, saturate=[np.nan] * 3)
    frames.attrs["units"] = "electron"
    result = detect_cosmics(frames)["mask"].compute()
    mask, _ = _oracle(cube[1], gain=1.0, readnoise=RN)
    np.testing.assert_array_equal(result.values[1], mask)
    assert "detect_cosmics(" in detect_cosmics(frames)["data"].attrs["history"][-1]


def test_user_mask_is_passed_through(cube):
    rng = np.random.default_rng(3)
    bad = np.zeros(cube.shape[1:], dtype=bool)
    bad[rng.integers(0, 211, 60), rng.integers(0, 173, 60)] = True
    bad[100:104, :] = True  # a bad row band
    inmask = xr.DataArray(bad, dims=("y", "x"))
    result = detect_cosmics(_frames(cube, (1, 50, 173)), gain=1.0, readnoise=RN, inmask=inmask).compute()
    for k in range(3):
        mask, clean = _oracle(cube[k], gain=1.0, readnoise=RN, inmask=bad)
        np.testing.assert_array_equal(result["mask"].values[k], mask)
        np.testing.assert_array_equal(result["data"].values[k], clean)
    assert not result["mask"].values[:, bad].any()


def test_nan_pixels_stay_nan_and_are_ignored(cube):
    frame = cube[:1].copy()
    frame[0, 30:33, 40:60] = np.nan
    result = detect_cosmics(_frames(frame, (1, 40, 173)), gain=1.0, readnoise=RN).compute()
    bad = ~np.isfinite(frame[0])
    mask, _ = _oracle(np.where(bad, 0, frame[0]).astype(np.float32), gain=1.0, readnoise=RN, inmask=bad)
    np.testing.assert_array_equal(result["mask"].values[0], mask)
    assert np.isnan(result["data"].values[0][bad]).all()
    assert np.isfinite(result["data"].values[0][~bad]).all()


# --------------------------------------------------------------------------------------
# science: recall on injected hits, stars left alone
# --------------------------------------------------------------------------------------


def test_recall_of_injected_hits_and_star_cores_untouched():
    rng = np.random.default_rng(42)
    shape = (301, 283)
    image, stars, hits = _scene(rng, shape, nstars=150, nhits=200)
    frames = _frames(image[None], (1, 64, 100))
    mask = detect_cosmics(frames, gain=1.0, readnoise=RN)["mask"].values[0]

    found = [mask[hits == label].any() for label in range(1, hits.max() + 1)]
    assert np.mean(found) >= 0.95

    # Star cores (r <= 2 px) of the stars with no injected hit within 6 px: a star pixel
    # next to a cosmic ray may rightly be flagged with it (the neighbour search).
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    near_hit = ndi.binary_dilation(hits > 0, structure=np.ones((13, 13), bool))
    core = np.zeros(shape, dtype=bool)
    for y0, x0 in stars:
        if not near_hit[round(y0), round(x0)]:
            core |= (yy - y0) ** 2 + (xx - x0) ** 2 <= 2.0**2
    assert core.sum() > 1000
    assert mask[core].mean() < 1e-3


# --------------------------------------------------------------------------------------
# laziness, determinism, threads
# --------------------------------------------------------------------------------------


def test_does_not_compute(cube, no_compute):
    frames = _frames(cube, (1, 50, 60), gain=[1.0] * 3, rdnoise=[RN] * 3)
    with no_compute():
        result = detect_cosmics(frames, inmask=xr.DataArray(np.zeros(cube.shape[1:], bool), dims=("y", "x")))
        again = detect_cosmics(frames, inmask=xr.DataArray(np.zeros(cube.shape[1:], bool), dims=("y", "x")))
    assert result["mask"].data.name == again["mask"].data.name  # deterministic graph names
    other = detect_cosmics(frames, sigclip=5.0)
    assert other["mask"].data.name != result["mask"].data.name


def test_openmp_limited_to_one_thread_inside_tasks(cube, monkeypatch):
    seen = []
    original = astroscrappy.detect_cosmics

    def spy(*args, **kwargs):
        seen.append([info["num_threads"] for info in threadpool_info() if info["user_api"] == "openmp"])
        return original(*args, **kwargs)

    monkeypatch.setattr(astroscrappy, "detect_cosmics", spy)
    before = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "openmp"]
    with dask.config.set(scheduler="threads", num_workers=2):
        detect_cosmics(_frames(cube, (1, 60, 173)), gain=1.0, readnoise=RN).compute()
    assert len(seen) >= 3 and all(seen)
    assert all(n == 1 for threads in seen for n in threads)
    after = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "openmp"]
    assert after == before  # the limit does not leak out of the task
    if (os.cpu_count() or 1) > 1 and "OMP_NUM_THREADS" not in os.environ:
        assert max(before) > 1  # so the check above is not vacuous


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


def test_missing_gain_is_an_error(cube):
    with pytest.raises(HeaderError, match="gain"):
        detect_cosmics(_frames(cube, (1, 50, 60)), readnoise=RN)
    frames = _frames(cube, (1, 50, 60), gain=[1.0, np.nan, 1.0], rdnoise=[RN] * 3)
    with pytest.raises(HeaderError, match="pass gain="):
        detect_cosmics(frames)


def test_missing_readnoise_is_an_error(cube):
    with pytest.raises(HeaderError, match="readnoise"):
        detect_cosmics(_frames(cube, (1, 50, 60)), gain=1.0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(cleantype="mean"), "cleantype='mean' is not supported; choose one of"),
        (dict(fsmode="fft"), "fsmode"),
        (dict(psfmodel="airy"), "psfmodel"),
        (dict(psfsize=6), "odd"),
        (dict(niter=0), "niter"),
        (dict(sigclip=-1.0), "sigclip"),
        (dict(gain=-2.0), "gain must be positive"),
    ],
)
def test_bad_options(cube, options, match):
    kwargs = dict(gain=1.0, readnoise=RN) | options
    with pytest.raises(ConfigError, match=match):
        detect_cosmics(_frames(cube, (1, 50, 60)), **kwargs)


def test_bad_masks_and_shapes(cube):
    frames = _frames(cube, (1, 50, 60))
    with pytest.raises(ShapeMismatchError, match="inmask has shape"):
        detect_cosmics(frames, gain=1.0, readnoise=RN, inmask=np.zeros((10, 10), bool))
    with pytest.raises(ConfigError, match="boolean"):
        detect_cosmics(frames, gain=1.0, readnoise=RN, inmask=np.zeros(cube.shape[1:]))
    with pytest.raises(ShapeMismatchError, match="dims"):
        detect_cosmics(frames.transpose("y", "frame", "x"), gain=1.0, readnoise=RN)
    with pytest.raises(ShapeMismatchError, match="at least 16x16"):
        detect_cosmics(_frames(cube[:, :10, :40], (1, 10, 40)), gain=1.0, readnoise=RN)


# --------------------------------------------------------------------------------------
# real frames
# --------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_real_300s_exposure(lowell, tmp_path):
    from astropy.io import fits

    path = sorted((lowell / "light_VR").glob("*.fits"))[0]
    with fits.open(path) as hdul:
        raw = hdul[0].data.astype(np.float32)
    gain = 4.95  # AGAIN_01, e-/ADU
    overscan = np.median(raw[:, 1387:1432], axis=1, keepdims=True)
    image = (raw[:, 17:1382] - overscan)[None]  # trimmed, overscan-subtracted, ADU
    frames = _frames(image, (1, 300, image.shape[2]))
    # The stars are undersampled (FWHM ~1.7 px): the median fine-structure image of
    # classic L.A.Cosmic flags their cores, so use the matched-filter mode with the PSF.
    options = dict(gain=gain, readnoise=9.3, satlevel=50000 * gain, fsmode="convolve", psffwhm=1.7)
    result = detect_cosmics(frames, **options).compute()
    mask = result["mask"].values[0]
    oracle, _ = _oracle(image[0], **options)
    assert np.count_nonzero(mask != oracle) <= 1e-4 * mask.size

    # Cosmic rays in a 300 s exposure: ~100 small, sharp hits, not star cores.
    labels, nhits = ndi.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    assert 50 < nhits < 2000
    assert mask.mean() < 1e-3
    assert np.median(sizes) <= 4
    smooth = ndi.gaussian_filter(image[0], 1.5)
    sky = np.median(image[0])
    peaks = (smooth == ndi.maximum_filter(smooth, 9)) & (smooth > sky + 300)
    cores = ndi.binary_dilation(peaks, structure=np.ones((3, 3), bool))
    assert peaks.sum() > 100
    assert mask[cores].mean() < 0.01
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 8))
        lo, hi = np.percentile(image[0], [5, 99.5])
        ax.imshow(image[0], origin="lower", cmap="gray", vmin=lo, vmax=hi)
        ys, xs = np.nonzero(mask)
        ax.scatter(xs, ys, s=4, facecolors="none", edgecolors="red", linewidths=0.5)
        fig.savefig(tmp_path / "cosmics_quicklook.png", dpi=150)
        plt.close(fig)
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass


def test_calibrated_dataset_mask_is_ignored_like_inmask(cube):
    bad = np.zeros(cube.shape, dtype=bool)
    bad[:, 50:53, :] = True
    ds = xr.Dataset(
        {
            "data": _frames(cube, (1, 60, 173)),
            "mask": (("frame", "y", "x"), da.from_array(bad, chunks=(1, 60, 173))),
        }
    )
    result = detect_cosmics(ds, gain=1.0, readnoise=RN)["mask"].compute()
    for k in range(3):
        mask, _ = _oracle(cube[k], gain=1.0, readnoise=RN, inmask=bad[k])
        np.testing.assert_array_equal(result.values[k], mask)


# --------------------------------------------------------------------------------------
# astroscrappy 1.3.0 leaks an image-sized buffer in dilate5(niter > 1)
# --------------------------------------------------------------------------------------


def test_dilate5_by_single_steps_equals_astroscrappy():
    rng = np.random.default_rng(11)
    mask = rng.random((53, 71)) > 0.97
    mask[0, :3] = mask[-1, -2:] = True  # dilation at the edges too
    for niter in (1, 2, 3):
        expected = cosmics._ASTROSCRAPPY_DILATE5(mask, niter)
        np.testing.assert_array_equal(cosmics._dilate5_by_single_steps(mask, niter), expected)


def test_leaking_dilation_is_never_called_and_results_are_unchanged(cube, monkeypatch):
    original = cosmics._ASTROSCRAPPY_DILATE5
    calls = []

    def spy(mask, niter):
        calls.append(niter)
        return original(mask, niter)

    monkeypatch.setattr(cosmics, "_ASTROSCRAPPY_DILATE5", spy)
    monkeypatch.setattr(astroscrappy.astroscrappy, "dilate5", spy)  # as on a fresh worker
    satlevel = 15000.0  # the brightest star cores saturate: the dilation of saturated pixels matters
    frames = _frames(cube, (1, 120, 173))
    ours = detect_cosmics(frames, gain=1.0, readnoise=RN, satlevel=satlevel).compute(scheduler="sync")
    assert astroscrappy.astroscrappy.dilate5 is cosmics._dilate5_by_single_steps
    assert calls and set(calls) == {1}, calls  # astroscrappy's own niter=2 path never runs
    monkeypatch.setattr(astroscrappy.astroscrappy, "dilate5", original)  # the unpatched oracle
    for k, frame in enumerate(cube):
        mask, clean = _oracle(frame, gain=1.0, readnoise=RN, satlevel=satlevel)
        assert (frame > satlevel).any()
        np.testing.assert_array_equal(ours["mask"].values[k], mask)
        np.testing.assert_array_equal(ours["data"].values[k], clean)

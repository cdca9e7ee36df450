"""Tests of daskred.quality (variance planes, saturation and bad-pixel masks) against ccdproc / numpy."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from conftest import raise_if_dask_computes
from test_calibrate import GAIN, NF, RDNOISE, RTOL, TRIMMED, _ccd, _computed, _cube, _image, _masters, _raw_arrays

from daskred.calibrate import gain_correct, subtract_overscan, trim
from daskred.errors import ConfigError, FitsFileError, HeaderError
from daskred.quality import load_mask, make_bad_pixel_mask, make_variance, mask_saturated

ccdproc = pytest.importorskip("ccdproc")


def test_make_variance_matches_ccdproc_create_deviation():
    raw = _raw_arrays()
    frames = trim(subtract_overscan(_cube(raw)))
    data = _computed(frames).values
    ours = _computed(make_variance(frames))
    for i in range(NF):
        ref = ccdproc.create_deviation(
            _ccd(data[i]), gain=GAIN * u.electron / u.adu, readnoise=RDNOISE * u.electron, disregard_nan=True
        )
        np.testing.assert_allclose(ours.values[i], ref.uncertainty.array**2, rtol=RTOL)
    # bias only shifts the Poisson term
    bias = np.full(TRIMMED, 100.0)
    with_bias = _computed(make_variance(frames, gain=GAIN, rdnoise=RDNOISE * u.electron, bias=_image(bias, path="b")))
    expected = (np.maximum(data.astype(np.float64) - 100.0, 0) * GAIN + RDNOISE**2) / GAIN**2
    np.testing.assert_allclose(with_bias.values, expected, rtol=RTOL)


def test_make_variance_errors():
    raw = _raw_arrays()
    with pytest.raises(HeaderError, match="read noise.*raw0.fits.*rdnoise="):
        make_variance(_cube(raw, rdnoise=[np.nan] * NF))
    electrons = gain_correct(_cube(raw))
    with pytest.raises(ConfigError, match="already in electrons"):
        make_variance(electrons, gain=2.0)
    np.testing.assert_allclose(
        _computed(make_variance(electrons)).values, np.maximum(raw * GAIN, 0) + RDNOISE**2, rtol=RTOL
    )


def test_mask_saturated_matches_numpy():
    raw = _raw_arrays()
    out = _computed(mask_saturated(_cube(raw)))
    np.testing.assert_array_equal(out.values, raw >= 5000.0)
    assert out.values.any() and not out.values.all()
    lvl = _computed(mask_saturated(_cube(raw), level=4000 * u.adu))
    np.testing.assert_array_equal(lvl.values, raw >= 4000.0)
    with pytest.raises(HeaderError, match="saturation level.*raw1.fits"):
        mask_saturated(_cube(raw, saturate=[1.0, np.nan, 1.0]))


def test_make_bad_pixel_mask_matches_numpy():
    m = _masters()
    flat = m["flat"].copy()
    flat[5, 5] = 0.2 * np.median(flat)
    dark = m["dark"].copy()
    dark[9, 9] = 1e4
    out = _computed(
        make_bad_pixel_mask(
            flat=_image(flat, path="f"), dark=_image(dark, path="d"), flat_range=(0.8, 1.2), dark_sigma=4.0
        )
    )
    ratio = flat / np.median(flat.astype(np.float64))
    med = np.median(dark.astype(np.float64))
    mad = 1.482602218505602 * np.median(np.abs(dark - med))
    expected = (ratio < 0.8) | (ratio > 1.2) | (dark > med + 4.0 * mad)
    np.testing.assert_array_equal(out.values, expected)
    assert out.values[5, 5] and out.values[9, 9]
    with pytest.raises(ConfigError, match="flat=, dark="):
        make_bad_pixel_mask()
    with pytest.raises(ConfigError, match="low < high"):
        make_bad_pixel_mask(flat=_image(flat, path="f"), flat_range=(1.5, 0.5))


def test_load_mask_reads_nonzero_as_bad(tmp_path):
    mask = np.zeros(TRIMMED, dtype=np.uint8)
    mask[2, 3] = 1
    mask[30, 40] = 7
    path = tmp_path / "bpm.fits"
    fits.writeto(path, mask)
    with raise_if_dask_computes():
        loaded = load_mask(path)
    assert loaded.shape == TRIMMED
    np.testing.assert_array_equal(_computed(loaded).values, mask != 0)
    with pytest.raises(FitsFileError, match="bpm_missing.fits"):
        load_mask(tmp_path / "bpm_missing.fits")

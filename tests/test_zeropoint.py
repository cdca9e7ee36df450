"""Tests of daskred.zeropoint: zero points, extinction, zero-point table and header cards."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import xarray as xr
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from daskred.errors import CalibrationError, ConfigError
from daskred.photometry import PhotFlag, aperture_photometry
from daskred.zeropoint import (
    ZEROPOINT_COLUMNS,
    ZeroPoint,
    fit_extinction,
    set_photzp,
    write_zeropoints,
    zero_point,
)
from test_photometry import SHAPE, _gaussian_stars, _grid, _noisy, _tan_wcs


# --------------------------------------------------------------------------------------
# zero_point
# --------------------------------------------------------------------------------------


def _phot_table(mags, zp, exptime, rng, *, rel_err=0.01, airmass=None, k=0.0, colours=None, c=0.0):
    """A photometry table of stars of catalog magnitude ``mags`` seen with zero point ``zp``."""
    zp_eff = zp - k * (airmass or 0.0) + (c * colours if colours is not None else 0.0)
    true = exptime * 10.0 ** (-0.4 * (np.asarray(mags) - zp_eff))
    flux_err = rel_err * true
    flux = true + rng.normal(0.0, 1.0, true.size) * flux_err
    table = Table({"name": [f"S{i}" for i in range(len(mags))], "flux": flux, "flux_err": flux_err,
                   "flags": np.zeros(len(mags), int)})
    table.meta.update(filter="V", exptime=exptime)
    if airmass is not None:
        table.meta["airmass"] = airmass
    return table


def _catalog(mags, colours=None):
    n = len(mags)
    table = Table({"name": [f"S{i}" for i in range(n)], "ra": 150.0 + 0.01 * np.arange(n),
                   "dec": np.full(n, 2.0), "V": mags, "err_V": np.full(n, 0.005)})
    if colours is not None:
        table["B"] = np.asarray(mags) + colours
        table["err_B"] = np.full(n, 0.005)
    return table


def test_zero_point_weighted_and_plain_mean_match_numpy():
    rng = np.random.default_rng(10)
    mags = rng.uniform(11.0, 15.0, 9)
    phot = _phot_table(mags, 23.4, 20.0, rng, rel_err=0.02)
    cat = _catalog(mags)
    result = zero_point(phot, cat)
    zp_i = mags + 2.5 * np.log10(np.asarray(phot["flux"]) / 20.0)
    err_i = np.hypot(0.005, 2.5 / math.log(10) * np.asarray(phot["flux_err"]) / np.asarray(phot["flux"]))
    w = 1.0 / err_i**2
    mean = np.sum(w * zp_i) / np.sum(w)
    chi2 = np.sum(w * (zp_i - mean) ** 2) / (len(zp_i) - 1)
    assert result.nstars == 9 and result.nrejected == 0
    assert result.zp == pytest.approx(mean, abs=1e-12)
    assert result.zp_err == pytest.approx(math.sqrt(max(1.0, chi2) / np.sum(w)), rel=1e-9)
    np.testing.assert_allclose(result.stars["zp"], zp_i, atol=1e-12)
    plain = zero_point(phot, cat, weighting="equal")
    assert plain.zp == pytest.approx(np.mean(zp_i), abs=1e-12)
    assert plain.zp_err == pytest.approx(np.std(zp_i, ddof=1) / 3.0, rel=1e-9)
    assert "weighted mean" in result.method and "weighted" not in plain.method


def test_zero_point_recovered_from_a_synthetic_standard_field():
    rng = np.random.default_rng(11)
    zp_true, exptime, gain, rdnoise = 22.0, 30.0, 1.8, 6.0
    w = _tan_wcs(SHAPE)
    xs, ys = _grid(4, 3, spacing=45, offset=(30.0, 31.0), rng=rng)
    mags = rng.uniform(12.0, 15.0, xs.size)
    counts = exptime * 10.0 ** (-0.4 * (mags - zp_true))
    data, _ = _noisy(120.0 + _gaussian_stars(SHAPE, xs, ys, counts), rng, gain=gain, rdnoise=rdnoise)
    sky = w.pixel_to_world(xs, ys)
    cat = _catalog(mags)
    cat["ra"], cat["dec"] = sky.ra.deg, sky.dec.deg
    cat["V"][3] += 0.4  # a variable star: must be clipped
    image = xr.DataArray(data, dims=("y", "x"), attrs={"wcs": w},
                         coords={"filter": "V", "exptime": exptime, "gain": gain, "rdnoise": rdnoise})
    phot = aperture_photometry(image, cat, radius=4.0, annulus=(3.5, 5.5), radius_unit="fwhm")
    result = zero_point(phot, cat, match="sky")
    assert result.nrejected == 1 and result.stars["status"][3] == "clipped"
    assert result.nstars == xs.size - 1
    assert abs(result.zp - zp_true) < max(3.0 * result.zp_err, 1e-3)
    assert abs(result.zp - zp_true) < 0.02 and result.zp_err < 0.01
    by_name = zero_point(phot, cat)
    assert by_name.zp == result.zp


def test_zero_point_uncertainty_matches_its_scatter():
    rng = np.random.default_rng(20)
    mags = rng.uniform(11.0, 15.0, 10)
    cat = _catalog(mags)
    cat["err_V"] = 0.0
    pulls = []
    for _ in range(150):
        result = zero_point(_phot_table(mags, 23.0, 10.0, rng, rel_err=0.02), cat, maxiters=0)
        pulls.append((result.zp - 23.0) / result.zp_err)
    # zp_err is inflated by the reduced chi-square when above 1, so the pulls are a bit narrower than 1.
    assert 0.8 < np.std(pulls) < 1.1, np.std(pulls)
    assert abs(np.mean(pulls)) < 0.25


def test_clipping_keeps_stars_consistent_within_their_errors():
    mags = np.linspace(11.0, 14.0, 8)
    phot = _phot_table(mags, 21.0, 10.0, np.random.default_rng(21), rel_err=0.0)
    phot["flux_err"] = 0.01 * np.asarray(phot["flux"])  # errors of ~0.011 mag, actual scatter 0
    cat = _catalog(mags)
    cat["err_V"] = 0.0
    cat["V"][2] += 0.02  # 2 sigma off: kept although the others agree perfectly
    cat["V"][5] += 0.2  # 18 sigma off: rejected
    result = zero_point(phot, cat)
    assert list(result.stars["status"]) == ["used"] * 5 + ["clipped"] + ["used"] * 2
    assert abs(result.zp - 21.0) < 0.005


def test_zero_point_leaves_out_flagged_and_bad_stars():
    rng = np.random.default_rng(12)
    mags = rng.uniform(11.0, 15.0, 8)
    phot = _phot_table(mags, 21.0, 10.0, rng)
    phot["flux"][0] *= 3.0
    phot["flags"][0] = int(PhotFlag.SATURATED)
    phot["flux"][1] = -5.0
    cat = _catalog(mags)
    cat["V"][2] = np.nan
    result = zero_point(phot, cat)
    assert list(result.stars["status"][:3]) == ["flagged", "bad_flux", "no_magnitude"]
    assert result.nstars == 5
    assert abs(result.zp - 21.0) < 0.02


def test_zero_point_matches_by_sky_position_within_the_radius():
    rng = np.random.default_rng(13)
    mags = rng.uniform(11.0, 14.0, 6)
    phot = _phot_table(mags, 20.0, 5.0, rng)
    cat = _catalog(mags)
    offsets = np.array([0.3, 0.5, 1.0, 1.5, 1.9, 3.0])  # arcsec; the last is too far
    phot["ra"] = np.asarray(cat["ra"]) + offsets / 3600.0 / math.cos(math.radians(2.0))
    phot["dec"] = np.asarray(cat["dec"])
    del phot["name"]
    result = zero_point(phot, cat, match_radius=2.0)
    assert len(result.stars) == 5
    wider = zero_point(phot, cat, match_radius=4.0 * u.arcsec)
    assert len(wider.stars) == 6


def test_colour_term_recovered():
    rng = np.random.default_rng(14)
    mags = rng.uniform(11.0, 15.0, 25)
    colours = rng.uniform(-0.2, 1.5, 25)
    phot = _phot_table(mags, 22.5, 10.0, rng, rel_err=0.005, colours=colours, c=0.08)
    result = zero_point(phot, _catalog(mags, colours), colour=("B", "V"))
    assert result.colour == "B-V"
    assert abs(result.colour_term - 0.08) < 3 * result.colour_term_err
    assert abs(result.zp - 22.5) < 3 * result.zp_err
    assert "B-V term" in result.method


def test_zero_point_errors():
    rng = np.random.default_rng(15)
    mags = rng.uniform(11.0, 14.0, 4)
    phot, cat = _phot_table(mags, 20.0, 5.0, rng), _catalog(mags)
    with pytest.raises(CalibrationError, match=r"has no magnitude column 'I'; magnitude columns are \['V'\]"):
        zero_point(phot, cat, filter="I")
    with pytest.raises(ConfigError, match="exptime must be a positive number of seconds"):
        zero_point(phot, cat, exptime=0.0)
    del phot.meta["exptime"]
    with pytest.raises(ConfigError, match=r"pass exptime="):
        zero_point(phot, cat)
    other = _catalog(mags)
    other["name"] = ["X1", "X2", "X3", "X4"]
    other["ra"] += 1.0
    phot["ra"], phot["dec"] = np.asarray(cat["ra"]), np.asarray(cat["dec"])
    with pytest.raises(CalibrationError, match=r"no measured star matched .*radius 2 arcsec"):
        zero_point(phot, other, exptime=5.0)
    phot["flags"] = int(PhotFlag.EDGE)
    with pytest.raises(CalibrationError, match=r"4 stars matched .* none is usable .*flagged: 4"):
        zero_point(phot, cat, exptime=5.0)
    with pytest.raises(ConfigError, match="weighting must be"):
        zero_point(phot, cat, exptime=5.0, weighting="robust")


def test_zero_point_reads_a_catalog_path(tmp_path):
    rng = np.random.default_rng(16)
    mags = rng.uniform(11.0, 14.0, 5)
    path = tmp_path / "std.csv"
    _catalog(mags).write(path, format="ascii.csv")
    result = zero_point(_phot_table(mags, 20.0, 5.0, rng), path)
    assert abs(result.zp - 20.0) < 0.02


# --------------------------------------------------------------------------------------
# fit_extinction
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("colour", [False, True])
def test_extinction_and_zp0_recovered_from_several_airmasses(colour):
    rng = np.random.default_rng(17)
    zp0, k, c = 24.8, 0.18, 0.05
    results = []
    for airmass in (1.05, 1.3, 1.6, 2.0, 2.4):
        mags = rng.uniform(11.0, 15.0, 10)
        colours = rng.uniform(-0.2, 1.5, 10) if colour else None
        phot = _phot_table(mags, zp0, 15.0, rng, rel_err=0.01, airmass=airmass, k=k, colours=colours,
                           c=c if colour else 0.0)
        results.append(zero_point(phot, _catalog(mags, colours), colour=("B", "V") if colour else None))
    # One bad measurement: a cloud on one star.
    results[2].stars["zp"][0] -= 0.5
    fit = fit_extinction(results, colour=colour)
    assert fit.nrejected == 1 and not fit.stars["used"][20]
    assert abs(fit.k - k) < 3 * fit.k_err and abs(fit.k - k) < 0.03
    assert abs(fit.zp0 - zp0) < 3 * fit.zp0_err and abs(fit.zp0 - zp0) < 0.05
    assert fit.nimages == 5 and fit.nstars == 49
    if colour:
        assert abs(fit.colour_term - c) < 3 * fit.colour_term_err
    zp, err = fit.zero_point_at(1.3)
    assert zp == pytest.approx(fit.zp0 - 1.3 * fit.k)
    assert 0 < err < math.hypot(fit.zp0_err, 1.3 * fit.k_err)  # zp0 and k are anti-correlated


def test_extinction_matches_numpy_least_squares():
    rng = np.random.default_rng(18)
    results = []
    for x in (1.1, 1.9):
        mags = rng.uniform(11.0, 14.0, 6)
        results.append(zero_point(_phot_table(mags, 25.0, 10.0, rng, airmass=x, k=0.2), _catalog(mags)))
    fit = fit_extinction(results, maxiters=0, weighting="equal")
    x = np.concatenate([np.full(6, r.airmass) for r in results])
    y = np.concatenate([np.asarray(r.stars["zp"]) for r in results])
    design = np.column_stack([np.ones_like(x), -x])
    params, res, *_ = np.linalg.lstsq(design, y, rcond=None)
    cov = np.linalg.inv(design.T @ design) * res[0] / (len(y) - 2)
    np.testing.assert_allclose([fit.zp0, fit.k], params, rtol=1e-10)
    np.testing.assert_allclose(fit.covariance, cov, rtol=1e-8)
    weighted = fit_extinction(results, maxiters=0)
    err = np.concatenate([np.asarray(r.stars["zp_err"]) for r in results])
    w = 1.0 / err**2
    normal = design.T @ (design * w[:, None])
    wparams = np.linalg.solve(normal, design.T @ (w * y))
    chi2 = np.sum(w * (y - design @ wparams) ** 2) / (len(y) - 2)
    np.testing.assert_allclose([weighted.zp0, weighted.k], wparams, rtol=1e-10)
    np.testing.assert_allclose(weighted.covariance, np.linalg.inv(normal) * max(1.0, chi2), rtol=1e-8)


def test_fit_extinction_errors():
    rng = np.random.default_rng(19)
    mags = rng.uniform(11.0, 14.0, 5)
    a = zero_point(_phot_table(mags, 20.0, 5.0, rng, airmass=1.2), _catalog(mags))
    b = zero_point(_phot_table(mags, 20.0, 5.0, rng, airmass=1.2), _catalog(mags))
    with pytest.raises(CalibrationError, match="two or more airmasses, got only X=1.2"):
        fit_extinction([a, b])
    nan = zero_point(_phot_table(mags, 20.0, 5.0, rng), _catalog(mags))
    with pytest.raises(CalibrationError, match=r"images \[1\] have no airmass"):
        fit_extinction([a, nan])
    cat_r = _catalog(mags)
    cat_r.rename_column("V", "R")
    cat_r.rename_column("err_V", "err_R")
    r = zero_point(_phot_table(mags, 20.0, 5.0, rng, airmass=1.5), cat_r, filter="R")
    with pytest.raises(CalibrationError, match=r"one filter at a time, got \['R', 'V'\]"):
        fit_extinction([a, r])
    with pytest.raises(CalibrationError, match="colour=True needs every result computed with the same colour"):
        fit_extinction([a, b], colour=True)
    with pytest.raises(ConfigError, match="non-empty list of ZeroPoint"):
        fit_extinction([])


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------


def test_write_zeropoints_atomic_csv(tmp_path):
    rows = [
        {"image": "a.fits", "object": "SA95", "filter": "V", "night": "2024-03-01", "airmass": 1.2,
         "zp": 24.123456789, "zp_err": 0.0123, "nstars": 7},
        {"image": "b.fits", "object": "SA95", "filter": "R", "night": "2024-03-01", "airmass": float("nan"),
         "zp": 24.5, "zp_err": 0.02, "nstars": np.int64(3), "k": 0.1},
    ]
    path = write_zeropoints(rows, tmp_path / "photometry" / "zeropoints.csv")
    assert path == tmp_path / "photometry" / "zeropoints.csv"
    with open(path, newline="") as handle:
        back = list(csv.DictReader(handle))
    assert list(back[0]) == list(ZEROPOINT_COLUMNS) + ["k"]
    assert float(back[0]["zp"]) == 24.123456789 and back[1]["nstars"] == "3"
    assert math.isnan(float(back[1]["airmass"])) and back[0]["k"] == ""
    assert sorted(p.name for p in path.parent.iterdir()) == ["zeropoints.csv"]  # no temporary left
    with pytest.raises(CalibrationError, match=r"zero-point row 0 lacks \['night'\]"):
        write_zeropoints([{k: v for k, v in rows[0].items() if k != "night"}], path)
    assert len(path.read_text().splitlines()) == 3  # the previous file is intact


def test_set_photzp_cards():
    header = fits.Header({"EXPTIME": 100.0, "OBJECT": "SA95"})
    result = ZeroPoint(zp=24.0, zp_err=0.012, nstars=6, nrejected=1, filter="V", exptime=30.0, airmass=1.2,
                       method="aperture; 3-sigma clipped weighted mean")
    out = set_photzp(header, result)
    assert out["PHOTZP"] == pytest.approx(24.0 + 2.5 * math.log10(100.0))  # the header's EXPTIME wins
    assert out["PHOTZPER"] == 0.012 and out["PHOTZPN"] == 6
    assert out["PHOTZPMT"] == "aperture; 3-sigma clipped weighted mean"
    assert "PHOTZP" not in header  # input untouched
    per_s = set_photzp(header, result, units="per_second")
    assert per_s["PHOTZP"] == 24.0
    assert set_photzp(fits.Header(), result)["PHOTZP"] == pytest.approx(24.0 + 2.5 * math.log10(30.0))
    with pytest.raises(ConfigError, match="needs a positive exposure time"):
        set_photzp(fits.Header(), 24.0)
    with pytest.raises(ConfigError, match="units must be 'image' or 'per_second'"):
        set_photzp(header, 24.0, units="adu")

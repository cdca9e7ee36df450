"""Tests of daskred.photometry: aperture photometry, flags, standard-star catalogs."""

from __future__ import annotations

import csv
import math

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.stats import sigma_clip
from astropy.table import Table
from astropy.wcs import WCS
from photutils.aperture import CircularAnnulus, CircularAperture
from photutils.aperture import aperture_photometry as pu_aperture_photometry
from scipy.special import erf

from daskred.errors import CalibrationError, ConfigError
from daskred.photometry import PhotFlag, aperture_photometry, read_standards

SHAPE = (157, 201)  # odd, non-square
FWHM = 3.0
SIGMA_PSF = FWHM / (2.0 * math.sqrt(2.0 * math.log(2.0)))


# --------------------------------------------------------------------------------------
# synthetic images
# --------------------------------------------------------------------------------------


def _gaussian_stars(shape, xs, ys, fluxes, fwhm=FWHM):
    """Pixel-integrated circular Gaussians (exact total flux per star)."""
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    ny, nx = shape
    xe, ye = np.arange(nx + 1) - 0.5, np.arange(ny + 1) - 0.5
    image = np.zeros(shape)
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        cx = np.diff(erf((xe - x) / (math.sqrt(2.0) * sigma))) / 2.0
        cy = np.diff(erf((ye - y) / (math.sqrt(2.0) * sigma))) / 2.0
        image += f * np.outer(cy, cx)
    return image


def _moffat_stars(shape, xs, ys, fluxes, fwhm=FWHM, beta=3.5, over=5, half=30):
    """Moffat stars integrated over pixels by oversampling, normalised analytically."""
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    norm = (beta - 1.0) / (math.pi * alpha**2)
    image = np.zeros(shape)
    ny, nx = shape
    sub = (np.arange(over) + 0.5) / over - 0.5
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        x0, x1 = max(int(x) - half, 0), min(int(x) + half + 1, nx)
        y0, y1 = max(int(y) - half, 0), min(int(y) + half + 1, ny)
        px = (np.arange(x0, x1)[:, None] + sub[None, :]).ravel()
        py = (np.arange(y0, y1)[:, None] + sub[None, :]).ravel()
        r2 = (px[None, :] - x) ** 2 + (py[:, None] - y) ** 2
        fine = f * norm * (1.0 + r2 / alpha**2) ** (-beta) / over**2
        image[y0:y1, x0:x1] += fine.reshape(y1 - y0, over, x1 - x0, over).sum(axis=(1, 3))
    return image


def _grid(nx_stars=6, ny_stars=5, spacing=30, offset=(22.3, 18.7), rng=None):
    xs, ys = np.meshgrid(offset[0] + spacing * np.arange(nx_stars), offset[1] + spacing * np.arange(ny_stars))
    xs, ys = xs.ravel(), ys.ravel()
    if rng is not None:  # sub-pixel jitter
        xs = xs + rng.uniform(-0.5, 0.5, xs.size)
        ys = ys + rng.uniform(-0.5, 0.5, ys.size)
    return xs, ys


def _noisy(model_adu, rng, gain=2.0, rdnoise=5.0):
    """ADU image with Poisson (in electrons) and Gaussian read noise; model variance."""
    electrons = rng.poisson(model_adu * gain).astype(np.float64) + rng.normal(0.0, rdnoise, model_adu.shape)
    variance = (model_adu * gain + rdnoise**2) / gain**2
    return electrons / gain, variance


def _tan_wcs(shape, ra=150.05, dec=2.2, scale_arcsec=0.5):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [shape[1] / 2.0, shape[0] / 2.0]
    w.wcs.cdelt = [-scale_arcsec / 3600.0, scale_arcsec / 3600.0]
    return w


class _CountingScheduler:
    """A dask scheduler that counts how often it is asked to compute."""

    def __init__(self):
        self.calls = 0

    def __call__(self, dsk, keys, **kwargs):
        self.calls += 1
        return dask.get(dsk, keys, **kwargs)


# --------------------------------------------------------------------------------------
# aperture_photometry
# --------------------------------------------------------------------------------------


def test_aperture_photometry_matches_photutils_oracle():
    rng = np.random.default_rng(1)
    xs, ys = _grid(4, 3, spacing=40, rng=rng)
    fluxes = rng.uniform(5e3, 5e4, xs.size)
    data, variance = _noisy(100.0 + _gaussian_stars(SHAPE, xs, ys, fluxes), rng)
    r, r_in, r_out = 6.0, 10.0, 15.0
    phot = aperture_photometry(
        data, np.column_stack([xs, ys]), radius=r, annulus=(r_in, r_out), variance=variance,
        recenter=False,
    )
    # Oracle: photutils' aperture sum, the annulus clipped with astropy directly.
    positions = np.column_stack([xs, ys])
    aper = CircularAperture(positions, r=r)
    ref = pu_aperture_photometry(data, aper, error=np.sqrt(variance), method="exact")
    medians, stds, counts = [], [], []
    for amask in CircularAnnulus(positions, r_in=r_in, r_out=r_out).to_mask(method="center"):
        values = amask.get_values(data)
        clipped = sigma_clip(values, sigma=3.0, maxiters=5, cenfunc="median", stdfunc="std")
        kept = clipped.compressed()
        medians.append(np.median(kept))
        stds.append(np.std(kept))
        counts.append(kept.size)
    medians, stds, counts = map(np.asarray, (medians, stds, counts))
    expected_flux = np.asarray(ref["aperture_sum"]) - medians * aper.area
    level_err = math.sqrt(math.pi / 2.0) * stds / np.sqrt(counts)
    expected_err = np.hypot(np.asarray(ref["aperture_sum_err"]), aper.area * level_err)

    np.testing.assert_allclose(phot["background"], medians, rtol=1e-12)
    np.testing.assert_array_equal(phot["nsky"], counts)
    np.testing.assert_allclose(phot["flux"], expected_flux, rtol=1e-9)
    np.testing.assert_allclose(phot["flux_err"], expected_err, rtol=1e-9)
    np.testing.assert_allclose(phot["area"], aper.area, rtol=1e-9)
    assert np.all(phot["flags"] == 0)
    assert phot.meta["noise_model"] == "variance"


@pytest.mark.parametrize("profile", ["gaussian", "moffat"])
def test_fluxes_and_positions_recovered_within_noise(profile):
    rng = np.random.default_rng(2)
    xs, ys = _grid(4, 3, spacing=45, offset=(30.2, 33.6), rng=rng)
    fluxes = rng.uniform(2e4, 1e5, xs.size)
    make = _gaussian_stars if profile == "gaussian" else _moffat_stars
    sky = 150.0
    data, variance = _noisy(sky + make(SHAPE, xs, ys, fluxes), rng)
    start = np.column_stack([xs + rng.uniform(-1.5, 1.5, xs.size), ys + rng.uniform(-1.5, 1.5, xs.size)])
    radius = 5.0 * FWHM if profile == "moffat" else 3.0 * FWHM
    phot = aperture_photometry(data, start, radius=radius, annulus=(radius + 3, radius + 8), variance=variance)
    if profile == "gaussian":
        expected = fluxes * (1.0 - np.exp(-(radius**2) / (2 * SIGMA_PSF**2)))
    else:
        beta, alpha = 3.5, FWHM / (2.0 * math.sqrt(2.0 ** (1.0 / 3.5) - 1.0))
        expected = fluxes * (1.0 - (1.0 + radius**2 / alpha**2) ** (1.0 - beta))
    pulls = (np.asarray(phot["flux"]) - expected) / np.asarray(phot["flux_err"])
    assert np.all(np.abs(pulls) < 4.0), pulls
    np.testing.assert_allclose(phot["x"], xs, atol=0.1)
    np.testing.assert_allclose(phot["y"], ys, atol=0.1)
    # Moffat wings reach the annulus a little; the level is still the sky within noise.
    assert np.all(np.abs(np.asarray(phot["background"]) - sky) < 5 * np.asarray(phot["background_err"]) + 0.05)
    assert np.all(phot["flags"] == 0)


@pytest.mark.parametrize(
    ("model", "flux"),
    [("variance", 2e4), ("ccd", 2e4), ("ccd-subtracted", 2e4), ("background", 1e3)],
)
def test_uncertainties_match_monte_carlo_scatter(model, flux):
    rng = np.random.default_rng(3)
    gain, rdnoise, sky = 2.0, 5.0, 100.0
    xs, ys = _grid(6, 5, spacing=32, offset=(20.4, 15.8), rng=rng)
    truth = sky + _gaussian_stars(SHAPE, xs, ys, np.full(xs.size, flux))
    expected = flux * (1.0 - math.exp(-(7.5**2) / (2 * SIGMA_PSF**2)))
    pulls, errs = [], []
    for _ in range(12):
        data, variance = _noisy(truth, rng, gain=gain, rdnoise=rdnoise)
        kwargs = {"variance": variance} if model == "variance" else {}
        if model.startswith("ccd"):
            kwargs = {"gain": gain, "rdnoise": rdnoise}
        if model == "ccd-subtracted":  # the sky no longer shows in the pixel values
            data = data - sky
        phot = aperture_photometry(
            data, np.column_stack([xs, ys]), radius=7.5, annulus=(10.0, 15.0), recenter=False, **kwargs
        )
        assert phot.meta["noise_model"] == model.split("-")[0]
        pulls.append((np.asarray(phot["flux"]) - expected) / np.asarray(phot["flux_err"]))
        errs.append(np.asarray(phot["flux_err"]))
    pulls = np.concatenate(pulls)
    # 360 samples: the scatter of the pulls is 1 within ~4 % (1 sigma).
    assert 0.85 < np.std(pulls) < 1.15, np.std(pulls)
    assert abs(np.mean(pulls)) < 0.3
    if model != "background":
        # Analytic CCD equation: area*(sky/g + rn^2/g^2) + flux/g + area^2 * var(median level).
        area, n_sky = math.pi * 7.5**2, math.pi * (15.0**2 - 10.0**2)
        pix = sky / gain + (rdnoise / gain) ** 2
        analytic = math.sqrt(area * pix + expected / gain + area**2 * (math.pi / 2.0) * pix / n_sky)
        np.testing.assert_allclose(np.median(np.concatenate(errs)), analytic, rtol=0.05)


def test_flags_edge_saturated_masked_outside_background():
    rng = np.random.default_rng(4)
    xs = np.array([60.0, 2.5, 120.0, 160.0, 100.0, 40.0])
    ys = np.array([60.0, 80.0, 40.0, 110.0, 120.0, 120.0])
    fluxes = np.array([2e4, 2e4, 4e5, 2e4, 2e4, 2e4])
    data, variance = _noisy(50.0 + _gaussian_stars(SHAPE, xs, ys, fluxes), rng)
    mask = np.zeros(SHAPE, bool)
    mask[110, 161] = True  # inside star 3's aperture
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    annulus_40 = ((xx - 40) ** 2 + (yy - 120) ** 2 >= 8**2) & (yy > 118)
    mask |= annulus_40 & ((xx - 40) ** 2 + (yy - 120) ** 2 <= 13**2)  # most of star 5's annulus
    saturate = 0.5 * data[40, 120]
    positions = np.column_stack([np.append(xs, 250.0), np.append(ys, 10.0)])  # last one off the image
    phot = aperture_photometry(
        data, positions, radius=5.0, annulus=(8.0, 13.0), variance=variance, mask=mask,
        saturate=saturate, recenter=False,
    )
    flags = [PhotFlag(int(f)) for f in phot["flags"]]
    assert flags[0] == 0
    assert flags[1] & PhotFlag.EDGE and not flags[1] & PhotFlag.SATURATED
    assert flags[2] == PhotFlag.SATURATED
    assert flags[3] == PhotFlag.MASKED
    assert flags[4] == 0
    assert flags[5] == PhotFlag.BACKGROUND
    assert flags[6] == PhotFlag.OUTSIDE and math.isnan(phot["flux"][6])
    # A masked pixel does not enter the sum: the flux drops by about that pixel's light.
    free = aperture_photometry(data, positions[3:4], radius=5.0, annulus=(8.0, 13.0), recenter=False)
    assert phot["area"][3] == pytest.approx(free["area"][0] - 1.0)
    assert phot["flux"][3] < free["flux"][0]


def test_recenter_failure_is_flagged_and_position_kept():
    data = np.random.default_rng(5).normal(10.0, 1.0, SHAPE)
    data[:, 100:] = np.nan  # the box around (101, 70) is mostly NaN on one side
    phot = aperture_photometry(data, [(150.0, 70.0)], radius=3.0, annulus=(5.0, 8.0))
    assert phot["flags"][0] & PhotFlag.RECENTER
    assert (phot["x"][0], phot["y"][0]) == (150.0, 70.0)
    assert phot["flags"][0] & PhotFlag.MASKED


@pytest.mark.parametrize("carrier", ["wcs", "header", "keyword"])
def test_sky_positions_through_wcs(carrier):
    rng = np.random.default_rng(6)
    w = _tan_wcs(SHAPE)
    xs, ys = _grid(3, 3, spacing=45, offset=(40.3, 35.1), rng=rng)
    data, variance = _noisy(80.0 + _gaussian_stars(SHAPE, xs, ys, np.full(xs.size, 3e4)), rng)
    sky = w.pixel_to_world(xs, ys)
    far = SkyCoord(151.0 * u.deg, 2.2 * u.deg)  # not on the image
    catalog = Table(
        {"name": [f"S{i}" for i in range(xs.size)] + ["far"],
         "ra": np.append(sky.ra.deg, far.ra.deg), "dec": np.append(sky.dec.deg, far.dec.deg)}
    )
    attrs = {"wcs": w} if carrier == "wcs" else {"header": w.to_header()} if carrier == "header" else {}
    image = xr.DataArray(data.astype(np.float32), dims=("y", "x"), attrs=attrs)
    kwargs = {"wcs": w} if carrier == "keyword" else {}
    phot = aperture_photometry(image, catalog, radius=6.0, annulus=(9.0, 14.0), variance=variance, **kwargs)
    assert list(phot["name"]) == [f"S{i}" for i in range(xs.size)]  # the far star is dropped
    np.testing.assert_allclose(phot["x"], xs, atol=0.05)
    np.testing.assert_allclose(phot["y"], ys, atol=0.05)
    back = SkyCoord(phot["ra"] * u.deg, phot["dec"] * u.deg)
    assert np.all(back.separation(sky).arcsec < 0.05)
    # The same stars given as pixels give the same fluxes.
    pix = aperture_photometry(data.astype(np.float32), np.column_stack([xs, ys]), radius=6.0,
                              annulus=(9.0, 14.0), variance=variance)
    np.testing.assert_allclose(phot["flux"], pix["flux"], rtol=1e-6)


def test_catalog_entirely_off_the_image_is_an_error():
    w = _tan_wcs(SHAPE)
    catalog = Table({"name": ["a", "b"], "ra": [151.0, 151.1], "dec": [2.2, 2.3]})
    with pytest.raises(CalibrationError, match=r"none of the 2 sources falls on the 157x201 image.*WCS"):
        aperture_photometry(np.zeros(SHAPE), catalog, wcs=w)


def test_radii_as_multiples_of_the_fwhm():
    rng = np.random.default_rng(7)
    fwhm = 3.7
    xs, ys = _grid(4, 3, spacing=45, offset=(30.0, 31.0), rng=rng)
    data, variance = _noisy(60.0 + _gaussian_stars(SHAPE, xs, ys, np.full(xs.size, 5e4), fwhm=fwhm), rng)
    phot = aperture_photometry(
        data, np.column_stack([xs, ys]), radius=2.5, annulus=(3.5, 5.5), radius_unit="fwhm", variance=variance
    )
    measured = phot.meta["fwhm"]
    assert measured == pytest.approx(fwhm, rel=0.03)
    assert phot.meta["radius"] == pytest.approx(2.5 * measured)
    assert phot.meta["annulus"] == pytest.approx((3.5 * measured, 5.5 * measured))
    pixel = aperture_photometry(
        data, np.column_stack([xs, ys]), radius=2.5 * measured, annulus=(3.5 * measured, 5.5 * measured),
        variance=variance,
    )
    np.testing.assert_allclose(phot["flux"], pixel["flux"], rtol=1e-12)
    given = aperture_photometry(
        data, np.column_stack([xs, ys]), radius=2.0, annulus=(3.0, 5.0), radius_unit="fwhm", fwhm=4.0
    )
    assert given.meta["radius"] == 8.0 and given.meta["fwhm"] == 4.0
    quantity = aperture_photometry(data, np.column_stack([xs, ys]), radius=8.0 * u.pix,
                                   annulus=(12.0 * u.pix, 20.0 * u.pix))
    np.testing.assert_allclose(quantity["flux"], given["flux"], rtol=1e-12)


def test_dask_input_matches_numpy_computes_once_and_chunking_does_not_matter():
    rng = np.random.default_rng(8)
    xs, ys = _grid(3, 3, spacing=50, offset=(35.0, 30.0), rng=rng)
    data, variance = _noisy(90.0 + _gaussian_stars(SHAPE, xs, ys, np.full(xs.size, 3e4)), rng)
    data = data.astype(np.float32)
    mask = np.zeros(SHAPE, bool)
    mask[30, 40:45] = True
    ref = aperture_photometry(data, np.column_stack([xs, ys]), variance=variance, mask=mask, radius=5.0,
                              annulus=(8.0, 12.0))
    for chunks in ((40, 67), (157, 23), (11, 201)):
        image = xr.DataArray(da.from_array(data, chunks=chunks), dims=("y", "x"))
        var = xr.DataArray(da.from_array(variance, chunks=chunks), dims=("y", "x"))
        msk = xr.DataArray(da.from_array(mask, chunks=chunks), dims=("y", "x"))
        counter = _CountingScheduler()
        with dask.config.set(scheduler=counter):
            phot = aperture_photometry(image, np.column_stack([xs, ys]), variance=var, mask=msk, radius=5.0,
                                       annulus=(8.0, 12.0))
        assert counter.calls == 1
        for col in ("x", "y", "flux", "flux_err", "background", "flags"):
            np.testing.assert_array_equal(phot[col], ref[col])


def test_coordinates_of_a_dataarray_feed_the_noise_model_and_meta():
    rng = np.random.default_rng(9)
    xs, ys = _grid(2, 2, spacing=60, offset=(50.0, 45.0))
    data, _ = _noisy(100.0 + _gaussian_stars(SHAPE, xs, ys, np.full(xs.size, 2e4)), rng)
    cube = xr.DataArray(
        data[None].astype(np.float32), dims=("frame", "y", "x"),
        coords={"filter": ("frame", ["V"]), "exptime": ("frame", [30.0]), "airmass": ("frame", [1.3]),
                "gain": ("frame", [2.0]), "rdnoise": ("frame", [5.0]), "saturate": ("frame", [150.0]),
                "object": ("frame", ["SA95"]), "night": ("frame", ["2024-03-01"])},
    )
    phot = aperture_photometry(cube.isel(frame=0), np.column_stack([xs, ys]), radius=5.0, annulus=(8.0, 12.0))
    assert phot.meta["noise_model"] == "ccd"
    assert (phot.meta["filter"], phot.meta["exptime"], phot.meta["airmass"]) == ("V", 30.0, 1.3)
    assert phot.meta["object"] == "SA95" and phot.meta["night"] == "2024-03-01"
    assert np.all(phot["flags"] & PhotFlag.SATURATED)  # from the saturate coordinate
    explicit = aperture_photometry(data, np.column_stack([xs, ys]), radius=5.0, annulus=(8.0, 12.0),
                                   gain=2.0, rdnoise=5.0)
    np.testing.assert_allclose(phot["flux_err"], explicit["flux_err"], rtol=1e-5)
    # A length-1 frame dimension is accepted as one image.
    single = aperture_photometry(cube, np.column_stack([xs, ys]), radius=5.0, annulus=(8.0, 12.0))
    np.testing.assert_array_equal(single["flux"], phot["flux"])


def test_aperture_photometry_errors():
    data = np.zeros(SHAPE)
    with pytest.raises(ConfigError, match="radius_unit must be 'pixel' or 'fwhm'"):
        aperture_photometry(data, [(10, 10)], radius_unit="arcsec")
    with pytest.raises(ConfigError, match="box_size must be an odd integer"):
        aperture_photometry(data, [(10, 10)], box_size=10)
    with pytest.raises(ConfigError, match=r"variance has shape \(10, 10\) but the image has shape \(157, 201\)"):
        aperture_photometry(data, [(10, 10)], variance=np.ones((10, 10)))
    with pytest.raises(ConfigError, match=r"select one frame with .isel\(frame=i\)"):
        aperture_photometry(xr.DataArray(np.zeros((2, 5, 7)), dims=("frame", "y", "x")), [(1, 1)])
    with pytest.raises(ConfigError, match="sky positions .* need a WCS"):
        aperture_photometry(data, Table({"ra": [150.0], "dec": [2.0]}))
    with pytest.raises(ConfigError, match="annulus inner < outer"):
        aperture_photometry(data, [(10, 10)], annulus=(8.0, 5.0))
    with pytest.raises(ConfigError, match=r"columns 'x' and 'y' \(pixels\) or 'ra' and 'dec'"):
        aperture_photometry(data, Table({"name": ["a"]}))
    with pytest.raises(ConfigError, match="an angle .* needs a WCS"):
        aperture_photometry(data, [(10, 10)], radius=2 * u.arcsec)
    with pytest.raises(CalibrationError, match="cannot measure the FWHM.*pass fwhm="):
        aperture_photometry(np.full(SHAPE, 5.0), [(50.0, 50.0)], radius=2.0, annulus=(3, 4), radius_unit="fwhm",
                            recenter=False)


# --------------------------------------------------------------------------------------
# read_standards
# --------------------------------------------------------------------------------------


def test_read_standards_example_csv_and_fits_roundtrip(tmp_path):
    example = read_standards("examples/standards.csv")
    with open("examples/standards.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(example["name"]) == [r["name"] for r in rows]
    np.testing.assert_allclose(example["V"], [float(r["V"]) for r in rows])
    np.testing.assert_allclose(example["ra"], [float(r["ra"]) for r in rows])
    assert math.isnan(example["B"][-1]) and math.isnan(example["err_B"][-1])  # empty cells
    path = tmp_path / "standards.fits"
    Table({"NAME": ["x1", "x2"], "RA": [10.0, 10.1], "DEC": [-5.0, -5.1], "R": [12.0, 13.5],
           "err_R": [0.01, 0.02]}).write(path)
    table = read_standards(path)
    assert table.colnames == ["name", "ra", "dec", "R", "err_R"]
    np.testing.assert_array_equal(table["R"], [12.0, 13.5])
    assert table.meta["path"] == str(path)


def test_read_standards_sexagesimal(tmp_path):
    path = tmp_path / "sexa.csv"
    path.write_text("name,ra,dec,V\nA,10:00:00.0,+02:30:00,12.5\n")
    table = read_standards(path)
    assert table["ra"][0] == pytest.approx(150.0) and table["dec"][0] == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name,ra,V\nA,10.0,12.0\n", r"standards\.csv lacks column 'dec'"),
        ("name,ra,dec\nA,10.0,2.0\n", r"standards\.csv has no magnitude column"),
        ("name,ra,dec,V\nA,10.0,2.0,bright\n", r"column 'V' must hold numbers"),
        ("name,ra,dec,V,err_R\nA,10.0,2.0,12.0,0.1\n", r"'err_R' has no matching magnitude column 'R'"),
        ("name,ra,dec,V\nA,10.0,95.0,12.0\n", r"\|dec\| <= 90"),
    ],
)
def test_read_standards_errors(tmp_path, text, match):
    path = tmp_path / "standards.csv"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=match):
        read_standards(path)


@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
def test_read_standards_missing_or_unreadable_file(tmp_path):
    with pytest.raises(CalibrationError, match=r"nothere\.csv does not exist"):
        read_standards(tmp_path / "nothere.csv")
    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"SIMPLE  =    T" + b"\0" * 100)
    with pytest.raises(CalibrationError, match=r"cannot read standard-star catalog .*broken\.fits as FITS table"):
        read_standards(bad)

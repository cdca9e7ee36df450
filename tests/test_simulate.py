"""Tests of daskred.simulate: the raw data obey the truth written beside them.

Oracles are astropy (FITS, WCS), photutils (apertures, centroids) and numpy statistics of
the noise the simulator claims to add; every tolerance is stated where it is used.
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS
from photutils.aperture import CircularAperture, aperture_photometry
from photutils.centroids import centroid_2dg

from daskred.errors import ConfigError
from daskred.io import parse_section
from daskred.simulate import SCALES, SimulatedDataset, simulate

KEYWORDS = (
    "IMAGETYP", "OBJECT", "FILTER", "EXPTIME", "DATE-OBS", "GAIN", "RDNOISE", "AIRMASS", "RA", "DEC",
    "SATURATE", "BIASSEC", "TRIMSEC", "CCDSUM", "LONGITUD", "LATITUDE",
)


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> SimulatedDataset:
    """The default dataset (2 nights, V and R, 260 x 300 imaging area)."""
    return simulate(tmp_path_factory.mktemp("sim") / "data")


@pytest.fixture(scope="module")
def frames(ds) -> pd.DataFrame:
    return ds.frames()


@pytest.fixture(scope="module")
def stars(ds) -> pd.DataFrame:
    return ds.stars()


def _tiny(directory: Path, **options) -> SimulatedDataset:
    base = dict(scale="tiny", nights=1, filters=("V",), n_bias=2, n_dark=1, n_flat=1, n_science=2, n_standard=1)
    return simulate(directory, **{**base, **options})


def _calibrated(ds: SimulatedDataset, row: pd.Series) -> np.ndarray:
    """Raw frame minus true bias, offset and dark, divided by the true flat (ADU, trimmed)."""
    raw = fits.getdata(ds.directory / row["path"]).astype(np.float64)
    bias = fits.getdata(ds.bias_path).astype(np.float64)
    ys, xs = parse_section(ds.trimsec, raw.shape)
    image = (raw - bias - row["bias_offset"])[ys, xs]
    image -= fits.getdata(ds.dark_path) * row["exptime"] / ds.gain
    return image / fits.getdata(ds.flat_paths[row["filter"]])


def _sky_adu(ds: SimulatedDataset, row: pd.Series) -> np.ndarray:
    ny, nx = ds.shape
    yy = (np.arange(ny) - (ny - 1) / 2)[:, None] / ny
    xx = (np.arange(nx) - (nx - 1) / 2)[None, :] / nx
    return row["sky"] * (1 + row["sky_gx"] * xx + row["sky_gy"] * yy) / ds.gain


def _star_pixels(ds: SimulatedDataset, row: pd.Series, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """0-based trimmed (x, y) of catalog stars through the WCS of the raw header."""
    header = fits.getheader(ds.directory / row["path"])
    x, y = WCS(header).all_world2pix(table["ra"].to_numpy(), table["dec"].to_numpy(), 0)
    x0 = parse_section(header["TRIMSEC"])[1].start
    return x - x0, y


def _expected_flux_e(ds: SimulatedDataset, row: pd.Series, mags: np.ndarray) -> np.ndarray:
    f = row["filter"]
    return row["exptime"] * 10 ** (-0.4 * (mags - ds.zeropoints[f] + ds.extinction[f] * row["airmass"]))


def _enclosed(row: pd.Series, radius):
    """Fraction of a Moffat star's flux within ``radius`` (float or array)."""
    beta = row["beta"]
    alpha = row["fwhm"] / (2 * math.sqrt(2 ** (1 / beta) - 1))
    return 1 - (1 + (radius / alpha) ** 2) ** (1 - beta)


def _clean_stars(ds, row, table, cosmics, *, radius, max_peak_fraction=0.5, min_flux=5e3):
    """Indices of stars that are bright, unsaturated, isolated, away from edges, trails and cosmics.

    A star is isolated when the flux its neighbours can put into its aperture (their flux
    between ``d - radius`` and ``d + radius`` of their own centre) is below 0.2 sigma.
    """
    x, y = _star_pixels(ds, row, table)
    flux = _expected_flux_e(ds, row, table[row["filter"]].to_numpy())
    ny, nx = ds.shape
    alpha = row["fwhm"] / (2 * math.sqrt(2 ** (1 / row["beta"]) - 1))
    peak = flux * (row["beta"] - 1) / (math.pi * alpha**2)
    saturated = peak > 0.9 * 90000
    hits = cosmics[cosmics["path"] == row["path"]]
    noise = row["sky"] + ds.rdnoise**2 + 2.0 * row["exptime"]
    keep = []
    for i in np.flatnonzero((flux > min_flux) & (peak < max_peak_fraction * 90000)):
        if not (radius + 8 < x[i] < nx - radius - 9 and radius + 8 < y[i] < ny - radius - 9):
            continue
        d = np.hypot(x - x[i], y - y[i])
        others = d > 0
        spill = _enclosed(row, d[others] + radius) - _enclosed(row, np.maximum(d[others] - radius, 0.0))
        sigma = math.sqrt(flux[i] + math.pi * radius**2 * noise)
        if np.sum(flux[others] * spill) > 0.2 * sigma:
            continue
        if np.any(saturated & (np.abs(x - x[i]) < radius + 6)):  # bleed trails
            continue
        if np.any(np.hypot(hits["x"] - x[i], hits["y"] - y[i]) < radius + 3):
            continue
        keep.append(i)
    return np.array(keep, dtype=int), x, y, flux


# ----------------------------------------------------------------------------- layout


def test_layout_counts_and_truth_files(ds, frames):
    assert ds.nights == ("2024-03-12", "2024-03-13")
    assert ds.shape == SCALES["small"] == (260, 300)
    assert ds.raw_shape == (260, 340)
    per_night = 5 + 3 + 2 * 5 + 2 * 4 + 3 * 2
    assert len(ds.files) == len(frames) == 2 * per_night
    assert sorted(p.parent.name for p in ds.files) == ["20240312"] * per_night + ["20240313"] * per_night
    assert all(p.is_file() and p.parent.parent == ds.raw_dir for p in ds.files)
    assert [ds.directory / p for p in frames["path"]] == list(ds.files)
    counts = frames.groupby(["night", "imagetyp", "filter"]).size()
    night = "2024-03-12"
    assert counts[(night, "bias", "V")] == 5 and counts[(night, "dark", "V")] == 3
    for f in ("V", "R"):
        assert counts[(night, "flat", f)] == 5
        assert counts[(night, "light", f)] == 4
        assert counts[(night, "standard", f)] == 3
    for path in (ds.parameters_path, ds.stars_path, ds.standards_path, ds.frames_path, ds.cosmics_path,
                 ds.bias_path, ds.dark_path, *ds.flat_paths.values()):
        assert path.is_file() and path.parent == ds.truth_dir
    # atomic writes leave no temporary files behind
    assert not [p for p in ds.directory.rglob(".*")]
    # file names carry type and filter; numbers follow observing order within a night
    first = frames[frames["night"] == night]
    assert list(first["seq"]) == list(range(1, per_night + 1))
    assert list(first["date_obs"]) == sorted(first["date_obs"])
    assert Path(first["path"].iloc[0]).name == "bias_0001.fits"
    assert ds.select(imagetyp="light", filter="R", night=night) == [
        ds.directory / p for p in first["path"] if Path(p).name.startswith("simfield_R_")
    ]


def test_summary_names_the_dataset(ds):
    text = ds.summary()
    assert text.splitlines()[0].startswith(f"{len(ds.files)} raw frames, 2 night(s) (2024-03-12 .. 2024-03-13)")
    assert str(ds.raw_dir) in text and str(ds.truth_dir) in text and ds.trimsec in text


def test_truth_tables_columns(ds, stars):
    standards = pd.read_csv(ds.standards_path)
    assert list(standards.columns) == ["name", "ra", "dec", "V", "R", "err_V", "err_R"]
    assert len(standards) >= 5 and (standards[["err_V", "err_R"]] > 0).all().all()
    assert {"name", "field", "ra", "dec", "V", "R", "err_V", "err_R", "standard"} <= set(stars.columns)
    assert stars["name"].is_unique
    assert set(standards["name"]) == set(stars.loc[stars["standard"], "name"])
    params = json.loads(ds.parameters_path.read_text())
    assert params["zeropoint_e"] == ds.zeropoints and params["extinction"] == ds.extinction
    for f in ("V", "R"):
        assert params["zeropoint_adu"][f] == pytest.approx(ds.zeropoints[f] - 2.5 * math.log10(ds.gain))
    assert params["gain"] == ds.gain and params["trimsec"] == ds.trimsec and params["seed"] == 0


# ----------------------------------------------------------------------------- headers and pixels


def test_headers_have_the_usual_keywords(ds, frames):
    for path, row in zip(ds.files, frames.itertuples()):
        header = fits.getheader(path)
        missing = [k for k in KEYWORDS if k not in header]
        assert not missing, f"{path.name} lacks {missing}"
        assert header["IMAGETYP"] == {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "light": "OBJECT",
                                      "standard": "STANDARD"}[row.imagetyp]
        start = datetime.fromisoformat(header["DATE-OBS"])
        assert "T" in header["DATE-OBS"] and header["DATE-OBS"] == row.date_obs
        assert header["EXPTIME"] == row.exptime and header["FILTER"] == row.filter
        assert header["AIRMASS"] == pytest.approx(row.airmass) and header["CCDSUM"] == "1 1"
        # night = local date of the evening (local mean time from LONGITUD, noon boundary)
        local = start + timedelta(hours=header["LONGITUD"] / 15.0)
        assert (local - timedelta(hours=12)).date().isoformat() == row.night
        assert path.parent.name == row.night.replace("-", "")
        has_wcs = row.imagetyp in ("light", "standard")
        assert ("CTYPE1" in header) == has_wcs


def test_scan_classifies_every_frame(ds, frames):
    from daskred.collection import scan

    table = scan(ds.raw_dir).sort_values("path").reset_index(drop=True)
    truth = frames.assign(path=[str(ds.directory / p) for p in frames["path"]]).sort_values("path")
    assert list(table["path"]) == list(truth["path"])
    assert list(table["imagetyp"]) == list(truth["imagetyp"])
    assert list(table["night"]) == list(truth["night"])
    assert list(table["binning"].unique()) == ["1x1"]


def test_uint16_with_bzero(ds):
    for path in ds.files[:: max(1, len(ds.files) // 8)]:
        with fits.open(path, do_not_scale_image_data=True) as hdul:
            header, stored = hdul[0].header, hdul[0].data
            assert header["BITPIX"] == 16 and header["BZERO"] == 32768 and header["BSCALE"] == 1
            assert stored.dtype.kind == "i" and stored.dtype.itemsize == 2
            stored = stored.astype(np.int32)
        data = fits.getdata(path)
        assert data.dtype == np.uint16
        np.testing.assert_array_equal(data.astype(np.int32), stored + 32768)
        assert data.shape == ds.raw_shape
    # saturated science frames reach (but never exceed) the saturation of the detector
    light = ds.select(imagetyp="light")[0]
    data, header = fits.getdata(light), fits.getheader(light)
    assert data.max() > header["SATURATE"] and data.max() <= 65535


def test_sections_consistent_with_shape(ds):
    header = fits.getheader(ds.files[0])
    shape = (header["NAXIS2"], header["NAXIS1"])
    ty, tx = parse_section(header["TRIMSEC"], shape)
    by, bx = parse_section(header["BIASSEC"], shape)
    assert (ty.stop - ty.start, tx.stop - tx.start) == ds.shape
    assert by == slice(0, shape[0]) and ty == slice(0, shape[0])
    assert bx.start >= tx.stop and bx.stop == shape[1] and tx.start > 0  # prescan, image, overscan
    assert header["DATASEC"] == header["TRIMSEC"]
    assert fits.getdata(ds.bias_path).shape == shape
    assert fits.getdata(ds.dark_path).shape == ds.shape
    assert fits.getdata(ds.flat_paths["V"]).shape == ds.shape


def test_overscan_mean_matches_true_bias_level(ds, frames):
    rn_adu = ds.rdnoise / ds.gain
    for row in frames.itertuples():
        if row.imagetyp not in ("bias", "light"):
            continue
        data = fits.getdata(ds.directory / row.path).astype(np.float64)
        ys, xs = parse_section(fits.getheader(ds.directory / row.path)["BIASSEC"], data.shape)
        region = data[ys, xs]
        # 5 sigma of the mean of Gaussian read noise plus rounding (1/12 ADU^2)
        tol = 5 * math.sqrt(rn_adu**2 + 1 / 12) / math.sqrt(region.size)
        assert region.mean() == pytest.approx(row.overscan_level, abs=tol)
        assert abs(row.overscan_level - ds.bias_level - row.bias_offset) < 2.0  # row structure only


def test_bias_frames_match_true_bias_structure(ds, frames):
    rows = frames[(frames["imagetyp"] == "bias") & (frames["night"] == ds.nights[0])]
    cube = np.stack([fits.getdata(ds.directory / p).astype(np.float64) - off
                     for p, off in zip(rows["path"], rows["bias_offset"])])
    residual = np.median(cube, axis=0) - fits.getdata(ds.bias_path)
    rn_adu = ds.rdnoise / ds.gain
    # median of 5 Gaussian samples: std = rn * ~1.2 / sqrt(5); allow 15 % on the estimate
    assert abs(np.median(residual)) < 0.2
    assert np.std(residual) == pytest.approx(rn_adu * 1.197 / math.sqrt(5), rel=0.15)


def test_darks_match_true_dark_current(ds, frames):
    rows = frames[(frames["imagetyp"] == "dark") & (frames["night"] == ds.nights[0])]
    bias = fits.getdata(ds.bias_path).astype(np.float64)
    ys, xs = parse_section(ds.trimsec, ds.raw_shape)
    electrons = np.median(
        [(fits.getdata(ds.directory / p) - bias - off)[ys, xs] * ds.gain
         for p, off in zip(rows["path"], rows["bias_offset"])],
        axis=0,
    )
    rate = fits.getdata(ds.dark_path)
    t = rows["exptime"].iloc[0]
    hot = rate * t > 1000
    assert hot.sum() >= 10
    # hot pixels: Poisson + read noise of a 3-frame median, < 5 sigma each
    sigma = np.sqrt(rate[hot] * t + ds.rdnoise**2) * 1.2
    assert np.all(np.abs(electrons[hot] - rate[hot] * t) < 5 * sigma)
    # the mean dark current of the cold pixels
    assert np.mean(electrons[~hot]) == pytest.approx(np.mean(rate[~hot]) * t, abs=0.5)


def test_flats_match_true_flat(ds, frames):
    bias = fits.getdata(ds.bias_path).astype(np.float64)
    ys, xs = parse_section(ds.trimsec, ds.raw_shape)
    for f in ds.filters:
        rows = frames[(frames["imagetyp"] == "flat") & (frames["filter"] == f) & (frames["night"] == ds.nights[0])]
        normalised = [((fits.getdata(ds.directory / p) - bias - off)[ys, xs]) * ds.gain / level
                      for p, off, level in zip(rows["path"], rows["bias_offset"], rows["flat_level"])]
        flat = np.median(normalised, axis=0)
        truth = fits.getdata(ds.flat_paths[f])
        assert truth.mean() == pytest.approx(1.0, abs=1e-6)
        assert truth.max() / truth.min() > 1.15  # vignetting, dust and a low column are there
        # Poisson noise of a 5-frame median at the mean level of the flats (+20 % for the median)
        expected = 1.2 / math.sqrt(rows["flat_level"].mean() * len(rows)) * 1.25
        assert np.std(flat / truth - 1) < expected
        assert np.median(flat / truth) == pytest.approx(1.0, abs=2e-3)


# ----------------------------------------------------------------------------- stars, WCS, dithers


def test_star_flux_matches_truth(ds, frames, stars):
    cosmics = pd.read_csv(ds.cosmics_path)
    science = stars[stars["field"] == "science"]
    pulls = []
    for _, row in frames[frames["imagetyp"] == "light"].iterrows():
        radius = 3.0 * row["fwhm"]
        keep, x, y, flux = _clean_stars(ds, row, science, cosmics, radius=radius)
        image = _calibrated(ds, row) - _sky_adu(ds, row)
        phot = aperture_photometry(image, CircularAperture(np.column_stack([x[keep], y[keep]]), r=radius),
                                   method="exact")
        measured = np.asarray(phot["aperture_sum"])
        expected = flux[keep] / ds.gain * _enclosed(row, radius)
        area = math.pi * radius**2
        dark = fits.getdata(ds.dark_path).mean() * row["exptime"]
        sigma = np.sqrt(flux[keep] + area * (row["sky"] + dark + ds.rdnoise**2 + ds.gain**2 / 12)) / ds.gain
        pulls.extend((measured - expected) / sigma)
    pulls = np.array(pulls)
    assert len(pulls) >= 10
    # fluxes agree within noise: every star within 5 sigma, the mean pull near 0, the spread near 1
    assert np.all(np.abs(pulls) < 5), pulls
    assert abs(pulls.mean()) < 4 / math.sqrt(len(pulls))
    assert 0.5 < pulls.std() < 1.6


def test_flat_fielded_sky_is_the_truth_sky_plane(ds, frames, stars):
    """Away from stars, (raw - bias - dark) / flat equals the truth sky plane within noise."""
    cosmics = pd.read_csv(ds.cosmics_path)
    science = stars[stars["field"] == "science"]
    ny, nx = ds.shape
    block = 20
    for f in ds.filters:
        rows = frames[(frames["imagetyp"] == "light") & (frames["filter"] == f)]
        sums = np.zeros((ny // block, nx // block))
        counts = np.zeros_like(sums)
        variance = 0.0
        for _, row in rows.iterrows():
            residual = _calibrated(ds, row) - _sky_adu(ds, row)
            x, y = _star_pixels(ds, row, science)
            flux = _expected_flux_e(ds, row, science[f].to_numpy())
            alpha = row["fwhm"] / (2 * math.sqrt(2 ** (1 / row["beta"]) - 1))
            level = np.maximum(flux * (row["beta"] - 1) / (math.pi * alpha**2 * 0.3), 1.0)  # wings < 0.3 e-
            reach = np.maximum(alpha * np.sqrt(level ** (1 / row["beta"]) - 1), 2 * row["fwhm"])
            good = np.ones((ny, nx), dtype=bool)
            for xi, yi, ri, fi in zip(x, y, reach, flux):
                y0, y1 = max(int(yi - ri), 0), min(int(yi + ri) + 2, ny)
                x0, x1 = max(int(xi - ri), 0), min(int(xi + ri) + 2, nx)
                if y0 < y1 and x0 < x1:
                    yy, xx = np.ogrid[y0:y1, x0:x1]
                    good[y0:y1, x0:x1] &= (xx - xi) ** 2 + (yy - yi) ** 2 > ri**2
                    if fi * (row["beta"] - 1) / (math.pi * alpha**2) > 0.9 * 90000:
                        good[:, x0:x1] = False  # bleed trail
            hits = cosmics[cosmics["path"] == row["path"]]
            good[hits["y"], hits["x"]] = False
            cut = (slice(0, ny // block * block), slice(0, nx // block * block))
            shaped = lambda a: a[cut].reshape(ny // block, block, nx // block, block).sum(axis=(1, 3))  # noqa: E731
            sums += shaped(np.where(good, residual, 0.0))
            counts += shaped(good.astype(float))
            variance += (row["sky"] + ds.rdnoise**2 + 2.0 * row["exptime"]) / ds.gain**2
        sigma = np.sqrt(variance / len(rows) / np.maximum(counts, 1))  # per-block error of the mean
        mean = sums / np.maximum(counts, 1)
        usable = counts > 0.3 * block**2 * len(rows)
        assert usable.sum() > 0.5 * usable.size
        pulls = mean[usable] / sigma[usable]
        assert np.all(np.abs(pulls) < 5), f
        assert abs(pulls.mean()) < 0.5 and pulls.std() < 1.5


def test_standards_recover_zero_point_and_extinction(ds, frames, stars):
    standards = pd.read_csv(ds.standards_path)
    field = stars[stars["field"] == "standard"].reset_index(drop=True)  # standards and faint field stars
    catalog = field.merge(standards[["name"]], on="name", how="left", indicator=True)["_merge"] == "both"
    cosmics = pd.read_csv(ds.cosmics_path)
    for f in ds.filters:
        airmass, delta = [], []
        for _, row in frames[(frames["imagetyp"] == "standard") & (frames["filter"] == f)].iterrows():
            radius = 3.0 * row["fwhm"]
            keep, x, y, _ = _clean_stars(ds, row, field, cosmics, radius=radius, min_flux=1e4)
            keep = keep[catalog.to_numpy()[keep]]
            image = _calibrated(ds, row) - _sky_adu(ds, row)
            phot = aperture_photometry(image, CircularAperture(np.column_stack([x[keep], y[keep]]), r=radius))
            total = np.asarray(phot["aperture_sum"]) / _enclosed(row, radius)
            m_inst = -2.5 * np.log10(total / row["exptime"])
            m_cat = standards.set_index("name").loc[field["name"].to_numpy()[keep], f].to_numpy()
            delta.extend(m_cat - m_inst)
            airmass.extend([row["airmass"]] * len(keep))
        assert np.ptp(airmass) > 0.6 and len(delta) >= 20
        slope, intercept = np.polyfit(airmass, delta, 1)  # m - m_inst = zp_adu - k X
        # 20+ stars with S/N > 50 over 0.8 airmass: both recovered to about 0.005 mag
        assert -slope == pytest.approx(ds.extinction[f], abs=0.015)
        assert intercept == pytest.approx(ds.zeropoints[f] - 2.5 * math.log10(ds.gain), abs=0.02)


def test_wcs_puts_catalog_stars_on_their_peaks(ds, frames, stars):
    cosmics = pd.read_csv(ds.cosmics_path)
    offsets = []
    for _, row in frames[frames["imagetyp"].isin(["light", "standard"])].iloc[::4].iterrows():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the header WCS parses cleanly (no FITSFixedWarning)
            WCS(fits.getheader(ds.directory / row["path"]))
        table = stars[stars["field"] == ("science" if row["imagetyp"] == "light" else "standard")]
        keep, x, y, _ = _clean_stars(ds, row, table, cosmics, radius=2.5 * row["fwhm"])
        image = _calibrated(ds, row) - _sky_adu(ds, row)
        for i in keep:
            cx, cy = int(round(x[i])), int(round(y[i]))
            h = int(math.ceil(1.5 * row["fwhm"]))
            mx, my = centroid_2dg(image[cy - h:cy + h + 1, cx - h:cx + h + 1])
            offsets.append((mx + cx - h - x[i], my + cy - h - y[i]))
    offsets = np.array(offsets)
    assert len(offsets) >= 10
    assert np.all(np.hypot(*offsets.T) < 0.5), offsets
    assert np.all(np.abs(offsets.mean(axis=0)) < 0.05)  # no systematic shift (e.g. 0/1-based, prescan)


def test_dithers_equal_truth_offsets(ds, frames, stars):
    cosmics = pd.read_csv(ds.cosmics_path)
    science = stars[stars["field"] == "science"]
    lights = frames[frames["imagetyp"] == "light"]
    ref = lights.iloc[0]
    assert (ref["dx"], ref["dy"], ref["rotation"]) == (0.0, 0.0, 0.0)
    assert set(lights["reference"]) == {ref["path"]}
    assert lights["rotation"].abs().max() > 0.05 and np.hypot(lights["dx"], lights["dy"]).max() > 3
    xr_, yr_ = _star_pixels(ds, ref, science)
    keep_ref, *_ = _clean_stars(ds, ref, science, cosmics, radius=2.5 * ref["fwhm"])
    image_ref = _calibrated(ds, ref) - _sky_adu(ds, ref)
    ref_centroids = {i: _centroid(image_ref, xr_[i], yr_[i], ref["fwhm"]) for i in keep_ref}
    misses = []
    ny, nx = ds.shape
    for _, row in lights.iloc[1:].iterrows():
        header = fits.getheader(ds.directory / row["path"])
        # rotation and pointing in the header are the truth
        angle = math.degrees(math.atan2(header["CD2_1"], header["CD2_2"]))
        assert angle == pytest.approx(row["rotation"], abs=1e-9)
        assert (header["CRVAL1"], header["CRVAL2"]) == pytest.approx((row["crval1"], row["crval2"]), abs=1e-9)
        # the truth affine transform maps reference positions onto this frame's (through both WCSs)
        x, y = _star_pixels(ds, row, science)
        ax = row["a"] * xr_ + row["b"] * yr_ + row["tx"]
        ay = row["c"] * xr_ + row["d"] * yr_ + row["ty"]
        assert np.max(np.hypot(ax - x, ay - y)) < 0.01
        # dx, dy: where the reference centre lands
        cx, cy = (nx - 1) / 2, (ny - 1) / 2
        assert row["a"] * cx + row["b"] * cy + row["tx"] == pytest.approx(cx + row["dx"], abs=0.01)
        assert row["c"] * cx + row["d"] * cy + row["ty"] == pytest.approx(cy + row["dy"], abs=0.01)
        # and the stars really moved by that much: measured centroids, reference vs this frame
        keep, *_ = _clean_stars(ds, row, science, cosmics, radius=2.5 * row["fwhm"])
        image = _calibrated(ds, row) - _sky_adu(ds, row)
        for i in np.intersect1d(keep, keep_ref):
            pr = ref_centroids[i]
            pk = _centroid(image, x[i], y[i], row["fwhm"])
            predicted = (row["a"] * pr[0] + row["b"] * pr[1] + row["tx"],
                         row["c"] * pr[0] + row["d"] * pr[1] + row["ty"])
            misses.append(math.hypot(pk[0] - predicted[0], pk[1] - predicted[1]))
    assert len(misses) >= 10
    assert max(misses) < 0.5, misses


def _centroid(image: np.ndarray, x: float, y: float, fwhm: float) -> tuple[float, float]:
    cx, cy, h = int(round(x)), int(round(y)), int(math.ceil(1.5 * fwhm))
    mx, my = centroid_2dg(image[cy - h:cy + h + 1, cx - h:cx + h + 1])
    return mx + cx - h, my + cy - h


def test_saturated_stars_bleed_and_standards_do_not_saturate(ds, frames):
    for _, row in frames[frames["imagetyp"].isin(["light", "standard"])].iterrows():
        data = fits.getdata(ds.directory / row["path"])
        saturate = fits.getheader(ds.directory / row["path"])["SATURATE"]
        flagged = data > saturate
        if row["imagetyp"] == "standard":
            assert not flagged.any(), row["path"]
        else:
            # bleed trails: a column with a run of saturated pixels much longer than the PSF core
            longest = max(_longest_run(col) for col in flagged.T)
            assert longest > 4 * row["fwhm"], row["path"]


def _longest_run(column: np.ndarray) -> int:
    padded = np.concatenate([[0], column.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int(np.max(edges[1::2] - edges[::2])) if edges.size else 0


def test_cosmic_ray_truth_matches_pixels(ds, frames):
    cosmics = pd.read_csv(ds.cosmics_path)
    counts = cosmics.groupby("path").size()
    assert (counts.reindex(frames["path"], fill_value=0).to_numpy() == frames["n_cosmic_pixels"].to_numpy()).all()
    bias = fits.getdata(ds.bias_path).astype(np.float64)
    ys, xs = parse_section(ds.trimsec, ds.raw_shape)
    rows = frames[frames["imagetyp"] == "bias"]
    hits = cosmics[cosmics["path"].isin(rows["path"]) & (cosmics["electrons"] > 200)]
    assert len(hits) > 0
    for path, group in hits.groupby("path"):
        offset = rows.loc[rows["path"] == path, "bias_offset"].iloc[0]
        excess = ((fits.getdata(ds.directory / path) - bias - offset)[ys, xs] * ds.gain)[group["y"], group["x"]]
        # electrons recovered within 6 sigma of read noise (+ rounding)
        np.testing.assert_allclose(excess, group["electrons"], atol=6 * math.hypot(ds.rdnoise, ds.gain * 0.3))


def test_airmass_follows_time_and_site(ds, frames):
    from astropy.coordinates import AltAz, EarthLocation, SkyCoord
    from astropy.time import Time
    from astropy.utils import iers

    params = json.loads(ds.parameters_path.read_text())
    site = EarthLocation(lat=params["site"]["latitude"] * u.deg, lon=params["site"]["longitude"] * u.deg,
                         height=params["site"]["altitude"] * u.m)
    rows = frames[frames["imagetyp"].isin(["light", "standard"])]
    mid = Time(list(rows["date_obs"]), scale="utc") + rows["exptime"].to_numpy() / 2 * u.s
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("iers_degraded_accuracy", "ignore"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        altaz = SkyCoord(rows["crval1"].to_numpy() * u.deg, rows["crval2"].to_numpy() * u.deg).transform_to(
            AltAz(obstime=mid, location=site))
    # plane-parallel sec z; precession since J2000 and aberration move a field by < 0.4 deg
    np.testing.assert_allclose(rows["airmass"], 1 / np.cos(altaz.zen.rad), rtol=0.02)
    for night in ds.nights:
        std = rows[(rows["imagetyp"] == "standard") & (rows["night"] == night)]
        assert np.ptp(std["airmass"]) > 0.6  # standards span a range of airmass


# ----------------------------------------------------------------------------- options


def test_same_seed_identical_bytes_other_seed_differs(tmp_path):
    a = _tiny(tmp_path / "a", seed=11, exptime=30 * u.s)
    b = _tiny(tmp_path / "b", seed=11, exptime=30.0)
    c = _tiny(tmp_path / "c", seed=12, exptime=30.0)
    assert [p.relative_to(a.directory) for p in a.files] == [p.relative_to(b.directory) for p in b.files]
    for pa, pb, pc in zip(a.files, b.files, c.files):
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()
    for name in ("stars.csv", "frames.csv", "cosmics.csv", "bias.fits", "flat_V.fits"):
        assert (a.truth_dir / name).read_bytes() == (b.truth_dir / name).read_bytes()
    assert (a.truth_dir / "bias.fits").read_bytes() != (c.truth_dir / "bias.fits").read_bytes()


def test_shape_override_filters_and_progress(tmp_path):
    calls = []
    ds = _tiny(tmp_path / "s", shape=(57, 83), filters=["B", "I"], progress=lambda *a: calls.append(a))
    assert ds.shape == (57, 83) and ds.raw_shape == (57, 123)
    assert fits.getdata(ds.files[-1]).shape == (57, 123)
    assert [c[0] for c in calls] == list(range(1, len(ds.files) + 1))
    assert {c[1] for c in calls} == {len(ds.files)} and [c[2] for c in calls] == list(ds.files)
    assert list(pd.read_csv(ds.standards_path).columns) == ["name", "ra", "dec", "B", "I", "err_B", "err_I"]
    assert {fits.getheader(p)["FILTER"] for p in ds.select(imagetyp="flat")} == {"B", "I"}


def test_bias_only_dataset(tmp_path):
    ds = simulate(tmp_path / "b", scale="tiny", nights=1, n_bias=3, n_dark=0, n_flat=0, n_science=0, n_standard=0)
    assert [p.name for p in ds.files] == ["bias_0001.fits", "bias_0002.fits", "bias_0003.fits"]


def test_existing_dataset_needs_overwrite(tmp_path):
    first = _tiny(tmp_path / "d", seed=1)
    with pytest.raises(ConfigError, match="overwrite=True"):
        _tiny(tmp_path / "d", seed=1)
    second = _tiny(tmp_path / "d", seed=2, n_science=1, overwrite=True)
    assert len(second.files) < len(first.files)
    assert sorted(second.raw_dir.rglob("*.fits")) == sorted(second.files)  # nothing stale left
    foreign = tmp_path / "f"
    (foreign / "raw").mkdir(parents=True)
    (foreign / "raw" / "mine.fits").write_bytes(b"keep")
    with pytest.raises(ConfigError, match="did not write"):
        _tiny(foreign, overwrite=True)
    assert (foreign / "raw" / "mine.fits").read_bytes() == b"keep"
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        _tiny(afile)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"scale": "huge"}, r"unknown scale 'huge'.*'tiny'"),
        ({"shape": (20, 300)}, r"at least \(48, 48\)"),
        ({"shape": (100.0, 120)}, "pair of integers"),
        ({"shape": (100,)}, "pair of integers"),
        ({"nights": 0}, "nights must be >= 1"),
        ({"nights": 1.5}, "nights must be an integer"),
        ({"filters": ()}, "non-empty"),
        ({"filters": ["V", "Q"]}, r"unknown filter.*'Q'.*U, B, V"),
        ({"filters": ["V", "V"]}, "must not repeat"),
        ({"n_bias": -1}, "n_bias must be >= 0"),
        ({"n_flat": True}, "n_flat must be an integer"),
        ({"n_bias": 0, "n_dark": 0, "n_flat": 0, "n_science": 0, "n_standard": 0}, "at least one frame"),
        ({"exptime": 0}, r"exptime must be finite and > 0"),
        ({"exptime_dark": float("nan")}, "exptime_dark must be finite"),
        ({"exptime_standard": 5 * u.m}, r"exptime_standard must be in s"),
        ({"exptime_flat": "5"}, "exptime_flat must be a number"),
        ({"gain": -1.5}, "gain must be finite and > 0"),
        ({"rdnoise": -1}, "rdnoise must be finite and >= 0"),
        ({"dither": 1000}, "dither must be at most"),
        ({"rotation": 30}, "rotation .* must be <= 5"),
        ({"seed": -3}, "seed must be >= 0"),
        ({"seed": None}, "seed must be an integer"),
        ({"start_night": "12/03/2024"}, "ISO date 'YYYY-MM-DD'"),
        ({"n_stars": -5}, "n_stars must be >= 0"),
        ({"n_dark": 200, "exptime_dark": 600}, "do not fit into the afternoon"),
        ({"n_science": 300, "exptime": 300}, "lower n_science"),
        ({"overwrite": "yes"}, "overwrite must be True or False"),
        ({"progress": 3}, "progress must be a callable"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, options, match):
    with pytest.raises(ConfigError, match=match):
        simulate(tmp_path / "x", **{"scale": "tiny", "nights": 1, **options})
    assert not (tmp_path / "x").exists()  # validation happens before anything is written


def test_directory_must_be_a_path():
    with pytest.raises(ConfigError, match="directory must be a path"):
        simulate(42)


def test_interrupted_run_can_be_replaced(tmp_path):
    calls = []

    def stop(done, total, path):
        calls.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tiny(tmp_path / "i", progress=stop)
    folder = tmp_path / "i"
    assert len(list((folder / "raw").rglob("*.fits"))) == 2 and not (folder / "truth" / "frames.csv").exists()
    assert not list(folder.rglob(".*"))  # no temporary files left behind
    with pytest.raises(ConfigError, match="overwrite=True"):
        _tiny(folder)
    ds = _tiny(folder, overwrite=True)
    assert ds.frames_path.is_file() and len(ds.files) == len(ds.frames())

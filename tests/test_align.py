"""Tests of daskred.align: registration of frames onto a reference frame (find_transforms)."""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from conftest import raise_if_dask_computes, render_stars
from daskred.align import find_transforms
from daskred.errors import ConfigError, RegistrationError, ShapeMismatchError
from daskred.resample import apply_transforms

SHAPE = (181, 243)  # odd, non-square
CHUNKS = (1, 50, 100)  # does not divide the shape


def _similarity(dx: float, dy: float, rotation_deg: float = 0.0, scale: float = 1.0) -> np.ndarray:
    t = np.radians(rotation_deg)
    c, s = scale * np.cos(t), scale * np.sin(t)
    return np.array([[c, -s, dx], [s, c, dy], [0.0, 0.0, 1.0]])


def _apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def _corners(shape: tuple[int, int]) -> np.ndarray:
    ny, nx = shape
    return np.array([[0.0, 0.0], [nx - 1.0, 0.0], [0.0, ny - 1.0], [nx - 1.0, ny - 1.0]])


def _render(shape, xy, flux, rng, sigma=1.4, sky=100.0, noise=5.0) -> np.ndarray:
    return render_stars(shape, xy[:, 0], xy[:, 1], flux, rng, sigma=sigma, sky=sky, noise=noise)


def _star_field(truths, *, seed=0, n=150, pad=60, shape=SHAPE):
    """Frames of one star field; truths[i] maps frame i pixels onto reference pixels."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    ref_xy = np.column_stack([rng.uniform(-pad, nx + pad, n), rng.uniform(-pad, ny + pad, n)])
    flux = rng.uniform(2e3, 3e4, n)
    planes = []
    for m in truths:
        inv = np.linalg.inv(m)
        planes.append(_render(shape, _apply(inv, ref_xy), flux, rng))
    return np.stack(planes), ref_xy, flux


def _cube(planes: np.ndarray, chunks=CHUNKS, paths=None) -> xr.DataArray:
    coords = {} if paths is None else {"path": ("frame", paths)}
    return xr.DataArray(da.from_array(planes, chunks=chunks), dims=("frame", "y", "x"), coords=coords,
                        attrs={"units": "adu", "history": []})


TRUTHS = [
    np.eye(3),
    _similarity(12.3, -7.6),
    _similarity(-21.7, 15.2, 0.8),
    _similarity(5.5, 30.1, -1.0, 1.002),
]


@pytest.fixture(scope="module")
def field():
    planes, ref_xy, flux = _star_field(TRUTHS)
    rng = np.random.default_rng(99)
    noise = (100.0 + rng.normal(0.0, 5.0, SHAPE)).astype(np.float32)
    other, _, _ = _star_field([np.eye(3)], seed=123, n=50)  # another field of the sky
    paths = [f"f{i}.fits" for i in range(len(TRUTHS))] + ["noise.fits", "other.fits"]
    return np.concatenate([planes, noise[None], other]), ref_xy, flux, paths


# ----------------------------------------------------------------------------- find_transforms


def test_asterism_recovers_known_transforms(field):
    planes, _, _, paths = field
    frames = _cube(planes[: len(TRUTHS)], paths=paths[: len(TRUTHS)])
    table = find_transforms(frames)
    assert list(table.status) == ["ok"] * len(TRUTHS)
    assert table.attrs["reference"] == 0
    for truth, row in zip(TRUTHS, table.itertuples()):
        corners = _corners(SHAPE)
        err = _apply(row.matrix, corners) - _apply(truth, corners)
        # Done-when of the issue: 0.05 px RMS at the frame corners.
        assert np.sqrt(np.mean(np.sum(err**2, axis=1))) < 0.05
        t_dx, t_dy = truth[0, 2], truth[1, 2]
        t_rot = np.degrees(np.arctan2(truth[1, 0], truth[0, 0]))
        assert abs(row.rotation - t_rot) < 0.01
        assert row.dx == pytest.approx(t_dx, abs=0.05) and row.dy == pytest.approx(t_dy, abs=0.05)
    assert (table.n_matches[1:] >= 20).all()
    assert (table.rms_px[1:] < 0.2).all()
    assert table.reason[0] == "reference frame"


def test_asterism_other_reference_inverts_the_transform(field):
    planes, _, _, _ = field
    frames = _cube(planes[:2])
    table = find_transforms(frames, reference=1, model="shift")
    assert table.attrs["reference"] == 1
    expected = np.linalg.inv(TRUTHS[1])
    assert np.allclose(table.matrix[0], expected, atol=0.05)
    assert np.allclose(table.matrix[1], np.eye(3))


def test_unregistrable_frames_reported_by_name_and_skipped(field):
    planes, _, _, paths = field
    frames = _cube(planes[[0, 1, 4, 5]], paths=[paths[i] for i in (0, 1, 4, 5)])
    # max_stars=30 keeps astroalign's exhaustive search of the wrong field short
    table = find_transforms(frames, on_failure="skip", max_stars=30)
    assert list(table.status) == ["ok", "ok", "failed", "failed"]
    assert "found 0 star(s)" in table.reason[2]  # pure noise: no stars
    assert "no asterism matches the reference frame" in table.reason[3]  # another field
    assert table.path[2] == "noise.fits"
    assert np.isnan(table.matrix[2]).all() and np.isnan(table.dx[3])

    with pytest.raises(RegistrationError, match=r"1 of 2 frame\(s\).*frame 1 \(noise\.fits\).*on_failure='skip'"):
        find_transforms(frames[[0, 2]], on_failure="raise")


@pytest.mark.parametrize("shift", [(7.0, -4.0), (12.37, -7.61), (-30.55, 21.2)])
def test_xcorr_recovers_integer_and_subpixel_shifts(shift):
    truths = [np.eye(3), _similarity(*shift)]
    planes, _, _ = _star_field(truths, seed=4, n=40)
    table = find_transforms(_cube(planes), method="xcorr")
    assert list(table.status) == ["ok", "ok"]
    assert table.dx[1] == pytest.approx(shift[0], abs=0.05)
    assert table.dy[1] == pytest.approx(shift[1], abs=0.05)
    assert table.peak_snr[1] > 10
    assert table.rotation[1] == 0.0 and table.scale[1] == 1.0


def test_xcorr_reports_pure_noise(field):
    planes, _, _, _ = field
    table = find_transforms(_cube(planes[[0, 4]]), method="xcorr", on_failure="skip")
    assert list(table.status) == ["ok", "failed"]
    assert "cross-correlation peak" in table.reason[1]
    assert table.peak_snr[1] < 10


def _frame_wcs(truth: np.ndarray, ref: WCS) -> WCS:
    """WCS of a frame whose pixels map onto the reference's by ``truth`` (exact for TAN)."""
    w = ref.deepcopy()
    inv = np.linalg.inv(truth)
    crpix0 = ref.wcs.crpix - 1.0  # 0-based
    w.wcs.crpix = _apply(inv, crpix0[None])[0] + 1.0
    w.wcs.cd = ref.wcs.cd @ truth[:2, :2]
    return w


def _reference_wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [210.3, -12.4]
    w.wcs.crpix = [122.0, 91.0]
    w.wcs.cd = np.array([[-2.5e-4, 0.0], [0.0, 2.5e-4]])
    return w


def test_wcs_method_from_wcs_objects_and_header_strings():
    ref = _reference_wcs()
    systems = [_frame_wcs(m, ref) for m in TRUTHS]
    planes = np.zeros((len(TRUTHS), *SHAPE), np.float32)
    frames = _cube(planes)
    with raise_if_dask_computes():  # headers only: no pixel is read
        table = find_transforms(frames, method="wcs", wcs=systems)
    for truth, row in zip(TRUTHS, table.itertuples()):
        assert row.status == "ok"
        assert np.abs(_apply(row.matrix, _corners(SHAPE)) - _apply(truth, _corners(SHAPE))).max() < 1e-3
        assert row.rms_px < 1e-3

    # The same from a "header" coordinate, one header with string-valued numbers (repaired).
    headers = []
    for w in systems:
        header = w.to_header()
        headers.append(header)
    headers[2]["CRVAL1"] = str(headers[2]["CRVAL1"])
    headers[2]["PC1_1"] = str(headers[2]["PC1_1"])
    frames = frames.assign_coords(header=("frame", [h.tostring() for h in headers]))
    table2 = find_transforms(frames, method="wcs")
    assert np.allclose(np.stack(table2.matrix), np.stack(table.matrix), atol=1e-6)


def test_wcs_method_reads_headers_from_paths(tmp_path):
    ref = _reference_wcs()
    paths = []
    for k, truth in enumerate(TRUTHS[:2]):
        header = _frame_wcs(truth, ref).to_header()
        header["CRVAL1"] = str(header["CRVAL1"])  # string-valued, as in real files
        path = tmp_path / f"w{k}.fits"
        fits.PrimaryHDU(np.zeros((3, 5), np.float32), header=header).writeto(path)
        paths.append(str(path))
    paths.append(str(tmp_path / "missing.fits"))
    frames = _cube(np.zeros((3, *SHAPE), np.float32), paths=paths)
    table = find_transforms(frames, method="wcs", on_failure="skip")
    assert list(table.status) == ["ok", "ok", "failed"]
    assert np.allclose(table.matrix[1], TRUTHS[1], atol=1e-6)
    assert "cannot read the header of" in table.reason[2] and "missing.fits" in table.reason[2]


def test_wcs_method_reports_frames_without_wcs():
    ref = _reference_wcs()
    headers = [ref.to_header(), fits.Header({"OBJECT": "x"})]
    frames = _cube(np.zeros((2, *SHAPE), np.float32)).assign_coords(
        header=("frame", [h.tostring() for h in headers]), path=("frame", ["a.fits", "b.fits"]))
    table = find_transforms(frames, method="wcs", on_failure="skip")
    assert list(table.status) == ["ok", "failed"]
    assert "no celestial WCS" in table.reason[1]
    with pytest.raises(RegistrationError, match=r"frame 1 \(b\.fits\): the header holds no celestial WCS"):
        find_transforms(frames, method="wcs")
    with pytest.raises(ConfigError, match="method='wcs' needs a WCS per frame"):
        find_transforms(_cube(np.zeros((2, *SHAPE), np.float32)), method="wcs")


def test_find_transforms_chunk_invariant(field):
    planes, _, _, _ = field
    a = find_transforms(_cube(planes[[0, 2]], chunks=(1, 50, 100)))
    b = find_transforms(_cube(planes[[0, 2]], chunks=(2, 181, 243)))
    c = find_transforms(xr.DataArray(planes[[0, 2]], dims=("frame", "y", "x")))  # in memory
    for other in (b, c):
        assert np.allclose(np.stack(a.matrix), np.stack(other.matrix), atol=1e-9)
        assert list(a.n_matches) == list(other.n_matches)


def test_find_transforms_errors(field):
    planes, _, _, _ = field
    frames = _cube(planes[:2])
    with pytest.raises(ConfigError, match=r"method='sift' is not supported; choose one of 'asterism', 'xcorr', 'wcs'"):
        find_transforms(frames, method="sift")
    with pytest.raises(ConfigError, match=r"on_failure='ignore'"):
        find_transforms(frames, on_failure="ignore")
    with pytest.raises(ConfigError, match=r"reference=5 is not a frame position in \[0, 2\)"):
        find_transforms(frames, reference=5)
    with pytest.raises(ConfigError, match=r"reference='x.fits' matches no 'path'"):
        find_transforms(frames, reference="x.fits")
    with pytest.raises(ShapeMismatchError, match=r"dims \('frame', 'y', 'x'\).*transpose"):
        find_transforms(frames.transpose("y", "x", "frame"))
    with pytest.raises(ConfigError, match="max_stars=2 must be at least 3"):
        find_transforms(frames, max_stars=2)
    with pytest.raises(ShapeMismatchError, match=r"wcs= holds 1 entries for 2 frames"):
        find_transforms(frames, method="wcs", wcs=[_reference_wcs()])


# ----------------------------------------------------------------------------- end to end


def test_register_resample_and_stack_conserves_positions_and_flux(field):
    from daskred import combine

    planes, ref_xy, flux, _ = field
    frames = _cube(planes[: len(TRUTHS)])
    table = find_transforms(frames)
    aligned = apply_transforms(frames, table, output_grid="intersection", interpolation="bicubic")
    stack = combine(aligned["data"], method="mean").values - 100.0  # sky level of the simulation
    y0, x0 = int(aligned.y[0]), int(aligned.x[0])
    ny, nx = stack.shape
    inside = ((ref_xy[:, 0] - x0 > 10) & (ref_xy[:, 0] - x0 < nx - 11)
              & (ref_xy[:, 1] - y0 > 10) & (ref_xy[:, 1] - y0 < ny - 11))
    assert inside.sum() > 10
    measured_xy, measured_flux = [], []
    yy, xx = np.mgrid[0:ny, 0:nx]
    for (x, y), f in zip(ref_xy[inside], flux[inside]):
        r = np.hypot(xx - (x - x0), yy - (y - y0)) <= 7
        w = np.where(r, stack, 0.0)
        measured_flux.append(w.sum())
        measured_xy.append([(w * xx).sum() / w.sum() + x0, (w * yy).sum() / w.sum() + y0])
    measured_xy, measured_flux = np.array(measured_xy), np.array(measured_flux)
    bright = flux[inside] > 8e3  # isolated-enough and above noise
    offsets = np.hypot(*(measured_xy - ref_xy[inside]).T)
    assert np.median(offsets[bright]) < 0.1
    assert np.median(np.abs(measured_flux[bright] / flux[inside][bright] - 1)) < 0.01


# ----------------------------------------------------------------------------- real frames

LOWELL_LIGHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "lowell42-nasa42-5945" / "light_VR"


@pytest.mark.realdata
def test_real_lowell_frames_register_like_their_header_wcs():
    """Guided frames 25 min apart: asterism, cross-correlation and the SCAMP header WCS agree."""
    paths = [LOWELL_LIGHT / "20190326.0128.fits", LOWELL_LIGHT / "20190326.0138.fits"]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"real frames not available at {LOWELL_LIGHT}")
    from daskred.astrometry import repair_wcs_header

    ys, xs = slice(300, 701), slice(300, 801)  # inside the light-sensitive area
    planes = np.stack([fits.getdata(p)[ys, xs].astype(np.float32) for p in paths])
    systems = []
    for p in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            systems.append(WCS(repair_wcs_header(fits.getheader(p))).celestial.slice((ys, xs)))
    frames = _cube(planes, chunks=(1, 128, 501), paths=[p.name for p in paths])
    stars = find_transforms(frames, fwhm=4.0)
    header = find_transforms(frames, method="wcs", wcs=systems)
    shift = find_transforms(frames, method="xcorr")
    assert list(stars.status) == ["ok", "ok"] and stars.n_matches[1] >= 30 and stars.rms_px[1] < 0.15
    corners = _corners(planes.shape[1:])
    assert np.abs(_apply(stars.matrix[1], corners) - _apply(header.matrix[1], corners)).max() < 0.1
    assert abs(shift.dx[1] - header.dx[1]) < 0.1 and abs(shift.dy[1] - header.dy[1]) < 0.1
    assert 0.2 < abs(stars.dx[1]) < 1.0  # the small drift of the README (~0.4 px in x)

"""Tests of daskred.align: registration (find_transforms) and lazy resampling (apply_transforms)."""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from scipy import ndimage

from conftest import raise_if_dask_computes, render_stars
from daskred.align import apply_transforms, find_transforms
from daskred.errors import ConfigError, RegistrationError, ShapeMismatchError

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


# ----------------------------------------------------------------------------- apply_transforms

RSHAPE = (97, 131)
RMATS = np.stack([np.eye(3), _similarity(3.3, -2.7, 0.7), _similarity(-10.2, 6.6, -1.0, 1.01)])


@pytest.fixture(scope="module")
def smooth():
    rng = np.random.default_rng(1)
    planes = ndimage.gaussian_filter(rng.normal(size=(3, *RSHAPE)), (0, 2, 2)) * 10 + 100
    return planes.astype(np.float32)


def _oracle(image, matrix, y0, x0, out_shape, order):
    """scipy.ndimage.affine_transform of the whole frame onto the output grid."""
    inv = np.linalg.inv(matrix)
    a = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
    t = np.array([inv[1, 2], inv[0, 2]])
    return ndimage.affine_transform(image.astype(np.float64), a, offset=a @ [y0, x0] + t,
                                    output_shape=out_shape, order=order, mode="constant",
                                    cval=np.nan).astype(np.float32)


@pytest.mark.parametrize("grid", ["reference", "union", "intersection"])
@pytest.mark.parametrize("interpolation,order", [("nearest", 0), ("bilinear", 1), ("bicubic", 3)])
def test_apply_transforms_equals_scipy_on_whole_frame(smooth, grid, interpolation, order):
    frames = _cube(smooth, chunks=(1, 23, 60))
    ds = apply_transforms(frames, RMATS, output_grid=grid, interpolation=interpolation, band=17)
    out = ds["data"].values
    y0, x0 = int(ds.y[0]), int(ds.x[0])
    for k in range(3):
        expected = _oracle(smooth[k], RMATS[k], y0, x0, out.shape[1:], order)
        np.testing.assert_array_equal(np.isnan(out[k]), np.isnan(expected))
        # bilinear/nearest are exact; bicubic differs only through the bounded halo (~1e-9)
        np.testing.assert_allclose(out[k], expected, rtol=1e-6, atol=1e-4, equal_nan=True)
        np.testing.assert_array_equal(ds["footprint"].values[k], ~np.isnan(expected))
    assert ds["data"].dtype == np.float32 and ds["footprint"].dtype == bool
    assert ds["data"].data.chunks[1][0] == 17 and ds["data"].data.chunks[2] == (out.shape[2],)


def test_output_grid_shapes_and_footprint_for_integer_shifts():
    ny, nx = RSHAPE
    mats = np.stack([np.eye(3), _similarity(5.0, -3.0), _similarity(-2.0, 4.0)])
    frames = _cube(np.ones((3, *RSHAPE), np.float32), chunks=(1, 30, 50))
    union = apply_transforms(frames, mats, output_grid="union")
    inter = apply_transforms(frames, mats, output_grid="intersection")
    ref = apply_transforms(frames, mats)
    assert union["data"].shape == (3, ny + 7, nx + 7)
    assert (int(union.y[0]), int(union.x[0])) == (-3, -2)
    assert inter["data"].shape == (3, ny - 7, nx - 7)
    assert (int(inter.y[0]), int(inter.x[0])) == (4, 5)
    assert ref["data"].shape == (3, ny, nx) and int(ref.y[0]) == 0
    assert inter["footprint"].values.all() and np.isfinite(inter["data"].values).all()
    # Footprint of frame 1 on the union grid: the rectangle shifted by (dy, dx) = (-3, 5).
    fp = union["footprint"].values[1]
    expected = np.zeros_like(fp)
    expected[0:ny, 7:7 + nx] = True  # union origin is (-3, -2)
    np.testing.assert_array_equal(fp, expected)
    # Coverage (overlap count) of the union equals the analytic count.
    coverage = union["footprint"].values.sum(axis=0)
    assert coverage.max() == 3 and coverage.sum() == 3 * ny * nx
    np.testing.assert_array_equal(np.isnan(union["data"].values), ~union["footprint"].values)


def test_apply_transforms_is_lazy_and_deterministic(smooth):
    frames = _cube(smooth, chunks=(1, 23, 60))
    masks = xr.zeros_like(frames, dtype=bool)
    with raise_if_dask_computes():
        ds = apply_transforms(frames, RMATS, output_grid="union", interpolation="bicubic", masks=masks)
        again = apply_transforms(frames, RMATS, output_grid="union", interpolation="bicubic", masks=masks)
    assert isinstance(ds["data"].data, da.Array) and isinstance(ds["mask"].data, da.Array)
    assert ds["data"].data.name == again["data"].data.name
    other = apply_transforms(frames, RMATS, output_grid="union", interpolation="bilinear")
    assert other["data"].data.name != ds["data"].data.name


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
def test_apply_transforms_chunk_invariant(smooth, interpolation):
    results = []
    for chunks, band in (((1, 23, 60), 17), ((3, 97, 131), None), ((1, 10, 7), 5)):
        ds = apply_transforms(_cube(smooth, chunks=chunks), RMATS, output_grid="union",
                              interpolation=interpolation, band=band)
        results.append(ds["data"].values)
    in_memory = apply_transforms(xr.DataArray(smooth, dims=("frame", "y", "x")), RMATS,
                                 output_grid="union", interpolation=interpolation)
    results.append(in_memory["data"].values)
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-6, atol=1e-5, equal_nan=True)


def _input_dependencies(array: da.Array, key, input_name: str) -> set:
    graph = array.__dask_graph__()
    deps = graph.get_all_dependencies()
    seen, stack = set(), [key]
    while stack:
        k = stack.pop()
        for d in deps.get(k, ()):
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return {k for k in seen if isinstance(k, tuple) and k[0] == input_name}


def test_output_block_reads_only_the_input_region_it_needs(smooth):
    planes = np.concatenate([smooth, smooth])  # 6 frames
    mats = np.concatenate([RMATS, RMATS])
    data = da.from_array(planes, chunks=(1, 10, 40))  # 10 row bands x 4 column chunks per frame
    frames = xr.DataArray(data, dims=("frame", "y", "x"))
    out = apply_transforms(frames, mats, band=10)["data"].data
    # Output frame 1 (shift 3.3, -2.7 and 0.7 deg), band 4 = reference rows 40..49 over the full width.
    inv = np.linalg.inv(mats[1])
    corners = np.array([[0, 40], [130, 40], [0, 49], [130, 49]], float)
    yin = _apply(inv, corners)[:, 1]
    lo, hi = int(np.floor(yin.min())) - 1, int(np.floor(yin.max())) + 2
    expected_rows = {r // 10 for r in range(max(lo, 0), min(hi, RSHAPE[0]))}
    got = _input_dependencies(out, (out.name, 1, 4, 0), data.name)
    assert {k[1] for k in got} == {1}  # only frame 1
    assert {k[2] for k in got} == expected_rows  # only the row bands the block maps back to
    assert len(expected_rows) <= 3 and len(got) < 4 * 10 / 2
    # Chunk invariance of that block against the whole-frame oracle.
    block = out.blocks[1, 4].compute()[0]
    expected = _oracle(planes[1], mats[1], 0, 0, RSHAPE, 1)[40:50]
    np.testing.assert_allclose(block, expected, rtol=1e-6, equal_nan=True)


def test_masks_propagate_and_nan_pixels_stay_missing(smooth):
    masks = np.zeros((3, *RSHAPE), bool)
    masks[1, 40, 60] = True
    planes = smooth.copy()
    planes[2, 30, 70] = np.nan
    mats = np.stack([np.eye(3), _similarity(0.5, 0.5), _similarity(-0.25, 0.25)])
    frames = _cube(planes, chunks=(1, 23, 60))
    mask_cube = xr.DataArray(da.from_array(masks, chunks=(1, 41, 131)), dims=("frame", "y", "x"))
    ds = apply_transforms(frames, mats, masks=mask_cube, interpolation="bilinear")
    mask = ds["mask"].values
    # Half-pixel shift: the masked input pixel feeds the 2x2 output pixels around it.
    assert set(map(tuple, np.argwhere(mask[1]))) == {(40, 60), (40, 61), (41, 60), (41, 61)}
    assert not mask[0].any() and not mask[2].any()
    assert np.isnan(ds["data"].values[1][mask[1]]).all()
    assert np.isfinite(ds["data"].values[1][~mask[1] & ds["footprint"].values[1]]).all()
    # Input NaN propagates through the same stencil, exactly as scipy does.
    expected = _oracle(planes[2], mats[2], 0, 0, RSHAPE, 1)
    np.testing.assert_array_equal(np.isnan(ds["data"].values[2]), np.isnan(expected))
    # Nearest: exactly one output pixel per masked input pixel for an integer shift.
    ds0 = apply_transforms(frames, np.stack([np.eye(3), _similarity(2.0, -1.0), np.eye(3)]),
                           masks=mask_cube, interpolation="nearest")
    assert set(map(tuple, np.argwhere(ds0["mask"].values[1]))) == {(39, 62)}
    # Bicubic: 4x4 stencil; NaN input blanks the same 4x4 pixels, values elsewhere stay finite.
    ds3 = apply_transforms(frames, mats, masks=mask_cube, interpolation="bicubic")
    assert ds3["mask"].values[1].sum() == 16
    bad = np.isnan(ds3["data"].values[2]) & ds3["footprint"].values[2]
    assert bad.sum() == 16


def test_failed_frames_are_left_out_and_recorded(smooth):
    frames = _cube(smooth, chunks=(1, 23, 60)).assign_coords(path=("frame", ["a", "b", "c"]))
    table = pd.DataFrame({
        "status": ["ok", "failed", "ok"],
        "reason": ["reference frame", "found 0 star(s)", ""],
        "matrix": [np.eye(3), np.full((3, 3), np.nan), RMATS[2]],
    })
    ds = apply_transforms(frames, table)
    assert list(ds.path.values) == ["a", "c"]
    assert ds["data"].shape == (2, *RSHAPE)
    assert any("left out frame 1 (b): found 0 star(s)" in h for h in ds.attrs["history"])
    np.testing.assert_allclose(ds["data"].values[1], _oracle(smooth[2], RMATS[2], 0, 0, RSHAPE, 1),
                               rtol=1e-6, equal_nan=True)


def test_apply_transforms_errors(smooth):
    frames = _cube(smooth, chunks=(1, 23, 60))
    with pytest.raises(ShapeMismatchError, match=r"array of shape \(3, 3, 3\) or \(3, 2, 3\), got shape \(2, 3, 3\)"):
        apply_transforms(frames, RMATS[:2])
    singular = RMATS.copy()
    singular[1, :2, :2] = 0.0
    with pytest.raises(RegistrationError, match=r"transform of frame 1 is not finite or not invertible"):
        apply_transforms(frames, singular)
    with pytest.raises(ConfigError, match=r"output_grid='all' is not supported"):
        apply_transforms(frames, RMATS, output_grid="all")
    with pytest.raises(ConfigError, match=r"interpolation='lanczos' is not supported"):
        apply_transforms(frames, RMATS, interpolation="lanczos")
    far = np.stack([np.eye(3), _similarity(500.0, 0.0), np.eye(3)])
    with pytest.raises(RegistrationError, match="no common area for output_grid='intersection'"):
        apply_transforms(frames, far, output_grid="intersection")
    with pytest.raises(ShapeMismatchError, match=r"masks has shape \(3, 97, 130\)"):
        apply_transforms(frames, RMATS, masks=frames[:, :, :130] > 0)
    table = pd.DataFrame({"status": ["failed"] * 3, "matrix": [np.full((3, 3), np.nan)] * 3})
    with pytest.raises(RegistrationError, match="no frame has a usable transform"):
        apply_transforms(frames, table)


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

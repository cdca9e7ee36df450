"""Tests of daskred.resample: lazy resampling of frames onto a common grid (apply_transforms)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import ndimage

from conftest import raise_if_dask_computes
from daskred.errors import ConfigError, RegistrationError, ShapeMismatchError
from daskred.resample import apply_transforms
from test_align import _apply, _cube, _similarity


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

"""Lazy resampling of registered frames onto a common grid.

:func:`apply_transforms` builds a lazy cube of the frames resampled, through the transforms
measured by :func:`daskred.align.find_transforms`, onto the reference grid (or the union /
intersection of all footprints).  Each output block ``(1, band, W)`` maps back through the
inverse transform to a small input box; its task depends only on the input chunks
overlapping that box, so memory stays bounded whatever the number or size of the frames.

Transforms follow :mod:`daskred.align`: 3x3 homogeneous matrices acting on column vectors
``(x, y, 1)`` of 0-based pixel coordinates (x = column, y = row):
``reference_xy = matrix @ frame_xy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ._validate import check_choice
from .align import _apply_matrix, _check_cube, _corners_xy, _frame_label
from .errors import ConfigError, RegistrationError, ShapeMismatchError

__all__ = ["apply_transforms"]

OutputGrid = Literal["reference", "union", "intersection"]
Interpolation = Literal["nearest", "bilinear", "bicubic"]

_OUTPUT_GRIDS = ("reference", "union", "intersection")
_ORDERS = {"nearest": 0, "bilinear": 1, "bicubic": 3}
# The cubic-spline prefilter is an IIR filter whose pole is sqrt(3) - 2 (|z| = 0.268): the
# influence of a pixel k samples away decays as 0.268**k.  A halo of 16 pixels around the
# input box makes the blockwise result equal the whole-frame one to ~1e-9 relative.
_CUBIC_HALO = 16


@dataclass(frozen=True)
class _BlockPlan:
    """Everything one output block needs (plain numbers, pickles in bytes)."""

    pieces: tuple[tuple[int, slice, slice, slice, slice], ...]  # (frame-in-chunk, sy, sx, by, bx)
    box_shape: tuple[int, int]
    out_shape: tuple[int, int]
    matrix: tuple[tuple[float, float], tuple[float, float]]  # output (row, col) -> input (row, col)
    box_offset: tuple[float, float]  # input index of output (0, 0), relative to the box origin
    frame_offset: tuple[float, float]  # same, relative to the frame origin (footprint test)
    frame_shape: tuple[int, int]
    order: int


def _assemble(chunks: list[np.ndarray], plan: _BlockPlan, dtype: Any) -> np.ndarray:
    box = np.empty(plan.box_shape, dtype=dtype)
    for chunk, (f, sy, sx, by, bx) in zip(chunks, plan.pieces):
        box[by, bx] = chunk[f, sy, sx]
    return box


def _stencil_hits(flags: np.ndarray, plan: _BlockPlan) -> np.ndarray:
    """Output pixels whose interpolation stencil contains a flagged input pixel.

    Nearest: the nearest pixel; bilinear: the 2x2 neighbours; bicubic: the 4x4 neighbours
    (a 3x3 dilation followed by the bilinear stencil).
    """
    from scipy import ndimage

    if plan.order >= 2:
        flags = ndimage.binary_dilation(flags, structure=np.ones((3, 3), bool))
    carrier = np.where(flags, np.nan, 0.0)
    out = ndimage.affine_transform(
        carrier, np.array(plan.matrix), offset=plan.box_offset, output_shape=plan.out_shape,
        order=min(plan.order, 1), mode="constant", cval=0.0, prefilter=False,
    )
    return np.isnan(out)


def _resample_block(
    chunks: list[np.ndarray], mask_chunks: list[np.ndarray] | None, plan: _BlockPlan
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample one output block; returns (data float32, footprint bool, mask bool)."""
    from scipy import ndimage

    rows, cols = plan.out_shape
    matrix = np.array(plan.matrix)
    r, c = np.meshgrid(np.arange(rows, dtype=float), np.arange(cols, dtype=float), indexing="ij")
    yin = matrix[0, 0] * r + matrix[0, 1] * c + plan.frame_offset[0]
    xin = matrix[1, 0] * r + matrix[1, 1] * c + plan.frame_offset[1]
    ny, nx = plan.frame_shape
    footprint = (yin >= 0) & (yin <= ny - 1) & (xin >= 0) & (xin <= nx - 1)
    mask = np.zeros(plan.out_shape, bool)
    if not plan.pieces or not footprint.any():
        return np.full(plan.out_shape, np.nan, np.float32), footprint, mask

    box = _assemble(chunks, plan, np.float64)
    bad = ~np.isfinite(box)
    common = dict(offset=plan.box_offset, output_shape=plan.out_shape, mode="constant", cval=np.nan)
    if plan.order <= 1 or not bad.any():
        # scipy propagates NaN through the nearest / bilinear stencil by itself.
        out = ndimage.affine_transform(box, matrix, order=plan.order, prefilter=plan.order > 1, **common)
    elif bad.all():
        out = np.full(plan.out_shape, np.nan)
    else:
        # The spline prefilter is global: fill NaN with the nearest valid value (limits ringing),
        # interpolate, then blank every output pixel whose 4x4 stencil touches a NaN.
        index = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        out = ndimage.affine_transform(box[tuple(index)], matrix, order=plan.order, **common)
        out[_stencil_hits(bad, plan)] = np.nan
    if mask_chunks is not None:
        flags = _assemble(mask_chunks, plan, bool)
        mask = _stencil_hits(flags, plan) & footprint
        out[mask] = np.nan
    out[~footprint] = np.nan
    return out.astype(np.float32), footprint, mask


def _parse_transforms(transforms: Any, frames: xr.DataArray) -> tuple[list[int], list[np.ndarray], list[str]]:
    """Kept frame positions, their 3x3 matrices, and notes about frames left out."""
    n = frames.sizes["frame"]
    notes: list[str] = []
    if isinstance(transforms, pd.DataFrame):
        if "matrix" not in transforms.columns:
            raise ConfigError("transforms table has no 'matrix' column; pass the table returned by find_transforms")
        if len(transforms) != n:
            raise ShapeMismatchError(
                f"transforms has {len(transforms)} rows for {n} frames; pass the table find_transforms "
                "returned for these same frames"
            )
        status = transforms["status"].tolist() if "status" in transforms.columns else ["ok"] * n
        reason = transforms["reason"].tolist() if "reason" in transforms.columns else [""] * n
        matrices = [np.asarray(m, dtype=float) for m in transforms["matrix"].tolist()]
    else:
        array = np.asarray(transforms, dtype=float)
        if array.ndim != 3 or array.shape[0] != n or array.shape[1:] not in ((3, 3), (2, 3)):
            raise ShapeMismatchError(
                f"transforms must be a find_transforms table or an array of shape ({n}, 3, 3) or ({n}, 2, 3), "
                f"got shape {array.shape}"
            )
        matrices = list(array)
        status, reason = ["ok"] * n, [""] * n
    kept, kept_m = [], []
    for i, (s, m) in enumerate(zip(status, matrices)):
        if m.shape == (2, 3):
            m = np.vstack([m, [0.0, 0.0, 1.0]])
        if m.shape != (3, 3):
            raise ShapeMismatchError(f"transform of {_frame_label(frames, i)} has shape {m.shape}, expected (3, 3)")
        if s != "ok":
            notes.append(f"left out {_frame_label(frames, i)}: {reason[i] or s}")
            continue
        if not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:2, :2])) < 1e-12:
            raise RegistrationError(
                f"transform of {_frame_label(frames, i)} is not finite or not invertible; mark it "
                "status='failed' (find_transforms(..., on_failure='skip')) to leave it out"
            )
        kept.append(i)
        kept_m.append(m)
    if not kept:
        raise RegistrationError("no frame has a usable transform; check find_transforms' 'reason' column")
    return kept, kept_m, notes


def _output_grid(
    matrices: list[np.ndarray], shape: tuple[int, int], output_grid: str
) -> tuple[int, int, int, int]:
    """(y0, x0, ny, nx) of the output grid in reference pixel coordinates."""
    ny, nx = shape
    if output_grid == "reference":
        return 0, 0, ny, nx
    eps = 1e-9
    corners = np.array([_apply_matrix(m, _corners_xy(shape)) for m in matrices])  # (n, 4, 2)
    if output_grid == "union":
        lo = np.ceil(corners.min(axis=(0, 1)) - eps)
        hi = np.floor(corners.max(axis=(0, 1)) + eps)
    else:
        # Inner box of each frame: between the 2nd and 3rd smallest corner coordinate on each
        # axis (inside the footprint for rotations under 45 degrees), then intersect.
        ordered = np.sort(corners, axis=1)
        lo = np.ceil(ordered[:, 1, :].max(axis=0) - eps)
        hi = np.floor(ordered[:, 2, :].min(axis=0) + eps)
    if np.any(hi < lo):
        raise RegistrationError(
            f"the frames have no common area for output_grid={output_grid!r}; use output_grid='union' "
            "or leave out the frames that do not overlap"
        )
    x0, y0 = int(lo[0]), int(lo[1])
    return y0, x0, int(hi[1]) - y0 + 1, int(hi[0]) - x0 + 1


def _chunk_bounds(chunks: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)])


def _block_pieces(
    frame_index: int, ybox: tuple[int, int], xbox: tuple[int, int], chunks: tuple[tuple[int, ...], ...]
) -> tuple[list[tuple[int, int, int]], tuple[tuple[int, slice, slice, slice, slice], ...]]:
    """Input chunk indices overlapping the box, and where each piece goes."""
    fb, yb, xb = (_chunk_bounds(c) for c in chunks)
    fc = int(np.searchsorted(fb, frame_index, side="right") - 1)
    f_local = frame_index - int(fb[fc])
    keys, pieces = [], []
    for cy in range(len(chunks[1])):
        y_lo, y_hi = max(ybox[0], int(yb[cy])), min(ybox[1], int(yb[cy + 1]))
        if y_lo >= y_hi:
            continue
        for cx in range(len(chunks[2])):
            x_lo, x_hi = max(xbox[0], int(xb[cx])), min(xbox[1], int(xb[cx + 1]))
            if x_lo >= x_hi:
                continue
            keys.append((fc, cy, cx))
            pieces.append((
                f_local,
                slice(y_lo - int(yb[cy]), y_hi - int(yb[cy])),
                slice(x_lo - int(xb[cx]), x_hi - int(xb[cx])),
                slice(y_lo - ybox[0], y_hi - ybox[0]),
                slice(x_lo - xbox[0], x_hi - xbox[0]),
            ))
    return keys, tuple(pieces)


def _as_dask(array: Any, name: str) -> da.Array:
    if isinstance(array, da.Array):
        return array
    array = np.asarray(array)
    return da.from_array(array, chunks=(1,) + array.shape[1:], name=f"{name}-{tokenize(array)}")


def apply_transforms(
    frames: xr.DataArray,
    transforms: pd.DataFrame | np.ndarray | Sequence[np.ndarray],
    *,
    output_grid: OutputGrid = "reference",
    interpolation: Interpolation = "bilinear",
    masks: xr.DataArray | None = None,
    band: int | None = None,
) -> xr.Dataset:
    """Resample every frame onto a common grid, lazily.

    Parameters
    ----------
    frames : xarray.DataArray
        Cube with dims ``("frame", "y", "x")``; dask-backed (any chunking) or in memory.
    transforms : pandas.DataFrame or array_like
        The table returned by :func:`daskred.align.find_transforms` (rows whose ``status`` is not ``"ok"``
        are left out of the output, and recorded in ``attrs["history"]``), or an array of
        shape ``(n_frames, 3, 3)`` or ``(n_frames, 2, 3)`` mapping frame ``(x, y)`` pixels onto
        reference pixels.
    output_grid : {"reference", "union", "intersection"}, default "reference"
        ``"reference"``: the reference frame's pixel grid.  ``"union"``: the smallest box of
        reference pixels holding every frame's footprint.  ``"intersection"``: the box
        covered by every frame (each frame's inner box, exact for rotations under 45 degrees).
    interpolation : {"nearest", "bilinear", "bicubic"}, default "bilinear"
        ``scipy.ndimage.affine_transform`` with ``order`` 0, 1 or 3 (cubic spline).
    masks : xarray.DataArray, optional
        Boolean cube of the frames' shape (True = rejected pixel: cosmic ray, bad pixel...).
        Resampled with the rule: an output pixel is masked when any input pixel of its
        interpolation stencil (nearest: 1 pixel, bilinear: 2x2, bicubic: 4x4) is masked.
        Masked output pixels are NaN in ``data``, so rejected pixels stay rejected.
    band : int, optional
        Rows per output block (default: the input's row chunk size).  Output chunks are
        ``(1, band, W)``.

    Returns
    -------
    xarray.Dataset
        ``data`` (float32, NaN outside each frame's footprint, on masked pixels and where the
        stencil touches an input NaN), ``footprint`` (bool: the output pixel centre maps
        inside the frame, i.e. within ``[0, ny-1] x [0, nx-1]`` input pixel centres) and, when
        ``masks`` is given, ``mask``.  Dims ``("frame", "y", "x")``; ``y``/``x`` coordinates are
        reference-frame pixel indices (negative for a union grid reaching left/below the
        reference); ``frame`` coordinates are those of the kept frames.

    Raises
    ------
    ShapeMismatchError
        When transforms or masks do not match the frames.
    RegistrationError
        When no frame is usable, a transform is not invertible, or an intersection is empty.
    ConfigError
        For an unknown option value.

    Notes
    -----
    Does not compute.  Each output block is one task reading only the input chunks that
    overlap the box its pixels map back to (plus a 1-pixel stencil margin; 18 pixels for
    bicubic, whose spline prefilter is global: the halo bounds the difference from a
    whole-frame ``affine_transform`` to ~1e-9 relative).  Memory per task is therefore about
    one output block and one input box, whatever the number of frames (the box of a band of
    ``band`` rows and ``W`` columns is about ``band + W |sin(rotation)|`` rows high, so small
    rotations cost little; a frame rotated by ~90 degrees reads whole frames).  Bilinear and nearest
    results equal ``scipy.ndimage.affine_transform(frame, ..., mode="constant",
    cval=nan)`` on the whole frame; bicubic does too on NaN-free data (NaN inputs are filled
    with the nearest valid value before the prefilter, and every output pixel whose 4x4
    stencil touches one is NaN).

    Examples
    --------
    >>> table = find_transforms(frames, on_failure="skip")  # doctest: +SKIP
    >>> aligned = apply_transforms(frames, table, output_grid="union")  # doctest: +SKIP
    >>> stack = daskred.combine(aligned["data"], method="median")  # doctest: +SKIP
    """
    _check_cube(frames)
    check_choice("output_grid", output_grid, _OUTPUT_GRIDS)
    check_choice("interpolation", interpolation, tuple(_ORDERS))
    if band is not None and (not isinstance(band, (int, np.integer)) or band < 1):
        raise ConfigError(f"band={band!r} must be a positive number of rows")
    kept, matrices, notes = _parse_transforms(transforms, frames)
    shape = (frames.sizes["y"], frames.sizes["x"])
    order = _ORDERS[interpolation]
    margin = 1 if order <= 1 else 2 + _CUBIC_HALO

    data = _as_dask(frames.data, "frames")
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    mask_data = None
    if masks is not None:
        _check_cube(masks, "masks")
        if masks.shape != frames.shape:
            raise ShapeMismatchError(
                f"masks has shape {masks.shape}, frames {frames.shape}; give one boolean mask per frame pixel"
            )
        mask_data = _as_dask(masks.data, "masks")
        mask_data = (mask_data if mask_data.dtype == bool else mask_data != 0).rechunk(data.chunks)

    y0, x0, n_rows, n_cols = _output_grid(matrices, shape, output_grid)
    band = int(band) if band is not None else int(data.chunks[1][0])
    row_chunks = tuple(min(band, n_rows - r) for r in range(0, n_rows, band))

    token = tokenize(data.name, None if mask_data is None else mask_data.name,
                     [m.tolist() for m in matrices], kept, (y0, x0, n_rows, n_cols), order, row_chunks)
    name = f"apply-transforms-{token}"
    layer: dict[Any, Any] = {}
    for j, (i, m) in enumerate(zip(kept, matrices)):
        inv = np.linalg.inv(m)
        # (row, col) form of the inverse transform: input_yx = a @ output_yx + t
        a = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
        t = np.array([inv[1, 2], inv[0, 2]])
        r0 = 0
        for b, rows in enumerate(row_chunks):
            origin = np.array([y0 + r0, x0], dtype=float)
            frame_offset = a @ origin + t
            corners = np.array([[0, 0], [0, n_cols - 1], [rows - 1, 0], [rows - 1, n_cols - 1]], float)
            mapped = corners @ a.T + frame_offset
            lo = np.floor(mapped.min(axis=0)).astype(int) - margin
            hi = np.floor(mapped.max(axis=0)).astype(int) + margin + 1
            ybox = (max(lo[0], 0), min(hi[0], shape[0]))
            xbox = (max(lo[1], 0), min(hi[1], shape[1]))
            if ybox[0] >= ybox[1] or xbox[0] >= xbox[1]:
                keys, pieces, ybox, xbox = [], (), (0, 0), (0, 0)
            else:
                keys, pieces = _block_pieces(i, ybox, xbox, data.chunks)
            plan = _BlockPlan(
                pieces=pieces,
                box_shape=(ybox[1] - ybox[0], xbox[1] - xbox[0]),
                out_shape=(rows, n_cols),
                matrix=((float(a[0, 0]), float(a[0, 1])), (float(a[1, 0]), float(a[1, 1]))),
                box_offset=(float(frame_offset[0] - ybox[0]), float(frame_offset[1] - xbox[0])),
                frame_offset=(float(frame_offset[0]), float(frame_offset[1])),
                frame_shape=shape,
                order=order,
            )
            data_keys = [(data.name, *k) for k in keys]
            mask_keys = None if mask_data is None else [(mask_data.name, *k) for k in keys]
            layer[(name, j, b, 0)] = (_resample_block, data_keys, mask_keys, plan)
            r0 += rows
    deps = [data] if mask_data is None else [data, mask_data]
    chunks = ((1,) * len(kept), row_chunks, (n_cols,))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    blocks = da.Array(graph, name, chunks=chunks, meta=np.empty((0, 0, 0), dtype=object))

    def _part(index: int, dtype: Any, label: str) -> da.Array:
        part_name = f"{label}-{token}"
        part_layer = {(part_name, *k[1:]): (_take, k, index) for k in layer}
        part_graph = HighLevelGraph.from_collections(part_name, part_layer, dependencies=[blocks])
        return da.Array(part_graph, part_name, chunks=chunks, meta=np.empty((0, 0, 0), dtype=dtype))

    coords = {
        key: coord.isel(frame=kept) for key, coord in frames.coords.items()
        if coord.dims == ("frame",)
    }
    coords["y"] = ("y", np.arange(y0, y0 + n_rows))
    coords["x"] = ("x", np.arange(x0, x0 + n_cols))
    dims = ("frame", "y", "x")
    history = list(frames.attrs.get("history", []))
    history.append(
        f"apply_transforms: {len(kept)} frame(s) onto the {output_grid} grid "
        f"(y0={y0}, x0={x0}, {n_rows}x{n_cols}), {interpolation} interpolation"
    )
    history.extend(f"apply_transforms: {note}" for note in notes)
    attrs = {**frames.attrs, "history": history}
    variables = {
        "data": xr.Variable(dims, _part(0, np.float32, "aligned-data"), attrs=attrs),
        "footprint": xr.Variable(dims, _part(1, bool, "aligned-footprint")),
    }
    if mask_data is not None:
        variables["mask"] = xr.Variable(dims, _part(2, bool, "aligned-mask"))
    return xr.Dataset(
        variables,
        coords=coords,
        attrs={"output_grid": output_grid, "interpolation": interpolation, "history": history},
    )


def _take(parts: tuple[np.ndarray, np.ndarray, np.ndarray], index: int) -> np.ndarray:
    return parts[index][np.newaxis]

"""Sky background: photutils ``Background2D`` mesh model or a global sigma-clipped level.

:func:`estimate_background` builds, lazily, the background and background-RMS maps of every
frame with photutils' recipe (sources masked with ``detect_threshold`` /
``detect_sources`` / ``SegmentationImage.make_source_mask``, sigma-clipped statistics in
boxes, median-filtered mesh, cubic-spline expansion); :func:`subtract_background` removes
it.  Only the low-resolution mesh is computed per frame; the full-resolution maps are
produced chunk by chunk from it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal, get_args

import dask.array as da
import numpy as np
import xarray as xr
from astropy.stats import SigmaClip, sigma_clipped_stats
from dask.base import tokenize
from photutils.background import (
    Background2D,
    MeanBackground,
    MedianBackground,
    SExtractorBackground,
    StdBackgroundRMS,
)
from photutils.segmentation import detect_sources, detect_threshold
from photutils.utils.exceptions import NoDetectionsWarning
from scipy.ndimage import zoom

from ._validate import frame_cube, mask_cube
from .errors import CalibrationError, ConfigError, ShapeMismatchError

__all__ = ["estimate_background", "subtract_background"]

Method = Literal["mesh", "global"]
Statistic = Literal["sextractor", "median", "mean"]

_ESTIMATORS = {"sextractor": SExtractorBackground, "median": MedianBackground, "mean": MeanBackground}


# --------------------------------------------------------------------------------------
# Kernels (numpy, one frame at a time)
# --------------------------------------------------------------------------------------


def _source_mask(
    data: np.ndarray, bad: np.ndarray, *, sigma_clip: SigmaClip, nsigma: float, npixels: int,
    dilate_size: int,
) -> np.ndarray:
    """photutils' source mask: threshold from frame statistics, segmentation, dilation."""
    threshold = detect_threshold(data, nsigma, mask=bad, sigma_clip=sigma_clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segm = detect_sources(data, threshold, npixels, mask=bad)
    if segm is None:
        return np.zeros(data.shape, dtype=bool)
    if dilate_size > 1:
        return segm.make_source_mask(size=dilate_size)
    return segm.data > 0


def _frame_statistics(
    block: np.ndarray,
    bad_block: np.ndarray | None,
    labels: np.ndarray,
    *,
    method: str,
    options: dict[str, Any],
) -> np.ndarray:
    """Per whole frame: the mesh ``(k, 2, nby, nbx)`` or the global level ``(k, 2)``."""
    out = []
    sigma_clip = SigmaClip(sigma=options["sigma"], maxiters=options["maxiters"])
    for k in range(block.shape[0]):
        data = np.asarray(block[k], dtype=np.float32)
        bad = ~np.isfinite(data)
        if bad_block is not None:
            bad |= np.asarray(bad_block[k], dtype=bool)
        if bad.all():
            raise CalibrationError(f"frame {labels[k]} has no finite, unmasked pixel; cannot estimate its background")
        if options["mask_sources"]:
            bad = bad | _source_mask(
                data, bad, sigma_clip=sigma_clip, nsigma=options["nsigma_sources"],
                npixels=options["npixels"], dilate_size=options["dilate_size"],
            )
        if method == "global":
            if bad.all():
                raise CalibrationError(f"frame {labels[k]}: every pixel is masked (bad or source)")
            _, median, std = sigma_clipped_stats(data, mask=bad, sigma=options["sigma"], maxiters=options["maxiters"])
            out.append(np.array([median, std], dtype=np.float64))
            continue
        try:
            bkg = Background2D(
                data, options["box_size"], mask=bad, filter_size=options["filter_size"],
                exclude_percentile=options["exclude_percentile"], sigma_clip=sigma_clip,
                bkg_estimator=_ESTIMATORS[options["statistic"]](sigma_clip=None),
                bkg_rms_estimator=StdBackgroundRMS(sigma_clip=None),
            )
        except ValueError as err:
            raise CalibrationError(
                f"frame {labels[k]}: photutils Background2D failed ({err}); use a larger "
                "box_size, a higher exclude_percentile, or mask_sources=False"
            ) from err
        out.append(np.stack([np.asarray(bkg.background_mesh), np.asarray(bkg.background_rms_mesh)]))
    return np.stack(out).astype(np.float64)


def _spline_weights(n_mesh: int, box: int, positions: np.ndarray) -> np.ndarray:
    """Rows ``positions`` of the linear map of photutils' 1-D mesh expansion.

    photutils expands the mesh with ``scipy.ndimage.zoom(order=3, mode="reflect",
    grid_mode=True)``, which is linear and separable: the 2-D expansion equals
    ``W_y @ mesh @ W_x.T`` with ``W[:, j]`` the zoom of the j-th unit vector.
    """
    eye = np.eye(n_mesh)
    columns = [zoom(eye[j], box, order=3, mode="reflect", grid_mode=True) for j in range(n_mesh)]
    return np.stack(columns, axis=1)[positions]


def _expand_mesh(
    mesh: np.ndarray, ys: np.ndarray, xs: np.ndarray, *, which: int, box_size: tuple[int, int]
) -> np.ndarray:
    """Full-resolution map on the rows ``ys`` and columns ``xs`` of every frame in ``mesh``."""
    out = np.empty((mesh.shape[0], ys.size, xs.size), dtype=np.float32)
    wy = wx = None
    for k in range(mesh.shape[0]):
        grid = mesh[k, which]
        lo, hi = grid.min(), grid.max()
        if lo == hi:  # photutils: a constant mesh gives a constant map
            out[k] = lo
            continue
        if wy is None:
            wy = _spline_weights(grid.shape[0], box_size[0], ys)
            wx = _spline_weights(grid.shape[1], box_size[1], xs)
        out[k] = np.clip(wy @ grid @ wx.T, lo, hi)  # photutils clips to the mesh range
    return out


def _fill_level(level: np.ndarray, ys: np.ndarray, xs: np.ndarray, *, which: int) -> np.ndarray:
    out = np.empty((level.shape[0], ys.size, xs.size), dtype=np.float32)
    out[...] = level[:, which, None, None]
    return out


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def _pair(name: str, value: Any, *, odd: bool = False) -> tuple[int, int]:
    values = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in values):
        raise ConfigError(f"{name} must be a positive integer or a (ny, nx) pair of them, got {value!r}")
    if odd and not all(v % 2 == 1 for v in values):
        raise ConfigError(f"{name} must be odd along both axes, got {value!r}")
    return int(values[0]), int(values[1])


def _frame_labels(frames: xr.DataArray) -> np.ndarray:
    if "path" in frames.coords and frames.coords["path"].ndim == 1:
        return np.array([f"{i} ({p})" for i, p in enumerate(frames.coords["path"].values)], dtype=object)
    return np.array([str(i) for i in range(frames.shape[0])], dtype=object)


def estimate_background(
    frames: xr.DataArray | xr.Dataset,
    *,
    method: Method = "mesh",
    box_size: int | tuple[int, int] = 64,
    filter_size: int | tuple[int, int] = 3,
    statistic: Statistic = "sextractor",
    exclude_percentile: float = 10.0,
    sigma: float = 3.0,
    maxiters: int = 10,
    mask_sources: bool = True,
    nsigma_sources: float = 2.0,
    npixels: int = 5,
    dilate_size: int = 11,
    mask: xr.DataArray | np.ndarray | None = None,
) -> xr.Dataset:
    """Estimate the sky background and its RMS of every frame, lazily.

    Parameters
    ----------
    frames : xarray.DataArray or xarray.Dataset
        Frames with dims ``("frame", "y", "x")`` (or one image ``("y", "x")``).  A calibrated
        Dataset is accepted: its ``"data"`` is used and its ``"mask"`` joins ``mask``.
    method : {"mesh", "global"}
        ``"mesh"``: photutils :class:`~photutils.background.Background2D` (statistics in
        boxes, median-filtered, cubic-spline interpolated).  ``"global"``: one
        sigma-clipped median (background) and standard deviation (RMS) per frame.
    box_size : int or (int, int)
        Mesh box size in pixels, ``(ny, nx)`` when a pair.  Must not exceed the frame.
    filter_size : int or (int, int)
        Odd size (boxes) of the median filter applied to the mesh; 1 means no filter.
    statistic : {"sextractor", "median", "mean"}
        Background statistic of each box (photutils' ``SExtractorBackground``,
        ``MedianBackground`` or ``MeanBackground``).  The RMS is the standard deviation.
    exclude_percentile : float
        Boxes with more than this percentage of masked pixels are excluded and filled
        from their neighbours (photutils' rule).
    sigma : float
        Clipping limit (standard deviations) of the box statistics, of the global level
        and of the source-detection threshold.
    maxiters : int
        Maximum number of clipping iterations.
    mask_sources : bool
        Mask sources before measuring the sky: pixels above the frame's sigma-clipped mean
        plus ``nsigma_sources`` standard deviations, in groups of at least ``npixels``
        8-connected pixels, dilated by a ``dilate_size`` square.
    nsigma_sources : float
        Detection threshold of the source mask, in standard deviations.
    npixels : int
        Minimum number of connected pixels of a masked source.
    dilate_size : int
        Odd side of the square that dilates the source mask; 1 means no dilation.
    mask : xarray.DataArray or numpy.ndarray, optional
        Boolean mask of pixels to ignore, dims ``("y", "x")`` or the frames' dims.
        Non-finite pixels are always ignored.

    Returns
    -------
    xarray.Dataset
        ``"background"`` and ``"rms"``, float32, lazy, with the frames' dims, chunks and
        coordinates.

    Raises
    ------
    ConfigError
        An option is out of range or not one of its allowed values.
    ShapeMismatchError
        ``box_size`` exceeds the frames, or ``mask`` does not match them.
    CalibrationError
        When the graph runs: a frame has no usable pixel, or every mesh box is excluded.

    Notes
    -----
    Chunking: the mesh is computed **per frame**, not per chunk with a halo, because
    photutils' recipe couples the whole frame: the source threshold comes from
    sigma-clipped statistics of the entire frame, excluded boxes are filled by inverse
    distance weighting from boxes anywhere in the frame, and the cubic spline that expands
    the mesh is prefiltered over the whole mesh (its influence has no finite support) and
    clipped to the whole mesh's range.  A halo could only approximate that.  So one task
    per frame reads the frame (rechunked to ``(1, ny, nx)``; memory of a few frame
    copies) and returns its tiny mesh; the full-resolution background and RMS are then
    produced chunk by chunk, in the input's chunks, as ``W_y @ mesh @ W_x.T`` where ``W``
    are the exact linear weights of photutils' ``scipy.ndimage.zoom`` expansion (so the
    maps are never held whole).  The result equals ``Background2D`` on the whole frame
    with the same parameters to float32 rounding.

    The source threshold is one value per frame (photutils' ``detect_threshold``): on a
    sky with gradients of more than about ``nsigma_sources`` RMS the bright side of the
    frame is masked as a "source"; flatten the frames first or use ``mask_sources=False``.

    The function does not compute: the graph runs when the result is computed or written.

    Examples
    --------
    >>> import daskred as dr
    >>> sky = dr.estimate_background(frames, box_size=64, filter_size=3)  # doctest: +SKIP
    >>> sky["background"], sky["rms"]                                      # doctest: +SKIP
    """
    frames, mask, single = frame_cube(frames, mask)
    if method not in get_args(Method):
        raise ConfigError(f"method={method!r} is not supported; choose one of {', '.join(map(repr, get_args(Method)))}")
    if statistic not in _ESTIMATORS:
        raise ConfigError(f"statistic={statistic!r} is not supported; choose one of {', '.join(map(repr, _ESTIMATORS))}")
    box = _pair("box_size", box_size)
    filt = _pair("filter_size", filter_size, odd=True)
    nframe, ny, nx = frames.shape
    if method == "mesh" and (box[0] > ny or box[1] > nx):
        raise ShapeMismatchError(f"box_size {box} is larger than the frames ({ny}, {nx}); use a smaller box_size")
    if not (0 <= exclude_percentile <= 100):
        raise ConfigError(f"exclude_percentile must be within [0, 100], got {exclude_percentile!r}")
    for name, value in (("sigma", sigma), ("nsigma_sources", nsigma_sources)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value!r}")
    for name, value in (("maxiters", maxiters), ("npixels", npixels), ("dilate_size", dilate_size)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if dilate_size % 2 == 0:
        raise ConfigError(f"dilate_size must be odd (the dilation is centred), got {dilate_size}")

    options = dict(
        box_size=box, filter_size=filt, statistic=statistic, exclude_percentile=float(exclude_percentile),
        sigma=float(sigma), maxiters=int(maxiters), mask_sources=bool(mask_sources),
        nsigma_sources=float(nsigma_sources), npixels=int(npixels), dilate_size=int(dilate_size),
    )
    data = frames.data
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=(1, ny, nx))
    whole = ((1,) * nframe, (ny,), (nx,))
    data_whole = data.rechunk(whole)
    bad = mask_cube(mask, frames, whole)
    labels = da.from_array(_frame_labels(frames), chunks=1)
    token = tokenize(data, bad, method, options)

    if method == "mesh":
        new_axes = {"k": 2, "a": -(-ny // box[0]), "b": -(-nx // box[1])}
        stats_index = "fkab"
    else:
        new_axes = {"k": 2}
        stats_index = "fk"
    stats = da.blockwise(
        _frame_statistics, stats_index,
        data_whole, "fyx", bad, "fyx" if bad is not None else None, labels, "f",
        new_axes=new_axes, concatenate=True, dtype=np.float64,
        meta=np.empty((0,) * len(stats_index), dtype=np.float64),
        method=method, options=options, name=f"background-{method}-stats-{token}",
    )
    stats = stats.rechunk({0: data.chunks[0]})
    ys = da.arange(ny, chunks=(data.chunks[1],))
    xs = da.arange(nx, chunks=(data.chunks[2],))

    history = list(frames.attrs.get("history", []))
    history.append(
        f"estimate_background(method={method!r}, "
        + ", ".join(f"{k}={v!r}" for k, v in options.items()) + ")"
    )
    outputs = {}
    for which, name in enumerate(("background", "rms")):
        if method == "mesh":
            func, kwargs = _expand_mesh, dict(which=which, box_size=box)
        else:
            func, kwargs = _fill_level, dict(which=which)
        with warnings.catch_warnings():
            # one output block per input chunk is intended (the mesh is tiny)
            warnings.simplefilter("ignore", da.PerformanceWarning)
            arr = da.blockwise(
                func, "fyx", stats, stats_index, ys, "y", xs, "x",
                concatenate=True, dtype=np.float32, meta=np.empty((0, 0, 0), dtype=np.float32),
                name=f"background-{name}-{token}", **kwargs,
            )
        attrs = {k: v for k, v in frames.attrs.items() if k == "units"}
        attrs["history"] = history
        outputs[name] = xr.DataArray(arr, dims=frames.dims, coords=frames.coords, attrs=attrs)
    result = xr.Dataset(outputs)
    if single:
        result = result.squeeze("frame", drop=True)
    return result


def subtract_background(
    frames: xr.DataArray | xr.Dataset,
    background: xr.DataArray | xr.Dataset | None = None,
    **kwargs: Any,
) -> xr.DataArray | xr.Dataset:
    """Subtract a sky background from frames, lazily.

    Parameters
    ----------
    frames : xarray.DataArray or xarray.Dataset
        Frames with dims ``("frame", "y", "x")`` or ``("y", "x")``; for a Dataset the
        ``"data"`` variable is corrected and the other variables are kept.
    background : xarray.DataArray or xarray.Dataset, optional
        The background (a Dataset from :func:`estimate_background`, or an array with the
        frames' dims or ``("y", "x")``).  Default: estimated with
        ``estimate_background(frames, **kwargs)``.
    **kwargs
        Options of :func:`estimate_background`, only when ``background`` is None.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        ``frames - background`` (float32), same kind, dims, chunks, coordinates and attrs
        as ``frames``, with a history entry.

    Raises
    ------
    ConfigError
        Options are given together with an explicit ``background``.
    ShapeMismatchError
        ``background`` does not match the frames.

    Notes
    -----
    Does not compute; the variance of a Dataset is left unchanged (the background model's
    own noise is neglected).

    Examples
    --------
    >>> flat_sky = subtract_background(frames, box_size=64)  # doctest: +SKIP
    """
    if background is None:
        background = estimate_background(frames, **kwargs)
    elif kwargs:
        raise ConfigError(
            f"options {sorted(kwargs)} are only used to estimate the background; "
            "drop them or pass background=None"
        )
    if isinstance(background, xr.Dataset):
        if "background" not in background:
            raise ConfigError(f"a background Dataset needs a 'background' variable, got {list(background)}")
        background = background["background"]
    data = frames["data"] if isinstance(frames, xr.Dataset) else frames
    if not isinstance(data, xr.DataArray) or not isinstance(background, xr.DataArray):
        raise TypeError("frames and background must be xarray objects")
    if not set(background.dims) <= set(data.dims) or any(
        background.sizes[d] != data.sizes[d] for d in background.dims
    ):
        raise ShapeMismatchError(
            f"background {dict(background.sizes)} does not match the frames {dict(data.sizes)}; "
            "estimate it from these frames"
        )
    corrected = (data - background.drop_vars(list(background.coords), errors="ignore")).astype(np.float32)
    corrected = corrected.transpose(*data.dims)
    corrected.attrs = {**data.attrs, "history": [*data.attrs.get("history", []), "subtract_background()"]}
    if isinstance(frames, xr.Dataset):
        return frames.assign(data=corrected)
    return corrected

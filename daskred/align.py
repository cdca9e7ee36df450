"""Registration of frames onto a reference frame: one affine transform per frame.

:func:`find_transforms` measures, for every frame, the affine transform that maps its pixel
coordinates onto the pixel coordinates of a reference frame: by matching asterisms of
detected stars, by FFT cross-correlation, or from the frames' celestial WCS.  Star lists,
shifts and matrices are a few numbers per frame, so this step *computes* (one
``dask.compute`` over per-frame detection tasks; only the small star lists travel back).
:func:`daskred.resample.apply_transforms` then resamples the frames onto a common grid, lazily.

Transforms are 3x3 homogeneous matrices acting on column vectors ``(x, y, 1)`` of 0-based
pixel coordinates (x = column, y = row): ``reference_xy = matrix @ frame_xy``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import dask
import numpy as np
import pandas as pd
import xarray as xr

from ._validate import check_choice
from .errors import ConfigError, HeaderError, RegistrationError, ShapeMismatchError

__all__ = ["find_transforms"]

Method = Literal["asterism", "xcorr", "wcs"]
Model = Literal["shift", "similarity", "affine"]
OnFailure = Literal["raise", "skip"]

_METHODS = ("asterism", "xcorr", "wcs")
_MODELS = ("shift", "similarity", "affine")
_ON_FAILURE = ("raise", "skip")
_TABLE_COLUMNS = (
    "frame", "path", "status", "reason", "n_matches", "rms_px", "peak_snr",
    "dx", "dy", "rotation", "scale", "matrix",
)


def _check_cube(frames: object, name: str = "frames") -> None:
    if not isinstance(frames, xr.DataArray):
        raise ShapeMismatchError(
            f"{name} must be an xarray.DataArray with dims ('frame', 'y', 'x'), got {type(frames).__name__}; "
            "build one with daskred.open_frames"
        )
    if frames.dims != ("frame", "y", "x"):
        raise ShapeMismatchError(
            f"{name} must have dims ('frame', 'y', 'x'), got {frames.dims}; "
            "use .transpose('frame', 'y', 'x') or .expand_dims('frame') for a single image"
        )


def _frame_label(frames: xr.DataArray, index: int) -> str:
    path = _frame_path(frames, index)
    return f"frame {index} ({path})" if path else f"frame {index}"


def _frame_path(frames: xr.DataArray, index: int) -> str:
    if "path" in frames.coords and frames.coords["path"].dims == ("frame",):
        return str(frames.coords["path"].values[index])
    return ""


def _resolve_reference(frames: xr.DataArray, reference: int | str) -> int:
    n = frames.sizes["frame"]
    if isinstance(reference, str):
        paths = [_frame_path(frames, i) for i in range(n)]
        if reference not in paths:
            raise ConfigError(
                f"reference={reference!r} matches no 'path' coordinate of the frames; "
                "give a frame position (int) or one of the paths"
            )
        return paths.index(reference)
    if isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
        if -n <= reference < n:
            return int(reference) % n
    raise ConfigError(f"reference={reference!r} is not a frame position in [0, {n}) nor a path of the frames")


# --------------------------------------------------------------------------------------
# small numerical kernels (numpy only, run on one frame or one star list)
# --------------------------------------------------------------------------------------


def _detect_stars(image: np.ndarray, fwhm: float, threshold: float, max_stars: int) -> np.ndarray:
    """Return the ``max_stars`` brightest stars of ``image`` as an (n, 3) array x, y, flux."""
    from astropy.stats import sigma_clipped_stats
    from photutils.detection import DAOStarFinder
    from photutils.utils.exceptions import NoDetectionsWarning

    data = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(data)
    if finite.sum() < 16:
        return np.empty((0, 3))
    _, median, std = sigma_clipped_stats(data, mask=~finite, sigma=3.0, maxiters=5)
    if not np.isfinite(std) or std <= 0:
        return np.empty((0, 3))
    work = np.where(finite, data - median, 0.0)
    finder = DAOStarFinder(threshold=threshold * std, fwhm=fwhm, exclude_border=True, n_brightest=max_stars)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        table = finder(work, mask=~finite)
    if table is None or len(table) == 0:
        return np.empty((0, 3))
    stars = np.column_stack([
        np.asarray(table["x_centroid"], dtype=float),
        np.asarray(table["y_centroid"], dtype=float),
        np.asarray(table["flux"], dtype=float),
    ])
    stars = stars[np.all(np.isfinite(stars), axis=1)]
    return stars[np.argsort(-stars[:, 2], kind="stable")][:max_stars]


def _fit_model(src: np.ndarray, dst: np.ndarray, model: str) -> np.ndarray:
    """Least-squares 3x3 matrix mapping (n, 2) points ``src`` onto ``dst``."""
    n = len(src)
    if model == "shift":
        t = np.mean(dst - src, axis=0)
        return np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]], [0.0, 0.0, 1.0]])
    if model == "similarity":
        # x' = a x - b y + tx ; y' = b x + a y + ty
        design = np.zeros((2 * n, 4))
        design[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
        design[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
        a, b, tx, ty = np.linalg.lstsq(design, dst.reshape(-1), rcond=None)[0]
        return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])
    design = np.column_stack([src, np.ones(n)])
    coef = np.linalg.lstsq(design, dst, rcond=None)[0]  # (3, 2)
    return np.vstack([coef.T, [0.0, 0.0, 1.0]])


def _apply_matrix(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def _mutual_matches(pred: np.ndarray, ref: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of mutual nearest neighbours pred[i] <-> ref[j] closer than ``radius``."""
    from scipy.spatial import cKDTree

    if len(pred) == 0 or len(ref) == 0:
        return np.empty(0, int), np.empty(0, int)
    d_pr, j_of_i = cKDTree(ref).query(pred)
    _, i_of_j = cKDTree(pred).query(ref)
    i = np.arange(len(pred))
    keep = (d_pr < radius) & (i_of_j[j_of_i] == i)
    return i[keep], j_of_i[keep]


def _min_model_points(model: str) -> int:
    return {"shift": 1, "similarity": 2, "affine": 3}[model]


def _match_star_lists(
    stars: np.ndarray, ref_stars: np.ndarray, *, model: str, max_stars: int, match_radius: float
) -> tuple[np.ndarray, int, float, str]:
    """Matrix frame->reference, number of matched stars, RMS (px) and a failure reason ('' if ok)."""
    import astroalign

    nan3 = np.full((3, 3), np.nan)
    if len(stars) < 3:
        return nan3, 0, math.nan, (
            f"found {len(stars)} star(s), at least 3 are needed; lower threshold=, check fwhm=, "
            "or use method='xcorr' for fields with few stars"
        )
    if len(ref_stars) < 3:
        return nan3, 0, math.nan, f"the reference frame has {len(ref_stars)} star(s), at least 3 are needed"
    try:
        first, _ = astroalign.find_transform(
            stars[:max_stars, :2], ref_stars[:max_stars, :2], max_control_points=max_stars
        )
    except (astroalign.MaxIterError, ValueError, TypeError) as err:
        return nan3, 0, math.nan, (
            f"no asterism matches the reference frame ({err}); the frame may show another field, "
            "or be too shallow"
        )
    matrix = np.asarray(first.params, dtype=float)
    src_all, ref_all = stars[:, :2], ref_stars[:, :2]
    i = j = np.empty(0, int)
    # Refine: match every star by mutual nearest neighbour and refit by least squares, so the
    # result does not depend on astroalign's random sampling.
    for _ in range(5):
        i, j = _mutual_matches(_apply_matrix(matrix, src_all), ref_all, match_radius)
        if len(i) < max(_min_model_points(model), 2):
            break
        matrix = _fit_model(src_all[i], ref_all[j], model)
        # Reject blends and mismatches: radial residuals beyond 3x their median.
        dist = np.hypot(*(_apply_matrix(matrix, src_all[i]) - ref_all[j]).T)
        keep = dist <= max(3.0 * float(np.median(dist)), 0.05)
        if keep.sum() >= max(_min_model_points(model), 2) and not keep.all():
            i, j = i[keep], j[keep]
            matrix = _fit_model(src_all[i], ref_all[j], model)
    n = len(i)
    if n < max(_min_model_points(model), 2):
        return nan3, n, math.nan, f"only {n} star(s) matched the reference frame after refinement"
    resid = _apply_matrix(matrix, src_all[i]) - ref_all[j]
    rms = float(np.sqrt(np.mean(np.sum(resid**2, axis=1))))
    return matrix, n, rms, ""


def _prepare_xcorr(image: np.ndarray) -> np.ndarray:
    data = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros_like(data)
    median = np.median(data[finite])
    return np.where(finite, data - median, 0.0)


def _xcorr_shift(ref: np.ndarray, image: np.ndarray, upsample: int) -> tuple[float, float, float]:
    """Shift (dx, dy) that maps ``image`` onto ``ref`` and the significance of the peak.

    The integer shift and its significance come from the phase-correlation surface; the
    subpixel shift from an upsampled cross-correlation of the overlapping parts only (stars
    entering or leaving the field would otherwise bias it by ~0.1 px).
    """
    from skimage.registration import phase_cross_correlation

    work = _prepare_xcorr(image)
    cross = np.fft.fft2(ref) * np.conj(np.fft.fft2(work))
    amplitude = np.abs(cross)
    amplitude[amplitude == 0] = 1.0
    surface = np.fft.ifft2(cross / amplitude).real
    std = surface.std()
    snr = float((surface.max() - surface.mean()) / std) if std > 0 else 0.0
    ny, nx = ref.shape
    iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
    iy = int(iy) - ny if iy > ny // 2 else int(iy)
    ix = int(ix) - nx if ix > nx // 2 else int(ix)
    # ref(p) = image(p - s): overlap in reference pixels
    ys, xs = slice(max(iy, 0), min(ny, ny + iy)), slice(max(ix, 0), min(nx, nx + ix))
    if ys.stop - ys.start < 8 or xs.stop - xs.start < 8:
        return float(ix), float(iy), snr
    part_ref = ref[ys, xs]
    part_img = work[ys.start - iy:ys.stop - iy, xs.start - ix:xs.stop - ix]
    fine, _, _ = phase_cross_correlation(part_ref, part_img, upsample_factor=upsample, normalization=None)
    return float(ix + fine[1]), float(iy + fine[0]), snr


def _decompose(matrix: np.ndarray) -> tuple[float, float, float, float]:
    if not np.all(np.isfinite(matrix)):
        return (math.nan,) * 4
    a = matrix[:2, :2]
    scale = math.sqrt(abs(np.linalg.det(a)))
    rotation = math.degrees(math.atan2(a[1, 0], a[0, 0]))
    return float(matrix[0, 2]), float(matrix[1, 2]), rotation, scale


def _corners_xy(shape: tuple[int, int]) -> np.ndarray:
    ny, nx = shape
    return np.array([[0.0, 0.0], [nx - 1.0, 0.0], [0.0, ny - 1.0], [nx - 1.0, ny - 1.0]])


def _overlaps(matrix: np.ndarray, shape: tuple[int, int]) -> bool:
    ny, nx = shape
    corners = _apply_matrix(matrix, _corners_xy(shape))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return bool(hi[0] >= 0 and lo[0] <= nx - 1 and hi[1] >= 0 and lo[1] <= ny - 1)


# --------------------------------------------------------------------------------------
# WCS of each frame (method="wcs")
# --------------------------------------------------------------------------------------


def _frame_wcs(frames: xr.DataArray, wcs: Sequence[Any] | None) -> list[Any]:
    """One celestial astropy WCS (or an error message string) per frame."""
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    from .astrometry import repair_wcs_header

    n = frames.sizes["frame"]
    if wcs is not None:
        if len(wcs) != n:
            raise ShapeMismatchError(f"wcs= holds {len(wcs)} entries for {n} frames; give one WCS or header per frame")
        sources: list[Any] = list(wcs)
    elif "header" in frames.coords:
        sources = [fits.Header.fromstring(str(h)) for h in frames.coords["header"].values]
    elif "path" in frames.coords:
        hdus = frames.coords["hdu"].values if "hdu" in frames.coords else [0] * n
        sources = []
        for path, hdu in zip(frames.coords["path"].values, hdus):
            try:
                sources.append(fits.getheader(str(path), int(hdu)))
            except (OSError, IndexError) as err:
                sources.append(RegistrationError(f"cannot read the header of {path} (HDU {hdu}): {err}"))
    else:
        raise ConfigError(
            "method='wcs' needs a WCS per frame: pass wcs=[WCS or header, ...], or frames with a 'header' "
            "coordinate (header strings) or 'path'/'hdu' coordinates"
        )
    out: list[Any] = []
    for source in sources:
        if isinstance(source, str):
            source = fits.Header.fromstring(source)
        if isinstance(source, RegistrationError):
            out.append(str(source))
        elif isinstance(source, WCS):
            out.append(source.celestial if source.has_celestial else "the WCS has no celestial axes")
        elif isinstance(source, fits.Header):
            try:
                header = repair_wcs_header(source)
            except HeaderError as err:
                out.append(str(err))
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                w = WCS(header, relax=True)
            if not w.has_celestial:
                out.append("the header holds no celestial WCS (CTYPE1/CTYPE2 RA/DEC)")
            elif "CRVAL1" not in header or "CRVAL2" not in header:
                out.append("the header holds no CRVAL1/CRVAL2")
            else:
                out.append(w.celestial)
        else:
            out.append(f"unsupported WCS source {type(source).__name__}; give an astropy WCS or FITS header")
    return out


def _wcs_matrix(w: Any, w_ref: Any, shape: tuple[int, int], model: str) -> tuple[np.ndarray, float, str]:
    ny, nx = shape
    gy, gx = np.meshgrid(np.linspace(0, ny - 1, 7), np.linspace(0, nx - 1, 7), indexing="ij")
    xy = np.column_stack([gx.ravel(), gy.ravel()])
    with np.errstate(invalid="ignore"):
        world = w.pixel_to_world_values(xy[:, 0], xy[:, 1])
        rx, ry = w_ref.world_to_pixel_values(*world)
    dst = np.column_stack([rx, ry])
    good = np.all(np.isfinite(dst), axis=1)
    if good.sum() < 3:
        return np.full((3, 3), np.nan), math.nan, "the WCS does not project onto the reference frame's WCS"
    matrix = _fit_model(xy[good], dst[good], model)
    resid = _apply_matrix(matrix, xy[good]) - dst[good]
    return matrix, float(np.sqrt(np.mean(np.sum(resid**2, axis=1)))), ""


# --------------------------------------------------------------------------------------
# find_transforms
# --------------------------------------------------------------------------------------


def find_transforms(
    frames: xr.DataArray,
    *,
    reference: int | str = 0,
    method: Method = "asterism",
    on_failure: OnFailure = "raise",
    model: Model = "similarity",
    fwhm: float = 3.0,
    threshold: float = 5.0,
    max_stars: int = 50,
    match_radius: float = 2.0,
    min_matches: int = 5,
    max_rms: float = 1.0,
    upsample: int = 100,
    min_peak_snr: float = 10.0,
    wcs: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """Measure the transform of every frame onto a reference frame.

    Parameters
    ----------
    frames : xarray.DataArray
        Cube with dims ``("frame", "y", "x")``, lazy or in memory.  Background need not be
        subtracted (a sigma-clipped level is removed per frame); NaN pixels are ignored.
    reference : int or str, default 0
        Position of the reference frame along ``frame``, or its ``path`` coordinate.
    method : {"asterism", "xcorr", "wcs"}, default "asterism"
        ``"asterism"``: detect stars per frame (photutils ``DAOStarFinder`` above
        ``threshold`` sigma), match triangles with astroalign, then refine by mutual nearest
        neighbours and a least-squares fit of ``model``.  ``"xcorr"``: FFT cross-correlation
        (scikit-image ``phase_cross_correlation``, subpixel by ``upsample``) for fields with
        few stars; pure shifts.  ``"wcs"``: from the frames' celestial WCS (see ``wcs``).
    on_failure : {"raise", "skip"}, default "raise"
        ``"raise"``: raise :class:`~daskred.errors.RegistrationError` naming every frame that
        could not be registered and why.  ``"skip"``: return them with ``status="failed"``
        and the reason; :func:`daskred.resample.apply_transforms` leaves them out.
    model : {"shift", "similarity", "affine"}, default "similarity"
        Transform fitted to matched stars (``"asterism"``) or WCS grid points (``"wcs"``).
        ``"xcorr"`` always measures a shift.
    fwhm : float, default 3.0
        Star FWHM in pixels for the detection kernel.
    threshold : float, default 5.0
        Detection threshold in units of the sigma-clipped background standard deviation.
    max_stars : int, default 50
        Number of brightest stars kept per frame (the star lists are all that travel).
    match_radius : float, default 2.0
        Pixels; a star matches its counterpart when they are mutual nearest neighbours closer
        than this after the first transform estimate.
    min_matches : int, default 5
        A frame with fewer matched stars is reported as failed (``"asterism"``).
    max_rms : float, default 1.0
        Pixels; a frame whose matched stars scatter more is reported as failed.
    upsample : int, default 100
        Subpixel factor of the cross-correlation peak (``"xcorr"``): precision 1/upsample px.
    min_peak_snr : float, default 10.0
        ``"xcorr"``: a frame whose phase-correlation peak stands less than this many standard
        deviations above the correlation surface is reported as failed (pure noise gives ~5).
    wcs : sequence of astropy.wcs.WCS or astropy.io.fits.Header or str, optional
        ``"wcs"``: one WCS (or header, or header string) per frame.  When omitted, the WCS
        comes from a ``header`` coordinate along ``frame`` (FITS header strings) or, failing
        that, from the headers of the ``path``/``hdu`` coordinates.  Headers are passed
        through :func:`daskred.astrometry.repair_wcs_header` first.  The WCS must describe the
        pixel grid of the frames as given (0-based pixels after any trimming).

    Returns
    -------
    pandas.DataFrame
        One row per frame, indexed by frame position, with columns ``frame`` (position),
        ``path`` (``""`` when unknown), ``status`` (``"ok"`` or ``"failed"``), ``reason``
        (why it failed; ``"reference frame"`` for the reference), ``n_matches`` (matched
        stars; WCS grid points for ``"wcs"``; 0 for ``"xcorr"``), ``rms_px`` (residual RMS of
        the fit in pixels; NaN for ``"xcorr"``), ``peak_snr`` (``"xcorr"`` only), ``dx``,
        ``dy``, ``rotation`` (degrees, counter-clockwise in the (x, y) plane), ``scale`` and
        ``matrix`` (3x3 ``numpy`` array: ``reference_xy = matrix @ (x, y, 1)``, 0-based
        pixels; NaN when failed).  ``attrs`` holds ``reference`` and ``method``.

    Raises
    ------
    RegistrationError
        When ``on_failure="raise"`` and some frame cannot be registered.
    ConfigError
        For an unknown option value or reference.

    Notes
    -----
    This function computes: one ``dask.compute`` runs a detection task per frame (each task
    reads one frame, returns at most ``max_stars`` positions); matching runs in the caller.
    For ``"xcorr"`` each task receives the prepared reference frame and one frame.  ``"wcs"``
    reads headers only.

    Examples
    --------
    >>> table = find_transforms(frames, method="asterism", on_failure="skip")  # doctest: +SKIP
    >>> table[["path", "status", "dx", "dy", "rotation", "rms_px"]]  # doctest: +SKIP
    """
    _check_cube(frames)
    check_choice("method", method, _METHODS)
    check_choice("on_failure", on_failure, _ON_FAILURE)
    check_choice("model", model, _MODELS)
    for name, value in (("fwhm", fwhm), ("threshold", threshold), ("match_radius", match_radius),
                        ("max_rms", max_rms)):
        if not value > 0:
            raise ConfigError(f"{name}={value!r} must be > 0")
    if int(max_stars) < 3:
        raise ConfigError(f"max_stars={max_stars!r} must be at least 3 (a triangle)")
    ref = _resolve_reference(frames, reference)
    n = frames.sizes["frame"]
    shape = (frames.sizes["y"], frames.sizes["x"])
    data = frames.data

    matrices = [np.full((3, 3), np.nan) for _ in range(n)]
    n_matches = [0] * n
    rms = [math.nan] * n
    snr = [math.nan] * n
    reasons = [""] * n

    if method == "asterism":
        detect = dask.delayed(_detect_stars, pure=True)
        tasks = [detect(data[i], float(fwhm), float(threshold), int(max_stars)) for i in range(n)]
        star_lists = dask.compute(*tasks)
        for i in range(n):
            if i == ref:
                continue
            matrices[i], n_matches[i], rms[i], reasons[i] = _match_star_lists(
                star_lists[i], star_lists[ref], model=model, max_stars=int(max_stars),
                match_radius=float(match_radius),
            )
            if not reasons[i] and n_matches[i] < min_matches:
                reasons[i] = (
                    f"only {n_matches[i]} star(s) matched the reference frame (min_matches={min_matches}); "
                    "the frame may show another field or be too shallow"
                )
            elif not reasons[i] and rms[i] > max_rms:
                reasons[i] = f"matched stars scatter by {rms[i]:.2f} px RMS > max_rms={max_rms}"
        n_matches[ref] = len(star_lists[ref])
    elif method == "xcorr":
        prepared = dask.delayed(_prepare_xcorr, pure=True)(data[ref])
        shift = dask.delayed(_xcorr_shift, pure=True, nout=3)
        results = dask.compute(*[shift(prepared, data[i], int(upsample)) for i in range(n)])
        for i, (dx, dy, peak) in enumerate(results):
            snr[i] = peak
            if i == ref:
                continue
            matrices[i] = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
            if not peak >= min_peak_snr:
                reasons[i] = (
                    f"cross-correlation peak is only {peak:.1f} sigma above the correlation surface "
                    f"(min_peak_snr={min_peak_snr}); the frame may be empty, of another field, or shifted "
                    "by more than its size"
                )
    else:
        systems = _frame_wcs(frames, wcs)
        if isinstance(systems[ref], str):
            raise RegistrationError(f"reference {_frame_label(frames, ref)} has no usable WCS: {systems[ref]}")
        for i in range(n):
            if i == ref:
                continue
            if isinstance(systems[i], str):
                reasons[i] = systems[i]
                continue
            matrices[i], rms[i], reasons[i] = _wcs_matrix(systems[i], systems[ref], shape, model)
            n_matches[i] = 49

    matrices[ref] = np.eye(3)
    rms[ref] = 0.0 if method != "xcorr" else math.nan
    for i in range(n):
        if i != ref and not reasons[i] and not _overlaps(matrices[i], shape):
            reasons[i] = "the transformed frame does not overlap the reference frame"
        if reasons[i]:
            matrices[i] = np.full((3, 3), np.nan)
    reasons[ref] = "reference frame"
    failed = [i for i in range(n) if i != ref and reasons[i]]
    if failed and on_failure == "raise":
        lines = "; ".join(f"{_frame_label(frames, i)}: {reasons[i]}" for i in failed)
        raise RegistrationError(
            f"{len(failed)} of {n} frame(s) cannot be registered ({lines}); "
            "pass on_failure='skip' to leave them out of the stack"
        )
    rows = []
    for i in range(n):
        dx, dy, rot, scale = _decompose(matrices[i])
        rows.append({
            "frame": i,
            "path": _frame_path(frames, i),
            "status": "failed" if i in failed else "ok",
            "reason": reasons[i],
            "n_matches": int(n_matches[i]),
            "rms_px": rms[i],
            "peak_snr": snr[i],
            "dx": dx,
            "dy": dy,
            "rotation": rot,
            "scale": scale,
            "matrix": matrices[i],
        })
    table = pd.DataFrame(rows, columns=list(_TABLE_COLUMNS))
    table.attrs["reference"] = ref
    table.attrs["method"] = method
    return table

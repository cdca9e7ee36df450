"""Cosmic-ray detection and cleaning (L.A.Cosmic through astroscrappy) over overlapping blocks.

:func:`detect_cosmics` runs :func:`astroscrappy.detect_cosmics` on every block of a lazy
frame cube, each block enlarged by a halo whose depth is derived from the algorithm's
parameters (see :func:`cosmics_halo`), so that the chunked result equals the whole-frame
result.  The graph is lazy: nothing runs until the caller computes or writes the result.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import astroscrappy
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from threadpoolctl import threadpool_limits

from ._validate import check_choice, frame_cube, mask_cube
from .errors import ConfigError, HeaderError, ShapeMismatchError

__all__ = ["detect_cosmics", "cosmics_halo"]

CleanType = Literal["meanmask", "medmask", "median", "idw"]
FineStructureMode = Literal["median", "convolve"]
PsfModel = Literal["gauss", "gaussx", "gaussy", "moffat"]

#: One record per pixel: the cleaned value and the cosmic-ray flag, so that one task
#: produces both outputs and the overlap/trim machinery handles them together.
_RECORD = np.dtype([("data", np.float32), ("mask", np.bool_)])

_ELECTRON_UNITS = {"electron", "electrons", "e", "e-"}

#: Smallest frame side astroscrappy handles safely (its 9-wide filters copy 4-pixel borders).
_MIN_SIZE = 16


def cosmics_halo(
    *,
    niter: int = 4,
    sepmed: bool = True,
    fsmode: FineStructureMode = "median",
    psfsize: int = 7,
) -> int:
    """Return the halo depth (pixels) that makes blocked L.A.Cosmic equal the whole frame.

    The depth is the radius of the footprint of one output pixel, accumulated through
    every neighbourhood operation that astroscrappy 1.x performs (its source,
    ``astroscrappy.pyx``, is the reference).  An operation of half-width ``h`` applied to
    values that are exact within ``r`` pixels of the block edge gives values that are
    exact ``r + h`` pixels inside the edge; so radii add up along the chain:

    * saturation mask: separable 7-wide median (``sepmed``; 5x5 median otherwise) of the
      data, then two 5x5 dilations: ``3 + 2 + 2 = 7``; the user mask is dilated 3x3 (1);
    * per iteration, with ``c`` the radius of the cleaned image and its variance:

      - Laplacian of the 2x subsampled image, rebinned: ``c + 1``;
      - noise model, median of the variance (7-wide separable or 5x5): ``c + 3``;
      - removal of large structure from the Laplacian S/N (same median): ``+ 3``;
      - fine-structure image (5-wide separable or 3x3 median, or the PSF kernel of
        ``psfsize`` when ``fsmode="convolve"``) minus its 9-wide separable (7x7) median:
        ``c + 2 + 4``;
      - two 3x3 growths of the candidate cosmic rays (neighbour search): ``+ 2``;
      - cleaning with the 5x5 masked mean/median/IDW of the cosmic-ray mask: ``+ 2``.

    With the defaults (``sepmed=True``, ``fsmode="median"``) each iteration adds 10 pixels:
    the mask is exact for a halo of ``10 * niter - 1`` and the cleaned image for
    ``10 * niter + 1`` (41 for ``niter=4``), which is the value returned.

    Parameters
    ----------
    niter : int
        Number of L.A.Cosmic iterations.
    sepmed : bool
        Whether the separable median filters are used.
    fsmode : {"median", "convolve"}
        How the fine-structure image is built.
    psfsize : int
        Kernel size for ``fsmode="convolve"``.

    Returns
    -------
    int
        Halo depth in pixels, along both image axes.

    Examples
    --------
    >>> cosmics_halo(niter=4)
    41
    >>> cosmics_halo(niter=1)
    11
    """
    noise_filter = 3 if sepmed else 2  # sepmedfilt7 / medfilt5 (noise and large structure)
    sat_mask = noise_filter + 2 + 2  # median of the data, then dilate5 twice
    mask = max(sat_mask, 1)  # the user mask is grown by dilate3
    clean = 0  # radius of the working image and of its variance
    crmask = 0
    for _ in range(niter):
        noise = clean + noise_filter
        sig = max(clean + 1, noise)  # Laplacian of the 2x subsampled image
        large = sig + noise_filter  # S' = S - median(S)
        if fsmode == "convolve":
            fine = max(clean, noise) + psfsize // 2
        else:
            fine = clean + (2 if sepmed else 1)  # sepmedfilt5 / medfilt3
        fine = max(fine + (4 if sepmed else 3), noise)  # minus sepmedfilt9 / medfilt7, / noise
        cosmics = max(large, fine, mask) + 2  # two dilate3 growths
        crmask = max(crmask, cosmics)
        clean = max(crmask, mask, clean) + 2  # 5x5 cleaning
    return max(clean, crmask)


def _frame_values(
    frames: xr.DataArray, name: str, coord: str, value: Any, unit: str, nframe: int
) -> np.ndarray | None:
    """Per-frame float64 values from a keyword (scalar/Quantity) or a frame coordinate."""
    if value is not None:
        if hasattr(value, "to_value"):
            try:
                value = value.to_value(unit)
            except Exception as err:  # astropy raises UnitConversionError
                raise ConfigError(f"{name} must be convertible to {unit}, got {value!r}") from err
        arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (nframe,)).copy()
        return arr
    if coord in frames.coords:
        arr = np.asarray(frames.coords[coord].values, dtype=np.float64)
        return np.broadcast_to(arr, (nframe,)).copy()
    return None


def _resolve_parameters(
    frames: xr.DataArray, gain: Any, readnoise: Any, satlevel: Any, nframe: int
) -> np.ndarray:
    """Return an (nframe, 3) array of astroscrappy (gain, readnoise, satlevel)."""
    units = str(frames.attrs.get("units", "")).strip().lower()
    in_electrons = units in _ELECTRON_UNITS
    header_gain = _frame_values(frames, "gain", "gain", None, "electron/adu", nframe)

    if gain is None and in_electrons:
        scrappy_gain = np.ones(nframe)
    else:
        scrappy_gain = _frame_values(frames, "gain", "gain", gain, "electron/adu", nframe)
        if scrappy_gain is None or not np.all(np.isfinite(scrappy_gain)):
            raise HeaderError(
                "detect_cosmics needs the gain (e-/ADU) of every frame: the frames have "
                f"units {units or 'unset'!r} and no finite 'gain' coordinate; pass gain=... "
                "(use gain=1.0 for data already in electrons)"
            )
    if np.any(scrappy_gain <= 0):
        raise ConfigError(f"gain must be positive, got {np.unique(scrappy_gain)}")

    rdnoise = _frame_values(frames, "readnoise", "rdnoise", readnoise, "electron", nframe)
    if rdnoise is None or not np.all(np.isfinite(rdnoise)):
        raise HeaderError(
            "detect_cosmics needs the read noise (electrons) of every frame: no finite "
            "'rdnoise' coordinate on the frames; pass readnoise=... in electrons"
        )
    if np.any(rdnoise < 0):
        raise ConfigError(f"readnoise must be >= 0 electrons, got {np.unique(rdnoise)}")

    sat = _frame_values(frames, "satlevel", "saturate", satlevel, "electron", nframe)
    if satlevel is None:
        if sat is None:
            sat = np.full(nframe, np.inf)
        else:
            # 'saturate' is in ADU; astroscrappy compares it with data * gain (electrons).
            to_electrons = header_gain if in_electrons else scrappy_gain
            if to_electrons is None:
                to_electrons = np.full(nframe, np.nan)
            sat = sat * to_electrons
            sat[~np.isfinite(sat)] = np.inf  # unknown saturation: no saturation masking
    return np.stack([scrappy_gain, rdnoise, sat], axis=1)


#: astroscrappy's own dilation, replaced in its detect_cosmics by _dilate5_by_single_steps
_ASTROSCRAPPY_DILATE5 = astroscrappy.utils.dilate5


def _dilate5_by_single_steps(mask: np.ndarray, niter: int) -> np.ndarray:
    """astroscrappy's ``dilate5(mask, niter)`` as ``niter`` single dilations.

    astroscrappy 1.3.0's C ``PyDilate5`` allocates an image-sized scratch buffer for
    ``niter > 1`` and never frees it; ``detect_cosmics`` calls ``dilate5(satpixels, 2)``
    once per image, so every call leaked one byte per pixel (1.2 MiB for a 1030x1240
    frame, 440 frames: 530 MiB, enough to stall a 1 GiB dask worker).  One iteration takes
    the path that allocates nothing, and iterating it is the same dilation.
    """
    out = _ASTROSCRAPPY_DILATE5(mask, 1)
    for _ in range(int(niter) - 1):
        out = _ASTROSCRAPPY_DILATE5(out, 1)
    return out



def _stop_astroscrappy_leak() -> None:
    """Make astroscrappy's ``detect_cosmics`` use :func:`_dilate5_by_single_steps`.

    ``detect_cosmics`` (Cython) looks ``dilate5`` up in its module's globals at call time,
    so replacing that one name is enough; results are identical.  Idempotent; runs in
    every process that runs :func:`_detect_block` (dask workers included).
    """
    core = astroscrappy.astroscrappy
    if getattr(core, "dilate5", None) is _ASTROSCRAPPY_DILATE5:
        core.dilate5 = _dilate5_by_single_steps


def _detect_block(
    block: np.ndarray,
    inmask: np.ndarray | None,
    params: np.ndarray,
    options: dict[str, Any],
) -> np.ndarray:
    """Run astroscrappy on every frame of one (overlapped) block; return records."""
    _stop_astroscrappy_leak()
    out = np.empty(block.shape, dtype=_RECORD)
    for k in range(block.shape[0]):
        frame = np.asarray(block[k], dtype=np.float32)
        bad = ~np.isfinite(frame)
        if inmask is not None:
            bad |= np.asarray(inmask[k], dtype=bool)
        if bad.any():
            frame = np.where(np.isfinite(frame), frame, np.float32(0.0))
        gain, rdnoise, sat = params[k]
        # dask already runs one task per core: keep astroscrappy's OpenMP pool at one thread
        # (the limit is per calling thread in libgomp, so concurrent tasks do not interfere).
        with threadpool_limits(limits=1, user_api="openmp"):
            crmask, clean = astroscrappy.detect_cosmics(
                frame,
                inmask=bad if bad.any() else None,
                gain=float(gain),
                readnoise=float(rdnoise),
                satlevel=float(sat),
                **options,
            )
        nan = ~np.isfinite(block[k])
        if nan.any():
            clean[nan] = np.nan
        out["data"][k] = clean
        out["mask"][k] = crmask
    return out


def detect_cosmics(
    frames: xr.DataArray | xr.Dataset,
    *,
    sigclip: float = 4.5,
    sigfrac: float = 0.3,
    objlim: float = 5.0,
    gain: Any = None,
    readnoise: Any = None,
    satlevel: Any = None,
    niter: int = 4,
    sepmed: bool = True,
    cleantype: CleanType = "meanmask",
    fsmode: FineStructureMode = "median",
    psfmodel: PsfModel = "gauss",
    psffwhm: float = 2.5,
    psfsize: int = 7,
    psfbeta: float = 4.765,
    inmask: xr.DataArray | np.ndarray | None = None,
) -> xr.Dataset:
    """Detect and clean cosmic rays with L.A.Cosmic (astroscrappy), block by block, lazily.

    Parameters
    ----------
    frames : xarray.DataArray or xarray.Dataset
        Frames with dims ``("frame", "y", "x")`` (or one image ``("y", "x")``), backed by
        dask (a numpy-backed array is wrapped, one chunk per frame).  A calibrated Dataset
        is accepted: its ``"data"`` is cleaned and its ``"mask"`` (bad pixels) is ignored
        like ``inmask``.  Pixel values must
        include the sky (do not subtract the background first): the noise model is built
        from them.
    sigclip : float
        Laplacian-to-noise limit for cosmic-ray detection.
    sigfrac : float
        Fraction of ``sigclip`` used for the neighbours of detected pixels.
    objlim : float
        Minimum contrast between the Laplacian and the fine-structure image.
    gain : float, Quantity or None
        Factor that turns pixel values into electrons, astroscrappy's ``gain``.  ``None``
        means 1.0 when ``frames.attrs["units"]`` says electrons, else the frames' ``gain``
        coordinate (e-/ADU); a :class:`~daskred.errors.HeaderError` is raised when neither
        is known.
    readnoise : float, Quantity or None
        Read noise in electrons; ``None`` reads the ``rdnoise`` coordinate (error if
        missing or NaN).
    satlevel : float, Quantity or None
        Saturation level in electrons (astroscrappy compares it with ``data * gain``).
        ``None`` converts the ``saturate`` coordinate (ADU) with the header gain; when the
        saturation level is unknown no pixel is treated as saturated (``inf``).
    niter : int
        Number of L.A.Cosmic iterations.
    sepmed : bool
        Use astroscrappy's separable median filters (faster, slightly different).
    cleantype : {"meanmask", "medmask", "median", "idw"}
        How flagged pixels are replaced in the cleaned frames.
    fsmode : {"median", "convolve"}
        How the fine-structure image is built.
    psfmodel : {"gauss", "gaussx", "gaussy", "moffat"}
        PSF model for ``fsmode="convolve"``.
    psffwhm : float
        PSF FWHM in pixels for ``fsmode="convolve"``.
    psfsize : int
        Odd PSF kernel size in pixels for ``fsmode="convolve"``.
    psfbeta : float
        Moffat beta for ``psfmodel="moffat"``.
    inmask : xarray.DataArray or numpy.ndarray, optional
        Boolean mask of pixels to ignore (bad or saturated pixels), dims ``("y", "x")`` (the
        same for every frame) or the frames' dims.  Non-finite pixels are always ignored.

    Returns
    -------
    xarray.Dataset
        ``"data"``: cleaned frames (float32, NaN kept where the input was NaN) and
        ``"mask"``: boolean cosmic-ray mask, both lazy, with the frames' dims, chunks and
        coordinates.

    Raises
    ------
    HeaderError
        Gain or read noise are neither given nor on the frames.
    ConfigError
        An option is out of range or not one of its allowed values.
    ShapeMismatchError
        ``inmask`` does not have the frames' shape.

    Notes
    -----
    Each block is enlarged by a halo of :func:`cosmics_halo` pixels (41 for the defaults)
    along y and x (``map_overlap``-style, no padding at the frame edges, so astroscrappy
    sees the true frame edges exactly as on a whole frame).  Blocks smaller than the halo
    are merged with their neighbours first.  The result then equals astroscrappy on the
    whole frame, with one documented exception: astroscrappy replaces a flagged pixel
    whose whole 5x5 neighbourhood is flagged or masked by the median of the unmasked
    image, which per block is the median of the block; such pixels are rare (large
    cosmic-ray blobs) and the tests bound the effect.  Band chunks ``(1, band, W)`` with
    ``band`` several times the halo keep the overlap overhead small.

    Non-finite pixels are added to the input mask and set to 0 before detection.

    astroscrappy parallelises with OpenMP; inside each dask task its pool is limited to
    one thread (``threadpoolctl``), since dask already runs one task per core.  The
    function does not compute: the graph runs when the result is computed or written.

    Examples
    --------
    >>> import daskred as dr
    >>> cr = dr.detect_cosmics(frames, gain=1.0, readnoise=5.0)  # doctest: +SKIP
    >>> cleaned, crmask = cr["data"], cr["mask"]                   # doctest: +SKIP
    """
    frames, inmask, single = frame_cube(frames, inmask)
    check_choice("cleantype", cleantype, get_args(CleanType))
    check_choice("fsmode", fsmode, get_args(FineStructureMode))
    check_choice("psfmodel", psfmodel, get_args(PsfModel))
    for name, value in (("sigclip", sigclip), ("sigfrac", sigfrac), ("objlim", objlim),
                        ("psffwhm", psffwhm), ("psfbeta", psfbeta)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value!r}")
    if not (isinstance(niter, (int, np.integer)) and niter >= 1):
        raise ConfigError(f"niter must be an integer >= 1, got {niter!r}")
    if not (isinstance(psfsize, (int, np.integer)) and psfsize >= 1 and psfsize % 2 == 1):
        raise ConfigError(f"psfsize must be a positive odd integer, got {psfsize!r}")

    nframe, ny, nx = frames.shape
    if min(ny, nx) < _MIN_SIZE:
        # astroscrappy writes out of bounds on images this small.
        raise ShapeMismatchError(
            f"detect_cosmics needs frames of at least {_MIN_SIZE}x{_MIN_SIZE} pixels, got "
            f"{ny}x{nx} (y, x)"
        )
    params = _resolve_parameters(frames, gain, readnoise, satlevel, nframe)
    options = dict(
        sigclip=float(sigclip), sigfrac=float(sigfrac), objlim=float(objlim), niter=int(niter),
        sepmed=bool(sepmed), cleantype=cleantype, fsmode=fsmode, psfmodel=psfmodel,
        psffwhm=float(psffwhm), psfsize=int(psfsize), psfbeta=float(psfbeta),
    )

    data = frames.data
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=(1, ny, nx))
    halo = cosmics_halo(niter=niter, sepmed=sepmed, fsmode=fsmode, psfsize=psfsize)
    # An axis not longer than the halo is processed whole (one chunk, no overlap).
    depth = {0: 0, 1: halo if ny > halo else 0, 2: halo if nx > halo else 0}
    whole = {axis: -1 for axis in (1, 2) if depth[axis] == 0}
    in_chunks = data.chunks
    if whole:
        data = data.rechunk(whole)
    mask_arr = mask_cube(inmask, frames, data.chunks, name="inmask")
    # Merge blocks smaller than the halo with their neighbours (dask does the same in
    # map_overlap); the output is rechunked back to the input chunks at the end.
    data_o = da.overlap.overlap(data, depth=depth, boundary="none", allow_rechunk=True)
    args: list[Any] = [data_o, "fyx"]
    if mask_arr is not None:
        mask_arr = mask_arr.rechunk(_merged_chunks(data, depth))
        args += [da.overlap.overlap(mask_arr, depth=depth, boundary="none"), "fyx"]
    else:
        args += [None, None]
    params_arr = da.from_array(params, chunks=(_merged_chunks(data, depth)[0], 3))
    args += [params_arr, "fp"]

    name = "detect-cosmics-" + tokenize(data, mask_arr, params, options, halo)
    records = da.blockwise(
        _detect_block, "fyx", *args,
        options=options, dtype=_RECORD, concatenate=True, name=name,
        meta=np.empty((0, 0, 0), dtype=_RECORD),
    )
    records = da.overlap.trim_internal(records, depth, boundary="none")
    if records.chunks != in_chunks:
        records = records.rechunk(in_chunks)

    history = list(frames.attrs.get("history", []))
    history.append(
        "detect_cosmics(" + ", ".join(f"{k}={v!r}" for k, v in options.items())
        + f", halo={halo})"
    )
    attrs = {**frames.attrs, "history": history}
    cleaned = xr.DataArray(records["data"], dims=frames.dims, coords=frames.coords, attrs=attrs)
    crmask = xr.DataArray(records["mask"], dims=frames.dims, coords=frames.coords,
                          attrs={"history": history})
    out = xr.Dataset({"data": cleaned, "mask": crmask})
    if single:
        out = out.squeeze("frame", drop=True)
    return out


def _merged_chunks(data: da.Array, depth: dict[int, int]) -> tuple[tuple[int, ...], ...]:
    """Chunks after merging blocks smaller than the halo (as dask's overlap does)."""
    return tuple(
        da.overlap.ensure_minimum_chunksize(depth.get(i, 0), c) if depth.get(i, 0) else c
        for i, c in enumerate(data.chunks)
    )

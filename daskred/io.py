"""FITS input and output: lazy frame cubes, section parsing, atomic writers.

This is the only module that knows FITS conventions (1-based, x-first sections,
BZERO/BSCALE scaling, big-endian storage).  Everything else sees 0-based ``(y, x)``
numpy slices and native float32 pixels.

The graph holds paths, not pixels: :func:`open_frames` builds one small task per
(frame, band of rows) that opens its file on whichever worker runs it, reads only
those rows (memory-mapped where the file is not compressed), applies BZERO/BSCALE
and returns float32.  Building a cube reads headers only.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from astropy.io import fits

from .errors import ConfigError, DaskredError, FitsFileError, HeaderError, ShapeMismatchError

__all__ = [
    "parse_section",
    "open_frames",
    "to_fits",
    "to_zarr",
    "frame_band_height",
]

_SECTION = re.compile(r"^\s*\[\s*(\d+|\*)\s*(?::\s*(\d+))?\s*,\s*(\d+|\*)\s*(?::\s*(\d+))?\s*\]\s*$")

#: Coordinates that :func:`open_frames` attaches along ``frame`` (from :func:`daskred.scan`).
FRAME_COORDS = (
    "path", "hdu", "imagetyp", "filter", "exptime", "date_obs", "night", "object",
    "binning", "gain", "rdnoise", "saturate", "airmass", "ra", "dec",
    "biassec", "trimsec", "datasec",
)


# --------------------------------------------------------------------------- sections
def _axis_slice(start: str, stop: str | None, length: int | None, text: str) -> slice:
    if start == "*":
        return slice(0, length)
    first = int(start)
    last = int(stop) if stop is not None else first
    if first < 1 or last < 1:
        raise HeaderError(f"FITS section {text!r} has an index below 1; sections are 1-based")
    if length is not None and max(first, last) > length:
        raise HeaderError(
            f"FITS section {text!r} reaches {max(first, last)}, beyond the image axis of length {length}"
        )
    if last < first:
        # FITS allows reversed sections (read-out direction); the pixels covered are the same.
        first, last = last, first
    return slice(first - 1, last)


def parse_section(text: str, shape: tuple[int, int] | None = None) -> tuple[slice, slice]:
    """Translate a FITS section such as ``'[18:1382,1:1370]'`` into numpy slices.

    Parameters
    ----------
    text : str
        FITS/IRAF section, 1-based and inclusive, x (columns) first.  ``*`` stands for a
        whole axis.
    shape : tuple of int, optional
        ``(ny, nx)`` of the image; when given, the section is checked against it.

    Returns
    -------
    (slice, slice)
        0-based ``(y, x)`` slices, usable as ``data[ys, xs]``.

    Examples
    --------
    >>> parse_section("[18:1382,1:1370]")
    (slice(0, 1370, None), slice(17, 1382, None))
    """
    if not isinstance(text, str):
        raise HeaderError(f"a FITS section must be a string like '[1:100,1:200]', got {text!r}")
    match = _SECTION.match(text)
    if match is None:
        raise HeaderError(f"cannot parse FITS section {text!r}; expected '[x1:x2,y1:y2]' (1-based, x first)")
    x0, x1, y0, y1 = match.groups()
    ny, nx = shape if shape is not None else (None, None)
    return _axis_slice(y0, y1, ny, text), _axis_slice(x0, x1, nx, text)


# --------------------------------------------------------------------------- reading
_BITPIX_DTYPE = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _read_band(
    path: str,
    hdu: int,
    y0: int,
    y1: int,
    layout: tuple[int, int, int, float, float, float] | None,
) -> np.ndarray:
    """Read rows ``y0:y1`` of one image HDU as float32, shape ``(1, y1 - y0, nx)``.

    ``layout`` = (data offset in bytes, BITPIX, nx, BZERO, BSCALE, BLANK or NaN) lets an
    uncompressed image be read with one positioned read, without parsing the header
    again; ``None`` (tile-compressed images) goes through astropy's ``section``.
    """
    try:
        if layout is None:
            with fits.open(path, memmap=False) as hdul:
                out = np.array(hdul[hdu].section[y0:y1, :], dtype=np.float32)
        else:
            offset, bitpix, nx, bzero, bscale, blank = layout
            dtype = np.dtype(_BITPIX_DTYPE[bitpix])
            count = (y1 - y0) * nx
            raw = np.fromfile(path, dtype=dtype, count=count, offset=offset + y0 * nx * dtype.itemsize)
            if raw.size != count:
                raise FitsFileError(
                    f"{path}: HDU {hdu} is truncated: rows {y0}:{y1} need {count} pixels, the file "
                    f"holds {raw.size}; the file may be incomplete, re-copy it or leave it out"
                )
            raw = raw.reshape(y1 - y0, nx)
            out = raw.astype(np.float32)
            if bscale != 1.0:
                out *= np.float32(bscale)
            if bzero != 0.0:
                out += np.float32(bzero)
            if bitpix > 0 and not np.isnan(blank):
                out[raw == int(blank)] = np.nan
        if layout is None or layout[1] < 0:
            out[np.isinf(out)] = np.nan  # an infinite value is no measurement: missing
    except FitsFileError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError) as err:
        raise FitsFileError(f"{path}: cannot read rows {y0}:{y1} of HDU {hdu} ({err})") from err
    return out[np.newaxis]


def frame_band_height(
    nframes: int,
    width: int,
    *,
    copies: float = 4.0,
    budget: int | None = None,
) -> int:
    """Choose the height of a band of rows so one combine block fits a memory budget.

    Parameters
    ----------
    nframes : int
        Number of frames stacked in one block.
    width : int
        Row length in pixels.
    copies : float
        How many float32 copies of the block the chosen algorithm holds at once
        (median about 3, iterative clipping 5-6).
    budget : int, optional
        Bytes per block; default ``dask.config.get("daskred.block-bytes", 32 MiB)``.

    Returns
    -------
    int
        Rows per band, at least 1.
    """
    if budget is None:
        budget = int(dask.config.get("daskred.block-bytes", 32 * 2**20))
    per_row = max(1, nframes) * max(1, width) * 4 * copies
    return max(1, int(budget // per_row))


def _as_table(source: Any, hdu: int | str | None) -> pd.DataFrame:
    from .collection import scan

    if isinstance(source, pd.DataFrame):
        table = source
    elif isinstance(source, pd.Series):
        table = source.to_frame().T
    else:
        if isinstance(source, (str, os.PathLike)):
            source = [source]
        paths = list(source)
        if not paths:
            raise FitsFileError("no input files were given to open_frames")
        table = scan(paths, on_error="raise")
        if table.empty:
            raise FitsFileError(f"no FITS files found in {', '.join(map(str, paths[:3]))}; check the path or pattern")
        # scan sorts by path; frames keep the order in which files were given
        from .collection import _expand

        given, _ = _expand(paths, True)
        rank = {p: i for i, p in reversed(list(enumerate(given)))}
        table = table.assign(_rank=table["path"].map(rank)).sort_values(["_rank", "hdu"], kind="stable")
        table = table.drop(columns="_rank")
    if "path" not in table.columns or "hdu" not in table.columns:
        raise ConfigError(
            "open_frames needs a table with 'path' and 'hdu' columns, as returned by daskred.scan()"
        )
    if table.empty:
        raise FitsFileError("open_frames received an empty collection: no frames to open")
    if hdu is not None:
        if isinstance(hdu, str):
            keep = table["extname"].astype(str).str.upper() == hdu.upper()
        else:
            keep = table["hdu"] == int(hdu)
        picked = table[keep]
        missing = sorted(set(table["path"]) - set(picked["path"]))
        if missing:
            raise FitsFileError(
                f"HDU {hdu!r} is not an image in {len(missing)} file(s), e.g. {missing[0]}; "
                "check the HDU number/EXTNAME with `daskred scan`"
            )
        table = picked
    else:
        multi = table["path"].value_counts()
        multi = multi[multi > 1]
        if len(multi):
            raise ConfigError(
                f"{multi.index[0]} holds {multi.iloc[0]} image HDUs; choose one with hdu=<number or "
                "EXTNAME>, or pass the rows of daskred.scan() you want"
            )
    return table.reset_index(drop=True)


def _layouts(table: pd.DataFrame) -> list[tuple[int, int, int, float, float, float] | None]:
    """Byte layout of each row's pixels (from :func:`daskred.scan`), None for compressed HDUs."""
    needed = ("data_offset", "bitpix", "bzero", "bscale", "blank")
    if not all(c in table.columns for c in needed):
        from .collection import scan

        table = scan(list(table["path"].unique()), on_error="raise").merge(
            table[["path", "hdu"]], on=["path", "hdu"]
        )
    out = []
    for row in table.itertuples(index=False):
        if bool(row.compressed) or int(row.data_offset) < 0:
            out.append(None)
        else:
            out.append((int(row.data_offset), int(row.bitpix), int(row.nx), float(row.bzero),
                        float(row.bscale), float(row.blank)))
    return out


def open_frames(
    source: str | os.PathLike | Iterable[str | os.PathLike] | pd.DataFrame,
    *,
    hdu: int | str | None = None,
    chunks: int | Mapping[str, int] | None = None,
) -> xr.DataArray:
    """Open FITS frames as one lazy cube ``(frame, y, x)`` of float32.

    Parameters
    ----------
    source : path, glob, list of paths, or DataFrame
        Files (or the rows of :func:`daskred.scan` to use).  Paths are scanned for their
        headers only.
    hdu : int or str, optional
        Image HDU to read (number or EXTNAME).  Needed only when a file holds several
        image HDUs and ``source`` is not a table that already picks one row per HDU.
    chunks : int or mapping, optional
        Rows per band (``int`` or ``{"y": rows}``).  The default takes bands of about
        512 KiB per frame (``dask.config`` key ``daskred.frame-chunk-bytes``), fewer
        when one band of every frame would not fit the combine budget (``daskred.block-bytes``,
        at least 16 rows), which suits
        per-frame stages and keeps combine blocks small; :func:`daskred.combine` regroups
        bands of all frames without re-reading.

    Returns
    -------
    xarray.DataArray
        Dims ``("frame", "y", "x")``, float32, dask-backed with chunks ``(1, band, nx)``.
        Header values are lowercase ``frame`` coordinates (``path``, ``imagetyp``,
        ``filter``, ``exptime``, ``night`` ...); missing pixels (BLANK) and infinities
        are NaN.

    Raises
    ------
    FitsFileError
        A file cannot be opened or has no image in the requested HDU.
    ShapeMismatchError
        Frames differ in shape; the message names the odd ones.

    Notes
    -----
    Reads headers only: each pixel task opens its file when it runs (on a worker, for a
    distributed scheduler), reads its band of rows (memory-mapped for uncompressed files,
    ``section`` for tile-compressed ones) and applies BZERO/BSCALE.  The graph holds
    paths, so it pickles in kilobytes whatever the data size.

    Examples
    --------
    >>> frames = dr.open_frames("raw/bias/*.fits")          # doctest: +SKIP
    >>> frames.sel(frame=frames.exptime > 0)                  # doctest: +SKIP
    """
    table = _as_table(source, hdu)
    shapes = list(zip(table["ny"].astype(int), table["nx"].astype(int)))
    common = pd.Series(shapes).mode().iloc[0]
    odd = [f"{p} {s[0]}x{s[1]}" for p, s in zip(table["path"], shapes) if s != common]
    if odd:
        raise ShapeMismatchError(
            f"frames must share one shape; most are {common[0]}x{common[1]} (rows x columns) but "
            f"{len(odd)} differ: {', '.join(odd[:5])}{' ...' if len(odd) > 5 else ''}; "
            "select frames of one size (e.g. by the `shape` column of daskred.scan) or trim them first"
        )
    ny, nx = int(common[0]), int(common[1])
    if chunks is None:
        # small enough that one band of every frame fits the combine budget (so combine only
        # concatenates), large enough for per-frame stages with a halo
        per_frame = max(1, int(dask.config.get("daskred.frame-chunk-bytes", 2**19)) // (4 * nx))
        band = max(min(16, ny), min(per_frame, frame_band_height(len(table), nx, copies=2.5)))
    elif isinstance(chunks, Mapping):
        band = int(chunks.get("y", ny))
    else:
        band = int(chunks)
    band = min(max(1, band), ny)
    starts = list(range(0, ny, band))
    layouts = _layouts(table)

    name = "read-frames-" + dask.base.tokenize(
        [(p, int(h), s, m) for p, h, s, m in zip(table["path"], table["hdu"], table.get("size", 0), table.get("mtime", 0))],
        band,
    )
    graph = {}
    for i, (path, h, layout) in enumerate(zip(table["path"], table["hdu"], layouts)):
        for j, y0 in enumerate(starts):
            graph[(name, i, j, 0)] = (_read_band, str(path), int(h), y0, min(ny, y0 + band), layout)
    ychunks = tuple(min(band, ny - y0) for y0 in starts)
    data = da.Array(graph, name, chunks=((1,) * len(table), ychunks, (nx,)), dtype=np.float32,
                    meta=np.empty((0, 0, 0), np.float32))
    coords = {c: ("frame", table[c].to_numpy()) for c in FRAME_COORDS if c in table.columns}
    return xr.DataArray(data, dims=("frame", "y", "x"), coords=coords, name="data",
                        attrs={"units": "adu", "history": []})


# --------------------------------------------------------------------------- writing
def _version() -> str:
    from . import __version__

    return str(__version__)


def _write_error(path: Path, err: OSError) -> FitsFileError:
    """A one-line error for a failed write (disk full, quota, permissions), naming the file."""
    import errno

    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space or write the outputs elsewhere (--out / --cache)"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to"
    else:
        fix = "check the output folder"
    return FitsFileError(f"{path}: cannot write ({err.strerror or err}); {fix}; nothing was left under that name")


def _input_paths(obj: xr.DataArray | xr.Dataset) -> set[str]:
    paths: set[str] = set()
    if "path" in obj.coords:
        paths.update(os.path.realpath(p) for p in np.atleast_1d(obj.coords["path"].values))
    for p in obj.attrs.get("inputs", []) or []:
        paths.add(os.path.realpath(p))
    return paths


def _check_target(path: Path, sources: set[str], overwrite: bool) -> None:
    real = os.path.realpath(path)
    if real in sources:
        raise FitsFileError(f"{path}: refusing to write over an input file; choose another output path")
    if path.exists() and not overwrite:
        raise FitsFileError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")


def _fits_header_cards(header: fits.Header | Mapping[str, Any] | None) -> fits.Header:
    if header is None:
        return fits.Header()
    if isinstance(header, fits.Header):
        return header.copy()
    out = fits.Header()
    for key, value in header.items():
        out[key] = value
    return out


_STRUCTURAL = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "BLANK")


def _clean(header: fits.Header) -> fits.Header:
    out = header.copy()
    for key in list(out.keys()):
        if key in _STRUCTURAL or re.fullmatch(r"NAXIS\d+", key):
            out.remove(key, ignore_missing=True, remove_all=True)
    return out


def _planes(obj: xr.DataArray | xr.Dataset) -> list[tuple[str, xr.DataArray]]:
    if isinstance(obj, xr.DataArray):
        return [(str(obj.name or "IMAGE"), obj)]
    names = list(obj.data_vars)
    primary = next((n for n in ("data", "image") if n in names), names[0] if names else None)
    if primary is None:
        raise ConfigError("to_fits received an empty Dataset: nothing to write")
    ordered = [primary] + [n for n in names if n != primary]
    return [(str(n), obj[n]) for n in ordered]


def to_fits(
    obj: xr.DataArray | xr.Dataset,
    path: str | os.PathLike,
    *,
    header: fits.Header | Mapping[str, Any] | None = None,
    overwrite: bool = False,
    dtype: Any = np.float32,
) -> Path:
    """Write an image (or a Dataset of planes) to a FITS file, atomically.

    Parameters
    ----------
    obj : DataArray or Dataset
        ``(y, x)`` image or ``(frame, y, x)`` cube.  For a Dataset the ``data`` (or ``image``)
        variable is the primary HDU and every other variable becomes an image extension
        named after it (booleans are written as uint8).
    path : path-like
        Output file.
    header : astropy Header or mapping, optional
        Cards for the primary HDU (e.g. WCS, provenance).  ``attrs["history"]`` entries
        and ``attrs["inputs"]`` paths are appended as HISTORY cards; ``attrs["ncombine"]``
        and ``attrs["combine"]`` become NCOMBINE and COMBINE.
    overwrite : bool
        Replace an existing file.  An input file of ``obj`` (its ``path`` coordinate or
        ``attrs["inputs"]``) is never overwritten.
    dtype : numpy dtype
        Pixel type of floating planes.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FitsFileError
        ``path`` is an input of ``obj`` or exists (without ``overwrite``), or the write
        failed (disk full, no permission); nothing is then left under ``path``.

    Notes
    -----
    Computes.  The data are streamed block by block into a memory-mapped file with
    :func:`dask.array.store`, so the image never needs to fit in memory; the file is
    written under a temporary name in the target folder and renamed into place, so an
    interrupted write leaves no partial file.
    """
    path = Path(path)
    _check_target(path, _input_paths(obj), overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _write_error(path, err) from err
    primary_cards = _clean(_fits_header_cards(header))
    if "ncombine" in obj.attrs and "NCOMBINE" not in primary_cards:
        primary_cards["NCOMBINE"] = (int(obj.attrs["ncombine"]), "number of frames combined")
    if "combine" in obj.attrs and "COMBINE" not in primary_cards:
        primary_cards["COMBINE"] = (str(obj.attrs["combine"]), "combine settings")
    for entry in obj.attrs.get("history", []) or []:
        primary_cards.add_history(str(entry))
    for entry in obj.attrs.get("inputs", []) or []:
        primary_cards.add_history(f"input: {entry}")
    if "units" in obj.attrs and "BUNIT" not in primary_cards:
        primary_cards["BUNIT"] = str(obj.attrs["units"])
    if "PROCSOFT" not in primary_cards:
        # marks a product, so that scan(check=...) never takes it for a raw frame
        primary_cards["PROCSOFT"] = (f"daskred {_version()}", "software that wrote this file")

    layout: list[tuple[fits.Header, Any, np.dtype]] = []
    for index, (name, plane) in enumerate(_planes(obj)):
        kind = np.dtype(plane.dtype)
        disk = np.dtype(np.uint8) if kind == bool else (np.dtype(dtype) if kind.kind == "f" else kind)
        if disk.kind == "u" and disk.itemsize > 1:  # FITS has no unsigned types above 8 bits
            disk = np.dtype(np.int32) if disk.itemsize <= 2 else np.dtype(np.int64)
        disk = disk.newbyteorder(">")
        hdu_cls = fits.PrimaryHDU if index == 0 else fits.ImageHDU
        stub = hdu_cls(data=np.zeros((1,) * plane.ndim, dtype=disk))
        hdr = stub.header
        for axis, size in enumerate(reversed(plane.shape), start=1):
            hdr[f"NAXIS{axis}"] = int(size)
        if index == 0:
            hdr.extend(primary_cards, unique=True)
        else:
            hdr["EXTNAME"] = name.upper()
            if "units" in plane.attrs:
                hdr["BUNIT"] = str(plane.attrs["units"])
        layout.append((hdr, plane.data, disk))

    try:
        tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
        tmp.close()
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        offsets = []
        with open(tmp.name, "wb") as fh:
            for hdr, data, disk in layout:
                fh.write(hdr.tostring().encode("ascii"))
                offsets.append(fh.tell())
                nbytes = int(np.prod(data.shape)) * disk.itemsize
                padded = -(-nbytes // 2880) * 2880
                fh.truncate(fh.tell() + padded)
                fh.seek(fh.tell() + padded)
            fh.flush()
            # reserve the blocks now: writing through a memory map into a sparse file on a full
            # disk would kill the process (SIGBUS) instead of raising an error
            os.posix_fallocate(fh.fileno(), 0, fh.tell())
        sources, targets = [], []
        for (hdr, data, disk), offset in zip(layout, offsets):
            target = _FileRegion(tmp.name, dtype=disk, offset=offset, shape=tuple(data.shape))
            if isinstance(data, da.Array):
                sources.append(data.astype(disk.newbyteorder("=")))
                targets.append(target)
            else:
                target[...] = np.asarray(data)
                target.flush()
        if sources:
            da.store(sources, targets, lock=False)
            for t in targets:
                t.flush()
        del targets
        os.replace(tmp.name, path)
    except BaseException as err:
        if os.path.exists(tmp.name):
            os.unlink(tmp.name)
        if isinstance(err, OSError) and not isinstance(err, DaskredError):
            raise _write_error(path, err) from err
        raise
    return path


class _FileRegion:
    """A ``da.store`` target writing into a region of a file, opened where the task runs.

    A ``np.memmap`` pickles as a copy of its data, so on a ``dask.distributed`` worker the
    blocks would land in that copy and the file would keep zeros; this target carries only
    the path and layout.
    """

    def __init__(self, path: str, *, dtype: np.dtype, offset: int, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.offset, self.shape = path, np.dtype(dtype), offset, shape
        self.ndim = len(shape)

    def _open(self) -> np.memmap:
        return np.memmap(self.path, dtype=self.dtype, mode="r+", offset=self.offset, shape=self.shape)

    def __setitem__(self, key: Any, value: Any) -> None:
        region = self._open()
        region[key] = value
        region.flush()

    def flush(self) -> None:
        """Blocks are flushed as they are written."""


def is_url(location: str | os.PathLike) -> bool:
    """True for an fsspec URL other than ``file://`` (``s3://bucket/x``, ``memory://x``)."""
    text = os.fspath(location)
    return "://" in text and not text.startswith("file://")


def local_path(location: str | os.PathLike) -> Path:
    """A local path, given as a path or a ``file://`` URL."""
    text = os.fspath(location)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def to_zarr(
    obj: xr.DataArray | xr.Dataset,
    store: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Path | str:
    """Write a DataArray/Dataset to a Zarr store, atomically on a filesystem.

    Parameters
    ----------
    obj : DataArray or Dataset
    store : path-like or str
        A folder, or an fsspec URL (``s3://bucket/run/x.zarr``) where zarr can write.
    overwrite : bool
        Replace an existing store.

    Returns
    -------
    Path or str
        The store written (a URL stays a string).

    Raises
    ------
    FitsFileError
        ``store`` exists (without ``overwrite``), or the write failed (disk full, no
        permission); what was written is then removed.

    Notes
    -----
    Computes.  On a filesystem, writes into a temporary sibling directory, then renames it
    into place.  Object stores have no rename: a URL store is written in place, so a
    reader that must not trust a half-written store needs a marker written after this
    returns (what :class:`daskred.cache.Cache` does).  Coordinates of object dtype (paths,
    filters) are stored as fixed-width strings.  The store is Zarr format 3; open it with
    ``xr.open_zarr(store, consolidated=False)``.
    """
    import shutil

    ds = _zarr_ready(obj)
    if is_url(store):
        return _to_zarr_url(ds, os.fspath(store), overwrite=overwrite)
    store = local_path(store)
    if store.exists() and not overwrite:
        raise FitsFileError(f"{store} exists; pass overwrite=True to replace it")
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=store.parent, prefix=f".{store.name}.", suffix=".tmp"))
    except OSError as err:
        raise _write_error(store, err) from err
    try:
        _write_in_batches(ds, tmp)
        if store.exists():
            shutil.rmtree(store)
        os.replace(tmp, store)
    except BaseException as err:
        _remove_tree(tmp)
        if isinstance(err, OSError) and not isinstance(err, DaskredError):
            raise _write_error(store, err) from err
        raise
    return store


def _to_zarr_url(ds: xr.Dataset, url: str, *, overwrite: bool) -> str:
    """Write to an fsspec URL in place; a failed write removes what it wrote."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        if not overwrite:
            raise FitsFileError(f"{url} exists; pass overwrite=True to replace it")
        fs.rm(path, recursive=True)
    try:
        _write_in_batches(ds, url)
    except BaseException as err:
        try:
            fs.rm(path, recursive=True)
        except OSError:
            pass  # nothing was written yet
        if isinstance(err, OSError) and not isinstance(err, DaskredError):
            raise FitsFileError(f"{url}: cannot write ({err}); check the URL and your credentials") from err
        raise
    return url


def _zarr_ready(obj: xr.DataArray | xr.Dataset) -> xr.Dataset:
    """A Dataset that Zarr v3 stores as computed: no inherited encodings, string coordinates."""
    ds = obj.to_dataset(name=obj.name or "data") if isinstance(obj, xr.DataArray) else obj
    ds = ds.copy()
    for variable in ds.variables.values():
        # chunking comes from the dask graph; encodings inherited from a store read earlier
        # (another chunking) would conflict with it
        variable.encoding = {}
    for name, coord in ds.coords.items():
        if coord.dtype == object:
            ds = ds.assign_coords({name: coord.astype(str)})
    ds.attrs = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in ds.attrs.items()}
    return ds


def _write_in_batches(ds: xr.Dataset, target: Path | str) -> None:
    """Write a Dataset to a new Zarr store, a batch of frames at a time.

    One ``to_zarr`` of a whole cube lets dask read every frame before the last output is
    stored (the data, variance and mask of a frame share their reads), so memory would grow
    with the number of frames.  Metadata and coordinates are written first, then each batch
    of ``daskred.write-bytes`` (256 MiB) worth of frames is computed and stored into its region.
    """
    with warnings.catch_warnings():
        # fixed-width strings (coordinates such as paths) have no final Zarr v3 spec yet
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        _write_batches(ds, target)


def _write_batches(ds: xr.Dataset, target: Path | str) -> None:
    kwargs = dict(zarr_format=3, consolidated=False)
    frame_vars = [n for n, v in ds.data_vars.items() if "frame" in v.dims and isinstance(v.data, da.Array)]
    if "frame" not in ds.dims or not frame_vars:
        ds.to_zarr(target, mode="w", **kwargs)
        return
    step = max(max(ds[n].data.chunks[ds[n].dims.index("frame")]) for n in frame_vars)
    per_frame = sum(ds[n].dtype.itemsize * ds[n].size / ds.sizes["frame"] for n in frame_vars)
    budget = int(dask.config.get("daskred.write-bytes", 256 * 2**20))
    batch = max(1, int(budget // max(per_frame * step, 1))) * step
    nframes = ds.sizes["frame"]
    if nframes <= batch:
        ds.to_zarr(target, mode="w", **kwargs)
        return
    ds = ds.assign_coords({name: coord.load() for name, coord in ds.coords.items()})
    ds.to_zarr(target, mode="w", compute=False, **kwargs)
    for start in range(0, nframes, batch):
        region = slice(start, min(nframes, start + batch))
        part = ds[frame_vars].isel(frame=region).drop_vars(list(ds.coords))
        part.to_zarr(target, region={"frame": region}, **kwargs)


def _remove_tree(path: Path, *, attempts: int = 20) -> None:
    """Remove a temporary store; again while chunk writes still in flight re-create parts of it.

    When one write fails (disk full), tasks already running on other threads finish theirs
    after the error reached us.
    """
    import shutil
    import time

    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.05)
        if not path.exists():
            return

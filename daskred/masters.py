"""Master calibration frames: bias, dark and flat per night and readout setup.

:func:`make_masters` turns the calibration rows of a :func:`daskred.scan` table into lazy
master images, each a :class:`Master` that records what went into it (input files,
combine settings, NCOMBINE, corrections applied) as FITS header cards.  Masters are
grouped by night and readout setup (binning and raw frame shape); darks additionally by
exposure time (or one scalable dark per setup); flats by filter.  A night without its own
calibrations of a kind borrows the nearest night's master, and the borrowing is recorded
(:attr:`Master.fallback_from`, header card ``FALLBACK``).  :func:`select_master` picks the
master for a science frame by the same rules.

Every master is built with the calibration steps of :mod:`daskred.calibrate` and the one
reduction :func:`daskred.combine`; nothing computes until :meth:`Master.to_fits` or
:func:`write_masters`.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal, get_args

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from astropy.io import fits
from dask.base import tokenize

from .calibrate import subtract_bias, subtract_dark, subtract_overscan, trim
from .combine import combine
from .errors import CalibrationError, ConfigError, DaskredWarning, HeaderError
from .io import open_frames, to_fits

__all__ = ["Master", "make_masters", "select_master", "write_masters", "DEFAULT_COMBINE"]

Kind = Literal["bias", "dark", "flat"]
DarkMode = Literal["per_exptime", "scalable"]
Norm = Literal["median", "mean"]

#: Combine settings used for each kind unless overridden (keyword arguments of
#: :func:`daskred.combine`): a sigma-clipped mean around the median with a robust spread.
DEFAULT_COMBINE: dict[str, dict[str, Any]] = {
    "bias": {"method": "mean", "clip": "sigma", "sigma": 5.0, "maxiters": 5, "cenfunc": "median", "stdfunc": "mad_std"},
    "dark": {"method": "mean", "clip": "sigma", "sigma": 5.0, "maxiters": 5, "cenfunc": "median", "stdfunc": "mad_std"},
    "flat": {"method": "mean", "clip": "sigma", "sigma": 3.0, "maxiters": 5, "cenfunc": "median", "stdfunc": "mad_std"},
}

_KINDS: tuple[str, ...] = get_args(Kind)
_SCIENCE = ("light", "standard")


@dataclass(frozen=True)
class Master:
    """One master calibration image and its provenance.

    Attributes
    ----------
    kind : {"bias", "dark", "flat"}
        What the master corrects.
    night : str
        Night (``YYYY-MM-DD``) the master serves.
    binning : str
        Readout binning, e.g. ``"3x3"``.
    shape : str
        Raw frame shape ``"NYxNX"`` (before trimming) of the setup it serves.
    filter : str
        Filter of a flat (``""`` for bias and dark).
    exptime : float
        Exposure time of a dark in seconds (0 for bias; the mean of the inputs for flats).
    data : xarray.DataArray
        The lazy ``(y, x)`` float32 master, overscan-subtracted and trimmed like the
        frames it calibrates; a dark carries a scalar ``exptime`` coordinate.
    inputs : tuple of str
        Paths of the combined frames.
    header : astropy.io.fits.Header
        Provenance cards for the FITS file (IMAGETYP, NCOMBINE, COMBINE, NIGHT, ...).
    fallback_from : str or None
        When this night had no calibrations of this kind, the night whose master is used.
    """

    kind: str
    night: str
    binning: str
    shape: str
    filter: str
    exptime: float
    data: xr.DataArray = field(repr=False)
    inputs: tuple[str, ...] = field(repr=False)
    header: fits.Header = field(repr=False, compare=False)
    fallback_from: str | None = None

    @property
    def ncombine(self) -> int:
        """Number of frames combined."""
        return len(self.inputs)

    @property
    def name(self) -> str:
        """A file-name stem such as ``flat_2019-03-25_3x3_1370x1432_VR``."""
        parts = [self.kind, self.night or "nonight", self.binning, self.shape]
        if self.kind == "flat":
            parts.append(self.filter or "nofilter")
        if self.kind == "dark":
            parts.append(f"{self.exptime:g}s")
        return "_".join(_safe(p) for p in parts)

    def to_fits(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the master with its provenance header.

        Computes (this master's graph).  See :func:`daskred.io.to_fits`.

        Examples
        --------
        >>> masters[0].to_fits("masters/bias.fits")  # doctest: +SKIP
        """
        return to_fits(self.data, path, header=self.header, overwrite=overwrite)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in str(text))


def _night_date(night: str) -> date | None:
    try:
        return date.fromisoformat(str(night))
    except ValueError:
        return None


def _night_distance(a: str, b: str) -> float:
    da_, db_ = _night_date(a), _night_date(b)
    if da_ is None or db_ is None:
        return 0.0 if a == b else math.inf
    return abs((da_ - db_).days)


def _nearest(candidates: Sequence[Master], night: str) -> Master | None:
    if not candidates:
        return None
    return min(candidates, key=lambda m: (_night_distance(m.night, night), m.night))


def _frame_level(block: np.ndarray, paths: Sequence[str], statistic: str, block_id: tuple[int, ...] | None = None) -> np.ndarray:
    """Kernel: the median (or mean) level of one flat frame, checked to be positive."""
    label = paths[block_id[0]] if block_id is not None else "a flat"
    values = block[np.isfinite(block)].astype(np.float64)
    level = (np.median(values) if statistic == "median" else values.mean()) if values.size else math.nan
    if not level > 0:
        raise CalibrationError(
            f"flat {label} has a {statistic} level of {level:g} after bias/dark subtraction (all zero, "
            "negative or NaN); it cannot be normalised: leave the file out of the flats"
        )
    return np.full((1, 1, 1), level, dtype=np.float64)


def _normalise_flats(frames: xr.DataArray, statistic: str) -> xr.DataArray:
    """Divide each flat by its own median/mean (lazy per-frame scalars)."""
    data = frames.data
    whole = data.rechunk({0: 1, 1: -1, 2: -1})
    paths = [str(p) for p in frames.coords["path"].values] if "path" in frames.coords else [
        f"frame {i}" for i in range(frames.sizes["frame"])
    ]
    levels = da.map_blocks(
        _frame_level, whole, paths, statistic,
        chunks=(whole.chunks[0], (1,), (1,)), dtype=np.float64, meta=np.empty((0, 0, 0), np.float64),
        name="flat-level-" + tokenize(whole, statistic),
    )
    out = frames.copy(data=(data.astype(np.float64) / levels).astype(np.float32))
    out.attrs = {**frames.attrs, "history": [*frames.attrs.get("history", []), f"each flat divided by its {statistic}"]}
    return out


def _combine_options(combine_options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    allowed = set(inspect.signature(combine).parameters) - {"frames", "with_counts"}
    options = {k: dict(v) for k, v in DEFAULT_COMBINE.items()}
    for kind, given in (combine_options or {}).items():
        if kind not in _KINDS:
            raise ConfigError(f"combine options for unknown kind {kind!r}; use one of {', '.join(map(repr, _KINDS))}")
        if not isinstance(given, Mapping):
            raise ConfigError(f"combine options for {kind!r} must be a mapping of daskred.combine keywords")
        unknown = set(given) - allowed
        if unknown:
            raise ConfigError(
                f"unknown combine option(s) {sorted(unknown)} for {kind!r}; daskred.combine accepts "
                f"{', '.join(sorted(allowed))}"
            )
        options[kind] = dict(given)  # replace, do not merge: a pinned setting means exactly that
    return options


def _as_collection(collection: pd.DataFrame | str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    if isinstance(collection, pd.DataFrame):
        table = collection
    else:
        from .collection import scan

        table = scan(collection)
    needed = {"path", "hdu", "imagetyp", "night", "binning", "shape", "filter", "exptime"}
    missing = needed - set(table.columns)
    if missing:
        raise ConfigError(
            f"make_masters needs a table from daskred.scan(); columns {sorted(missing)} are missing"
        )
    return table


def _prepare(
    frames: xr.DataArray, overscan: str | Mapping[str, Any] | None, trim_section: str | None
) -> tuple[xr.DataArray, list[tuple[str, Any]]]:
    """Overscan-subtract and trim raw calibration frames; return them with header cards."""
    cards: list[tuple[str, Any]] = []
    if overscan is not None:
        options: dict[str, Any] | None
        if isinstance(overscan, Mapping):
            options = dict(overscan)
        elif overscan == "auto":
            has = "biassec" in frames.coords and all(str(v).strip() for v in frames.coords["biassec"].values)
            options = {} if has else None
        elif isinstance(overscan, str):
            options = {"section": overscan}
        else:
            raise ConfigError(f"overscan must be 'auto', a FITS section, a mapping or None, got {overscan!r}")
        if options is not None:
            frames = subtract_overscan(frames, **options)  # type: ignore[assignment]
            cards.append(("OVERSCAN", frames.attrs["history"][-1].split(": ", 1)[-1]))
    if trim_section is not None:
        if trim_section == "auto":
            has = any(
                name in frames.coords and all(str(v).strip() for v in frames.coords[name].values)
                for name in ("trimsec", "datasec")
            )
            if has:
                before = {n: str(frames.coords[n].values[0]) for n in ("trimsec", "datasec") if n in frames.coords}
                frames = trim(frames)  # type: ignore[assignment]
                cards.append(("TRIMSEC", before.get("trimsec") or before.get("datasec")))
        else:
            frames = trim(frames, section=trim_section)  # type: ignore[assignment]
            cards.append(("TRIMSEC", trim_section))
    return frames, cards


def _header(kind: str, night: str, binning: str, shape: str, filt: str, exptime: float,
            image: xr.DataArray, inputs: Sequence[str], cards: Sequence[tuple[str, Any]]) -> fits.Header:
    header = fits.Header()
    header["IMAGETYP"] = (f"MASTER {kind.upper()}", "master calibration frame")
    header["NIGHT"] = (night, "night served")
    header["BINNING"] = (binning, "readout binning")
    header["RAWSHAPE"] = (shape, "raw frame shape NYxNX before trimming")
    if kind == "flat":
        header["FILTER"] = (filt, "filter")
    if kind == "dark" or (kind == "flat" and math.isfinite(exptime)):
        header["EXPTIME"] = (float(exptime), "[s] exposure time" + (" (mean of inputs)" if kind == "flat" else ""))
    header["NCOMBINE"] = (len(inputs), "number of frames combined")
    header["COMBINE"] = str(image.attrs.get("combine", ""))  # daskred.combine settings (long-string CONTINUE)
    for key, value in cards:
        header[key] = value
    for path in inputs:
        header.add_history(f"input: {path}")
    return header


def _master_from(
    kind: str, group: pd.DataFrame, frames: xr.DataArray, options: Mapping[str, Any],
    cards: list[tuple[str, Any]], exptime: float,
) -> Master:
    image = combine(frames, **options)
    if isinstance(image, xr.Dataset):
        image = image["image"]
    first = group.iloc[0]
    night, binning, shape = str(first["night"]), str(first["binning"]), str(first["shape"])
    filt = str(first["filter"]) if kind == "flat" else ""
    inputs = tuple(str(p) for p in group["path"])
    draft = Master(kind, night, binning, shape, filt, float(exptime), image, inputs, fits.Header())
    image = image.rename(f"master {draft.name}")
    if kind == "dark":
        image = image.assign_coords(exptime=float(exptime))
    image.attrs = {**image.attrs, "units": image.attrs.get("units", "adu")}
    header = _header(kind, night, binning, shape, filt, exptime, image, inputs, cards)
    return replace(draft, data=image, header=header)


def _fallbacks(own: list[Master], needed: Iterable[tuple[str, ...]], kind: str) -> list[Master]:
    """Entries for nights that need a master of ``kind`` but have none, from the nearest night."""
    out: list[Master] = []
    have = {(m.night, m.binning, m.shape, m.filter) for m in own}
    for night, binning, shape, filt in sorted(set(needed)):
        if (night, binning, shape, filt) in have:
            continue
        pool = [m for m in own if (m.binning, m.shape, m.filter) == (binning, shape, filt)]
        if kind == "dark":
            # every exposure time of the nearest night with darks
            source = _nearest(pool, night)
            chosen = [m for m in pool if source is not None and m.night == source.night]
        else:
            source = _nearest(pool, night)
            chosen = [source] if source is not None else []
        for master in chosen:
            out.append(_borrowed(master, night))
    return out


def _borrowed(master: Master, night: str) -> Master:
    header = master.header.copy()
    header["NIGHT"] = (night, "night served")
    header["FALLBACK"] = (master.night, "night of the master used (none this night)")
    return replace(master, night=night, header=header, fallback_from=master.night)


def make_masters(
    collection: pd.DataFrame | str | os.PathLike | Iterable[str | os.PathLike],
    *,
    kinds: Sequence[Kind] = ("bias", "dark", "flat"),
    overscan: str | Mapping[str, Any] | None = "auto",
    trim: str | None = "auto",
    darks: DarkMode = "per_exptime",
    norm: Norm = "median",
    combine_options: Mapping[str, Mapping[str, Any]] | None = None,
    fallback: Literal["nearest", "none"] = "nearest",
    chunks: int | Mapping[str, int] | None = None,
) -> list[Master]:
    """Build lazy master bias, dark and flat frames from a collection of raw frames.

    Parameters
    ----------
    collection : pandas.DataFrame, path, glob or list of paths
        A :func:`daskred.scan` table (or what to scan).  Rows classified ``bias``, ``dark``
        and ``flat`` are combined; ``light``/``standard`` rows decide which nights and
        filters need masters (for the nearest-night fallback).
    kinds : sequence of {"bias", "dark", "flat"}
        Which masters to build; a kind not built is not applied to the others (e.g. flats
        are not bias-subtracted without ``"bias"``, recorded as ``BIASCOR = 'none'``).
    overscan : str, mapping or None
        ``"auto"``: subtract the overscan where frames carry BIASSEC; a FITS section; a
        mapping of :func:`daskred.calibrate.subtract_overscan` keywords; None: skip.
    trim : str or None
        ``"auto"``: trim to TRIMSEC/DATASEC where present; a FITS section; None: skip.
    darks : {"per_exptime", "scalable"}
        One master dark per exposure time, or one per setup from all darks brought to
        their mean exposure time (``combine(scale="exptime")``), to be scaled on use.
    norm : {"median", "mean"}
        Statistic by which each flat is divided before combining.
    combine_options : mapping, optional
        Per kind, the keyword arguments of :func:`daskred.combine` replacing
        :data:`DEFAULT_COMBINE`, e.g. ``{"bias": {"method": "median"}}``.
    fallback : {"nearest", "none"}
        Give nights without calibrations of a kind the nearest night's master (recorded
        as :attr:`Master.fallback_from` and a FALLBACK card), or leave them without.
    chunks : int or mapping, optional
        Rows per band when opening frames (see :func:`daskred.open_frames`).

    Returns
    -------
    list of Master
        Bias masters first, then darks, then flats; nights served by a fallback get their
        own entries that share the source's lazy data.

    Raises
    ------
    ConfigError
        Unknown kind, dark mode, norm, fallback or combine option.
    HeaderError
        A dark without exposure time; frames of one group with different sections.
    CalibrationError
        At compute time, for a flat whose level is not positive (names the file).

    Notes
    -----
    Per night and setup (binning, raw shape): bias = combine(overscan/trimmed biases);
    dark = combine(darks - bias); flat = combine((flats - bias - dark * t/t_dark) / level),
    each flat divided by its own median (mean).  The bias and dark used for darks and flats
    are chosen with :func:`select_master` (nearest night when needed).  Does not compute:
    each master is a lazy graph; :func:`write_masters` computes them together.

    Examples
    --------
    >>> masters = make_masters(dr.scan("raw/"), combine_options={"bias": {"method": "median"}})  # doctest: +SKIP
    >>> bias = select_master(masters, science_row, kind="bias")  # doctest: +SKIP
    """
    for kind in kinds:
        if kind not in _KINDS:
            raise ConfigError(f"unknown kind {kind!r}; choose from {', '.join(map(repr, _KINDS))}")
    if darks not in get_args(DarkMode):
        raise ConfigError(f"unknown darks mode {darks!r}; choose one of {', '.join(map(repr, get_args(DarkMode)))}")
    if norm not in get_args(Norm):
        raise ConfigError(f"unknown norm {norm!r}; choose one of {', '.join(map(repr, get_args(Norm)))}")
    if fallback not in ("nearest", "none"):
        raise ConfigError(f"unknown fallback {fallback!r}; choose one of 'nearest', 'none'")
    options = _combine_options(combine_options)
    table = _as_collection(collection)
    setup = ["night", "binning", "shape"]
    all_nights = table[setup].drop_duplicates()

    def open_group(group: pd.DataFrame) -> tuple[xr.DataArray, list[tuple[str, Any]]]:
        return _prepare(open_frames(group, chunks=chunks), overscan, trim)

    masters: list[Master] = []

    # Bias: every night with frames of a setup needs one.
    biases: list[Master] = []
    if "bias" in kinds:
        rows = table[table["imagetyp"] == "bias"]
        for _, group in rows.groupby(setup, sort=True):
            frames, cards = open_group(group)
            biases.append(_master_from("bias", group, frames, options["bias"], cards, 0.0))
        if fallback == "nearest":
            needed = [(n, b, s, "") for n, b, s in all_nights.itertuples(index=False)]
            biases += _fallbacks(biases, needed, "bias")
    masters += biases

    def bias_for(group: pd.DataFrame, cards: list[tuple[str, Any]]) -> Master | None:
        row = group.iloc[0]
        try:
            found = select_master(biases, row, kind="bias", fallback=fallback == "nearest")
        except CalibrationError:
            if "bias" in kinds:
                warnings.warn(
                    f"no master bias for night {row['night']}, binning {row['binning']}, shape {row['shape']}: "
                    f"{row['imagetyp']} frames such as {row['path']} are not bias-subtracted",
                    DaskredWarning, stacklevel=3,
                )
            cards.append(("BIASCOR", "none"))
            return None
        cards.append(("BIASCOR", found.name))
        return found

    # Darks, bias-subtracted.
    dark_masters: list[Master] = []
    if "dark" in kinds:
        rows = table[table["imagetyp"] == "dark"]
        bad = rows[~np.isfinite(rows["exptime"].astype(float)) | (rows["exptime"].astype(float) <= 0)]
        if len(bad):
            raise HeaderError(
                f"dark frame(s) without a positive exposure time: {', '.join(map(str, bad['path'][:5]))}; "
                "fix EXPTIME (or map the keyword with scan(keywords={'exptime': [...]})) or leave them out"
            )
        keys = setup + (["exptime"] if darks == "per_exptime" else [])
        for _, group in rows.groupby(keys, sort=True):
            frames, cards = open_group(group)
            bias = bias_for(group, cards)
            if bias is not None:
                frames = subtract_bias(frames, bias.data)  # type: ignore[assignment]
            opts = dict(options["dark"])
            if darks == "scalable" and group["exptime"].nunique() > 1:
                opts.setdefault("scale", "exptime")
            t = float(group["exptime"].astype(float).mean())
            dark_masters.append(_master_from("dark", group, frames, opts, cards, t))
        if fallback == "nearest" and dark_masters:
            users = table[table["imagetyp"].isin(("flat", *_SCIENCE))]
            needed = [(n, b, s, "") for n, b, s in users[setup].drop_duplicates().itertuples(index=False)]
            dark_masters += _fallbacks(dark_masters, needed, "dark")
    masters += dark_masters

    # Flats per filter: bias/dark-corrected, each normalised, then combined.
    if "flat" in kinds:
        rows = table[table["imagetyp"] == "flat"]
        flats: list[Master] = []
        for _, group in rows.groupby([*setup, "filter"], sort=True):
            frames, cards = open_group(group)
            bias = bias_for(group, cards)
            if bias is not None:
                frames = subtract_bias(frames, bias.data)  # type: ignore[assignment]
            if dark_masters:
                t_flat = float(group["exptime"].astype(float).mean())
                try:
                    dark = select_master(
                        dark_masters, {**group.iloc[0].to_dict(), "exptime": t_flat}, kind="dark",
                        fallback=fallback == "nearest",
                    )
                except CalibrationError:
                    dark = None
                if dark is not None:
                    frames = subtract_dark(frames, dark.data, scale=True)  # type: ignore[assignment]
                    cards.append(("DARKCOR", dark.name))
            frames = _normalise_flats(frames, norm)
            cards.append(("FLATNORM", (norm, "each flat divided by its own level first")))
            t = float(group["exptime"].astype(float).mean())
            flats.append(_master_from("flat", group, frames, options["flat"], cards, t))
        if fallback == "nearest":
            users = table[table["imagetyp"].isin(_SCIENCE)]
            needed = [
                (n, b, s, f) for n, b, s, f in users[[*setup, "filter"]].drop_duplicates().itertuples(index=False)
            ]
            flats += _fallbacks(flats, needed, "flat")
        masters += flats
    return masters


def _frame_keys(frame: Any) -> dict[str, Any]:
    """night, binning, shape, filter, exptime (and path) of a scan-table row or mapping."""
    if isinstance(frame, pd.Series):
        return frame.to_dict()
    if isinstance(frame, Mapping):
        return dict(frame)
    raise ConfigError(
        f"frame must be a row of the daskred.scan() table or a mapping with 'night', 'binning', 'shape' "
        f"('NYxNX'), 'filter' and 'exptime', got {type(frame).__name__}"
    )


def select_master(
    masters: Sequence[Master],
    frame: pd.Series | Mapping[str, Any],
    *,
    kind: Kind,
    fallback: bool = True,
) -> Master:
    """Choose the master of ``kind`` that calibrates a frame.

    The master must share the frame's binning and raw shape (and filter, for flats).  Among
    those, the frame's own night is preferred, else (``fallback``) the nearest night, and
    the returned master then records ``fallback_from``.  For darks, the exposure time
    equal to the frame's is preferred, else the closest.

    Parameters
    ----------
    masters : sequence of Master
        From :func:`make_masters`.
    frame : pandas.Series or mapping
        A row of the :func:`daskred.scan` table, or a mapping with ``night``,
        ``binning``, ``shape`` (``"NYxNX"``), ``filter`` and ``exptime``.
    kind : {"bias", "dark", "flat"}
        Which master.
    fallback : bool
        Allow masters of other nights.

    Returns
    -------
    Master

    Raises
    ------
    CalibrationError
        No master of that kind fits the frame's setup (the message lists what exists).
    ConfigError
        Unknown ``kind`` or an unusable ``frame``.

    Examples
    --------
    >>> flat = select_master(masters, table.iloc[12], kind="flat")  # doctest: +SKIP
    """
    if kind not in _KINDS:
        raise ConfigError(f"unknown kind {kind!r}; choose from {', '.join(map(repr, _KINDS))}")
    keys = _frame_keys(frame)
    night = str(keys.get("night", ""))
    binning, shape = str(keys.get("binning", "1x1")), str(keys.get("shape", ""))
    filt = str(keys.get("filter", "")) if kind == "flat" else ""
    pool = [
        m for m in masters
        if m.kind == kind and m.binning == binning and m.shape == shape and (kind != "flat" or m.filter == filt)
    ]
    if not pool:
        have = sorted({f"{m.night} {m.binning} {m.shape}" + (f" {m.filter}" if m.kind == "flat" else "")
                       for m in masters if m.kind == kind})
        what = f"binning {binning}, shape {shape}" + (f", filter {filt!r}" if kind == "flat" else "")
        raise CalibrationError(
            f"no master {kind} for {what} (frame {keys.get('path', '')}); available: "
            f"{'; '.join(have) if have else 'none'}; add {kind} frames of that setup"
        )
    same_night = [m for m in pool if m.night == night]
    if not same_night:
        if not fallback:
            raise CalibrationError(
                f"no master {kind} for night {night} and fallback=False; nights with one: "
                f"{', '.join(sorted({m.night for m in pool}))}"
            )
        source = _nearest([m for m in pool if m.fallback_from is None] or pool, night)
        assert source is not None
        same_night = [m for m in pool if m.night == source.night]
    if kind == "dark":
        t = float(keys.get("exptime", math.nan))
        chosen = min(same_night, key=lambda m: (abs(m.exptime - t) if math.isfinite(t) else 0.0, -m.exptime))
    else:
        chosen = same_night[0]
    if chosen.night != night:
        chosen = _borrowed(chosen, night) if chosen.fallback_from is None else replace(chosen, night=night)
    return chosen


def write_masters(
    masters: Sequence[Master], folder: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Path]:
    """Compute all masters together and write each to ``folder/<name>.fits``.

    Borrowed (fallback) entries are not written again: their source's file serves them.

    Parameters
    ----------
    masters : sequence of Master
        From :func:`make_masters`.
    folder : path-like
        Output folder (created if needed).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    dict
        ``Master.name`` to the path written.

    Notes
    -----
    Computes.  Masters are single images, so they are computed in one pass (flats reuse
    the bias and dark results instead of recomputing them) and then written atomically
    with :func:`daskred.io.to_fits`.

    Examples
    --------
    >>> write_masters(masters, "reduced/masters")  # doctest: +SKIP
    """
    own = [m for m in masters if m.fallback_from is None]
    folder = Path(folder)
    (computed,) = dask.compute([m.data for m in own])
    written: dict[str, Path] = {}
    for master, image in zip(own, computed):
        written[master.name] = to_fits(image, folder / f"{master.name}.fits", header=master.header, overwrite=overwrite)
    return written

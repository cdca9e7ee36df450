"""The whole reduction: the one orchestrator, :func:`reduce`, and its report.

``reduce`` strings the stages together — scan, masters per night, calibration, cosmic
rays, background, registration per object and filter across nights, stacking, photometric
calibration — and writes the products in a fixed layout::

    OUT/masters/<night>/bias.fits, dark_<exptime>s.fits, flat_<filter>.fits
    OUT/calibrated/<night>/<input stem>.fits      (with keep_calibrated)
    OUT/stacks/<object>_<filter>.fits              (primary = image; COVERAGE, EXPOSURE extensions)
    OUT/photometry/zeropoints.csv                  (when standards are configured)
    OUT/quicklook/*.png                            (zscale previews of masters and stacks)
    OUT/report.json, OUT/report.md

It holds no numerics: every number comes from the stage modules.  Each stage's result is a
checkpoint in the cache (:class:`daskred.cache.Cache`), keyed by its inputs and parameters,
so a re-run computes only what changed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np
import pandas as pd
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS
from dask.base import tokenize

from . import __version__
from .cache import Cache, file_identity
from .cluster import progress, track_memory, use_cluster
from .collection import scan
from .combine import combine
from .config import PipelineConfig
from .errors import ConfigError, DaskredError, RegistrationError
from .io import open_frames, parse_section, to_fits

__all__ = ["Report", "reduce", "demo"]


# --------------------------------------------------------------------------- report
@dataclass
class Report:
    """What a reduction did: inputs, products, skipped files, zero points, timings."""

    out: Path
    inputs: int = 0
    nights: list[str] = field(default_factory=list)
    masters: list[dict[str, Any]] = field(default_factory=list)
    stacks: list[dict[str, Any]] = field(default_factory=list)
    calibrated: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    zeropoints: list[dict[str, Any]] = field(default_factory=list)
    extinction: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    quicklook: list[str] = field(default_factory=list)
    peak_memory_mb: float = 0.0
    seconds: float = 0.0
    scheduler: str = "threads"
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["out"] = str(self.out)
        data["version"] = __version__
        return data

    @property
    def text(self) -> str:
        lines = ["# daskred reduction report", "",
                 f"{self.inputs} input frames, nights {', '.join(self.nights) or '-'}; "
                 f"{self.seconds:.1f} s, peak memory {self.peak_memory_mb:.0f} MB ({self.scheduler}).", ""]
        lines += ["## Stages", "", "| stage | seconds | cached | peak memory of a worker (MiB) |", "|---|---:|---|---:|"]
        lines += [f"| {s['name']} | {s['seconds']:.2f} | {'yes' if s['cached'] else 'no'} | "
                  f"{s.get('peak_worker_mb', 0.0):.0f} |" for s in self.stages]
        lines += ["", "## Masters", ""]
        lines += [f"- {m['kind']} {m['night']} {m.get('filter') or ''} {m.get('exptime') or ''}: "
                  f"{m['path']} (NCOMBINE={m['ncombine']}{', from night ' + m['fallback_from'] if m.get('fallback_from') else ''})"
                  for m in self.masters]
        lines += ["", "## Stacks", ""]
        lines += [f"- {s['object']} {s['filter']}: {s['path']} ({s['nframes']} frames, {s['exptime']:.0f} s)"
                  for s in self.stacks]
        if self.zeropoints:
            lines += ["", "## Zero points", "", "| image | filter | night | airmass | zp | zp_err | nstars |",
                      "|---|---|---|---:|---:|---:|---:|"]
            lines += [f"| {z['image']} | {z['filter']} | {z['night']} | {z['airmass']:.3f} | {z['zp']:.3f} | "
                      f"{z['zp_err']:.3f} | {z['nstars']} |" for z in self.zeropoints]
        if self.extinction:
            lines += ["", "## Extinction", ""]
            lines += [f"- {e['night']} {e['filter']}: not fitted ({e['error']})" if "error" in e else
                      f"- {e['night']} {e['filter']}: zp0 = {e['zp0']:.3f} ± {e['zp0_err']:.3f}, "
                      f"k = {e['k']:.3f} ± {e['k_err']:.3f} ({e['nstars']} star measurements in {e['nimages']} "
                      f"images, {e['nrejected']} clipped)" for e in self.extinction]
        if self.skipped:
            lines += ["", "## Skipped", ""]
            lines += [f"- {s['path']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in (("report.json", json.dumps(self.to_dict(), indent=2, default=_json_default)),
                           ("report.md", self.text)):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


class _Stages:
    """Times each stage and records whether it came from the cache."""

    def __init__(self, report: Report, verbose: bool) -> None:
        self.report = report
        self.verbose = verbose

    @contextmanager
    def __call__(self, name: str) -> Iterator[dict[str, Any]]:
        record = {"name": name, "seconds": 0.0, "cached": True}
        start = time.perf_counter()
        with progress(f"[daskred] {name}" if self.verbose else "", enabled=self.verbose), track_memory() as memory:
            yield record
        record["seconds"] = round(time.perf_counter() - start, 3)
        record["peak_worker_mb"] = memory.peak_mb
        self.report.stages.append(record)


# --------------------------------------------------------------------------- helpers
def _combine_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if v == "" else v) for k, v in options.items()}


def _group_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text).strip()) or "unnamed"


def _identities(paths: Sequence[str]) -> list[Any]:
    return [file_identity(p) for p in paths]


def _header_wcs(path: str, hdu: int, trimsec: str, shape: tuple[int, int]) -> WCS | None:
    """Celestial WCS of a raw frame, moved to the trimmed pixel grid."""
    from .astrometry import repair_wcs_header

    header = repair_wcs_header(fits.getheader(path, hdu))
    try:
        wcs = WCS(header, naxis=2)
    except Exception:  # noqa: BLE001 - astropy raises many types for unusable WCS cards
        return None
    if not wcs.has_celestial:
        return None
    if trimsec:
        ys, xs = parse_section(trimsec, shape)
        wcs = wcs.slice((ys, xs))
    return wcs


def _write_product(obj: xr.DataArray | xr.Dataset, path: Path, header: fits.Header, key: str) -> None:
    """Write a product unless the file there already holds exactly this result.

    ``DRKEY`` ties a file to the cache key and header it was written from, so a re-run with
    nothing changed rewrites nothing; any change rewrites the whole file atomically.
    """
    header = header.copy()
    header["DRKEY"] = (tokenize(key, header.tostring()), "daskred product key")
    if path.is_file():
        try:
            if fits.getval(path, "DRKEY") == header["DRKEY"]:
                return
        except (OSError, KeyError):
            pass
    to_fits(obj, path, header=header, overwrite=True)


def _frame_wcs(path: str) -> WCS | None:
    """WCS of a raw frame on the calibrated (trimmed) grid; the raw header gives the trim."""
    raw = scan([path], on_error="raise").iloc[0]
    return _header_wcs(path, int(raw["hdu"]), str(raw["trimsec"] or raw["datasec"]), (int(raw["ny"]), int(raw["nx"])))


def _frame_rows(ds: xr.Dataset) -> list[dict[str, Any]]:
    coords = [c for c in ("path", "night", "filter", "object", "exptime", "airmass", "imagetyp") if c in ds.coords]
    values = {c: list(ds.coords[c].values) for c in coords}
    return [{c: values[c][i] for c in coords} for i in range(ds.sizes["frame"])]


# --------------------------------------------------------------------------- stages
def _masters_stage(table: pd.DataFrame, config: PipelineConfig, cache: Cache, out: Path,
                   report: Report, stage: dict[str, Any]) -> list[Any]:
    from .masters import make_masters

    options = {"bias": _combine_options(config.masters.bias), "dark": _combine_options(config.masters.dark),
               "flat": _combine_options(config.masters.flat)}
    calib = config.calibrate
    masters = make_masters(table, overscan=calib.overscan or None, trim=calib.trim or None,
                           darks=config.masters.darks, norm=config.masters.norm, combine_options=options)
    cached_all = True
    loaded = []
    for master in masters:
        key = cache.key("masters", master.kind, master.night, master.filter, master.exptime, master.binning,
                        master.shape, _identities(master.inputs), dataclasses.asdict(config.masters),
                        calib.overscan, calib.trim)
        ds, cached = cache.checkpoint(key, lambda m=master: m.data.rename("data").to_dataset())
        cached_all &= cached
        data = ds["data"]
        data.attrs["cache_key"] = key  # calibrated frames are keyed by their masters' keys
        loaded.append(dataclasses.replace(master, data=data))
    setups = pd.Series([(m.night, m.binning, m.shape) for m in loaded]).drop_duplicates()
    several = set(setups.map(lambda t: t[0])[setups.map(lambda t: t[0]).duplicated()])
    written = {}
    for master in loaded:
        if master.fallback_from:
            continue
        path = out / "masters" / master.night / _master_filename(master, with_setup=master.night in several)
        _write_product(master.data, path, master.header, master.data.attrs["cache_key"])
        written[(master.kind, master.night, master.binning, master.shape, master.filter, master.exptime)] = path
    for master in loaded:
        source_night = master.fallback_from or master.night
        path = written.get((master.kind, source_night, master.binning, master.shape, master.filter, master.exptime))
        report.masters.append({
            "path": str(path), "kind": master.kind, "night": master.night, "filter": master.filter,
            "exptime": master.exptime, "ncombine": len(master.inputs), "fallback_from": master.fallback_from,
        })
    stage["cached"] = cached_all
    return loaded


def _master_filename(master: Any, *, with_setup: bool = False) -> str:
    """``bias.fits``, ``dark_<t>s.fits``, ``flat_<filter>.fits``; ``_<binning>_<shape>`` is
    appended when a night holds several readout setups."""
    if master.kind == "bias":
        stem = "bias"
    elif master.kind == "dark":
        stem = "dark" if master.exptime is None or math.isnan(master.exptime) else f"dark_{master.exptime:g}s"
    else:
        stem = f"flat_{_group_name(master.filter)}"
    return f"{stem}_{master.binning}_{master.shape}.fits" if with_setup else f"{stem}.fits"


def _timed(record: dict[str, Any], cache: Cache, key: str, build: Any) -> xr.Dataset:
    start = time.perf_counter()
    with track_memory() as memory:
        ds, cached = cache.checkpoint(key, build)
    record["seconds"] = round(record["seconds"] + time.perf_counter() - start, 3)
    record["peak_worker_mb"] = max(record.get("peak_worker_mb", 0.0), memory.peak_mb)
    record["cached"] &= cached
    return ds


def _reduce_group(rows: pd.DataFrame, masters: list[Any], config: PipelineConfig, cache: Cache,
                  times: dict[str, dict[str, Any]]) -> xr.Dataset:
    """Calibrate, clean and background-subtract one night/filter/setup group of frames."""
    from .background import subtract_background
    from .calibrate import calibrate
    from .cosmics import cosmics_halo, detect_cosmics
    from .masters import select_master

    first = rows.iloc[0]
    chosen = {}
    for kind in ("bias", "dark", "flat"):
        try:
            chosen[kind] = select_master(masters, first, kind=kind)
        except DaskredError:
            if any(m.kind == kind for m in masters):
                raise  # other setups have one: calibrating this group without it would be wrong
            chosen[kind] = None
    calib = config.calibrate
    ids = _identities(list(rows["path"]))
    master_keys = [None if m is None else m.data.attrs["cache_key"] for m in chosen.values()]
    key_cal = cache.key("calibrated", ids, master_keys, dataclasses.asdict(calib))

    def build_calibrated() -> xr.Dataset:
        # per-frame work: bands of ~4 MiB whatever the number of frames (open_frames' default
        # shrinks bands as frames are added, which suits a combine, not calibration)
        frames = open_frames(rows, chunks=max(16, (4 * 2**20) // (4 * int(rows["nx"].iloc[0]))))
        return calibrate(frames, bias=chosen["bias"], dark=chosen["dark"], flat=chosen["flat"],
                         overscan=calib.overscan or None, trim=calib.trim or None, norm=calib.norm,
                         gain=calib.gain, rdnoise=calib.rdnoise, bad_pixels=calib.bad_pixels)

    ds = _timed(times["calibrate"], cache, key_cal, build_calibrated)
    key = key_cal
    if config.cosmics.enabled:
        cos = config.cosmics
        key = cache.key("cosmics", key, dataclasses.asdict(cos))

        def build_cosmics(ds=ds) -> xr.Dataset:
            # bands of about 8 MiB (1024 rows of a 2048-wide frame): the 41-row halo of
            # L.A.Cosmic then costs ~8 % instead of doubling the work of thin bands, and memory
            # stays below whole-frame tasks' (benchmarks/bench_cosmics_background.py)
            ny, nx = ds.sizes["y"], ds.sizes["x"]
            rows = min(ny, max(8 * cosmics_halo(niter=cos.niter), (8 * 2**20) // (4 * nx)))
            ds = ds.chunk({"frame": 1, "y": rows})
            cleaned = detect_cosmics(ds, sigclip=cos.sigclip, sigfrac=cos.sigfrac, objlim=cos.objlim,
                                     niter=cos.niter, fsmode=cos.fsmode, psfmodel=cos.psfmodel,
                                     psffwhm=cos.psffwhm,
                                     gain=1.0 if ds.attrs.get("units") == "electron" else None)
            out = ds.copy()
            out["data"] = cleaned["data"]
            out["mask"] = ds["mask"] | cleaned["mask"]
            out["cosmics"] = cleaned["mask"]
            return out

        ds = _timed(times["cosmics"], cache, key, build_cosmics)
    if config.background.enabled:
        bg = config.background
        key = cache.key("background", key, dataclasses.asdict(bg))

        def build_background(ds=ds) -> xr.Dataset:
            out = ds.copy()
            out["data"] = subtract_background(ds["data"], method=bg.method, box_size=bg.box_size,
                                              filter_size=bg.filter_size, mask=ds["mask"],
                                              exclude_percentile=bg.exclude_percentile)
            return out

        ds = _timed(times["background"], cache, key, build_background)
    ds.attrs["cache_key"] = key
    return ds


def _stack_stage(groups: list[xr.Dataset], obj: str, filt: str, config: PipelineConfig, cache: Cache,
                 out: Path, report: Report, record: dict[str, Any], *,
                 suffix: str = "") -> tuple[xr.Dataset, fits.Header, str]:
    """Register, resample and combine one object/filter; returns (stack, header, cache key).

    The stack is written by the orchestrator once the zero points are known (PHOTZP).
    """
    from .align import find_transforms
    from .resample import apply_transforms

    cube = xr.concat(groups, dim="frame", data_vars="all", coords="minimal", compat="override",
                     join="override")
    paths = [str(p) for p in cube.coords["path"].values]
    key_in = [g.attrs["cache_key"] for g in groups]
    align = config.align
    if align.enabled and cube.sizes["frame"] > 1:
        key_t = cache.key("transforms", key_in, dataclasses.asdict(align))

        def compute_transforms() -> dict[str, Any]:
            table = find_transforms(cube["data"], method=align.method, on_failure="skip")
            result = {"matrix": [np.asarray(m).tolist() for m in table["matrix"]],
                      "status": list(table["status"]), "reason": [str(r) for r in table["reason"]],
                      "method": [align.method] * len(table)}
            failed = [i for i, status in enumerate(result["status"]) if status != "ok"]
            if failed and align.method == "asterism":
                # few-star frames: fall back to FFT cross-correlation (shifts only) against the reference
                retry = find_transforms(cube["data"].isel(frame=[0, *failed]), method="xcorr", on_failure="skip")
                for i, (_, row) in zip(failed, list(retry.iterrows())[1:]):
                    if row["status"] == "ok":
                        result["matrix"][i] = np.asarray(row["matrix"]).tolist()
                        result["status"][i] = "ok"
                        result["method"][i] = "xcorr"
                    else:
                        result["reason"][i] += f"; cross-correlation fallback: {row['reason']}"
            return result

        transforms, cached = cache.memo(key_t, compute_transforms)
        record["cached"] &= cached
        ok = [i for i, s in enumerate(transforms["status"]) if s == "ok"]
        for i, reason in enumerate(transforms["reason"]):
            if transforms["status"][i] != "ok":
                report.skipped.append({"path": paths[i], "reason": f"not registered: {reason}"})
        if not ok:
            raise RegistrationError(f"no frame of {obj} {filt} could be registered; see the report")
        cube = cube.isel(frame=ok)
        matrices = [np.asarray(transforms["matrix"][i]) for i in ok]
        aligned = apply_transforms(cube["data"], matrices, output_grid=align.output_grid,
                                   interpolation=align.interpolation, masks=cube["mask"])
        data = aligned["data"]
        footprint = aligned["footprint"]
        x0, y0 = float(aligned["x"].values[0]), float(aligned["y"].values[0])
    else:
        data = cube["data"].where(~cube["mask"])
        footprint = xr.ones_like(cube["data"], dtype=bool)
        x0 = y0 = 0.0
    stack_cfg = config.stack
    key_s = cache.key("stacks", key_in, dataclasses.asdict(align), dataclasses.asdict(stack_cfg))
    exptime = np.asarray(cube.coords["exptime"].values, dtype=float)

    def build_stack() -> xr.Dataset:
        image = combine(data, method=stack_cfg.method, clip=stack_cfg.clip or None, sigma=stack_cfg.sigma,
                        maxiters=stack_cfg.maxiters)
        weights = xr.DataArray(exptime, dims="frame")
        return xr.Dataset({
            "image": image,
            "coverage": footprint.sum("frame").astype(np.int16),
            "exposure": (footprint * weights).sum("frame").astype(np.float32),
        })

    stack, cached = cache.checkpoint(key_s, build_stack)
    stack = stack[["image", "coverage", "exposure"]]  # primary HDU first, then the maps
    record["cached"] &= cached
    first = cube.isel(frame=0)
    ref_path = str(first.coords["path"].values)
    header = fits.Header()
    header["OBJECT"] = obj
    header["FILTER"] = filt
    header["EXPTIME"] = (float(np.mean(exptime)), "exposure time of one frame (image scale)")
    header["TEXPTIME"] = (float(np.sum(exptime)), "total exposure time, s")
    header["NCOMBINE"] = (int(cube.sizes["frame"]), "frames stacked")
    header["STACKMTH"] = (stack_cfg.method, "stack method")
    header["STACKCLP"] = (str(stack_cfg.clip or "none"), "stack rejection")
    header["NIGHTS"] = ",".join(sorted(set(map(str, cube.coords["night"].values))))
    header["BUNIT"] = str(groups[0].attrs.get("units", "adu"))
    wcs = _frame_wcs(ref_path)
    if wcs is not None:
        wcs.wcs.crpix = wcs.wcs.crpix - np.array([x0, y0])
        header.update(wcs.to_header(relax=True))
    for p in paths:
        header.add_history(f"input: {p}")
    path = out / "stacks" / f"{_group_name(obj)}_{_group_name(filt)}{suffix}.fits"
    report.stacks.append({"path": str(path), "object": obj, "filter": filt, "nframes": int(cube.sizes["frame"]),
                          "exptime": float(np.sum(exptime)), "nights": header["NIGHTS"].split(",")})
    return stack, header, key_s


def _photometry_stage(standards: list[xr.Dataset], config: PipelineConfig, cache: Cache, out: Path,
                      report: Report, record: dict[str, Any]) -> None:
    from astropy.table import Table

    from .errors import CalibrationError
    from .photometry import aperture_photometry, read_standards
    from .zeropoint import ZeroPoint, fit_extinction, write_zeropoints, zero_point

    catalog = read_standards(config.photometry.standards)
    phot_cfg = config.photometry
    results = []
    for ds in standards:
        for i, row in enumerate(_frame_rows(ds)):
            key = cache.key("zeropoints", ds.attrs["cache_key"], i, dataclasses.asdict(phot_cfg),
                            file_identity(config.photometry.standards), "with-stars")

            def measure(ds=ds, i=i, row=row) -> dict[str, Any]:
                image = ds["data"].isel(frame=i)
                wcs = _frame_wcs(row["path"])
                if wcs is None:
                    return {"error": "no celestial WCS in the header"}
                try:
                    table = aperture_photometry(image, catalog, wcs=wcs, variance=ds["variance"].isel(frame=i)
                                                if "variance" in ds else None, mask=ds["mask"].isel(frame=i),
                                                radius=phot_cfg.radius, annulus=phot_cfg.annulus,
                                                radius_unit=phot_cfg.radius_unit)
                    zp = zero_point(table, catalog, filter=row["filter"], exptime=float(row["exptime"]),
                                    airmass=float(row["airmass"]))
                except DaskredError as err:
                    return {"error": str(err)}
                stars = {name: [_json_scalar(v) for v in zp.stars[name]] for name in ("zp", "zp_err", "status")}
                stars["name"] = [str(v) for v in zp.stars["name"]] if "name" in zp.stars.colnames else []
                return {"zp": zp.zp, "zp_err": zp.zp_err, "nstars": zp.nstars, "nrejected": zp.nrejected,
                        "airmass": float(row["airmass"]), "exptime": float(row["exptime"]), "stars": stars}

            value, cached = cache.memo(key, measure)
            record["cached"] &= cached
            if "error" in value:
                report.skipped.append({"path": row["path"], "reason": f"no zero point: {value['error']}"})
                continue
            results.append({"image": Path(row["path"]).stem, "object": row["object"], "filter": row["filter"],
                            "night": row["night"], "airmass": value["airmass"], "zp": value["zp"],
                            "zp_err": value["zp_err"], "nstars": value["nstars"], "nrejected": value["nrejected"],
                            "exptime": value["exptime"], "stars": value["stars"]})
    if not results:
        return
    write_zeropoints([{k: v for k, v in r.items() if k not in ("stars", "nrejected", "exptime")} for r in results],
                     out / "photometry" / "zeropoints.csv")
    report.zeropoints = [{k: v for k, v in r.items() if k != "stars"} for r in results]
    for (night, filt), group in _group_by(results, ("night", "filter")).items():
        if len({round(r["airmass"], 6) for r in group}) < 2:
            continue
        zero_points = [ZeroPoint(zp=r["zp"], zp_err=r["zp_err"], nstars=r["nstars"], nrejected=r["nrejected"],
                                 filter=r["filter"], exptime=r["exptime"], airmass=r["airmass"], method="",
                                 stars=Table(r["stars"])) for r in group]
        try:
            fit = fit_extinction(zero_points)
        except CalibrationError as err:
            report.extinction.append({"night": night, "filter": filt, "error": str(err)})
            continue
        report.extinction.append({"night": night, "filter": filt, "zp0": fit.zp0, "zp0_err": fit.zp0_err,
                                  "k": fit.k, "k_err": fit.k_err, "nstars": fit.nstars,
                                  "nrejected": fit.nrejected, "nimages": fit.nimages})


def _json_scalar(value: Any) -> Any:
    """A table cell as a JSON value (numpy scalars to Python)."""
    return value.item() if isinstance(value, np.generic) else value


def _group_by(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return dict(sorted(groups.items()))


# --------------------------------------------------------------------------- orchestrator
def reduce(
    raw: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike,
    config: PipelineConfig | None = None,
    cache: str | os.PathLike | None = "auto",
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    scheduler: str | None = None,
    on_error: Literal["skip", "raise"] = "skip",
    verbose: bool = True,
) -> Report:
    """Reduce a directory (or several) of raw frames end to end.

    Parameters
    ----------
    raw : path or sequence of paths
        Folders, globs or files of raw frames from one or many nights.
    out : path-like
        Output folder (layout in the module docstring).
    config : PipelineConfig, optional
        Settings; the defaults of ``daskred config``.
    cache : path-like, "auto" or None
        Checkpoint folder or fsspec URL (``s3://bucket/cache``; see :mod:`daskred.cache`);
        ``"auto"`` is ``OUT/.cache``; None disables caching.
    workers, threads_per_worker, memory_limit : optional
        Start a ``distributed.LocalCluster`` of that size for the run.
    scheduler : str, optional
        Address of a running dask scheduler (``tcp://host:8786``).
    on_error : {"skip", "raise"}
        Unreadable inputs and unregistrable frames are skipped and listed in the report,
        or raise.
    verbose : bool
        Progress bars and stage names on stderr.

    Returns
    -------
    Report
        Also written as ``OUT/report.json`` and ``OUT/report.md``.

    Notes
    -----
    Computes: this is the one place that runs the stage graphs, stage by stage, each into
    its cache checkpoint.
    """
    config = config or PipelineConfig()
    out = Path(out).absolute()  # cluster workers may run in another folder: graphs carry absolute paths
    raws = [os.path.abspath(r) for r in ([raw] if isinstance(raw, (str, os.PathLike)) else list(raw))]
    started = time.perf_counter()
    report = Report(out=out, config=config.to_dict())
    stages = _Stages(report, verbose)
    store = Cache(out / ".cache" if cache == "auto" else cache, version=__version__)
    # Every rechunk here is local (frames <-> bands of rows); dask would switch large ones to
    # peer-to-peer rechunking on a cluster, which buffers whole transfers instead of one
    # block per task: a 440-frame stack then killed a 1 GiB worker (benchmarks/reduce_memory.py).
    with dask.config.set({"array.rechunk.method": "tasks"}), \
            use_cluster(workers=workers, threads_per_worker=threads_per_worker, memory_limit=memory_limit,
                        scheduler=scheduler, verbose=verbose) as where:
        report.scheduler = where
        with stages("scan") as record:
            col = config.collection
            table = scan(raws, keywords=col.keywords, classes=col.classes, standards=col.standards,
                         night_offset=col.night_offset, on_error=on_error, check="pixels")
            # our own products (OUT inside a raw folder) are neither inputs nor worth a "skipped" line
            ours = table["path"].map(lambda p: Path(p).resolve().is_relative_to(out.resolve()))
            skipped = [(p, r) for p, r in table.attrs.get("skipped", [])
                       if not Path(p).resolve().is_relative_to(out.resolve())]
            table = table[~ours.astype(bool)] if len(table) else table
            report.inputs = int(len(table))
            report.skipped += [{"path": p, "reason": r} for p, r in skipped]
            unknown = table[table.imagetyp == "unknown"]
            report.skipped += [{"path": p, "reason": r} for p, r in zip(unknown.path, unknown.classified_by)]
            table = table[table.imagetyp != "unknown"]
            report.nights = sorted(n for n in table["night"].unique() if n)
            record["cached"] = False
        if table.empty:
            raise ConfigError(f"no usable frames found in {', '.join(map(str, raws))}")
        with stages("masters") as record:
            masters = _masters_stage(table, config, store, out, report, record)
        science = table[table.imagetyp.isin(["light", "standard"])]
        times = {name: {"name": name, "seconds": 0.0, "cached": True} for name in ("calibrate", "cosmics", "background")}
        reduced: dict[tuple[str, str], list[xr.Dataset]] = {}
        standards: list[xr.Dataset] = []
        with progress("[daskred] calibrate, cosmics, background" if verbose else "", enabled=verbose):
            for (night, filt, binning, shape, kind, obj), rows in science.groupby(
                    ["night", "filter", "binning", "shape", "imagetyp", "object"], sort=True):
                try:
                    ds = _reduce_group(rows, masters, config, store, times)
                except DaskredError as err:
                    if on_error == "raise":
                        raise
                    report.skipped += [{"path": p, "reason": f"not reduced: {err}"} for p in rows["path"]]
                    continue
                if config.output.keep_calibrated:
                    _write_calibrated(ds, out, report)
                if kind == "standard":
                    standards.append(ds)
                else:
                    reduced.setdefault((obj, filt, binning, shape), []).append(ds)
        report.stages += [times[name] for name in ("calibrate", "cosmics", "background")
                          if name == "calibrate" or getattr(config, name).enabled]
        pending = []
        with stages("stack") as record:
            setups = pd.Series([key[:2] for key in reduced])
            for (obj, filt, binning, shape), groups in sorted(reduced.items()):
                suffix = f"_{binning}_{shape}" if (setups == (obj, filt)).sum() > 1 else ""
                try:
                    pending.append(_stack_stage(groups, obj, filt, config, store, out, report, record,
                                                suffix=suffix))
                except RegistrationError as err:
                    if on_error == "raise":
                        raise
                    report.skipped.append({"path": f"{obj}_{filt}", "reason": str(err)})
        if config.photometry.standards and standards:
            with stages("photometry") as record:
                _photometry_stage(standards, config, store, out, report, record)
        for entry, (stack, header, key) in zip(report.stacks, pending):
            _write_product(stack, Path(entry["path"]), _with_photzp(header, entry, report), key)
        if config.output.quicklook:
            with stages("quicklook") as record:
                _quicklook(report, out)
                record["cached"] = False
    report.seconds = round(time.perf_counter() - started, 3)
    report.peak_memory_mb = round(_peak_mb(), 1)
    report.write()
    return report


def _write_calibrated(ds: xr.Dataset, out: Path, report: Report) -> None:
    for i, row in enumerate(_frame_rows(ds)):
        path = out / "calibrated" / str(row["night"]) / f"{Path(row['path']).stem}.fits"
        frame = ds.isel(frame=i).drop_vars([c for c in ds.coords if c not in ()], errors="ignore")
        header = fits.Header({"IMAGETYP": "calibrated", "ORIGFILE": Path(row["path"]).name})
        _write_product(frame, path, header, f"{ds.attrs['cache_key']}-{i}")
        report.calibrated.append(str(path))


def _with_photzp(header: fits.Header, stack: dict[str, Any], report: Report) -> fits.Header:
    """Add PHOTZP: the weighted mean zero point of the standards in the stack's filter."""
    from .zeropoint import set_photzp

    table = pd.DataFrame(report.zeropoints)
    if table.empty or not (table["filter"] == stack["filter"]).any():
        return header
    sel = table[table["filter"] == stack["filter"]]
    w = 1.0 / np.maximum(sel["zp_err"].to_numpy(float), 1e-4) ** 2
    zp = float(np.sum(w * sel["zp"]) / np.sum(w))
    err = float(1.0 / math.sqrt(np.sum(w)))
    stack["photzp"] = zp
    return set_photzp(header, zp, zp_err=err, method="standards, weighted mean",
                      nstars=int(sel["nstars"].sum()))


def _quicklook(report: Report, out: Path) -> None:
    folder = out / "quicklook"
    for entry in report.masters:
        if entry.get("fallback_from") or not entry["path"]:
            continue
        name = f"{entry['kind']}_{entry['night']}_{entry.get('filter') or ''}".rstrip("_")
        path = folder / f"{_group_name(name)}.png"
        _preview(entry["path"], path, name)
        report.quicklook.append(str(path))
    for entry in report.stacks:
        path = folder / f"{Path(entry['path']).stem}.png"
        _preview(entry["path"], path, f"{entry['object']} {entry['filter']}")
        report.quicklook.append(str(path))


def _preview(source: str, path: Path, title: str) -> None:
    """Quick-look PNG of a FITS product, redrawn only when the product is newer."""
    from .plotting import zscale_png

    if path.is_file() and path.stat().st_mtime_ns >= Path(source).stat().st_mtime_ns:
        return
    zscale_png(fits.getdata(source), path, title=title)


def demo(directory: str | os.PathLike = "daskred-demo", *, overwrite: bool = True, verbose: bool = True) -> Report:
    """Simulate a small two-night, two-filter dataset and reduce it end to end."""
    from .simulate import simulate

    directory = Path(directory)
    sim = simulate(directory, overwrite=overwrite)
    config = PipelineConfig().replace(photometry={"standards": str(sim.standards_path)})
    report = reduce(sim.raw_dir, out=directory / "reduced", config=config, verbose=verbose)
    return report

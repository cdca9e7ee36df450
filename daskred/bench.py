"""Benchmark combine strategies side by side: speed, memory and quality.

:func:`run` combines the same frames with several strategies (median, mean, sigma / MAD /
min-max / winsorized / CCD-noise clipping ...) and reports, for each one, the wall time,
throughput, CPU use and peak memory, and — on simulated frames whose truth is known —
the noise of the result relative to the ideal sigma/sqrt(N), its bias, the fraction of
injected cosmic rays, satellite-trail and hot pixels that survive, the fraction of good
pixels wrongly rejected and the signal-to-noise of faint stars.  Baselines run in the same
benchmark on the same files: numpy/bottleneck on an in-memory cube and
``ccdproc.combine`` with matching settings, so every figure is also a ratio, and their
results are compared with daskred's (maximum relative difference).

This module holds the settings and their checks, the run of the main table and the
sweeps, the report (:class:`BenchResult`: JSON, markdown, PNG plots) and ``daskred bench``
(:func:`main`).  Each run is measured by :mod:`daskred.bench_measure` (in a fresh Python
process with ``isolate=True``, so its peak memory and CPU time are its own); the
simulated frames and the quality figures come from :mod:`daskred.bench_quality`.

>>> import daskred as dr
>>> result = dr.bench.run(frames=20, size=(512, 768), out="bench/")     # doctest: +SKIP
>>> print(result.to_markdown())                                         # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import numpy as np

from .bench_measure import (
    _add_ratios,
    _agreement,
    _available_memory,
    _ccdproc_settings,
    _Dataset,
    _machine,
    _ncores,
    _numpy_supported,
    _Runner,
)
from .bench_quality import _KINDS, _SIGNIFICANT, _VISIBLE, _simulate

__all__ = ["run", "main", "BenchResult", "STRATEGIES", "DEFAULT_METHODS", "Scheduler", "Sweep", "Baseline"]

Scheduler = Literal["threads", "processes", "distributed"]
Sweep = Literal["frames", "size", "chunks", "scheduler"]
Baseline = Literal["numpy", "ccdproc"]

#: Named combine strategies: keyword arguments of :func:`daskred.combine`.
STRATEGIES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "mean": MappingProxyType({"method": "mean"}),
    "median": MappingProxyType({"method": "median"}),
    "sigma": MappingProxyType({"method": "mean", "clip": "sigma", "sigma": 3.0, "maxiters": 5,
                               "cenfunc": "median", "stdfunc": "std"}),
    "mad": MappingProxyType({"method": "mean", "clip": "mad", "sigma": 3.0, "maxiters": 5}),
    "minmax": MappingProxyType({"method": "mean", "clip": "minmax", "nlow": 1, "nhigh": 1}),
    "percentile": MappingProxyType({"method": "mean", "clip": "percentile", "percentiles": (10.0, 90.0)}),
    "winsorized": MappingProxyType({"method": "mean", "clip": "winsorized", "sigma": 3.0, "maxiters": 5}),
    "ccdclip": MappingProxyType({"method": "mean", "clip": "ccdclip", "sigma": 3.0, "maxiters": 5}),
})
#: Strategies run by default.
DEFAULT_METHODS = ("mean", "median", "sigma", "mad", "minmax", "winsorized", "ccdclip")


# =========================================================================== the benchmark
@dataclass(frozen=True)
class BenchResult:
    """Every figure of one benchmark run.

    Attributes
    ----------
    config : dict
        The settings of the run (frames, size, strategies, scheduler ...).
    machine : dict
        Platform, CPU, cores, memory, package versions and load averages.
    rows : list of dict
        One row per (strategy, implementation) on the main data set: time, throughput,
        CPU use, peak memory, ratios to the baselines, quality figures, agreement.
    sweeps : dict of str to list of dict
        Rows of each sweep ("frames", "size", "chunks", "scheduler").
    truth : dict or None
        Description of the simulated data (None for the user's frames).
    notes : list of str
        What was skipped and why, and how figures are defined.
    files : dict of str to str
        Files written (JSON, markdown, PNG plots).
    """

    config: dict[str, Any]
    machine: dict[str, Any]
    rows: list[dict[str, Any]]
    sweeps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    truth: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-compatible values (NaN and inf become None)."""
        return _jsonable({"config": self.config, "machine": self.machine, "truth": self.truth,
                          "rows": self.rows, "sweeps": self.sweeps, "notes": self.notes, "files": self.files})

    def to_json(self) -> str:
        """Every figure and the machine description as a JSON document."""
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        """Markdown tables: speed and memory, quality, then one table per sweep."""
        return _markdown(self)

    def summary(self) -> str:
        """A short ranked summary of the daskred strategies, for the terminal."""
        return _summary(self)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _validate(data: Any, frames: int, size: tuple[int, int], methods: Any, chunks: Sequence[int | None],
              scheduler: str, sweep: Sequence[str], baselines: Sequence[str], repeat: int,
              workers: int | None) -> dict[str, dict[str, Any]]:
    import inspect

    import xarray as xr

    from .combine import combine
    from .errors import ConfigError

    def choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}")

    choice("scheduler", scheduler, get_args(Scheduler))
    for s in sweep:
        choice("sweep", s, get_args(Sweep))
    for b in baselines:
        choice("baselines", b, get_args(Baseline))
    if int(frames) < 3:
        raise ConfigError(f"frames must be at least 3 to compare rejection strategies, got {frames}")
    if len(size) != 2 or min(int(n) for n in size) < 16:
        raise ConfigError(f"size must be (rows, columns), each at least 16, got {size!r}")
    if int(repeat) < 1:
        raise ConfigError(f"repeat must be at least 1, got {repeat}")
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if not chunks:
        raise ConfigError("chunks needs at least one band height (or None for combine's memory budget)")
    for band in chunks:
        if band is not None and int(band) < 1:
            raise ConfigError(f"band heights in chunks must be positive rows or None, got {band!r}")
    if data is not None and "size" in sweep:
        raise ConfigError("sweep='size' needs simulated frames; drop --data or the size sweep")
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        strategies = {str(k): dict(v) for k, v in methods.items()}
    else:
        unknown = [m for m in methods if m not in STRATEGIES]
        if unknown:
            raise ConfigError(f"unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)} "
                              "(or pass a mapping of names to daskred.combine keywords)")
        strategies = {m: dict(STRATEGIES[m]) for m in methods}
    if not strategies:
        raise ConfigError("methods is empty: name at least one strategy, e.g. methods=('median', 'sigma')")
    allowed = set(inspect.signature(combine).parameters) - {"frames", "with_counts", "band"}
    tiny = xr.DataArray(np.zeros((3, 2, 2), np.float32), dims=("frame", "y", "x"))
    for name, options in strategies.items():
        bad = sorted(set(options) - allowed)
        if bad:
            raise ConfigError(f"strategy {name!r}: {bad[0]!r} is not a daskred.combine keyword; "
                              f"use {', '.join(sorted(allowed))}")
        trial = {**options, **({"gain": 1.0, "rdnoise": 1.0} if options.get("clip") == "ccdclip" else {})}
        try:
            combine(tiny, **trial)  # builds a graph only: checks every value
        except ConfigError as err:
            raise ConfigError(f"strategy {name!r}: {err}") from err
    return strategies


def _user_dataset(data: Any) -> _Dataset:
    from .collection import scan
    from .errors import ConfigError, FitsFileError

    table = scan(data if isinstance(data, (str, os.PathLike)) else list(data), on_error="skip")
    if table.empty:
        raise FitsFileError(f"no FITS frames found in {data}; point --data at a folder of FITS images")
    if table["path"].duplicated().any():
        raise ConfigError(f"files in {data} hold several image HDUs; benchmark a folder of single-image files")
    shapes = list(zip(table["ny"].astype(int), table["nx"].astype(int)))
    common = max(set(shapes), key=shapes.count)
    keep = [s == common for s in shapes]
    table = table[keep].sort_values("path")
    if len(table) < 3:
        raise ConfigError(f"{data}: need at least 3 frames of one shape, found {len(table)} of {common[0]}x{common[1]}")
    ccd = all(c in table.columns for c in ("gain", "rdnoise")) and all(
        np.isfinite(table[c].astype(float)).all() and table[c].astype(float).nunique() == 1 for c in ("gain", "rdnoise"))
    paths = tuple((str(p), int(h)) for p, h in zip(table["path"], table["hdu"]))
    return _Dataset(key=f"data:{data}", paths=paths, shape=common, truth=None, ccd_model=bool(ccd))


def run(
    data: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    frames: int = 20,
    size: tuple[int, int] = (512, 768),
    methods: Sequence[str] | Mapping[str, Mapping[str, Any]] = DEFAULT_METHODS,
    chunks: Sequence[int | None] = (None,),
    scheduler: Scheduler = "threads",
    workers: int | None = None,
    sweep: Sequence[Sweep] = ("frames",),
    baselines: Sequence[Baseline] = ("numpy", "ccdproc"),
    out: str | os.PathLike | None = "daskred-bench",
    repeat: int = 1,
    isolate: bool = True,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Benchmark combine strategies on the same frames: speed, memory and quality.

    Parameters
    ----------
    data : path, glob or list of paths, optional
        The user's frames (one image HDU per file; the most common shape is used).  By
        default ``frames`` frames of ``size`` are simulated with known truth.
    frames : int
        Number of simulated frames.
    size : (int, int)
        Rows and columns of a simulated frame.
    methods : sequence of str or mapping
        Strategy names from :data:`STRATEGIES`, or a mapping of names to
        :func:`daskred.combine` keywords.
    chunks : sequence of int or None
        Band heights (rows per combine block); None lets :func:`daskred.combine` choose from
        its memory budget.  The main table uses the first; the ``chunks`` sweep runs them
        all (a default ladder when only one is given).
    scheduler : {"threads", "processes", "distributed"}
        Where daskred's graph runs: the threaded scheduler, a pool of processes, or a
        ``distributed.LocalCluster`` (one thread per worker process).
    workers : int, optional
        Threads or processes; default: the cores available to this process.
    sweep : sequence of {"frames", "size", "chunks", "scheduler"}
        Sweeps to run after the main table (for the first two strategies among median and
        sigma, or the first two given): number of frames (N/4, N/2, N), frame size (half,
        same, double each side), band height, and scheduler.
    baselines : sequence of {"numpy", "ccdproc"}
        Baselines run with matching settings where one exists (numpy on an in-memory cube
        only when it fits comfortably in the memory available).
    out : path-like or None
        Folder for ``bench.json``, ``bench.md`` and the PNG plots; None writes nothing.
    repeat : int
        Runs of each measurement; the fastest is kept (and the largest peak memory).
    isolate : bool
        Measure each run in a fresh Python process (True), or in this process (False:
        faster, memory from :mod:`tracemalloc`, for tests and quick looks).
    seed : int
        Seed of the simulated frames.
    log : callable, optional
        Called with one line of progress per measured run.

    Returns
    -------
    BenchResult
        Every figure; ``to_json()``, ``to_markdown()`` and ``summary()`` format them.

    Raises
    ------
    ConfigError
        An unknown strategy, scheduler, sweep or baseline, or an impossible setting.

    Notes
    -----
    Computes (it is a benchmark).  Simulated frames are float32 FITS files in a temporary
    folder, so daskred really reads files, as do the baselines.  Quality figures on
    simulated data: ``noise_ratio`` is the standard deviation of (result - truth) /
    (sigma / sqrt(N)) over pixels no artifact touched; ``bias_sigma`` its mean;
    ``survive_<kind>`` the fraction of artifact pixels (those a plain mean would leave at
    least 8 ideal sigma high) still more than 5 ideal sigma high in the result;
    ``rejected_good`` the fraction of values of untouched pixels that the rejection
    dropped; ``faint_snr`` the median aperture S/N of faint stars (3 in one frame).
    ``agreement_<baseline>`` is the largest relative difference between daskred's result
    and the baseline's (for ccdproc, whose sigma clipping always stops after one
    iteration, daskred's result at ``maxiters=1``).

    Examples
    --------
    >>> result = dr.bench.run(frames=12, size=(256, 384), methods=("median", "sigma"),
    ...                       sweep=(), out="bench/")                  # doctest: +SKIP
    >>> print(result.summary())                                         # doctest: +SKIP
    """
    strategies = _validate(data, frames, size, methods, chunks, scheduler, sweep, baselines, repeat, workers)
    emit = log or (lambda line: None)
    ncores = _ncores()
    nworkers = int(workers or ncores)
    machine = _machine()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    notes: list[str] = []
    band0 = None if chunks[0] is None else int(chunks[0])
    sweeps: dict[str, list[dict[str, Any]]] = {}
    have_ccdproc = True
    try:
        import ccdproc  # noqa: F401
    except ImportError:
        have_ccdproc = False
        if "ccdproc" in baselines:
            notes.append("ccdproc is not installed: no ccdproc baseline")

    with tempfile.TemporaryDirectory(prefix="daskred-bench-") as tmp:
        folder = Path(tmp)
        runner = _Runner(folder=folder, isolate=isolate, repeat=int(repeat), workers=nworkers, ncores=ncores, log=emit)
        if data is None:
            shape = (int(size[0]), int(size[1]))
            emit(f"simulating {frames} frames of {shape[0]}x{shape[1]} ...")
            paths, truth = _simulate(folder / "frames", frames=int(frames), shape=shape, seed=seed)
            main = _Dataset(key=f"sim:{shape}", paths=tuple((p, 0) for p in paths), shape=shape, truth=truth,
                            ccd_model=True)
        else:
            main = _user_dataset(data)
            truth = None
        runnable = dict(strategies)
        if not main.ccd_model:
            for name in [n for n, o in strategies.items() if o.get("clip") == "ccdclip" and "gain" not in o]:
                runnable.pop(name)
                notes.append(f"{name}: skipped, the frames carry no common GAIN and RDNOISE")
        cube_bytes = main.frames * main.shape[0] * main.shape[1] * 4

        def fits_in_memory(n: int, shape: tuple[int, int]) -> bool:
            return n * shape[0] * shape[1] * 4 * 6 < 0.5 * _available_memory()

        def baseline_rows(ds: _Dataset, name: str, options: Mapping[str, Any], which: Sequence[str]) -> list:
            rows = []
            if "numpy" in which and _numpy_supported(options):
                if fits_in_memory(ds.frames, ds.shape):
                    rows.append(runner.case(ds, name, options, "numpy"))
                elif f"numpy skipped for {ds.key}" not in notes:
                    notes.append(f"numpy skipped for {ds.key}")
            if "ccdproc" in which and have_ccdproc and _ccdproc_settings(options)[0] is not None:
                rows.append(runner.case(ds, name, options, "ccdproc"))
            return rows

        rows: list[dict[str, Any]] = []
        for name, options in runnable.items():
            mine = runner.case(main, name, options, "daskred", band=band0, scheduler=scheduler)
            rows.append(mine)
            rows += baseline_rows(main, name, options, baselines)
            _agreement(runner, main, name, options, mine, band0, scheduler)
        _add_ratios(rows)
        if main.truth is None:
            ref = next((r for r in rows if r["strategy"] == "mean" and r["implementation"] == "daskred"
                        and r.get("noise_est")), None)
            for r in rows:
                if ref is not None and r.get("noise_est"):
                    r["noise_vs_mean"] = r["noise_est"] / ref["noise_est"]

        picked = [m for m in ("median", "sigma") if m in runnable] or list(runnable)[:2]
        for kind in sweep:
            out_rows: list[dict[str, Any]] = []
            if kind == "frames":
                counts = sorted({max(3, main.frames // 4), max(3, main.frames // 2), main.frames})
                for n in counts:
                    ds = main.subset(n) if n < main.frames else main
                    for name in picked:
                        out_rows.append(runner.case(ds, name, runnable[name], "daskred", band=band0, scheduler=scheduler))
                        out_rows += baseline_rows(ds, name, runnable[name], [b for b in baselines if b == "numpy"])
            elif kind == "size":
                ny, nx = main.shape
                for shape in [(max(16, ny // 2), max(16, nx // 2)), (ny, nx), (2 * ny, 2 * nx)]:
                    if shape == main.shape:
                        ds = main
                    else:
                        emit(f"simulating {main.frames} frames of {shape[0]}x{shape[1]} ...")
                        paths, _ = _simulate(folder / f"frames-{shape[0]}x{shape[1]}", frames=main.frames,
                                             shape=shape, seed=seed)
                        ds = _Dataset(key=f"sim:{shape}", paths=tuple((p, 0) for p in paths), shape=shape,
                                      truth=None, ccd_model=True)
                    for name in picked:
                        out_rows.append(runner.case(ds, name, runnable[name], "daskred", band=band0, scheduler=scheduler))
                        out_rows += baseline_rows(ds, name, runnable[name], [b for b in baselines if b == "numpy"])
            elif kind == "chunks":
                ny = main.shape[0]
                bands = list(dict.fromkeys(chunks)) if len(chunks) > 1 else [
                    max(1, ny // 64), max(1, ny // 16), max(1, ny // 4), None]
                for band in dict.fromkeys(None if b is None else int(b) for b in bands):
                    for name in picked:
                        out_rows.append(runner.case(main, name, runnable[name], "daskred", band=band, scheduler=scheduler))
            else:
                for sched in get_args(Scheduler):
                    for name in picked:
                        out_rows.append(runner.case(main, name, runnable[name], "daskred", band=band0, scheduler=sched))
            _add_ratios(out_rows)
            sweeps[kind] = out_rows

    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    machine = {**machine, "load_average_start": load_start, "load_average_end": load_end}
    notes.append("peak memory: growth of the resident set during the run (process high-water mark reset after "
                 "imports), plus that of each worker process; time includes opening/reading the files")
    if truth is not None:
        notes.append(f"quality on simulated truth: artifact pixels count when a plain mean would leave them at least "
                     f"{_SIGNIFICANT:g} ideal sigma high; they survive when still above {_VISIBLE:g} ideal sigma")
    config = {"frames": main.frames, "size": list(main.shape), "data": None if data is None else str(data),
              "methods": {k: dict(v) for k, v in runnable.items()}, "chunks": [c for c in chunks],
              "scheduler": scheduler, "workers": nworkers, "sweep": list(sweep), "baselines": list(baselines),
              "repeat": int(repeat), "isolate": bool(isolate), "seed": int(seed), "cube_mb": cube_bytes / 2**20}
    result = BenchResult(config=config, machine=machine, rows=rows, sweeps=sweeps,
                         truth=None if truth is None else truth.describe(main.frames), notes=notes)
    if out is not None:
        result = _write(result, Path(out))
    return result


# =========================================================================== reporting
def _fmt(value: Any, spec: str = ".3g", *, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if percent:
        return f"{100.0 * value:.2f} %"
    return format(value, spec)


def _markdown(result: BenchResult) -> str:
    cfg, machine = result.config, result.machine
    load = machine.get("load_average_start")
    lines = [
        f"# daskred bench: {cfg['frames']} frames of {cfg['size'][0]} x {cfg['size'][1]} "
        f"(float32, {cfg['cube_mb']:.0f} MB), {cfg['scheduler']} scheduler, {cfg['workers']} workers",
        "",
        f"{machine.get('cpu')}, {machine.get('cores')} cores, "
        f"{_fmt(machine.get('memory_gib'), '.0f')} GiB; load average at start "
        f"{'/'.join(f'{v:.1f}' for v in load) if load else '–'}; python {machine.get('python')}, "
        f"daskred {machine.get('versions', {}).get('daskred', '?')}",
        "",
        "## Speed and memory",
        "",
        "| strategy | implementation | time (s) | Mpix/s | CPU use | peak memory (MB) | "
        "time vs numpy | time vs ccdproc | memory vs numpy | memory vs ccdproc |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.rows:
        if "error" in r:
            lines.append(f"| {r['strategy']} | {r['implementation']} | failed: {r['error']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['strategy']} | {r['implementation']} | {r['seconds']:.3f} | {r['mpix_per_s']:.1f} | "
            f"{_fmt(r.get('cpu_utilisation'), percent=True)} | {r['peak_mb']:.1f} | "
            f"{_fmt(r.get('time_vs_numpy'), '.2f')} | {_fmt(r.get('time_vs_ccdproc'), '.2f')} | "
            f"{_fmt(r.get('memory_vs_numpy'), '.2f')} | {_fmt(r.get('memory_vs_ccdproc'), '.2f')} |")
    ok = [r for r in result.rows if "error" not in r]
    if result.truth is not None:
        lines += ["", "## Quality (simulated truth; ideal noise = sigma / sqrt(N))", "",
                  "| strategy | implementation | noise / ideal | bias (ideal sigma) | cosmic rays left | "
                  "trail left | hot pixels left | good pixels rejected | faint-star S/N | faint-star flux / true | "
                  "max rel. diff. vs numpy | vs ccdproc |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ok:
            lines.append(
                f"| {r['strategy']} | {r['implementation']} | {_fmt(r.get('noise_ratio'), '.3f')} | "
                f"{_fmt(r.get('bias_sigma'), '+.3f')} | {_fmt(r.get('survive_cosmic'), percent=True)} | "
                f"{_fmt(r.get('survive_trail'), percent=True)} | {_fmt(r.get('survive_hot'), percent=True)} | "
                f"{_fmt(r.get('rejected_good'), percent=True)} | {_fmt(r.get('faint_snr'), '.1f')} | "
                f"{_fmt(r.get('faint_flux_ratio'), '.3f')} | "
                f"{_fmt(r.get('agreement_numpy'), '.1e')} | {_fmt(r.get('agreement_ccdproc'), '.1e')} |")
    else:
        lines += ["", "## Quality (your frames: no truth)", "",
                  "| strategy | implementation | noise estimate | noise vs mean | values rejected | "
                  "max rel. diff. vs numpy | vs ccdproc |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in ok:
            lines.append(
                f"| {r['strategy']} | {r['implementation']} | {_fmt(r.get('noise_est'))} | "
                f"{_fmt(r.get('noise_vs_mean'), '.3f')} | {_fmt(r.get('rejected_fraction'), percent=True)} | "
                f"{_fmt(r.get('agreement_numpy'), '.1e')} | {_fmt(r.get('agreement_ccdproc'), '.1e')} |")
    for kind, rows in result.sweeps.items():
        lines += ["", f"## Sweep: {kind}", "",
                  "| frames | size | band | scheduler | strategy | implementation | time (s) | Mpix/s | CPU use | "
                  "peak memory (MB) | per worker (MB) | time vs numpy |",
                  "|---:|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            head = f"| {r['frames']} | {r['ny']} x {r['nx']} | {r.get('band_rows', r['band'])} | {r['scheduler']} | " \
                   f"{r['strategy']} | {r['implementation']} |"
            if "error" in r:
                lines.append(f"{head} failed: {r['error']} | | | | | |")
                continue
            workers = ", ".join(f"{w:.0f}" for w in r.get("peak_workers_mb", [])) or "–"
            lines.append(f"{head} {r['seconds']:.3f} | {r['mpix_per_s']:.1f} | "
                         f"{_fmt(r.get('cpu_utilisation'), percent=True)} | {r['peak_mb']:.1f} | {workers} | "
                         f"{_fmt(r.get('time_vs_numpy'), '.2f')} |")
    plots = {k: v for k, v in result.files.items() if v.endswith(".png")}
    if plots:
        lines += ["", "## Plots", ""] + [f"![{k}]({Path(v).name})" for k, v in plots.items()]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def _summary(result: BenchResult) -> str:
    mine = [r for r in result.rows if r["implementation"] == "daskred" and "error" not in r]
    if not mine:
        return "no daskred strategy completed"
    truth = result.truth is not None

    def left(r: Mapping[str, Any]) -> float:
        values = [r.get(f"survive_{k}") for k in _KINDS]
        return max([v for v in values if v is not None] or [0.0])

    if truth:
        ranked = sorted(mine, key=lambda r: (left(r) > 0.01, r.get("noise_ratio") or math.inf, r["seconds"]))
        lines = ["daskred strategies, ranked (artifacts removed first, then lowest noise):"]
    else:
        ranked = sorted(mine, key=lambda r: r["seconds"])
        lines = ["daskred strategies, fastest first:"]
    for i, r in enumerate(ranked, 1):
        parts = [f"{r['seconds']:.2f} s"]
        if r.get("time_vs_ccdproc"):
            parts.append(f"{1 / r['time_vs_ccdproc']:.1f}x ccdproc's speed")
        parts.append(f"peak {r['peak_mb']:.0f} MB")
        if truth:
            parts = [f"noise {r['noise_ratio']:.3f}x ideal", f"artifacts left {100 * left(r):.1f} %"] + parts
        lines.append(f"  {i}. {r['strategy']:<11} " + ", ".join(parts))
    fastest = min(mine, key=lambda r: r["seconds"])
    lightest = min(mine, key=lambda r: r["peak_mb"])
    lines.append(f"fastest: {fastest['strategy']} ({fastest['mpix_per_s']:.0f} Mpix/s); "
                 f"least memory: {lightest['strategy']} ({lightest['peak_mb']:.0f} MB)")
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(result: BenchResult, out: Path) -> BenchResult:
    """Write the PNG plots, then the markdown and JSON files naming them."""
    from .plotting import bar_figure, quality_figure, save_png, scaling_figure

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    mine = [r for r in result.rows if r["implementation"] == "daskred" and "error" not in r]
    if result.truth is not None and mine:
        files["noise_vs_strategy"] = str(save_png(quality_figure(
            mine, title=f"{result.config['frames']} frames: noise and artifacts left"), out / "noise_vs_strategy.png"))
    axes = {"frames": ("frames", "frames combined"), "size": ("mpix_frame", "frame size (megapixels)"),
            "chunks": ("band_rows", "band height (rows per block)")}
    for kind, rows in result.sweeps.items():
        rows = [r for r in rows if "error" not in r]
        if not rows:
            continue
        if kind == "scheduler":
            files["scheduler_time"] = str(save_png(bar_figure(
                rows, category="scheduler", value="seconds", ylabel="wall time (s)",
                title="combine time per scheduler"), out / "time_vs_scheduler.png"))
            files["scheduler_memory"] = str(save_png(bar_figure(
                rows, category="scheduler", value="peak_mb", ylabel="peak memory, all processes (MB)",
                title="peak memory per scheduler"), out / "memory_vs_scheduler.png"))
            continue
        x, label = axes[kind]
        by = ("strategy",) if kind == "chunks" else ("strategy", "implementation")
        logx = kind == "chunks"
        name = {"frames": "frames", "size": "size", "chunks": "band"}[kind]
        files[f"time_vs_{name}"] = str(save_png(scaling_figure(
            rows, x=x, y="seconds", xlabel=label, ylabel="wall time (s)", by=by, logx=logx,
            title=f"combine time vs {label}"), out / f"time_vs_{name}.png"))
        files[f"memory_vs_{name}"] = str(save_png(scaling_figure(
            rows, x=x, y="peak_mb", xlabel=label, ylabel="peak memory above start (MB)", by=by, logx=logx,
            title=f"peak memory vs {label}"), out / f"memory_vs_{name}.png"))
    files["markdown"] = str(out / "bench.md")
    files["json"] = str(out / "bench.json")
    result = replace(result, files=files)
    _write_text(out / "bench.md", result.to_markdown())
    _write_text(out / "bench.json", result.to_json())
    return result


# =========================================================================== command line
def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"size must look like 512x768 (rows x columns), got {text!r}")
    return int(parts[0]), int(parts[1])


def _band(text: str) -> int | None:
    if text.lower() in ("auto", "none"):
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"band heights are positive row counts or 'auto', got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    """``daskred bench``: run the benchmark from the command line; returns the exit code.

    Examples
    --------
    >>> main(["--quick", "--out", "bench"])                          # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(
        prog="daskred bench",
        description="Combine strategies side by side: speed, memory and quality (JSON, markdown, PNG plots).")
    parser.add_argument("--frames", type=int, help="simulated frames (default 20; --quick: 9)")
    parser.add_argument("--size", type=_size, help="simulated frame size HxW (default 512x768; --quick: 96x128)")
    parser.add_argument("--methods", nargs="+", choices=list(STRATEGIES), metavar="NAME",
                        help=f"strategies, from {', '.join(STRATEGIES)} (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--chunks", nargs="+", type=_band, metavar="ROWS",
                        help="band heights (rows per combine block) or 'auto'; the first is used for the table")
    parser.add_argument("--scheduler", choices=list(get_args(Scheduler)), default="threads")
    parser.add_argument("--workers", type=int, help="threads or processes (default: available cores)")
    parser.add_argument("--data", help="benchmark your own frames (a folder or glob of FITS files)")
    parser.add_argument("--out", default="daskred-bench", help="output folder (default: daskred-bench)")
    parser.add_argument("--sweep", nargs="+", choices=[*get_args(Sweep), "none"],
                        help="sweeps to run (default: frames)")
    parser.add_argument("--baselines", nargs="+", choices=[*get_args(Baseline), "none"],
                        help="baselines (default: numpy ccdproc)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement, fastest kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (faster; memory from tracemalloc)")
    parser.add_argument("--quick", action="store_true", help="a small, fast run: 9 frames of 96x128, 3 strategies")
    args = parser.parse_args(list(argv) if argv is not None else None)

    quick = args.quick
    sweep = ["frames"] if args.sweep is None else [s for s in args.sweep if s != "none"]
    baselines = ["numpy", "ccdproc"] if args.baselines is None else [b for b in args.baselines if b != "none"]

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(
        args.data,
        frames=args.frames or (9 if quick else 20),
        size=args.size or ((96, 128) if quick else (512, 768)),
        methods=args.methods or (("mean", "median", "sigma") if quick else DEFAULT_METHODS),
        chunks=args.chunks or (None,),
        scheduler=args.scheduler,
        workers=args.workers,
        sweep=sweep,
        baselines=baselines,
        out=args.out,
        repeat=args.repeat,
        isolate=not args.in_process,
        seed=args.seed,
        log=progress,
    )
    print(result.summary())
    print(f"wrote {result.files.get('markdown')}, {result.files.get('json')} and "
          f"{sum(1 for v in result.files.values() if v.endswith('.png'))} plots")
    failed = [r for r in result.rows if r["implementation"] == "daskred" and "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Measured runs of the combine benchmark: time, CPU use and peak memory, and the baselines.

:class:`_Runner` measures one combine of a data set with one strategy and implementation:
daskred's :func:`daskred.combine`, or a baseline with matching settings, numpy/bottleneck
on an in-memory cube (:func:`_numpy_combine`) or ``ccdproc.combine``
(:func:`_ccdproc_settings`), and adds the quality figures of
:func:`daskred.bench_quality._quality` to its row.  :func:`_add_ratios` and
:func:`_agreement` set each daskred row against the baselines.

Each measured run happens in a fresh Python process (``isolate=True``): its peak memory
(Linux: the process high-water mark, reset after imports; elsewhere ``ru_maxrss``) and
CPU time are its own, and so are those of the worker processes of the ``processes`` and
``distributed`` schedulers.  Imports, the start of a cluster and the first call of the
compiled kernels happen before the clock starts.

The module (and :mod:`daskred.bench_quality`, which it imports) imports only numpy when
loaded: the measured runs load this file in fresh interpreters, where the baselines should
not pay for importing dask and daskred.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .bench_quality import _quality, _relative_difference, _Truth

# A measuring subprocess loads this file as ``daskred.bench_measure`` inside a bare
# ``daskred`` package, so that ``daskred.combine`` imports only what it needs (io, errors)
# rather than every stage the package's ``__init__`` exports; anything else falls back to
# the package.
_CHILD = """
import importlib.util, json, os, sys, types
source, job = sys.argv[1], sys.argv[2]
package = types.ModuleType("daskred")
package.__path__ = [os.path.dirname(source)]
sys.modules["daskred"] = package
with open(job) as fh:
    impl = json.load(fh)["impl"]
if impl == "daskred":
    try:
        import daskred.combine, daskred.io
    except ImportError:
        for name in [m for m in sys.modules if m == "daskred" or m.startswith("daskred.")]:
            del sys.modules[name]
        import daskred
spec = importlib.util.spec_from_file_location("daskred.bench_measure", source)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
sys.exit(module._child_main(job))
"""


# =========================================================================== baselines
def _options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Combine keywords from JSON (lists back to tuples)."""
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items()}


def _ccdproc_settings(options: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any], str]:
    """``ccdproc.combine`` keywords matching ``options``, the daskred options they equal, a note."""
    method = {"mean": "average", "median": "median"}.get(options.get("method", "median"))
    extra = set(options) - {"method", "clip", "sigma", "sigma_lower", "sigma_upper", "maxiters", "cenfunc",
                            "stdfunc", "nlow", "nhigh", "low", "high"}
    if method is None or extra:
        return None, dict(options), "no ccdproc.combine equivalent"
    clip = options.get("clip")
    kw: dict[str, Any] = {"method": method}
    same = dict(options)
    note = ""
    if clip in ("sigma", "mad"):
        sigma = float(options.get("sigma", 3.0))
        kw.update(sigma_clip=True,
                  sigma_clip_low_thresh=float(options.get("sigma_lower") or sigma),
                  sigma_clip_high_thresh=float(options.get("sigma_upper") or sigma),
                  sigma_clip_func="median" if clip == "mad" else options.get("cenfunc", "median"),
                  sigma_clip_dev_func="mad_std" if clip == "mad" else options.get("stdfunc", "std"))
        if options.get("maxiters", 5) != 1:
            same["maxiters"] = 1
            note = "ccdproc.combine clips once (maxiters=1); compared with daskred at maxiters=1"
    elif clip == "minmax":
        kw.update(clip_extrema=True, nlow=int(options.get("nlow", 1)), nhigh=int(options.get("nhigh", 1)))
    elif clip == "range":
        kw.update(minmax_clip=True, minmax_clip_min=options.get("low"), minmax_clip_max=options.get("high"))
    elif clip is not None:
        return None, same, f"ccdproc.combine has no {clip!r} rejection"
    return kw, same, note


def _numpy_supported(options: Mapping[str, Any]) -> bool:
    extra = set(options) - {"method", "clip", "sigma", "sigma_lower", "sigma_upper", "maxiters", "cenfunc",
                            "stdfunc", "nlow", "nhigh", "low", "high"}
    return (not extra and options.get("method", "median") in ("mean", "median", "sum")
            and options.get("clip") in (None, "sigma", "mad", "minmax", "range"))


def _numpy_combine(cube: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
    """The combine a notebook would write: astropy sigma_clip / sort, then bottleneck/numpy."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        return _numpy_reduce(cube, options)


def _numpy_reduce(cube: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
    import bottleneck as bn

    clip = options.get("clip")
    data = cube
    sigma = float(options.get("sigma", 3.0))
    lower, upper = options.get("sigma_lower") or sigma, options.get("sigma_upper") or sigma
    stdfunc = "mad_std" if clip == "mad" else options.get("stdfunc", "std")
    if clip in ("sigma", "mad") and stdfunc == "std":
        from astropy.stats import sigma_clip

        data = sigma_clip(cube, axis=0, masked=False, copy=True, maxiters=options.get("maxiters", 5),
                          sigma_lower=lower, sigma_upper=upper, stdfunc="std",
                          cenfunc="median" if clip == "mad" else options.get("cenfunc", "median"))
    elif clip in ("sigma", "mad"):
        # astropy's fast path takes another middle value of even samples for mad_std, and its
        # path for callables is slow: the same iteration with bottleneck, on the float32 cube
        data = cube.copy()
        maxiters = options.get("maxiters", 5)
        done = 0
        while maxiters is None or done < maxiters:
            done += 1
            with np.errstate(invalid="ignore"):
                median = bn.nanmedian(data, axis=0)
                center = median if clip == "mad" or options.get("cenfunc", "median") == "median" \
                    else np.nanmean(data, axis=0, dtype=np.float64)
                spread = 1.482602218505602 * bn.nanmedian(np.abs(data - median), axis=0)
                out = (data < center - lower * spread) | (data > center + upper * spread)
            if not out.any():
                break
            data[out] = np.nan
    elif clip == "minmax":
        n = cube.shape[0]
        data = np.sort(cube, axis=0)[int(options.get("nlow", 1)):n - int(options.get("nhigh", 1))]
    elif clip == "range":
        data = np.where((cube < options.get("low", -np.inf)) | (cube > options.get("high", np.inf)), np.nan, cube)
    method = options.get("method", "median")
    if method == "median":
        return bn.nanmedian(data, axis=0).astype(np.float32)
    if method == "sum":
        return np.nansum(data, axis=0, dtype=np.float64).astype(np.float32)
    return np.nanmean(data, axis=0, dtype=np.float64).astype(np.float32)


# =========================================================================== measuring
def _status_kb(pid: int | str, key: str) -> int | None:
    """A ``kB`` line of ``/proc/<pid>/status`` (Linux), None elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _reset_peak(pid: int | str) -> bool:
    """Reset the resident-memory high-water mark of a process (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rss_kb() -> int:
    now = _status_kb("self", "VmRSS")
    if now is not None:
        return now
    try:
        import psutil

        return int(psutil.Process().memory_info().rss // 1024)
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return 0


def _maxrss_kb() -> int:
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value // 1024) if sys.platform == "darwin" else int(value)


class _Meter:
    """Wall time, CPU time and peak memory of what runs between start() and stop()."""

    def __init__(self, *, isolated: bool, watch_children: bool) -> None:
        self.isolated = isolated
        self.watch_children = watch_children

    def _children(self) -> list[Any]:
        if not self.watch_children:
            return []
        try:
            import psutil

            return psutil.Process().children(recursive=True)
        except (ImportError, OSError):
            return []

    def start(self) -> None:
        import tracemalloc

        gc.collect()
        self.before: dict[int, tuple[Any, float, int]] = {}
        for child in self._children():
            with contextlib.suppress(Exception):
                times = child.cpu_times()
                _reset_peak(child.pid)
                self.before[child.pid] = (child, times.user + times.system, int(child.memory_info().rss // 1024))
        if self.isolated:
            self.rss0 = _rss_kb()
            self.reset = _reset_peak("self")
        else:
            self.started_tracing = not tracemalloc.is_tracing()
            if self.started_tracing:
                tracemalloc.start()
            tracemalloc.reset_peak()
            self.traced0 = tracemalloc.get_traced_memory()[0]
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        import tracemalloc

        seconds = time.perf_counter() - self.t0
        cpu = time.process_time() - self.cpu0
        if self.isolated:
            peak_kb = _status_kb("self", "VmHWM") if self.reset else None
            if peak_kb is None:
                peak_kb = _maxrss_kb()
            process_mb = max(0, peak_kb - self.rss0) / 1024.0
            method = "high-water mark" if self.reset else "ru_maxrss"
        else:
            process_mb = max(0, tracemalloc.get_traced_memory()[1] - self.traced0) / 2**20
            if self.started_tracing:
                tracemalloc.stop()
            method = "tracemalloc"
        workers = []
        for child in self._children():
            with contextlib.suppress(Exception):
                times = child.cpu_times()
                _, cpu0, rss0 = self.before.get(child.pid, (child, 0.0, 0))
                cpu += times.user + times.system - cpu0
                peak = _status_kb(child.pid, "VmHWM") if child.pid in self.before else None
                if peak is None:
                    peak = int(child.memory_info().rss // 1024)
                workers.append(max(0, peak - rss0) / 1024.0)
        workers = [w for w in sorted(workers, reverse=True) if w > 0.5]
        return {"seconds": seconds, "cpu_seconds": cpu, "peak_process_mb": process_mb,
                "peak_workers_mb": workers, "peak_mb": process_mb + sum(workers), "memory_method": method}


def _open(job: Mapping[str, Any]) -> Any:
    from daskred.io import open_frames

    paths = [p for p, _ in job["paths"]]
    return open_frames(paths, hdu=int(job["paths"][0][1]))


def _warm_up(options: Mapping[str, Any]) -> None:
    """Call the strategy once on a tiny cube, so compiled kernels load before the clock starts."""
    import xarray as xr

    from daskred.combine import combine

    tiny = xr.DataArray(np.random.default_rng(0).normal(100.0, 1.0, (7, 3, 5)).astype(np.float32),
                        dims=("frame", "y", "x"))
    extra = {"gain": 1.0, "rdnoise": 1.0} if options.get("clip") == "ccdclip" else {}
    combine(tiny, with_counts=True, **{**options, **extra}).compute(scheduler="sync")


def _prepare_daskred(job: Mapping[str, Any], stack: contextlib.ExitStack) -> tuple[Callable, Callable]:
    from daskred.combine import combine

    options = _options(job["options"])
    _warm_up(options)
    scheduler, workers = job["scheduler"], int(job["workers"])
    how: dict[str, Any] = {}
    if scheduler == "threads":
        how = {"scheduler": "threads", "num_workers": workers}
    elif scheduler == "processes":
        import concurrent.futures
        import multiprocessing

        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        stack.callback(pool.shutdown)
        list(pool.map(_warm_up, [options] * (2 * workers)))
        how = {"scheduler": "processes", "pool": pool}
    else:
        import logging

        from distributed import Client, LocalCluster

        cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                   dashboard_address=None, silence_logs=logging.ERROR))
        client = stack.enter_context(Client(cluster))
        client.run(_warm_up, options)
    band = job.get("band")

    def compute() -> tuple[np.ndarray, dict[str, Any]]:
        result = combine(_open(job), band=band, **options)
        return np.asarray(result.compute(**how).values), {"band_rows": int(max(result.data.chunks[0]))}

    def extras() -> dict[str, np.ndarray]:
        ds = combine(_open(job), band=band, with_counts=True, **options).compute(**how)
        return {k: ds[k].values for k in ("count", "rejected_low", "rejected_high")}

    return compute, extras


def _prepare_numpy(job: Mapping[str, Any], stack: contextlib.ExitStack) -> tuple[Callable, None]:
    from astropy.io import fits

    options = _options(job["options"])
    _numpy_combine(np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32), options)

    def compute() -> tuple[np.ndarray, dict[str, Any]]:
        cube = np.stack([np.asarray(fits.getdata(p, ext=int(h)), dtype=np.float32) for p, h in job["paths"]])
        return _numpy_combine(cube, options), {}

    return compute, None


def _prepare_ccdproc(job: Mapping[str, Any], stack: contextlib.ExitStack) -> tuple[Callable, None]:
    import warnings

    import ccdproc

    kwargs, _, _ = _ccdproc_settings(_options(job["options"]))
    if kwargs is None:
        raise ValueError(f"no ccdproc equivalent of {job['options']}")
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    paths = [p for p, _ in job["paths"]]

    def compute() -> tuple[np.ndarray, dict[str, Any]]:
        out = ccdproc.combine(paths, hdu=int(job["paths"][0][1]), unit="adu", **kwargs)
        return np.asarray(out.data, dtype=np.float32), {}

    return compute, None


def _execute(job: Mapping[str, Any], *, isolated: bool) -> dict[str, Any]:
    """Run one measured combine in this process; save the result arrays to ``job["save"]``."""
    prepare = {"daskred": _prepare_daskred, "numpy": _prepare_numpy, "ccdproc": _prepare_ccdproc}[job["impl"]]
    with contextlib.ExitStack() as stack:
        compute, extras = prepare(job, stack)
        meter = _Meter(isolated=isolated, watch_children=job["impl"] == "daskred" and job["scheduler"] != "threads")
        meter.start()
        image, info = compute()
        figures = meter.stop()
        figures.update(info)
        arrays = extras() if extras is not None else {}
    np.savez(job["save"], image=image, **arrays)
    return figures


def _child_main(job_path: str) -> int:
    """Entry point of a measuring subprocess: run the job, print its figures as JSON."""
    with open(job_path) as fh:
        job = json.load(fh)
    figures = _execute(job, isolated=True)
    print(json.dumps(figures))
    return 0


def _spawn(job: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    spec = folder / (Path(job["save"]).stem + ".json")
    spec.write_text(json.dumps(job))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(Path(__file__).resolve()), str(spec)],
                          capture_output=True, text=True, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"error": tail[-1] if tail else f"exit code {proc.returncode}"}
    return json.loads(lines[-1])


# =========================================================================== measured runs
@dataclass(frozen=True)
class _Dataset:
    key: str
    paths: tuple[tuple[str, int], ...]
    shape: tuple[int, int]
    truth: _Truth | None
    ccd_model: bool  # frames carry one common gain and read noise

    @property
    def frames(self) -> int:
        return len(self.paths)

    def subset(self, n: int) -> _Dataset:
        return replace(self, key=f"{self.key}[:{n}]", paths=self.paths[:n])


def _ncores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _machine() -> dict[str, Any]:
    from importlib import metadata

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    memory = None
    with contextlib.suppress(ImportError):
        import psutil

        memory = psutil.virtual_memory().total / 2**30
    versions = {}
    for name in ("daskred", "numpy", "dask", "distributed", "xarray", "astropy", "bottleneck", "numba", "ccdproc"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cores": _ncores(), "logical_cpus": os.cpu_count(), "memory_gib": memory, "versions": versions}


def _available_memory() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        return math.inf


class _Runner:
    """Runs measured combines, caches their rows, adds quality figures."""

    def __init__(self, *, folder: Path, isolate: bool, repeat: int, workers: int, ncores: int,
                 log: Callable[[str], None]) -> None:
        self.folder, self.isolate, self.repeat = folder, isolate, repeat
        self.workers, self.ncores, self.log = workers, ncores, log
        self.rows: dict[tuple, dict[str, Any]] = {}
        self.images: dict[tuple, Path] = {}
        self.count = 0

    def case(self, ds: _Dataset, name: str, options: Mapping[str, Any], impl: str, *,
             band: int | None = None, scheduler: str = "threads") -> dict[str, Any]:
        if impl != "daskred":
            band, scheduler = None, "-"
        key = (ds.key, name, impl, band, scheduler)
        if key in self.rows:
            return self.rows[key]
        self.count += 1
        save = self.folder / f"run{self.count:04d}.npz"
        job = {"impl": impl, "options": dict(options), "paths": [list(p) for p in ds.paths], "band": band,
               "scheduler": scheduler, "workers": self.workers, "save": str(save)}
        best: dict[str, Any] | None = None
        for _ in range(self.repeat):
            figures = _spawn(job, self.folder) if self.isolate else self._in_process(job)
            if "error" in figures:
                best = figures
                break
            if best is None or figures["seconds"] < best["seconds"]:
                peak = max(figures["peak_mb"], best["peak_mb"]) if best else figures["peak_mb"]
                best = {**figures, "peak_mb": peak}
        assert best is not None
        ny, nx = ds.shape
        row: dict[str, Any] = {"strategy": name, "implementation": impl, "frames": ds.frames, "ny": ny, "nx": nx,
                               "mpix_frame": ny * nx / 1e6,
                               "band": "-" if impl != "daskred" else "auto" if band is None else band,
                               "scheduler": scheduler, "options": dict(options)}
        if "error" in best:
            row["error"] = best["error"]
            self.log(f"{name:>10} {impl:>8} {ds.frames:4d} x {ny}x{nx}: FAILED {best['error']}")
        else:
            seconds = best["seconds"]
            row.update({k: v for k, v in best.items() if k != "cpu_seconds"})
            row["mpix_per_s"] = ds.frames * ny * nx / 1e6 / seconds
            row["cpu_utilisation"] = best["cpu_seconds"] / (seconds * self.ncores)
            with np.load(save) as arrays:
                image = arrays["image"]
                counts = {k: arrays[k] for k in ("count", "rejected_low", "rejected_high") if k in arrays}
            row.update(_quality(image, counts or None, ds.truth, ds.frames))
            self.images[key] = save
            where = f" band {row['band']} {scheduler}" if impl == "daskred" else ""
            self.log(f"{name:>10} {impl:>8} {ds.frames:4d} x {ny}x{nx}{where}: {seconds:7.2f} s, "
                     f"peak {row['peak_mb']:7.1f} MB")
        self.rows[key] = row
        return row

    def _in_process(self, job: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return _execute(job, isolated=False)
        except Exception as err:  # a failing strategy is reported in its row, the benchmark goes on
            return {"error": f"{type(err).__name__}: {err}"}

    def image(self, ds: _Dataset, name: str, impl: str, band: int | None = None,
              scheduler: str = "threads") -> np.ndarray | None:
        key = (ds.key, name, impl, band, scheduler) if impl == "daskred" else (ds.key, name, impl, None, "-")
        path = self.images.get(key)
        if path is None:
            return None
        with np.load(path) as arrays:
            return arrays["image"]


def _add_ratios(rows: Iterable[dict[str, Any]]) -> None:
    """Time and memory of each daskred row relative to the baselines on the same data."""
    rows = list(rows)
    for row in rows:
        if row["implementation"] != "daskred" or "error" in row:
            continue
        for base in ("numpy", "ccdproc"):
            ref = next((r for r in rows if r["implementation"] == base and r["strategy"] == row["strategy"]
                        and r["frames"] == row["frames"] and (r["ny"], r["nx"]) == (row["ny"], row["nx"])
                        and "error" not in r), None)
            if ref is not None:
                row[f"time_vs_{base}"] = row["seconds"] / ref["seconds"]
                row[f"memory_vs_{base}"] = row["peak_mb"] / ref["peak_mb"] if ref["peak_mb"] > 0 else None


def _agreement(runner: _Runner, ds: _Dataset, name: str, options: Mapping[str, Any], row: dict[str, Any],
               band: int | None, scheduler: str) -> None:
    """Largest relative difference between daskred's result and each baseline's."""
    import dask

    from .combine import combine
    from .io import open_frames

    mine = runner.image(ds, name, "daskred", band, scheduler)
    if mine is None:
        return
    for base in ("numpy", "ccdproc"):
        ref = runner.image(ds, name, base)
        if ref is None:
            continue
        ours = mine
        if base == "ccdproc":
            _, same, note = _ccdproc_settings(options)
            if same != dict(options):
                frames = open_frames([p for p, _ in ds.paths], hdu=ds.paths[0][1])
                with dask.config.set(scheduler="threads"):
                    ours = combine(frames, **same).values
            if note:
                row["ccdproc_note"] = note
        row[f"agreement_{base}"] = _relative_difference(ours, ref)

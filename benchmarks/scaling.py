"""Scaling of a CPU-bound reduction with the number of dask.distributed workers.

Simulates a night of raw science frames (``daskred.simulate``), then, for each worker count,
times the same graph on that many single-threaded worker processes and reports the speed-up
over one worker, measured in the same run:

* ``--mode stages`` (default): overscan + trim (``dr.calibrate``), cosmic rays
  (``detect_cosmics``, astroscrappy) and background (``subtract_background``, photutils
  mesh) of every frame, written to Zarr — the CPU-bound core of the pipeline;
* ``--mode reduce``: the whole ``dr.reduce`` (scan, masters, calibrate, cosmics,
  background, registration, stack, photometry), which also holds serial parts (header
  scan, transforms, photometry fits on the client), so it scales less.

Each worker count gets a fresh ``LocalCluster`` (processes, one thread each), a warm-up
run (imports, numba compilation on every worker), then ``--repeat`` timed runs; the best
is kept (the machine may be shared, so the load average before and after every run is
recorded too).  Every run's output is compared with the one-worker output: they must be
identical.  Peak worker memory comes from :func:`daskred.cluster.track_memory`.
Output: ``benchmarks/results/scaling_<mode>_<frames>x<ny>x<nx>.json`` and ``.md``.

Usage (here)::

    python benchmarks/scaling.py                          # 1 and 2 workers, 12 frames of 700 x 800
    python benchmarks/scaling.py --frames 16 --shape 1030 1200 --workers 1 2 --repeat 2
    python benchmarks/scaling.py --mode reduce --frames 8 --shape 400 500

On a bigger cluster
-------------------
Start a scheduler and workers with one thread each on nodes that share a filesystem,
simulate the data there, and point the benchmark at the scheduler; each worker count
then runs on a subset of the cluster's workers (``client.compute(..., workers=subset)``),
so one allocation measures the whole curve::

    dask scheduler --scheduler-file $SHARED/sched.json &
    srun -n 32 dask worker --scheduler-file $SHARED/sched.json --nworkers 1 --nthreads 1 \\
        --memory-limit 8GiB &                                   # or dask-jobqueue, below
    python benchmarks/scaling.py --scheduler $(jq -r .address $SHARED/sched.json) \\
        --workers 1 2 4 8 16 32 --frames 256 --shape 4112 4096 --data $SHARED/scaling

With dask-jobqueue instead, from a Python prompt on the login node::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=1, processes=1, memory="8GiB", walltime="01:00:00")
    cluster.scale(32); print(cluster.scheduler_address)   # pass it to --scheduler

Keep frames >= 8 x the largest worker count so that every worker has work, and use the
same ``--data`` folder for every run (simulation is not timed, but is skipped when the
folder holds a simulation with the same parameters).  ``--mode reduce`` is not available
with ``--scheduler`` (``dr.reduce`` uses every worker of a cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _cpu_times() -> list[int] | None:
    """Aggregate CPU jiffies (user, nice, system, idle, iowait, irq, softirq, steal), Linux only."""
    try:
        with open("/proc/stat") as fh:
            return [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def _steal(before: list[int] | None, after: list[int] | None) -> float | None:
    """Fraction of CPU time taken by the hypervisor for other machines between two readings."""
    if before is None or after is None or len(before) < 8:
        return None
    delta = [b - a for a, b in zip(before, after)]
    return round(delta[7] / max(sum(delta), 1), 3)


def _busy(task_stream: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    """Per worker, the fraction of the wall time spent computing tasks."""
    busy: dict[str, float] = {}
    for task in task_stream:
        for part in task.get("startstops", ()):
            if part["action"] == "compute":
                busy[task["worker"]] = busy.get(task["worker"], 0.0) + part["stop"] - part["start"]
    return {worker: round(total / seconds, 3) for worker, total in sorted(busy.items())}


def _simulate(folder: Path, *, frames: int, shape: tuple[int, int], seed: int) -> Any:
    from daskred.simulate import simulate

    params = folder / "scaling-params.json"
    wanted = {"frames": frames, "shape": list(shape), "seed": seed}
    overwrite = not (params.is_file() and json.loads(params.read_text()) == wanted)
    sim = simulate(folder, shape=shape, filters=("V",), nights=1, n_bias=3, n_dark=2, n_flat=3,
                   n_science=frames, n_standard=2, seed=seed, overwrite=True) if overwrite else None
    params.write_text(json.dumps(wanted))
    return sim


def _stage_graph(raw: Path, store: Path) -> Any:
    """Delayed write of calibrate + cosmics + background of the science frames to Zarr."""
    import daskred as dr
    from daskred.background import subtract_background
    from daskred.calibrate import calibrate
    from daskred.cosmics import detect_cosmics

    table = dr.scan(raw)
    lights = table[table.imagetyp == "light"]
    ds = calibrate(dr.open_frames(lights), overscan="auto", trim="auto")
    cleaned = detect_cosmics(ds, gain=None)
    data = subtract_background(cleaned["data"], method="mesh", box_size=64, filter_size=3,  # the pipeline's defaults
                               exclude_percentile=50.0, mask=ds["mask"] | cleaned["mask"])
    out = data.rename("data").to_dataset()
    out["cosmics"] = cleaned["mask"]
    out = out.drop_vars([c for c in out.coords if c not in ("frame", "y", "x")])
    return out.to_zarr(store, mode="w", zarr_format=3, consolidated=False, compute=False), len(lights)


def _read_zarr(store: Path) -> dict[str, Any]:
    import xarray as xr

    with xr.open_zarr(store, consolidated=False) as ds:
        return {name: ds[name].values for name in ds.data_vars}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import numpy as np

    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def _products(out: Path) -> dict[str, Any]:
    import numpy as np
    from astropy.io import fits

    result = {}
    for path in sorted([*out.glob("masters/**/*.fits"), *out.glob("stacks/*.fits")]):
        with fits.open(path) as hdul:
            for i, hdu in enumerate(hdul):
                if hdu.data is not None:
                    result[f"{path.relative_to(out)}[{i}]"] = np.array(hdu.data)
    zp = out / "photometry" / "zeropoints.csv"
    if zp.is_file():
        result["zeropoints"] = np.array(zp.read_text())
    return result


def _time_stages(client: Any, raw: Path, work: Path, subset: list[str], tag: str) -> tuple[float, Any, dict]:
    from distributed import get_task_stream

    from daskred.cluster import track_memory

    store = work / f"{tag}.zarr"
    delayed, _ = _stage_graph(raw, store)
    with track_memory() as memory, get_task_stream(client) as stream:
        start = time.perf_counter()
        client.compute(delayed, workers=subset, allow_other_workers=False).result()
        seconds = time.perf_counter() - start
    result = _read_zarr(store)
    shutil.rmtree(store, ignore_errors=True)
    return seconds, result, {k: v for k, v in memory.per_process.items() if k in subset}, _busy(stream.data, seconds)


def _time_reduce(client: Any, raw: Path, work: Path, standards: Path, tag: str) -> tuple[float, Any, dict]:
    from distributed import get_task_stream

    import daskred as dr
    from daskred.cluster import track_memory

    out = work / tag
    config = dr.PipelineConfig().replace(photometry={"standards": str(standards)}, output={"quicklook": False})
    with track_memory() as memory, get_task_stream(client) as stream:
        start = time.perf_counter()
        dr.reduce(raw, out=out, config=config, cache=None, scheduler=client.scheduler.address, verbose=False)
        seconds = time.perf_counter() - start
    result = _products(out)
    shutil.rmtree(out, ignore_errors=True)
    return seconds, result, dict(memory.per_process), _busy(stream.data, seconds)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import dask
    import distributed
    from distributed import Client, LocalCluster

    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="daskred-scaling-"))
    start = time.perf_counter()
    sim = _simulate(data, frames=args.frames, shape=tuple(args.shape), seed=args.seed)
    simulate_s = time.perf_counter() - start
    raw = data / "raw"
    standards = sim.standards_path if sim is not None else next((data / "truth").glob("standards*.csv"))
    work = Path(tempfile.mkdtemp(prefix="runs-", dir=data))
    rows: list[dict[str, Any]] = []
    reference = None
    identical = True
    external = Client(args.scheduler) if args.scheduler else None
    try:
        for n in args.workers:
            if external is not None:
                external.wait_for_workers(n, timeout=600)
                client, cluster = external, None
                subset = list(client.scheduler_info(n_workers=-1)["workers"])[:n]
            else:
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                       memory_limit=args.memory_limit)
                client = Client(cluster)
                subset = list(client.scheduler_info(n_workers=-1)["workers"])
            try:
                times, loads, peaks, busy = [], [], {}, []
                for attempt in range(args.repeat + 1):  # the first run warms up the workers
                    before, cpu_before = _load(), _cpu_times()
                    if args.mode == "stages":
                        seconds, result, memory, worker_busy = _time_stages(client, raw, work, subset,
                                                                            f"n{n}-{attempt}")
                    else:
                        seconds, result, memory, worker_busy = _time_reduce(client, raw, work, standards,
                                                                            f"n{n}-{attempt}")
                    after, steal = _load(), _steal(cpu_before, _cpu_times())
                    if reference is None:
                        reference = result
                    identical &= _same(result, reference)
                    print(f"{n} worker(s), run {attempt}{' (warm-up)' if attempt == 0 else ''}: {seconds:.2f} s, "
                          f"load {before[0]:.2f} -> {after[0]:.2f}, steal {steal}, busy {worker_busy}",
                          file=sys.stderr, flush=True)
                    if attempt > 0:
                        times.append(round(seconds, 3))
                        loads.append({"before": before, "after": after, "cpu_steal": steal})
                        busy.append(worker_busy)
                        for key, mb in memory.items():
                            peaks[key] = max(peaks.get(key, 0.0), mb)
                rows.append({"workers": n, "threads_per_worker": 1, "seconds": times, "best_s": min(times),
                             "load_average": loads, "worker_busy": busy,
                             "peak_worker_mb": round(max(peaks.values(), default=0.0), 1),
                             "sum_peak_worker_mb": round(sum(peaks.values()), 1)})
            finally:
                if cluster is not None:
                    client.close()
                    cluster.close()
    finally:
        if external is not None:
            external.close()
        shutil.rmtree(work, ignore_errors=True)
        if not args.data:
            shutil.rmtree(data, ignore_errors=True)
    base = rows[0]["best_s"] * rows[0]["workers"]
    for row in rows:
        row["speedup"] = round(rows[0]["best_s"] / row["best_s"], 3)
        row["efficiency"] = round(base / (row["best_s"] * row["workers"]), 3)
    return {
        "benchmark": "scaling", "mode": args.mode, "frames": args.frames, "shape": list(args.shape),
        "repeat": args.repeat, "identical_outputs": bool(identical), "rows": rows,
        "simulate_s": round(simulate_s, 2), "scheduler": args.scheduler or "LocalCluster (processes)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_end": _load()},
        "versions": {"dask": dask.__version__, "distributed": distributed.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown(result: dict[str, Any]) -> str:
    what = ("calibrate (overscan, trim) + cosmic rays + background, to Zarr" if result["mode"] == "stages"
            else "the whole `dr.reduce` (no cache)")
    ny, nx = result["shape"]
    lines = [f"# Scaling with dask.distributed workers: {what}", "",
             f"{result['frames']} science frames of {ny} x {nx} pixels; single-threaded worker processes "
             f"({result['scheduler']}); best of {result['repeat']} run(s) after a warm-up; "
             f"{result['machine']['cpus']} CPUs; {result['date']}.", "",
             "| workers | best time (s) | all runs (s) | speed-up vs 1 worker | efficiency | "
             "peak memory of one worker (MiB) | workers busy (fraction of wall time) | "
             "load average 1 min (before -> after) | CPU steal |",
             "|---:|---:|---|---:|---:|---:|---|---|---|"]
    for row in result["rows"]:
        loads = ", ".join(f"{x['before'][0]:.2f} -> {x['after'][0]:.2f}" for x in row["load_average"])
        steal = ", ".join("-" if x["cpu_steal"] is None else f"{x['cpu_steal']:.0%}" for x in row["load_average"])
        busy = "; ".join(", ".join(f"{v:.2f}" for v in b.values()) for b in row["worker_busy"])
        lines.append(f"| {row['workers']} | {row['best_s']:.2f} | {', '.join(f'{t:.2f}' for t in row['seconds'])} | "
                     f"{row['speedup']:.2f} | {row['efficiency']:.2f} | {row['peak_worker_mb']:.0f} | {busy} | "
                     f"{loads} | {steal} |")
    lines += ["", f"Outputs identical for every worker count: {'yes' if result['identical_outputs'] else 'NO'}.",
              f"Load average at the end: {', '.join(map(str, result['machine']['load_average_at_end']))} "
              "(1, 5, 15 min); a load above the number of CPUs, or CPU steal (time the hypervisor gave to other "
              "machines), means the CPUs were shared and the speed-up understates the method's.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["stages", "reduce"], default="stages")
    parser.add_argument("--frames", type=int, default=12, help="science frames")
    parser.add_argument("--shape", type=int, nargs=2, default=(700, 800), metavar=("NY", "NX"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per worker count (after a warm-up)")
    parser.add_argument("--memory-limit", default="2GiB", help="per local worker")
    parser.add_argument("--scheduler", help="address of a running scheduler: use subsets of its workers")
    parser.add_argument("--data", help="folder for the simulated frames (kept); default: a temporary folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.scheduler and args.mode == "reduce":
        parser.error("--mode reduce uses every worker of a cluster; run it with local workers")
    if args.workers[0] != 1:
        args.workers = [1, *args.workers]
    result = run(args)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    stem = f"scaling_{args.mode}_{args.frames}x{args.shape[0]}x{args.shape[1]}"
    (output / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (output / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

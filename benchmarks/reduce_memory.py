"""Peak memory of a whole reduction whose raw data are larger than its memory limit.

Simulates one night of ``medium`` frames (1030 x 1240 raw; bias, darks, flats, many dithered
science frames, standards) whose size on disk and as float32 exceeds the worker memory limit,
then runs ``dr.reduce`` on one ``dask.distributed`` worker process started with that limit
(dask's nanny restarts a worker that passes 95 % of it, and the run then fails with
"KilledWorker").  Reported for each stage: the worker's peak memory sampled by its own monitor;
for the whole run: the worker's and the client's kernel high-water marks (``ru_maxrss``, which
no sampling can miss), against the limit and against the size of the data.

Usage::

    python benchmarks/reduce_memory.py --science 440 --memory-limit 1GiB --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _maxrss_mb() -> float:
    """This process's peak resident set since it started (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--science", type=int, default=80, help="science frames")
    parser.add_argument("--memory-limit", default="1GiB", help="worker memory limit")
    parser.add_argument("--threads", type=int, default=1, help="threads of the one worker")
    parser.add_argument("--folder", help="where to simulate and reduce (default: a temporary folder)")
    parser.add_argument("--resume", action="store_true",
                        help="keep FOLDER/out and its cache: measure only the stages not cached yet")
    parser.add_argument("--reuse-sim", action="store_true",
                        help="keep the simulated frames already in --folder (FOLDER/sim) instead of simulating again")
    args = parser.parse_args(argv)

    import daskred as dr
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    tmp = None if args.folder else tempfile.TemporaryDirectory(prefix="daskred-memory-")
    root = Path(args.folder or tmp.name)
    raw_dir, standards = root / "sim" / "raw", root / "sim" / "truth" / "standards.csv"
    if not (args.reuse_sim and standards.is_file()):
        # 20 s exposures: hundreds of frames still fit in one night above airmass 3.5
        dr.simulate(root / "sim", scale="medium", nights=1, filters=("V",), n_science=args.science,
                    exptime=20.0, overwrite=True)
    if (root / "out").exists() and not args.resume:
        shutil.rmtree(root / "out")  # measure a reduction that computes every stage
    table = dr.scan(raw_dir)
    float32_mb = float((table.ny * table.nx).sum() * 4 / 2**20)
    disk_mb = float(sum(p.stat().st_size for p in raw_dir.rglob("*.fits")) / 2**20)
    limit_mb = parse_bytes(args.memory_limit) / 2**20
    config = dr.PipelineConfig().replace(photometry={"standards": str(standards)})
    client_before = _maxrss_mb()
    with LocalCluster(n_workers=1, threads_per_worker=args.threads, memory_limit=args.memory_limit,
                      processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        started_workers = set(client.run(os.getpid).items())
        start = time.perf_counter()
        report = dr.reduce(raw_dir, out=root / "out", config=config, cache="auto",
                           scheduler=cluster.scheduler_address, verbose=False)
        seconds = time.perf_counter() - start
        # a worker restarted by its nanny (over 95 % of the limit) is a new process whose
        # ru_maxrss would hide the peak: count the processes that did not last the run
        restarts = len(started_workers - set(client.run(os.getpid).items()))
        worker_maxrss = max(client.run(_maxrss_mb).values())
    stages = [{"name": s["name"], "seconds": s["seconds"], "cached": s["cached"],
               "peak_worker_mb": s.get("peak_worker_mb", 0.0)}
              for s in report.stages]
    sampled = max(s["peak_worker_mb"] for s in stages)
    client_mb = _maxrss_mb()
    summary = {"frames": int(len(table)), "raw_disk_mb": round(disk_mb, 1), "raw_float32_mb": round(float32_mb, 1),
               "memory_limit_mb": round(limit_mb, 1), "threads": args.threads, "seconds": round(seconds, 1),
               "peak_worker_sampled_mb": sampled, "peak_worker_maxrss_mb": round(worker_maxrss, 1),
               "peak_client_maxrss_mb": round(client_mb, 1), "client_before_reduce_mb": round(client_before, 1),
               "worker_peak_over_limit": round(worker_maxrss / limit_mb, 3),
               "disk_over_limit": round(disk_mb / limit_mb, 3), "float32_over_limit": round(float32_mb / limit_mb, 3),
               "worker_restarts": restarts, "stacks": [s["path"] for s in report.stacks], "stages": stages}
    RESULTS.mkdir(exist_ok=True)
    stem = f"reduce_memory_{len(table)}x1030x1240"
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# reduce: {len(table)} raw frames ({disk_mb:.0f} MiB on disk, {float32_mb:.0f} MiB as float32), "
             f"one worker process ({args.threads} thread(s)) limited to {limit_mb:.0f} MiB", "",
             "| stage | seconds | cached | peak worker memory, sampled (MiB) |", "|---|---:|---|---:|"]
    lines += [f"| {s['name']} | {s['seconds']:.1f} | {'yes' if s['cached'] else 'no'} | {s['peak_worker_mb']:.0f} |"
              for s in stages]
    lines += ["", f"Whole run {seconds:.0f} s. Worker high-water mark (ru_maxrss) {worker_maxrss:.0f} MiB = "
              f"{worker_maxrss / limit_mb:.2f} of the limit, while the raw data are {disk_mb / limit_mb:.2f}x the "
              f"limit on disk and {float32_mb / limit_mb:.2f}x as float32; client process high-water mark "
              f"{client_mb:.0f} MiB ({client_before:.0f} MiB before the reduction); {restarts} worker restart(s); "
              f"{len(report.stacks)} stack(s) written."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of a whole reduction whose raw data are larger than its memory limit.

Simulates one night of ``medium`` frames (1030 x 1200 imaging area; bias, darks, flats,
many dithered science frames, standards) whose float32 size exceeds the worker memory limit,
then runs ``dr.reduce`` on one single-threaded ``dask.distributed`` worker started with that
limit, and reports each stage's peak worker memory (sampled by the worker's own monitor)
against the limit and against the size of the data.  A worker that exceeds the limit is
restarted by dask (and the run would fail with "KilledWorker"): the run completing with every
stage's peak under the limit is the result.

Usage::

    python benchmarks/reduce_memory.py --science 80 --memory-limit 600MiB
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--science", type=int, default=80, help="science frames")
    parser.add_argument("--memory-limit", default="600MiB", help="worker memory limit")
    parser.add_argument("--folder", help="where to simulate and reduce (default: a temporary folder)")
    args = parser.parse_args(argv)

    import daskred as dr
    from dask.utils import parse_bytes

    tmp = None if args.folder else tempfile.TemporaryDirectory(prefix="daskred-memory-")
    root = Path(args.folder or tmp.name)
    sim = dr.simulate(root / "sim", scale="medium", nights=1, filters=("V",), n_science=args.science,
                      overwrite=True)
    table = dr.scan(sim.raw_dir)
    float32_mb = float((table.ny * table.nx).sum() * 4 / 2**20)
    disk_mb = float(sum(p.stat().st_size for p in sim.raw_dir.rglob("*.fits")) / 2**20)
    limit_mb = parse_bytes(args.memory_limit) / 2**20
    config = dr.PipelineConfig().replace(photometry={"standards": str(sim.standards_path)})
    start = time.perf_counter()
    report = dr.reduce(sim.raw_dir, out=root / "out", config=config, cache="auto", workers=1,
                       threads_per_worker=1, memory_limit=args.memory_limit, verbose=False)
    seconds = time.perf_counter() - start
    stages = [{"name": s["name"], "seconds": s["seconds"], "peak_worker_mb": s.get("peak_worker_mb", 0.0)}
              for s in report.stages]
    peak = max(s["peak_worker_mb"] for s in stages)
    summary = {"frames": int(len(table)), "raw_float32_mb": round(float32_mb, 1), "raw_disk_mb": round(disk_mb, 1),
               "memory_limit_mb": round(limit_mb, 1), "peak_worker_mb": peak, "seconds": round(seconds, 1),
               "peak_over_limit": round(peak / limit_mb, 3), "data_over_limit": round(float32_mb / limit_mb, 3),
               "stacks": [s["path"] for s in report.stacks], "stages": stages}
    RESULTS.mkdir(exist_ok=True)
    stem = f"reduce_memory_{len(table)}x1030x1240"
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# reduce: {len(table)} raw frames ({disk_mb:.0f} MB on disk, {float32_mb:.0f} MB as float32), "
             f"one single-threaded worker limited to {limit_mb:.0f} MiB", "",
             "| stage | seconds | peak worker memory (MiB) |", "|---|---:|---:|"]
    lines += [f"| {s['name']} | {s['seconds']:.1f} | {s['peak_worker_mb']:.0f} |" for s in stages]
    lines += ["", f"Whole run {seconds:.0f} s; peak {peak:.0f} MiB = {peak / limit_mb:.2f} of the limit, while the "
              f"data are {float32_mb / limit_mb:.2f}x the limit; {len(report.stacks)} stack(s) written."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

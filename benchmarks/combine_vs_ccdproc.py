"""Median and sigma-clipped combine: daskred vs ccdproc vs numpy/bottleneck in memory.

Writes N float32 frames to FITS, then in one process times, for each method:

* ``numpy``       — read every frame into one in-memory cube, ``np.median`` /
  ``astropy.stats.sigma_clip`` + mean (the baseline a notebook would use);
* ``bottleneck``  — the same cube, ``bn.median`` (median only);
* ``ccdproc``     — ``ccdproc.combine`` on the file list with its defaults for memory;
* ``daskred``     — ``dr.combine(dr.open_frames(paths), ...)`` computed on the threaded scheduler.

Each run happens in a fresh subprocess so that its peak resident memory is its own: the
child imports everything and runs its implementation once on three small frames (so that
one-time costs — imports, numba's compiled kernels, thread pools — are paid by every
implementation before the clock starts), then reports ``ru_maxrss`` growth during the run.  Output: JSON + a markdown table in
``benchmarks/results/``.

Usage::

    python benchmarks/combine_vs_ccdproc.py --frames 20 --size 2048 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

RUNNER = r'''
import json, resource, sys, time, glob, warnings, tempfile, os
import numpy as np
import bottleneck as bn
from astropy.io import fits
import daskred as dr
import ccdproc
from astropy.stats import sigma_clip
import dask
warnings.simplefilter("ignore")
which, method, folder = sys.argv[1], sys.argv[2], sys.argv[3]


def run(paths):
    if which == "numpy":
        cube = np.stack([fits.getdata(p) for p in paths])
        if method == "median":
            return np.median(cube, axis=0)
        return np.ma.mean(sigma_clip(cube, sigma=3.0, maxiters=5, cenfunc="median", stdfunc="std", axis=0), axis=0)
    if which == "bottleneck":
        cube = np.stack([fits.getdata(p) for p in paths])
        return bn.median(cube, axis=0)
    if which == "ccdproc":
        if method == "median":
            out = ccdproc.combine(paths, method="median", unit="adu", dtype=np.float32)
        else:
            out = ccdproc.combine(paths, method="average", sigma_clip=True, sigma_clip_low_thresh=3.0,
                                  sigma_clip_high_thresh=3.0, sigma_clip_func=np.ma.median,
                                  sigma_clip_dev_func=np.ma.std, unit="adu", dtype=np.float32)
        return np.asarray(out.data)
    frames = dr.open_frames(paths)
    if method == "median":
        result = dr.combine(frames, method="median")
    else:
        result = dr.combine(frames, method="mean", clip="sigma", sigma=3.0, maxiters=5,
                            cenfunc="median", stdfunc="std")
    with dask.config.set(scheduler="threads"):
        return result.values


# Warm up on three small frames so that one-time costs (imports, numba's compiled-kernel
# cache, thread pools) are excluded from every implementation's peak alike.
with tempfile.TemporaryDirectory() as tmp:
    small = []
    for i in range(3):
        small.append(os.path.join(tmp, f"w{i}.fits"))
        fits.PrimaryHDU(np.random.default_rng(i).normal(size=(64, 96)).astype(np.float32)).writeto(small[-1])
    run(small)
paths = sorted(glob.glob(folder + "/*.fits"))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
out = run(paths)
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "peak_mb": (peak - base) / 1024.0,
                  "checksum": float(np.nansum(out, dtype=np.float64))}))
'''


def write_frames(folder: Path, n: int, size: int, seed: int) -> None:
    import numpy as np
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    for i in range(n):
        path = folder / f"frame{i:03d}.fits"
        if not path.exists():
            data = rng.normal(1000.0, 10.0, (size, size)).astype(np.float32)
            data[rng.integers(0, size, 200), rng.integers(0, size, 200)] += 5000.0  # cosmic-ray-like outliers
            fits.PrimaryHDU(data).writeto(path)


def run(which: str, method: str, folder: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUNNER, which, method, str(folder)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{which}/{method} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for each entry")
    parser.add_argument("--folder", help="where to write the frames (default: a temporary folder)")
    parser.add_argument("--skip-ccdproc", action="store_true")
    args = parser.parse_args(argv)

    tmp = None
    if args.folder:
        folder = Path(args.folder)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="daskred-bench-")
        folder = Path(tmp.name)
    write_frames(folder, args.frames, args.size, seed=0)
    cube_mb = args.frames * args.size * args.size * 4 / 2**20

    entries = [("median", w) for w in ("numpy", "bottleneck", "ccdproc", "daskred")]
    entries += [("sigma-clipped mean", w) for w in ("numpy", "ccdproc", "daskred")]
    if args.skip_ccdproc:
        entries = [e for e in entries if e[1] != "ccdproc"]
    rows = []
    for label, which in entries:
        method = "median" if label == "median" else "sigma"
        runs = [run(which, method, folder) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        rows.append({"method": label, "implementation": which, "seconds": best["seconds"],
                     "peak_mb": max(r["peak_mb"] for r in runs), "checksum": best["checksum"]})
        print(f"{label:>20} {which:>10} {best['seconds']:7.2f} s  peak +{rows[-1]['peak_mb']:7.0f} MB", flush=True)

    def ratio(label, a, b):
        ta = next(r["seconds"] for r in rows if r["method"] == label and r["implementation"] == a)
        tb = next((r["seconds"] for r in rows if r["method"] == label and r["implementation"] == b), float("nan"))
        return ta / tb

    daskred_peak = {r["method"]: r["peak_mb"] for r in rows if r["implementation"] == "daskred"}
    summary = {
        "frames": args.frames, "size": args.size, "cube_mb": cube_mb, "cpus": os.cpu_count(),
        "rows": rows,
        "ratios": {
            "median_daskred_over_ccdproc": ratio("median", "daskred", "ccdproc"),
            "median_daskred_over_numpy": ratio("median", "daskred", "numpy"),
            "median_daskred_over_bottleneck": ratio("median", "daskred", "bottleneck"),
            "sigma_daskred_over_ccdproc": ratio("sigma-clipped mean", "daskred", "ccdproc"),
            "sigma_daskred_over_numpy": ratio("sigma-clipped mean", "daskred", "numpy"),
            "median_daskred_peak_over_cube": daskred_peak["median"] / cube_mb,
            "sigma_daskred_peak_over_cube": daskred_peak["sigma-clipped mean"] / cube_mb,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    stem = f"combine_{args.frames}x{args.size}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# combine: {args.frames} frames of {args.size}x{args.size} float32 ({cube_mb:.0f} MB cube), "
             f"{os.cpu_count()} cores, best of {args.repeat}", "",
             "| method | implementation | time (s) | peak memory above a warmed-up process (MB) |", "|---|---|---:|---:|"]
    lines += [f"| {r['method']} | {r['implementation']} | {r['seconds']:.2f} | {r['peak_mb']:.0f} |" for r in rows]
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in summary["ratios"].items()]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

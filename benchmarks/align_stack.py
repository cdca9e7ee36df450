"""Register, resample and stack N dithered frames: daskred vs an in-memory numpy/scipy loop.

Writes ``max(--frames)`` synthetic dithered star fields (float32 FITS, known transforms) to a
temporary folder, then, for every N in ``--frames``, stacks the first N frames with

* ``daskred``  — ``find_transforms(open_frames(paths), method="asterism")``, then
  ``apply_transforms(..., interpolation="bilinear")`` and ``combine(method="mean")``
  computed on the threaded scheduler (the graph reads bands of rows; star lists are all
  that ``find_transforms`` brings back);
* ``numpy``    — what a notebook does: read every frame into one in-memory cube,
  ``astroalign.find_transform`` (sep detection) of each frame onto the first,
  ``scipy.ndimage.affine_transform`` (order 1, NaN outside) into a second cube, then
  ``np.nanmean`` over frames.  It holds both cubes, so its memory grows as N.

An extra daskred run at the largest N uses a smaller combine budget
(``daskred.block-bytes``, ``--small-budget`` MiB), showing that what daskred's peak grows
with is that budget (bands of every frame are sized to it), not N.

Each (implementation, N) runs in a fresh subprocess, so that its peak resident memory is
its own: the child imports everything, runs its implementation once on three small
frames (imports, thread pools, caches paid before the clock starts), then reports the
growth of ``ru_maxrss`` during the run and its wall time.  The children write their stacks;
the parent checks that both implementations agree (median |difference| over the common
area, relative to the sky noise of the stack) and that daskred's transforms match the
truth at the frame corners.  The load average is recorded before and after each run (the
machine may be shared).  Output: ``benchmarks/results/align_stack_<ny>x<nx>.json`` and
``.md``.

Usage::

    python benchmarks/align_stack.py                          # N = 8, 16, 32, 64 of 1024 x 1024
    python benchmarks/align_stack.py --frames 8 16 32 64 --shape 1501 2001 --repeat 2
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

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

RUNNER = r'''
import json, os, resource, sys, time, warnings
import numpy as np
from astropy.io import fits
import dask
import daskred as dr
import astroalign
from scipy import ndimage
warnings.simplefilter("ignore")
which, folder, n, out, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])


def run(paths):
    if which == "numpy":
        cube = np.stack([fits.getdata(p).astype(np.float32) for p in paths])
        aligned = np.empty(cube.shape, np.float32)
        aligned[0] = cube[0]
        matrices = [np.eye(3)]
        for i in range(1, len(cube)):
            transform, _ = astroalign.find_transform(cube[i], cube[0])
            m = np.asarray(transform.params, dtype=float)  # frame (x, y) -> reference (x, y)
            matrices.append(m)
            inv = np.linalg.inv(m)
            a = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])  # (row, col) form
            aligned[i] = ndimage.affine_transform(cube[i], a, offset=(inv[1, 2], inv[0, 2]), order=1,
                                                  mode="constant", cval=np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(aligned, axis=0), matrices
    with dask.config.set({"scheduler": "threads", "daskred.block-bytes": budget}):
        frames = dr.open_frames(paths)
        table = dr.find_transforms(frames, method="asterism")
        aligned = dr.apply_transforms(frames, table, interpolation="bilinear")
        stack = dr.combine(aligned["data"], method="mean").values
    return stack, list(table["matrix"])


run(sorted(os.path.join(folder, "warm", f) for f in os.listdir(os.path.join(folder, "warm"))))
paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".fits"))[:n]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
stack, matrices = run(paths)
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
np.save(out, stack)
print(json.dumps({"seconds": elapsed, "peak_mb": (peak - base) / 1024.0,
                  "matrices": [np.asarray(m).tolist() for m in matrices]}))
'''


def _render(shape: tuple[int, int], xy: np.ndarray, flux: np.ndarray, rng: np.random.Generator,
            sigma: float = 1.5, sky: float = 200.0, noise: float = 8.0) -> np.ndarray:
    """Gaussian stars on a flat sky with Gaussian noise (float32)."""
    ny, nx = shape
    image = rng.normal(sky, noise, shape)
    half = int(np.ceil(5 * sigma))
    grid = np.arange(-half, half + 2)
    for (x, y), f in zip(xy, flux):
        ix, iy = int(np.floor(x)), int(np.floor(y))
        xs, ys = ix + grid, iy + grid
        kx, ky = (xs >= 0) & (xs < nx), (ys >= 0) & (ys < ny)
        if not kx.any() or not ky.any():
            continue
        gx = np.exp(-((xs[kx] - x) ** 2) / (2 * sigma**2))
        gy = np.exp(-((ys[ky] - y) ** 2) / (2 * sigma**2))
        image[np.ix_(ys[ky], xs[kx])] += f / (2 * np.pi * sigma**2) * np.outer(gy, gx)
    return image.astype(np.float32)


def _similarity(dx: float, dy: float, rotation_deg: float) -> np.ndarray:
    t = np.radians(rotation_deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, dx], [s, c, dy], [0.0, 0.0, 1.0]])


def write_field(folder: Path, n: int, shape: tuple[int, int], seed: int, *, n_stars: int,
                max_shift: float, max_rotation: float) -> list[np.ndarray]:
    """Write n dithered frames of one star field; return the true frame -> reference matrices."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    ny, nx = shape
    pad = max_shift + 0.02 * max(shape)
    ref_xy = np.column_stack([rng.uniform(-pad, nx + pad, n_stars), rng.uniform(-pad, ny + pad, n_stars)])
    flux = 10 ** rng.uniform(3.0, 5.0, n_stars)
    truths = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if i == 0:
            m = np.eye(3)
        else:
            m = _similarity(*rng.uniform(-max_shift, max_shift, 2), rng.uniform(-max_rotation, max_rotation))
        truths.append(m)
        inv = np.linalg.inv(m)
        xy = ref_xy @ inv[:2, :2].T + inv[:2, 2]
        fits.PrimaryHDU(_render(shape, xy, flux, rng)).writeto(folder / f"frame{i:03d}.fits", overwrite=True)
    return truths


def run(which: str, folder: Path, n: int, out: Path, budget: int) -> dict:
    before = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, "-c", RUNNER, which, str(folder), str(n), str(out), str(budget)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} N={n} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_before"], result["load_after"] = before, os.getloadavg()[0]
    return result


def _corner_rms(matrix: np.ndarray, truth: np.ndarray, shape: tuple[int, int]) -> float:
    ny, nx = shape
    corners = np.array([[0.0, 0.0], [nx - 1.0, 0.0], [0.0, ny - 1.0], [nx - 1.0, ny - 1.0]])
    diff = corners @ (matrix[:2, :2] - truth[:2, :2]).T + (matrix[:2, 2] - truth[:2, 2])
    return float(np.sqrt(np.mean(np.sum(diff**2, axis=1))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64], help="values of N")
    parser.add_argument("--shape", type=int, nargs=2, default=[1024, 1024], metavar=("NY", "NX"))
    parser.add_argument("--stars", type=int, default=400, help="stars in the field")
    parser.add_argument("--max-shift", type=float, default=30.0, help="dither, pixels")
    parser.add_argument("--max-rotation", type=float, default=0.5, help="degrees")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs for each entry")
    parser.add_argument("--small-budget", type=float, default=8.0,
                        help="MiB of daskred.block-bytes for an extra daskred run at the largest N (0: none)")
    parser.add_argument("--folder", help="where to write the frames (default: a temporary folder)")
    args = parser.parse_args(argv)
    shape = (args.shape[0], args.shape[1])

    tmp = tempfile.TemporaryDirectory(prefix="daskred-align-bench-")
    folder = Path(args.folder) if args.folder else Path(tmp.name) / "frames"
    started = time.perf_counter()
    load_start = os.getloadavg()
    truths = write_field(folder, max(args.frames), shape, seed=0, n_stars=args.stars,
                         max_shift=args.max_shift, max_rotation=args.max_rotation)
    write_field(folder / "warm", 3, (200, 240), seed=1, n_stars=60, max_shift=5.0, max_rotation=0.5)
    frame_mb = shape[0] * shape[1] * 4 / 2**20
    print(f"wrote {max(args.frames)} frames of {shape[0]}x{shape[1]} in {time.perf_counter() - started:.0f} s; "
          f"load average {load_start[0]:.2f}", flush=True)

    import dask

    default_budget = int(dask.config.get("daskred.block-bytes", 32 * 2**20))
    small_budget = int(args.small_budget * 2**20)
    entries = [(n, which, default_budget) for n in args.frames for which in ("daskred", "numpy")]
    if small_budget > 0:
        entries.append((max(args.frames), f"daskred-{args.small_budget:g}MiB", small_budget))
    rows, stacks = [], {}
    for n, which, budget in entries:
        out = Path(tmp.name) / f"{which}_{n}.npy"
        runs = [run("numpy" if which == "numpy" else "daskred", folder, n, out, budget)
                for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        stacks[which, n] = np.load(out)
        corner = [_corner_rms(np.asarray(m), t, shape) for m, t in zip(best["matrices"], truths[:n])]
        rows.append({
            "implementation": which, "frames": n, "block_bytes": budget if which != "numpy" else None,
            "cube_mb": n * frame_mb, "seconds": best["seconds"], "peak_mb": max(r["peak_mb"] for r in runs),
            "transform_corner_rms_px_max": max(corner),
            "load_before": best["load_before"], "load_after": best["load_after"],
        })
        r = rows[-1]
        print(f"N={n:3d} {which:>12} {r['seconds']:7.2f} s  peak +{r['peak_mb']:6.0f} MB "
              f"(cube {r['cube_mb']:.0f} MB)  corner RMS <= {r['transform_corner_rms_px_max']:.3f} px  "
              f"load {r['load_before']:.1f}->{r['load_after']:.1f}", flush=True)
    for r in rows:
        # agreement of every stack with the in-memory baseline over their common area
        a, b = stacks[r["implementation"], r["frames"]], stacks["numpy", r["frames"]]
        both = np.isfinite(a) & np.isfinite(b)
        sky_noise = float(np.median(np.abs(b[both] - np.median(b[both])))) * 1.4826
        r["median_abs_diff_over_sky_noise"] = float(np.median(np.abs(a[both] - b[both]))) / sky_noise
        r["common_area_fraction"] = float(both.mean())

    def pick(which: str, n: int, key: str) -> float:
        return next(r[key] for r in rows if r["implementation"] == which and r["frames"] == n)

    lo, hi = min(args.frames), max(args.frames)
    ratios = {}
    for n in args.frames:
        ratios[f"N{n}_daskred_over_numpy_seconds"] = pick("daskred", n, "seconds") / pick("numpy", n, "seconds")
        ratios[f"N{n}_daskred_over_numpy_peak"] = pick("daskred", n, "peak_mb") / pick("numpy", n, "peak_mb")
    for which in ("daskred", "numpy"):
        ratios[f"{which}_peak_N{hi}_over_N{lo}"] = pick(which, hi, "peak_mb") / pick(which, lo, "peak_mb")
        ratios[f"{which}_seconds_N{hi}_over_N{lo}"] = pick(which, hi, "seconds") / pick(which, lo, "seconds")
    if small_budget > 0:
        which = f"daskred-{args.small_budget:g}MiB"
        ratios[f"N{hi}_{which}_over_numpy_peak"] = pick(which, hi, "peak_mb") / pick("numpy", hi, "peak_mb")
    load_end = os.getloadavg()
    summary = {
        "shape": list(shape), "frame_mb": frame_mb, "frames": args.frames, "stars": args.stars,
        "max_shift_px": args.max_shift, "max_rotation_deg": args.max_rotation, "repeat": args.repeat,
        "cpus": os.cpu_count(), "load_average_start": load_start, "load_average_end": load_end,
        "total_seconds": time.perf_counter() - started,
        "daskred_block_bytes": default_budget, "rows": rows, "ratios": ratios,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = f"align_stack_{shape[0]}x{shape[1]}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# align + stack: N dithered frames of {shape[0]}x{shape[1]} float32 ({frame_mb:.0f} MB each), "
        f"{os.cpu_count()} cores, best of {args.repeat}",
        "",
        f"Shifts up to {args.max_shift:g} px, rotations up to {args.max_rotation:g} deg, {args.stars} stars; "
        "registration + bilinear resampling + mean stack. Load average "
        f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end (shared machine).",
        f"daskred rows use the default combine budget daskred.block-bytes = {default_budget / 2**20:g} MiB; "
        "the 'daskred-<x>MiB' row sets it to x MiB. The numpy row holds the raw and the aligned cube.",
        "",
        "| N | implementation | time (s) | peak memory above a warmed-up process (MB) | cube (MB) "
        "| transforms vs truth, max corner RMS (px) | median abs(daskred - numpy) / sky noise |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['frames']} | {r['implementation']} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | "
              f"{r['cube_mb']:.0f} | {r['transform_corner_rms_px_max']:.3f} | "
              f"{r['median_abs_diff_over_sky_noise']:.2e} |" for r in rows]
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in ratios.items()]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

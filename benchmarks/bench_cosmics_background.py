"""Calibrate + cosmic rays + background: daskred (chunked, parallel) vs a serial per-frame loop.

Writes N raw frames (sky, stars, cosmic rays, bias level; seeded) plus a master bias and a
master flat as FITS, then times, each in a fresh subprocess (so that its peak resident
memory, ``ru_maxrss`` minus the memory after imports, is its own):

* ``loop, 1 thread``   — the reference recipe: for each frame, read it, ``(raw - bias) /
  flat``, ``astroscrappy.detect_cosmics``, photutils source mask (``detect_threshold`` /
  ``detect_sources`` / ``make_source_mask``) and ``Background2D``, subtract, write a
  ``.npy``; OpenMP limited to one thread (as ``OMP_NUM_THREADS=1``);
* ``loop, default threads`` — the same loop with astroscrappy's default OpenMP threads;
* ``daskred``          — ``dr.open_frames`` -> the same arithmetic -> ``detect_cosmics`` ->
  ``subtract_background``, written to Zarr on the threaded scheduler (one task per core,
  astroscrappy single-threaded inside each task);
* ``daskred, 2N``      — the same on twice as many frames, to show that memory does not
  grow with N.

All runs use the same parameters; the script also checks that daskred's cosmic-ray masks
and background-subtracted frames equal the loop's.  Output: JSON + a markdown table in
``benchmarks/results/``.

Usage::

    python benchmarks/bench_cosmics_background.py --frames 8 --size 1024
    python benchmarks/bench_cosmics_background.py --frames 8 --size 2048 --band 512
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

GAIN, RDNOISE, BOX = 1.5, 5.0, 64

RUNNER = r'''
import glob, json, resource, sys, time, warnings
import numpy as np
from astropy.io import fits
warnings.simplefilter("ignore")
which, folder, out, band, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
nframes = int(sys.argv[6])
GAIN, RDNOISE, BOX = __PARAMS__
paths = sorted(glob.glob(folder + "/raw/*.fits"))[:nframes]
bias = fits.getdata(folder + "/bias.fits").astype(np.float32)
flat = fits.getdata(folder + "/flat.fits").astype(np.float32)
scrappy = dict(gain=GAIN, readnoise=RDNOISE, satlevel=np.inf)
import astroscrappy
from threadpoolctl import threadpool_limits
from astropy.stats import SigmaClip
from photutils.background import Background2D
from photutils.segmentation import detect_sources, detect_threshold
import dask, daskred as dr, xarray as xr
from daskred.cosmics import detect_cosmics
from daskred.background import subtract_background
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if which.startswith("loop"):
    import contextlib
    limit = threadpool_limits(1, user_api="openmp") if which == "loop1" else contextlib.nullcontext()
    with limit:
        for i, path in enumerate(paths):
            data = (fits.getdata(path).astype(np.float32) - bias) / flat
            crmask, clean = astroscrappy.detect_cosmics(data, **scrappy)
            sc = SigmaClip(sigma=3.0, maxiters=10)
            threshold = detect_threshold(clean, 2.0, sigma_clip=sc)
            segm = detect_sources(clean, threshold, 5)
            sources = segm.make_source_mask(size=11) if segm is not None else np.zeros(clean.shape, bool)
            bkg = Background2D(clean, BOX, mask=sources, filter_size=3, sigma_clip=sc)
            np.save(f"{out}/sub{i:03d}.npy", clean - bkg.background)
            np.save(f"{out}/mask{i:03d}.npy", crmask)
else:
    frames = dr.open_frames(paths, chunks={"y": band})
    calibrated = (frames - xr.DataArray(bias, dims=("y", "x"))) / xr.DataArray(flat, dims=("y", "x"))
    calibrated = calibrated.astype(np.float32)
    cr = detect_cosmics(calibrated, **scrappy)
    sub = subtract_background(cr["data"], box_size=BOX, filter_size=3)
    ds = xr.Dataset({"sub": sub.drop_vars(list(sub.coords)), "mask": cr["mask"].drop_vars(list(cr["mask"].coords))})
    ds.attrs = {}
    for v in ds.variables.values():
        v.attrs = {}
    with dask.config.set(scheduler="threads", num_workers=workers):
        ds.to_zarr(out + "/result.zarr", mode="w")
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "peak_mb": (peak - base) / 1024.0, "base_mb": base / 1024.0}))
'''.replace("__PARAMS__", repr((GAIN, RDNOISE, BOX)))


def write_frames(folder: Path, n: int, size: int, seed: int) -> None:
    """Raw frames in ADU: bias level + flat * (sky + stars) + read noise + cosmic rays."""
    import numpy as np
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    bias = np.full((size, size), 300.0, dtype=np.float32) + rng.normal(0, 1.0, (size, size)).astype(np.float32)
    flat = (1.0 + 0.05 * np.cos(xx / size * 3) * np.cos(yy / size * 2)).astype(np.float32)
    fits.PrimaryHDU(bias).writeto(folder / "bias.fits", overwrite=True)
    fits.PrimaryHDU(flat).writeto(folder / "flat.fits", overwrite=True)
    sigma = 3.0 / 2.3548
    for i in range(n):
        path = folder / "raw" / f"frame{i:03d}.fits"
        if path.exists():
            continue
        electrons = np.full((size, size), 800.0)
        for _ in range(size * size // 4000):  # isolated-ish stars
            y0, x0 = rng.uniform(0, size, 2)
            y, x = int(y0), int(x0)
            y1, y2, x1, x2 = max(y - 8, 0), min(y + 9, size), max(x - 8, 0), min(x + 9, size)
            flux = 10 ** rng.uniform(3.3, 5.3)
            electrons[y1:y2, x1:x2] += flux / (2 * np.pi * sigma**2) * np.exp(
                -((yy[y1:y2, x1:x2] - y0) ** 2 + (xx[y1:y2, x1:x2] - x0) ** 2) / (2 * sigma**2))
        electrons = rng.poisson(electrons) + rng.normal(0, RDNOISE, electrons.shape)
        adu = electrons / GAIN * flat + bias
        for _ in range(size * size // 5000):  # cosmic rays
            y, x = rng.integers(0, size - 3, 2)
            adu[y:y + rng.integers(1, 4), x:x + rng.integers(1, 3)] += rng.uniform(200, 4000)
        fits.PrimaryHDU(adu.astype(np.float32)).writeto(path)


def run(which: str, folder: Path, out: Path, band: int, workers: int, nframes: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, which, str(folder), str(out), str(band), str(workers), str(nframes)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def agreement(loop_dir: Path, dask_dir: Path, n: int) -> dict:
    """Largest differences between daskred's results and the loop's."""
    import numpy as np
    import zarr

    group = zarr.open_group(str(dask_dir / "result.zarr"), mode="r")
    mask_diff, sub_diff = 0, 0.0
    for i in range(n):
        mask_diff += int(np.count_nonzero(np.load(loop_dir / f"mask{i:03d}.npy") != group["mask"][i]))
        sub_diff = max(sub_diff, float(np.nanmax(np.abs(np.load(loop_dir / f"sub{i:03d}.npy") - group["sub"][i]))))
    return {"mask_pixels_differing": mask_diff, "max_abs_difference_subtracted_adu": sub_diff}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--band", type=int, default=256, help="rows per dask chunk")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--folder", help="where to write the frames (default: a temporary folder)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 2N daskred run")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="daskred-bench-")
    work = Path(tmp.name)
    folder = Path(args.folder) if args.folder else work / "data"
    n_max = args.frames if args.no_scaling else 2 * args.frames
    write_frames(folder, n_max, args.size, seed=0)

    entries = [("loop, 1 thread", "loop1", args.frames), ("loop, default threads", "loopdefault", args.frames),
               ("daskred", "daskred", args.frames)]
    if not args.no_scaling:
        entries.append(("daskred, 2N frames", "daskred", 2 * args.frames))
    rows = []
    for label, which, n in entries:
        r = run(which, folder, work / label.replace(" ", "_").replace(",", ""), args.band, args.workers, n)
        rows.append({"implementation": label, "frames": n, "seconds": r["seconds"],
                     "frames_per_second": n / r["seconds"], "peak_mb": r["peak_mb"]})
        print(f"{label:>24} {n:3d} frames {r['seconds']:7.2f} s {n / r['seconds']:6.3f} fr/s "
              f"peak +{r['peak_mb']:6.0f} MB", flush=True)
    check = agreement(work / "loop_1_thread", work / "daskred", args.frames)

    fps = {r["implementation"]: r["frames_per_second"] for r in rows}
    frame_mb = args.size * args.size * 4 / 2**20
    summary = {
        "frames": args.frames, "size": args.size, "band": args.band, "workers": args.workers,
        "cpus": os.cpu_count(), "frame_mb": frame_mb, "rows": rows, "agreement": check,
        "ratios": {
            "daskred_over_loop_1_thread": fps["daskred"] / fps["loop, 1 thread"],
            "daskred_over_loop_default_threads": fps["daskred"] / fps["loop, default threads"],
        },
    }
    if not args.no_scaling:
        summary["ratios"]["daskred_peak_2N_over_N"] = rows[3]["peak_mb"] / rows[2]["peak_mb"]
    RESULTS.mkdir(exist_ok=True)
    stem = f"cosmics_background_{args.frames}x{args.size}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# calibrate + cosmics + background: {args.frames} frames of {args.size}x{args.size} "
        f"({frame_mb:.0f} MB each as float32), {os.cpu_count()} cores, {args.workers} dask workers, "
        f"bands of {args.band} rows",
        "",
        "| implementation | frames | time (s) | frames/s | peak memory above imports (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['implementation']} | {r['frames']} | {r['seconds']:.2f} | {r['frames_per_second']:.3f} | "
              f"{r['peak_mb']:.0f} |" for r in rows]
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in summary["ratios"].items()]
    lines += ["", f"daskred vs the 1-thread loop: {check['mask_pixels_differing']} cosmic-ray mask pixels differ, "
              f"largest difference of the background-subtracted frames {check['max_abs_difference_subtracted_adu']:.2g} ADU."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

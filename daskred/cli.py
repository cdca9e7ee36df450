"""The ``daskred`` command: a thin mapping of arguments onto the library.

Errors are one line naming the file and the fix, with a non-zero exit code; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import DaskredError

__all__ = ["main"]


def _cmd_scan(args: argparse.Namespace) -> int:
    import pandas as pd

    from .collection import scan, summarize

    table = scan(args.path, recursive=not args.no_recursive, check="pixels")
    if args.csv:
        out = Path(args.csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        table.drop(columns=["data_offset", "bitpix", "bzero", "bscale", "blank", "mtime"]).to_csv(out, index=False)
        print(f"wrote {len(table)} rows to {out}")
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 20):
        if args.summary:
            print(summarize(table).to_string(index=False))
        else:
            view = table[["path", "hdu", "imagetyp", "filter", "exptime", "night", "object", "shape", "binning"]]
            print(view.to_string(index=False))
            print()
            print(summarize(table).to_string(index=False))
    for path, reason in table.attrs.get("skipped", []):
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{len(table)} frames, {len(table.attrs.get('skipped', []))} skipped", file=sys.stderr)
    return 0


def _cmd_combine(args: argparse.Namespace) -> int:
    from .cluster import progress
    from .combine import combine
    from .io import open_frames, to_fits

    frames = open_frames(args.files, hdu=args.hdu)
    options = dict(method=args.method, clip=args.clip, sigma=args.sigma, sigma_lower=args.sigma_lower,
                   sigma_upper=args.sigma_upper, maxiters=args.maxiters, cenfunc=args.cenfunc,
                   stdfunc=args.stdfunc, nlow=args.nlow, nhigh=args.nhigh, scale=args.scale,
                   zero=args.zero, section=args.section, with_counts=args.counts)
    if args.clip == "ccdclip":
        options.update(gain=args.gain, rdnoise=args.rdnoise, snoise=args.snoise)
    result = combine(frames, **options)
    header = {"COMBMETH": args.method, "COMBCLIP": str(args.clip or "none")}
    start = time.perf_counter()
    with progress(f"combining {frames.sizes['frame']} frames -> {args.output}"):
        out = to_fits(result, args.output, header=header, overwrite=args.overwrite)
    print(f"wrote {out} ({time.perf_counter() - start:.1f} s)")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate

    def report(done: int, total: int, path: Path) -> None:
        print(f"\r[{done}/{total}] {path.name:<40}", end="", file=sys.stderr, flush=True)

    shape = tuple(args.shape) if args.shape else None
    result = simulate(args.directory, scale=args.scale, shape=shape, nights=args.nights,
                      filters=args.filters, n_science=args.n_science, seed=args.seed,
                      overwrite=args.overwrite, progress=report)
    print(file=sys.stderr)
    print(result.summary() if hasattr(result, "summary") else result)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .pipeline import demo

    report = demo(args.directory, overwrite=True)
    print(report.text if hasattr(report, "text") else report)
    return 0


def _cmd_reduce(args: argparse.Namespace) -> int:
    from .pipeline import PipelineConfig, reduce

    config = PipelineConfig.load(args.config) if args.config else PipelineConfig()
    overrides = {}
    if args.keep_calibrated:
        overrides["keep_calibrated"] = True
    config = config.replace(**overrides) if overrides else config
    report = reduce(args.raw, out=args.out, config=config, cache=None if args.no_cache else args.cache,
                    workers=args.workers,
                    threads_per_worker=args.threads_per_worker, memory_limit=args.memory_limit,
                    scheduler=args.scheduler, on_error=args.on_error)
    print(report.text if hasattr(report, "text") else report)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from .config import default_config_text

    print(default_config_text())
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from . import __version__
    from .cache import Cache

    store = Cache(args.directory, version=__version__)
    if args.action == "clear":
        removed = store.clear(args.stage or None)
        print(f"removed {removed} entries from {args.directory}")
        return 0
    rows = store.entries()
    for row in rows:
        note = "" if row["complete"] else "  (interrupted write, rewritten by the next run)"
        print(f"{row['stage']:<12} {row['bytes'] / 2**20:10.1f} MB  {row['key']}{note}")
    print(f"{len(rows)} entries, {sum(r['bytes'] for r in rows) / 2**20:.1f} MB in {args.directory}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="daskred", description="Out-of-core, parallel CCD image reduction.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="simulate a small multi-night dataset and reduce it end to end")
    p.add_argument("directory", nargs="?", default="daskred-demo")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("simulate", help="write a realistic raw dataset (+ truth catalog)")
    p.add_argument("directory")
    p.add_argument("--scale", default="small", choices=["tiny", "small", "medium", "large"])
    p.add_argument("--shape", type=int, nargs=2, metavar=("NY", "NX"), help="imaging area in pixels")
    p.add_argument("--nights", type=int, default=2)
    p.add_argument("--filters", nargs="+", default=["V", "R"])
    p.add_argument("--n-science", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("scan", help="table of frames: type, filter, exptime, night, shape")
    p.add_argument("path", nargs="+")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--summary", action="store_true", help="print only the counts per group")
    p.add_argument("--no-recursive", action="store_true")
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser("combine", help="one combine of FITS files, any method/rejection")
    p.add_argument("files", nargs="+")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--method", default="median", choices=["median", "mean", "sum", "min", "max"])
    p.add_argument("--clip", choices=["sigma", "mad", "minmax", "range", "percentile", "winsorized", "ccdclip"])
    p.add_argument("--sigma", type=float, default=3.0)
    p.add_argument("--sigma-lower", type=float)
    p.add_argument("--sigma-upper", type=float)
    p.add_argument("--maxiters", type=int, default=5)
    p.add_argument("--cenfunc", default="median", choices=["median", "mean"])
    p.add_argument("--stdfunc", default="std", choices=["std", "mad_std"])
    p.add_argument("--nlow", type=int, default=1)
    p.add_argument("--nhigh", type=int, default=1)
    p.add_argument("--gain", type=float)
    p.add_argument("--rdnoise", type=float)
    p.add_argument("--snoise", type=float, default=0.0)
    p.add_argument("--scale", choices=["exptime", "median", "mean"])
    p.add_argument("--zero", choices=["median", "mean"])
    p.add_argument("--section", help="FITS section for scale/zero statistics, e.g. [100:900,100:900]")
    p.add_argument("--hdu", help="image HDU (number or EXTNAME) in multi-extension files")
    p.add_argument("--counts", action="store_true", help="add count/rejection extensions")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_combine)

    p = sub.add_parser("reduce", help="the whole reduction of a directory of raw frames")
    p.add_argument("raw", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--config")
    p.add_argument("--cache", default="auto",
                   help="checkpoint folder or fsspec URL such as s3://bucket/cache (default: OUT/.cache)")
    p.add_argument("--no-cache", action="store_true", help="compute every stage, store nothing")
    p.add_argument("--workers", type=int)
    p.add_argument("--threads-per-worker", type=int)
    p.add_argument("--memory-limit")
    p.add_argument("--scheduler", help="address of a running dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--keep-calibrated", action="store_true")
    p.add_argument("--on-error", choices=["skip", "raise"], default="skip")
    p.set_defaults(func=_cmd_reduce)

    p = sub.add_parser("config", help="print the commented default configuration")
    p.add_argument("--default", action="store_true", help="(the default) print the default configuration")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("cache", help="list or clear the stage checkpoints of a reduction")
    p.add_argument("action", choices=["ls", "clear"])
    p.add_argument("directory", help="cache folder or URL (OUT/.cache by default for `daskred reduce`)")
    p.add_argument("--stage", nargs="*", help="only these stages (masters, calibrated, cosmics, ...)")
    p.set_defaults(func=_cmd_cache)

    sub.add_parser("bench", help="combine-strategy benchmark report (daskred bench --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``daskred`` command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own options, passed through untouched
        from .bench import main as bench_main

        try:
            return int(bench_main(argv[1:]) or 0)
        except DaskredError as err:
            print(f"daskred: error: {err}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "combine" and args.hdu is not None and args.hdu.isdigit():
        args.hdu = int(args.hdu)
    try:
        return int(args.func(args) or 0)
    except (DaskredError, OSError) as err:  # OSError: disk full, permissions, missing paths
        if args.debug:
            raise
        print(f"daskred: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - only dask's KilledWorker is turned into a message
        if type(err).__name__ != "KilledWorker" or args.debug:
            raise
        print("daskred: error: a dask worker died repeatedly while running a task, most often by exceeding "
              "its memory limit; give workers more memory (--memory-limit) or lower the block budget "
              "(DASK_DASKRED__BLOCK_BYTES, default 32 MiB); completed stages are cached, re-run to resume",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("daskred: interrupted; outputs already written are complete, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

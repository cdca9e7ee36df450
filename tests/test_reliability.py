"""Reliability: bad inputs, inputs never written, atomic outputs, determinism, resource limits.

Every dataset is simulated here (``daskred.simulate``, tiny scale) and every bad file is
generated from it in ``tmp_path``; no binary is checked in.  The command line runs
in-process through :func:`daskred.cli.main` (stdout/stderr captured) except where a test
needs a process to kill or another user.

Products are compared by their pixel values (``np.array_equal`` with NaN equal to NaN) when
headers legitimately differ (input paths in HISTORY), and byte for byte when they must not.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

import daskred as dr
from daskred.cli import main
from daskred.errors import FitsFileError
from daskred.simulate import simulate

pytestmark = pytest.mark.slow

QUIET_CONFIG = "[output]\nquicklook = false\n"


# ------------------------------------------------------------------ helpers
def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``daskred ARGV`` in-process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-2000:]


def error_line(stderr: str) -> str:
    """The one ``daskred: error:`` line (and check there is exactly one)."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("daskred: error:")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


def fits_planes(path: Path) -> list[np.ndarray]:
    with fits.open(path) as hdul:
        return [np.array(h.data) for h in hdul if h.data is not None]


def same_pixels(a: Path, b: Path) -> bool:
    pa, pb = fits_planes(a), fits_planes(b)
    return len(pa) == len(pb) and all(x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
                                      for x, y in zip(pa, pb))


def products(out: Path) -> dict[str, Path]:
    """Final-named FITS products (masters, stacks) by path relative to OUT."""
    return {str(p.relative_to(out)): p for sub in ("masters", "stacks") for p in sorted((out / sub).rglob("*.fits"))}


def fingerprint(folder: Path) -> dict[str, tuple[str, int, int]]:
    """sha256, size and mtime (ns) of every file under ``folder`` (links not followed)."""
    prints = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            prints[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns)
    return prints


def rewrite(src: Path, dst: Path, *, data=None, drop=(), cards=None) -> Path:
    """Copy a raw frame with other pixels and/or header cards (primary HDU)."""
    with fits.open(src) as hdul:
        header = hdul[0].header.copy()
        pixels = np.array(hdul[0].data) if data is None else data
    for key in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE", *drop):
        header.remove(key, ignore_missing=True)
    for key, value in (cards or {}).items():
        header[key] = value
    fits.PrimaryHDU(pixels, header=header).writeto(dst)
    return dst


# ------------------------------------------------------------------ the bad-input corpus
#: case -> (regular expression the skip reason must match, whether scan already skips it)
CORPUS_REASONS = {
    "truncated": (r"truncated: HDU 0 needs \d+ bytes, the file holds \d+", True),
    "not_fits": (r"not a FITS file", True),
    "empty": (r"empty file \(0 bytes\)", True),
    "header_only": (r"no 2-D image HDU \(HDU 0: header only \(NAXIS=0\)\)", True),
    "naxis1": (r"no 2-D image HDU \(HDU 0: NAXIS=1", True),
    "naxis3": (r"no 2-D image HDU \(HDU 0: NAXIS=3 cube 2 x \d+ x \d+\)", True),
    "no_exptime": (r"no exposure time in the header of this light frame", True),
    "text_exptime": (r"exposure time 'long' is not a number", True),
    "bad_date": (r"DATE-OBS '13/03/2024 at dusk' is not a date", True),
    "zero_flat": (r"every sampled pixel equals 0 ADU", True),
    "saturated_flat": (r"saturated: median 65535 ADU is at or above SATURATE", True),
    "blank_light": (r"every sampled pixel is NaN or infinite", True),
    "duplicate": (r"duplicate of .*bias_\d+\.fits \(same header and pixels\)", True),
    "broken_link": (r"broken symbolic link to .*does_not_exist\.fits", True),
    "mosaic": (r"holds 2 image HDUs", True),
}

#: frames of a setup without calibrations: the reduction must skip their group
SETUP_REASONS = {
    "other_size": r"not reduced: no master bias for binning 1x1, shape 81x",
    "binned": r"not reduced: no master bias for binning 2x2",
}


def build_corpus(good: dict[str, list[Path]], folder: Path) -> dict[str, Path]:
    """Write one file per bad-input case into ``folder``; returns case -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    light, bias, dark, flat = good["light"][0], good["bias"][0], good["dark"][0], good["flat"][0]
    files: dict[str, Path] = {}

    raw = light.read_bytes()
    header_bytes = len(fits.getheader(light).tostring())
    files["truncated"] = folder / "truncated.fits"
    files["truncated"].write_bytes(raw[: header_bytes + (len(raw) - header_bytes) // 2])
    files["not_fits"] = folder / "observing_log.fits"
    files["not_fits"].write_text("observing log, night of 2024-03-12\n" * 50)
    files["empty"] = folder / "empty.fits"
    files["empty"].write_bytes(b"")
    header = fits.getheader(bias)
    keep = [c for c in header.cards if c.keyword not in
            ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE")]
    files["header_only"] = folder / "header_only.fits"
    fits.PrimaryHDU(header=fits.Header(keep)).writeto(files["header_only"])
    bias_data = fits.getdata(bias)
    files["naxis1"] = rewrite(bias, folder / "naxis1.fits", data=bias_data[0].copy())
    files["naxis3"] = rewrite(light, folder / "naxis3.fits",
                              data=np.stack([fits.getdata(p) for p in good["light"][:2]]))
    files["no_exptime"] = rewrite(light, folder / "no_exptime.fits", drop=("EXPTIME",),
                                  cards={"IMAGEID": 903, "DATE-OBS": "2024-03-13T05:20:00.000"})
    files["text_exptime"] = rewrite(dark, folder / "text_exptime.fits", cards={"EXPTIME": "long", "IMAGEID": 904})
    files["bad_date"] = rewrite(bias, folder / "bad_date.fits", drop=("MJD-OBS",),
                                cards={"DATE-OBS": "13/03/2024 at dusk", "IMAGEID": 905})
    flat_data = fits.getdata(flat)
    files["zero_flat"] = rewrite(flat, folder / "zero_flat.fits", data=np.zeros_like(flat_data),
                                 cards={"IMAGEID": 906, "DATE-OBS": "2024-03-13T00:50:00.000"})
    files["saturated_flat"] = rewrite(flat, folder / "saturated_flat.fits", data=np.full_like(flat_data, 65535),
                                      cards={"IMAGEID": 907, "DATE-OBS": "2024-03-13T00:51:00.000"})
    files["blank_light"] = rewrite(light, folder / "blank_light.fits",
                                   data=np.full(fits.getdata(light).shape, np.nan, np.float32),
                                   cards={"IMAGEID": 908, "DATE-OBS": "2024-03-13T05:30:00.000"})
    files["duplicate"] = folder / "copy_of_bias.fits"
    shutil.copyfile(good["bias"][1], files["duplicate"])
    files["broken_link"] = folder / "broken_link.fits"
    os.symlink(folder / "does_not_exist.fits", files["broken_link"])
    with fits.open(flat) as hdul:
        amp = hdul[0].data
        primary = fits.PrimaryHDU(header=fits.Header(
            [c for c in hdul[0].header.cards if c.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2",
                                                                  "EXTEND", "BZERO", "BSCALE")]))
        primary.header["IMAGEID"] = 909
        primary.header["DATE-OBS"] = "2024-03-13T00:52:00.000"
    files["mosaic"] = folder / "two_amplifiers.fits"
    fits.HDUList([primary, fits.ImageHDU(amp, name="AMP1"), fits.ImageHDU(amp[::-1].copy(), name="AMP2")]
                 ).writeto(files["mosaic"])
    return files


def build_setup_corpus(good: dict[str, list[Path]], folder: Path) -> dict[str, Path]:
    """Science frames of a readout setup that has no calibration frames."""
    folder.mkdir(parents=True, exist_ok=True)
    light = good["light"][0]
    data = fits.getdata(light)
    files = {}
    files["other_size"] = rewrite(light, folder / "subframe.fits", data=data[:-20].copy(),
                                  cards={"IMAGEID": 901, "DATE-OBS": "2024-03-13T05:00:00.000",
                                         "TRIMSEC": "[11:141,1:81]", "DATASEC": "[11:141,1:81]",
                                         "BIASSEC": "[147:171,1:81]"})
    even = data.astype(np.int64)[: data.shape[0] // 2 * 2, : data.shape[1] // 2 * 2]
    binned = (even.reshape(even.shape[0] // 2, 2, even.shape[1] // 2, 2).sum(axis=(1, 3)) // 4).astype(np.uint16)
    files["binned"] = rewrite(light, folder / "binned.fits", data=binned,
                              cards={"CCDSUM": "2 2", "TRIMSEC": "[6:70,1:50]", "DATASEC": "[6:70,1:50]",
                                     "BIASSEC": "[74:85,1:50]", "IMAGEID": 902,
                                     "DATE-OBS": "2024-03-13T05:10:00.000"})
    return files


# ------------------------------------------------------------------ shared datasets
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def dataset(work):
    """A tiny one-night, one-filter raw dataset; returns (raw folder, files by kind, config path)."""
    sim = simulate(work / "sim", scale="tiny", nights=1, filters=("V",), n_bias=3, n_dark=2, n_flat=3,
                   n_science=3, n_standard=0, seed=3)
    files = sorted(sim.raw_dir.rglob("*.fits"))
    good = {kind: [p for p in files if p.name.startswith(prefix)]
            for kind, prefix in (("bias", "bias"), ("dark", "dark"), ("flat", "flat"), ("light", "simfield"))}
    assert all(good.values())
    config = work / "quiet.toml"
    config.write_text(QUIET_CONFIG)
    return sim.raw_dir, good, config


@pytest.fixture(scope="module")
def good_run(work, dataset):
    """The reference reduction of the good files, with OUT inside (a copy of) the input folder.

    Returns (input folder, OUT, fingerprints of the inputs before the run).
    """
    raw, _, config = dataset
    inputs = work / "good"
    shutil.copytree(raw, inputs)
    before = fingerprint(inputs)
    out = inputs / "reduced"
    code, stdout, stderr = run_cli(["reduce", inputs, "--out", out, "--config", config])
    assert code == 0, stderr[-3000:]
    assert_no_traceback(stderr)
    assert products(out), "the reference run wrote no masters/stacks"
    return inputs, out, before


@pytest.fixture(scope="module")
def mixed(work, dataset):
    """The good files plus the whole bad-input corpus in one folder."""
    raw, good, _ = dataset
    folder = work / "mixed"
    shutil.copytree(raw, folder)
    files = build_corpus(good, folder / "zz_bad")  # sorts after the night folder
    return folder, files


# ------------------------------------------------------------------ bad inputs: scan
def test_scan_lists_good_frames_and_skips_each_bad_file_with_one_line(mixed, dataset):
    folder, files = mixed
    code, stdout, stderr = run_cli(["scan", folder])
    assert code == 0
    assert_no_traceback(stderr)
    skipped = {ln.split(": ", 1)[0].removeprefix("skipped "): ln.split(": ", 1)[1]
               for ln in stderr.splitlines() if ln.startswith("skipped ")}
    for case, (pattern, _) in CORPUS_REASONS.items():
        path = str(files[case])
        assert path in skipped, f"{case} was not reported as skipped:\n{stderr}"
        assert __import__("re").search(pattern, skipped[path]), (case, skipped[path])
    # the good frames are listed, the bad ones are not
    raw, good, _ = dataset
    for paths in good.values():
        for p in paths:
            assert p.name in stdout
    for case, path in files.items():
        assert str(path) not in stdout, case
    assert f"{sum(len(v) for v in good.values())} frames, {len(CORPUS_REASONS)} skipped" in stderr


def test_scan_strict_mode_raises_naming_the_file(mixed):
    _, files = mixed
    for case in CORPUS_REASONS:
        with pytest.raises(dr.errors.DaskredError) as info:
            dr.scan([files[case]] if case != "duplicate" else [files[case], files[case].parent.parent / "20240312"],
                    on_error="raise", check="pixels")
        assert files[case].name in str(info.value), (case, str(info.value))
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------ bad inputs: reduce
@pytest.fixture(scope="module")
def mixed_run(work, mixed, dataset):
    folder, files = mixed
    _, _, config = dataset
    out = work / "out_mixed"
    code, stdout, stderr = run_cli(["reduce", folder, "--out", out, "--config", config])
    return code, stdout, stderr, out


def test_reduce_skips_every_bad_file_with_its_reason_in_report_json(mixed, mixed_run):
    _, files = mixed
    code, stdout, stderr, out = mixed_run
    assert code == 0, stderr[-3000:]
    assert_no_traceback(stderr)
    report = json.loads((out / "report.json").read_text())
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped"]}
    for case, (pattern, _) in CORPUS_REASONS.items():
        reason = reasons.get(str(files[case]))
        assert reason is not None, f"{case} missing from report.json skipped"
        assert "\n" not in reason
        assert __import__("re").search(pattern, reason), (case, reason)
        # and in the terminal (the report text printed at the end)
        assert f"- {files[case]}: " in stdout, case


def test_reduce_on_good_and_bad_files_gives_the_stacks_of_the_good_files(good_run, mixed_run):
    _, good_out, _ = good_run
    code, _, stderr, out = mixed_run
    assert code == 0, stderr[-3000:]
    ref, got = products(good_out), products(out)
    assert set(got) == set(ref) and any(k.startswith("stacks") for k in ref)
    for name in ref:
        assert same_pixels(ref[name], got[name]), name


@pytest.mark.parametrize("case", sorted(CORPUS_REASONS))
def test_reduce_strict_mode_stops_with_one_line_naming_the_file(case, mixed, dataset, tmp_path):
    _, files = mixed
    assert_strict_stop(dataset, files[case], tmp_path / "out")
    assert not products(tmp_path / "out"), "strict mode stopped at the scan: nothing may be written"


def assert_strict_stop(dataset, bad_file, out):
    """``reduce --on-error raise`` on the good raw folder plus one bad file: a one-line error naming it."""
    raw, _, config = dataset
    code, _, stderr = run_cli(["reduce", raw, bad_file, "--out", out, "--config", config, "--on-error", "raise"])
    assert code == 2
    assert_no_traceback(stderr)
    line = error_line(stderr)
    assert bad_file.name in line, line


@pytest.fixture(scope="module")
def setup_corpus(work, dataset):
    raw, good, _ = dataset
    folder = work / "setups"
    shutil.copytree(raw, folder)
    return folder, build_setup_corpus(good, folder / "zz_other_setup")


def test_science_frames_without_calibrations_of_their_setup_are_skipped(setup_corpus, good_run, dataset, work):
    folder, files = setup_corpus
    _, _, config = dataset
    out = work / "out_setups"
    code, stdout, stderr = run_cli(["reduce", folder, "--out", out, "--config", config])
    assert_no_traceback(stderr)
    assert code == 0, error_line(stderr)
    reasons = {e["path"]: e["reason"] for e in json.loads((out / "report.json").read_text())["skipped"]}
    for case, pattern in SETUP_REASONS.items():
        assert re.search(pattern, reasons.get(str(files[case]), "")), (case, reasons)
    ref = products(good_run[1])
    for name, path in products(out).items():
        assert same_pixels(ref[name], path), name


@pytest.mark.parametrize("case", ["other_size"])  # "binned" takes the same path (time budget)
def test_science_frames_without_calibrations_stop_strict_mode(case, setup_corpus, dataset, tmp_path):
    _, files = setup_corpus
    assert_strict_stop(dataset, files[case], tmp_path / "out")


def test_compressed_and_multi_extension_files_are_used_like_plain_ones(work, dataset, good_run):
    raw, good, config = dataset
    folder = work / "packed"
    shutil.copytree(raw, folder)
    # one bias fpacked (lossless Rice, integer data), one flat and one light as a primary header
    # plus an image extension (and a table extension), as modern cameras write them
    bias = folder / good["bias"][0].relative_to(raw)
    with fits.open(bias) as hdul:
        header, data = hdul[0].header.copy(), np.array(hdul[0].data)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=header, compression_type="RICE_1")]
                 ).writeto(bias.with_suffix(".fits.fz"))
    bias.unlink()
    for kind in ("flat", "light"):
        path = folder / good[kind][1].relative_to(raw)
        with fits.open(path) as hdul:
            header, data = hdul[0].header.copy(), np.array(hdul[0].data)
        for key in ("SIMPLE", "EXTEND"):
            header.remove(key, ignore_missing=True)
        table = fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.arange(3.0))], name="STARS")
        path.unlink()
        fits.HDUList([fits.PrimaryHDU(header=fits.Header([c for c in header.cards if c.keyword not in
                                                          ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "BZERO", "BSCALE")])),
                      fits.ImageHDU(data, header=header, name="SCI"), table]).writeto(path)
    table = dr.scan(folder, check="pixels")
    assert not table.attrs["skipped"]
    n_files = sum(len(v) for v in good.values())
    assert sorted(table["hdu"].tolist()) == [0] * (n_files - 3) + [1] * 3
    out = work / "out_packed"
    code, _, stderr = run_cli(["reduce", folder, "--out", out, "--config", config])
    assert code == 0, stderr[-3000:]
    ref = products(good_run[1])
    got = products(out)
    assert set(got) == set(ref)
    for name in ref:
        assert same_pixels(ref[name], got[name]), name


def test_nan_inf_and_saturated_pixels_are_masked_not_stacked(work, dataset, good_run):
    raw, good, config = dataset
    folder = work / "holes"
    shutil.copytree(raw, folder)
    # a light with NaN and +/-inf pixels (float BITPIX) and a light with a saturated patch
    holes = folder / good["light"][1].relative_to(raw)
    data = fits.getdata(holes).astype(np.float32)
    data[30:45, 40:60] = np.nan
    data[60:70, 80:100] = np.inf
    data[75:80, 20:30] = -np.inf
    holes.unlink()
    rewrite(good["light"][1], holes, data=data)
    hot = folder / good["light"][2].relative_to(raw)
    data = np.array(fits.getdata(hot))
    data[20:50, 60:90] = 65535
    hot.unlink()
    rewrite(good["light"][2], hot, data=data)
    out = work / "out_holes"
    code, _, stderr = run_cli(["reduce", folder, "--out", out, "--config", config])
    assert code == 0, stderr[-3000:]
    # calibrated checkpoint: the bad pixels are masked (trimmed grid: raw x - 10 prescan columns)
    (store,) = sorted((out / ".cache" / "calibrated").glob("*.zarr"))
    cal = xr.open_zarr(store, consolidated=False)
    paths = [str(p) for p in cal["path"].values]
    frame = cal.isel(frame=paths.index(str(holes)))
    values, mask = frame["data"].values, frame["mask"].values
    assert not np.isinf(values).any()
    for ys, xs in ((slice(30, 45), slice(30, 50)), (slice(60, 70), slice(70, 90)), (slice(75, 80), slice(10, 20))):
        assert mask[ys, xs].all() or np.isnan(values[ys, xs]).all()
    frame = cal.isel(frame=paths.index(str(hot)))
    assert frame["mask"].values[20:50, 50:80].all()
    # the stack: no infinity, and no 900-pixel patch of ~20000 ADU (one saturated frame in
    # a mean of three); stars make a few bright pixels in both
    (stack_name,) = [k for k in products(out) if k.startswith("stacks")]
    got = fits.getdata(out / stack_name)
    ref = fits.getdata(good_run[1] / stack_name)
    assert not np.isinf(got).any()
    assert abs(np.isfinite(got).sum() - np.isfinite(ref).sum()) < 0.05 * got.size  # grid may grow by a row/column
    assert abs(int(np.sum(got > 10000)) - int(np.sum(ref > 10000))) < 100
    assert np.nanmax(got) <= np.nanmax(ref) * 1.1


# ------------------------------------------------------------------ inputs never written
def test_inputs_are_never_written_even_with_out_inside_the_input_folder(good_run, dataset):
    inputs, out, before = good_run
    raw, _, config = dataset
    first = {name: path.read_bytes() for name, path in products(out).items()}
    # a second run scans the products of the first inside its input folder: they are
    # recognised (PROCSOFT) and skipped, so the results do not change
    code, stdout, stderr = run_cli(["reduce", inputs, "--out", out, "--config", config])
    assert code == 0, stderr[-3000:]
    after = fingerprint(inputs)
    for path, stamp in before.items():
        assert after[path] == stamp, f"{path} was modified"
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"] == sum(1 for p in before if p.endswith(".fits"))
    assert {name: path.read_bytes() for name, path in products(out).items()} == first
    # nothing but the good files went in
    assert all("written by daskred" in e["reason"] for e in report["skipped"] if str(out) in e["path"])


# ------------------------------------------------------------------ determinism
def test_outputs_do_not_depend_on_listing_order_or_threads(work, dataset, good_run):
    raw, good, config = dataset
    inputs, ref_out, _ = good_run
    listed = [inputs / p.relative_to(raw) for kind in ("light", "flat", "dark", "bias") for p in reversed(good[kind])]
    out = work / "out_order"
    with dask.config.set(num_workers=1):
        code, _, stderr = run_cli(["reduce", *listed, "--out", out, "--config", config])
    assert code == 0, stderr[-3000:]
    ref, got = products(ref_out), products(out)
    assert set(ref) == set(got)
    for name in ref:
        assert same_pixels(ref[name], got[name]), name
        # headers too, but DRKEY (the product's cache key) names the cache location
        ha, hb = fits.getheader(ref[name]), fits.getheader(got[name])
        for h in (ha, hb):
            h.remove("DRKEY", ignore_missing=True)
        assert ha.tostring() == hb.tostring(), name


# ------------------------------------------------------------------ interruptions
def _spawn_reduce(raw: Path, out: Path, config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "daskred.cli", "reduce", str(raw), "--out", str(out),
                             "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; False if it finished first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.wait()
    return False


def _assert_nothing_partial(out: Path) -> None:
    """Every final-named file opens and reads completely; temporary files are hidden names."""
    for path in out.rglob("*"):
        hidden = any(part.startswith(".") and part != ".cache" for part in path.relative_to(out).parts)
        if hidden or not path.is_file():
            continue
        if path.suffix == ".fits":
            with fits.open(path) as hdul:
                hdul.verify("exception")
                for hdu in hdul:
                    _ = None if hdu.data is None else np.asarray(hdu.data).sum()
        elif path.suffix == ".json":
            json.loads(path.read_text())
    for store in (out / ".cache").glob("*/*.zarr"):
        xr.open_zarr(store, consolidated=False).load()


def test_sigkill_leaves_no_partial_file_and_a_rerun_matches(work, dataset, good_run):
    raw, _, config = dataset
    out = work / "out_killed"
    points = [
        lambda: any((out / ".cache").glob("*/.*.tmp")),            # a checkpoint being written
        lambda: any((out / ".cache" / "calibrated").glob("*.zarr")),  # masters done, science under way
    ]
    killed = 0
    for ready in points:
        proc = _spawn_reduce(raw, out, config)
        killed += _kill_when(proc, ready)
        _assert_nothing_partial(out)
    assert killed >= 1, "the run finished before any interruption point"
    code, _, stderr = run_cli(["reduce", raw, "--out", out, "--config", config])
    assert code == 0, stderr[-3000:]
    _assert_nothing_partial(out)
    ref, got = products(good_run[1]), products(out)
    assert set(ref) == set(got)
    for name in ref:
        assert same_pixels(ref[name], got[name]), name


# ------------------------------------------------------------------ permissions
def test_unreadable_file_is_skipped_or_named(dataset, tmp_path):
    """chmod 000 does not stop root: as root, run the command without the capabilities
    that bypass file permissions (setpriv), so the file is really unreadable."""
    raw, good, _ = dataset
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: a chmod 000 file stays readable")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    folder = tmp_path / "raw"
    folder.mkdir()
    for p in good["bias"]:
        shutil.copy(p, folder / p.name)
    locked = folder / good["bias"][0].name
    locked.chmod(0)
    probe = subprocess.run([*prefix, sys.executable, "-c", f"open({str(locked)!r}, 'rb')"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("a chmod 000 file is still readable here (capabilities cannot be dropped)")
    # both commands in one interpreter (imports cost seconds); stderr of each goes to a file
    script = (
        "import sys, contextlib\n"
        "from daskred.cli import main\n"
        "for name, argv in ((sys.argv[1], ['scan', sys.argv[3]]),\n"
        "                   (sys.argv[2], ['reduce', sys.argv[3], '--out', sys.argv[4], '--on-error', 'raise'])):\n"
        "    with open(name, 'w') as fh, contextlib.redirect_stderr(fh), contextlib.redirect_stdout(sys.__stdout__):\n"
        "        code = main(argv)\n"
        "    print(name, code)\n"
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    done = subprocess.run([*prefix, sys.executable, "-c", script, str(logs / "scan.txt"), str(logs / "reduce.txt"),
                           str(folder), str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert_no_traceback(done.stderr)
    codes = dict(line.split() for line in done.stdout.splitlines() if line.startswith(str(logs)))
    scan_err, reduce_err = (logs / "scan.txt").read_text(), (logs / "reduce.txt").read_text()
    assert codes[str(logs / "scan.txt")] == "0", scan_err[-2000:]
    assert_no_traceback(scan_err)
    line = next(ln for ln in scan_err.splitlines() if ln.startswith(f"skipped {locked}: "))
    assert "Permission denied" in line
    assert f"{len(good['bias']) - 1} frames, 1 skipped" in scan_err
    assert codes[str(logs / "reduce.txt")] == "2", reduce_err[-2000:]
    assert_no_traceback(reduce_err)
    assert locked.name in error_line(reduce_err) and "Permission denied" in error_line(reduce_err)


# ------------------------------------------------------------------ disk full
@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and mount rights; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_disk_full_while_writing_gives_a_clear_error_and_no_file(tiny_disk):
    noise = np.random.default_rng(5).normal(size=(301, 333)).astype(np.float32)  # does not compress
    image = xr.DataArray(noise, dims=("y", "x")).chunk({"y": 50})
    with pytest.raises(FitsFileError, match=r"big\.fits: cannot write \(No space left on device\)"):
        dr.to_fits(image, tiny_disk / "big.fits")
    assert not os.listdir(tiny_disk)
    with pytest.raises(FitsFileError, match=r"big\.zarr: cannot write \(No space left on device\)"):
        dr.to_zarr(image, tiny_disk / "big.zarr")
    assert not os.listdir(tiny_disk)  # the temporary store is removed too


def test_reduce_onto_a_full_disk_stops_with_one_line(tiny_disk, dataset):
    raw, _, config = dataset
    code, _, stderr = run_cli(["reduce", raw, "--out", tiny_disk / "out", "--config", config])
    assert code == 2
    assert_no_traceback(stderr)
    assert "No space left on device" in error_line(stderr)
    _assert_nothing_partial(tiny_disk / "out")

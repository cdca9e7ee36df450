"""Tests of daskred.masters against ccdproc.combine, on synthetic and real frames."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from conftest import raise_if_dask_computes, write_frames

from daskred.collection import scan
from daskred.errors import CalibrationError, ConfigError, HeaderError
from daskred.masters import DEFAULT_COMBINE, Master, make_masters, select_master, write_masters

ccdproc = pytest.importorskip("ccdproc")
logging.getLogger("ccdproc").setLevel(logging.ERROR)

NY, NX = 41, 57
BIASSEC = "[52:57,1:41]"
TRIMSEC = "[3:50,1:41]"
NIGHT_A, NIGHT_B, NIGHT_C = "2024-01-09", "2024-01-12", "2024-01-13"
RTOL = 1e-5
GAIN, RDNOISE = 1.8, 7.0  # e-/ADU, e-


def _header(imagetyp, date, exptime=None, filt=None, **extra):
    h = {"IMAGETYP": imagetyp, "DATE-OBS": date, "BIASSEC": BIASSEC, "TRIMSEC": TRIMSEC, "CCDSUM": "2 2",
         "GAIN": GAIN, "RDNOISE": RDNOISE}
    if exptime is not None:
        h["EXPTIME"] = exptime
    if filt is not None:
        h["FILTER"] = filt
    h.update(extra)
    return h


def _response():
    """The true pixel response of the synthetic camera (the same draw _dataset uses)."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:NY, 0:NX]
    rng.exponential(0.05, (NY, NX))
    rng.integers(0, NY, 6), rng.integers(0, NX, 6)
    return 1 + 0.08 * np.cos(xx / 9.0) - 0.05 * (yy / NY) + rng.normal(0, 0.01, (NY, NX))


def _dataset(root: Path, seed: int = 11) -> dict[str, list[Path]]:
    """A three-night raw set: night A full calibrations, B biases only, C science only.

    Files are float32: integer (uint16) pixels make exact ties at a clipping threshold
    in a 4-frame stack, where float rounding, not the algorithm, decides.  The uint16 /
    BZERO path is exercised by the real-data test.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:NY, 0:NX]
    pattern = 2.0 * np.sin(xx / 5.0) + 0.03 * yy  # fixed bias structure
    dark_rate = rng.exponential(0.05, (NY, NX))
    dark_rate[rng.integers(0, NY, 6), rng.integers(0, NX, 6)] = 5.0  # hot pixels
    response = 1 + 0.08 * np.cos(xx / 9.0) - 0.05 * (yy / NY) + rng.normal(0, 0.01, (NY, NX))
    response[:, 50:] = 0.0  # beyond TRIMSEC: no light

    def raw(n, signal=0.0, cosmics=0):
        frames = []
        for _ in range(n):
            offset = 1000 + rng.normal(0, 3) + 0.1 * yy  # overscan level drifts along rows
            electrons = rng.poisson(np.clip(signal, 0, None) * GAIN) / GAIN  # Poisson noise
            img = offset + pattern + electrons + rng.normal(0, RDNOISE / GAIN, (NY, NX))
            img[:, :2] = offset[:, :2]  # prescan
            for _ in range(cosmics):
                img[rng.integers(0, NY), rng.integers(0, 49)] += rng.uniform(300, 3000)
            frames.append(img)
        return np.array(frames)

    paths: dict[str, list[Path]] = {}

    def add(key, cube, headers, **kw):
        paths[key] = write_frames(root / key, cube, headers=headers, prefix=key)

    add("bias_a", raw(9, cosmics=4), [_header("BIAS", f"2024-01-10T01:00:{i:02d}", 0.0) for i in range(9)])
    add("bias_b", raw(9, cosmics=4) + 5, [_header("BIAS", f"2024-01-13T01:00:{i:02d}", 0.0) for i in range(9)])
    for t in (30.0, 90.0):
        add(f"dark{int(t)}_a", raw(4, signal=dark_rate * t, cosmics=3),
            [_header("DARK", f"2024-01-10T02:{int(t) // 30:02d}:{i:02d}", t) for i in range(4)])
    for filt, levels in (("V", (9000, 12000, 15000, 20000, 26000)), ("R", (8000, 11000, 14000, 17000, 30000))):
        times = [2.0, 3.0, 4.0, 5.0, 6.0]
        cube = np.array([
            raw(1, signal=lvl * response + dark_rate * t, cosmics=2)[0] for lvl, t in zip(levels, times)
        ])
        add(f"flat{filt}_a", cube, [_header("FLAT", f"2024-01-10T00:3{i}:00", t, filt) for i, t in enumerate(times)])
    add("light_a", raw(2, signal=500 * response + 60.0 * dark_rate), [_header("LIGHT", f"2024-01-10T04:0{i}:00", 60.0, "V") for i in range(2)])
    add("light_b", raw(2, signal=500 * response + 60.0 * dark_rate), [_header("LIGHT", f"2024-01-13T04:0{i}:00", 60.0, "V") for i in range(2)])
    add("light_c", raw(1, signal=500 * response + 60.0 * dark_rate), [_header("LIGHT", "2024-01-14T04:00:00", 60.0, "V")])
    return paths


@pytest.fixture(scope="module")
def raw_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    paths = _dataset(root)
    return root, paths, scan(root)


# ------------------------------------------------------------------------------------- ccdproc oracle


def _ccd_process(path, *, bias=None, dark=None, dark_exptime=None):
    ccd = CCDData(fits.getdata(path).astype(np.float64), unit="adu", meta=fits.getheader(path))
    ccd = ccdproc.subtract_overscan(ccd, fits_section=BIASSEC, median=True, overscan_axis=1)
    ccd = ccdproc.trim_image(ccd, fits_section=TRIMSEC)
    if bias is not None:
        ccd = ccdproc.subtract_bias(ccd, bias)
    if dark is not None:
        dark.meta["exptime"] = dark_exptime
        ccd = ccdproc.subtract_dark(ccd, dark, exposure_time="exptime", exposure_unit=u.s, scale=True)
    return ccd


def _sigma_mean(images):
    """ccdproc.combine: sigma-clipped mean, everything pinned (single clipping pass as ccdproc)."""
    return ccdproc.combine(
        images, method="average", sigma_clip=True, sigma_clip_low_thresh=2.0, sigma_clip_high_thresh=2.0,
        sigma_clip_func=np.ma.median, sigma_clip_dev_func=np.ma.std, mem_limit=64e6,
    )


SIGMA = {"method": "mean", "clip": "sigma", "sigma": 2.0, "maxiters": 1, "cenfunc": "median", "stdfunc": "std"}


def _find(masters, kind, night, **kw) -> Master:
    found = [m for m in masters if m.kind == kind and m.night == night and all(getattr(m, k) == v for k, v in kw.items())]
    assert len(found) == 1, (kind, night, kw, masters)
    return found[0]


@pytest.mark.parametrize("how", ["median", "sigma"])
def test_masters_match_ccdproc_combine(raw_set, how):
    _, paths, table = raw_set
    opts = {"method": "median"} if how == "median" else SIGMA
    masters = make_masters(table, combine_options={"bias": opts, "dark": opts, "flat": opts})
    ref_combine = (lambda imgs: ccdproc.combine(imgs, method="median", mem_limit=64e6)) if how == "median" else _sigma_mean

    ref_bias = ref_combine([_ccd_process(p) for p in paths["bias_a"]])
    bias = _find(masters, "bias", NIGHT_A)
    np.testing.assert_allclose(bias.data.values, ref_bias.data, rtol=RTOL, atol=1e-4)
    assert bias.ncombine == 9 and bias.header["NCOMBINE"] == 9

    ref_darks = {}
    for t in (30, 90):
        ref_darks[t] = ref_combine([_ccd_process(p, bias=ref_bias) for p in paths[f"dark{t}_a"]])
        dark = _find(masters, "dark", NIGHT_A, exptime=float(t))
        np.testing.assert_allclose(dark.data.values, ref_darks[t].data, rtol=RTOL, atol=1e-3)
        assert float(dark.data.coords["exptime"]) == t

    for filt in ("V", "R"):
        flats = []
        for path in paths[f"flat{filt}_a"]:
            t = fits.getheader(path)["EXPTIME"]
            # nearest dark in exposure time is the 30 s one, scaled to t
            ccd = _ccd_process(path, bias=ref_bias, dark=ref_darks[30].copy(), dark_exptime=30.0)
            flats.append(ccd.divide(np.median(ccd.data) * u.dimensionless_unscaled))
        ref_flat = ref_combine(flats)
        flat = _find(masters, "flat", NIGHT_A, filter=filt)
        np.testing.assert_allclose(flat.data.values, ref_flat.data, rtol=RTOL, atol=1e-6)
        assert flat.header["FLATNORM"] == "median" and flat.header["BIASCOR"] == bias.name

    if how == "sigma":  # the rejection did something: the plain mean differs
        plain = ccdproc.combine([_ccd_process(p) for p in paths["bias_a"]], method="average")
        assert np.abs(plain.data - ref_bias.data).max() > 10


def test_fallbacks_are_recorded_and_selected(raw_set):
    _, paths, table = raw_set
    masters = make_masters(table, combine_options={k: {"method": "median"} for k in ("bias", "dark", "flat")})
    own_bias_b = _find(masters, "bias", NIGHT_B)
    assert own_bias_b.fallback_from is None and own_bias_b.inputs == tuple(map(str, paths["bias_b"]))
    borrowed_bias_c = _find(masters, "bias", NIGHT_C)
    assert borrowed_bias_c.fallback_from == NIGHT_B  # nearest night with biases
    assert borrowed_bias_c.header["FALLBACK"] == NIGHT_B and borrowed_bias_c.header["NIGHT"] == NIGHT_C
    assert borrowed_bias_c.data is own_bias_b.data
    flat_b = _find(masters, "flat", NIGHT_B, filter="V")
    assert flat_b.fallback_from == NIGHT_A
    assert not [m for m in masters if m.kind == "flat" and m.filter == "R" and m.night != NIGHT_A]  # no R lights
    assert {m.exptime for m in masters if m.kind == "dark" and m.night == NIGHT_C} == {30.0, 90.0}

    light_c = table[table["night"] == NIGHT_C].iloc[0]
    assert select_master(masters, light_c, kind="bias").fallback_from == NIGHT_B
    dark = select_master(masters, light_c, kind="dark")
    assert dark.exptime == 90.0 and dark.fallback_from == NIGHT_A  # closest exposure to 60 s, ties -> longer
    row = {**light_c.to_dict(), "night": "2024-02-01"}  # a night not in the collection
    flat = select_master(masters, row, kind="flat")
    assert flat.fallback_from == NIGHT_A and flat.night == "2024-02-01"
    with pytest.raises(CalibrationError, match="fallback=False"):
        select_master(masters, row, kind="flat", fallback=False)
    with pytest.raises(CalibrationError, match="no master flat for .*filter 'B'.*available"):
        select_master(masters, {**row, "filter": "B"}, kind="flat")

    none = make_masters(table, kinds=("bias",), fallback="none")
    assert {m.night for m in none} == {NIGHT_A, NIGHT_B}


def test_scalable_dark_matches_numpy(raw_set):
    _, paths, table = raw_set
    masters = make_masters(
        table, kinds=("bias", "dark"), darks="scalable",
        combine_options={"bias": {"method": "median"}, "dark": {"method": "median"}}, fallback="none",
    )
    dark = _find(masters, "dark", NIGHT_A)
    assert dark.exptime == 60.0 and dark.ncombine == 8
    bias = _find(masters, "bias", NIGHT_A).data.values
    stack = []
    for t in (30, 90):
        for p in paths[f"dark{t}_a"]:
            stack.append((_ccd_process(p).data - bias) * 60.0 / t)
    np.testing.assert_allclose(dark.data.values, np.median(stack, axis=0), rtol=RTOL, atol=1e-3)


def test_make_masters_does_not_compute_and_is_chunk_invariant(raw_set):
    _, _, table = raw_set
    opts = {k: SIGMA for k in ("bias", "dark", "flat")}
    with raise_if_dask_computes():
        a = make_masters(table, combine_options=opts)
        b = make_masters(table, combine_options=opts, chunks=7)
        again = make_masters(table, combine_options=opts)
    assert [m.data.data.name for m in a] == [m.data.data.name for m in again]
    assert [m.name for m in a] == [m.name for m in b]
    for left, right in zip(a, b):
        if left.fallback_from is None:
            np.testing.assert_array_equal(left.data.values, right.data.values, err_msg=left.name)


def test_default_combine_is_sigma_clipped_mean(raw_set):
    _, paths, table = raw_set
    masters = make_masters(table, kinds=("bias",), fallback="none")
    bias = _find(masters, "bias", NIGHT_A)
    assert "clip=sigma" in bias.header["COMBINE"] and DEFAULT_COMBINE["bias"]["method"] == "mean"
    # cosmic rays in single biases do not survive the clipped mean
    stack = np.array([_ccd_process(p).data for p in paths["bias_a"]])
    hit = np.unravel_index(np.argmax(stack.max(0) - np.median(stack, 0)), stack.shape[1:])
    assert stack[:, hit[0], hit[1]].max() - np.median(stack[:, hit[0], hit[1]]) > 200
    assert abs(bias.data.values[hit] - np.median(stack[:, hit[0], hit[1]])) < 10


def test_write_masters_writes_provenance(raw_set, tmp_path):
    _, paths, table = raw_set
    masters = make_masters(table, kinds=("bias", "flat"), combine_options={"bias": {"method": "median"}})
    written = write_masters(masters, tmp_path / "masters")
    own = [m for m in masters if m.fallback_from is None]
    assert sorted(written) == sorted(m.name for m in own)
    flat = _find(masters, "flat", NIGHT_A, filter="V")
    with fits.open(written[flat.name]) as hdul:
        header, data = hdul[0].header, hdul[0].data
    assert header["IMAGETYP"] == "MASTER FLAT" and header["NCOMBINE"] == 5 and header["FILTER"] == "V"
    assert header["TRIMSEC"] == TRIMSEC and header["BIASCOR"].startswith("bias_2024-01-09")
    history = "\n".join(header["HISTORY"])
    assert all(Path(p).name in history for p in paths["flatV_a"])
    np.testing.assert_allclose(data, flat.data.values, rtol=1e-6)


def test_errors(raw_set, tmp_path):
    _, paths, table = raw_set
    with pytest.raises(ConfigError, match="'bias', 'dark', 'flat'"):
        make_masters(table, kinds=("sky",))
    with pytest.raises(ConfigError, match="'per_exptime', 'scalable'"):
        make_masters(table, darks="each")
    with pytest.raises(ConfigError, match="unknown combine option.*sigma_clip.*accepts"):
        make_masters(table, combine_options={"flat": {"sigma_clip": True}})
    with pytest.raises(ConfigError, match="unknown kind 'sky'"):
        make_masters(table, combine_options={"sky": {}})
    with pytest.raises(ConfigError, match="scan"):
        make_masters(table.drop(columns=["night"]))

    # a dark without EXPTIME
    bad = write_frames(tmp_path / "bad", np.full((1, NY, NX), 1000.0), headers=[_header("DARK", "2024-01-10T02:00:00")],
                       uint16=True, prefix="noexp")
    with pytest.raises(HeaderError, match="noexp000.fits"):
        make_masters(scan([*paths["bias_a"], *bad]))

    # an all-zero flat: known only from its pixels, so raised when computed, naming the file
    zero = write_frames(tmp_path / "zero", np.zeros((1, NY, NX)), headers=[_header("FLAT", "2024-01-10T00:40:00", 3.0, "V")],
                        uint16=True, prefix="zeroflat")
    masters = make_masters(scan([*paths["bias_a"], *paths["flatV_a"], *zero]), kinds=("bias", "flat"))
    flat = _find(masters, "flat", NIGHT_A, filter="V")
    with pytest.raises(CalibrationError, match="zeroflat000.fits"):
        flat.data.compute()

    # flats without any bias are combined, with a warning and BIASCOR='none'
    with pytest.warns(Warning, match="no master bias"):
        only = make_masters(scan(paths["flatV_a"]), kinds=("bias", "flat"))
    assert only[0].header["BIASCOR"] == "none"


def test_masters_calibrate_science_frames_to_the_truth(raw_set):
    _, paths, table = raw_set
    from daskred.calibrate import calibrate
    from daskred.io import open_frames

    masters = make_masters(table)
    flat = _find(masters, "flat", NIGHT_A, filter="V")
    truth = _response()[:, 2:50]
    truth = truth / np.median(truth)
    # five flats at >= 9000 ADU with 4 ADU read noise: the master follows the truth to ~1 %
    assert np.abs(flat.data.values / truth - 1).max() < 0.02
    lights = table[(table["imagetyp"] == "light") & (table["night"] == NIGHT_A)]
    row = lights.iloc[0]
    ds = calibrate(
        open_frames(lights),
        bias=select_master(masters, row, kind="bias"),
        dark=select_master(masters, row, kind="dark"),
        flat=flat,
        norm="median",
    )
    level = ds["data"].values
    # 500 ADU x response (+ 60 s of dark current, removed), divided by response / median(response)
    expected = 500 * np.median(_response()[:, 2:50])
    assert abs(np.median(level) - expected) < 5
    # the flat's structure (8 % across columns, 40 ADU) is gone: column means agree to noise
    assert np.ptp(level.mean(axis=(0, 1))) < 15 < np.ptp((500 * _response()[:, 2:50]).mean(axis=0))
    # the variance plane predicts the scatter between two frames of the same scene
    observed = np.var(level[0] - level[1]) / 2
    assert abs(ds["variance"].values.mean() / observed - 1) < 0.1


# ------------------------------------------------------------------------------------- real frames


@pytest.mark.realdata
@pytest.mark.slow
def test_real_masters_equal_ccdproc_reduction(lowell):
    """Lowell 42-inch frames: master bias and flat vs ccdproc with the same settings, 1e-5 relative."""
    bias_paths = sorted((lowell / "bias").glob("*.fits"))
    flat_paths = sorted((lowell / "flat_VR").glob("*.fits"))
    table = scan([*bias_paths, *flat_paths])
    median = {"method": "median"}
    masters = make_masters(table, combine_options={"bias": median, "flat": median}, norm="median")
    assert [m.kind for m in masters] == ["bias", "flat"]
    bias, flat = masters

    def process(path, master=None):
        header = fits.getheader(path)
        ccd = CCDData(fits.getdata(path).astype(np.float64), unit="adu", meta=header)
        ccd = ccdproc.subtract_overscan(ccd, fits_section=header["BIASSEC"], median=True, overscan_axis=1)
        ccd = ccdproc.trim_image(ccd, fits_section=header["TRIMSEC"])
        return ccd if master is None else ccdproc.subtract_bias(ccd, master)

    ref_bias = ccdproc.combine([process(p) for p in bias_paths], method="median", mem_limit=2e9)
    ref_flat = ccdproc.combine(
        [process(p, ref_bias) for p in flat_paths], method="median", scale=lambda a: 1.0 / np.ma.median(a),
        mem_limit=2e9,
    )
    ours_bias, ours_flat = bias.data.values, flat.data.values
    assert ours_bias.shape == ref_bias.shape == (1370, 1365)
    # relative to the level of each master (the bias is ~0 after overscan subtraction)
    np.testing.assert_allclose(ours_bias, ref_bias.data, rtol=1e-5, atol=1e-5 * np.abs(ref_bias.data).max())
    np.testing.assert_allclose(ours_flat, ref_flat.data, rtol=1e-5, atol=1e-5)
    assert 0.9 < np.median(ours_flat) < 1.1
    assert bias.header["NCOMBINE"] == 10 and flat.header["NCOMBINE"] == 7 and flat.filter == "VR"

"""Tests of daskred.calibrate against ccdproc / numpy, errors; laziness and chunk invariance of
every calibration step, the pixel-quality planes of daskred.quality included."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from astropy import units as u
from astropy.modeling.models import Polynomial1D
from astropy.nddata import CCDData, StdDevUncertainty
from conftest import raise_if_dask_computes

from daskred.calibrate import (
    calibrate,
    flat_correct,
    gain_correct,
    subtract_bias,
    subtract_dark,
    subtract_overscan,
    trim,
)
from daskred.errors import CalibrationError, ConfigError, HeaderError, ShapeMismatchError
from daskred.quality import make_bad_pixel_mask, make_variance, mask_saturated

ccdproc = pytest.importorskip("ccdproc")

NF, NY, NX = 3, 37, 53
BIASSEC = "[47:53,1:37]"  # columns 46..52 (0-based), every row
TRIMSEC = "[3:44,2:36]"  # columns 2..43, rows 1..35
TRIMMED = (35, 42)
GAIN, RDNOISE = 2.2, 6.5
EXPTIMES = [30.0, 60.0, 45.0]
RTOL = 1e-5  # float32 results against float64 ccdproc


def _raw_arrays(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.arange(NY)[:, None]
    level = 1000.0 + 3.0 * rows + 0.05 * rows**2  # overscan level varying along rows
    sky = rng.uniform(200, 4000, size=(NF, NY, NX))
    raw = level[None] + sky + rng.normal(0, 5, size=(NF, NY, NX))
    raw[:, :, 46:] = level[None] + rng.normal(0, 5, size=(NF, NY, 7))
    return raw.astype(np.float32)


def _cube(arrays: np.ndarray, *, chunks=(1, 10, -1), **coords) -> xr.DataArray:
    nf = arrays.shape[0]
    base = {
        "path": ("frame", [f"raw{i}.fits" for i in range(nf)]),
        "exptime": ("frame", EXPTIMES[:nf]),
        "gain": ("frame", [GAIN] * nf),
        "rdnoise": ("frame", [RDNOISE] * nf),
        "saturate": ("frame", [5000.0] * nf),
        "biassec": ("frame", [BIASSEC] * nf),
        "trimsec": ("frame", [TRIMSEC] * nf),
    }
    base.update({k: ("frame", v) for k, v in coords.items()})
    return xr.DataArray(
        da.from_array(arrays, chunks=chunks), dims=("frame", "y", "x"), coords=base, attrs={"units": "adu"}
    )


def _image(array: np.ndarray, *, path: str, chunks=(7, 11), **scalars) -> xr.DataArray:
    return xr.DataArray(
        da.from_array(array.astype(np.float32), chunks=chunks), dims=("y", "x"), coords={"path": path, **scalars}
    )


def _masters(seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : TRIMMED[0], 0 : TRIMMED[1]]
    return {
        "bias": rng.normal(3.0, 1.5, TRIMMED).astype(np.float32),
        "bias_var": rng.uniform(0.1, 0.5, TRIMMED).astype(np.float32),
        "dark": rng.uniform(0.0, 20.0, TRIMMED).astype(np.float32),
        "dark_var": rng.uniform(0.1, 2.0, TRIMMED).astype(np.float32),
        "flat": (20000 * (1 + 0.1 * np.sin(xx / 7.0) + 0.05 * yy / 35) * rng.normal(1, 0.01, TRIMMED)).astype(
            np.float32
        ),
        "flat_var": rng.uniform(50, 200, TRIMMED).astype(np.float32),
    }


def _ccd(array, var=None, **meta) -> CCDData:
    unc = None if var is None else StdDevUncertainty(np.sqrt(np.asarray(var, dtype=np.float64)))
    return CCDData(np.asarray(array, dtype=np.float64), unit="adu", uncertainty=unc, meta=meta)


def _computed(obj):
    return obj.compute(scheduler="sync")


# ------------------------------------------------------------------------------------- overscan


@pytest.mark.parametrize("method", ["median", "mean"])
@pytest.mark.parametrize("fit,order", [("none", 1), ("polynomial", 1), ("polynomial", 3)])
@pytest.mark.parametrize("axis,ccd_axis", [("x", 1), ("auto", None)])
def test_subtract_overscan_matches_ccdproc(method, fit, order, axis, ccd_axis):
    raw = _raw_arrays()
    ours = _computed(subtract_overscan(_cube(raw), method=method, fit=fit, order=order, axis=axis))
    model = Polynomial1D(order) if fit == "polynomial" else None
    for i in range(NF):
        ref = ccdproc.subtract_overscan(
            _ccd(raw[i]), fits_section=BIASSEC, median=(method == "median"), model=model, overscan_axis=ccd_axis
        )
        np.testing.assert_allclose(ours.values[i], ref.data, rtol=RTOL, atol=1e-3)
    assert ours.dtype == np.float32
    assert "subtract_overscan" in ours.attrs["history"][-1]


def test_subtract_overscan_along_y_matches_ccdproc():
    rng = np.random.default_rng(5)
    raw = rng.normal(500, 10, size=(2, 41, 29)).astype(np.float32)
    raw[:, 36:, :] += np.linspace(0, 30, 29)[None, None, :]  # overscan rows at the top
    section = "[1:29,37:41]"
    cube = _cube(raw, chunks=(1, 9, 13), biassec=[section] * 2, exptime=[1.0, 1.0])
    ours = _computed(subtract_overscan(cube, method="median", axis="y"))
    auto = _computed(subtract_overscan(cube, method="median"))  # strip is wider than tall -> y
    for i in range(2):
        ref = ccdproc.subtract_overscan(_ccd(raw[i]), fits_section=section, median=True, overscan_axis=0)
        np.testing.assert_allclose(ours.values[i], ref.data, rtol=RTOL, atol=1e-3)
    np.testing.assert_array_equal(auto.values, ours.values)


def test_subtract_overscan_single_image_and_explicit_section():
    raw = _raw_arrays()
    image = _cube(raw).isel(frame=1)
    out = subtract_overscan(image, section=BIASSEC)
    assert out.dims == ("y", "x")
    assert str(out.coords["path"].values) == "raw1.fits"
    ref = ccdproc.subtract_overscan(_ccd(raw[1]), fits_section=BIASSEC, median=True, overscan_axis=1)
    np.testing.assert_allclose(_computed(out).values, ref.data, rtol=RTOL, atol=1e-3)


def test_subtract_overscan_errors():
    raw = _raw_arrays()
    with pytest.raises(ConfigError, match="'median', 'mean'"):
        subtract_overscan(_cube(raw), method="mode")
    with pytest.raises(ConfigError, match="'none', 'polynomial'"):
        subtract_overscan(_cube(raw), fit="spline")
    with pytest.raises(ConfigError, match="'auto', 'x', 'y'"):
        subtract_overscan(_cube(raw), axis=1)
    with pytest.raises(HeaderError, match="BIASSEC.*section="):
        subtract_overscan(_cube(raw, biassec=[""] * NF))
    with pytest.raises(HeaderError, match="raw2.fits"):
        subtract_overscan(_cube(raw, biassec=[BIASSEC, BIASSEC, "[48:53,1:37]"]))
    with pytest.raises(ShapeMismatchError, match="every row"):
        subtract_overscan(_cube(raw), section="[47:53,1:20]", axis="x")


# ------------------------------------------------------------------------------------- trim


def test_trim_matches_ccdproc_and_resets_sections():
    raw = _raw_arrays()
    out = trim(_cube(raw))
    assert out.shape == (NF, *TRIMMED)
    assert set(out.coords["trimsec"].values) == {""} and set(out.coords["biassec"].values) == {""}
    ref = ccdproc.trim_image(_ccd(raw[0]), fits_section=TRIMSEC)
    np.testing.assert_array_equal(_computed(out).values[0], ref.data.astype(np.float32))
    # datasec is the fallback
    cube = _cube(raw, trimsec=[""] * NF, datasec=["[5:50,1:37]"] * NF)
    assert trim(cube).shape == (NF, 37, 46)


def test_trim_dataset_trims_every_plane():
    raw = _raw_arrays()
    cube = _cube(raw)
    ds = xr.Dataset({"data": cube, "variance": cube * 2, "mask": cube > 3000})
    out = trim(ds, section=TRIMSEC)
    assert out["variance"].shape == out["mask"].shape == (NF, *TRIMMED)
    np.testing.assert_array_equal(_computed(out["variance"]).values, 2 * raw[:, 1:36, 2:44])


def test_trim_errors():
    raw = _raw_arrays()
    with pytest.raises(HeaderError, match="raw1.fits"):
        trim(_cube(raw, trimsec=[TRIMSEC, "[3:44,2:35]", TRIMSEC]))
    with pytest.raises(HeaderError, match="TRIMSEC/DATASEC"):
        trim(_cube(raw, trimsec=[""] * NF))
    with pytest.raises(HeaderError, match="beyond"):
        trim(_cube(raw), section="[1:80,1:10]")


# ------------------------------------------------------------------------------------- bias, dark, flat, gain


def _trimmed_planes():
    """Trimmed, overscan-subtracted frames as a Dataset with a ccdproc-style variance."""
    raw = _raw_arrays()
    frames = trim(subtract_overscan(_cube(raw)))
    data = _computed(frames).values.astype(np.float64)
    var = (np.maximum(data, 0) * GAIN + RDNOISE**2) / GAIN**2
    ds = xr.Dataset({"data": frames, "variance": frames.copy(data=da.from_array(var.astype(np.float32), chunks=(1, 10, -1)))})
    return ds, data, var


def test_subtract_bias_matches_ccdproc_with_variance():
    ds, data, var = _trimmed_planes()
    m = _masters()
    bias = xr.Dataset({"data": _image(m["bias"], path="bias.fits"), "variance": _image(m["bias_var"], path="bias.fits")})
    out = _computed(subtract_bias(ds, bias))
    for i in range(NF):
        ref = ccdproc.subtract_bias(_ccd(data[i], var[i]), _ccd(m["bias"], m["bias_var"]))
        np.testing.assert_allclose(out["data"].values[i], ref.data, rtol=RTOL, atol=1e-3)
        np.testing.assert_allclose(out["variance"].values[i], ref.uncertainty.array**2, rtol=RTOL)
    # plain DataArray in, DataArray out
    plain = subtract_bias(ds["data"], _image(m["bias"], path="bias.fits"))
    assert isinstance(plain, xr.DataArray)
    np.testing.assert_allclose(_computed(plain).values, out["data"].values)


def test_subtract_dark_scaled_matches_ccdproc():
    ds, data, var = _trimmed_planes()
    m = _masters()
    t_dark = 100.0
    dark = xr.Dataset(
        {"data": _image(m["dark"], path="dark.fits", exptime=t_dark), "variance": _image(m["dark_var"], path="dark.fits")}
    )
    out = _computed(subtract_dark(ds, dark, scale=True))
    for i in range(NF):
        ref = ccdproc.subtract_dark(
            _ccd(data[i], var[i], exptime=EXPTIMES[i]),
            _ccd(m["dark"], m["dark_var"], exptime=t_dark),
            exposure_time="exptime",
            exposure_unit=u.s,
            scale=True,
        )
        np.testing.assert_allclose(out["data"].values[i], ref.data, rtol=RTOL, atol=1e-3)
        np.testing.assert_allclose(out["variance"].values[i], ref.uncertainty.array**2, rtol=RTOL)


def test_subtract_dark_overrides_and_matched_exposure():
    ds, data, _ = _trimmed_planes()
    m = _masters()
    dark = _image(m["dark"], path="dark.fits")  # no exptime coordinate
    out = _computed(subtract_dark(ds["data"], dark, dark_exptime=60 * u.s, exposure=60.0, scale=False))
    np.testing.assert_allclose(out.values, (data - m["dark"]).astype(np.float32), rtol=RTOL, atol=1e-3)
    scaled = _computed(subtract_dark(ds["data"], dark, dark_exptime=2 * u.min, exposure="exptime"))
    expected = data - m["dark"][None] * (np.array(EXPTIMES) / 120.0)[:, None, None]
    np.testing.assert_allclose(scaled.values, expected, rtol=RTOL, atol=1e-3)


def test_subtract_dark_errors():
    ds, _, _ = _trimmed_planes()
    m = _masters()
    with pytest.raises(HeaderError, match="dark 'dark.fits'.*EXPTIME.*dark_exptime"):
        subtract_dark(ds, _image(m["dark"], path="dark.fits"))
    with pytest.raises(HeaderError, match="raw0.fits.*scale=True"):
        subtract_dark(ds, _image(m["dark"], path="dark.fits", exptime=60.0), scale=False)
    frames = ds["data"].assign_coords(exptime=("frame", [30.0, np.nan, 45.0]))
    with pytest.raises(HeaderError, match="raw1.fits"):
        subtract_dark(frames, _image(m["dark"], path="dark.fits", exptime=60.0))
    with pytest.raises(ShapeMismatchError, match="dark 'dark.fits' has shape \\(35, 40\\)"):
        subtract_dark(ds, _image(m["dark"][:, :40], path="dark.fits", exptime=60.0))


@pytest.mark.parametrize("norm", ["mean", "median"])
def test_flat_correct_matches_ccdproc_with_variance(norm):
    ds, data, var = _trimmed_planes()
    m = _masters()
    flat = xr.Dataset({"data": _image(m["flat"], path="flat.fits"), "variance": _image(m["flat_var"], path="flat.fits")})
    out = _computed(flat_correct(ds, flat, norm=norm))
    norm_value = None if norm == "mean" else float(np.median(m["flat"].astype(np.float64)))
    for i in range(NF):
        ref = ccdproc.flat_correct(_ccd(data[i], var[i]), _ccd(m["flat"], m["flat_var"]), norm_value=norm_value)
        np.testing.assert_allclose(out["data"].values[i], ref.data, rtol=RTOL)
        np.testing.assert_allclose(out["variance"].values[i], ref.uncertainty.array**2, rtol=RTOL)
    assert not out["mask"].values.any()


def test_flat_correct_norm_value_matches_ccdproc():
    ds, data, _ = _trimmed_planes()
    m = _masters()
    out = _computed(flat_correct(ds["data"], _image(m["flat"], path="flat.fits"), norm=25000.0))
    ref = ccdproc.flat_correct(_ccd(data[2]), _ccd(m["flat"]), norm_value=25000.0)
    np.testing.assert_allclose(out.values[2], ref.data, rtol=RTOL)


def test_flat_correct_masks_unusable_pixels_and_never_divides_by_them():
    ds, data, _ = _trimmed_planes()
    flat = _masters()["flat"].copy()
    flat[3, 4], flat[10, 11], flat[20, 30] = 0.0, -5.0, np.nan
    flat[7, 8] = 50.0  # below min_value
    with np.errstate(all="raise"):  # a division by zero would raise here
        out = _computed(flat_correct(ds, _image(flat, path="flat.fits"), min_value=100.0))
    bad = np.zeros(TRIMMED, bool)
    bad[3, 4] = bad[10, 11] = bad[20, 30] = bad[7, 8] = True
    assert np.array_equal(out["mask"].values, np.broadcast_to(bad, out["mask"].shape))
    assert np.isnan(out["data"].values[:, bad]).all()
    good = np.isfinite(flat) & (flat > 100)
    flat_n = np.where(good, flat, 1.0) / flat[good].astype(np.float64).mean()
    expected = data / flat_n[None]
    np.testing.assert_allclose(out["data"].values[:, ~bad], expected[:, ~bad], rtol=RTOL)


def test_flat_correct_all_zero_flat_raises_at_compute_naming_the_flat():
    ds, _, _ = _trimmed_planes()
    flat = _image(np.zeros(TRIMMED), path="zero_flat.fits")
    for norm in ("mean", "median", 2.0):
        with raise_if_dask_computes():
            out = flat_correct(ds, flat, norm=norm)  # builds fine: values are unknown until compute
        with pytest.raises(CalibrationError, match="zero_flat.fits.*no positive"):
            _computed(out)


def test_flat_correct_errors():
    ds, _, _ = _trimmed_planes()
    m = _masters()
    with pytest.raises(ShapeMismatchError, match="flat 'flat_big.fits' has shape \\(37, 53\\)"):
        flat_correct(ds, _image(np.ones((NY, NX)), path="flat_big.fits"))
    with pytest.raises(ConfigError, match="'mean', 'median'"):
        flat_correct(ds, _image(m["flat"], path="f.fits"), norm="mode")
    with pytest.raises(ConfigError, match="positive number"):
        flat_correct(ds, _image(m["flat"], path="f.fits"), norm=-1.0)


def test_gain_correct_matches_ccdproc():
    ds, data, var = _trimmed_planes()
    out = _computed(gain_correct(ds))
    for i in range(NF):
        ref = ccdproc.gain_correct(_ccd(data[i], var[i]), GAIN * u.electron / u.adu)
        np.testing.assert_allclose(out["data"].values[i], ref.data, rtol=RTOL)
        np.testing.assert_allclose(out["variance"].values[i], ref.uncertainty.array**2, rtol=RTOL)
    assert out["data"].attrs["units"] == "electron"
    q = _computed(gain_correct(ds["data"], gain=GAIN * 1000 * u.electron / (1000 * u.adu)))
    np.testing.assert_allclose(q.values, out["data"].values, rtol=1e-6)
    named = _computed(gain_correct(ds["data"].assign_coords(again_01=("frame", [1.5] * NF)), gain="AGAIN_01"))
    np.testing.assert_allclose(named.values, (data * 1.5).astype(np.float32), rtol=1e-6)


def test_gain_correct_errors():
    ds, _, _ = _trimmed_planes()
    with pytest.raises(HeaderError, match="raw2.fits.*gain="):
        gain_correct(ds["data"].assign_coords(gain=("frame", [2.0, 2.0, np.nan])))
    with pytest.raises(HeaderError, match="'gain' coordinate"):
        gain_correct(ds["data"].drop_vars("gain"))
    with pytest.raises(ConfigError, match="cannot be converted"):
        gain_correct(ds["data"], gain=3 * u.s)
    with pytest.raises(CalibrationError, match="already in electrons"):
        gain_correct(gain_correct(ds["data"]))


# ------------------------------------------------------------------------------------- calibrate


def test_calibrate_matches_ccdproc_chain():
    raw = _raw_arrays()
    m = _masters()
    cube = _cube(raw)
    bias = _image(m["bias"], path="bias.fits")
    dark = _image(m["dark"], path="dark.fits", exptime=100.0)
    flat = _image(m["flat"], path="flat.fits")
    bpm = np.zeros(TRIMMED, bool)
    bpm[4, 6] = True
    ds = _computed(
        calibrate(
            cube, bias=bias, dark=dark, flat=flat, bad_pixels=xr.DataArray(bpm, dims=("y", "x")), units="electron"
        )
    )
    assert set(ds.data_vars) == {"data", "variance", "mask"}
    for i in range(NF):
        ccd = _ccd(raw[i], exptime=EXPTIMES[i])
        ccd = ccdproc.subtract_overscan(ccd, fits_section=BIASSEC, median=True, overscan_axis=1)
        ccd = ccdproc.trim_image(ccd, fits_section=TRIMSEC)
        # Poisson term from the bias-subtracted signal (see calibrate's Notes).
        dev = ccdproc.create_deviation(
            ccdproc.subtract_bias(ccd, _ccd(m["bias"])),
            gain=GAIN * u.electron / u.adu,
            readnoise=RDNOISE * u.electron,
            disregard_nan=True,
        )
        ccd.uncertainty = dev.uncertainty
        ccd = ccdproc.subtract_bias(ccd, _ccd(m["bias"]))
        ccd = ccdproc.subtract_dark(
            ccd, _ccd(m["dark"], exptime=100.0), exposure_time="exptime", exposure_unit=u.s, scale=True
        )
        ccd = ccdproc.flat_correct(ccd, _ccd(m["flat"]))
        ccd = ccdproc.gain_correct(ccd, GAIN * u.electron / u.adu)
        np.testing.assert_allclose(ds["data"].values[i], ccd.data, rtol=RTOL, atol=1e-3)
        np.testing.assert_allclose(ds["variance"].values[i], ccd.uncertainty.array**2, rtol=RTOL)
    sat = (raw >= 5000.0)[:, 1:36, 2:44]
    assert sat.any()
    np.testing.assert_array_equal(ds["mask"].values, sat | bpm[None])
    assert ds["data"].attrs["units"] == "electron"
    assert any("flat_correct" in h for h in ds["data"].attrs["history"])


def test_calibrate_without_header_sections_records_what_it_skipped():
    raw = _raw_arrays()
    cube = _cube(raw, biassec=[""] * NF, trimsec=[""] * NF, saturate=[np.nan] * NF)
    ds = calibrate(cube, variance=False)
    assert ds["data"].shape == raw.shape and "variance" not in ds
    history = " ".join(ds["data"].attrs["history"])
    assert "no BIASSEC" in history and "not trimmed" in history and "no saturation mask" in history
    np.testing.assert_array_equal(_computed(ds["data"]).values, raw)


def test_calibrate_overscan_options_and_errors():
    raw = _raw_arrays()
    cube = _cube(raw)
    ds = calibrate(cube, overscan={"method": "mean", "fit": "polynomial", "order": 2}, variance=False)
    ref = ccdproc.subtract_overscan(_ccd(raw[0]), fits_section=BIASSEC, median=False, model=Polynomial1D(2))
    ref = ccdproc.trim_image(ref, fits_section=TRIMSEC)
    np.testing.assert_allclose(_computed(ds["data"]).values[0], ref.data, rtol=RTOL, atol=1e-3)
    with pytest.raises(ConfigError, match="unknown overscan option.*allowed"):
        calibrate(cube, overscan={"median": True})
    with pytest.raises(ConfigError, match="'adu', 'electron'"):
        calibrate(cube, units="photons")
    with pytest.raises(HeaderError, match="gain"):
        calibrate(cube.drop_vars("gain"))
    with pytest.raises(ShapeMismatchError, match="flat 'flat.fits'"):
        calibrate(cube, flat=_image(np.ones((NY, NX)), path="flat.fits"))


# ------------------------------------------------------------------------------------- laziness, chunks


def _all_steps(cube: xr.DataArray, masters: dict[str, np.ndarray], chunks=(7, 11)):
    bias = _image(masters["bias"], path="bias.fits", chunks=chunks)
    dark = _image(masters["dark"], path="dark.fits", exptime=100.0, chunks=chunks)
    flat = _image(masters["flat"], path="flat.fits", chunks=chunks)
    trimmed = trim(subtract_overscan(cube, fit="polynomial", order=2))
    return {
        "subtract_overscan": subtract_overscan(cube),
        "trim": trimmed,
        "subtract_bias": subtract_bias(trimmed, bias),
        "subtract_dark": subtract_dark(trimmed, dark),
        "flat_correct_mean": flat_correct(trimmed, flat),
        "flat_correct_median": flat_correct(trimmed, flat, norm="median"),
        "gain_correct": gain_correct(trimmed),
        "make_variance": make_variance(trimmed, bias=bias),
        "mask_saturated": mask_saturated(cube),
        "make_bad_pixel_mask": make_bad_pixel_mask(flat=flat, dark=dark),
        "calibrate": calibrate(cube, bias=bias, dark=dark, flat=flat, units="electron"),
    }


def test_no_step_computes():
    raw = _raw_arrays()
    with raise_if_dask_computes():
        results = _all_steps(_cube(raw), _masters())
    for name, result in results.items():
        for arr in (result.data_vars.values() if isinstance(result, xr.Dataset) else [result]):
            assert isinstance(arr.data, da.Array), name


def test_chunk_invariance_and_deterministic_names():
    raw = _raw_arrays()
    m = _masters()
    a = _all_steps(_cube(raw, chunks=(1, 10, -1)), m, chunks=(7, 11))
    b = _all_steps(_cube(raw, chunks=(1, 4, 17)), m, chunks=(35, 42))
    again = _all_steps(_cube(raw, chunks=(1, 10, -1)), m, chunks=(7, 11))
    for name in a:
        left, right = _computed(a[name]), _computed(b[name])
        if isinstance(left, xr.Dataset):
            for var in left.data_vars:
                np.testing.assert_array_equal(left[var].values, right[var].values, err_msg=f"{name}:{var}")
        else:
            np.testing.assert_array_equal(left.values, right.values, err_msg=name)
        names_a = [v.data.name for v in (a[name].data_vars.values() if isinstance(a[name], xr.Dataset) else [a[name]])]
        names_c = [v.data.name for v in (again[name].data_vars.values() if isinstance(again[name], xr.Dataset) else [again[name]])]
        assert names_a == names_c, name
    # the per-frame work keeps one frame per chunk
    assert set(a["calibrate"]["data"].data.chunks[0]) == {1}


def test_numpy_backed_input_becomes_lazy():
    raw = _raw_arrays()
    cube = _cube(raw).compute()
    assert not isinstance(cube.data, da.Array)
    out = subtract_overscan(cube)
    assert isinstance(out.data, da.Array)


def test_dataarray_with_wrong_dims_is_rejected():
    with pytest.raises(ShapeMismatchError, match="dims"):
        subtract_bias(xr.DataArray(np.zeros((3, 4)), dims=("a", "b")), _image(np.zeros((3, 4)), path="b"))


logging.getLogger("ccdproc").setLevel(logging.ERROR)

import os
import pickle

import dask
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

import daskred as dr
from daskred import io
from daskred.errors import FitsFileError, HeaderError, ShapeMismatchError

from conftest import raise_if_dask_computes, write_frames


# ------------------------------------------------------------------ sections
@pytest.mark.parametrize(
    "text, shape, expected",
    [
        ("[18:1382,1:1370]", (1370, 1432), (slice(0, 1370), slice(17, 1382))),
        ("[1388:1432,1:1370]", (1370, 1432), (slice(0, 1370), slice(1387, 1432))),
        ("[*,5:9]", (20, 30), (slice(4, 9), slice(0, 30))),
        ("[ 3 : 1 , 2:2 ]", None, (slice(1, 2), slice(0, 3))),
    ],
)
def test_parse_section(text, shape, expected):
    assert io.parse_section(text, shape) == expected


def test_parse_section_matches_pixels():
    image = np.arange(20 * 30).reshape(20, 30)
    ys, xs = io.parse_section("[4:6,2:3]")
    # FITS pixel (x=4, y=2) is numpy [1, 3]
    assert image[ys, xs][0, 0] == image[1, 3]
    assert image[ys, xs].shape == (2, 3)


@pytest.mark.parametrize("bad", ["18:1382,1:1370", "[0:10,1:5]", "[a:b,1:2]", 5])
def test_parse_section_errors(bad):
    with pytest.raises(HeaderError, match="section"):
        io.parse_section(bad)


def test_parse_section_beyond_shape():
    with pytest.raises(HeaderError, match="beyond the image axis"):
        io.parse_section("[1:40,1:10]", (10, 30))


# ------------------------------------------------------------------ open_frames
def test_open_frames_equals_astropy_float32(make_frames):
    paths, cube = make_frames(n=5, shape=(41, 29), seed=3)
    frames = dr.open_frames(paths, chunks=6)
    assert frames.dims == ("frame", "y", "x")
    assert frames.dtype == np.float32
    assert frames.data.chunks[1] == (6, 6, 6, 6, 6, 6, 5)
    np.testing.assert_array_equal(frames.values, np.stack([fits.getdata(p) for p in paths]))


def test_open_frames_uint16_bzero(tmp_path):
    rng = np.random.default_rng(7)
    cube = rng.integers(0, 65535, (3, 23, 31)).astype(np.float32)
    cube[0, 0, 0] = 65535
    cube[1, 0, 0] = 0
    paths = write_frames(tmp_path, cube, uint16=True)
    header = fits.getheader(paths[0])
    assert header["BITPIX"] == 16 and header["BZERO"] == 32768
    frames = dr.open_frames(paths, chunks=5)
    np.testing.assert_array_equal(frames.values, cube)


def test_open_frames_bscale_and_blank(tmp_path):
    raw = np.arange(12 * 9, dtype=np.int16).reshape(12, 9)
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 10.0
    hdu.header["BLANK"] = 7
    path = tmp_path / "scaled.fits"
    hdu.writeto(path)
    expected = raw.astype(np.float32) * 0.5 + 10.0
    expected[raw == 7] = np.nan
    got = dr.open_frames([path], chunks=5).values[0]
    np.testing.assert_array_equal(got, expected)


def test_open_frames_compressed_and_extension(tmp_path):
    rng = np.random.default_rng(11)
    data = rng.integers(0, 60000, (33, 27)).astype(np.uint16)
    comp = tmp_path / "c.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, compression_type="RICE_1")]).writeto(comp)
    mef = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data.astype(np.float32) + 1, name="SCI"),
                  fits.ImageHDU(np.zeros((33, 27), np.float32), name="ERR")]).writeto(mef)
    got = dr.open_frames([comp], chunks=8).values[0]
    np.testing.assert_array_equal(got, data.astype(np.float32))
    sci = dr.open_frames([mef], hdu="SCI").values[0]
    np.testing.assert_array_equal(sci, data.astype(np.float32) + 1)
    with pytest.raises(Exception, match="holds 2 image HDUs"):
        dr.open_frames([mef])


def test_open_frames_reads_no_pixels(make_frames, monkeypatch):
    paths, _ = make_frames(n=4)

    def forbidden(*args, **kwargs):
        raise AssertionError("pixels were read while building the graph")

    monkeypatch.setattr(np, "fromfile", forbidden)
    with raise_if_dask_computes():
        frames = dr.open_frames(paths)
        dr.combine(frames, method="mean", clip="sigma")


def test_graph_is_small_and_deterministic(make_frames):
    paths, _ = make_frames(n=6)
    a = dr.open_frames(paths, chunks=4)
    b = dr.open_frames(paths, chunks=4)
    assert a.data.name == b.data.name
    assert len(pickle.dumps(dict(a.data.__dask_graph__()))) < 30_000
    os.utime(paths[0], ns=(1, 1))  # an input changed: a different graph name
    assert dr.open_frames(paths, chunks=4).data.name != a.data.name


def test_coordinates_from_headers(make_frames):
    headers = [{"IMAGETYP": "FLAT", "FILTER": "V", "EXPTIME": 2.0 + i} for i in range(3)]
    paths, _ = make_frames(n=3, headers=headers)
    frames = dr.open_frames(paths)
    assert list(frames.imagetyp.values) == ["flat"] * 3
    assert list(frames.exptime.values) == [2.0, 3.0, 4.0]
    assert list(frames.path.values) == [str(p) for p in paths]


def test_shape_mismatch_names_odd_file(tmp_path):
    rng = np.random.default_rng(0)
    good = write_frames(tmp_path / "a", rng.normal(size=(3, 20, 30)))
    odd = write_frames(tmp_path / "b", rng.normal(size=(1, 21, 30)), prefix="odd")
    with pytest.raises(ShapeMismatchError, match=r"odd000\.fits 21x30"):
        dr.open_frames(good + odd)


def test_truncated_file_is_named(make_frames):
    paths, _ = make_frames(n=2, shape=(40, 50))
    size = os.path.getsize(paths[1])
    frames = dr.open_frames(paths, chunks=10)
    with open(paths[1], "r+b") as fh:
        fh.truncate(size - 2880 * 2)
    # truncated after the graph was built: the read names the file
    with pytest.raises(FitsFileError, match=r"frame001\.fits.*truncated"):
        frames.values
    # truncated before: the header's declared length gives it away without reading pixels
    with pytest.raises(FitsFileError, match=r"frame001\.fits: truncated"):
        dr.open_frames(paths, chunks=10)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FitsFileError, match="nothing.fits"):
        dr.open_frames([tmp_path / "nothing.fits"])


# ------------------------------------------------------------------ writers
def test_to_fits_roundtrip_dataset_and_history(make_frames, tmp_path):
    paths, cube = make_frames(n=5, shape=(31, 17))
    result = dr.combine(dr.open_frames(paths, chunks=7), method="mean", with_counts=True)
    out = dr.to_fits(result, tmp_path / "out" / "mean.fits", header={"OBJECT": "test"})
    with fits.open(out) as hdul:
        np.testing.assert_allclose(hdul[0].data, cube.mean(0), rtol=1e-6)
        assert hdul[0].header["OBJECT"] == "test"
        assert any("combined 5 frames" in str(h) for h in hdul[0].header["HISTORY"])
        assert hdul["COUNT"].data.min() == 5
        assert [h.name for h in hdul] == ["PRIMARY", "COUNT", "REJECTED_LOW", "REJECTED_HIGH"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_to_fits_never_overwrites_inputs(make_frames):
    paths, _ = make_frames(n=3)
    frames = dr.open_frames(paths)
    before = paths[0].read_bytes()
    with pytest.raises(FitsFileError, match="refusing to write over an input"):
        dr.to_fits(dr.combine(frames), paths[0], overwrite=True)
    assert paths[0].read_bytes() == before


def test_to_fits_existing_needs_overwrite(tmp_path):
    image = xr.DataArray(np.ones((5, 7), np.float32), dims=("y", "x"))
    target = dr.to_fits(image, tmp_path / "a.fits")
    with pytest.raises(FitsFileError, match="overwrite=True"):
        dr.to_fits(image, target)
    dr.to_fits(image * 2, target, overwrite=True)
    assert fits.getdata(target)[0, 0] == 2.0


def test_to_fits_streams_a_cube(make_frames, tmp_path):
    paths, cube = make_frames(n=4, shape=(23, 19))
    frames = dr.open_frames(paths, chunks=5)
    out = dr.to_fits(frames, tmp_path / "cube.fits")
    np.testing.assert_array_equal(fits.getdata(out), cube)


def test_to_zarr_roundtrip(make_frames, tmp_path):
    paths, cube = make_frames(n=3, shape=(23, 19))
    frames = dr.open_frames(paths, chunks=5)
    store = dr.to_zarr(frames, tmp_path / "cube.zarr")
    back = xr.open_zarr(store, consolidated=False)["data"]
    np.testing.assert_array_equal(back.values, cube)
    assert list(back.path.values) == [str(p) for p in paths]


def test_to_zarr_in_batches_equals_one_write(make_frames, tmp_path):
    import dask

    paths, cube = make_frames(n=7, shape=(23, 19))
    frames = dr.open_frames(paths, chunks=5)
    ds = xr.Dataset({"data": frames, "mask": frames > 1000})
    whole = dr.to_zarr(ds, tmp_path / "whole.zarr")
    with dask.config.set({"daskred.write-bytes": 2 * 23 * 19 * 5}):  # two frames a batch
        batched = dr.to_zarr(ds, tmp_path / "batched.zarr")
    a, b = xr.open_zarr(whole, consolidated=False), xr.open_zarr(batched, consolidated=False)
    np.testing.assert_array_equal(b["data"].values, cube)
    np.testing.assert_array_equal(a["mask"].values, b["mask"].values)
    assert list(b["path"].values) == [str(p) for p in paths]

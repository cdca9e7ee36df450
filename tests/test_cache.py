"""Stage checkpoints on a folder and on an fsspec URL (the in-memory filesystem stands in for
an object store: no rename, every file a separate object)."""

import uuid

import dask
import dask.array as da
import fsspec
import numpy as np
import pytest
import xarray as xr

from daskred.cache import Cache
from daskred.errors import FitsFileError
from daskred.io import to_zarr


def _cube(seed=0, frames=5):
    data = np.random.default_rng(seed).normal(100, 5, (frames, 37, 53)).astype("float32")
    return xr.Dataset({"data": (("frame", "y", "x"), da.from_array(data, chunks=(2, 20, 53)))},
                      coords={"path": ("frame", np.array([f"/raw/f{i}.fits" for i in range(frames)], dtype=object))})


@pytest.fixture(params=["folder", "url"])
def cache(request, tmp_path):
    if request.param == "folder":
        yield Cache(tmp_path / "cache", version="t")
        return
    root = f"memory://daskred-test-{uuid.uuid4().hex}"
    yield Cache(root, version="t")
    fs = fsspec.filesystem("memory")
    if fs.exists(root[len("memory://"):]):
        fs.rm(root[len("memory://"):], recursive=True)


def test_checkpoint_builds_once_and_reads_back_lazily(cache):
    calls = []

    def build():
        calls.append(1)
        return _cube() * 2

    key = cache.key("calibrated", ["/raw/f0.fits"], {"gain": 1.5})
    first, cached = cache.checkpoint(key, build)
    assert not cached and cache.has(key)
    second, cached = cache.checkpoint(key, build)
    assert cached and len(calls) == 1
    assert isinstance(second["data"].data, da.Array)
    np.testing.assert_array_equal(second["data"].values, (_cube() * 2)["data"].values)
    assert list(second.path.values) == [f"/raw/f{i}.fits" for i in range(5)]
    other = cache.key("calibrated", ["/raw/f0.fits"], {"gain": 1.6})
    assert other != key and not cache.has(other)


def test_memo_entries_and_clear(cache):
    assert cache.memo(cache.key("zeropoints", 1), lambda: {"zp": 23.5}) == ({"zp": 23.5}, False)
    assert cache.memo(cache.key("zeropoints", 1), lambda: {"zp": 0.0}) == ({"zp": 23.5}, True)
    cache.checkpoint(cache.key("stacks", 1), lambda: _cube(1))
    cache.checkpoint(cache.key("masters", 1), lambda: _cube(2, frames=1))
    rows = cache.entries()
    assert sorted(r["stage"] for r in rows) == ["masters", "stacks", "zeropoints"]
    assert all(r["complete"] and r["bytes"] > 0 for r in rows)
    assert cache.clear(["stacks"]) == 1
    assert sorted(r["stage"] for r in cache.entries()) == ["masters", "zeropoints"]
    assert not cache.has(cache.key("stacks", 1))
    assert cache.clear() == 2 and cache.entries() == []


def _failing_cube():
    """The cube of seed 3 whose last frames fail to compute, after the first ones were stored."""
    def third_batch_fails(block, block_info=None):
        if block_info is not None and block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("interrupted")
        return block

    bad = _cube(3)
    return bad.assign(data=bad["data"].copy(data=bad["data"].data.map_blocks(third_batch_fails, dtype="float32")))


def test_an_interrupted_write_is_never_trusted(cache):
    key = cache.key("cosmics", "x")
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError, match="interrupted"):
        cache.checkpoint(key, _failing_cube)
    assert not cache.has(key)
    value, cached = cache.checkpoint(key, lambda: _cube(3))
    assert not cached
    np.testing.assert_array_equal(value["data"].values, _cube(3)["data"].values)


def test_a_url_entry_without_its_marker_is_rewritten_and_listed_as_incomplete():
    root = f"memory://daskred-test-{uuid.uuid4().hex}"
    cache = Cache(root, version="t")
    key = cache.key("background", "y")
    # what a process killed after the chunks but before the marker leaves behind
    to_zarr(_cube(4) + 1000, f"{root}/background/{key}.zarr")
    assert not cache.has(key)
    assert [r["complete"] for r in cache.entries()] == [False]
    value, cached = cache.checkpoint(key, lambda: _cube(4))
    assert not cached and [r["complete"] for r in cache.entries()] == [True]
    np.testing.assert_array_equal(value["data"].values, _cube(4)["data"].values)
    assert cache.clear() == 1


def test_to_zarr_on_a_url_refuses_to_overwrite_by_default():
    url = f"memory://daskred-test-{uuid.uuid4().hex}/x.zarr"
    assert to_zarr(_cube(), url) == url
    with pytest.raises(FitsFileError, match="exists; pass overwrite=True"):
        to_zarr(_cube(), url)
    to_zarr(_cube(5), url, overwrite=True)
    np.testing.assert_array_equal(xr.open_zarr(url, consolidated=False)["data"].values, _cube(5)["data"].values)


def test_file_urls_are_local_folders(tmp_path):
    cache = Cache(f"file://{tmp_path}/c", version="t")
    assert not cache.is_remote
    cache.checkpoint(cache.key("stacks", 2), lambda: _cube())
    assert list((tmp_path / "c" / "stacks").glob("*.zarr"))

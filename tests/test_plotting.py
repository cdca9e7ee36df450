"""Tests for daskred.plotting: zscale quick-looks and benchmark figures."""

from __future__ import annotations

import dask.array as da
import matplotlib.image
import numpy as np
import pytest
import xarray as xr
from astropy.visualization import ZScaleInterval

from daskred.errors import ShapeMismatchError
from daskred.plotting import (
    MEDIAN_NOISE,
    bar_figure,
    quality_figure,
    save_png,
    scaling_figure,
    zscale_figure,
    zscale_png,
)

from conftest import raise_if_dask_computes


def _image(shape=(61, 87), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 20.0, shape)
    image[30, 40] = 60000.0  # a saturated star must not stretch the zscale limits
    return image


# ------------------------------------------------------------------ zscale quick-looks
def test_zscale_png_writes_a_readable_png(tmp_path):
    path = zscale_png(_image(), tmp_path / "sub" / "quick.png", title="master bias")
    assert path == tmp_path / "sub" / "quick.png"
    assert path.stat().st_size > 0
    png = matplotlib.image.imread(path)
    assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 100
    assert not list(path.parent.glob(".*.tmp"))  # written under a temporary name, then renamed


def test_zscale_limits_axes_and_colorbar_follow_the_image():
    image = _image()
    image[5:8, 5:8] = np.nan
    cube = xr.DataArray(da.from_array(image, chunks=(20, 40)), dims=("y", "x"), attrs={"units": "adu"})
    fig = zscale_figure(cube, title="stack")
    ax = fig.axes[0]
    expected = ZScaleInterval().get_limits(image[np.isfinite(image)])
    np.testing.assert_allclose(ax.images[0].get_clim(), expected, rtol=1e-12)
    assert expected[1] < 2000  # the outlier did not set the stretch
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("x (pixel)", "y (pixel)", "stack")
    assert fig.axes[1].get_ylabel() == "adu (zscale)"
    assert ax.images[0].origin == "lower"
    np.testing.assert_array_equal(np.isnan(ax.images[0].get_array().filled(np.nan)), np.isnan(image))


def test_large_images_are_block_averaged_in_original_pixel_units():
    image = np.arange(120 * 200, dtype=np.float64).reshape(120, 200)
    fig = zscale_figure(xr.DataArray(da.from_array(image, chunks=50), dims=("y", "x")), max_size=50)
    shown = fig.axes[0].images[0]
    assert shown.get_array().shape == (30, 50)  # factor 4
    np.testing.assert_allclose(shown.get_array()[0, 0], image[:4, :4].mean())
    np.testing.assert_allclose(shown.get_extent(), (-0.5, 199.5, -0.5, 119.5))
    plain = zscale_figure(image, max_size=50).axes[0].images[0]  # numpy path, same averaging
    np.testing.assert_allclose(plain.get_array(), shown.get_array())


def test_building_a_dask_figure_computes_only_when_asked():
    lazy = xr.DataArray(da.ones((20, 30), chunks=10), dims=("y", "x"))
    with raise_if_dask_computes(), pytest.raises(AssertionError, match="computed"):
        zscale_figure(lazy)  # documented: the quick-look computes the image


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 4)), np.zeros(5)])
def test_zscale_rejects_non_images(bad, tmp_path):
    with pytest.raises(ShapeMismatchError, match="2-D image"):
        zscale_png(bad, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_constant_and_all_nan_images_still_draw():
    assert zscale_figure(np.full((9, 11), 5.0)).axes[0].images[0].get_clim() == (4.5, 5.5)
    assert zscale_figure(np.full((9, 11), np.nan)).axes[0].images[0].get_clim() == (0.0, 1.0)


# ------------------------------------------------------------------ benchmark figures
ROWS = [
    {"strategy": s, "implementation": impl, "frames": n, "seconds": t * n, "peak_mb": m * n}
    for s, t, m in (("median", 0.1, 3.0), ("sigma", 0.2, 4.0))
    for impl in ("daskred", "numpy")
    for n in (20, 5, 10)
]


def test_scaling_figure_has_one_labelled_line_per_group():
    fig = scaling_figure(ROWS, x="frames", y="seconds", xlabel="frames combined", ylabel="wall time (s)",
                         title="time")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("frames combined", "wall time (s)", "time")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["median / daskred", "median / numpy", "sigma / daskred", "sigma / numpy"]
    line = ax.lines[2]
    np.testing.assert_array_equal(line.get_xdata(), [5, 10, 20])  # sorted along x
    np.testing.assert_allclose(line.get_ydata(), [1.0, 2.0, 4.0])


def test_scaling_figure_leaves_out_failed_rows():
    rows = ROWS + [{"strategy": "broken", "implementation": "daskred", "frames": 5, "seconds": None}]
    ax = scaling_figure(rows, x="frames", y="seconds", xlabel="frames", ylabel="time (s)", logx=True).axes[0]
    assert len(ax.lines) == 4 and ax.get_xscale() == "log"


def test_bar_figure_groups_bars_per_category():
    rows = [{"scheduler": sch, "strategy": s, "seconds": t}
            for sch, base in (("threads", 1.0), ("processes", 2.0), ("distributed", 3.0))
            for s, t in (("median", base), ("sigma", 2 * base))]
    ax = bar_figure(rows, category="scheduler", value="seconds", ylabel="wall time (s)").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["threads", "processes", "distributed"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["median", "sigma"]
    assert [p.get_height() for p in ax.patches] == [1.0, 2.0, 3.0, 2.0, 4.0, 6.0]
    assert ax.get_ylabel() == "wall time (s)" and ax.get_xlabel() == "scheduler"


def test_quality_figure_shows_noise_and_artifacts():
    rows = [{"strategy": "mean", "noise_ratio": 1.0, "survive_cosmic": 1.0, "survive_trail": 1.0,
             "survive_hot": 1.0, "rejected_good": 0.0},
            {"strategy": "median", "noise_ratio": 1.22, "survive_cosmic": 0.0, "survive_trail": 0.0,
             "survive_hot": 0.0, "rejected_good": 0.0},
            {"strategy": "sigma", "noise_ratio": 1.01, "survive_cosmic": 0.0, "survive_trail": 0.004,
             "survive_hot": 0.0, "rejected_good": 0.002}]
    fig = quality_figure(rows, title="15 frames")
    left, right = fig.axes
    assert [p.get_height() for p in left.patches] == [1.0, 1.22, 1.01]
    assert left.get_ylabel() == "noise / ideal (sigma / sqrt(N))"
    assert MEDIAN_NOISE == pytest.approx(1.2533, abs=1e-4)
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        "cosmic rays left", "satellite trail left", "hot pixels left", "good pixels rejected"]
    assert right.get_ylabel() == "pixels (%)"
    assert right.patches[0].get_height() == pytest.approx(100.0)  # mean keeps every cosmic ray
    assert fig.get_suptitle() == "15 frames"


def test_save_png_replaces_a_file_atomically(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    save_png(scaling_figure(ROWS, x="frames", y="peak_mb", xlabel="frames", ylabel="peak memory (MB)"), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]

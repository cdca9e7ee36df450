"""Quick-look PNGs of images and the plots of the combine benchmark.

Figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas, never through
``pyplot``: no global figure state, no GUI backend, safe in worker threads.  Every
``*_figure`` function returns the figure (for notebooks and tests); :func:`save_png`
writes one atomically, and :func:`zscale_png` does both for an image.

>>> from daskred.plotting import zscale_png
>>> zscale_png(master, "master_bias.png", title="master bias")       # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ShapeMismatchError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["zscale_png", "zscale_figure", "save_png", "scaling_figure", "quality_figure", "bar_figure"]

#: Noise of a median of many Gaussian values relative to their mean, sqrt(pi / 2).
MEDIAN_NOISE = math.sqrt(math.pi / 2.0)

_ARTIFACTS = (("survive_cosmic", "cosmic rays left"), ("survive_trail", "satellite trail left"),
              ("survive_hot", "hot pixels left"), ("rejected_good", "good pixels rejected"))


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Write a figure to a PNG file atomically.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure, e.g. from :func:`zscale_figure` or :func:`scaling_figure`.
    path : path-like
        Output file; its folder is created if needed.
    dpi : int
        Resolution in dots per inch.

    Returns
    -------
    pathlib.Path
        The path written.

    Notes
    -----
    The PNG is written under a temporary name in the target folder and renamed into
    place, so an interrupted write leaves no partial file.

    Examples
    --------
    >>> save_png(scaling_figure(rows, x="frames", y="seconds", xlabel="frames",
    ...                         ylabel="time (s)"), "time.png")           # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- images
def _as_image(image: Any, max_size: int) -> tuple[np.ndarray, tuple[float, float, float, float], str]:
    """Computed float64 pixels (block-averaged to at most ``max_size``), extent, units."""
    ndim = getattr(image, "ndim", None)
    if ndim != 2:
        shape = getattr(image, "shape", type(image).__name__)
        raise ShapeMismatchError(
            f"a quick-look PNG needs a 2-D image (y, x), got shape {shape}; "
            "pick one plane first, e.g. cube.isel(frame=0)"
        )
    ny, nx = (int(n) for n in image.shape)
    factor = max(1, math.ceil(max(ny, nx) / max(1, int(max_size))))
    units = ""
    if hasattr(image, "dims") and hasattr(image, "coarsen"):  # xarray.DataArray (maybe dask-backed)
        units = str(image.attrs.get("units", ""))
        if factor > 1:
            ydim, xdim = image.dims
            image = image.coarsen({ydim: factor, xdim: factor}, boundary="trim").mean()
        values = np.asarray(image.values, dtype=np.float64)
    else:
        if hasattr(image, "compute"):  # a bare dask array
            image = image.compute()
        values = np.asarray(image, dtype=np.float64)
        if factor > 1:
            my, mx = ny // factor, nx // factor
            blocks = values[: my * factor, : mx * factor].reshape(my, factor, mx, factor)
            with np.errstate(all="ignore"):
                counts = np.isfinite(blocks).sum(axis=(1, 3))
                values = np.where(counts > 0, np.nansum(blocks, axis=(1, 3)) / np.maximum(counts, 1), np.nan)
    my, mx = values.shape
    extent = (-0.5, mx * factor - 0.5, -0.5, my * factor - 0.5)
    return values, extent, units


def zscale_figure(
    image: Any,
    *,
    title: str | None = None,
    cmap: str = "gray",
    max_size: int = 2048,
) -> Figure:
    """Draw a 2-D image with zscale limits, labelled axes and a colorbar.

    Parameters
    ----------
    image : xarray.DataArray, numpy.ndarray or dask.array.Array
        ``(y, x)`` image; NaN pixels are drawn in red.
    title : str, optional
        Figure title.
    cmap : str
        Matplotlib colormap name.
    max_size : int
        Images larger than this many pixels on a side are block-averaged (NaN-aware) by an
        integer factor before drawing; axes keep the original pixel coordinates.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Computes a dask-backed image (after the lazy block averaging, so only the reduced
    image is held in memory).  Display limits come from
    :class:`astropy.visualization.ZScaleInterval` on the finite pixels; row 0 is at the
    bottom, as in DS9.

    Examples
    --------
    >>> fig = zscale_figure(np.random.default_rng(0).normal(size=(50, 70)))
    >>> fig.axes[0].get_xlabel()
    'x (pixel)'
    """
    import matplotlib
    from astropy.visualization import ZScaleInterval

    values, extent, units = _as_image(image, max_size)
    finite = values[np.isfinite(values)]
    if finite.size:
        vmin, vmax = (float(v) for v in ZScaleInterval().get_limits(finite))
        if not vmax > vmin:
            vmin, vmax = vmin - 0.5, vmin + 0.5
    else:
        vmin, vmax = 0.0, 1.0
    ny, nx = values.shape
    width = 7.0
    height = min(9.0, max(3.0, width * ny / max(nx, 1) * 0.85 + 0.8))
    fig = _new_figure(width, height)
    ax = fig.add_subplot()
    colors = matplotlib.colormaps[cmap].with_extremes(bad="tab:red")
    shown = ax.imshow(values, origin="lower", cmap=colors, vmin=vmin, vmax=vmax,
                      interpolation="nearest", extent=extent)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    if title:
        ax.set_title(title)
    bar = fig.colorbar(shown, ax=ax, shrink=0.9)
    bar.set_label(f"{units} (zscale)" if units else "pixel value (zscale)")
    return fig


def zscale_png(
    image: Any,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    cmap: str = "gray",
    max_size: int = 2048,
) -> Path:
    """Write a quick-look PNG of a 2-D image with zscale limits.

    Parameters
    ----------
    image : xarray.DataArray, numpy.ndarray or dask.array.Array
        ``(y, x)`` image, e.g. a master calibration frame or a stack.
    path : path-like
        Output PNG file.
    title : str, optional
        Figure title.
    cmap : str
        Matplotlib colormap name.
    max_size : int
        Larger images are block-averaged to at most this many pixels on a side.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ShapeMismatchError
        The image is not 2-D.

    Notes
    -----
    Computes the image (see :func:`zscale_figure`) and writes the PNG atomically.

    Examples
    --------
    >>> zscale_png(dr.combine(frames), "stack.png", title="M 13, V")       # doctest: +SKIP
    """
    return save_png(zscale_figure(image, title=title, cmap=cmap, max_size=max_size), path)


# --------------------------------------------------------------------------- benchmark plots
def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _groups(rows: Sequence[Mapping[str, Any]], by: Sequence[str]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        label = " / ".join(str(row.get(key, "")) for key in by)
        groups.setdefault(label, []).append(row)
    return groups


def scaling_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str,
    y: str,
    xlabel: str,
    ylabel: str,
    by: Sequence[str] = ("strategy", "implementation"),
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
) -> Figure:
    """Plot how one measured figure grows with another, one line per group of rows.

    Parameters
    ----------
    rows : sequence of mapping
        Benchmark rows, e.g. ``BenchResult.sweeps["frames"]``.
    x, y : str
        Keys of the rows to plot (e.g. ``"frames"`` and ``"seconds"``); rows whose value is
        missing or not finite are left out.
    xlabel, ylabel : str
        Axis labels, with units.
    by : sequence of str
        Keys whose values name a line (legend entry).
    title : str, optional
        Figure title.
    logx, logy : bool
        Logarithmic axes.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> rows = [{"strategy": "median", "implementation": "daskred", "frames": n, "seconds": 0.1 * n}
    ...         for n in (5, 10, 20)]
    >>> fig = scaling_figure(rows, x="frames", y="seconds", xlabel="frames", ylabel="time (s)")
    >>> fig.axes[0].get_ylabel()
    'time (s)'
    """
    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for label, members in _groups(rows, by).items():
        points = sorted((_number(r.get(x)), _number(r.get(y))) for r in members)
        points = [(a, b) for a, b in points if math.isfinite(a) and math.isfinite(b)]
        if not points:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    elif ax.lines:
        ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(title=" / ".join(by), fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def bar_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    category: str,
    value: str,
    ylabel: str,
    by: Sequence[str] = ("strategy",),
    xlabel: str | None = None,
    title: str | None = None,
) -> Figure:
    """Grouped bars of one figure per category (e.g. time per scheduler), one colour per group.

    Parameters
    ----------
    rows : sequence of mapping
        Benchmark rows.
    category : str
        Key whose values are the groups of bars along x (e.g. ``"scheduler"``).
    value : str
        Key of the bar heights (e.g. ``"seconds"``).
    ylabel : str
        y-axis label, with units.
    by : sequence of str
        Keys whose values name a colour (legend entry).
    xlabel : str, optional
        x-axis label (default: ``category``).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> rows = [{"scheduler": s, "strategy": "median", "seconds": t}
    ...         for s, t in (("threads", 1.0), ("processes", 2.0))]
    >>> bar_figure(rows, category="scheduler", value="seconds", ylabel="time (s)").axes[0].get_xlabel()
    'scheduler'
    """
    categories = list(dict.fromkeys(str(r.get(category)) for r in rows))
    groups = _groups(rows, by)
    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(groups))
    for k, (label, members) in enumerate(groups.items()):
        heights = {str(r.get(category)): _number(r.get(value)) for r in members}
        xs = [i + (k - (len(groups) - 1) / 2) * width for i in range(len(categories))]
        ax.bar(xs, [heights.get(c, math.nan) for c in categories], width=width, label=label)
    ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(xlabel or category)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    if groups:
        ax.legend(title=" / ".join(by), fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def quality_figure(rows: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Figure:
    """Noise and artifact rejection of each combine strategy (simulated truth).

    Parameters
    ----------
    rows : sequence of mapping
        One row per strategy with ``strategy``, ``noise_ratio`` (noise of the result over
        the ideal sigma/sqrt(N)) and the fractions ``survive_cosmic``, ``survive_trail``,
        ``survive_hot`` and ``rejected_good`` (missing values are left out).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Left: noise relative to the ideal, with the ideal (1) and the large-N median
        (sqrt(pi/2) = 1.253) marked.  Right: percentage of injected artifact pixels still
        visible (> 5 ideal sigma) in the result, and of good pixels rejected.

    Examples
    --------
    >>> rows = [{"strategy": "mean", "noise_ratio": 1.0, "survive_cosmic": 1.0},
    ...         {"strategy": "sigma", "noise_ratio": 1.02, "survive_cosmic": 0.0}]
    >>> quality_figure(rows).axes[0].get_ylabel()
    'noise / ideal (sigma / sqrt(N))'
    """
    names = [str(r.get("strategy")) for r in rows]
    fig = _new_figure(10.0, 4.2)
    left, right = fig.subplots(1, 2)
    noise = [_number(r.get("noise_ratio")) for r in rows]
    left.bar(range(len(rows)), noise, color="tab:blue", label="combined result")
    left.axhline(1.0, color="black", lw=1, label="ideal: sigma / sqrt(N)")
    left.axhline(MEDIAN_NOISE, color="tab:gray", ls="--", lw=1, label="median, large N: 1.253")
    left.set_xticks(range(len(rows)), names, rotation=30, ha="right")
    left.set_xlabel("combine strategy")
    left.set_ylabel("noise / ideal (sigma / sqrt(N))")
    finite = [v for v in noise if math.isfinite(v)]
    left.set_ylim(0, max([MEDIAN_NOISE, *finite]) * 1.15)
    left.legend(fontsize="small", loc="lower right")
    left.grid(True, axis="y", alpha=0.3)

    shown = [(key, label) for key, label in _ARTIFACTS if any(math.isfinite(_number(r.get(key))) for r in rows)]
    width = 0.8 / max(1, len(shown))
    for k, (key, label) in enumerate(shown):
        xs = [i + (k - (len(shown) - 1) / 2) * width for i in range(len(rows))]
        right.bar(xs, [100.0 * _number(r.get(key)) for r in rows], width=width, label=label)
    right.set_xticks(range(len(rows)), names, rotation=30, ha="right")
    right.set_xlabel("combine strategy")
    right.set_ylabel("pixels (%)")
    right.set_ylim(0, 105)
    right.grid(True, axis="y", alpha=0.3)
    if shown:
        right.legend(fontsize="small", loc="upper right")
    if title:
        fig.suptitle(title)
    return fig

"""Shared fixtures: seeded synthetic FITS files, the real-data folder, a no-compute guard."""

from __future__ import annotations

import contextlib
from pathlib import Path

import dask
import numpy as np
import pytest
from astropy.io import fits

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LOWELL = SHARED_DATA / "lowell42-nasa42-5945"


class ComputeError(AssertionError):
    """Raised when a graph is computed inside raise_if_dask_computes()."""


@contextlib.contextmanager
def raise_if_dask_computes():
    """Fail the test if anything inside the block computes a dask graph."""

    def scheduler(dsk, keys, **kwargs):
        raise ComputeError("a dask graph was computed where the code must stay lazy")

    with dask.config.set(scheduler=scheduler):
        yield


@pytest.fixture
def no_compute():
    return raise_if_dask_computes


@pytest.fixture(scope="session")
def lowell():
    """The real Lowell 42-inch frames (skipped when ../shared/data is absent)."""
    if not LOWELL.is_dir():
        pytest.skip(f"real frames not available at {LOWELL}")
    return LOWELL


def render_stars(shape, x, y, flux, rng, *, sigma, sky, noise) -> np.ndarray:
    """Gaussian stars of exact total ``flux`` at (x, y) on a flat sky, plus Gaussian noise."""
    ny, nx = shape
    image = np.full(shape, float(sky))
    half = int(np.ceil(5 * sigma))
    for xi, yi, f in zip(x, y, flux):
        x0, x1 = max(int(xi) - half, 0), min(int(xi) + half + 2, nx)
        y0, y1 = max(int(yi) - half, 0), min(int(yi) + half + 2, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        image[y0:y1, x0:x1] += f / (2 * np.pi * sigma**2) * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * sigma**2))
    return (image + rng.normal(0.0, noise, shape)).astype(np.float32)


def write_frames(folder: Path, cube: np.ndarray, *, headers=None, uint16: bool = False,
                 prefix: str = "frame") -> list[Path]:
    """Write each plane of ``cube`` as a FITS file; uint16 files use BZERO=32768."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, plane in enumerate(cube):
        header = fits.Header()
        for key, value in (headers[i] if headers else {}).items():
            header[key] = value
        path = folder / f"{prefix}{i:03d}.fits"
        if uint16:
            hdu = fits.PrimaryHDU(np.clip(np.round(plane), 0, 65535).astype(np.uint16), header=header)
        else:
            hdu = fits.PrimaryHDU(plane.astype(np.float32), header=header)
        hdu.writeto(path)
        paths.append(path)
    return paths


@pytest.fixture
def make_frames(tmp_path):
    """Factory writing seeded (n, 37, 53) frames; returns (paths, cube as float32)."""

    def factory(n=7, shape=(37, 53), seed=0, uint16=False, headers=None, level=1000.0, noise=10.0):
        rng = np.random.default_rng(seed)
        cube = rng.normal(level, noise, (n, *shape)).astype(np.float32)
        if uint16:
            cube = np.round(cube).astype(np.float32)
        paths = write_frames(tmp_path / f"frames{seed}", cube, headers=headers, uint16=uint16)
        return paths, cube

    return factory

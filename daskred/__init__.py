"""daskred: out-of-core, parallel CCD image reduction with dask and xarray.

>>> import daskred as dr
>>> table = dr.scan("raw/")                                     # doctest: +SKIP
>>> frames = dr.open_frames(table[table.imagetyp == "bias"])    # doctest: +SKIP
>>> master = dr.combine(frames, method="median")                # doctest: +SKIP
>>> dr.to_fits(master, "bias.fits")                             # doctest: +SKIP
>>> report = dr.reduce("raw/", out="reduced/")                  # doctest: +SKIP

Stage modules are imported on first use, so ``import daskred`` stays quick and a worker
that only combines never loads photutils or astroscrappy.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    # collection and I/O
    "scan": "collection", "open_frames": "io", "parse_section": "io", "to_fits": "io", "to_zarr": "io",
    # combine
    "combine": "combine",
    # calibration
    "subtract_overscan": "calibrate", "trim": "calibrate", "subtract_bias": "calibrate",
    "subtract_dark": "calibrate", "flat_correct": "calibrate", "gain_correct": "calibrate",
    "make_variance": "quality", "mask_saturated": "quality", "make_bad_pixel_mask": "quality",
    "load_mask": "quality", "calibrate": "calibrate",
    "Master": "masters", "make_masters": "masters", "select_master": "masters", "write_masters": "masters",
    # per-frame stages
    "detect_cosmics": "cosmics", "cosmics_halo": "cosmics",
    "estimate_background": "background", "subtract_background": "background",
    # registration and astrometry
    "find_transforms": "align", "apply_transforms": "resample",
    "solve_wcs": "astrometry", "repair_wcs_header": "astrometry", "write_wcs": "astrometry",
    "WcsSolution": "astrometry",
    # photometry
    "aperture_photometry": "photometry", "zero_point": "zeropoint", "fit_extinction": "zeropoint",
    "read_standards": "photometry", "write_zeropoints": "zeropoint", "set_photzp": "zeropoint",
    "PhotFlag": "photometry", "ZeroPoint": "zeropoint", "ExtinctionFit": "zeropoint",
    # pipeline and data
    "PipelineConfig": "config", "Report": "pipeline", "reduce": "pipeline",
    "simulate": "simulate", "SimulatedDataset": "simulate",
}
_MODULES = ("errors", "collection", "io", "combine", "calibrate", "quality", "masters", "cosmics",
            "background", "align", "resample", "astrometry", "photometry", "zeropoint", "config", "pipeline", "simulate",
            "cache", "cluster", "bench", "bench_measure", "bench_quality", "plotting", "cli")

__all__ = ["__version__", "errors", "bench", "plotting", *_EXPORTS]

# Names shared by a function and its module are bound now: a lazy binding would be replaced
# by the submodule as soon as any code imported ``daskred.combine`` (or ``.calibrate``,
# ``.simulate``) directly.
from .calibrate import calibrate  # noqa: E402, F401
from .combine import combine  # noqa: E402, F401
from .simulate import simulate  # noqa: E402, F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'daskred' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_MODULES))

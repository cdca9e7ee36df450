"""daskred: out-of-core, parallel CCD image reduction with dask and xarray.

>>> import daskred as dr
>>> table = dr.scan("raw/")                                     # doctest: +SKIP
>>> frames = dr.open_frames(table[table.imagetyp == "bias"])    # doctest: +SKIP
>>> master = dr.combine(frames, method="median")                # doctest: +SKIP
>>> dr.to_fits(master, "bias.fits")                             # doctest: +SKIP
>>> report = dr.reduce("raw/", out="reduced/")                  # doctest: +SKIP
"""

__version__ = "0.1.0"

from . import errors
from .align import apply_transforms, find_transforms
from .astrometry import WcsSolution, repair_wcs_header, solve_wcs, write_wcs
from .background import estimate_background, subtract_background
from .calibrate import (
    calibrate,
    flat_correct,
    gain_correct,
    load_mask,
    make_bad_pixel_mask,
    make_variance,
    mask_saturated,
    subtract_bias,
    subtract_dark,
    subtract_overscan,
    trim,
)
from .collection import scan
from .combine import combine
from .cosmics import cosmics_halo, detect_cosmics
from .io import open_frames, parse_section, to_fits, to_zarr
from .masters import Master, make_masters, select_master, write_masters
from .photometry import (
    ExtinctionFit,
    PhotFlag,
    ZeroPoint,
    aperture_photometry,
    fit_extinction,
    read_standards,
    set_photzp,
    write_zeropoints,
    zero_point,
)
from .pipeline import PipelineConfig, Report, reduce
from .simulate import SimulatedDataset, simulate

__all__ = [
    "__version__",
    "errors",
    # collection and I/O
    "scan", "open_frames", "parse_section", "to_fits", "to_zarr",
    # combine
    "combine",
    # calibration
    "subtract_overscan", "trim", "subtract_bias", "subtract_dark", "flat_correct", "gain_correct",
    "make_variance", "mask_saturated", "make_bad_pixel_mask", "load_mask", "calibrate",
    "Master", "make_masters", "select_master", "write_masters",
    # per-frame stages
    "detect_cosmics", "cosmics_halo", "estimate_background", "subtract_background",
    # registration and astrometry
    "find_transforms", "apply_transforms", "solve_wcs", "repair_wcs_header", "write_wcs", "WcsSolution",
    # photometry
    "aperture_photometry", "zero_point", "fit_extinction", "read_standards", "write_zeropoints",
    "set_photzp", "PhotFlag", "ZeroPoint", "ExtinctionFit",
    # pipeline and data
    "PipelineConfig", "Report", "reduce", "simulate", "SimulatedDataset",
]

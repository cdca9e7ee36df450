"""daskred: out-of-core, parallel CCD image reduction with dask and xarray.

>>> import daskred as dr
>>> table = dr.scan("raw/")                      # doctest: +SKIP
>>> frames = dr.open_frames(table[table.imagetyp == "bias"])   # doctest: +SKIP
>>> master = dr.combine(frames, method="median")                # doctest: +SKIP
>>> dr.to_fits(master, "bias.fits")                             # doctest: +SKIP
"""

from . import errors
from .collection import scan
from .combine import combine
from .io import open_frames, parse_section, to_fits, to_zarr

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "errors",
    "scan",
    "open_frames",
    "parse_section",
    "to_fits",
    "to_zarr",
    "combine",
]

"""daskred: out-of-core, parallel CCD image reduction with dask and xarray."""

from .io import parse_section

__version__ = "0.1.0"

__all__ = ["parse_section", "__version__"]

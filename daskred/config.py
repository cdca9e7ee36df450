"""Settings of a reduction: :class:`PipelineConfig`, one frozen section per stage, from TOML.

``daskred config`` prints :func:`default_config_text`, the commented defaults; ``daskred reduce
--config FILE`` and :func:`daskred.pipeline.reduce` take a loaded config.  Every value is
checked against its field's type when a config is built (choices list the allowed values,
numbers and flags are checked, files named by the config must exist), so a typo fails
before any work starts with a :class:`~daskred.errors.ConfigError` naming the key.

Examples
--------
>>> config = PipelineConfig().replace(stack={"method": "median", "clip": ""})
>>> config.stack.method
'median'
>>> PipelineConfig().replace(stack={"method": "avg"})
Traceback (most recent call last):
...
daskred.errors.ConfigError: stack.method = 'avg' is not supported; choose one of median, mean, sum, min, max
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["PipelineConfig", "default_config_text"]


@dataclass(frozen=True)
class CollectionConfig:
    keywords: Mapping[str, Sequence[str]] = field(default_factory=dict)
    classes: Mapping[str, str] = field(default_factory=dict)
    standards: Sequence[str] = ()
    night_offset: float | None = None


@dataclass(frozen=True)
class MastersConfig:
    darks: Literal["per_exptime", "scalable"] = "per_exptime"
    norm: Literal["median", "mean"] = "median"
    bias: Mapping[str, Any] = field(default_factory=lambda: {"method": "median"})
    dark: Mapping[str, Any] = field(default_factory=lambda: {"method": "median"})
    flat: Mapping[str, Any] = field(default_factory=lambda: {"method": "mean", "clip": "sigma", "sigma": 3.0})


@dataclass(frozen=True)
class CalibrateConfig:
    overscan: str | None = "auto"
    trim: str | None = "auto"
    norm: Literal["mean", "median"] = "mean"
    gain: float | None = None
    rdnoise: float | None = None
    bad_pixels: str | None = None


@dataclass(frozen=True)
class CosmicsConfig:
    enabled: bool = True
    sigclip: float = 4.5
    sigfrac: float = 0.3
    objlim: float = 5.0
    niter: int = 4
    fsmode: Literal["median", "convolve"] = "median"
    psfmodel: Literal["gauss", "moffat"] = "gauss"
    psffwhm: float = 2.5


@dataclass(frozen=True)
class BackgroundConfig:
    enabled: bool = True
    method: Literal["mesh", "global"] = "mesh"
    box_size: int = 64
    filter_size: int = 3
    exclude_percentile: float = 50.0


@dataclass(frozen=True)
class AlignConfig:
    enabled: bool = True
    method: Literal["asterism", "xcorr", "wcs"] = "asterism"
    output_grid: Literal["reference", "union", "intersection"] = "union"
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"


@dataclass(frozen=True)
class StackConfig:
    method: Literal["median", "mean", "sum", "min", "max"] = "mean"
    clip: str | None = "sigma"
    sigma: float = 3.0
    maxiters: int = 5


@dataclass(frozen=True)
class AstrometryConfig:
    catalog: str | None = None
    sip_degree: int | None = None


@dataclass(frozen=True)
class PhotometryConfig:
    standards: str | None = None
    radius: float = 2.5
    annulus: tuple[float, float] = (4.0, 6.0)
    radius_unit: Literal["pixel", "fwhm"] = "fwhm"


@dataclass(frozen=True)
class OutputConfig:
    keep_calibrated: bool = False
    quicklook: bool = True


_SECTIONS = {
    "collection": CollectionConfig, "masters": MastersConfig, "calibrate": CalibrateConfig,
    "cosmics": CosmicsConfig, "background": BackgroundConfig, "align": AlignConfig,
    "stack": StackConfig, "astrometry": AstrometryConfig, "photometry": PhotometryConfig,
    "output": OutputConfig,
}


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of a reduction, one frozen value per TOML table.

    Load one with :meth:`load` (``daskred config`` prints a commented default); paths in
    it are relative to the file.  Unknown tables or keys raise
    :class:`~daskred.errors.ConfigError` naming the allowed ones.
    """

    collection: CollectionConfig = field(default_factory=CollectionConfig)
    masters: MastersConfig = field(default_factory=MastersConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    cosmics: CosmicsConfig = field(default_factory=CosmicsConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    stack: StackConfig = field(default_factory=StackConfig)
    astrometry: AstrometryConfig = field(default_factory=AstrometryConfig)
    photometry: PhotometryConfig = field(default_factory=PhotometryConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: Path | None = None) -> PipelineConfig:
        unknown = set(data) - set(_SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config table(s) {sorted(unknown)}; allowed: {', '.join(_SECTIONS)}")
        sections = {}
        for name, section_cls in _SECTIONS.items():
            values = dict(data.get(name, {}))
            allowed = {f.name for f in dataclasses.fields(section_cls)}
            extra = set(values) - allowed
            if extra:
                raise ConfigError(f"unknown key(s) {sorted(extra)} in [{name}]; allowed: {', '.join(sorted(allowed))}")
            for key in ("standards", "catalog", "bad_pixels"):
                if key in values and isinstance(values[key], str) and base is not None and name != "collection":
                    values[key] = str((base / values[key]).resolve()) if values[key] else None
            for key in ("annulus", "standards"):
                if isinstance(values.get(key), list):
                    values[key] = tuple(values[key])
            sections[name] = section_cls(**values)
        config = cls(**sections)
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | os.PathLike) -> PipelineConfig:
        """Read a TOML configuration file."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as err:
            raise ConfigError(f"{path}: no such config file; `daskred config > {path.name}` writes one") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML ({err})") from err
        return cls.from_dict(data, base=path.parent)

    def replace(self, **changes: Any) -> PipelineConfig:
        """A copy with some values changed: ``replace(stack={"method": "median"})``."""
        data = self.to_dict()
        for section, values in changes.items():
            if section not in _SECTIONS:
                raise ConfigError(f"unknown config table {section!r}; allowed: {', '.join(_SECTIONS)}")
            data[section].update(values)
        return PipelineConfig.from_dict(data)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}

    def validate(self) -> None:
        """Check every value against its field's type: choices, numbers, flags, paths."""
        for section, section_cls in _SECTIONS.items():
            hints = typing.get_type_hints(section_cls)
            for f in dataclasses.fields(section_cls):
                _check_value(f"{section}.{f.name}", getattr(getattr(self, section), f.name), hints[f.name])
        for key in ("standards",):
            path = getattr(self.photometry, key)
            if path and not Path(path).is_file():
                raise ConfigError(f"[photometry] standards = {path!r}: file not found")
        if self.astrometry.catalog and not Path(self.astrometry.catalog).is_file():
            raise ConfigError(f"[astrometry] catalog = {self.astrometry.catalog!r}: file not found")


def _check_value(name: str, value: Any, hint: Any) -> None:
    """Raise a ConfigError when a config value does not fit its annotation."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Literal:
        if value not in args:
            raise ConfigError(f"{name} = {value!r} is not supported; choose one of {', '.join(map(str, args))}")
        return
    options = set(args) if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
    if value is None and type(None) in options:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if bool in options and not isinstance(value, bool):
        raise ConfigError(f"{name} = {value!r} must be true or false")
    if int in options and float not in options and not (number and isinstance(value, int)):
        raise ConfigError(f"{name} = {value!r} must be a whole number")
    if float in options and not number:
        raise ConfigError(f"{name} = {value!r} must be a number")
    if str in options and not isinstance(value, str):
        raise ConfigError(f"{name} = {value!r} must be a string")


def default_config_text() -> str:
    """The commented default configuration (``daskred config``)."""
    return '''# daskred reduction configuration (TOML). Every key is optional; shown are the defaults.

[collection]
# header keywords to try first for a column, e.g. filter = ["FILTER2"]
keywords = {}
# extra frame-type values and their class (bias, dark, flat, light, standard)
classes = {}
# regular expressions on OBJECT marking standard-star fields, e.g. ["^SA ?\\\\d+"]
standards = []
# hours from UT to local time for the night boundary; default: site longitude from the header
# night_offset = -7.0

[masters]
darks = "per_exptime"          # or "scalable": one dark scaled by exposure time
norm = "median"                # each flat is divided by its own median (or mean) before combining
bias = { method = "median" }
dark = { method = "median" }
flat = { method = "mean", clip = "sigma", sigma = 3.0 }

[calibrate]
overscan = "auto"              # BIASSEC from the headers, a FITS section, or "" to skip
trim = "auto"                  # TRIMSEC/DATASEC from the headers, a FITS section, or "" to skip
norm = "mean"                  # flat normalisation
# gain = 1.5                   # e-/ADU; default: GAIN keyword
# rdnoise = 6.0                # e-; default: RDNOISE keyword
# bad_pixels = "bpm.fits"

[cosmics]
enabled = true
sigclip = 4.5
sigfrac = 0.3
objlim = 5.0
niter = 4
fsmode = "median"              # or "convolve": fine structure from a PSF of psffwhm pixels, which
psfmodel = "gauss"             #   spares the cores of undersampled stars (FWHM < ~3 px) better
psffwhm = 2.5                  #   (used with fsmode = "convolve"; psfmodel "gauss" or "moffat")

[background]
enabled = true
method = "mesh"                # or "global"
box_size = 64
filter_size = 3
exclude_percentile = 50.0      # boxes with more masked (source) pixels than this are interpolated over

[align]
enabled = true
method = "asterism"            # "xcorr" for few-star fields, "wcs" for frames with a good WCS
output_grid = "union"          # "reference" or "intersection"
interpolation = "bilinear"     # "nearest" or "bicubic"

[stack]
method = "mean"                # median, mean, sum, min, max
clip = "sigma"                 # sigma, mad, minmax, percentile, winsorized, ccdclip, or "" for none
sigma = 3.0
maxiters = 5

[astrometry]
# catalog = "gaia.csv"         # RA, Dec, magnitude table: solve the stacks' WCS offline

[photometry]
# standards = "standards.csv"  # name, ra, dec, one magnitude column per filter (see README)
radius = 2.5
annulus = [4.0, 6.0]
radius_unit = "fwhm"           # or "pixel"

[output]
keep_calibrated = false
quicklook = true
'''

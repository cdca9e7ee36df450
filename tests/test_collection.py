import numpy as np
import pytest
from astropy.io import fits

import daskred as dr
from daskred.errors import ConfigError, FitsFileError


def _write(path, header, shape=(8, 12)):
    hdr = fits.Header()
    for k, v in header.items():
        hdr[k] = v
    fits.PrimaryHDU(np.zeros(shape, np.float32), header=hdr).writeto(path)
    return path


@pytest.mark.parametrize(
    "header, expected",
    [
        ({"IMAGETYP": "Bias Frame"}, "bias"),
        ({"IMAGETYP": "zero"}, "bias"),
        ({"OBSTYPE": "BIAS"}, "bias"),
        ({"IMAGETYP": "Dark Frame", "EXPTIME": 0.0}, "bias"),
        ({"IMAGETYP": "dark", "EXPTIME": 30.0}, "dark"),
        ({"IMAGETYP": "SKYFLAT", "EXPTIME": 3.0}, "flat"),
        ({"IMAGETYP": "Flat Field"}, "flat"),
        ({"IMAGETYP": "Light Frame", "OBJECT": "M51"}, "light"),
        ({"IMAGETYP": "OBJECT", "OBJECT": "flat"}, "flat"),
        ({"IMAGETYP": "object", "OBJECT": "Dome Flat V"}, "flat"),
        ({"IMAGETYP": "OBJECT", "OBJECT": "NGC 1300"}, "light"),
        ({"IMAGETYP": "STANDARD", "OBJECT": "SA 98"}, "standard"),
        ({"OBJECT": "M31"}, "light"),
        ({"IMAGETYP": "focus"}, "unknown"),
    ],
)
def test_classification(tmp_path, header, expected):
    _write(tmp_path / "f.fits", header)
    table = dr.scan(tmp_path)
    assert table.loc[0, "imagetyp"] == expected


def test_keyword_variants(tmp_path):
    _write(tmp_path / "a.fits", {"IMAGETYP": "LIGHT", "FILTNAM": "R", "EXPOSURE": 12.5,
                                 "DATE-OBS": "2020-01-02", "UT": "03:04:05.5", "CCDSUM": "2 2",
                                 "EGAIN": 1.5, "READNOIS": 4.0, "SATURATE": 60000.0, "AIRMASS": 1.3,
                                 "RA": "10:00:00", "DEC": "-05:30:00"})
    row = dr.scan(tmp_path).iloc[0]
    assert (row["filter"], row["exptime"], row["binning"]) == ("R", 12.5, "2x2")
    assert row["date_obs"] == "2020-01-02T03:04:05.500"
    assert (row["gain"], row["rdnoise"], row["saturate"], row["airmass"]) == (1.5, 4.0, 60000.0, 1.3)
    assert row["ra"] == pytest.approx(150.0) and row["dec"] == pytest.approx(-5.5)


def test_night_uses_site_longitude(tmp_path):
    # 02:37 UT at longitude -111.5 is 19:11 local on the previous day: the night of the 25th
    _write(tmp_path / "a.fits", {"IMAGETYP": "OBJECT", "DATE-OBS": "2019-03-26T02:37:49", "LONGITUD": -111.5})
    # 23:00 UT in Europe (longitude +10) is the same evening
    _write(tmp_path / "b.fits", {"IMAGETYP": "OBJECT", "DATE-OBS": "2019-03-25T23:00:00", "LONGITUD": 10.0})
    # 05:00 UT, no longitude, UT noon boundary: still the previous evening
    _write(tmp_path / "c.fits", {"IMAGETYP": "OBJECT", "DATE-OBS": "2019-03-26T05:00:00"})
    nights = dr.scan(tmp_path).set_index(dr.scan(tmp_path)["path"].str[-6:])["night"]
    assert nights["a.fits"] == nights["b.fits"] == nights["c.fits"] == "2019-03-25"
    # an explicit offset wins over the header
    assert set(dr.scan(tmp_path, night_offset=14.0)["night"]) == {"2019-03-26"}


def test_no_date_obs_falls_back_to_mjd(tmp_path):
    _write(tmp_path / "a.fits", {"IMAGETYP": "BIAS", "MJD-OBS": 58568.5})
    row = dr.scan(tmp_path).iloc[0]
    assert row["date_obs"].startswith("2019-03-26T12:00") and row["night"] == "2019-03-26"


def test_user_overrides(tmp_path):
    _write(tmp_path / "a.fits", {"IMAGETYP": "FLATV", "FILTER": "open", "FILTER2": "Ha"})
    _write(tmp_path / "b.fits", {"IMAGETYP": "OBJECT", "OBJECT": "SA 104-334"})
    table = dr.scan(tmp_path, keywords={"filter": "FILTER2"}, classes={"flatv": "flat"},
                    standards=[r"^SA ?\d+"], extra=["FILTER"])
    table = table.set_index(table["path"].str[-6:])
    assert table.loc["a.fits", "imagetyp"] == "flat" and table.loc["a.fits", "filter"] == "Ha"
    assert table.loc["a.fits", "filter_raw"] == "open"
    assert table.loc["b.fits", "imagetyp"] == "standard"
    with pytest.raises(ConfigError, match="class for 'x' must be one of"):
        dr.scan(tmp_path, classes={"x": "science"})
    with pytest.raises(ConfigError, match="unknown column 'filtre'"):
        dr.scan(tmp_path, keywords={"filtre": "F"})


def test_unreadable_files_are_skipped_with_reason(tmp_path):
    _write(tmp_path / "good.fits", {"IMAGETYP": "BIAS"})
    (tmp_path / "bad.fits").write_text("this is not FITS")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]
                 ).writeto(tmp_path / "table.fits")
    table = dr.scan(tmp_path)
    assert list(table["path"].str[-9:]) == ["good.fits"]
    reasons = dict(table.attrs["skipped"])
    assert "not a FITS file" in reasons[str(tmp_path / "bad.fits")]
    assert reasons[str(tmp_path / "table.fits")] == "no 2-D image HDU (HDU 0: header only (NAXIS=0); HDU 1: table)"
    with pytest.raises(FitsFileError, match="bad.fits"):
        dr.scan(tmp_path, on_error="raise")


def test_scan_reads_headers_only(tmp_path, monkeypatch):
    _write(tmp_path / "a.fits", {"IMAGETYP": "BIAS"}, shape=(300, 200))
    monkeypatch.setattr(np, "fromfile", lambda *a, **k: pytest.fail("pixels were read"))
    monkeypatch.setattr(fits.ImageHDU, "data", property(lambda self: pytest.fail("pixels were read")))
    monkeypatch.setattr(fits.PrimaryHDU, "data", property(lambda self: pytest.fail("pixels were read")))
    assert dr.scan(tmp_path).loc[0, "shape"] == "300x200"


def test_extensions_inherit_primary_keywords(tmp_path):
    primary = fits.PrimaryHDU()
    primary.header["IMAGETYP"] = "FLAT"
    primary.header["FILTER"] = "B"
    fits.HDUList([primary, fits.ImageHDU(np.zeros((5, 6), np.float32), name="AMP1"),
                  fits.ImageHDU(np.zeros((5, 6), np.float32), name="AMP2")]).writeto(tmp_path / "m.fits")
    table = dr.scan(tmp_path)
    assert list(table["hdu"]) == [1, 2] and list(table["extname"]) == ["AMP1", "AMP2"]
    assert set(table["imagetyp"]) == {"flat"} and set(table["filter"]) == {"B"}


@pytest.mark.realdata
def test_real_lowell_frames_classified(lowell):
    table = dr.scan(lowell)
    table["folder"] = table["path"].map(lambda p: p.split("/")[-2])
    kinds = table.groupby("folder")["imagetyp"].unique().map(list).to_dict()
    assert kinds == {"bias": ["bias"], "flat_VR": ["flat"], "light_VR": ["light"]}
    lights = table[table.imagetyp == "light"]
    assert set(lights["filter"]) == {"VR"} and set(lights["exptime"]) == {300.0}
    assert set(table[table.imagetyp == "bias"]["filter"]) == {""}
    assert set(table["night"]) == {"2019-03-25"}
    assert set(table["shape"]) == {"1370x1432"} and set(table["dtype"]) == {"uint16"}
    assert set(table["binning"]) == {"3x3"}
    assert set(table["trimsec"]) == {"[18:1382,1:1370]"} and set(table["biassec"]) == {"[1388:1432,1:1370]"}
    assert lights["date_obs"].iloc[0] == "2019-03-26T02:37:49.110"
    assert table.attrs["skipped"] == []

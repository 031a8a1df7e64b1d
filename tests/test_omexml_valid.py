"""Every OME-XML omeframe writes validates against the OME 2016-06 XSD, offline.

The schema file is the one ``ome-types`` ships; ``xmlschema`` loads it with
``allow="local"``, so neither loading it nor validating documents can reach
the network (the ``xml:`` namespace import resolves to xmlschema's bundled
copy). Invalid optional values (OME-Arrow's "unknown" defaults among them)
must be left out with :class:`InvalidOMEXMLValueWarning`, never written.
"""

from __future__ import annotations

import importlib.resources
import math
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

import omeframe as of
from omeframe.formats.tiff.omexml import build_ome_xml, parse_ome_xml, tifffile_ome_metadata
from omeframe.model.errors import InvalidOMEXMLValueWarning

xmlschema = pytest.importorskip("xmlschema")
oa = pytest.importorskip("ome_arrow")

OME_NS = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


@pytest.fixture(scope="module")
def ome_xsd() -> Any:
    path = Path(str(importlib.resources.files("ome_types") / "ome-2016-06.xsd"))
    assert path.is_file(), f"ome-types no longer ships {path.name}"
    # allow="local": any attempt to fetch a remote resource raises instead of downloading
    return xmlschema.XMLSchema(str(path), allow="local")


def _xml_of(path: str | Path) -> str:
    with tifffile.TiffFile(path) as tf:
        assert tf.is_ome, f"{path} is not an OME-TIFF"
        xml = tf.ome_metadata
    assert xml
    return xml


def _assert_valid(xsd: Any, xml: str) -> None:
    errors = [f"{e.path}: {e.reason}" for e in xsd.iter_errors(xml)]
    assert not errors, "OME-XML fails the 2016-06 XSD:\n" + "\n".join(errors)


def _channels(xml: str) -> list[dict[str, str]]:
    from xml.etree import ElementTree

    root = ElementTree.fromstring(xml)
    return [dict(ch.attrib) for ch in root.iter(f"{OME_NS}Channel")]


def _img(dtype: str, shape: tuple[int, ...] = (1, 3, 2, 40, 48), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)


@pytest.mark.parametrize(
    "dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
)
def test_numpy_exports_validate_for_every_dtype(tmp_path, ome_xsd, dtype):
    a = _img(dtype)
    out = of.to_ome_tiff(a, tmp_path / f"{dtype}.ome.tif")
    xml = _xml_of(out)
    _assert_valid(ome_xsd, xml)
    back = tifffile.imread(out).reshape(a.shape)
    assert np.array_equal(back, a.astype(np.uint8) if dtype == "bool" else a)


def _oa_record(dtype: str, n_channels: int = 3) -> tuple[np.ndarray, Any]:
    a = _img(dtype, (2, n_channels, 1, 32, 40), seed=1)
    rec = oa.from_numpy(a, dim_order="TCZYX", clamp_to_uint16=False, chunk_encoding="bytes")
    chans = rec["pixels_meta"]["channels"].as_py()
    # the reference's defaults: the values the OME schema rejects
    assert {(c["emission_um"], c["excitation_um"], c["illumination"]) for c in chans} == {(0.0, 0.0, "Unknown")}
    return a, rec


@pytest.mark.parametrize("dtype", ["int8", "uint16", "float32"])
def test_ome_arrow_default_channels_are_left_out_with_a_warning(tmp_path, ome_xsd, dtype):
    a, rec = _oa_record(dtype)
    with pytest.warns(InvalidOMEXMLValueWarning) as caught:
        out = of.to_ome_tiff(rec, tmp_path / "oa.ome.tif")
    msg = str(caught[0].message)
    for expected in ("channel 2 EmissionWavelength", "ExcitationWavelength", "IlluminationType='Unknown'"):
        assert expected in msg
    assert caught[0].filename == __file__  # points at the caller of to_ome_tiff
    xml = _xml_of(out)
    _assert_valid(ome_xsd, xml)
    chans = _channels(xml)
    assert [c["Name"] for c in chans] == ["C0", "C1", "C2"]
    for c in chans:
        assert not {"EmissionWavelength", "ExcitationWavelength", "IlluminationType"} & set(c)
    assert np.array_equal(tifffile.imread(out).reshape(a.shape), a)
    # ome-arrow reads the file through bioio (which parses the OME-XML with ome-types)
    peer = oa.from_tiff(out, clamp_to_uint16=False, chunk_encoding="bytes")
    meta = peer["pixels_meta"].as_py()
    assert [c["name"] for c in meta["channels"]] == ["C0", "C1", "C2"]
    assert (meta["size_t"], meta["size_c"], meta["size_y"], meta["size_x"]) == (2, 3, 32, 40)
    if dtype == "uint16":  # ome-arrow 0.1.0's from_tiff returns uint16 pixels whatever the file holds
        assert np.array_equal(of.to_numpy(peer), a)


def test_records_read_from_an_ome_arrow_parquet_file(tmp_path, ome_xsd):
    a, rec = _oa_record("uint16", n_channels=2)
    a = np.concatenate([a] * 4, axis=-1)  # 32 x 160
    a = np.concatenate([a] * 20, axis=-2)  # 640 x 160: tiled, with levels
    rec = oa.from_numpy(a, dim_order="TCZYX")
    path = tmp_path / "peer.parquet"
    oa.to_ome_parquet(rec, str(path), column_name="image")
    got = of.from_ome_parquet(path, column_name="image")
    with pytest.warns(InvalidOMEXMLValueWarning):
        out = of.to_ome_tiff(got, tmp_path / "pyr.ome.tif", pyramid_levels=3, tile=(64, 64), use_channel_colors=True)
    _assert_valid(ome_xsd, _xml_of(out))
    with tifffile.TiffFile(out) as tf:
        s = tf.series[0]
        assert [lv.shape for lv in s.levels] == [(2, 2, 640, 160), (2, 2, 320, 80), (2, 2, 160, 40)]  # Z=1 squeezed
        assert np.array_equal(s.asarray().reshape(a.shape), a)
    # the facade's export path, opened from the file itself
    with pytest.warns(InvalidOMEXMLValueWarning):
        out2 = of.OMEArrow(path, column_name="image").export("ome-tiff", out=tmp_path / "facade.ome.tif")
    _assert_valid(ome_xsd, _xml_of(out2 if isinstance(out2, (str, Path)) else tmp_path / "facade.ome.tif"))
    assert np.array_equal(oa.export.to_numpy(oa.from_tiff(tmp_path / "facade.ome.tif")), a)


def _record_with(channels: list[dict[str, Any]], **pixels_meta: Any) -> dict[str, Any]:
    a = _img("uint16", (1, len(channels), 1, 24, 24), seed=2)
    d = of.to_dict(of.from_numpy(a, dim_order="TCZYX", image_id="x", name="x"))
    for ch, upd in zip(d["pixels_meta"]["channels"], channels, strict=True):
        ch.update(upd)
    d["pixels_meta"].update(pixels_meta)
    return d


def test_valid_values_are_written_and_normalised_without_warning(tmp_path, ome_xsd):
    d = _record_with(
        [
            {"name": "dna", "emission_um": 0.461, "excitation_um": 0.405, "illumination": "epifluorescence"},
            {"name": "bf <&> \"µ\"", "emission_um": None, "excitation_um": None, "illumination": "Transmitted"},
        ],
        physical_size_x=325.0, physical_size_x_unit="nm", physical_size_y=1.5, physical_size_y_unit="pixel",
    )
    d["acquisition_datetime"] = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InvalidOMEXMLValueWarning)
        out = of.to_ome_tiff(d, tmp_path / "ok.ome.tif", dim_order="TZCYX")
    xml = _xml_of(out)
    _assert_valid(ome_xsd, xml)
    c0, c1 = _channels(xml)
    got = (c0["EmissionWavelength"], c0["ExcitationWavelength"], c0["IlluminationType"])
    assert got == ("461.0", "405.0", "Epifluorescence")
    assert c1["Name"] == 'bf <&> "µ"' and c1["IlluminationType"] == "Transmitted"
    assert "EmissionWavelength" not in c1
    img = parse_ome_xml(xml)[0]
    assert img.physical_size_unit["x"] == "nm" and img.physical_size["x"] == 325.0
    assert img.physical_size_unit["y"] == "pixel" and img.dimension_order == "XYCZT"


@pytest.mark.parametrize(
    "field,value,dropped",
    [
        ("emission_um", -0.5, "EmissionWavelength"),
        ("excitation_um", math.nan, "ExcitationWavelength"),
        ("emission_um", math.inf, "EmissionWavelength"),
        ("illumination", "Widefield", "IlluminationType"),
    ],
)
def test_each_invalid_channel_value_is_dropped(tmp_path, ome_xsd, field, value, dropped):
    d = _record_with([{"name": "a", "emission_um": 0.5, "excitation_um": 0.4, "illumination": "Other"}, {field: value}])
    with pytest.warns(InvalidOMEXMLValueWarning, match=f"channel 1 {dropped}"):
        out = of.to_ome_tiff(d, tmp_path / "bad.ome.tif")
    xml = _xml_of(out)
    _assert_valid(ome_xsd, xml)
    c0, c1 = _channels(xml)
    assert dropped in c0 and dropped not in c1


@pytest.mark.parametrize(
    "size,unit", [(0.0, "µm"), (-1.0, "µm"), (math.nan, "µm"), (0.5, "parsecs")]
)
def test_invalid_physical_sizes_are_dropped(tmp_path, ome_xsd, size, unit):
    d = _record_with([{}], physical_size_x=size, physical_size_x_unit=unit, physical_size_y=1.0,
                     physical_size_y_unit="µm")
    with pytest.warns(InvalidOMEXMLValueWarning, match="PhysicalSizeX"):
        out = of.to_ome_tiff(d, tmp_path / "px.ome.tif")
    xml = _xml_of(out)
    _assert_valid(ome_xsd, xml)
    assert "PhysicalSizeX=" not in xml and "PhysicalSizeXUnit" not in xml
    assert 'PhysicalSizeY="1"' in xml


def test_other_export_paths_validate(tmp_path, ome_xsd):
    a, rec = _oa_record("uint16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InvalidOMEXMLValueWarning)
        src = of.to_ome_tiff(rec, tmp_path / "src.ome.tif", bigtiff=True, compression=None)
        # a lazy crop of an OME-TIFF (metadata taken from the file's own OME-XML)
        plan = of.scan(src).select(t=[1], c=[2, 0], y=(4, 30))
        crop = of.to_ome_tiff(plan, tmp_path / "crop.ome.tif", dtype=np.uint8, clamp=True)
        # a chunked dataset image
        ds = of.write_dataset(a, tmp_path / "ds", image_ids=["img"], dim_order="TCZYX", progress=False)
        from_ds = of.to_ome_tiff(ds.scan("img"), tmp_path / "ds.ome.tif", pyramid_levels=2, dim_order="CTZYX")
    for out in (src, crop, from_ds):
        _assert_valid(ome_xsd, _xml_of(out))
    assert np.array_equal(tifffile.imread(crop).reshape(1, 2, 1, 26, 40), np.clip(a[1:2, [2, 0], :, 4:30], 0, 255))


def test_build_ome_xml_documents_validate(ome_xsd):
    _, rec = _oa_record("int8", n_channels=2)
    d = of.to_dict(rec)
    from omeframe.model.header import ImageHeader

    header = ImageHeader.from_meta(d["pixels_meta"], image_id=d["id"], name=d["name"])
    with pytest.warns(InvalidOMEXMLValueWarning):
        md = tifffile_ome_metadata(header, axes="TCZYX", size_c=2)
    xml = build_ome_xml([((2, 2, 1, 32, 40), np.int8, md), ((1, 1, 1, 8, 8), np.float32, {"axes": "TCZYX"})])
    _assert_valid(ome_xsd, xml)
    assert len(parse_ome_xml(xml)) == 2

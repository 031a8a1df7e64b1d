"""OME-Zarr 0.4 / 0.5: metadata models, lazy sources, streaming ingest and export.

Inputs are written with zarr directly (hand-written attributes, known pixels);
outputs are checked by independent readers: zarr for the pixels and the
``ome-zarr-models`` package for the metadata.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pydantic
import pytest
import zarr

import omeframe as of
from omeframe.engine.lazy import LazyImage
from omeframe.errors import SchemaError
from omeframe.facade import from_ome_zarr
from omeframe.formats.zarr.models import (
    Axis,
    ImageMetadata,
    Multiscale,
    OmeroChannel,
    Window,
    color_hex_to_rgba,
    color_rgba_to_hex,
)
from omeframe.formats.zarr.source import OmeZarrSource, open_ome_zarr_source
from omeframe.formats.zarr.writer import to_ome_zarr

ozm_v04 = pytest.importorskip("ome_zarr_models.v04")
ozm_v05 = pytest.importorskip("ome_zarr_models.v05")
from ome_zarr_models.v04.image import ImageAttrs as ImageAttrsV04  # noqa: E402
from ome_zarr_models.v05.image import ImageAttrs as ImageAttrsV05  # noqa: E402

SHAPE = (2, 3, 4, 40, 50)  # T C Z Y X


# ---------------------------------------------------------------------------
# fixtures: OME-Zarr stores written with zarr directly


def _data(shape=SHAPE, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3000, shape).astype(dtype)


def _axes(names: str, unit="micrometer"):
    types = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    out = []
    for n in names:
        a = {"name": n, "type": types[n]}
        if types[n] == "space" and unit:
            a["unit"] = unit
        out.append(a)
    return out


def _multiscale(names, scales, version=None, name="img"):
    ms = {
        "axes": _axes(names),
        "datasets": [
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": list(s)}]}
            for i, s in enumerate(scales)
        ],
        "name": name,
    }
    if version:
        ms["version"] = version
    return ms


def _levels(a: np.ndarray, n: int, names: str) -> list[np.ndarray]:
    out = [a]
    iy, ix = names.index("y"), names.index("x")
    for _ in range(1, n):
        sl = [slice(None)] * a.ndim
        sl[iy] = slice(None, None, 2)
        sl[ix] = slice(None, None, 2)
        out.append(out[-1][tuple(sl)].copy())
    return out


OMERO = {
    "channels": [
        {"label": "DAPI", "color": "0000FF", "active": True,
         "window": {"min": 0, "max": 65535, "start": 10, "end": 2000}},
        {"label": "GFP", "color": "00FF00", "active": True,
         "window": {"min": 0, "max": 65535, "start": 0, "end": 3000}},
        {"label": "RFP", "color": "FF0000", "active": False,
         "window": {"min": 0, "max": 65535, "start": 0, "end": 1000}},
    ],
    "rdefs": {"defaultT": 0, "defaultZ": 1, "model": "color"},
}


def write_v04(path: Path, data: np.ndarray, *, names="tczyx", n_levels=2, chunks=None, labels=None, omero=OMERO):
    """OME-Zarr 0.4 on zarr v2 with level k = data[..., ::2**k, ::2**k]."""
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    lv = _levels(data, n_levels, names)
    base = [1.0 if n in "tc" else (2.0 if n == "z" else 0.5) for n in names]
    scales = [[b * (2**k if n in "yx" else 1) for b, n in zip(base, names, strict=True)] for k in range(n_levels)]
    for k, a in enumerate(lv):
        ch = chunks or tuple(
            1 if n in "tc" else min(s, 2 if n == "z" else 16) for n, s in zip(names, a.shape, strict=True)
        )
        arr = g.create_array(str(k), shape=a.shape, dtype=a.dtype, chunks=ch, fill_value=0)
        arr[...] = a
    attrs = {"multiscales": [_multiscale(names, scales, version="0.4")]}
    if omero is not None:
        attrs["omero"] = omero
    g.attrs.update(attrs)
    for lname, ldata in (labels or {}).items():
        lg = g.require_group("labels")
        lg.attrs.update({"labels": [lname]})
        ig = lg.create_group(lname)
        llv = _levels(ldata, n_levels, names)
        for k, a in enumerate(llv):
            ch = tuple(1 if n in "tc" else min(s, 16) for n, s in zip(names, a.shape, strict=True))
            arr = ig.create_array(str(k), shape=a.shape, dtype=a.dtype, chunks=ch, fill_value=0)
            arr[...] = a
        ig.attrs.update(
            {
                "multiscales": [_multiscale(names, scales, version="0.4", name=lname)],
                "image-label": {"version": "0.4", "colors": [{"label-value": 1, "rgba": [255, 0, 0, 255]}],
                                "source": {"image": "../../"}},
            }
        )
    return g


def write_v05(path: Path, data: np.ndarray, *, names="czyx", n_levels=2, chunks=None, shards=None, unit="nanometer",
              labels=None):
    """OME-Zarr 0.5 on zarr v3 (sharded when ``shards``)."""
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    lv = _levels(data, n_levels, names)
    base = [1.0 if n in "tc" else (300.0 if n == "z" else 100.0) for n in names]
    scales = [[b * (2**k if n in "yx" else 1) for b, n in zip(base, names, strict=True)] for k in range(n_levels)]
    for k, a in enumerate(lv):
        want = chunks or tuple(1 if n in "tc" else 8 for n in names)
        ch = tuple(min(c, n) for c, n in zip(want, a.shape, strict=True))
        sh = None
        if shards is not None:  # whole shards, clipped to the (smaller) level
            sh = tuple(
                c if c < w else min(s, -(-n // c) * c) for s, c, w, n in zip(shards, ch, want, a.shape, strict=True)
            )
        arr = g.create_array(str(k), shape=a.shape, dtype=a.dtype, chunks=ch, shards=sh,
                             dimension_names=list(names), fill_value=0)
        arr[...] = a
    ms = _multiscale(names, scales)
    for ax in ms["axes"]:
        if "unit" in ax:
            ax["unit"] = unit
    n_channels = data.shape[names.index("c")] if "c" in names else 0
    omero_channels = [
        {"label": f"ch{i}", "color": "FFFF00", "window": {"min": 0, "max": 1, "start": 0, "end": 1}}
        for i in range(n_channels)
    ]
    g.attrs.update({"ome": {"version": "0.5", "multiscales": [ms], "omero": {"channels": omero_channels}}})
    for lname, ldata in (labels or {}).items():
        lg = g.require_group("labels")
        lg.attrs.update({"ome": {"version": "0.5", "labels": [lname]}})
        ig = lg.create_group(lname)
        for k, a in enumerate(_levels(ldata, n_levels, names)):
            arr = ig.create_array(str(k), shape=a.shape, dtype=a.dtype, chunks=a.shape, dimension_names=list(names),
                                  fill_value=0)
            arr[...] = a
        ig.attrs.update({"ome": {"version": "0.5", "multiscales": [_multiscale(names, scales, name=lname)],
                                 "image-label": {"colors": [{"label-value": 2, "rgba": [0, 255, 0, 255]}]}}})
    return g


@pytest.fixture(scope="module")
def v04(tmp_path_factory):
    d = tmp_path_factory.mktemp("v04")
    data = _data()
    lab = (data[:, :1] % 3).astype(np.uint32)  # one label channel
    path = d / "cells.ome.zarr"
    write_v04(path, data, labels={"nuclei": lab})
    return path, data, lab


@pytest.fixture(scope="module")
def v05(tmp_path_factory):
    d = tmp_path_factory.mktemp("v05")
    data = _data((3, 6, 40, 48), np.float32, seed=1)
    path = d / "sharded.ome.zarr"
    write_v05(path, data, chunks=(1, 2, 8, 8), shards=(1, 2, 16, 16),
              labels={"seg": (data[:1] > 1500).astype(np.uint8)})
    return path, data


def _scan(src):
    return of.scan(src)


# ---------------------------------------------------------------------------
# metadata models


def _attrs04():
    return {"multiscales": [_multiscale("tczyx", [[1, 1, 2, 0.5, 0.5], [1, 1, 2, 1, 1]], version="0.4")],
            "omero": OMERO}


def test_model_valid_04_and_version_round_trip():
    m = ImageMetadata.from_attrs(_attrs04())
    assert m.version == "0.4" and m.axes_string == "TCZYX" and m.paths == ("0", "1")
    assert m.multiscale.datasets[1].scale == (1, 1, 2, 1, 1)
    v5 = m.to_version("0.5")
    a5 = v5.to_attrs()
    assert set(a5) == {"ome"} and a5["ome"]["version"] == "0.5"
    assert "version" not in a5["ome"]["multiscales"][0]
    assert a5["ome"]["omero"]["channels"][0]["label"] == "DAPI"
    back = ImageMetadata.from_attrs(json.loads(json.dumps(a5))).to_version("0.4").to_attrs()
    assert back == ImageMetadata.from_attrs(_attrs04()).to_attrs()
    assert back["multiscales"][0]["version"] == "0.4"
    # Independent validator accepts both layouts.
    ImageAttrsV04.model_validate(back)
    ImageAttrsV05.model_validate(a5["ome"])


def test_model_new_from_shapes_frozen_and_extra_fields():
    m = ImageMetadata.new("tczyx", shapes=[(1, 2, 3, 64, 64), (1, 2, 3, 32, 32)], base_scale=(1, 1, 2, 0.5, 0.5),
                          channels=[{"label": "a", "color": "#ff00ff"}, OmeroChannel(label="b")], version="0.4",
                          name="x", metadata={"method": "test"})
    ds = m.multiscale.datasets
    assert ds[0].scale == (1, 1, 2, 0.5, 0.5) and ds[1].scale == (1, 1, 2, 1.0, 1.0)
    assert m.axes[2].unit == "micrometer" and m.axes[0].type == "time"
    assert m.omero.channels[0].color == "FF00FF"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        m.version = "0.5"
    attrs = {"multiscales": [{**_multiscale("yx", [[1, 1]], version="0.4"), "custom": 1}], "foo": "bar"}
    out = ImageMetadata.from_attrs(attrs).to_attrs()
    assert out["multiscales"][0]["custom"] == 1
    # unit symbols are mapped to the specification's names
    assert Axis(name="x", type="space", unit="µm").unit == "micrometer"
    assert Axis(name="t", type="time", unit="ms").unit == "millisecond"


def _bad(mutate):
    a = json.loads(json.dumps(_attrs04()))
    mutate(a)
    return a


BAD = [
    (lambda a: a["multiscales"][0].update(axes=_axes("x")),
     "multiscales[0].axes", "2 to 5 axes"),
    (lambda a: a["multiscales"][0]["axes"].__setitem__(1, {"name": "y", "type": "space"}),
     "multiscales[0].axes", "unique"),
    (lambda a: a["multiscales"][0].update(axes=[_axes("c")[0], _axes("t")[0]] + _axes("zyx")),
     "multiscales[0].axes", "ordered time, then channel"),
    (lambda a: a["multiscales"][0].update(axes=_axes("t") + [{"name": "w", "type": "space"}] + _axes("zyx")),
     "multiscales[0].axes", "2 or 3 axes of type 'space'"),
    (lambda a: a["multiscales"][0]["axes"][4].update(unit="furlong"),
     "multiscales[0].axes[4]", "not a space unit"),
    (lambda a: a["multiscales"][0]["axes"][0].update(unit="parsec"),
     "multiscales[0].axes[0]", "not a time unit"),
    (lambda a: a["multiscales"][0]["datasets"][0]["coordinateTransformations"][0].update(scale=[1, 1, 1]),
     "multiscales[0]", "scale has 3 values but there are 5 axes"),
    (lambda a: a["multiscales"][0]["datasets"][0].update(
        coordinateTransformations=[{"type": "translation", "translation": [0] * 5}]),
     "multiscales[0].datasets[0].coordinateTransformations", "exactly one 'scale'"),
    (lambda a: a["multiscales"][0]["datasets"][0]["coordinateTransformations"][0].update(scale=[1, 1, 1, -1, 1]),
     "multiscales[0].datasets[0].coordinateTransformations[0].scale", "finite and > 0"),
    (lambda a: a["multiscales"][0]["datasets"].reverse(),
     "multiscales[0]", "highest to lowest resolution"),
    (lambda a: a["multiscales"][0]["datasets"][0]["coordinateTransformations"].__setitem__(0, {"type": "identity"}),
     "multiscales[0].datasets[0].coordinateTransformations[0]", "does not match any of the expected tags"),
    (lambda a: a["multiscales"][0].update(datasets=[]),
     "multiscales[0].datasets", "at least one dataset"),
    (lambda a: a["multiscales"][0].update(version="0.3"),
     "multiscales[0].version", "not supported"),
    (lambda a: a["omero"]["channels"][0].update(color="blue"),
     "omero.channels[0].color", "hex RGB"),
    (lambda a: a["omero"]["channels"][0]["window"].pop("start"),
     "omero.channels[0].window.start", "Field required"),
]


@pytest.mark.parametrize("mutate,field,reason", BAD, ids=[b[2][:24] for b in BAD])
def test_model_invalid_messages(mutate, field, reason):
    with pytest.raises(SchemaError) as ei:
        ImageMetadata.from_attrs(_bad(mutate), where="zarr group 'x'")
    msg = str(ei.value)
    assert "invalid OME-Zarr 0.4 metadata in zarr group 'x'" in msg
    assert f"{field}" in msg and reason in msg, msg
    assert isinstance(ei.value, ValueError)


def test_model_invalid_05_and_direct_construction():
    attrs = {"ome": {"version": "0.5", "multiscales": [_multiscale("yx", [[1, 1]], version="0.4")]}}
    with pytest.raises(SchemaError, match=r"ome\.multiscales.*ome\.version only"):
        ImageMetadata.from_attrs(attrs)
    with pytest.raises(SchemaError, match="ome.version is '0.4'"):
        ImageMetadata.from_attrs({"ome": {"version": "0.4", "multiscales": []}})
    with pytest.raises(SchemaError, match="no OME-Zarr 'multiscales' metadata"):
        ImageMetadata.from_attrs({"something": 1})
    with pytest.raises(SchemaError, match=r"(?s)invalid OME-Zarr Axis.*not a space unit"):
        Axis(name="x", type="space", unit="furlong")
    with pytest.raises(SchemaError, match="scale has 4 values but there are 5 axes"):
        ImageMetadata.new("tczyx", scales=[(1, 1, 1, 1)])
    with pytest.raises(SchemaError, match=r"(?s)invalid OME-Zarr Multiscale.*datasets: there must be at least one"):
        Multiscale(axes=_axes("yx"), datasets=[])
    with pytest.raises(SchemaError, match="unknown axis letter 'q'"):
        ImageMetadata.new("qyx", scales=[(1, 1, 1)])


def test_model_pixels_meta_mapping():
    m = ImageMetadata.from_attrs(_attrs04())
    pm = m.to_pixels_meta([(2, 3, 4, 40, 50), (2, 3, 4, 20, 25)], "uint16")
    assert (pm["size_t"], pm["size_c"], pm["size_z"], pm["size_y"], pm["size_x"]) == (2, 3, 4, 40, 50)
    assert pm["physical_size_x"] == 0.5 and pm["physical_size_z"] == 2.0
    assert pm["physical_size_x_unit"] == "µm" and pm["type"] == "uint16"
    assert [c["name"] for c in pm["channels"]] == ["DAPI", "GFP", "RFP"]
    assert pm["channels"][0]["color_rgba"] == 0x0000FFFF and pm["channels"][2]["color_rgba"] == 0xFF0000FF
    assert color_rgba_to_hex(0x00FF00FF) == "00FF00" and color_hex_to_rgba("00ff00") == 0x00FF00FF
    with pytest.raises(SchemaError, match="3 dimensions but the metadata has 5 axes"):
        m.to_pixels_meta((1, 2, 3), "uint16")

    back = ImageMetadata.from_pixels_meta(pm, 3, downscale=2, version="0.5",
                                          windows=[(0, 65535, 10, 2000), None, {"start": 0, "end": 5}])
    assert back.version == "0.5" and back.axes_string == "TCZYX"
    assert [d.scale for d in back.multiscale.datasets] == [
        (1, 1, 2, 0.5, 0.5), (1, 1, 2, 1.0, 1.0), (1, 1, 2, 2.0, 2.0)]
    assert back.axes[4].unit == "micrometer"
    assert back.omero.channels[0].window == Window(min=0, max=65535, start=10, end=2000)
    assert back.omero.channels[1].window.max == 65535  # dtype range by default
    pm2 = back.to_pixels_meta((2, 3, 4, 40, 50), "uint16")
    for k in ("physical_size_x", "physical_size_z", "physical_size_x_unit", "size_c"):
        assert pm2[k] == pm[k]
    def named_colours(meta):
        return [(c["name"], c["color_rgba"]) for c in meta["channels"]]

    assert named_colours(pm2) == named_colours(pm)
    ImageAttrsV05.model_validate(back.to_attrs()["ome"])


# ---------------------------------------------------------------------------
# sources


def test_fixtures_are_valid_and_metadata_from_zarr(v04, v05):
    ozm_v04.Image.from_zarr(zarr.open_group(str(v04[0]), mode="r"))
    ozm_v05.Image.from_zarr(zarr.open_group(str(v05[0]), mode="r"))
    m4 = ImageMetadata.from_zarr(v04[0])
    assert m4.version == "0.4" and m4.omero.channels[0].window.start == 10
    m5 = ImageMetadata.from_zarr(zarr.open_group(str(v05[0]), mode="r"))
    assert m5.version == "0.5" and m5.axes_string == "CZYX" and m5.axes[1].unit == "nanometer"
    with pytest.raises(SchemaError, match="lives on a zarr group, got a Array"):
        ImageMetadata.from_zarr(zarr.open_group(str(v05[0]), mode="r")["0"])


def test_source_v04_select_header_levels(v04):
    path, data, _ = v04
    src = open_ome_zarr_source(path)
    assert isinstance(src, OmeZarrSource) and src.shape == SHAPE and src.dtype == np.uint16
    img = _scan(src)
    got = img.select(t=[1], c=[2, 0], z=slice(1, 3), y=(5, 33), x=(7, 49)).export("numpy")
    np.testing.assert_array_equal(got, data[1:2][:, [2, 0]][:, :, 1:3, 5:33, 7:49])
    h = src.header()
    assert h.image_id == "cells.ome" and h.name == "cells.ome.zarr"
    assert [c.name for c in h.channels] == ["DAPI", "GFP", "RFP"]
    assert h.channels[1].color_rgba == 0x00FF00FF
    assert (h.physical_size_x, h.physical_size_z, h.physical_size_x_unit) == (0.5, 2.0, "µm")
    assert src.metadata.omero.channels[0].window.end == 2000  # display windows stay in the model
    levels = src.levels()
    assert [lv.shape for lv in levels] == [SHAPE, (2, 3, 4, 20, 25)]
    assert levels[1].header().physical_size_x == 1.0
    np.testing.assert_array_equal(LazyImage(levels[1]).execute(), data[..., ::2, ::2])
    lv1 = open_ome_zarr_source(path, level=1)
    assert lv1.shape == (2, 3, 4, 20, 25) and [s.shape for s in lv1.levels()] == [(2, 3, 4, 20, 25)]
    assert "OME-Zarr 0.4" in img.explain()


def test_source_labels_linked_to_parent(v04, v05):
    path, data, lab = v04
    src = open_ome_zarr_source(path)
    labs = src.labels()
    assert list(labs) == ["nuclei"]
    ls = labs["nuclei"]
    assert ls.header().image_type == "label" and ls.parent is src and ls.parent_id == "cells.ome"
    assert ls.header().image_id == "cells.ome/labels/nuclei"
    assert ls.label_metadata.colors[0].label_value == 1
    np.testing.assert_array_equal(LazyImage(ls).execute(), lab)
    assert ls.labels() == {}
    assert src.levels()[1].labels()["nuclei"].shape == (2, 1, 4, 20, 25)
    s5 = open_ome_zarr_source(v05[0])
    assert s5.labels()["seg"].dtype == np.uint8


def test_source_label_that_is_a_plain_array(tmp_path):
    # a label stored as a bare array (not a multiscale group): level 0 reads it, a coarser level cannot
    data = _data((1, 1, 1, 32, 32))
    out = to_ome_zarr(data, tmp_path / "img.zarr", multiscale_levels=2)
    lg = zarr.open_group(out, mode="a").require_group("labels")
    lg.attrs.update({"ome": {"version": "0.5", "labels": ["flat"]}})
    lg.create_array("flat", shape=(32, 32), dtype=np.uint8, dimension_names=["y", "x"], fill_value=0)[...] = 1
    assert open_ome_zarr_source(out).labels()["flat"].shape == (1, 1, 1, 32, 32)
    with pytest.raises(SchemaError, match="label 'flat' is a plain zarr array.*level 1"):
        open_ome_zarr_source(out, level=1).labels()


def test_source_v05_sharded_reads_inner_chunks(v05):
    path, data = v05
    src = open_ome_zarr_source(path)
    assert src.shape == (1, 3, 6, 40, 48) and src.dtype == np.float32
    assert src.array.shards == (1, 2, 16, 16) and src.chunk_shape() == (2, 8, 8)
    h = src.header()
    assert (h.physical_size_x, h.physical_size_z, h.physical_size_x_unit) == (100.0, 300.0, "nm")
    assert [c.name for c in h.channels] == ["ch0", "ch1", "ch2"]
    img = _scan(src)
    roi = img.select(c=[1], z=slice(2, 4), y=(8, 16), x=(16, 24))
    info = roi._lazy().info()
    assert info.chunks_touched == 1  # one inner chunk of one shard
    assert info.chunks_total == 3 * 3 * 5 * 6
    np.testing.assert_array_equal(roi.export("numpy")[0], data[1:2, 2:4, 8:16, 16:24])
    np.testing.assert_array_equal(img.export("numpy")[0], data)


def test_source_missing_chunks_read_as_fill_value(tmp_path):
    for fmt in (2, 3):
        p = tmp_path / f"sparse{fmt}.zarr"
        g = zarr.open_group(str(p), mode="w", zarr_format=fmt)
        kw = {"dimension_names": ["y", "x"]} if fmt == 3 else {}
        a = g.create_array("0", shape=(32, 32), dtype="uint16", chunks=(16, 16), fill_value=7, **kw)
        a[:16, :16] = 1  # three of four chunks are never written
        ms = _multiscale("yx", [[1, 1]], version="0.4" if fmt == 2 else None)
        g.attrs.update({"multiscales": [ms]} if fmt == 2 else {"ome": {"version": "0.5", "multiscales": [ms]}})
        stored = {f for f in os.listdir(p / "0") if not f.startswith(".") and f != "zarr.json"}
        assert len(stored) == 1
        got = of.scan(open_ome_zarr_source(p)).export("numpy")[0, 0, 0]
        expect = np.full((32, 32), 7, np.uint16)
        expect[:16, :16] = 1
        np.testing.assert_array_equal(got, expect)
    # zarr v2 "fill_value": null reads as zeros
    p = tmp_path / "nullfill.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=2)
    g.create_array("0", shape=(8, 8), dtype="uint8", chunks=(4, 4), fill_value=None)
    g.attrs.update({"multiscales": [_multiscale("yx", [[1, 1]], version="0.4")]})
    assert not of.scan(open_ome_zarr_source(p)).export("numpy").any()


def test_source_bad_inputs(tmp_path, v04):
    with pytest.raises(FileNotFoundError, match="no such zarr store"):
        open_ome_zarr_source(tmp_path / "missing.zarr")
    # a zarr group without multiscales
    p = tmp_path / "plain.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=3)
    g.create_array("data", shape=(4, 4), dtype="uint8")
    with pytest.raises(SchemaError, match=r"has no OME-Zarr 'multiscales' metadata"):
        open_ome_zarr_source(p)
    # bioformats2raw container: a hint, then image_path opens the image
    b = tmp_path / "b2r.zarr"
    g = zarr.open_group(str(b), mode="w", zarr_format=2)
    g.attrs.update({"bioformats2raw.layout": 3})
    write_v04(b / "0", _data((1, 1, 1, 8, 8)), n_levels=1, omero=None)
    with pytest.raises(SchemaError, match=r"bioformats2raw.*image_path='0'"):
        open_ome_zarr_source(b)
    assert open_ome_zarr_source(b, image_path="0").shape == (1, 1, 1, 8, 8)
    # axes that do not match the data: 5 axes for a 3-D array
    p = tmp_path / "axes.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=2)
    g.create_array("0", shape=(3, 8, 8), dtype="uint8", chunks=(1, 8, 8))
    g.attrs.update({"multiscales": [_multiscale("tczyx", [[1] * 5], version="0.4")]})
    with pytest.raises(SchemaError, match=r"names 5 axes \['t', 'c', 'z', 'y', 'x'\] but array '0' has 3 dimensions"):
        open_ome_zarr_source(p)
    # zarr v3 dimension_names disagreeing with the axes
    p = tmp_path / "dims.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=3)
    g.create_array("0", shape=(3, 8, 8), dtype="uint8", dimension_names=["c", "x", "y"])
    g.attrs.update({"ome": {"version": "0.5", "multiscales": [_multiscale("cyx", [[1, 1, 1]])]}})
    with pytest.raises(SchemaError, match=r"dimension_names \['c', 'x', 'y'\] but the multiscales axes are"):
        open_ome_zarr_source(p)
    # axes the spec allows but omeframe cannot map (custom axis name)
    p = tmp_path / "custom.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=2)
    g.create_array("0", shape=(3, 8, 8), dtype="uint8")
    ms = _multiscale("cyx", [[1, 1, 1]], version="0.4")
    ms["axes"][0] = {"name": "angle", "type": "angle"}
    g.attrs.update({"multiscales": [ms]})
    with pytest.raises(SchemaError, match=r"include \['angle'\].*cannot map to TCZYX"):
        open_ome_zarr_source(p)
    # a dataset path without an array; a level that does not exist
    p = tmp_path / "nopath.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=2)
    g.attrs.update({"multiscales": [_multiscale("yx", [[1, 1]], version="0.4")]})
    with pytest.raises(SchemaError, match=r"dataset path '0' does not exist"):
        open_ome_zarr_source(p)
    with pytest.raises(SchemaError, match="has 2 resolution level.*level 5 does not exist"):
        open_ome_zarr_source(v04[0], level=5)
    # invalid metadata surfaces the field path
    p = tmp_path / "badunit.zarr"
    write_v04(p, _data((1, 1, 1, 8, 8)), n_levels=1, omero=None)
    g = zarr.open_group(str(p), mode="r+")
    a = g.attrs.asdict()
    a["multiscales"][0]["axes"][3]["unit"] = "lightyear"
    g.attrs.update(a)
    with pytest.raises(SchemaError, match=r"multiscales\[0\]\.axes\[3\]: unit 'lightyear'"):
        open_ome_zarr_source(p)


# ---------------------------------------------------------------------------
# ingest


def test_from_ome_zarr_record(v04, v05):
    path, data, _ = v04
    rec = from_ome_zarr(path)
    o = of.OMEArrow(rec)
    np.testing.assert_array_equal(o.export("numpy"), data)
    d = rec.as_py()
    assert d["id"] == "cells.ome" and d["name"] == "cells.ome.zarr"
    pm = d["pixels_meta"]
    assert [c["name"] for c in pm["channels"]] == ["DAPI", "GFP", "RFP"]
    assert pm["physical_size_z"] == 2.0 and pm["type"] == "uint16"
    rec2 = from_ome_zarr(path, image_id="x", channel_names=["a", "b", "c"], level=1)
    assert rec2.as_py()["id"] == "x" and of.OMEArrow(rec2).shape == (2, 3, 4, 20, 25)
    assert [c["name"] for c in rec2.as_py()["pixels_meta"]["channels"]] == ["a", "b", "c"]
    r5 = from_ome_zarr(v05[0])
    np.testing.assert_array_equal(of.OMEArrow(r5).export("numpy")[0], v05[1])
    with pytest.raises(FileNotFoundError):
        from_ome_zarr(path.parent / "nope.zarr")


def test_from_ome_zarr_dataset_levels_and_labels(v04, tmp_path):
    path, data, lab = v04
    ds = from_ome_zarr(path, out=tmp_path / "ds", levels="all", labels=True, progress=False)
    assert set(ds.image_ids) == {"cells.ome", "cells.ome/labels/nuclei"}
    assert ds.levels("cells.ome") == [0, 1]
    meta = ds.image_metadata("cells.ome/labels/nuclei")
    assert meta["image_type"] == "label" and meta["parent_id"] == "cells.ome"
    np.testing.assert_array_equal(ds.read("cells.ome"), data)
    np.testing.assert_array_equal(ds.read("cells.ome", level=1), data[..., ::2, ::2])
    np.testing.assert_array_equal(ds.read("cells.ome/labels/nuclei"), lab)
    roi = of.scan(ds, image_id="cells.ome").select(c=[1], y=(3, 30)).export("numpy")
    np.testing.assert_array_equal(roi, data[:, 1:2, :, 3:30])


# ---------------------------------------------------------------------------
# export


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_to_ome_zarr_validated_and_read_back(tmp_path, zarr_format):
    data = _data((2, 3, 3, 70, 90))
    rec = of.from_numpy(data, dim_order="TCZYX", channel_names=["a", "b", "c"], image_id="img")
    out = to_ome_zarr(rec, tmp_path / "out.ome.zarr", multiscale_levels=3, zarr_format=zarr_format,
                      chunks=(1, 1, 2, 32, 32), compressor_level=5)
    g = zarr.open_group(out, mode="r")
    assert g.metadata.zarr_format == zarr_format
    mod = (ozm_v04 if zarr_format == 2 else ozm_v05).Image.from_zarr(g)  # independent validation
    ms = mod.attributes.multiscales[0] if zarr_format == 2 else mod.attributes.ome.multiscales[0]
    assert [d.path for d in ms.datasets] == ["0", "1", "2"]
    assert [g[str(i)].shape for i in range(3)] == [(2, 3, 3, 70, 90), (2, 3, 3, 35, 45), (2, 3, 3, 17, 22)]
    assert g["0"].chunks == (1, 1, 2, 32, 32)
    np.testing.assert_array_equal(g["0"][...], data)
    l1 = data.reshape(2, 3, 3, 35, 2, 45, 2).mean(axis=(4, 6))
    np.testing.assert_array_equal(g["1"][...], np.rint(l1).astype(np.uint16))
    attrs = g.attrs.asdict()
    ome = attrs["ome"] if zarr_format == 3 else attrs
    assert [c["label"] for c in ome["omero"]["channels"]] == ["a", "b", "c"]
    w = ome["omero"]["channels"][1]["window"]
    assert (w["start"], w["end"]) == (float(data[:, 1].min()), float(data[:, 1].max()))
    if zarr_format == 3:
        assert "version" not in ome["multiscales"][0] and g["0"].metadata.dimension_names == tuple("tczyx")
        assert "Zstd" in type(g["0"].compressors[0]).__name__ and g["0"].compressors[0].level == 5
    else:
        assert ome["multiscales"][0]["version"] == "0.4" and g["0"].compressors[0].codec_id == "zstd"
    # and omeframe reads its own output back
    back = from_ome_zarr(out)
    np.testing.assert_array_equal(of.OMEArrow(back).export("numpy"), data)
    assert [c["name"] for c in back.as_py()["pixels_meta"]["channels"]] == ["a", "b", "c"]


def test_to_ome_zarr_shards_dtype_dim_order(tmp_path):
    data = _data((1, 2, 1, 64, 80)).astype(np.float32) * 100
    out = to_ome_zarr(data, tmp_path / "s.zarr", chunks=(1, 1, 1, 16, 16), shards=(1, 2, 1, 32, 48),
                      multiscale_levels=2, dtype="uint16", clamp=True, dim_order="CYX", compressor="blosc-zstd")
    g = zarr.open_group(out, mode="r")
    ozm_v05.Image.from_zarr(g)
    a = g["0"]
    assert a.shape == (2, 64, 80) and a.chunks == (1, 16, 16) and a.shards == (2, 32, 48) and a.dtype == np.uint16
    assert g["1"].shards == (2, 32, 48) and g["1"].shape == (2, 32, 40)
    np.testing.assert_array_equal(a[...], np.clip(data[0, :, 0], 0, 65535).astype(np.uint16))
    assert [ax["name"] for ax in g.attrs["ome"]["multiscales"][0]["axes"]] == ["c", "y", "x"]
    with pytest.raises(ValueError, match="multiples of chunks.*on \\['X'\\]"):
        to_ome_zarr(data, tmp_path / "x.zarr", chunks=(1, 1, 1, 16, 16), shards=(1, 1, 1, 32, 40))
    with pytest.raises(ValueError, match="shards need zarr_format=3"):
        to_ome_zarr(data, tmp_path / "x.zarr", zarr_format=2, shards=(1, 1, 1, 32, 32))
    with pytest.raises(of.DimOrderError, match="leaves out axis C, but the image has C=2"):
        to_ome_zarr(data, tmp_path / "x.zarr", dim_order="ZYX")
    with pytest.raises(of.DimOrderError, match="not in OME-Zarr axis order"):
        to_ome_zarr(data, tmp_path / "x.zarr", dim_order="TZCYX")
    with pytest.raises(ValueError, match="unknown compressor 'lzma'"):
        to_ome_zarr(data, tmp_path / "x.zarr", compressor="lzma")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        to_ome_zarr(data, out)
    assert not (tmp_path / "x.zarr").exists()
    to_ome_zarr(data[:, :1], out, overwrite=True, zarr_format=2, compressor=None)
    assert zarr.open_group(out, mode="r").metadata.zarr_format == 2


def test_to_ome_zarr_is_atomic(tmp_path):
    data = _data((1, 1, 1, 64, 64))

    src = of.scan(data)._lazy().source
    calls = {"n": 0}
    orig = src._open_pixels

    def failing():
        ps = orig()
        dec = ps.decode

        def decode(i, strict):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("disk on fire")
            return dec(i, strict)

        return type(ps)(ps.shape, ps.dtype, ps.origins, ps.extents, decode, ps.stored_nbytes, False, ps.describe)

    src._open_pixels = failing
    with pytest.raises(RuntimeError, match="disk on fire"):
        to_ome_zarr(src, tmp_path / "a.zarr", chunks=(1, 1, 1, 16, 16))  # 16 units, written in parallel
    assert list(tmp_path.iterdir()) == []


def test_to_ome_zarr_label_pyramid_uses_nearest(tmp_path, v04):
    ls = open_ome_zarr_source(v04[0]).labels()["nuclei"]
    out = to_ome_zarr(ls, tmp_path / "lab.zarr", multiscale_levels=2)
    g = zarr.open_group(out, mode="r")
    np.testing.assert_array_equal(g["1"][...], v04[2][..., ::2, ::2])
    assert g.attrs["ome"]["multiscales"][0]["type"] == "nearest"
    # an OMEArrow marked as a label image is downsampled the same way
    o = of.OMEArrow(v04[2][0, 0, 0].astype(np.uint16), image_type="label")
    out2 = to_ome_zarr(o, tmp_path / "lab2.zarr", multiscale_levels=2, dim_order="YX")
    np.testing.assert_array_equal(zarr.open_group(out2, mode="r")["1"][...], v04[2][0, 0, 0, ::2, ::2])


def test_to_ome_zarr_from_lazy_selection_and_ome_zarr_round_trip(tmp_path, v05):
    img = of.scan(open_ome_zarr_source(v05[0]))
    out = to_ome_zarr(img.select(c=[2, 0], y=(4, 36)), tmp_path / "sel.zarr", zarr_format=2)
    g = zarr.open_group(out, mode="r")
    ozm_v04.Image.from_zarr(g)
    np.testing.assert_array_equal(g["0"][...][0], v05[1][[2, 0], :, 4:36])
    assert [c["label"] for c in g.attrs["omero"]["channels"]] == ["ch2", "ch0"]
    ax = g.attrs["multiscales"][0]["axes"]
    assert ax[-1]["unit"] == "nanometer"
    assert g.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [1, 1, 300, 100, 100]


def test_to_ome_zarr_streams_dataset_chunk_by_chunk(tmp_path):
    shape = (1, 1, 8, 512, 512)  # 4 MiB of uint16
    data = np.random.default_rng(3).integers(0, 60000, shape).astype(np.uint16)
    ds = of.write_dataset(data, tmp_path / "ds", chunk_shape=(1, 128, 128), image_ids=["big"], progress=False)
    del data
    img = of.scan(ds, image_id="big")
    src = img._lazy().source
    ps = src.pixel_source()
    reads = []
    dec = ps.decode
    object.__setattr__(ps, "decode", lambda i, strict: (reads.append(i), dec(i, strict))[1])
    tracemalloc.start()
    try:
        to_ome_zarr(img, tmp_path / "big.zarr", chunks=(1, 1, 1, 128, 128))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    nbytes = int(np.prod(shape)) * 2
    assert len(reads) == len(ps) == 8 * 4 * 4  # every chunk read exactly once
    assert sorted(reads) == list(range(len(ps)))
    assert peak < nbytes / 4, f"peak {peak} bytes for a {nbytes}-byte image"
    print(f"peak traced memory {peak} bytes for a {nbytes}-byte image")
    g = zarr.open_group(str(tmp_path / "big.zarr"), mode="r")
    np.testing.assert_array_equal(g["0"][0, 0, 3:5, 100:300, 200:260], ds.read("big")[0, 0, 3:5, 100:300, 200:260])

"""TIFF / OME-TIFF: lazy sources, streaming ingest, OME-TIFF export, bad input.

Every fixture is written by ``tifffile`` (an independent writer) with known
content, or is real image data bundled with scikit-image; every export is read
back by ``tifffile`` (an independent reader): pixels, axes and OME-XML values.
"""

from __future__ import annotations

import gc
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import tifffile

import omeframe as of
from omeframe.engine.lazy import LazyImage
from omeframe.errors import CorruptFileError, DimOrderError, SchemaError
from omeframe.facade import from_tiff
from omeframe.formats.tiff.omexml import (
    OMEXMLMismatchWarning,
    build_ome_xml,
    parse_ome_xml,
    rgba_to_ome_color,
)
from omeframe.formats.tiff.source import (
    TiffSource,
    UnsupportedTiffCompressionError,
    list_tiff_series,
    open_tiff_source,
)
from omeframe.formats.tiff.writer import to_ome_tiff
from omeframe.model.dims import to_tczyx
from omeframe.registry import open_lazy_plane_source

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _read(path, **kw) -> np.ndarray:
    with open_tiff_source(path, **kw) as src:
        return LazyImage(src).execute()


def _tczyx(arr: np.ndarray, axes: str) -> np.ndarray:
    """Reference: ``arr`` with ``axes`` (subset of TCZYX) as a TCZYX array."""
    return to_tczyx(arr, axes)


# ---------------------------------------------------------------------------
# sources: layouts, axes, metadata
# ---------------------------------------------------------------------------
def test_2d_plain_tiff_record_and_defaults(tmp_path):
    a = _rng().integers(0, 60000, (300, 200), dtype=np.uint16)
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, a, metadata=None)
    rec = from_tiff(p)
    assert np.array_equal(of.to_numpy(rec)[0, 0, 0], a)
    assert of.to_numpy(rec).dtype == np.uint16
    assert rec["id"].as_py() == "plain" and rec["name"].as_py() == "plain.tif"
    meta = rec["pixels_meta"].as_py()
    assert [c["name"] for c in meta["channels"]] == ["C0"]
    assert (meta["size_x"], meta["size_y"]) == (200, 300)
    # no resolution tags: the pixel size is unknown (null), not 1 µm
    assert meta["physical_size_x"] is None and meta["physical_size_x_unit"] is None


def test_ome_tiff_channel_metadata(tmp_path):
    a = _rng(1).integers(0, 4000, (2, 3, 4, 64, 80), dtype=np.uint16)
    p = tmp_path / "multi.ome.tif"
    colors = [0xFF0000FF, 0x00FF00FF, 0x0000FFFF]
    tifffile.imwrite(
        p, a, ome=True, tile=(32, 32), compression="zlib",
        metadata={
            "axes": "TCZYX",
            "Name": "cells",
            "AcquisitionDate": "2021-03-04T05:06:07",
            "PhysicalSizeX": 0.325, "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 0.325, "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZ": 1500.0, "PhysicalSizeZUnit": "nm",
            "Channel": {
                "Name": ["DAPI", "GFP", "mCherry"],
                "Color": [rgba_to_ome_color(c) for c in colors],
                "EmissionWavelength": [461.0, 0.51, 610.0],
                "EmissionWavelengthUnit": ["nm", "µm", "nm"],
                "ExcitationWavelength": [358.0, 488.0, 587.0],
            },
        },
    )
    with open_tiff_source(p) as src:
        assert src.shape == (2, 3, 4, 64, 80)
        h = src.header()
        assert h.name == "cells" and h.image_id == "multi"
        assert [c.name for c in h.channels] == ["DAPI", "GFP", "mCherry"]
        assert [c.color_rgba for c in h.channels] == colors
        assert [c.emission_um for c in h.channels] == pytest.approx([0.461, 0.51, 0.61])
        assert [c.excitation_um for c in h.channels] == pytest.approx([0.358, 0.488, 0.587])
        assert (h.physical_size_x, h.physical_size_x_unit) == (0.325, "µm")
        assert (h.physical_size_z, h.physical_size_z_unit) == (1500.0, "nm")
        assert h.acquisition_datetime == datetime(2021, 3, 4, 5, 6, 7)
        assert np.array_equal(LazyImage(src).execute(), a)
        sel = LazyImage(src).select(t=[1], c=[2, 0], z=slice(1, 3), y=(10, 50), x=(5, 77)).execute()
        assert np.array_equal(sel, a[1:2][:, [2, 0]][:, :, 1:3, 10:50, 5:77])


def test_imagej_hyperstack(tmp_path):
    a = _rng(2).integers(0, 255, (3, 5, 2, 40, 50), dtype=np.uint8)  # TZCYX
    p = tmp_path / "ij.tif"
    luts = [np.zeros((3, 256), np.uint8), np.zeros((3, 256), np.uint8)]
    luts[0][1] = np.arange(256)  # green
    luts[1][0] = np.arange(256)  # red
    tifffile.imwrite(
        p, a, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
        metadata={"axes": "TZCYX", "spacing": 2.5, "unit": "um", "LUTs": luts},
    )
    with open_tiff_source(p) as src:
        assert src.shape == (3, 2, 5, 40, 50)
        assert np.array_equal(LazyImage(src).execute(), a.transpose(0, 2, 1, 3, 4))
        h = src.header()
        assert h.physical_size_x == pytest.approx(0.2) and h.physical_size_x_unit == "µm"
        assert h.physical_size_z == 2.5 and h.physical_size_z_unit == "µm"
        assert [c.color_rgba for c in h.channels] == [0x00FF00FF, 0xFF0000FF]


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_rgb_samples_become_channels(tmp_path, planar):
    rgb = _rng(3).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    p = tmp_path / f"rgb_{planar}.tif"
    if planar == "contig":
        tifffile.imwrite(p, rgb, photometric="rgb", tile=(32, 32), compression="zlib")
    else:
        tifffile.imwrite(p, rgb.transpose(2, 0, 1), photometric="rgb", planarconfig="separate", rowsperstrip=16)
    with open_tiff_source(p) as src:
        assert src.shape == (1, 3, 1, 100, 120)
        assert [c.color_rgba for c in src.header().channels] == [0xFF0000FF, 0x00FF00FF, 0x0000FFFF]
        out = LazyImage(src).execute()
        assert np.array_equal(out[0, :, 0], rgb.transpose(2, 0, 1))
        g = LazyImage(src).select(c=[1], y=(17, 90), x=(33, 101)).execute()
        assert np.array_equal(g[0, 0, 0], rgb[17:90, 33:101, 1])
        # stored bytes of the three channel pieces of a tile add up to the tile
        ps = src.pixel_source()
        with tifffile.TiffFile(p) as tf:
            total = sum(tf.pages[0].databytecounts)
        assert abs(int(ps.stored_nbytes.sum()) - total) <= len(ps)


def test_ome_rgb_channel_expands_to_samples(tmp_path):
    rgb = _rng(4).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    p = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(p, rgb, photometric="rgb", ome=True, metadata={"Channel": {"Name": ["bright"]}})
    with open_tiff_source(p) as src:
        assert src.shape == (1, 3, 1, 30, 40)
        assert [c.name for c in src.header().channels] == ["bright:R", "bright:G", "bright:B"]
        assert np.array_equal(LazyImage(src).execute()[0, :, 0], rgb.transpose(2, 0, 1))


def test_tiles_pieces_and_explain_bytes(tmp_path):
    a = _rng(5).integers(0, 60000, (2, 1000, 700), dtype=np.uint16)
    p = tmp_path / "tiled.ome.tif"
    tifffile.imwrite(p, a, tile=(128, 256), compression="zlib", ome=True, metadata={"axes": "CYX"})
    with tifffile.TiffFile(p) as tf:
        counts = [np.asarray(pg.databytecounts) for pg in tf.series[0]]
    with open_tiff_source(p) as src:
        assert src.chunk_shape() == (1, 256, 256)  # tiles grouped to >= 256
        ps = src.pixel_source()
        assert len(ps) == 2 * 8 * 3
        assert int(ps.stored_nbytes.sum()) == int(sum(c.sum() for c in counts))
        plan = LazyImage(src).select(c=[1], y=(130, 300), x=(10, 260))
        info = plan.info()
        # rows 1-2 of tiles, columns 0-1, channel 1: tiles 3, 4, 6, 7 of page 1
        assert info.chunks_touched == 4
        assert info.bytes_read == int(counts[1][[3, 4, 6, 7]].sum())
        assert "tiles 128x256" in plan.explain()
        assert np.array_equal(plan.execute()[0, 0, 0], a[1, 130:300, 10:260])


def test_compressed_strips_grouped(tmp_path):
    a = _rng(6).integers(0, 60000, (1100, 300), dtype=np.uint16)
    p = tmp_path / "strips.tif"
    tifffile.imwrite(p, a, compression="zlib", rowsperstrip=8)
    with tifffile.TiffFile(p) as tf:
        total = int(sum(tf.pages[0].databytecounts))
    with open_tiff_source(p) as src:
        ps = src.pixel_source()
        assert len(ps) == 5  # 256-row groups of 32 strips
        assert tuple(ps.extents[0]) == (1, 256, 300)
        assert int(ps.stored_nbytes.sum()) == total
        assert np.array_equal(LazyImage(src).execute()[0, 0, 0], a)
        roi = LazyImage(src).select(y=(250, 530), x=(7, 9)).execute()
        assert np.array_equal(roi[0, 0, 0], a[250:530, 7:9])


def test_uncompressed_single_strip_is_read_in_row_pieces(tmp_path):
    a = _rng(7).integers(0, 60000, (2048, 2304), dtype=np.uint16)  # one 9 MiB strip
    p = tmp_path / "onestrip.tif"
    tifffile.imwrite(p, a, metadata=None)
    with tifffile.TiffFile(p) as tf:
        assert len(tf.pages[0].dataoffsets) == 1
    with open_tiff_source(p) as src:
        ps = src.pixel_source()
        assert len(ps) == 8 and int(ps.extents[:, 1].max()) == 256
        plan = LazyImage(src).select(y=(1000, 1010), x=(100, 200))
        assert plan.info().bytes_read == 256 * 2304 * 2  # one row piece, not the strip
        assert np.array_equal(plan.execute()[0, 0, 0], a[1000:1010, 100:200])
        assert np.array_equal(LazyImage(src).execute()[0, 0, 0], a)


def test_volumetric_tiles(tmp_path):
    a = _rng(8).integers(0, 255, (12, 64, 96), dtype=np.uint8)
    p = tmp_path / "vol.tif"
    tifffile.imwrite(p, a, tile=(4, 32, 32), volumetric=True, compression="zlib")
    with open_tiff_source(p) as src:
        assert src.shape == (1, 1, 12, 64, 96) and src.chunk_shape() == (4, 64, 96)
        assert np.array_equal(LazyImage(src).execute()[0, 0], a)
        assert np.array_equal(LazyImage(src).select(z=[5, 2]).execute()[0, 0], a[[5, 2]])


def test_pyramids_subifds_and_multiseries(tmp_path):
    a = _rng(9).integers(0, 1000, (2, 256, 256), dtype=np.uint16)
    levels = [a, a[:, ::2, ::2], a[:, ::4, ::4]]
    sub = tmp_path / "subifd.ome.tif"
    with tifffile.TiffWriter(sub) as tw:
        tw.write(a, subifds=2, tile=(64, 64), metadata={"axes": "CYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, tile=(64, 64))
    shaped_sub = tmp_path / "subifd_shaped.tif"  # tifffile lists the SubIFD levels as separate series
    with tifffile.TiffWriter(shaped_sub) as tw:
        tw.write(a, subifds=2, tile=(64, 64), metadata={"axes": "CYX"})
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, tile=(64, 64))
    multi = tmp_path / "multiseries.tif"  # reduced-resolution series after the base series
    with tifffile.TiffWriter(multi) as tw:
        tw.write(a, tile=(64, 64), metadata={"axes": "CYX"})
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, tile=(64, 64))
    for p in (sub, shaped_sub, multi):
        with open_tiff_source(p) as src:
            lv = src.levels()
            assert [s.shape for s in lv] == [(1, 2, 1, 256, 256), (1, 2, 1, 128, 128), (1, 2, 1, 64, 64)]
            for s, ref in zip(lv, levels, strict=True):
                assert np.array_equal(LazyImage(s).execute()[0, :, 0], ref)
        with open_tiff_source(p, level=1) as src1:
            assert src1.shape == (1, 2, 1, 128, 128) and len(src1.levels()) == 2
    with open_tiff_source(sub) as src:
        assert src.levels()[2].header().physical_size_x == pytest.approx(2.0)
    with pytest.raises(SchemaError, match="3 pyramid levels; level 3"):
        open_tiff_source(sub, level=3)


def test_multiseries_scenes(tmp_path):
    a = _rng(10).integers(0, 1000, (2, 50, 60), dtype=np.uint16)
    rgb = _rng(11).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    p = tmp_path / "scenes.ome.tif"
    with tifffile.TiffWriter(p, ome=True) as tw:
        tw.write(a, metadata={"axes": "CYX", "Name": "first"})
        tw.write(rgb, photometric="rgb", metadata={"Name": "second"})
    info = list_tiff_series(p)
    assert [(s["name"], s["shape"], s["dtype"]) for s in info] == [
        ("first", (1, 2, 1, 50, 60), "uint16"), ("second", (1, 3, 1, 30, 40), "uint8"),
    ]
    r0, r1 = from_tiff(p), from_tiff(p, series=1)
    assert (r0["id"].as_py(), r0["name"].as_py()) == ("scenes", "first")
    assert (r1["id"].as_py(), r1["name"].as_py()) == ("scenes_s1", "second")
    assert np.array_equal(of.to_numpy(r0)[0, :, 0], a)
    assert np.array_equal(of.to_numpy(r1)[0, :, 0], rgb.transpose(2, 0, 1))
    with pytest.raises(SchemaError, match="has 2 series"):
        open_tiff_source(p, series=2)


def test_generic_axes_mapping_and_unmappable_axes(tmp_path):
    a = _rng(12).integers(0, 255, (4, 20, 30), dtype=np.uint8)
    p = tmp_path / "generic.tif"
    with tifffile.TiffWriter(p) as tw:  # plain pages -> tifffile series 'IYX'
        for plane in a:
            tw.write(plane, metadata=None)
    with open_tiff_source(p) as src:
        assert src.file_axes.startswith("I") and src.shape == (1, 1, 4, 20, 30)  # I -> Z
        assert np.array_equal(LazyImage(src).execute()[0, 0], a)
    b = _rng(13).integers(0, 255, (3, 4, 20, 30), dtype=np.uint8)
    q = tmp_path / "angle.tif"
    tifffile.imwrite(q, b, photometric="minisblack", metadata={"axes": "CAYX"})  # A (angle) takes the free Z
    with open_tiff_source(q) as src:
        assert src.shape == (1, 3, 4, 20, 30)
        assert np.array_equal(LazyImage(src).execute()[0], b)
    c = np.zeros((2, 2, 2, 2, 8, 8), np.uint8)
    r = tmp_path / "toomany.tif"
    tifffile.imwrite(r, c, photometric="minisblack", metadata={"axes": "TCZAYX"})
    with pytest.raises(SchemaError, match=r"TCZAYX.*non-TCZYX axes \['A'\]"):
        open_tiff_source(r)


def test_scan_select_equals_numpy(tmp_path):
    a = _rng(14).integers(0, 60000, (3, 2, 300, 400), dtype=np.uint16)  # CZYX
    p = tmp_path / "scan.ome.tif"
    tifffile.imwrite(p, a, ome=True, tile=(64, 64), compression="zstd", metadata={"axes": "CZYX"})
    ref = _tczyx(a, "CZYX")
    with open_tiff_source(p) as src:
        img = of.scan(src)
        assert img.is_lazy and img.shape == ref.shape
        roi = img.select(c=[2, 0], z=[1], y=(33, 250), x=(100, 399))
        assert np.array_equal(roi.export("numpy"), ref[:, [2, 0]][:, :, [1], 33:250, 100:399])
        assert np.array_equal(of.to_numpy(roi.collect().data), ref[:, [2, 0]][:, :, [1], 33:250, 100:399])
    # the path-based scan (whatever TIFF source resolve.py dispatches to) agrees
    assert np.array_equal(of.scan(p).select(y=(1, 2)).export("numpy"), ref[..., 1:2, :])


def test_roi_of_large_tiled_ome_tiff_is_fast(big_tiff):
    path, n = big_tiff
    with open_tiff_source(path) as src:
        plan = LazyImage(src).select(y=(4000, 4256), x=(3000, 3256))
        assert plan.info().chunks_touched == 4
        plan.execute()  # warm up
        t0 = time.perf_counter()
        roi = plan.execute()
        dt = time.perf_counter() - t0
    assert np.array_equal(roi[0, 0, 0], _big_region(4000, 4256, 3000, 3256))
    assert dt < 0.05, f"256x256 ROI of a {n}x{n} tiled OME-TIFF took {dt * 1000:.1f} ms"


# ---------------------------------------------------------------------------
# scikit-image bundled data
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["multipage.tif", "multipage_rgb.tif"])
def test_skimage_tiffs(name):
    p = SKIMAGE_DATA / name
    if not p.exists():
        pytest.skip(f"{name} is not bundled with this scikit-image")
    ref = tifffile.imread(p)
    out = _read(p)
    with open_tiff_source(p) as src:
        axes = src.file_axes
    if name == "multipage.tif":  # IYX: a plane sequence -> Z
        assert axes.startswith("IYX") and np.array_equal(out[0, 0], ref)
    else:  # QSYX: samples -> C, Q -> Z
        assert axes == "QSYX" and np.array_equal(out[0], ref.transpose(1, 0, 2, 3))


@pytest.mark.parametrize("name", ["camera.png", "astronaut.png", "coins.png", "chessboard_RGB.png"])
def test_skimage_pngs_through_tiff(tmp_path, name):
    from PIL import Image

    p = SKIMAGE_DATA / name
    if not p.exists():
        pytest.skip(f"{name} is not bundled")
    arr = np.asarray(Image.open(p))
    tif = tmp_path / (p.stem + ".tif")
    photometric = "rgb" if arr.ndim == 3 else "minisblack"
    tifffile.imwrite(tif, arr, photometric=photometric, tile=(64, 64), compression="zlib")
    ref = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]
    rec = from_tiff(tif)
    assert np.array_equal(of.to_numpy(rec)[0, :, 0], ref)
    # and back out as OME-TIFF, read by tifffile
    out = to_ome_tiff(rec, tmp_path / (p.stem + ".ome.tif"))
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome
        got = tf.series[0].asarray()
    assert np.array_equal(got.reshape(ref.shape), ref)


# ---------------------------------------------------------------------------
# ingest
# ---------------------------------------------------------------------------
def test_from_tiff_overrides_and_clamp(tmp_path):
    a = (_rng(15).random((2, 30, 40)) * 100000).astype(np.float32)
    p = tmp_path / "float.tif"
    tifffile.imwrite(p, a, metadata={"axes": "CYX"})
    when = datetime(2020, 1, 2, 3, 4, 5)
    rec = from_tiff(p, image_id="x1", name="X", image_type="label", channel_names=["a", "b"],
                    acquisition_datetime=when)
    assert (rec["id"].as_py(), rec["name"].as_py(), rec["image_type"].as_py()) == ("x1", "X", "label")
    assert rec["acquisition_datetime"].as_py() == when
    assert [c["name"] for c in rec["pixels_meta"]["channels"].as_py()] == ["a", "b"]
    assert np.array_equal(of.to_numpy(rec)[0, :, 0], a)
    clamped = of.to_numpy(from_tiff(p, clamp_to_uint16=True))
    assert clamped.dtype == np.uint16 and clamped.max() == 65535
    assert np.array_equal(clamped[0, :, 0], np.clip(a, 0, 65535).astype(np.uint16))
    with pytest.raises(ValueError, match="channel_names has 3 names"):
        from_tiff(p, channel_names=["a", "b", "c"])


def test_from_tiff_dataset_all_levels(tmp_path):
    a = _rng(16).integers(0, 1000, (2, 512, 384), dtype=np.uint16)
    levels = [a, a[:, ::2, ::2], a[:, ::4, ::4]]
    p = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(p, ome=True) as tw:
        tw.write(a, subifds=2, tile=(64, 64), compression="zlib",
                 metadata={"axes": "CYX", "Channel": {"Name": ["n", "m"]}})
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, tile=(64, 64), compression="zlib")
    ds = from_tiff(p, out=tmp_path / "ds", levels="all", progress=False)
    assert ds.image_ids == ["pyr"] and ds.levels("pyr") == [0, 1, 2]
    for k, ref in enumerate(levels):
        assert np.array_equal(ds.read("pyr", k)[0, :, 0], ref)
    assert [c["name"] for c in ds.image_metadata("pyr")["pixels_meta"]["channels"]] == ["n", "m"]
    ds1 = from_tiff(p, out=tmp_path / "ds1", progress=False)  # default: full resolution only
    assert ds1.levels("pyr") == [0]
    assert ds1.entry("pyr").chunk_shape == (1, 256, 256)  # 4x4 of the file's 64x64 tiles


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------
def _multichannel_record():
    a = _rng(17).integers(0, 60000, (2, 3, 2, 300, 520), dtype=np.uint16)
    rec = of.from_numpy(a, dim_order="TCZYX", image_id="exp", name="exported",
                        channel_names=["dna", "actin", "tubulin"],
                        physical_size_x=0.25, physical_size_y=0.25, physical_size_z=2.0)
    d = of.to_dict(rec)
    colors = [0xFF0000FF, 0x00FF00FF, 0x0000FFFF]
    for ch, col, em in zip(d["pixels_meta"]["channels"], colors, (0.461, 0.52, None), strict=True):
        ch["color_rgba"] = col
        ch["emission_um"] = em
    return a, d, colors


def test_to_ome_tiff_round_trip_read_by_tifffile(tmp_path):
    a, rec, colors = _multichannel_record()
    out = to_ome_tiff(rec, tmp_path / "out.ome.tif", use_channel_colors=True, pyramid_levels=3, compression="zstd")
    assert out == str(tmp_path / "out.ome.tif")
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome and not tf.is_bigtiff
        s = tf.series[0]
        assert s.axes == "TCZYX" and s.shape == a.shape
        assert np.array_equal(s.asarray(), a)
        assert [lv.shape for lv in s.levels] == [a.shape, (2, 3, 2, 150, 260), (2, 3, 2, 75, 130)]
        lv1 = s.levels[1].asarray()
        expect = np.rint(a.reshape(2, 3, 2, 150, 2, 260, 2).mean(axis=(4, 6))).astype(np.uint16)
        assert np.array_equal(lv1, expect)
        page = tf.pages[0]
        assert page.is_tiled and page.tile == (256, 256) and page.compression == 50000  # ZSTD
        assert len(page.subifds) == 2
        img = parse_ome_xml(tf.ome_metadata)[0]
    assert img.name == "exported"
    assert [c.name for c in img.channels] == ["dna", "actin", "tubulin"]
    assert [c.color_rgba for c in img.channels] == colors
    assert [c.emission_um for c in img.channels] == pytest.approx([0.461, 0.52, None])
    assert (img.physical_size["x"], img.physical_size_unit["x"], img.physical_size["z"]) == (0.25, "µm", 2.0)
    assert img.sizes == {"X": 520, "Y": 300, "Z": 2, "C": 3, "T": 2}
    # and omeframe reads its own output back with the metadata
    with open_tiff_source(out) as src:
        assert [c.name for c in src.header().channels] == ["dna", "actin", "tubulin"]
        assert [c.color_rgba for c in src.header().channels] == colors
        assert len(src.levels()) == 3


def test_to_ome_tiff_options(tmp_path):
    a, rec, _ = _multichannel_record()
    p = tmp_path / "o.ome.tif"
    to_ome_tiff(rec, p, dim_order="TZCYX", compression=None, bigtiff=True)
    with tifffile.TiffFile(p) as tf:
        assert tf.is_bigtiff and tf.pages[0].compression == 1
        assert tf.series[0].axes == "TZCYX"
        assert np.array_equal(tf.series[0].asarray(), a.transpose(0, 2, 1, 3, 4))
        img = parse_ome_xml(tf.ome_metadata)[0]
        assert img.dimension_order == "XYCZT"
        assert all(c.color_rgba is None for c in img.channels)  # use_channel_colors=False
    with pytest.raises(FileExistsError, match="overwrite=True"):
        to_ome_tiff(rec, p)
    to_ome_tiff(rec, p, overwrite=True, dtype=np.uint8, clamp=True, tile=(64, 64))
    with tifffile.TiffFile(p) as tf:
        got = tf.series[0].asarray()
        assert got.dtype == np.uint8 and tf.pages[0].tile == (64, 64)
    assert np.array_equal(got, np.clip(a, 0, 255).astype(np.uint8))
    small = np.arange(100 * 120, dtype=np.uint16).reshape(100, 120)
    to_ome_tiff(small, tmp_path / "small.ome.tif")
    with tifffile.TiffFile(tmp_path / "small.ome.tif") as tf:
        assert not tf.pages[0].is_tiled and np.array_equal(tf.asarray(), small)
    with pytest.raises(DimOrderError):
        to_ome_tiff(rec, tmp_path / "bad.ome.tif", dim_order="TCZXY")
    with pytest.raises(ValueError, match="multiples of 16"):
        to_ome_tiff(rec, tmp_path / "bad.ome.tif", tile=(100, 100))
    assert not (tmp_path / "bad.ome.tif").exists()


def test_to_ome_tiff_from_lazy_plan_and_atomicity(tmp_path):
    a, rec, _ = _multichannel_record()
    src_path = to_ome_tiff(rec, tmp_path / "src.ome.tif")
    with open_tiff_source(src_path) as src:
        plan = of.scan(src).select(t=[1], c=[2, 0], y=(10, 290), x=(20, 500))
        out = to_ome_tiff(plan, tmp_path / "crop.ome.tif")
        assert np.array_equal(tifffile.imread(out).reshape(plan.shape), a[1:2, [2, 0], :, 10:290, 20:500])
        with tifffile.TiffFile(out) as tf:
            assert [c.name for c in parse_ome_xml(tf.ome_metadata)[0].channels] == ["tubulin", "dna"]

        class Boom(Exception):
            pass

        ps = src.pixel_source()
        orig = ps.decode
        calls = {"n": 0}

        def failing(i, strict):
            calls["n"] += 1
            if calls["n"] > 20:
                raise Boom("disk gone")
            return orig(i, strict)

        object.__setattr__(ps, "decode", failing)
        with pytest.raises(Boom):
            to_ome_tiff(src, tmp_path / "partial.ome.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crop.ome.tif", "src.ome.tif"]


def test_streaming_export_of_dataset_image_memory(tmp_path):
    a = _rng(18).integers(0, 60000, (4096, 2048), dtype=np.uint16)  # 16 MiB raw
    ds = of.write_dataset(a, tmp_path / "ds", image_ids=["big"], dim_order="YX", chunk_shape=(1, 512, 512),
                          progress=False)
    lazy = ds.scan("big")
    del a
    gc.collect()
    tracemalloc.start()
    try:
        to_ome_tiff(lazy, tmp_path / "big.ome.tif", compression="zlib", compression_level=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"export held {peak / 2**20:.1f} MiB for a 16 MiB image"
    ref = ds.read("big")[0, 0, 0]
    assert np.array_equal(tifffile.imread(tmp_path / "big.ome.tif"), ref)


def test_open_lazy_plane_source(tmp_path):
    a = _rng(19).integers(0, 1000, (2, 3, 40, 50), dtype=np.uint16)  # TCYX
    p = tmp_path / "planes.ome.tif"
    tifffile.imwrite(p, a, ome=True, metadata={"axes": "TCYX", "PhysicalSizeX": 0.5})
    meta, load = open_lazy_plane_source(str(p))
    assert (meta["size_t"], meta["size_c"], meta["size_z"], meta["size_y"], meta["size_x"]) == (2, 3, 1, 40, 50)
    assert meta["type"] == "uint16" and meta["physical_size_x"] == 0.5 and len(meta["channels"]) == 3
    assert np.array_equal(load(1, 0, 2), a[1, 2])
    with pytest.raises(IndexError):
        load(0, 0, 3)
    del load
    gc.collect()
    assert open_lazy_plane_source(str(tmp_path / "x.parquet")) is None
    with pytest.raises(FileNotFoundError):
        open_lazy_plane_source(str(tmp_path / "missing.tif"))


# ---------------------------------------------------------------------------
# lifetime
# ---------------------------------------------------------------------------
def test_file_handle_closed_without_resource_warning(tmp_path):
    p = tmp_path / "h.tif"
    tifffile.imwrite(p, np.zeros((64, 64), np.uint8), tile=(16, 16))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        src = open_tiff_source(p)
        assert isinstance(src, TiffSource) and not src.closed
        handle = src._handle
        levels = src.levels()
        LazyImage(src).execute()
        del src, levels
        gc.collect()
        assert handle.closed
        with open_tiff_source(p) as s2:
            h2 = s2._handle
        assert h2.closed and s2.closed
        with pytest.raises(ValueError, match="closed"):
            LazyImage(s2).execute()
        gc.collect()
    assert not [w for w in rec if issubclass(w.category, ResourceWarning)]


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def _tiled(tmp_path, name="t.ome.tif"):
    a = _rng(20).integers(0, 60000, (3, 256, 256), dtype=np.uint16)
    p = tmp_path / name
    tifffile.imwrite(p, a, tile=(64, 64), compression="zlib", ome=True, metadata={"axes": "CYX"})
    return p, a


def test_not_a_tiff_and_empty_file(tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"GIF89a" + bytes(200))
    with pytest.raises(CorruptFileError, match="junk.tif.*not a readable TIFF"):
        open_tiff_source(junk)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty.tif"):
        from_tiff(empty)
    with pytest.raises(FileNotFoundError):
        open_tiff_source(tmp_path / "nope.tif")


@pytest.mark.parametrize("frac", [0.5, 0.97])
def test_truncated_tiff(tmp_path, frac, caplog):
    p, _ = _tiled(tmp_path)
    data = p.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(CorruptFileError, match=r"cut.tif.*(truncated|not a readable)"):
        with open_tiff_source(cut) as src:
            LazyImage(src).execute()
    with pytest.raises(CorruptFileError, match="cut.tif"):
        from_tiff(cut, out=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_corrupt_tile_bytes(tmp_path):
    p, a = _tiled(tmp_path)
    with tifffile.TiffFile(p) as tf:
        off, n = tf.pages[1].dataoffsets[5], tf.pages[1].databytecounts[5]
    raw = bytearray(p.read_bytes())
    raw[off : off + n] = _rng(0).integers(0, 255, n, dtype=np.uint8).tobytes()
    p.write_bytes(bytes(raw))
    with open_tiff_source(p) as src:
        # tiles elsewhere still read
        assert np.array_equal(LazyImage(src).select(c=[0]).execute()[0, 0, 0], a[0])
        with pytest.raises(CorruptFileError, match=r"t.ome.tif.*page 1 tile 5 cannot be decoded"):
            LazyImage(src).select(c=[1], y=(64, 128), x=(64, 128)).execute()


def test_unsupported_compression(tmp_path):
    p, a = _tiled(tmp_path, "weird.tif")
    with tifffile.TiffFile(p) as tf:
        tag = tf.pages[0].tags["Compression"]
        assert tf.byteorder == "<"
        positions = [pg.tags["Compression"].valueoffset for pg in tf.pages]
    raw = bytearray(p.read_bytes())
    for pos in positions:
        raw[pos : pos + 2] = struct.pack("<H", 55555)
    p.write_bytes(bytes(raw))
    del tag
    with open_tiff_source(p) as src:
        assert src.shape == (1, 3, 1, 256, 256)  # metadata still readable
        assert "unknown code 55555" in src.describe
        with pytest.raises(UnsupportedTiffCompressionError, match=r"weird.tif.*compression unknown code 55555"):
            LazyImage(src).select(c=[0], y=(0, 10), x=(0, 10)).execute()
    with pytest.raises(UnsupportedTiffCompressionError, match="55555"):
        from_tiff(p)


# Runs in a fresh interpreter where ``import imagecodecs`` fails, as on a plain
# ``pip install omeframe`` (tifffile keeps the codecs it loaded, so this cannot be
# simulated in the test process once any test has used zstd).
_NO_IMAGECODECS = """
import sys
sys.modules["imagecodecs"] = None  # import imagecodecs -> ImportError
import json, pathlib, numpy as np, tifffile
import omeframe as of
from omeframe.errors import OptionalDependencyError
from omeframe.formats.tiff.source import TiffCodecNotInstalledError, UnsupportedTiffCompressionError

out = pathlib.Path(sys.argv[1])
img = np.arange(2 * 40 * 50, dtype=np.uint16).reshape(2, 40, 50)
res = {}
try:
    of.to_ome_tiff(img, out / "a.ome.tif", compression="zstd")
except OptionalDependencyError as exc:
    res["write"] = ["OptionalDependencyError", str(exc)]
res["left"] = sorted(p.name for p in out.iterdir() if p.name != "zstd.tif")
res["zlib"] = bool((tifffile.imread(of.to_ome_tiff(img, out / "z.ome.tif", compression="zlib")) == img).all())
res["lzma"] = bool((tifffile.imread(of.to_ome_tiff(img, out / "l.ome.tif", compression="lzma")) == img).all())
src = of.scan(out / "zstd.tif")
res["shape"] = list(src.shape)  # metadata needs no codec
try:
    src.export("numpy")
except TiffCodecNotInstalledError as exc:
    res["read"] = [isinstance(exc, OptionalDependencyError), isinstance(exc, UnsupportedTiffCompressionError), str(exc)]
print(json.dumps(res))
"""


def test_codecs_without_imagecodecs_name_the_extra(tmp_path):
    a = _rng(40).integers(0, 1000, (3, 64, 64), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "zstd.tif", a, photometric="minisblack", compression="zstd", metadata={"axes": "CYX"})
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "python") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _NO_IMAGECODECS, str(tmp_path)], check=False, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    kind, msg = res["write"]
    assert kind == "OptionalDependencyError"
    assert "compression='zstd'" in msg and "imagecodecs" in msg and "pip install 'omeframe[tiff]'" in msg
    assert res["left"] == []  # refused before the temporary file was created
    assert res["zlib"] and res["lzma"]  # the codecs tifffile has without imagecodecs still work
    assert res["shape"] == [1, 3, 1, 64, 64]
    is_optional, is_unsupported, msg = res["read"]
    assert is_optional and is_unsupported
    assert "zstd.tif" in msg and "ZSTD" in msg and "pip install 'omeframe[tiff]'" in msg


def test_unknown_compression_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"tifffile cannot write uint16 pages with compression='no-such-codec'"):
        to_ome_tiff(np.zeros((1, 32, 32), np.uint16), tmp_path / "x.ome.tif", compression="no-such-codec")
    with pytest.raises(ValueError, match=r"tifffile cannot write float32 pages with compression='jpeg'"):
        to_ome_tiff(np.zeros((1, 32, 32), np.float32), tmp_path / "x.ome.tif", compression="jpeg")
    assert list(tmp_path.iterdir()) == []


def test_ome_xml_disagreeing_with_pixels_warns_and_follows_pixels(tmp_path):
    a = _rng(21).integers(0, 1000, (2, 64, 80), dtype=np.uint16)
    meta = {"axes": "CYX", "PhysicalSizeX": 0.5, "Channel": {"Name": ["a", "b"]}}
    xml = build_ome_xml([((2, 100, 80), "uint16", meta)])
    p = tmp_path / "lies.ome.tif"
    tifffile.imwrite(p, a, description=xml, metadata=None)
    with pytest.warns(OMEXMLMismatchWarning, match=r"SizeY=100.*Y=64"):
        with open_tiff_source(p) as src:
            h = src.header()
            out = LazyImage(src).execute()
    assert out.shape[-2:] == (64, 80) and np.array_equal(out.reshape(a.shape), a)
    assert h.physical_size_x == 0.5  # kept
    # planes the OME-XML declares but the file lacks: warning, zeros
    xml3 = build_ome_xml([((3, 64, 80), "uint16", {"axes": "CYX", "Channel": {"Name": ["a", "b", "c"]}})])
    q = tmp_path / "missing.ome.tif"
    tifffile.imwrite(q, a, description=xml3, metadata=None)
    with pytest.warns(OMEXMLMismatchWarning, match="not in the file"):
        rec = from_tiff(q)
    px = of.to_numpy(rec)
    assert px.shape == (1, 3, 1, 64, 80)
    assert np.array_equal(px[0, :2, 0], a) and not px[0, 2].any()
    assert [c["name"] for c in rec["pixels_meta"]["channels"].as_py()] == ["a", "b", "c"]


# ---------------------------------------------------------------------------
# streaming ingest memory
# ---------------------------------------------------------------------------
_TILE = 256


def _big_tile(ty: int, tx: int) -> np.ndarray:
    base = (np.arange(_TILE * _TILE, dtype=np.uint32).reshape(_TILE, _TILE) * 2654435761 >> 20).astype(np.uint16)
    return (base & 0x0FFF) + np.uint16((ty * 37 + tx * 11) % 4096)


def _big_region(y0, y1, x0, x1) -> np.ndarray:
    out = np.empty((y1 - y0, x1 - x0), np.uint16)
    for ty in range(y0 // _TILE, -(-y1 // _TILE)):
        for tx in range(x0 // _TILE, -(-x1 // _TILE)):
            t = _big_tile(ty, tx)
            ya, yb = max(y0, ty * _TILE), min(y1, (ty + 1) * _TILE)
            xa, xb = max(x0, tx * _TILE), min(x1, (tx + 1) * _TILE)
            ty0, tx0 = ty * _TILE, tx * _TILE
            out[ya - y0 : yb - y0, xa - x0 : xb - x0] = t[ya - ty0 : yb - ty0, xa - tx0 : xb - tx0]
    return out


def _write_big_tiff(path: Path, n: int) -> None:
    """An n x n uint16 tiled OME-TIFF written tile by tile (never whole in memory)."""

    def tiles():
        for ty in range(n // _TILE):
            for tx in range(n // _TILE):
                yield _big_tile(ty, tx)

    with tifffile.TiffWriter(path, bigtiff=n > 16384, ome=True) as tw:
        tw.write(tiles(), shape=(n, n), dtype=np.uint16, tile=(_TILE, _TILE), compression="zlib",
                 compressionargs={"level": 1}, metadata={"axes": "YX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory):
    n = 8192
    p = tmp_path_factory.mktemp("big") / "big8k.ome.tif"
    _write_big_tiff(p, n)
    return p, n


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy, pyarrow, pyarrow.parquet, tifffile, omeframe
    from omeframe.facade import from_tiff
    def peak():  # VmHWM: this process image's peak RSS (ru_maxrss would include the forking parent's)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = peak()
    t0 = time.time()
    ds = from_tiff(sys.argv[1], out=sys.argv[2], progress=False)
    e = ds.entry(ds.image_ids[0])
    print(json.dumps({"base": base, "peak": peak(), "secs": time.time() - t0, "shape": list(e.shape)}))
    """
)


def _ingest_rss(path: Path, out: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "python") + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path), str(out)], capture_output=True,
                         text=True, timeout=1800, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_ingest_8k_tiled_tiff_memory(big_tiff, tmp_path):
    """128 MiB raw: memory is bounded by the writer's buffers, not by the image size."""
    path, n = big_tiff
    r = _ingest_rss(path, tmp_path / "ds")
    assert r["shape"][-2:] == [n, n]
    assert r["peak"] - r["base"] < 192, r  # measured ~140 MiB over a ~85 MiB interpreter
    assert r["peak"] < 600, r
    ds = of.open_dataset(tmp_path / "ds")
    assert np.array_equal(ds.read(ds.image_ids[0], y=(4000, 4300), x=(7000, 7300))[0, 0, 0],
                          _big_region(4000, 4300, 7000, 7300))


def _slow_enabled(config) -> bool:
    expr = config.getoption("markexpr", "") or ""
    return os.environ.get("OMEFRAME_SLOW") == "1" or ("slow" in expr and "not slow" not in expr)


@pytest.mark.slow
def test_ingest_32k_tiled_tiff_peak_rss_below_600_mib(tmp_path, request):
    """1x1x1x32768x32768 uint16 (2 GiB raw) tiled TIFF -> dataset under 600 MiB peak RSS.

    Runs with ``-m slow`` or ``OMEFRAME_SLOW=1`` (about 90 s on 2 cores).
    """
    if not _slow_enabled(request.config):
        pytest.skip("slow: run with -m slow or OMEFRAME_SLOW=1")
    n = 32768
    p = tmp_path / "big32k.ome.tif"
    _write_big_tiff(p, n)
    r = _ingest_rss(p, tmp_path / "ds")
    p.unlink()
    assert r["shape"][-2:] == [n, n]
    print(f"32768^2 ingest: peak RSS {r['peak']:.0f} MiB (interpreter {r['base']:.0f} MiB), {r['secs']:.0f} s")
    assert r["peak"] < 600, r
    ds = of.open_dataset(tmp_path / "ds")
    assert np.array_equal(ds.read(ds.image_ids[0], y=(30000, 30300), x=(100, 400))[0, 0, 0],
                          _big_region(30000, 30300, 100, 400))

"""The napari plugin: its npe2 manifest, the reader's layer data, and napari's headless ViewerModel.

Everything runs without Qt: ``napari.components.ViewerModel`` is napari's
viewer state with no window. Images are small; what matters is which keywords
each layer gets and that opening reads only what the view shows.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import omeframe as of
from omeframe.napari import napari_get_reader, read_layers
from omeframe.napari import reader as nreader
from omeframe.storage import files

npe2 = pytest.importorskip("npe2")

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = importlib.resources.files("omeframe.napari") / "napari.yaml"

# ---- inputs ------------------------------------------------------------------------------

WINDOWS = [(10.0, 2000.0), (0.0, 3000.0)]


def _write_ome_zarr(path: Path, img: np.ndarray, lab: np.ndarray) -> None:
    """A 2-level OME-Zarr 0.4 (zarr v2) with ``omero`` windows and colours and one label image."""
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}]
    axes += [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]

    def multiscales(name: str) -> list[dict[str, Any]]:
        sets = [
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2.0, 0.5 * f, 0.5 * f]}]}
            for k, f in ((0, 1), (1, 2))
        ]
        return [{"version": "0.4", "name": name, "axes": axes, "datasets": sets}]

    def put(group: Any, a: np.ndarray) -> None:
        for k in range(2):
            level = a[..., :: 2**k, :: 2**k]
            group.create_array(str(k), shape=level.shape, dtype=level.dtype, chunks=(1, 1, 1, 32, 32))[...] = level

    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    put(g, img)
    chans = [
        {"label": "DAPI", "color": "0000FF", "window": {"min": 0, "max": 65535, "start": 10, "end": 2000}},
        {"label": "GFP", "color": "00FF00", "window": {"min": 0, "max": 65535, "start": 0, "end": 3000}},
    ]
    g.attrs.update({"multiscales": multiscales("img"), "omero": {"channels": chans}})
    labels = g.require_group("labels")
    labels.attrs.update({"labels": ["cells"]})
    cells = labels.create_group("cells")
    put(cells, lab)
    cells.attrs.update({"multiscales": multiscales("cells"), "image-label": {"version": "0.4"}})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("napari")
    rng = np.random.default_rng(7)
    img = rng.integers(100, 4000, (1, 2, 3, 64, 80)).astype(np.uint16)
    lab = np.zeros((1, 1, 3, 64, 80), np.uint8)
    lab[..., 10:30, 10:40] = 1
    _write_ome_zarr(d / "img.zarr", img, lab)
    of.from_ome_zarr(str(d / "img.zarr"), out=str(d / "img.omeds"), levels="all", labels=True)
    crops = rng.integers(0, 255, (4, 2, 16, 16)).astype(np.uint8)
    of.write_table(d / "crops.parquet", crops, dim_order="CYX")
    mixed = [
        of.from_numpy(crops[0], dim_order="CYX"),
        of.from_numpy(crops[1, :, :8], dim_order="CYX"),
        of.from_numpy((crops[2, 0] > 100).astype(np.uint8), dim_order="YX", image_type="label"),
    ]
    of.write_table(d / "mixed.vortex", mixed)
    return {"dir": d, "img": img, "lab": lab, "crops": crops}


def _by_name(layers: list[Any]) -> dict[str, Any]:
    return {kw["name"] if isinstance(kw["name"], str) else tuple(kw["name"]): (data, kw, kind)
            for data, kw, kind in layers}


# ---- the manifest ----------------------------------------------------------------------------


def test_manifest_validates_and_is_announced() -> None:
    from npe2 import PluginManifest

    mf = PluginManifest.from_file(str(MANIFEST))
    mf.validate_imports()  # what `npe2 validate` checks beyond the schema: the command imports
    assert mf.name == "omeframe"
    (reader,) = mf.contributions.readers or []
    assert reader.accepts_directories and "*.parquet" in reader.filename_patterns
    cmd = next(c for c in mf.contributions.commands or [] if c.id == reader.command)
    assert cmd.python_name == "omeframe.napari.reader:napari_get_reader"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["napari.manifest"] == {"omeframe": "omeframe.napari:napari.yaml"}
    assert {"napari>=0.5", "npe2>=0.7"} <= set(project["optional-dependencies"]["napari"])


def test_get_reader_claims_only_what_omeframe_reads(inputs: dict[str, Any], tmp_path: Path) -> None:
    d = inputs["dir"]
    for name in ("img.zarr", "img.omeds", "crops.parquet", "mixed.vortex"):
        assert napari_get_reader(str(d / name)) is read_layers
    assert napari_get_reader([str(d / "crops.parquet"), str(d / "mixed.vortex")]) is read_layers
    (tmp_path / "notes.txt").write_text("hello")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path)) is None  # a directory of no known format
    assert napari_get_reader(str(tmp_path / "missing.parquet")) is None
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_layers(tmp_path / "missing.parquet")


# ---- layer data per input kind ----------------------------------------------------------------


def test_ome_zarr_layers_use_stored_windows_colours_and_scale(inputs: dict[str, Any]) -> None:
    layers = _by_name(read_layers(inputs["dir"] / "img.zarr"))
    assert set(layers) == {("DAPI", "GFP"), "cells"}
    data, kw, kind = layers[("DAPI", "GFP")]
    assert kind == "image" and kw["channel_axis"] == 1 and kw["multiscale"] is True
    assert [a.shape for a in data] == [(1, 2, 3, 64, 80), (1, 2, 3, 32, 40)]
    assert all(isinstance(a, zarr.Array) for a in data)  # the zarr view: nothing read yet
    assert kw["contrast_limits"] == WINDOWS
    assert kw["colormap"] == ["#0000ff", "#00ff00"]
    assert kw["scale"] == [(1.0, 2.0, 0.5, 0.5)] * 2
    assert kw["units"][0] == ("pixel", "micrometer", "micrometer", "micrometer")
    np.testing.assert_array_equal(data[1][0, 1, 2], inputs["img"][0, 1, 2, ::2, ::2])
    ldata, lkw, lkind = layers["cells"]
    assert lkind == "labels" and lkw["multiscale"] is True and lkw["scale"] == (1.0, 2.0, 0.5, 0.5)
    assert [a.shape for a in ldata] == [(1, 3, 64, 80), (1, 3, 32, 40)]  # TZYX, like the image layers
    np.testing.assert_array_equal(np.asarray(ldata[0][0, 1]), inputs["lab"][0, 0, 1])


def test_dataset_layers_take_limits_from_chunk_statistics(inputs: dict[str, Any]) -> None:
    layers = _by_name(read_layers(inputs["dir"] / "img.omeds"))
    data, kw, kind = layers[("DAPI", "GFP")]
    img = inputs["img"]
    assert [a.shape for a in data] == [(1, 2, 3, 64, 80), (1, 2, 3, 32, 40)]
    # datasets keep no display window: the per-chunk min/max stored for the coarsest level give the range
    coarse = img[..., ::2, ::2]
    assert kw["contrast_limits"] == [(float(coarse[:, c].min()), float(coarse[:, c].max())) for c in range(2)]
    assert kw["colormap"] == ["#0000ff", "#00ff00"] and kw["scale"] == [(1.0, 2.0, 0.5, 0.5)] * 2
    np.testing.assert_array_equal(data[0][0, 0, 1, 8:40, 30:70], img[0, 0, 1, 8:40, 30:70])
    ldata, lkw, lkind = layers["cells"]
    assert lkind == "labels" and lkw["metadata"]["omeframe"]["image_id"] == "img/labels/cells"
    np.testing.assert_array_equal(np.asarray(ldata[1][0, 2]), inputs["lab"][0, 0, 2, ::2, ::2])


def test_uniform_table_is_one_stacked_layer(inputs: dict[str, Any]) -> None:
    (data, kw, kind), = read_layers(inputs["dir"] / "crops.parquet")
    assert kind == "image" and kw["channel_axis"] == 2 and "multiscale" not in kw
    assert data.shape == (4, 1, 2, 1, 16, 16) and data.chunksize == (1, 1, 2, 1, 16, 16)  # one block per row
    assert kw["name"] == ["crops: C0", "crops: C1"]
    assert kw["axis_labels"][0] == ("row", "t", "z", "y", "x")
    assert kw["contrast_limits"] == [(0.0, 255.0)] * 2  # no stored window: the dtype's range
    np.testing.assert_array_equal(data[2, 0, :, 0].compute(), inputs["crops"][2])


def test_mixed_table_is_one_layer_per_row_and_labels(inputs: dict[str, Any]) -> None:
    layers = read_layers(inputs["dir"] / "mixed.vortex")
    assert [(kind, d.shape) for d, _, kind in layers] == [
        ("image", (1, 2, 1, 16, 16)), ("image", (1, 2, 1, 8, 16)), ("labels", (1, 1, 16, 16)),
    ]
    assert [kw["metadata"][0]["omeframe"]["row"] for _, kw, _ in layers[:2]] == [0, 1]
    np.testing.assert_array_equal(layers[1][0][0, :, 0].compute(), inputs["crops"][1, :, :8])
    np.testing.assert_array_equal(layers[2][0][0, 0].compute(), inputs["crops"][2, 0] > 100)


def test_tiff_pyramid_and_computed_levels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yy, xx = np.mgrid[0:300, 0:200]
    img = (xx + 2 * yy).astype(np.uint16)[None, None, None]
    of.to_ome_tiff(img, tmp_path / "pyr.ome.tif", pyramid_levels=2)
    of.to_ome_tiff(img, tmp_path / "flat.ome.tif")
    (data, kw, _), = read_layers(tmp_path / "pyr.ome.tif")
    assert [a.shape[3:] for a in data] == [(300, 200), (150, 100)]  # the stored SubIFD levels
    (flat, kw, _), = read_layers(tmp_path / "flat.ome.tif")
    assert kw["multiscale"] is False and flat.shape == (1, 1, 1, 300, 200)
    assert kw["name"] == ["C0"] and "colormap" not in kw  # no colour stored: napari's default
    # a plane larger than COMPUTE_LEVELS_ABOVE gets 2x levels down to COARSEST_SIDE
    monkeypatch.setattr(nreader, "COMPUTE_LEVELS_ABOVE", 128)
    monkeypatch.setattr(nreader, "COARSEST_SIDE", 64)
    (levels, kw, _), = read_layers(tmp_path / "flat.ome.tif")
    assert kw["multiscale"] is True
    assert [a.shape[3:] for a in levels] == [(300, 200), (150, 100), (75, 50), (37, 25)]
    want = img[0, 0, 0].reshape(150, 2, 100, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(levels[1][0, 0, 0], np.rint(want).astype(np.uint16))


# ---- napari's headless viewer -----------------------------------------------------------------


@pytest.fixture(scope="module")
def viewer_model() -> Any:
    pytest.importorskip("napari")
    from napari.components import ViewerModel

    pm = npe2.PluginManager.instance()
    registered = "omeframe" in pm._manifests
    if not registered:
        pm.register(npe2.PluginManifest.from_file(str(MANIFEST)))
    yield ViewerModel
    if not registered:
        pm.unregister("omeframe")


class _Reads:
    """Bytes and calls of every positional read of omeframe's files (datasets, Parquet)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.nbytes = 0
        self.calls = 0
        real = files.InputFile.read_range

        def counting(inner: files.InputFile, offset: int, length: int) -> bytes:
            data = real(inner, offset, length)
            self.nbytes += len(data)
            self.calls += 1
            return data

        monkeypatch.setattr(files.InputFile, "read_range", counting)


def test_viewer_opens_a_dataset_lazily(viewer_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 60000, (1, 2, 4, 512, 512)).astype(np.uint16)  # noise: chunks barely compress
    path = tmp_path / "big.omeds"
    of.write_dataset(img, path, image_ids=["big"], chunk_shape=(1, 128, 128))
    of.write_dataset(img[..., ::4, ::4].copy(), path, image_ids=["big"], level=1, mode="append",
                     chunk_shape=(1, 128, 128))
    stored = int(sum(of.open_dataset(path).entry("big", 0).lengths))
    reads = _Reads(monkeypatch)
    viewer = viewer_model()
    layers = viewer.open(str(path), plugin="omeframe")
    assert [(layer.name, type(layer).__name__) for layer in layers] == [("C0", "Image"), ("C1", "Image")]
    for layer in layers:
        assert layer.multiscale and [a.shape for a in layer.data] == [(1, 4, 512, 512), (1, 4, 128, 128)]
        assert tuple(layer.scale) == (1.0, 1.0, 1.0, 1.0)
    # napari showed one plane of the coarse level per channel: far less than the image
    assert 0 < reads.nbytes < stored / 8, (reads.nbytes, stored)
    z = int(viewer.dims.current_step[1])
    np.testing.assert_array_equal(np.asarray(layers[1].data[1][0, z]), img[0, 1, z, ::4, ::4])


def test_viewer_opens_a_table_and_labels(
    viewer_model: Any, inputs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows: list[int] = []
    real = nreader._read_row

    def counting(table: Any, row: int) -> np.ndarray:
        rows.append(row)
        return real(table, row)

    monkeypatch.setattr(nreader, "_read_row", counting)
    viewer = viewer_model()
    layers = viewer.open(str(inputs["dir"] / "crops.parquet"), plugin="omeframe")
    assert [layer.name for layer in layers] == ["crops: C0", "crops: C1"]
    assert layers[0].data.shape == (4, 1, 1, 16, 16)
    # only rows napari showed were decoded: the first, then the one the slider moved to
    assert set(rows) <= {0, int(viewer.dims.current_step[0])} and 3 not in rows
    layers = viewer.open(str(inputs["dir"] / "img.zarr"), plugin="omeframe")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Image", "Labels"]
    assert [list(layer.contrast_limits) for layer in layers[:2]] == [list(w) for w in WINDOWS]
    assert tuple(layers[2].scale) == (1.0, 2.0, 0.5, 0.5) and layers[2].multiscale
    assert len(viewer.layers) == 5


def test_unknown_physical_sizes_are_shown_in_pixels(viewer_model: Any, tmp_path: Path) -> None:
    a = np.arange(2 * 3 * 32 * 40, dtype=np.uint16).reshape(1, 2, 3, 32, 40)
    of.write_dataset(a, tmp_path / "u.omeds", image_ids=["u"])  # no physical sizes given: unknown
    (data, kw, kind), = read_layers(tmp_path / "u.omeds")
    assert kw["scale"] == [(1.0, 1.0, 1.0, 1.0)] * 2 and "units" not in kw
    # X and Y known in µm, Z unknown: Z stays in pixels with scale 1
    rec = of.from_numpy(a, dim_order="TCZYX", physical_size_x=0.25, physical_size_y=0.25)
    of.to_ome_zarr(rec, tmp_path / "k.ome.zarr")
    (data, kw, kind), = read_layers(tmp_path / "k.ome.zarr")
    assert kw["scale"] == [(1.0, 1.0, 0.25, 0.25)] * 2
    assert kw["units"] == [("pixel", "pixel", "micrometer", "micrometer")] * 2
    layers = viewer_model().open(str(tmp_path / "u.omeds"), plugin="omeframe")
    assert [str(u) for u in layers[0].units] == ["pixel"] * 4
    layers = viewer_model().open(str(tmp_path / "k.ome.zarr"), plugin="omeframe")
    assert [str(u) for u in layers[0].units] == ["pixel", "pixel", "micrometer", "micrometer"]
    np.testing.assert_array_equal(np.asarray(layers[1].data[0, 2]), a[0, 1, 2])

"""shapes_from_labels against scikit-image regionprops, on every kind of label source."""

from __future__ import annotations

import numpy as np
import pytest

import omeframe as of
from omeframe.shapes import validate_shape_table
from omeframe.shapes.labels import shapes_from_labels

skimage = pytest.importorskip("skimage")
from skimage import data as skdata  # noqa: E402
from skimage.measure import label as cc_label  # noqa: E402
from skimage.measure import regionprops  # noqa: E402


def _check(table, lab: np.ndarray, measure: str = "area") -> None:
    props = regionprops(lab)
    assert table.num_rows == len(props)
    assert table["label_value"].to_pylist() == [p.label for p in props]
    assert table[measure].to_pylist() == [int(p.area) for p in props]
    np.testing.assert_allclose(np.array(table["centroid"].to_pylist()), np.array([p.centroid for p in props]))
    boxes = np.array([b["min"] + b["max"] for b in table["bbox"].to_pylist()])
    np.testing.assert_array_equal(boxes, np.array([p.bbox for p in props]))
    validate_shape_table(table)


@pytest.fixture(scope="module")
def coins_labels() -> np.ndarray:
    return cc_label(skdata.coins() > 110).astype(np.int32)  # a real image, 300+ objects of all sizes


@pytest.mark.parametrize("block_bytes", [3000, 64 << 10, 16 << 20])
def test_real_labels_match_regionprops_for_any_block_size(coins_labels, block_bytes):
    # small blocks cut most objects into pieces: the merge must put them back together
    _check(shapes_from_labels(coins_labels, block_bytes=block_bytes), coins_labels)


def test_synthetic_objects_crossing_chunk_borders_of_a_chunked_record():
    rng = np.random.default_rng(1)
    lab = np.zeros((97, 131), np.uint32)
    for v in rng.permutation(np.arange(1, 41)).tolist():  # label values in random order, not 1..n by position
        y, x = rng.integers(0, 90), rng.integers(0, 120)
        lab[y : y + rng.integers(2, 20), x : x + rng.integers(2, 30)] = v * 1000  # sparse, large values
    lab[0, :] = 7  # one object along the whole first row, across every chunk
    rec = of.from_numpy(lab, dim_order="YX", chunk_shape=(1, 16, 16), image_id="plate-A01-labels")
    t = shapes_from_labels(rec, image_id="plate-A01", block_bytes=1024)
    _check(t, lab.astype(np.int64))
    assert t["object_id"][0].as_py() == "plate-A01:7"
    assert set(t["label_image_id"].to_pylist()) == {"plate-A01-labels"}
    assert t.schema.metadata[b"ome.arrow.shapes"]  # a shape table, ome.boundingbox geometry = bbox
    assert t["geometry"].to_pylist() == t["bbox"].to_pylist()


def test_3d_labels_from_ome_zarr_and_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(2)
    lab = cc_label(rng.random((9, 40, 45)) > 0.75).astype(np.uint16)
    path = of.to_ome_zarr(of.from_numpy(lab, dim_order="ZYX"), tmp_path / "lab.ome.zarr", chunks=(1, 1, 2, 16, 16))
    t = shapes_from_labels(path, block_bytes=2000)
    _check(t, lab, measure="volume")
    assert t.schema.field("centroid").type.value_type == t.schema.field("bbox").type.field("min").type.value_type
    tif = tmp_path / "lab.tif"
    tifffile.imwrite(tif, lab[4], tile=(16, 16))
    _check(shapes_from_labels(tif, block_bytes=700), lab[4])


def test_dataset_label_image(tmp_path, coins_labels):
    ds = of.write_dataset([coins_labels], tmp_path / "ds", image_ids=["A01/labels/cells"], chunk_shape=(1, 64, 64))
    t = shapes_from_labels(ds, label_image_id="A01/labels/cells", image_id="A01", block_bytes=20000)
    _check(t, coins_labels)
    assert t["image_id"][0].as_py() == "A01"


def test_outlines_are_closed_polygons_around_each_object(coins_labels):
    t = shapes_from_labels(coins_labels, outlines=True, block_bytes=20000)
    assert t.schema.field("geometry").type == of.shapes.geometry_storage_type("geoarrow.polygon")
    validate_shape_table(t)  # closed rings, >= 4 points, finite
    rings = [g[0] for g in t["geometry"].to_pylist()]
    boxes = t["bbox"].to_pylist()
    for ring, box in zip(rings, boxes, strict=True):  # the outline runs through the box's edge pixels
        r = np.array(ring)
        np.testing.assert_allclose(r.min(axis=0), np.array(box["min"]), atol=0.5)
        np.testing.assert_allclose(r.max(axis=0), np.array(box["max"]) - 1, atol=0.5)
    # a square's outline encloses about its area
    sq = np.zeros((20, 20), np.uint8)
    sq[5:15, 4:12] = 3
    ring = np.array(shapes_from_labels(sq, outlines=True)["geometry"][0].as_py()[0])
    y, x = ring[:, 0], ring[:, 1]
    assert abs(0.5 * abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) - 80) < 10


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="integer label values"):
        shapes_from_labels(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        shapes_from_labels(np.zeros((4, 4), np.uint8), t=1)
    with pytest.raises(ValueError, match="2-D polygons"):
        shapes_from_labels(np.ones((2, 4, 4), np.uint8), outlines=True)
    with pytest.raises(ValueError, match="2-D"):
        shapes_from_labels(np.zeros((4,), np.uint8))
    empty = shapes_from_labels(np.zeros((8, 8), np.uint8))
    assert empty.num_rows == 0 and "area" in empty.column_names

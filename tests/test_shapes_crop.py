"""crop_objects: windows, masks, chunk reads, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import omeframe as of
from omeframe.engine.source import LazySource
from omeframe.registry import open_source


class Counting(LazySource):
    """A source that records which pieces are decoded."""

    def __init__(self, inner: LazySource) -> None:
        super().__init__()
        self.inner = inner
        self.decoded: list[int] = []

    @property
    def shape(self):
        return self.inner.shape

    @property
    def dtype(self):
        return self.inner.dtype

    def header(self):
        return self.inner.header()

    def _open_pixels(self):
        px = self.inner.pixel_source()

        def decode(i, strict):
            self.decoded.append(int(i))
            return px.decode(i, strict)

        return px.replace(decode=decode, bands=None)


def _image(shape=(2, 3, 1, 96, 128), seed=0):
    return np.random.default_rng(seed).integers(0, 60000, size=shape, dtype=np.uint16)


def _labels():
    lab = np.zeros((96, 128), np.int32)
    lab[10:20, 30:36] = 5     # inside one 32x32 chunk
    lab[28:40, 60:70] = 9     # crosses chunk borders in y and x
    lab[90:96, 0:4] = 11      # at the image corner
    return lab


def test_fixed_size_crops_read_only_touched_chunks_and_match_numpy():
    img = _image()
    rec = of.from_numpy(img, dim_order="TCZYX", chunk_shape=(1, 32, 32), image_id="fov")
    src = Counting(open_source(rec))
    shapes = of.shapes_from_labels(_labels(), image_id="fov")
    out = of.crop_objects(src, shapes, size=12, channels=[0, 2])
    assert out.column_names == ["object_id", "image_id", "ome_arrow"]
    assert out["object_id"].to_pylist() == ["fov:5", "fov:9", "fov:11"]
    padded = np.zeros((2, 3, 1, 96 + 24, 128 + 24), np.uint16)
    padded[..., 12:-12, 12:-12] = img
    for row, (cy, cx) in enumerate([(14.5, 32.5), (33.5, 64.5), (92.5, 1.5)]):
        y0, x0 = int(np.floor(cy + 0.5)) - 6, int(np.floor(cx + 0.5)) - 6
        want = padded[:, [0, 2], :, y0 + 12 : y0 + 24, x0 + 12 : x0 + 24]  # zero outside the image
        np.testing.assert_array_equal(of.to_numpy(out["ome_arrow"][row]), want)
    grid = src.pixel_source()
    touched = set()
    for y0, y1, x0, x1 in [(8, 20, 27, 39), (28, 40, 59, 71), (87, 96, 0, 8)]:
        cy = range(y0 // 32, (y1 - 1) // 32 + 1)
        cx = range(x0 // 32, (x1 - 1) // 32 + 1)
        touched |= {(yy, xx) for yy in cy for xx in cx}
    keys = {(int(o[3]) // 32, int(o[4]) // 32) for o in grid.origins[np.unique(src.decoded)]}
    assert keys == touched  # only chunks under a window (2 T x 2 C of each)
    assert len(np.unique(src.decoded)) == len(touched) * 4


def test_bbox_crops_with_pad_channel_names_and_masks(tmp_path):
    img = _image((1, 2, 1, 96, 128), seed=1)
    lab = _labels()
    rec = of.from_numpy(img, dim_order="TCZYX", chunk_shape=(1, 32, 32), channel_names=["dna", "actin"])
    shapes = of.shapes_from_labels(lab)
    out = of.crop_objects(rec, shapes, pad=3, channels=["actin"], masks=True, labels=lab)
    for row, (v, (y0, y1, x0, x1)) in enumerate([(5, (10, 20, 30, 36)), (9, (28, 40, 60, 70)), (11, (90, 96, 0, 4))]):
        a, b, c, d = max(y0 - 3, 0), min(y1 + 3, 96), max(x0 - 3, 0), min(x1 + 3, 128)
        got = of.to_numpy(out["ome_arrow"][row])
        np.testing.assert_array_equal(got[:, 0], img[:, 1, :, a:b, c:d])
        np.testing.assert_array_equal(got[0, 1, 0], (lab[a:b, c:d] == v).astype(np.uint16))
    written = of.write_table(tmp_path / "crops.parquet", out)
    back = of.read_table(written)
    assert back.column("object_id").to_pylist() == out["object_id"].to_pylist()


def test_masks_from_labelmask_geometry_and_dataset_images(tmp_path):
    img = _image((1, 1, 1, 96, 128), seed=2)
    lab = _labels()
    ds = of.write_dataset([img[0, 0, 0], lab], tmp_path / "ds", image_ids=["A01", "A01/labels/cells"],
                          chunk_shape=(1, 32, 32))
    rows = [{"object_id": f"cell-{v}", "image_id": "A01", "bbox": {"min": b[:2], "max": b[2:]},
             "geometry": {"label_image_id": "A01/labels/cells", "label_value": v}}
            for v, b in [(9, [28.0, 60.0, 40.0, 70.0]), (5, [10.0, 30.0, 20.0, 36.0])]]
    shapes = of.make_shape_table(rows, geometry_encoding="ome.labelmask")
    out = of.crop_objects(ds, shapes, size=(16, 16), masks=True)
    got = of.to_numpy(out["ome_arrow"][0])
    assert got.shape == (1, 2, 1, 16, 16)
    np.testing.assert_array_equal(got[0, 1, 0], (lab[26:42, 57:73] == 9).astype(got.dtype))
    np.testing.assert_array_equal(got[0, 0, 0], img[0, 0, 0, 26:42, 57:73])


def test_3d_shapes_crop_z_too():
    img = _image((1, 1, 10, 40, 40), seed=3)
    lab = np.zeros((10, 40, 40), np.uint8)
    lab[2:5, 10:20, 5:9] = 1
    out = of.crop_objects(img, of.shapes_from_labels(lab))
    np.testing.assert_array_equal(of.to_numpy(out["ome_arrow"][0]), img[:, :, 2:5, 10:20, 5:9])


def test_several_images_by_id_and_bad_objects_raise_or_skip():
    imgs = {"a": _image((1, 1, 1, 50, 50), 4), "b": _image((1, 1, 1, 60, 60), 5)}
    rows = [
        {"object_id": "ok-a", "image_id": "a", "geometry": [[[1.0, 1.0], [1.0, 5.0], [6.0, 5.0], [1.0, 1.0]]]},
        {"object_id": "ok-b", "image_id": "b", "geometry": [[[50.0, 50.0], [50.0, 59.0], [59.0, 59.0], [50.0, 50.0]]]},
        {"object_id": "far", "image_id": "a", "geometry": [[[40.0, 40.0], [40.0, 55.0], [45.0, 55.0], [40.0, 40.0]]],
         "bbox": {"min": [40.0, 40.0], "max": [46.0, 56.0]}},
        {"object_id": "lost", "image_id": "zz", "geometry": [[[1.0, 1.0], [1.0, 5.0], [6.0, 5.0], [1.0, 1.0]]]},
    ]
    shapes = of.make_shape_table(rows, geometry_encoding="geoarrow.polygon")
    with pytest.raises(of.ShapeValidationError, match="'far'.*outside the image") as e:
        of.crop_objects(imgs, shapes)
    assert (e.value.row, e.value.object_id, e.value.field) == (2, "far", "bbox")
    with pytest.raises(of.ShapeValidationError, match="'zz' is not among the images"):
        of.crop_objects(imgs, shapes.slice(3))
    out = of.crop_objects(imgs, shapes, errors="skip")
    assert out["error"].to_pylist()[:2] == [None, None]
    assert "outside" in out["error"][2].as_py() and "not among" in out["error"][3].as_py()
    assert out["ome_arrow"].null_count == 2
    mixed = {"a": imgs["a"], "b": np.zeros((1, 2, 1, 60, 60), np.uint16)}
    with pytest.raises(ValueError, match="differ in T, channel count"):
        of.crop_objects(mixed, shapes.slice(0, 2), size=8)
    # bbox from the polygon's coordinates: [min, ceil(max)) (a float box covers the pixels it touches)
    np.testing.assert_array_equal(of.to_numpy(out["ome_arrow"][0])[0, 0, 0], imgs["a"][0, 0, 0, 1:6, 1:5])
    np.testing.assert_array_equal(of.to_numpy(out["ome_arrow"][1])[0, 0, 0], imgs["b"][0, 0, 0, 50:59, 50:59])


def test_invalid_geometry_and_arguments():
    rows = [{"object_id": "nan", "geometry": [float("nan"), 3.0]}, {"object_id": "p", "geometry": [3.0, 3.0]}]
    shapes = of.make_shape_table(rows, geometry_encoding="geoarrow.point", validate=False)
    img = np.zeros((20, 20), np.uint8)
    with pytest.raises(of.ShapeValidationError, match="NaN") as e:
        of.crop_objects(img, shapes, size=4)
    assert e.value.object_id == "nan"
    out = of.crop_objects(img, shapes, size=4, errors="skip")
    assert out["ome_arrow"][0].as_py() is None and out["ome_arrow"][1].is_valid
    with pytest.raises(ValueError, match="size must be"):
        of.crop_objects(img, shapes, size=(1, 2, 3, 4))
    with pytest.raises(ValueError, match="pad"):
        of.crop_objects(img, shapes, pad=-1)
    with pytest.raises(of.ShapeValidationError, match="label value"):
        of.crop_objects(img, shapes.slice(1), size=4, masks=True)
    with pytest.raises(TypeError, match="shape table"):
        of.crop_objects(img, pa.table({"x": [1]}).to_pylist())

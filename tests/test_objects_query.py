"""Features ⋈ shapes ⋈ images in SQL (ome_crop(img, bbox, pad)) and Polars (.ome.crop_bbox)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import omeframe as of

duckdb = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")
import omeframe.duckdb as ofdb  # noqa: E402
import omeframe.polars  # noqa: E402, F401


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    """A Cell Painting-like plate: 2 wells x 2 sites, 3 channels, a label image per site."""
    root = tmp_path_factory.mktemp("plate")
    rng = np.random.default_rng(7)
    ids, imgs, labs, shapes = [], [], {}, []
    for well in ("A01", "B02"):
        for site in (1, 2):
            iid = f"P1-{well}-s{site}"
            img = rng.integers(0, 4000, size=(3, 64, 64), dtype=np.uint16)
            lab = np.zeros((64, 64), np.int32)
            for v in range(1, 6):
                y, x = rng.integers(0, 52, size=2)
                lab[y : y + rng.integers(4, 12), x : x + rng.integers(4, 12)] = v
            ids.append(iid)
            imgs.append(img)
            labs[iid] = lab
            shapes.append(of.shapes_from_labels(lab, image_id=iid))
    images_path = of.write_table(
        root / "images.parquet", np.stack(imgs), dim_order="CYX", image_ids=ids,
        channel_names=["DNA", "ER", "Mito"],
        columns={"image_id": ids, "well": [i.split("-")[1] for i in ids], "site": [int(i[-1]) for i in ids]},
    )
    shape_table = pa.concat_tables(shapes)
    of.write_shapes(shape_table, root / "shapes.parquet")
    feats = pa.table({
        "object_id": shape_table["object_id"],
        "mean_dna": [float(imgs[ids.index(o.split(":")[0])][0][labs[o.split(":")[0]] == int(o.split(":")[1])].mean())
                     for o in shape_table["object_id"].to_pylist()],
    })
    return root, images_path, dict(zip(ids, imgs, strict=True)), shape_table, feats


def _expected(imgs, shape_table, object_ids, pad):
    rows = {r["object_id"]: r for r in shape_table.to_pylist()}
    out = []
    for oid in object_ids:
        r = rows[oid]
        (y0, x0), (y1, x1) = r["bbox"]["min"], r["bbox"]["max"]
        a, b = max(int(y0) - pad, 0), min(int(y1) + pad, 64)
        c, d = max(int(x0) - pad, 0), min(int(x1) + pad, 64)
        out.append(imgs[r["image_id"]][:, a:b, c:d])
    return out


def test_sql_features_join_shapes_join_images(plate):
    root, images_path, imgs, shape_table, feats = plate
    con = ofdb.connect()
    ofdb.register(con, "images", images_path)
    ofdb.register(con, "shapes", root / "shapes.parquet")   # a shape table registers like any table
    ofdb.register(con, "features", feats)
    res = con.sql(
        """
        SELECT f.object_id, i.well, ome_crop(i.ome_arrow, s.bbox, 3) AS crop
        FROM features f JOIN shapes s USING (object_id) JOIN images i ON i.image_id = s.image_id
        WHERE f.mean_dna > 1900 ORDER BY f.object_id
        """
    ).to_arrow_table()
    want_ids = sorted(o for o, m in zip(feats["object_id"].to_pylist(), feats["mean_dna"].to_pylist(), strict=True)
                      if m > 1900)
    assert res["object_id"].to_pylist() == want_ids and len(want_ids) > 3
    for got, want in zip(res["crop"], _expected(imgs, shape_table, want_ids, 3), strict=True):
        np.testing.assert_array_equal(of.to_numpy(got)[0, :, 0], want)
    # the old x, y, w, h form is unchanged; a wrong arity is named
    sh = con.sql("SELECT ome_shape(ome_crop(ome_arrow, 1, 2, 3, 4)) FROM images LIMIT 1").fetchall()[0][0]
    assert sh == [1, 3, 1, 4, 3]
    with pytest.raises(duckdb.Error, match="ome_crop takes"):
        con.sql("SELECT ome_crop(ome_arrow, 1, 2, 3) FROM images").fetchall()


def test_polars_join_and_crop_bbox(plate):
    root, images_path, imgs, shape_table, feats = plate
    images = pl.read_parquet(images_path)
    shapes = pl.read_parquet(root / "shapes.parquet")
    df = (
        pl.from_arrow(feats)
        .join(shapes, on="object_id")
        .join(images, on="image_id")
        .sort("object_id")
        .select("object_id", pl.col("ome_arrow").ome.crop_bbox(pl.col("bbox"), pad=pl.lit(0)).alias("crop"))
    )
    ids = df["object_id"].to_list()
    for got, want in zip(df["crop"].ome.to_numpy(), _expected(imgs, shape_table, ids, 0), strict=True):
        np.testing.assert_array_equal(got[0, :, 0], want)
    one = images["ome_arrow"].head(1).ome.crop_bbox({"min": [60.0, 60.0], "max": [70.0, 70.0]}, 1)
    assert one.ome.shape().to_list() == [[1, 3, 1, 5, 5]]  # clipped to the image


def test_crop_bbox_kernel_nulls_and_bad_boxes(plate):
    from omeframe.query import kernels

    _, images_path, _, _, _ = plate
    recs = of.read_table(images_path)["ome_arrow"].slice(0, 2)
    boxes = pa.array([{"min": [1.0, 1.0], "max": [5.0, 5.0]}, None])
    out = kernels.crop_bbox(recs, boxes)
    assert out[1].as_py() is None and of.to_numpy(out[0]).shape == (1, 3, 1, 4, 4)
    with pytest.raises(TypeError, match="'min' and 'max'"):
        kernels.crop_bbox(recs, pa.array([{"lo": [1.0]}, {"lo": [1.0]}]))
    with pytest.raises(ValueError, match="pad must be >= 0"):
        kernels.crop_bbox(recs, boxes, -1)

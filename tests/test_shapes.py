"""omeframe.shapes: schemas identical to ome-arrow 0.1.0, validation, Parquet/Vortex IO, interchange."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.model.errors import ShapeValidationError
from omeframe.shapes import (
    GEOMETRY_ENCODINGS,
    geometry_storage_type,
    make_relationship_table,
    make_shape_table,
    read_shapes,
    relationship_schema,
    shape_schema,
    validate_relationship_table,
    validate_shape_table,
    write_shapes,
)

oas = pytest.importorskip("ome_arrow.shapes")

SQUARE = [[0.0, 0.0], [0.0, 4.0], [4.0, 4.0], [4.0, 0.0], [0.0, 0.0]]

GEOMS = {
    "geoarrow.point": [2.0, 3.0],
    "geoarrow.linestring": [[0.0, 0.0], [1.0, 2.0], [3.0, 3.0]],
    "ome.pointcloud": [[0.0, 0.0], [5.0, 5.0]],
    "geoarrow.polygon": [SQUARE],
    "geoarrow.multipolygon": [[SQUARE], [[[c[0] + 10, c[1]] for c in SQUARE]]],
    "ome.boundingbox": {"min": [0.0, 0.0], "max": [4.0, 4.0]},
    "ome.labelmask": {"label_image_id": "labels", "label_value": 7},
    "ome.mesh3d": {"vertices": [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], "faces": [[0, 1, 2]]},
}


def _rows(encoding: str, n: int = 3) -> list[dict]:
    return [
        {
            "object_id": f"cell-{i}", "image_id": "img-a" if i % 2 else "img-b", "label_image_id": "labels",
            "label_value": i + 1, "geometry": GEOMS[encoding], "centroid": [2.0, 2.0 + i],
            "bbox": {"min": [0.0, 0.0], "max": [4.0, 4.0 + i]}, "class": "nucleus" if i else "cell",
            "confidence": 0.5, "area": 16.0 + i,
        }
        for i in range(n)
    ]


def test_encodings_and_schemas_are_the_references():
    assert set(GEOMETRY_ENCODINGS) == set(oas.SUPPORTED_GEOMETRY_ENCODINGS)
    for enc in GEOMETRY_ENCODINGS:
        assert geometry_storage_type(enc) == oas.geometry_storage_type(enc)
        for axes in (("y", "x"), ("z", "y", "x")):
            mine = shape_schema(enc, axes=axes, units=["µm"] * len(axes), coordinate_space="physical")
            ref = oas.shape_schema(enc, axes=axes, units=["µm"] * len(axes), coordinate_space="physical")
            assert mine.equals(ref, check_metadata=True)
    assert relationship_schema().equals(oas.relationship_schema(), check_metadata=True)


@pytest.mark.parametrize("encoding", GEOMETRY_ENCODINGS)
def test_tables_match_the_reference_and_validate(encoding):
    rows = _rows(encoding)
    mine = of.make_shape_table(rows, geometry_encoding=encoding)
    ref = oas.make_shape_table(rows, geometry_encoding=encoding)
    assert mine.equals(ref, check_metadata=True)
    oas.validate_shape_table(mine)
    assert validate_shape_table(ref) is ref


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
@pytest.mark.parametrize("encoding", GEOMETRY_ENCODINGS)
def test_round_trip_projection_and_filters(tmp_path, fmt, encoding):
    t = make_shape_table(_rows(encoding, 6), geometry_encoding=encoding)
    p = write_shapes(t, tmp_path / f"s.{fmt}")
    assert read_shapes(p).equals(t, check_metadata=True)
    got = read_shapes(p, columns=["object_id", "area"], filters=[("class", "==", "nucleus"), ("area", ">", 18.0)])
    assert got.column_names == ["object_id", "area"]
    assert got["object_id"].to_pylist() == ["cell-3", "cell-4", "cell-5"]
    expr = pc.field("image_id") == "img-a"
    assert read_shapes(p, filters=expr)["object_id"].to_pylist() == ["cell-1", "cell-3", "cell-5"]
    assert read_shapes(p, columns=["object_id"]).schema.metadata == t.schema.metadata


@pytest.mark.parametrize("encoding", ["geoarrow.polygon", "ome.boundingbox", "ome.mesh3d"])
def test_parquet_files_interchange_with_ome_arrow(tmp_path, encoding):
    rows = _rows(encoding, 5)
    ours = tmp_path / "ours.parquet"
    write_shapes(make_shape_table(rows, geometry_encoding=encoding), ours)
    peer = oas.read_shape_parquet(str(ours), filters=[("class", "==", "nucleus")])
    assert peer["object_id"].to_pylist() == [f"cell-{i}" for i in range(1, 5)]
    assert oas.OMEArrowShapes(oas.read_shape_parquet(str(ours))).for_image("img-a").table.num_rows == 2

    theirs = tmp_path / "theirs.parquet"
    oas.write_shape_parquet(oas.make_shape_table(rows, geometry_encoding=encoding), str(theirs))
    got = read_shapes(theirs, columns=["object_id", "geometry"])
    assert got["geometry"].to_pylist() == [GEOMS[encoding]] * 5
    assert read_shapes(theirs).equals(read_shapes(ours), check_metadata=True)

    rel_rows = [{"parent_id": "cell-0", "child_id": f"cell-{i}", "relationship_type": "contains", "confidence": 0.9}
                for i in range(1, 4)]
    write_shapes(make_relationship_table(rel_rows), tmp_path / "rel.parquet")
    peer_rel = pq.read_table(tmp_path / "rel.parquet")
    oas.validate_relationship_table(peer_rel)
    oas_rel = oas.make_relationship_table(rel_rows)
    pq.write_table(oas_rel, tmp_path / "rel2.parquet")
    assert read_shapes(tmp_path / "rel2.parquet").equals(oas_rel, check_metadata=True)


def _error(rows, encoding="geoarrow.polygon", **kw) -> ShapeValidationError:
    with pytest.raises(ShapeValidationError) as info:
        make_shape_table(rows, geometry_encoding=encoding, **kw)
    assert isinstance(info.value, ValueError)
    return info.value


def test_invalid_geometries_name_row_and_field():
    good = _rows("geoarrow.polygon", 4)
    unclosed = [dict(r) for r in good]
    unclosed[2]["geometry"] = [SQUARE[:-1]]
    e = _error(unclosed)
    assert (e.row, e.field, e.object_id) == (2, "geometry", "cell-2")
    assert "not closed" in str(e) and "row 2" in str(e) and "cell-2" in str(e)

    arity = [dict(r) for r in good]
    arity[3]["centroid"] = [1.0, 2.0, 3.0]
    e = _error(arity)
    assert (e.row, e.field) == (3, "centroid") and "expected 2" in str(e)

    nan = [dict(r) for r in good]
    nan[1]["geometry"] = [[[0.0, 0.0], [math.nan, 1.0], [1.0, 1.0], [0.0, 0.0]]]
    e = _error(nan)
    assert (e.row, e.field) == (1, "geometry") and "NaN" in str(e)

    short = [dict(r) for r in good]
    short[0]["geometry"] = [[[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]]
    assert _error(short).row == 0

    bbox = [dict(r) for r in good]
    bbox[2]["bbox"] = {"min": [5.0, 0.0], "max": [4.0, 4.0]}
    e = _error(bbox)
    assert (e.row, e.field) == (2, "bbox") and "min > max" in str(e)

    mesh = _rows("ome.mesh3d", 3)
    mesh[1]["geometry"] = {"vertices": [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], "faces": [[0, 1, 5]]}
    e = _error(mesh, "ome.mesh3d")
    assert (e.row, e.field) == (1, "geometry") and "vertex index" in str(e)

    wrong_type = [dict(r) for r in good]
    wrong_type[2]["label_value"] = "seven"
    e = _error(wrong_type)
    assert (e.row, e.field, e.object_id) == (2, "label_value", "cell-2")

    no_id = [dict(r) for r in good]
    no_id[1]["object_id"] = None
    assert (_error(no_id).row, _error(no_id).field) == (1, "object_id")


def test_unknown_encoding_and_bad_metadata():
    with pytest.raises(ShapeValidationError, match="unknown geometry encoding 'geoarrow.circle'"):
        make_shape_table(_rows("geoarrow.point"), geometry_encoding="geoarrow.circle")
    t = make_shape_table(_rows("geoarrow.point"), geometry_encoding="geoarrow.point")
    meta = dict(t.schema.metadata)
    meta[b"ome.arrow.shapes"] = meta[b"ome.arrow.shapes"].replace(b"geoarrow.point", b"geoarrow.blob")
    with pytest.raises(ShapeValidationError, match="geoarrow.blob") as info:
        validate_shape_table(t.replace_schema_metadata(meta))
    assert info.value.field == "geometry_encoding"
    with pytest.raises(ShapeValidationError, match="not an OME-Arrow shape table"):
        validate_shape_table(t.replace_schema_metadata({}))
    with pytest.raises(ShapeValidationError, match="one unit per axis"):
        shape_schema("geoarrow.point", axes=("y", "x"), units=["µm"])
    with pytest.raises(ShapeValidationError, match="is stored as"):
        validate_shape_table(t.set_column(4, pa.field("geometry", pa.list_(pa.float32())),
                                          t["geometry"].cast(pa.list_(pa.float32()))))


def test_errors_skip_adds_an_error_column_and_nulls_bad_values(tmp_path):
    rows = _rows("geoarrow.polygon", 5)
    rows[1]["geometry"] = [SQUARE[:-1]]
    rows[3]["centroid"] = [math.nan, 1.0]
    t = make_shape_table(rows, geometry_encoding="geoarrow.polygon", errors="skip")
    err = t["error"].to_pylist()
    assert [e is None for e in err] == [True, False, True, False, True]
    assert err[1].startswith("geometry:") and "not closed" in err[1]
    assert err[3].startswith("centroid:")
    assert t["geometry"][1].as_py() is None and t["centroid"][3].as_py() is None
    assert t["geometry"][0].as_py() == [SQUARE]
    validate_shape_table(t)  # the bad values are gone: the table is valid
    oas.validate_shape_table(t)
    write_shapes(t, tmp_path / "skipped.parquet")
    assert read_shapes(tmp_path / "skipped.parquet")["error"].to_pylist() == err
    with pytest.raises(ValueError, match="'raise' or 'skip'"):
        validate_shape_table(t, errors="ignore")


def test_relationship_validation():
    rows = [
        {"parent_id": "a", "child_id": "b", "relationship_type": "contains", "confidence": 1.0},
        {"parent_id": "a", "child_id": "c", "relationship_type": "owns"},
        {"parent_id": "c", "child_id": "d", "relationship_type": "track", "confidence": 1.5},
    ]
    with pytest.raises(ShapeValidationError, match="row 1, field 'relationship_type'.*'owns'") as info:
        make_relationship_table(rows)
    assert (info.value.row, info.value.field) == (1, "relationship_type")
    t = make_relationship_table(rows, errors="skip")
    err = t["error"].to_pylist()
    assert err[0] is None and "relationship_type" in err[1] and err[2].startswith("confidence:")
    assert t["confidence"][2].as_py() is None
    with pytest.raises(ShapeValidationError, match="not an OME-Arrow relationship table"):
        validate_relationship_table(t.replace_schema_metadata({}))


def test_writes_are_validated_and_atomic(tmp_path):
    t = make_shape_table(_rows("geoarrow.point"), geometry_encoding="geoarrow.point")
    p = write_shapes(t, tmp_path / "a.parquet")
    before = (tmp_path / "a.parquet").read_bytes()
    bad = make_shape_table(_rows("geoarrow.point"), geometry_encoding="geoarrow.point", validate=False)
    bad = bad.set_column(5, bad.schema.field("centroid"), pa.array([[1.0], [1.0, 2.0], None], pa.list_(pa.float64())))
    for name in ("a.parquet", "b.vortex"):
        with pytest.raises(ShapeValidationError, match="row 0"):
            write_shapes(bad, tmp_path / name)
    assert (tmp_path / "a.parquet").read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.parquet"]  # no temporary files left
    with pytest.raises(ShapeValidationError, match="neither a shape table"):
        write_shapes(pa.table({"x": [1]}), tmp_path / "c.parquet")
    with pytest.raises(FileExistsError):
        write_shapes(t, p, overwrite=False)
    with pytest.raises(ValueError, match="suffix"):
        write_shapes(t, tmp_path / "d.csv")
    with pytest.raises(FileNotFoundError):
        read_shapes(tmp_path / "missing.parquet")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(ShapeValidationError, match="neither a shape table"):
        read_shapes(tmp_path / "plain.parquet")


def test_validation_is_vectorised_over_many_rows():
    n = 50_000
    rng = np.random.default_rng(0)
    pts = rng.random((n, 2)) * 1000
    t = pa.table(
        {
            "object_id": pa.array([str(i) for i in range(n)]),
            "geometry": pa.array(list(pts), pa.list_(pa.float64())),
        }
    )
    schema = shape_schema("geoarrow.point")
    t = pa.Table.from_arrays(
        [t["object_id"] if f.name == "object_id" else t["geometry"] if f.name == "geometry"
         else pa.nulls(n, f.type) for f in schema], schema=schema,
    )
    assert validate_shape_table(t).num_rows == n
    bad = pts.copy()
    bad[n - 7, 1] = np.nan
    t2 = t.set_column(4, schema.field("geometry"), pa.array(list(bad), pa.list_(pa.float64())))
    with pytest.raises(ShapeValidationError) as info:
        validate_shape_table(t2)
    assert info.value.row == n - 7 and info.value.object_id == str(n - 7)


def test_every_flipped_bit_of_a_parquet_shape_table_is_refused_or_harmless(tmp_path):
    """Page CRCs, the footer checks and omeframe's writer key (its stored Arrow schema must be there):
    one flipped bit anywhere gives a CorruptFileError naming the file, or the same table."""
    p = write_shapes(make_shape_table(_rows("geoarrow.polygon", 6), geometry_encoding="geoarrow.polygon"),
                     tmp_path / "s.parquet")
    good = read_shapes(p)
    assert good.schema.metadata.keys() == {b"ome.arrow.shapes"}  # the writer key stays in the file
    data = open(p, "rb").read()
    outcomes = {"same": 0, "refused": 0}
    for i in range(len(data)):
        raw = bytearray(data)
        raw[i] ^= 1
        open(p, "wb").write(bytes(raw))
        try:
            got = read_shapes(p, validate=False)
        except of.CorruptFileError as exc:
            assert p in str(exc)
            outcomes["refused"] += 1
        else:
            assert got.equals(good, check_metadata=True), f"byte {i}: a changed shape table read without an error"
            outcomes["same"] += 1
    assert outcomes["refused"] > len(data) // 2, outcomes


def test_a_filtered_parquet_read_decodes_only_the_row_groups_that_match(tmp_path, monkeypatch):
    """The filter's columns are read first; the geometry of the other row groups is never decoded."""
    from omeframe.storage.parquet_crc import CheckedParquetFile

    rows = [
        dict(r, object_id=f"cell-{i}", image_id=f"img-{i // 10}") for i, r in enumerate(_rows("geoarrow.polygon", 60))
    ]
    t = make_shape_table(rows, geometry_encoding="geoarrow.polygon")
    path = write_shapes(t, tmp_path / "s.parquet", row_group_size=10)
    assert pq.ParquetFile(path).metadata.num_row_groups == 6
    groups: list[list[int]] = []
    read_row_groups = CheckedParquetFile.read_row_groups

    def spy(self, row_groups, columns=None, **kw):  # type: ignore[no-untyped-def]
        groups.append(list(row_groups))
        return read_row_groups(self, row_groups, columns=columns, **kw)

    monkeypatch.setattr(CheckedParquetFile, "read_row_groups", spy)
    for filters, want in (
        ([("image_id", "==", "img-3")], [3]),
        ([[("image_id", "==", "img-1")], [("image_id", "==", "img-4")]], [1, 4]),
        (pc.field("label_value") > 55, [5]),
        ([("image_id", "==", "nowhere")], []),
    ):
        groups.clear()
        got = read_shapes(path, filters=filters)
        assert groups == [want]
        expected = t.filter(filters if isinstance(filters, pc.Expression) else pq.filters_to_expression(filters))
        assert got.equals(expected)
    groups.clear()  # only the filter's own columns asked for: one read of them, no second pass
    assert read_shapes(path, columns=["image_id"], filters=[("image_id", "==", "img-2")]).num_rows == 10
    assert groups == []

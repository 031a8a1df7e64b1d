"""Bad arguments end in a precise error naming them, before anything is written or read wrong:
image ids and levels, per-image labels, channel names, pixel sizes, record fields, column selections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import omeframe
from omeframe.errors import SchemaError, UnitError

A = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)


@pytest.mark.parametrize(("kw", "error", "match"), [
    ({"image_ids": [""]}, ValueError, "image_ids has 1 empty or missing entry"),
    ({"image_ids": [None]}, ValueError, "image_ids has 1 empty or missing entry"),
    ({"image_ids": "x"}, TypeError, "not a string; for one item pass \\['x'\\]"),
    ({"image_ids": ["x"], "level": -1}, ValueError, "level must be a non-negative integer"),
    ({"image_ids": ["x"], "level": True}, ValueError, "level must be a non-negative integer"),
    ({"image_ids": ["x"], "row_group_bytes": 0}, ValueError, "row_group_bytes must be a positive integer"),
])
def test_an_append_with_bad_ids_or_levels_is_refused_and_the_dataset_stays_readable(
        tmp_path: Path, kw: dict, error: type, match: str) -> None:  # type: ignore[type-arg]
    ds = omeframe.write_dataset(A, tmp_path / "d", dim_order="CYX", image_ids=["a"])
    with pytest.raises(error, match=match):
        ds.append([A], dim_order="CYX", **kw)
    again = omeframe.open_dataset(tmp_path / "d")  # it used to commit, and the dataset no longer opened
    assert again.image_ids == ["a"] and again.generation == 1
    with pytest.raises(error, match=match):
        omeframe.write_dataset([A], tmp_path / "new", dim_order="CYX", **({"image_ids": ["x"]} | kw))
    assert not (tmp_path / "new").exists()


def test_per_image_labels_of_record_writers(tmp_path: Path) -> None:
    stack = np.zeros((3, 2, 8, 8), np.uint8)
    with pytest.raises(TypeError, match="image_ids must be a list"):
        omeframe.records_from_arrays(list(stack), dim_order="CYX", image_ids="abc")
    with pytest.raises(ValueError, match="names has 1 empty or missing entry"):
        omeframe.write_table(tmp_path / "t.parquet", stack, dim_order="CYX", names=["a", "", "c"])
    with pytest.raises(TypeError, match="image_ids must hold strings"):
        omeframe.write_table(tmp_path / "t.parquet", stack, dim_order="CYX", image_ids=[1.5, 2.5, 3.5])
    assert not (tmp_path / "t.parquet").exists()
    omeframe.write_table(tmp_path / "t.parquet", stack, dim_order="CYX", image_ids=[7, 8, 9])  # ints: their text
    assert omeframe.read_table(tmp_path / "t.parquet")["ome_arrow"][2]["id"].as_py() == "9"


def test_channel_names_must_name_every_channel() -> None:
    img = np.zeros((1, 2, 1, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="channel_names has 1 entries for 2 channels"):
        omeframe.from_numpy(img, dim_order="TCZYX", channel_names=["a"])
    with pytest.raises(TypeError, match="channel_names must be a list"):
        omeframe.from_numpy(img, dim_order="TCZYX", channel_names="ab")
    rec = omeframe.from_numpy(img, dim_order="TCZYX", channel_names=["dna", "actin"])
    assert [c["name"] for c in rec["pixels_meta"]["channels"].as_py()] == ["dna", "actin"]


@pytest.mark.parametrize(("kw", "error", "match"), [
    ({"physical_size_x": -1.0}, ValueError, "physical_size_x must be a finite number > 0"),
    ({"physical_size_y": float("nan")}, ValueError, "physical_size_y must be a finite number > 0"),
    ({"physical_size_z": 0.0}, ValueError, "physical_size_z must be a finite number > 0"),
    ({"physical_size_x": 0.5, "physical_size_unit": "bogus"}, UnitError, "unit 'bogus' is not a length"),
])
def test_pixel_sizes_are_checked_when_an_image_is_built(tmp_path: Path, kw: dict, error: type,  # type: ignore[type-arg]
                                                        match: str) -> None:
    with pytest.raises(error, match=match):
        omeframe.from_numpy(A, dim_order="CYX", **kw)
    with pytest.raises(error, match=match):
        omeframe.write_table(tmp_path / "t.parquet", A[None], dim_order="CYX", **kw)
    rec = omeframe.from_numpy(A, dim_order="CYX", physical_size_x=0.25, physical_size_unit="pixel")
    assert rec["pixels_meta"]["physical_size_x_unit"].as_py() == "pixel"  # OME's non-physical unit is kept


def test_record_fields_of_to_ome_arrow() -> None:
    plane = [{"z": 0, "t": 0, "c": 0, "pixels": list(range(12))}]
    base = {"size_x": 4, "size_y": 3, "size_z": 1, "size_c": 1, "size_t": 1, "planes": plane, "dtype": "uint16"}
    with pytest.raises(ValueError, match="dimension_order must name axes among X, Y, Z, C and T"):
        omeframe.to_ome_arrow(**base, dimension_order="ABCDE")
    with pytest.raises(ValueError, match="size_x must be a positive integer, got 1.5"):
        omeframe.to_ome_arrow(**(base | {"size_x": 1.5}))
    assert omeframe.to_ome_arrow(**base, dimension_order="XYCT")["pixels_meta"]["size_x"].as_py() == 4


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_column_selections_name_columns_the_table_has(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"t.{fmt}"
    omeframe.write_table(path, np.zeros((3, 2, 8, 8), np.uint8), dim_order="CYX", columns={"label": [1, 2, 3]})
    t = omeframe.open_table(path)
    for call in (lambda c: omeframe.read_table(path, columns=c), lambda c: omeframe.read_table(path, columns=c,
                 rows=[0]), t.read, lambda c: t.take([0], columns=c)):
        with pytest.raises(KeyError, match=r"has no column\(s\) \['nope'\]; its columns: \['ome_arrow', 'label'\]"):
            call(["nope"])
        with pytest.raises(TypeError, match="not a string; pass \\['label'\\]"):
            call("label")
        assert call(["label"]).column_names == ["label"]


def test_chunk_table_columns_and_a_record_column_that_is_not_one(tmp_path: Path) -> None:
    ds = omeframe.write_dataset(A, tmp_path / "d", dim_order="CYX", image_ids=["a"])
    with pytest.raises(KeyError, match=r"chunks table of .* has no column\(s\) \['nope'\]"):
        ds.chunk_table("a", columns=["nope"])
    assert ds.chunk_table("a", columns=["c", "max"]).column_names == ["c", "max"]
    omeframe.write_table(tmp_path / "t.parquet", A[None], dim_order="CYX", columns={"label": [1]})
    with pytest.raises(SchemaError, match="column 'label' .* is not an OME-Arrow struct"):
        omeframe.open_table(tmp_path / "t.parquet", column="label")  # takes never asked: pixels came back


def test_record_header_fields_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="acquisition_datetime must be a datetime.datetime .* got str '2020'"):
        omeframe.from_numpy(A, dim_order="CYX", acquisition_datetime="2020")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="image_type must be a string .* got int 5"):
        omeframe.OMEArrow(A, image_type=5)  # type: ignore[arg-type]
    assert omeframe.verify_ome_arrow(None, omeframe.from_numpy(A, dim_order="CYX").type) is False


def test_to_ome_arrow_planes_and_sizes_checked_before_allocating() -> None:
    from omeframe.errors import PixelPayloadError, ResourceLimitError

    with pytest.raises(ResourceLimitError, match="1x1x1x1x1000000000000 uint16 image of to_ome_arrow"):
        omeframe.to_ome_arrow(size_x=10**12)
    with pytest.raises(PixelPayloadError, match=r"planes\[0\] lacks field\(s\) \['t', 'c', 'pixels'\]"):
        omeframe.to_ome_arrow(planes=[{"z": 0}])
    with pytest.raises(PixelPayloadError, match=r"chunks\[0\] lacks field\(s\)"):
        omeframe.to_ome_arrow(chunks=[{}])


def test_parquet_options_of_record_and_shape_writers(tmp_path: Path) -> None:
    rec = omeframe.from_numpy(A, dim_order="CYX")
    with pytest.raises(ValueError, match="unknown Parquet compression 'bogus'"):
        omeframe.write_table(tmp_path / "t.parquet", A[None], dim_order="CYX", compression="bogus")
    with pytest.raises(TypeError, match="compression must be a Parquet codec name or None, got int"):
        omeframe.to_ome_parquet(rec, tmp_path / "r.parquet", compression=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="file_metadata must be a mapping"):
        omeframe.to_ome_parquet(rec, tmp_path / "r.parquet", file_metadata="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown Parquet compression 'bogus'"):
        omeframe.OMEArrow(rec).export("parquet", out=tmp_path / "e.parquet", parquet_compression="bogus")
    from omeframe.shapes import make_shape_table, write_shapes

    spots = make_shape_table([{"object_id": "a", "geometry": [1.0, 2.0]}], geometry_encoding="geoarrow.point")
    with pytest.raises(ValueError, match="unknown Parquet compression 'bogus'"):
        write_shapes(spots, tmp_path / "s.parquet", compression="bogus")
    assert not list(tmp_path.iterdir())
    omeframe.write_table(tmp_path / "t.parquet", A[None], dim_order="CYX", compression="none")


def test_export_in_memory_refuses_an_output_path(tmp_path: Path) -> None:
    img = omeframe.OMEArrow(omeframe.from_numpy(A, dim_order="CYX"))
    with pytest.raises(ValueError, match="returns the image in memory; out= is for the formats that write files"):
        img.export("numpy", out=tmp_path / "x.npy")
    with pytest.raises(TypeError, match="how must be the name of an export format"):
        img.export(5)  # type: ignore[arg-type]


def test_chunk_indices_and_output_dtypes(tmp_path: Path) -> None:
    from omeframe.errors import DtypeError, RowIndexError

    ds = omeframe.write_dataset(A, tmp_path / "d", dim_order="CYX", image_ids=["a"])
    n = ds.entry("a").n_chunks
    for bad in (-1, n, 1.5, "0", True):
        with pytest.raises(RowIndexError, match=rf"chunk index .* is not in \[0, {n}\)"):
            ds.read_chunk_bytes("a", 0, bad)  # type: ignore[arg-type]
    assert len(ds.read_chunk_bytes("a", 0, n - 1)) > 0
    omeframe.write_table(tmp_path / "t.parquet", A[None], dim_order="CYX")
    t = omeframe.open_table(tmp_path / "t.parquet")
    plan = omeframe.scan(tmp_path / "t.parquet")
    for bad in ("bogus", complex, "U8"):
        with pytest.raises(DtypeError):
            t.to_numpy([0], dtype=bad)
        with pytest.raises(DtypeError):
            plan.export("numpy", dtype=bad)
        with pytest.raises(DtypeError):
            omeframe.to_numpy_stack(t.read()["ome_arrow"], dtype=bad)
    assert t.to_numpy([0], dtype="float16").dtype == np.float16  # any bool, integer or float dtype


def test_plans_planes_and_generations_check_their_arguments(tmp_path: Path) -> None:
    from omeframe.engine.lazy import LazyImage
    from omeframe.errors import SelectionError

    with pytest.raises(ValueError, match=r"chunk_shape must be three positive integers .* got \(1.5, 4, 4\)"):
        omeframe.from_numpy(A, dim_order="CYX", chunk_shape=(1.5, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tcz=\(0, 2, 0\) is outside the image: T=1, C=2, Z=1"):
        omeframe.OMEArrow(A, dim_order="CYX", tcz=(0, 2, 0))
    with pytest.raises(ValueError, match="three non-negative ints"):
        omeframe.OMEArrow(A, dim_order="CYX", tcz=(-1, 0, 0))
    img = omeframe.OMEArrow(A, dim_order="CYX", tcz=(0, 1, 0))
    assert img.select(c=[0]).data is not None  # a derived plan keeps its parent's plane, unchecked
    with pytest.raises(TypeError, match="LazyImage plans over a LazySource, got NoneType"):
        LazyImage(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ingest_source reads a LazySource, got ndarray"):
        omeframe.ingest_source(A)  # type: ignore[arg-type]
    with pytest.raises(SelectionError, match="it has no such element"):
        omeframe.scan(A, dim_order="CYX")._lazy()[:, -3]
    omeframe.write_dataset(A, tmp_path / "d", dim_order="CYX", image_ids=["a"])
    for bad in (True, "1", 1.5, 0):
        with pytest.raises(ValueError, match="generation must be an integer >= 1"):
            omeframe.Dataset(tmp_path / "d", generation=bad)  # type: ignore[arg-type]
    assert omeframe.Dataset(tmp_path / "d", generation=1).generation == 1


def test_leftover_arguments_of_writers_readers_and_loaders(tmp_path: Path) -> None:
    from omeframe.errors import SchemaError as Schema
    from omeframe.shapes import make_shape_table, read_shapes, write_shapes

    with pytest.raises(ValueError, match=r"tile must be \(height, width\) with multiples of 16, got \(16,\)"):
        omeframe.to_ome_tiff(A[None, :, None], tmp_path / "a.tif", tile=(16,))
    with pytest.raises(ValueError, match="tile must be .* got 16"):
        omeframe.to_ome_tiff(A[None, :, None], tmp_path / "a.tif", tile=16)  # type: ignore[arg-type]
    omeframe.to_ome_tiff(A[None, :, None], tmp_path / "a.tif")
    with pytest.raises(Schema, match="is not a zarr store"):
        omeframe.load_zarrs(str(tmp_path / "a.tif"), "CYX")
    spots = make_shape_table([{"object_id": "a", "class": "x", "geometry": [1.0, 2.0]}],
                             geometry_encoding="geoarrow.point")
    p = write_shapes(spots, tmp_path / "s.parquet")
    with pytest.raises(KeyError, match=r"has no column\(s\) \['nope'\]"):
        read_shapes(p, columns=["nope"])
    with pytest.raises(KeyError, match=r"filters name column\(s\) \['nope'\]"):
        read_shapes(p, filters=[("nope", "==", 1)])
    assert read_shapes(p, columns=["object_id"], filters=[("class", "==", "x")]).num_rows == 1
    with pytest.raises(ValueError, match="row_group_bytes must be a positive integer .* got 'a'"):
        omeframe.write_table(tmp_path / "t.parquet", A[None], dim_order="CYX", row_group_bytes="a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="thumbnail size must be a positive integer"):
        omeframe.thumbnail_png(A, size="a")  # type: ignore[arg-type]
    ds = omeframe.write_dataset(A, tmp_path / "d", dim_order="CYX", image_ids=["a"])
    with pytest.raises(ValueError, match="grace_seconds must be a non-negative number"):
        ds.gc(grace_seconds="x")  # type: ignore[arg-type]


def test_huge_requests_are_refused_before_allocating(tmp_path: Path) -> None:
    from omeframe.errors import ResourceLimitError

    img = np.zeros((64, 64), np.uint16)
    lab = np.zeros((64, 64), np.uint8)
    lab[10:20, 30:36] = 1
    with pytest.raises(ResourceLimitError, match="1 crops of size 1000000"):
        omeframe.crop_objects(img, omeframe.shapes_from_labels(lab), size=10**6)
    rec = omeframe.from_numpy(img, dim_order="YX", physical_size_x=0.5, physical_size_y=0.5)
    with pytest.raises(ResourceLimitError, match="the chunk grid"):
        omeframe.scan(rec).at_resolution(1e-9).export("numpy")


def test_patch_datasets_refuse_a_huge_patch_count(tmp_path: Path, torch: object) -> None:
    from omeframe.errors import ResourceLimitError
    from omeframe.torch import DatasetPatchDataset

    omeframe.write_dataset(np.zeros((64, 64), np.uint8), tmp_path / "d", dim_order="YX", image_ids=["a"])
    with pytest.raises(ResourceLimitError, match="n_patches=1000000000000"):
        DatasetPatchDataset(tmp_path / "d", patch_shape=(8, 8), n_patches=10**12)

"""Bad arguments are refused up front with errors that name them (tables, datasets, TIFF, threads).

Each test names the argument it misuses; before the check it covers, every
one raised Python's or a library's own error (``unhashable type``, ``'NoneType'
object is not iterable``, an ``IsADirectoryError`` naming a temporary file),
was accepted (``level="0"``, ``set_num_threads(True)``, ``pyramid_levels=1.5``)
or reported the wrong value (``downscale=1.5`` as "got 1").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import omeframe as of
from omeframe.engine import threads


@pytest.fixture
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (5, 3, 16, 16), dtype=np.uint8)


@pytest.fixture
def dataset(tmp_path: Path) -> of.Dataset:
    return of.write_dataset([np.zeros((32, 32), np.uint16)], tmp_path / "ds", image_ids=["a"])


@pytest.mark.parametrize("suffix", [".parquet", ".vortex"])
def test_no_rows_give_an_empty_stack_in_either_format(tmp_path, crops, suffix):
    t = of.open_table(of.write_table(tmp_path / f"t{suffix}", crops, dim_order="CYX"))
    empty = t.to_numpy([])
    assert empty.shape == (0, 3, 16, 16) and empty.dtype == np.uint8
    assert t.to_numpy([], dims="YXC", dtype="float32").shape == (0, 16, 16, 3)


def test_dataset_entries_take_a_string_id_and_an_integer_level(dataset):
    with pytest.raises(TypeError, match=r"image_id must be a string .*\['a'\]"):
        dataset.entry(["a"])
    with pytest.raises(TypeError, match="level must be an integer"):
        dataset.read("a", level="0")
    with pytest.raises(TypeError, match="level must be an integer"):
        dataset.read("a", level=True)
    assert dataset.read("a", level=np.int64(0)).shape[-2:] == (32, 32)


def test_integer_image_ids_read_as_the_strings_they_were_stored_as(tmp_path):
    ds = of.write_dataset([np.ones((8, 8), np.uint8)], tmp_path / "ds", image_ids=[7])
    assert ds.image_ids == ["7"]
    assert ds.read(7).sum() == 64


def test_a_dict_of_images_is_not_taken_for_a_record(tmp_path):
    with pytest.raises(TypeError, match=r"image_ids=.*list\(d\)"):
        of.write_dataset({"b": np.zeros((8, 8), np.uint8)}, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_batches_of_records_must_be_records():
    with pytest.raises(TypeError, match="records must be OME-Arrow records.*got NoneType"):
        of.to_numpy_batch(None)
    with pytest.raises(TypeError, match="got str"):
        of.to_numpy_batch("ome_arrow")
    with pytest.raises(TypeError, match=r"images must be a numpy stack .*got NoneType"):
        of.records_from_arrays(None)


def test_writing_no_images_says_so(tmp_path):
    for empty in ([], ()):
        with pytest.raises(ValueError, match="no images to write"):
            of.write_table(tmp_path / "e.parquet", empty, dim_order="CYX")
    assert not (tmp_path / "e.parquet").exists()


@pytest.mark.parametrize("bad", [5, ["image"], b"image"])
def test_column_names_are_strings(tmp_path, crops, bad):
    path = tmp_path / "t.parquet"
    with pytest.raises(TypeError, match="column_name must be the name of a column"):
        of.write_table(path, crops, dim_order="CYX", column_name=bad)
    of.write_table(path, crops, dim_order="CYX")
    with pytest.raises(TypeError, match="column_name must be the name of a column"):
        of.from_ome_parquet(path, column_name=bad)
    with pytest.raises(TypeError, match="column must be the name of a column"):
        of.open_table(path, column=bad)
    with pytest.raises(TypeError, match="column_name must be the name of a column"):
        of.to_ome_parquet(of.from_numpy(crops[0], dim_order="CYX"), tmp_path / "one.parquet", column_name=bad)
    with pytest.raises(ValueError, match="must not be empty"):
        of.write_table(tmp_path / "u.parquet", crops, dim_order="CYX", column_name="")
    from omeframe.formats.record.writer import write_record_batches

    with pytest.raises(TypeError, match="column_name must be the name of a column"):
        write_record_batches(tmp_path / "w.parquet", iter([of.read_table(path)]), column_name=bad)
    assert not (tmp_path / "w.parquet").exists()


def test_writing_a_record_over_a_directory_names_the_directory(tmp_path):
    rec = of.from_numpy(np.zeros((8, 8), np.uint8), dim_order="YX")
    with pytest.raises(IsADirectoryError, match=f"cannot write '{tmp_path}': it is a directory"):
        of.to_ome_parquet(rec, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary left behind


def test_tiff_series_and_level_are_integers(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match="series must be an integer"):
        of.from_tiff(path, series="0")
    with pytest.raises(TypeError, match="series must be an integer"):
        of.from_tiff(path, series=0.0)
    assert of.from_tiff(path, series=np.int32(0))["pixels_meta"]["size_x"].as_py() == 8


@pytest.mark.parametrize(("kw", "msg"), [
    ({"pyramid_levels": 1.5}, "pyramid_levels must be an integer >= 1, got 1.5"),
    ({"pyramid_levels": 2, "downscale": 1.5}, "downscale must be an integer >= 2, got 1.5"),
    ({"pyramid_levels": 2, "downscale": True}, "downscale must be an integer >= 2, got True"),
])
def test_ome_tiff_pyramids_take_integer_counts(tmp_path, kw, msg):
    out = tmp_path / "o.ome.tif"
    with pytest.raises(ValueError, match=msg):
        of.to_ome_tiff(np.zeros((64, 64), np.uint8), out, **kw)
    assert not out.exists()


def test_thread_counts_are_integers_not_booleans():
    before = threads.num_threads()
    for bad in (True, 1.5, "2", 0):
        with pytest.raises(ValueError, match="set_num_threads expects an integer >= 1"):
            of.set_num_threads(bad)
    assert threads.num_threads() == before
    of.set_num_threads(np.int64(before))
    assert threads.num_threads() == before and isinstance(threads.num_threads(), int)


@pytest.mark.parametrize(("kw", "error", "msg"), [
    ({"size": 1.5}, TypeError, "size must be an integer or a tuple of integers"),
    ({"size": (8, 8.5)}, TypeError, "size must be an integer or a tuple of integers"),
    ({"size": True}, TypeError, "size must be an integer or a tuple of integers"),
    ({"pad": 1.5}, ValueError, "pad must be an integer >= 0"),
    ({"pad": -1}, ValueError, "pad must be an integer >= 0"),
    ({"column_name": 5}, TypeError, "column_name must be the name of a column"),
])
def test_crops_by_object_take_integer_sizes_and_a_column_name(kw, error, msg):
    img = np.zeros((64, 64), np.uint16)
    lab = np.zeros((64, 64), np.int32)
    lab[10:20, 10:20] = 1
    with pytest.raises(error, match=msg):
        of.crop_objects(img, of.shapes_from_labels(lab), **kw)
    assert of.crop_objects(img, of.shapes_from_labels(lab), size=(8, np.int64(8)), pad=np.int32(1)).num_rows == 1


def test_an_image_stack_wraps_a_lazy_source_not_an_array():
    with pytest.raises(TypeError, match=r"ImageStack wraps a LazySource .* got ndarray; .*load_arrays"):
        of.ImageStack(np.zeros((2, 4, 4), np.uint8), origin="a", axes="CYX", kind="array")
    (stack,) = of.load_arrays(np.zeros((2, 4, 4), np.uint8), "CYX")
    again = of.ImageStack(stack.source, origin="a", axes="CYX", kind="array")
    assert again.to_numpy().shape == (2, 4, 4)

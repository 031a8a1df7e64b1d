"""``to_dask`` arrays and ``omeframe.dask.read_table`` on dask's local schedulers (no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import omeframe
from omeframe.engine.dask_array import block_grid
from omeframe.storage import files

da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 4000, (2, 2, 5, 70, 90), dtype=np.uint16)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> omeframe.Dataset:
    path = tmp_path_factory.mktemp("dask") / "ds"
    return omeframe.write_dataset(image, path, image_ids=["a"], chunk_shape=(2, 32, 32))


def test_dataset_to_dask_aligns_with_stored_chunks(dataset: omeframe.Dataset, image: np.ndarray) -> None:
    arr = dataset.to_dask("a", block_bytes=None)  # one block per stored chunk
    assert arr.shape == image.shape and arr.dtype == image.dtype
    assert arr.chunks == ((1, 1), (1, 1), (2, 2, 1), (32, 32, 6), (32, 32, 26))
    np.testing.assert_array_equal(arr.compute(scheduler="sync"), image)
    assert dataset.to_dask("a", block_bytes=None).name == arr.name  # deterministic: same files, same name
    merged = dataset.to_dask("a")  # by default chunks merge into blocks of up to 16 MiB
    assert merged.chunks == ((1, 1), (1, 1), (2, 2, 1), (70,), (90,))
    np.testing.assert_array_equal(merged.compute(scheduler="sync"), image)


def test_block_bytes_merges_neighbouring_chunks_along_their_edges(
    dataset: omeframe.Dataset, image: np.ndarray
) -> None:
    chunk = 2 * 32 * 32 * 2  # bytes of one stored chunk
    arr = dataset.to_dask("a", block_bytes=4 * chunk)  # a 3 x 3 grid, up to 4 chunks per block
    assert arr.chunks[3:] == ((32, 32, 6), (90,))  # 3 blocks of a row of 3 (fewest), not 4 of 2 x 2
    assert arr.chunks[2] == (2, 2, 1)
    six = dataset.to_dask("a", block_bytes=6 * chunk)  # 2 blocks of 3 x 2 chunks, still cut at stored edges
    assert six.chunks[3:] == ((70,), (64, 26))
    np.testing.assert_array_equal(six.compute(scheduler="sync"), image)
    np.testing.assert_array_equal(arr.compute(scheduler="sync"), image)
    assert arr.name != dataset.to_dask("a", block_bytes=None).name
    assert dataset.to_dask("a", block_bytes=1).chunks == dataset.to_dask("a", block_bytes=None).chunks  # one chunk
    with pytest.raises(ValueError, match="block_bytes must be a positive"):
        dataset.to_dask("a", block_bytes=0)


def test_blockwise_steps_fuse_into_the_reading_task(dataset: omeframe.Dataset, image: np.ndarray) -> None:
    import dask

    arr = dataset.to_dask("a", block_bytes=None)
    per_chunk = arr.map_blocks(lambda b: b.max(keepdims=True), chunks=(1, 1, 1, 1, 1), dtype=arr.dtype) + 1
    (optimized,) = dask.optimize(per_chunk)
    # one task per chunk: read, max and + 1 run in one task (no separate read tasks, no aliases)
    assert len(dict(optimized.__dask_graph__())) == per_chunk.npartitions == arr.npartitions
    want = np.zeros(per_chunk.shape, image.dtype)
    for idx, (t, c, z, y, x) in block_grid(dataset.scan("a")._plan).blocks():
        want[idx] = image[t, c, z[0] : z[1], y[0] : y[1], x[0] : x[1]].max() + 1
    np.testing.assert_array_equal(per_chunk.compute(scheduler="sync"), want)


def test_block_bytes_groups_chunks_evenly(tmp_path: Path) -> None:
    img = np.arange(4 * 64, dtype=np.uint16).reshape(1, 1, 1, 4, 64)
    ds = omeframe.write_dataset(img, tmp_path / "row.ds", image_ids=["r"], chunk_shape=(1, 4, 4))  # 16 chunks in X
    arr = ds.to_dask("r", block_bytes=5 * 4 * 4 * 2)  # at most 5 chunks per block
    assert arr.chunks[4] == (16, 16, 16, 16)  # 4 blocks of 4 chunks, not 5 + 5 + 5 + 1
    np.testing.assert_array_equal(arr.compute(scheduler="sync"), img)
    assert ds.to_dask("r", block_bytes=6 * 4 * 4 * 2).chunks[4] == (24, 20, 20)  # 6 + 5 + 5 chunks


def test_each_task_reads_one_byte_range(
    dataset: omeframe.Dataset, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = dataset.scan("a").select(t=[1], z=[4, 0, 1], y=(10, 70), x=(30, 90))
    arr = plan.to_dask(block_bytes=None)
    assert arr.chunks == ((1,), (1, 1), (1, 2), (22, 32, 6), (2, 32, 26))
    reads: list[tuple[int, int]] = []
    real = files.InputFile.read_range

    def counting(self: Any, offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return real(self, offset, length)

    monkeypatch.setattr(files.InputFile, "read_range", counting)
    got = arr.compute(scheduler="sync")
    np.testing.assert_array_equal(got, image[1:2, :, [4, 0, 1], 10:70, 30:90])
    n_blocks = int(np.prod([len(c) for c in arr.chunks]))
    assert len(reads) == n_blocks  # one positional read per task
    entry = dataset.entry("a", 0)
    stored = {(int(o), int(n)) for o, n in zip(entry.offsets, entry.lengths, strict=True)}
    assert set(reads) <= stored  # each read is exactly one chunk's byte range


def test_to_dask_keeps_filters_and_dtype(dataset: omeframe.Dataset, image: np.ndarray) -> None:
    plan = dataset.scan("a").filter_chunks(omeframe.chunk.max > 3990)._plan.with_dtype(np.float32)
    arr = plan.to_dask()
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr.compute(scheduler="threads"), plan.execute())


@pytest.mark.parametrize("kind", ["tiff", "zarr", "array"])
def test_other_sources_align_with_their_pieces(tmp_path: Path, image: np.ndarray, kind: str) -> None:
    if kind == "tiff":
        omeframe.to_ome_tiff(image, tmp_path / "x.ome.tif", tile=(32, 32))
        plan = omeframe.scan(tmp_path / "x.ome.tif")._plan
    elif kind == "zarr":
        omeframe.to_ome_zarr(image, tmp_path / "x.ome.zarr", chunks=(1, 1, 1, 48, 48))
        plan = omeframe.scan(tmp_path / "x.ome.zarr")._plan
    else:
        plan = omeframe.scan(image)._plan
    arr = plan.select(y=(3, 70)).to_dask()
    pieces = plan.source.pixel_source()
    # every block lies inside one piece of the source
    o, e = pieces.origins, pieces.extents
    for _, (t, c, z, y, x) in block_grid(plan.select(y=(3, 70))).blocks():
        inside = (
            (o[:, 0] == t) & (o[:, 1] == c) & (o[:, 2] <= z[0]) & (o[:, 2] + e[:, 0] >= z[1])
            & (o[:, 3] <= y[0] + 3) & (o[:, 3] + e[:, 1] >= y[1] + 3) & (o[:, 4] <= x[0]) & (o[:, 4] + e[:, 2] >= x[1])
        )
        assert inside.sum() == 1
    np.testing.assert_array_equal(arr.compute(scheduler="sync"), image[..., 3:70, :])


def _records(n: int, start: int = 0) -> list[Any]:
    return [omeframe.from_numpy(np.full((2, 20, 30), i, np.uint16), dim_order="CYX") for i in range(start, start + n)]


def test_read_table_partitions_by_row_group_and_runs_kernels(tmp_path: Path) -> None:
    import omeframe.dask as ofd

    omeframe.write_table(tmp_path / "t.parquet", _records(7), row_group_bytes=2000)
    ddf = ofd.read_table(tmp_path / "t.parquet")
    import pyarrow.parquet as pq

    assert ddf.npartitions == pq.ParquetFile(tmp_path / "t.parquet").metadata.num_row_groups > 1
    means = ddf.map_partitions(
        lambda p: ofd.stats(p["ome_arrow"], c=0).struct.field("mean"), meta=("mean", "float64[pyarrow]")
    )
    assert means.compute(scheduler="sync").tolist() == [float(i) for i in range(7)]
    shapes = ddf["ome_arrow"].map_partitions(lambda s: s.ome.shape(), meta=("shape", object))
    assert [list(s) for s in shapes.compute(scheduler="sync")] == [[1, 2, 1, 20, 30]] * 7
    crops = ddf.map_partitions(lambda p: ofd.shape(ofd.crop(p["ome_arrow"], 2, 3, 5, 4)), meta=("shape", object))
    assert [list(s) for s in crops.compute(scheduler="sync")] == [[1, 2, 1, 4, 5]] * 7
    first = ofd.read_partition(ofd.partitions(tmp_path / "t.parquet")[0])
    pixels = first["ome_arrow"].ome.to_numpy()
    assert pixels[0].shape == (1, 2, 1, 20, 30) and int(pixels[-1].max()) == len(pixels) - 1


def test_read_table_of_a_folder_is_one_partition_per_file(tmp_path: Path) -> None:
    import omeframe.dask as ofd

    for k in range(3):
        omeframe.write_table(tmp_path / f"part-{k}.parquet", _records(2, 2 * k))
    (tmp_path / "notes.txt").write_text("not a table")
    ddf = ofd.read_table(tmp_path, columns=["ome_arrow"])
    assert ddf.npartitions == 3 and list(ddf.columns) == ["ome_arrow"]
    dims = ddf["ome_arrow"].map_partitions(lambda s: ofd.dtype(s), meta=("dtype", "string[pyarrow]"))
    assert dims.compute(scheduler="sync").tolist() == ["uint16"] * 6
    with pytest.raises(ValueError, match="not in the table"):
        ofd.read_table(tmp_path, columns=["nope"])
    with pytest.raises(FileNotFoundError, match="no record table files"):
        ofd.read_table(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        ofd.read_table(tmp_path / "missing.parquet")

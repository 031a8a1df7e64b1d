"""Plans, sources, datasets, tables and tensor views pickle as what they were opened from.

A copy made in another process (spawn: nothing inherited) reopens its files
from their paths and reads the same pixels; file-backed objects never carry
their pixels through the pickle.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import omeframe
from omeframe.engine.lazy import LazyImage
from omeframe.engine.reopen import clear_reopened, file_stamp, reopen, set_recipe
from omeframe.formats.dataset.source import DatasetSource


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pickle")
    a = (np.arange(2 * 3 * 40 * 50) % 251).astype(np.uint16).reshape(1, 2, 3, 40, 50)
    omeframe.write_dataset(a, d / "ds", image_ids=["a"], chunk_shape=(1, 16, 16))
    omeframe.to_ome_tiff(a, d / "x.ome.tif")
    omeframe.to_ome_zarr(a, d / "x.ome.zarr")
    omeframe.write_table(d / "t.parquet", [omeframe.from_numpy(a)])
    np.save(d / "a.npy", a[0, 0])
    return {"dir": d, "array": a}


def _roundtrip(obj: Any) -> Any:
    clear_reopened()  # a fresh copy, as another process would open it
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("name", ["ds", "x.ome.tif", "x.ome.zarr", "t.parquet", "a.npy"])
def test_scanned_plans_pickle_as_paths(files: dict[str, Any], name: str) -> None:
    path = files["dir"] / name
    plan = omeframe.scan(path).select(z=[2, 0], y=(3, 30), x=(7, 41))
    want = plan.export("numpy")
    blob = pickle.dumps(plan)
    # the pickle carries the path, never the pixels
    assert str(path).encode() in blob
    assert len(blob) < want.nbytes
    copy = _roundtrip(plan)
    np.testing.assert_array_equal(copy.export("numpy"), want)
    lazy = plan._plan
    assert isinstance(lazy, LazyImage)
    np.testing.assert_array_equal(_roundtrip(lazy).execute(), want)


def test_dataset_and_source_pickle_with_their_generation(files: dict[str, Any], tmp_path: Path) -> None:
    a = files["array"]
    ds = omeframe.write_dataset(a, tmp_path / "ds", image_ids=["a"], chunk_shape=(1, 16, 16))
    src = DatasetSource(ds, "a")
    blob_ds, blob_src = pickle.dumps(ds), pickle.dumps(src)
    ds.append(a + 1, image_ids=["b"])  # a new generation while the pickles are in flight
    clear_reopened()
    copy = pickle.loads(blob_ds)
    assert type(copy) is omeframe.Dataset and copy.generation == ds.generation
    assert copy.image_ids == ["a"]  # the generation it was pickled at, not the newest
    np.testing.assert_array_equal(LazyImage(pickle.loads(blob_src)).execute(), a)
    assert pickle.loads(pickle.dumps(omeframe.open_dataset(tmp_path / "ds"))).image_ids == ["a", "b"]


def test_filters_in_plans_pickle(files: dict[str, Any]) -> None:
    ds = omeframe.open_dataset(files["dir"] / "ds")
    pred = ~((omeframe.chunk.max > 100) & (omeframe.chunk.min < 5)) | (omeframe.chunk.mean >= 3.5)
    plan = ds.scan("a").filter_chunks(pred)
    copy = _roundtrip(plan)
    assert copy._plan.predicate.text == pred.text
    np.testing.assert_array_equal(copy.export("numpy"), plan.export("numpy"))
    assert copy._plan.info().chunks_skipped == plan._plan.info().chunks_skipped


def test_in_memory_sources_pickle_by_value() -> None:
    arr = np.arange(3 * 20 * 30, dtype=np.float32).reshape(3, 20, 30)
    plan = omeframe.scan(arr, dim_order="ZYX").select(z=[1])
    np.testing.assert_array_equal(_roundtrip(plan).export("numpy")[0, 0, 0], arr[1])
    rec = omeframe.OMEArrow(arr[0])
    np.testing.assert_array_equal(_roundtrip(rec).export("numpy")[0, 0, 0], arr[0])


def test_tensor_views_pickle_without_their_pixels(files: dict[str, Any]) -> None:
    path = files["dir"] / "ds"
    lazy = omeframe.scan(path).tensor_view(z=1, roi=(5, 6, 20, 10), layout="CYX")
    eager = lazy.collect()
    want = eager.to_numpy()
    blob = pickle.dumps(eager)
    assert len(blob) < want.nbytes  # the read pixels stay behind
    for view in (lazy, eager):
        copy = _roundtrip(view)
        assert copy.shape == want.shape and copy.layout == "CYX"
        np.testing.assert_array_equal(copy.to_numpy(), want)


def test_image_table_pickles(files: dict[str, Any]) -> None:
    table = omeframe.ImageTable(files["dir"] / "t.parquet")
    copy = _roundtrip(table)
    np.testing.assert_array_equal(copy.to_numpy([0], dims="CZYX"), table.to_numpy([0], dims="CZYX"))


def test_reopen_reuses_until_the_file_changes(tmp_path: Path) -> None:
    p = tmp_path / "a.npy"
    np.save(p, np.zeros((4, 4), np.uint8))
    clear_reopened()
    plan = omeframe.scan(p)
    blob = pickle.dumps(plan._plan.source)
    assert pickle.loads(blob) is pickle.loads(blob)  # opened once per process
    np.save(p, np.ones((4, 5), np.uint8))  # rewritten in place: a new stamp
    assert omeframe.scan(p).shape[-1] == 5
    assert pickle.loads(pickle.dumps(omeframe.scan(p)._plan.source)).shape[-1] == 5
    assert file_stamp(tmp_path / "missing") is None


@pytest.mark.parametrize("name", ["x.ome.tif", "a.npy"])
def test_a_plan_refuses_to_reopen_a_file_replaced_since_it_was_made(tmp_path: Path, name: str) -> None:
    """A worker must not mix pixels of another file (of the same shape) into a plan made from the old one."""
    a = (np.arange(3 * 40 * 50) % 251).astype(np.uint16).reshape(1, 1, 3, 40, 50)
    p = tmp_path / name

    def write(img: np.ndarray) -> None:
        if name.endswith(".npy"):
            np.save(p, img[0, 0])
        else:
            omeframe.to_ome_tiff(img, p, overwrite=True)

    write(a)
    blob = pickle.dumps(omeframe.scan(p).select(y=(0, 8)))
    np.testing.assert_array_equal(_roundtrip(pickle.loads(blob)).export("numpy"), a[:, :, :, :8])
    time.sleep(0.02)  # past the file system's timestamp granularity
    write(a[..., ::-1, :].copy())  # the same shape and type, other pixels
    clear_reopened()
    with pytest.raises(omeframe.FileChangedError, match="make the plan again") as err:
        pickle.loads(blob)
    assert err.value.filename == str(p)


def test_reopen_failure_is_not_cached(tmp_path: Path) -> None:
    clear_reopened()
    with pytest.raises(FileNotFoundError):
        reopen(omeframe.open_dataset, (str(tmp_path / "nope"),))
    (tmp_path / "later").mkdir()
    omeframe.write_dataset(np.zeros((8, 8), np.uint8), tmp_path / "nope", image_ids=["z"])
    assert reopen(omeframe.open_dataset, (str(tmp_path / "nope"),)).image_ids == ["z"]
    with pytest.raises(TypeError, match="reopen recipe"):
        set_recipe(3, omeframe.open_dataset, ("x",))


def _child_read(blob: bytes, queue: Any) -> None:
    obj = pickle.loads(blob)
    out = obj.export("numpy") if hasattr(obj, "export") else obj.to_numpy()
    queue.put(out)


def test_spawned_process_reopens_and_reads(files: dict[str, Any]) -> None:
    plan = omeframe.scan(files["dir"] / "ds").select(c=[1], y=(10, 33))
    view = omeframe.scan(files["dir"] / "x.ome.tif").tensor_view(c=0, layout="ZYX")
    ctx = mp.get_context("spawn")
    for obj, want in ((plan, plan.export("numpy")), (view, view.to_numpy())):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child_read, args=(pickle.dumps(obj), queue))
        proc.start()
        got = queue.get(timeout=60)
        proc.join(timeout=30)
        assert proc.exitcode == 0
        np.testing.assert_array_equal(got, want)

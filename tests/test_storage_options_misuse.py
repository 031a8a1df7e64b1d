"""``storage_options`` never silently do nothing: every public call that takes them refuses them for a
local path, and for an object that is already open (it reads with the options it was opened with)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import omeframe
import omeframe.catalog
import omeframe.duckdb
import omeframe.jax
import omeframe.polars
import omeframe.torch

OPTS = {"anon": True}
LOCAL = "storage_options apply to URLs only"
OPENED = "storage_options apply to a path or URL"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("opts")
    crops = np.arange(4 * 2 * 16 * 16, dtype=np.uint8).reshape(4, 2, 16, 16)
    omeframe.write_table(d / "t.parquet", crops, dim_order="CYX")
    omeframe.write_table(d / "t.vortex", crops, dim_order="CYX")
    omeframe.write_dataset(crops[0], d / "d.omeds", dim_order="CYX", image_ids=["a"])
    omeframe.to_ome_tiff(crops[0][None, :, None], d / "i.tif")
    omeframe.to_ome_zarr(crops[0][None, :, None], d / "i.zarr")
    omeframe.catalog.build(d / "i.tif", d / "cat", workers=1, progress=False)
    return d


def _calls(d: Path, out: Path) -> dict[str, Callable[[], Any]]:
    arr = np.zeros((2, 8, 8), np.uint8)
    return {
        "open_dataset": lambda: omeframe.open_dataset(d / "d.omeds", storage_options=OPTS),
        "Dataset": lambda: omeframe.Dataset(d / "d.omeds", storage_options=OPTS),
        "write_dataset": lambda: omeframe.write_dataset(arr, out / "new.omeds", dim_order="CYX",
                                                        storage_options=OPTS),
        "scan": lambda: omeframe.scan(d / "t.parquet", storage_options=OPTS),
        "scan dataset": lambda: omeframe.scan(d / "d.omeds", storage_options=OPTS),
        "open_table": lambda: omeframe.open_table(d / "t.parquet", storage_options=OPTS),
        "read_table": lambda: omeframe.read_table(d / "t.parquet", storage_options=OPTS),
        "read_table vortex": lambda: omeframe.read_table(d / "t.vortex", storage_options=OPTS),
        "write_table": lambda: omeframe.write_table(out / "new.parquet", [arr], dim_order="CYX",
                                                    storage_options=OPTS),
        "to_ome_parquet": lambda: omeframe.to_ome_parquet(arr[None, :, None], out / "new2.parquet",
                                                          storage_options=OPTS),
        "from_ome_parquet": lambda: omeframe.from_ome_parquet(d / "t.parquet", storage_options=OPTS),
        "from_ome_vortex": lambda: omeframe.from_ome_vortex(d / "t.vortex", storage_options=OPTS),
        "to_ome_tiff": lambda: omeframe.to_ome_tiff(arr[None, :, None], out / "new.tif", storage_options=OPTS),
        "to_ome_zarr": lambda: omeframe.to_ome_zarr(arr[None, :, None], out / "new.zarr",
                                                      storage_options=OPTS),
        "from_tiff": lambda: omeframe.from_tiff(d / "i.tif", storage_options=OPTS),
        "from_ome_zarr": lambda: omeframe.from_ome_zarr(d / "i.zarr", storage_options=OPTS),
        "load_tiffs": lambda: omeframe.load_tiffs(d / "i.tif", "CYX", storage_options=OPTS),
        "load_zarrs": lambda: omeframe.load_zarrs(d / "i.zarr", "CYX", storage_options=OPTS),
        "polars.scan": lambda: omeframe.polars.scan(d / "t.parquet", storage_options=OPTS),
        "duckdb.register": lambda: omeframe.duckdb.register(omeframe.duckdb.connect(), "t", d / "t.parquet",
                                                            storage_options=OPTS),
        "duckdb.register dataset": lambda: omeframe.duckdb.register(omeframe.duckdb.connect(), "d",
                                                                    d / "d.omeds", storage_options=OPTS),
        "catalog.discover": lambda: omeframe.catalog.discover(d / "i.tif", storage_options=OPTS),
        "catalog.build": lambda: omeframe.catalog.build(d / "i.tif", out / "cat2", storage_options=OPTS),
        "catalog.read_catalog": lambda: omeframe.catalog.read_catalog(d / "cat", storage_options=OPTS),
        "jax.batches": lambda: next(omeframe.jax.batches(d / "t.parquet", 2, storage_options=OPTS)),
        "torch.ImageTableDataset": lambda: omeframe.torch.ImageTableDataset(d / "t.parquet",
                                                                            storage_options=OPTS),
        "torch.ImageTableIterableDataset": lambda: omeframe.torch.ImageTableIterableDataset(
            d / "t.parquet", batch_size=2, storage_options=OPTS),
        "torch.DatasetPatchDataset": lambda: omeframe.torch.DatasetPatchDataset(
            d / "d.omeds", patch_shape=(8, 8), storage_options=OPTS),
    }


CALLS = list(_calls(Path("unused"), Path("unused")))


@pytest.mark.parametrize("name", CALLS)
def test_options_with_a_local_path_are_refused(files: Path, tmp_path: Path, name: str,
                                              request: pytest.FixtureRequest) -> None:
    if name.startswith("torch."):
        request.getfixturevalue("torch")  # conftest: skips torch where the test extra has none
    with pytest.raises(ValueError, match=LOCAL):
        _calls(files, tmp_path)[name]()
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


def _opened(d: Path) -> dict[str, Callable[[], Any]]:
    table = omeframe.open_table(d / "t.parquet")
    ds = omeframe.open_dataset(d / "d.omeds")
    return {
        "jax.batches": lambda: next(omeframe.jax.batches(table, 2, storage_options=OPTS)),
        "torch.ImageTableDataset": lambda: omeframe.torch.ImageTableDataset(table, storage_options=OPTS),
        "torch.ImageTableIterableDataset": lambda: omeframe.torch.ImageTableIterableDataset(
            table, batch_size=2, storage_options=OPTS),
        "torch.DatasetPatchDataset": lambda: omeframe.torch.DatasetPatchDataset(
            ds, patch_shape=(8, 8), storage_options=OPTS),
        "scan dataset": lambda: omeframe.scan(ds, storage_options=OPTS),
    }


@pytest.mark.parametrize("name", ["jax.batches", "torch.ImageTableDataset", "torch.ImageTableIterableDataset",
                                  "torch.DatasetPatchDataset", "scan dataset"])
def test_options_with_an_opened_object_are_refused(files: Path, name: str, request: pytest.FixtureRequest) -> None:
    if name.startswith("torch."):
        request.getfixturevalue("torch")  # conftest: skips torch where the test extra has none
    with pytest.raises(ValueError, match=OPENED):
        _opened(files)[name]()


def test_empty_options_are_no_options(files: Path) -> None:
    assert omeframe.open_table(files / "t.parquet", storage_options={}).to_numpy([1]).shape == (1, 2, 16, 16)
    assert omeframe.open_dataset(files / "d.omeds", storage_options=None).image_ids == ["a"]

"""Bad arguments are refused up front with precise errors (tiles, chunk predicates, catalog, loaders, DuckDB).

Each test names the argument it misuses; every one of them failed (a hang, an
AttributeError, a library's own message, a silently accepted value or error
rows instead of an exception) before the check it covers.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

import omeframe as of
import omeframe.duckdb as ofdb
from omeframe import catalog
from omeframe.engine.predicates import chunk
from omeframe.tiles import TileProvider


@pytest.fixture
def tif(tmp_path: Path) -> Path:
    """A folder ``in/`` holding one small TIFF; returns the file."""
    src = tmp_path / "in"
    src.mkdir()
    path = src / "a.tif"
    tifffile.imwrite(path, np.arange(64, dtype=np.uint8).reshape(8, 8))
    return path


@pytest.fixture
def table(tmp_path: Path) -> str:
    path = tmp_path / "crops.parquet"
    of.write_table(path, np.zeros((6, 1, 4, 4), np.uint8), dim_order="CYX")
    return str(path)


# -- tiles -------------------------------------------------------------------------------


def test_prefetch_neighbors_with_a_huge_radius_works_on_the_tiles_that_exist() -> None:
    img = of.from_numpy(np.zeros((1, 1, 2, 16, 16), np.uint16), dim_order="TCZYX")
    tp = TileProvider(img, tile=4)
    queued: list[int] = []
    worker = threading.Thread(
        target=lambda: queued.append(tp.prefetch_neighbors(0, 0, 0, 0, 0, 0, radius=10**6, z_radius=10**6)),
        daemon=True,  # before the fix it looped over (2r+1)^2 positions: never returned
    )
    worker.start()
    worker.join(60)
    try:
        assert not worker.is_alive(), "prefetch_neighbors(radius=10**6) did not return"
        assert queued == [2 * 4 * 4 - 1]  # every other tile of both planes
        tp.wait()
        grid = [(z, y, x) for z in range(2) for y in range(4) for x in range(4)]
        cached = [tp.get_cached_tile(0, 0, 0, *zyx) is not None for zyx in grid]
        assert cached == [False] + [True] * 31  # all but the tile in view itself
    finally:
        tp.close()


def test_tile_provider_cache_and_prefetch_planes_are_checked() -> None:
    img = of.from_numpy(np.zeros((1, 1, 2, 8, 8), np.uint8), dim_order="TCZYX")
    with pytest.raises(TypeError, match=r"cache must be an omeframe\.engine\.cache\.ByteCache or None.*int 5"):
        TileProvider(img, tile=4, cache=5)  # type: ignore[arg-type]
    with TileProvider(img, tile=4) as tp:
        with pytest.raises(ValueError, match=r"planes must hold \(t, c, z\) index triples, got the item \(0, 0\)"):
            tp.prefetch_planes([(0, 0)])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="planes must be an iterable of"):
            tp.prefetch_planes(5)  # type: ignore[arg-type]


# -- chunk predicates --------------------------------------------------------------------


def test_chunk_predicates_refuse_nan_and_non_predicates() -> None:
    for nan in (float("nan"), np.float32("nan")):
        with pytest.raises(ValueError, match=r"chunk\.max > nan would be false for every chunk"):
            chunk.max > nan  # noqa: B015
    with pytest.raises(ValueError, match=r"chunk\.min != nan would be true"):
        chunk.min != float("nan")  # noqa: B015
    with pytest.raises(TypeError, match="can only be combined with another chunk predicate.*int 5"):
        (chunk.max > 100) & 5  # type: ignore[operator]
    with pytest.raises(TypeError, match="can only be combined with another chunk predicate"):
        (chunk.max > 100) | "x"  # type: ignore[operator]
    both = (chunk.max > 100) & (chunk.min < float("inf"))
    assert both({"max": np.array([50, 150]), "min": np.array([0, 0])}).tolist() == [False, True]


# -- catalog.build -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"chunk_shape": (0, 1, 1)}, ValueError, r"chunk_shape must be three positive integers"),
        ({"chunk_shape": ()}, ValueError, r"chunk_shape must be three positive integers"),
        ({"compression": "bogus"}, ValueError, r"unknown chunk compression 'bogus'"),
        ({"compression_level": 99}, ValueError, r"compression_level=99 is outside the levels of zstd \(-131072 to"),
        ({"compression": "lz4", "compression_level": 13}, ValueError, r"outside the levels of lz4 \(1 to 12\)"),
        ({"compression": None, "compression_level": 7}, ValueError, r"compression is None"),
        ({"compression_level": "3"}, TypeError, r"compression_level must be an integer"),
        ({"batch_size": 0}, ValueError, r"batch_size must be >= 1 \(files per worker task\)"),
        ({"batch_size": -1}, ValueError, r"batch_size must be >= 1"),
        ({"batch_size": 1.5}, TypeError, r"batch_size must be an integer >= 1"),
        ({"columns_from_path": 5}, TypeError, r"columns_from_path must be a regular expression.*int 5"),
        ({"columns_from_path": "("}, ValueError,
         r"columns_from_path '\(' is not a valid regular expression \(missing \)"),
        ({"client": 5}, TypeError, r"client must be a dask\.distributed\.Client"),
    ],
)
def test_build_refuses_bad_options_before_reading_any_file(
    tif: Path, tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        catalog.build(tif.parent, out, workers=1, progress=False, **kwargs)
    assert not out.exists()  # refused before discovery: no catalog, no error rows


def test_build_batch_size_and_codec_options_still_work(tif: Path, tmp_path: Path) -> None:
    res = catalog.build(tif.parent, tmp_path / "out", workers=1, progress=False, batch_size=1,
                        chunk_shape=(1, 4, 4), compression="gzip", compression_level=9)
    assert res.n_ingested == 1 and res.errors.num_rows == 0


def test_build_image_id_from_must_return_a_non_empty_string(tif: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"image_id_from returned an empty image id '' for '.*a\.tif'"):
        catalog.build(tif.parent, tmp_path / "out", workers=1, progress=False, image_id_from=lambda p: "")
    with pytest.raises(TypeError, match=r"image_id_from returned int 5 for '.*a\.tif'"):
        catalog.build(tif.parent, tmp_path / "out2", workers=1, progress=False,
                      image_id_from=lambda p: 5)  # type: ignore[arg-type,return-value]


# -- catalog.discover / open_image / file_checksum ---------------------------------------


def test_discover_refuses_an_empty_path(tif: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tif.parent)  # before the fix "" scanned the current directory: it would find a.tif
    with pytest.raises(ValueError, match=r"empty path ''.*pass '\.' for the current directory"):
        catalog.discover("")
    with pytest.raises(ValueError, match="empty path"):
        catalog.discover([tif, ""])
    with pytest.raises(TypeError, match="sources must be paths, URLs or glob patterns.*int 5"):
        catalog.discover([5])  # type: ignore[list-item]
    assert catalog.discover(".") == [tif]


def test_open_image_refuses_an_unknown_reader(tif: Path) -> None:
    with pytest.raises(ValueError, match=r"reader must be one of .*ome-tiff.*tiff.*got 'bogus'"):
        catalog.open_image(tif, reader="bogus")
    assert catalog.open_image(tif, reader="tiff").shape == (1, 1, 1, 8, 8)


def test_file_checksum_refuses_folders_and_bad_sizes(tif: Path) -> None:
    with pytest.raises(IsADirectoryError, match="no zarr store"):
        catalog.file_checksum(tif.parent)
    with pytest.raises(ValueError, match="size must be a non-negative integer number of bytes or None, got -1"):
        catalog.file_checksum(tif, size=-1)
    with pytest.raises(TypeError, match="size must be a non-negative integer"):
        catalog.file_checksum(tif, size=1.5)  # type: ignore[arg-type]
    assert catalog.file_checksum(tif, size=tif.stat().st_size) == catalog.file_checksum(tif)


# -- torch / jax loaders -----------------------------------------------------------------


def test_jax_batches_checks_its_integers(table: str) -> None:
    """Arguments are checked before jax is imported (jax's threads in this process would make later forks unsafe)."""
    from omeframe.jax import batches

    with pytest.raises(ValueError, match=r"block_size must be >= 1 \(rows per shuffle block"):
        batches(table, 2, block_size=0)
    with pytest.raises(ValueError, match="buffer_blocks must be >= 1"):
        batches(table, 2, buffer_blocks=0)
    for bad in ("2", 1.5, True):
        with pytest.raises(TypeError, match="batch_size must be an integer >= 1"):
            batches(table, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must be an integer >= 0.*str 'x'"):
        batches(table, 2, shuffle=True, seed="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be >= 0"):
        batches(table, 2, shuffle=True, seed=-1)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        batches(table, 2, shuffle=True, epoch=-1)


def test_torch_datasets_check_their_arguments(table: str, tmp_path: Path, torch: Any) -> None:
    from omeframe.torch import DatasetPatchDataset, ImageTableDataset, ImageTableIterableDataset, collate

    for bad in ("2", 1.5, True):
        with pytest.raises(TypeError, match="batch_size must be an integer >= 1"):
            ImageTableIterableDataset(table, batch_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        ImageTableIterableDataset(table, block_size=0)
    with pytest.raises(TypeError, match="seed must be an integer >= 0.*str 'x'"):
        ImageTableIterableDataset(table, seed="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be >= 0"):
        ImageTableIterableDataset(table, seed=-1)
    ds = ImageTableIterableDataset(table, batch_size=2)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        ds.set_epoch(-1)
    with pytest.raises(TypeError, match="epoch must be an integer"):
        ds.set_epoch("1")  # type: ignore[arg-type]
    for make in (ImageTableDataset, ImageTableIterableDataset):
        with pytest.raises(TypeError, match="transform must be a callable.*int 5"):
            make(table, transform=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="collate needs at least one sample"):
        collate([])

    path = tmp_path / "img.omeds"
    of.write_dataset([np.zeros((1, 1, 1, 8, 8), np.uint8)], path, dim_order="TCZYX", image_ids=["a"],
                     progress=False)
    with pytest.raises(TypeError, match=r"patch_shape must be \(Y, X\) or \(Z, Y, X\) of positive integers"):
        DatasetPatchDataset(path, patch_shape=(True, 4), n_patches=2)
    with pytest.raises(TypeError, match="transform must be a callable"):
        DatasetPatchDataset(path, patch_shape=(4, 4), n_patches=2, transform=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="stride must be"):
        DatasetPatchDataset(path, patch_shape=(4, 4), stride=(2.5, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n_patches must be an integer"):
        DatasetPatchDataset(path, patch_shape=(4, 4), n_patches=True)  # type: ignore[arg-type]
    assert len(DatasetPatchDataset(path, patch_shape=(4, 4), stride=(4, 4))) == 4


# -- DuckDB ------------------------------------------------------------------------------


def test_duckdb_register_checks_the_connection_and_the_path(table: str) -> None:
    for bad in (None, 5):
        with pytest.raises(TypeError, match=r"con must be a DuckDB connection.*omeframe\.duckdb\.connect\(\)"):
            ofdb.register(bad, "t", table)
        with pytest.raises(TypeError, match="con must be a DuckDB connection"):
            ofdb.register_functions(bad)
    con = ofdb.connect()
    try:
        with pytest.raises(TypeError, match=r"path must be one record table .*got int 5"):
            ofdb.register(con, "t", 5)
        with pytest.raises(TypeError, match="register each of the 2 under its own name"):
            ofdb.register(con, "t", [table, table])
        with pytest.raises(TypeError, match=r"path must be one record table .*got list \[\]"):
            ofdb.register(con, "t", [])
        with pytest.raises(ValueError, match="got an empty string"):
            ofdb.register(con, "t", "")
        assert ofdb.register(con, "t", table) == ["t"]
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(6,)]
    finally:
        con.close()


def test_codecs_this_arrow_cannot_compress_with_are_refused_by_every_writer(tmp_path: Path) -> None:
    import pyarrow as pa

    try:
        pa.Codec("bz2").compress(b"\0" * 16)
        usable = True
    except (pa.ArrowException, NotImplementedError):  # available, yet no one-shot compression (this pyarrow)
        usable = False
    a = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    if usable:  # then every writer takes it
        assert of.to_numpy(of.from_numpy(a, dim_order="CYX", compression="bz2")).reshape(a.shape).tolist() == a.tolist()
        return
    with pytest.raises(ValueError, match="unknown chunk compression 'bz2'"):
        of.from_numpy(a, dim_order="CYX", compression="bz2")
    with pytest.raises(ValueError, match="unknown chunk compression 'bz2'"):
        of.write_dataset(a, tmp_path / "d", dim_order="CYX", compression="bz2")

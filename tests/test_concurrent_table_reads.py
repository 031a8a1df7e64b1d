"""Several threads reading one Parquet record table at once: each with its own handle, and all through one.

Reads from threads share the process-wide page tables of the file's page CRC
check, and reads through one ``open_table`` share its pyarrow ``ParquetFile``.
Both raced: a thread that checked a column chunk at the same time as another
reported the untouched file as "changed since this process first read them"
(``ChunkChecksumError``), and pyarrow's reader, used by several threads at once,
failed with "ReadRangeCache did not find matching cache entry".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import omeframe as of
from omeframe.engine import threads


def _cells(n: int, size: int, dtype: type, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    centre = rng.uniform(size / 4, 3 * size / 4, (n, 3, 2, 1, 1))
    blob = np.exp(-((yy - centre[:, :, 0]) ** 2 + (xx - centre[:, :, 1]) ** 2) / (2 * (size / 6) ** 2))
    top = np.iinfo(dtype).max // 16
    return np.clip(blob * top + rng.normal(0, top / 30, blob.shape), 0, top).astype(dtype)


def _in_threads(n_threads: int, iterations: int, read: Callable[[np.random.Generator], None]) -> list[str]:
    barrier = threading.Barrier(n_threads)
    failures: list[str] = []

    def body(seed: int) -> None:
        rng = np.random.default_rng(seed)
        barrier.wait()  # all at once
        for _ in range(iterations):
            try:
                read(rng)
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_threads_reading_one_table_get_its_pixels(tmp_path: Path, compression: str | None) -> None:
    before, chosen = threads.num_threads(), threads._chosen
    of.set_num_threads(4)  # omeframe's pool checks pages in parallel too
    try:
        for n, size, dtype in ((300, 32, np.uint16), (2000, 16, np.uint8)):
            stack = _cells(n, size, dtype, seed=n)
            path = tmp_path / f"t{n}-{compression}.parquet"
            of.write_table(path, stack, dim_order="CYX", chunk_compression=compression)

            def own(rng: np.random.Generator, path: Path = path, stack: np.ndarray = stack) -> None:
                rows = rng.choice(len(stack), int(rng.integers(1, 65)), replace=False)
                with of.open_table(path) as t:
                    np.testing.assert_array_equal(t.to_numpy(rows), stack[rows])

            assert not _in_threads(4, 8, own)
            shared = of.open_table(path)

            def through_one(rng: np.random.Generator, stack: np.ndarray = stack, table: of.ImageTable = shared) -> None:
                rows = rng.choice(len(stack), int(rng.integers(1, 65)), replace=False)
                np.testing.assert_array_equal(table.to_numpy(rows), stack[rows])
                assert table.take(rows.tolist()).num_rows == len(rows)

            assert not _in_threads(4, 8, through_one)
            shared.close()
    finally:
        threads._set(before)
        threads._chosen = chosen

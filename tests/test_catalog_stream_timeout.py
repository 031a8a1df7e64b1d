"""Large images streamed into a catalog's dataset are under the per-file timeout too.

Workers only measure a large image; the building process streams its pixels
into ``dataset/``. A file whose pixel reads stall there (a hung mount, a
hostile file that reads forever) must not hang the build: it gets a
``FileTimeoutError`` row and every other file still gets its row.
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.catalog.discover import open_image
from omeframe.engine.source import HeaderOverride

build_mod = importlib.import_module("omeframe.catalog.build")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the test's reader reaches the child by fork")

#: How long a stalled read blocks: far past the test's timeout, so only a kill ends the build early.
STALL_S = 40.0


class _StallingPixels(HeaderOverride):
    """Measures like the real file (shape, dtype, header); reading its pixels stalls."""

    def _open_pixels(self) -> Any:
        time.sleep(STALL_S)
        return super()._open_pixels()


def _stalling_open(path: str | os.PathLike[str], reader: str | None = None) -> Any:
    src = open_image(path, reader)
    if Path(path).name == "stalls.npy":
        return _StallingPixels(src, src.header())
    return src


def test_a_large_image_whose_reads_stall_gets_an_error_row_and_the_rest_their_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("OMEFRAME_MP_START", "fork")  # the streaming child inherits the test's reader
    src = tmp_path / "src"
    src.mkdir()
    big = np.arange(48 * 40, dtype=np.uint16).reshape(48, 40)  # large: above max_record_bytes
    np.save(src / "big.npy", big)
    np.save(src / "stalls.npy", big + 1)
    np.save(src / "small.npy", np.ones((4, 4), np.uint8))  # a record
    out = tmp_path / "cat"
    res = build_mod.build_with(src, out, seams=build_mod.Seams(open_image=_stalling_open), workers=1,
                               progress=False, timeout=0.5, max_record_bytes=1000)
    rows = {Path(r["urlpath"]).name: r for r in pq.read_table(out / "catalog.parquet").to_pylist()}
    assert rows["stalls.npy"]["status"] == "error", rows["stalls.npy"]
    assert rows["stalls.npy"]["error_type"] == "FileTimeoutError"
    assert "timeout=0.5" in rows["stalls.npy"]["error"] and "killed" in rows["stalls.npy"]["error"]
    assert rows["big.npy"]["status"] == "ok" and rows["big.npy"]["location"] == "dataset"
    assert rows["small.npy"]["status"] == "ok" and rows["small.npy"]["location"] == "images.parquet"
    assert (res.n_ingested, res.n_dataset, res.n_errors) == (2, 1, 1)
    ds = of.open_dataset(out / "dataset")
    assert ds.image_ids == [rows["big.npy"]["image_id"]]  # nothing of the killed write was committed
    assert np.array_equal(np.asarray(ds.read(ds.image_ids[0])).reshape(big.shape), big)
    assert ds.verify(collect=True)["damaged"] == []

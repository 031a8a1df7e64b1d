"""Typed-chunk dataset folders cross between omeframe and ome-arrow 0.1.0 both ways, pixels exact."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import omeframe as of
from omeframe.compat.ome_arrow import OMEArrowDataset, choose_chunking, write_ome_arrow_dataset
from omeframe.compat.ome_arrow.ingest import from_numpy

oa = pytest.importorskip("ome_arrow")

ARR = np.arange(2 * 2 * 3 * 11 * 13, dtype=np.uint16).reshape(2, 2, 3, 11, 13)


@pytest.mark.parametrize("rows_per_group", [1, 5])
def test_omeframe_writes_ome_arrow_reads(tmp_path: Path, rows_per_group: int) -> None:
    rec = from_numpy(
        ARR.astype(np.int16), image_id="rec", name="R", clamp_to_uint16=False, chunk_encoding="bytes"
    )
    out = tmp_path / "ds"
    write_ome_arrow_dataset(
        [ARR, rec], out, layout="block", chunk_shape=(1, 2, 2, 4, 5), chunk_rows_per_row_group=rows_per_group
    )
    ds = oa.OMEArrowDataset(out)
    assert ds.image_ids == ["image-00000", "rec"]
    assert np.array_equal(ds.read_image("image-00000"), ARR)
    got = ds.read_image("rec")
    assert got.dtype == np.int16 and np.array_equal(got, ARR.astype(np.int16))
    region = ds.read_region("rec", z=1, y=slice(3, 10), x=slice(2, 12))
    assert np.array_equal(region, ARR.astype(np.int16)[:, :, 1:2, 3:10, 2:12])
    assert ds.image_metadata("rec")["name"] == "R"


def test_ome_arrow_writes_omeframe_reads(tmp_path: Path) -> None:
    out = tmp_path / "ref"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oa.write_ome_arrow_dataset([ARR], out, layout="tile", chunk_shape=(1, 1, 1, 4, 5), chunk_rows_per_row_group=3)
    ours = OMEArrowDataset(out)
    assert np.array_equal(ours.read_image(), ARR)
    assert np.array_equal(ours.read_plane(t=1, c=1, z=2), ARR[1, 1, 2])
    rows = ours.read_chunk_rows(t=0, c=0, z=0, y=slice(0, 4), x=slice(0, 6))
    assert rows.num_rows == 2
    assert np.array_equal(of.OMEArrow.scan(out).select(t=1).export("numpy"), ARR[1:2])


def test_choose_chunking_matches_reference() -> None:
    for pattern in ("balanced", "fast_crop_2d", "time_series", "plane_3d", "full_volume", "balanced_5d"):
        ours = choose_chunking((2, 3, 40, 2048, 2048), "uint16", access_pattern=pattern)  # type: ignore[arg-type]
        ref = oa.choose_chunking((2, 3, 40, 2048, 2048), "uint16", access_pattern=pattern)
        assert (ours.layout, ours.chunk_shape) == (ref.layout, ref.chunk_shape), pattern


def test_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one image"):
        write_ome_arrow_dataset([], tmp_path / "x")
    with pytest.raises(ValueError, match="chunk_rows_per_row_group"):
        write_ome_arrow_dataset([ARR], tmp_path / "x", chunk_rows_per_row_group=0)
    with pytest.raises(ValueError, match="target_chunk_mb"):
        choose_chunking((1, 1, 1, 4, 4), "uint8", target_chunk_mb=-1)
    assert not (tmp_path / "x").exists()

"""Proof of pushdown: a region read touches only the bytes of the chunks it needs.

Every byte omeframe reads from a dataset or a Parquet record table goes through
:func:`omeframe.storage.files.open_input`; these tests substitute a subclass of
:class:`~omeframe.storage.files.InputFile` that logs every ``read_range`` call
(offset, length) and check the total against a stated bound. Where a library
reads a file through its own I/O (vortex reading a Vortex images table), the
whole file size is charged to the bound. On Linux a second, independent check
uses the kernel's per-process ``rchar`` counter (``/proc/self/io``: every byte
returned by read/pread syscalls of all threads), so reads that bypass the
wrapper would show up there too.

The image is 1x1x1x16384x16384 uint16 (512 MiB raw) in 512x512 chunks (1024
chunks). It is generated block by block by a streaming input (a ramp plus
sparse per-chunk noise, so chunks compress to ~22 KB and all differ); writing it
takes a few seconds per format, so the full-size case runs by default.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import omeframe as of
from omeframe.formats.dataset.inputs import ImageInput
from omeframe.model.header import ImageHeader, default_channels
from omeframe.storage import files

pytest.importorskip("vortex")

N = 16384  # image side
CHUNK = 512
# A 256x256 ROI centred on the corner shared by four chunks.
ROI_Y = (8 * CHUNK - 128, 8 * CHUNK + 128)
ROI_X = (5 * CHUNK - 128, 5 * CHUNK + 128)
#: Bytes the counting wrapper may see beyond the stated bound.
SLACK = 0
#: Extra bytes the kernel counter may see: reading /proc/self/io itself (~100 B).
RCHAR_SLACK = 1024


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _header(image_id: str) -> ImageHeader:
    return ImageHeader(
        image_id=image_id, name=image_id, image_type=None, acquisition_datetime=None,
        channels=default_channels(None, 1),
        physical_size_x=1.0, physical_size_y=1.0, physical_size_z=1.0,
        physical_size_x_unit="µm", physical_size_y_unit="µm", physical_size_z_unit="µm",
    )


def _pixels(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Deterministic pixels of any YX box (ramp + sparse noise seeded per 512 block).

    Only called with boxes inside one 512x512 block by the writer; for checks
    it is called per block too (see :func:`_expected`).
    """
    by, bx = y0 // CHUNK * CHUNK, x0 // CHUNK * CHUNK
    v = np.add.outer(np.arange(by, by + CHUNK, dtype=np.uint16) // 8, np.arange(bx, bx + CHUNK, dtype=np.uint16) // 8)
    rng = np.random.default_rng([by, bx])
    idx = rng.integers(0, v.size, v.size // 64)
    v.reshape(-1)[idx] += rng.integers(1, 1000, idx.size, dtype=np.uint16)
    return v[y0 - by : y1 - by, x0 - bx : x1 - bx]


def _expected(y: tuple[int, int], x: tuple[int, int]) -> np.ndarray:
    out = np.empty((y[1] - y[0], x[1] - x[0]), dtype=np.uint16)
    for by in range(y[0] // CHUNK * CHUNK, y[1], CHUNK):
        for bx in range(x[0] // CHUNK * CHUNK, x[1], CHUNK):
            a, b = max(by, y[0]), min(by + CHUNK, y[1])
            c, d = max(bx, x[0]), min(bx + CHUNK, x[1])
            out[a - y[0] : b - y[0], c - x[0] : d - x[0]] = _pixels(a, b, c, d)
    return out


def _big_input() -> ImageInput:
    def read_block(t, c, z0, z1, y0, y1, x0, x1):  # noqa: ANN001, ANN202
        assert (y1 - y0, x1 - x0) == (CHUNK, CHUNK)
        return _pixels(y0, y1, x0, x1)[None]

    return ImageInput((1, 1, 1, N, N), np.dtype(np.uint16), _header("big"), read_block)


class CountingInput(files.InputFile):
    """An InputFile that logs every positional read as (path, offset, length)."""

    log: list[tuple[str, int, int]] = []

    def read_range(self, offset: int, length: int) -> bytes:
        data = super().read_range(offset, length)
        CountingInput.log.append((self.path, int(offset), len(data)))
        return data


@pytest.fixture()
def counting(monkeypatch):
    CountingInput.log = []
    monkeypatch.setattr(files, "open_input", CountingInput)
    return CountingInput.log


def _rchar() -> int | None:
    try:
        with open("/proc/self/io") as fh:
            for line in fh:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _touched(entry, y, x):  # noqa: ANN001, ANN202
    """Grid indices of the chunks a YX box touches (single T/C/Z plane)."""
    origins, _ = entry.origins_extents()
    hit = (
        (origins[:, 3] < y[1]) & (origins[:, 3] + CHUNK > y[0])
        & (origins[:, 4] < x[1]) & (origins[:, 4] + CHUNK > x[0])
    )
    return np.flatnonzero(hit)


def _frame_spans(entry, touched, y):  # noqa: ANN001, ANN202
    """File byte spans of the zstd frames a YX box needs in each touched chunk.

    Worked out here from the images table's frame index alone: chunk ``i``'s
    frames are ``first[i]:first[i + 1]``, each of ``frame_rows`` rows.
    """
    first, ends = entry.frames
    fr = entry.frame_rows
    origins, _ = entry.origins_extents()
    spans = set()
    for i in touched.tolist():
        ly0 = max(y[0] - int(origins[i, 3]), 0)
        ly1 = min(y[1] - int(origins[i, 3]), CHUNK)
        fa = int(first[i])
        lo = int(ends[fa + ly0 // fr] - ends[fa])
        hi = int(ends[fa + -(-ly1 // fr)] - ends[fa])
        spans.add((int(entry.offsets[i]) + lo, int(entry.offsets[i]) + hi))
    return spans


@pytest.fixture(scope="module", params=["parquet", "vortex"])
def big_dataset(request, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pushdown") / f"big-{request.param}"
    ds = of.write_dataset(_big_input(), path, format=request.param, chunk_shape=(1, CHUNK, CHUNK), progress=False)
    e = ds.entry("big")
    assert e.n_chunks == (N // CHUNK) ** 2 == 1024
    # Both containers keep the (already compressed) payloads verbatim, so the
    # byte index is present and every chunk read is one pread.
    assert e.offsets is not None
    ds.close()
    return path


# ---------------------------------------------------------------------------
# chunked datasets
# ---------------------------------------------------------------------------
def test_roi_reads_only_the_four_touched_chunks(big_dataset, counting):
    """Cold read of a 256x256 ROI straddling 4 chunks of a 16384^2 image.

    Bound (stated): bytes read through ``open_input`` <= sum of the stored
    lengths of the 4 touched chunks + size of ``manifest.json`` + size of the
    images table file + SLACK (0). The manifest is read with ``Path.read_text``
    and, for Vortex, the images table is read by vortex itself: both are
    charged at their full file size. Every logged read must also lie inside one
    of the 4 touched chunks or be the images table.
    """
    # Warm up lazy imports (codecs, vortex, pyarrow.parquet) on another dataset
    # object so that the kernel counter below measures only this read.
    with of.open_dataset(big_dataset) as warm:
        warm.scan("big").select(y=(0, 8), x=(0, 8)).export("numpy")
    counting.clear()

    r0 = _rchar()
    ds = of.open_dataset(big_dataset)
    plan = ds.scan("big").select(y=ROI_Y, x=ROI_X)
    got = plan.export("numpy")
    r1 = _rchar()

    assert got.shape == (1, 1, 1, 256, 256)
    assert np.array_equal(got[0, 0, 0], _expected(ROI_Y, ROI_X))

    e = ds.entry("big")
    touched = _touched(e, ROI_Y, ROI_X)
    assert len(touched) == 4
    chunk_bytes = int(e.lengths[touched].sum())
    manifest = (big_dataset / "manifest.json").stat().st_size
    images = ds.images_read_path.stat().st_size
    bound = chunk_bytes + manifest + images + SLACK
    total = sum(n for _, _, n in counting)
    print(f"{ds.format}: read {total} B through open_input; bound {bound} B "
          f"(4 chunks {chunk_bytes} B + manifest {manifest} B + images table {images} B); "
          f"image stored size {int(e.lengths.sum())} B")
    assert total <= bound

    part = str(big_dataset / e.part)
    # Chunks are stored as zstd frames of 64 rows: the ROI needs rows 384..512
    # of the upper chunks and 0..128 of the lower ones, i.e. 2 of 8 frames each.
    assert e.frame_rows == 64
    spans = _frame_spans(e, touched, ROI_Y)
    pixel_reads = [(off, n) for p, off, n in counting if p == part]
    assert len(pixel_reads) == 4  # one pread per chunk, of just its needed frames
    assert {(off, off + n) for off, n in pixel_reads} == spans
    others = {p for p, _, _ in counting if p != part}
    assert others <= {str(ds.images_read_path)}
    frame_bytes = sum(hi - lo for lo, hi in spans)
    assert sum(n for off, n in pixel_reads) == frame_bytes
    assert frame_bytes < chunk_bytes // 3  # 2 of 8 frames per chunk, plus frame headers

    # explain() announces exactly this read
    info = plan._lazy().info()
    assert info.chunks_touched == 4 and info.chunks_total == 1024
    assert info.bytes_read == frame_bytes
    text = plan.explain()
    assert "chunks:    4 of 1024" in text

    if r0 is not None and r1 is not None:
        # OS view of the same cold read (all threads, all files).
        print(f"{ds.format}: kernel rchar delta {r1 - r0} B; bound {bound + RCHAR_SLACK} B")
        assert r1 - r0 <= bound + RCHAR_SLACK
    ds.close()


def test_warm_roi_reads_exactly_its_chunks(big_dataset, counting):
    """With the dataset open, a second ROI costs exactly its chunks' stored bytes."""
    ds = of.open_dataset(big_dataset)
    _ = ds.images_table  # metadata already loaded
    counting.clear()
    y, x = (100, 356), (N - 600, N - 44)  # touches 1 x 2 chunks at the right edge
    got = ds.scan("big").select(y=y, x=x).export("numpy")
    assert np.array_equal(got[0, 0, 0], _expected(y, x))
    e = ds.entry("big")
    touched = _touched(e, y, x)
    assert len(touched) == 2
    # rows 100..356 of the top chunks: frames 1..5 of 8
    spans = _frame_spans(e, touched, y)
    assert {(off, off + n) for _, off, n in counting} == spans
    assert sum(n for _, _, n in counting) == sum(hi - lo for lo, hi in spans) < int(e.lengths[touched].sum())
    ds.close()


def test_unframed_chunks_read_whole(tmp_path):
    """``frame_bytes=None`` stores one frame per chunk; an ROI then reads whole chunks."""
    img = _expected((0, 1024), (0, 1024))[None, None, None]
    ds = of.write_dataset(img, tmp_path / "d", chunk_shape=(1, CHUNK, CHUNK), frame_bytes=None, progress=False)
    e = ds.entry()
    assert e.frame_rows is None and e.frames is None
    plan = ds.scan().select(y=(384, 640), x=(384, 640))
    assert plan._lazy().info().bytes_read == int(e.lengths.sum())
    assert np.array_equal(plan.export("numpy")[0, 0, 0], img[0, 0, 0, 384:640, 384:640])


# ---------------------------------------------------------------------------
# record tables
# ---------------------------------------------------------------------------
def _record_costs(path: Path, row: int) -> tuple[int, int, int]:
    """(record column bytes of the row's group, its header leaves, footer read)."""
    md = pq.ParquetFile(path).metadata
    rg = md.row_group(row)  # one image per row group (checked by the fixture)
    record_cols = [rg.column(i) for i in range(rg.num_columns) if rg.column(i).path_in_schema.startswith("ome_arrow.")]
    rg_bytes = sum(c.total_compressed_size for c in record_cols)
    # Planning reads the header leaves and the chunk-key leaves (origins and
    # shapes, no pixels) to list the chunks without reading any pixel bytes.
    key_leaves = tuple(
        f"ome_arrow.chunks.list.element.{k}" for k in ("t", "c", "z", "y", "x", "shape_z", "shape_y", "shape_x")
    )
    header_bytes = sum(
        c.total_compressed_size for c in record_cols
        if not c.path_in_schema.startswith(("ome_arrow.chunks.", "ome_arrow.planes.", "ome_arrow.masks"))
        or c.path_in_schema in key_leaves
    )
    return rg_bytes, header_bytes, max(64 << 10, md.serialized_size + 8)


@pytest.fixture(scope="module")
def record_table(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(1024), np.arange(1024)) // 4
    imgs = [(ramp + rng.integers(0, 64, ramp.shape)).astype(np.uint16) for _ in range(6)]
    path = tmp_path_factory.mktemp("records") / "cells.parquet"
    of.write_table(path, imgs, dim_order="YX", chunk_shape=(1, 256, 256), row_group_bytes=1 << 20,
                   columns={"well": [f"A{i}" for i in range(6)]})
    md = pq.ParquetFile(path).metadata
    assert md.num_row_groups == 6  # one ~1.1 MB image per row group
    return path, imgs


def test_record_row_reads_only_its_row_group(record_table, counting):
    """Reading one record of a 6-image table reads that row's row group only.

    Bound (stated): bytes <= the row group's column chunks of the record column
    (the pixels and chunk index) + the header and chunk-key leaves of that row
    group, which planning reads first (shape, dtype and the chunk list, without
    pixels) + the
    footer read, ``max(64 KiB, footer + 8)`` (pyarrow fetches the last 64 KiB of
    the file to find the footer) + SLACK (0). No byte of another row group is read.
    """
    path, imgs = record_table
    row = 3
    plan = of.scan(path, row_index=row)
    planned = sum(n for _, _, n in counting)
    roi = plan.select(y=(100, 356), x=(500, 756))
    got = roi.export("numpy")
    assert np.array_equal(got[0, 0, 0], imgs[row][100:356, 500:756])

    rg_bytes, header_bytes, footer_read = _record_costs(path, row)
    size = os.path.getsize(path)
    bound = rg_bytes + header_bytes + footer_read + SLACK
    total = sum(n for _, _, n in counting)
    print(f"record table: read {total} B (planning {planned} B); bound {bound} B (row group {rg_bytes} B "
          f"+ header leaves {header_bytes} B + footer read {footer_read} B); file {size} B")
    assert total <= bound
    assert total < size / 4

    # Every read lies inside the row group's span or the footer region.
    def span(c):  # noqa: ANN001, ANN202
        start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
        return start, start + c.total_compressed_size

    rg = pq.ParquetFile(path).metadata.row_group(row)
    cols = [rg.column(i) for i in range(rg.num_columns)]
    lo = min(span(c)[0] for c in cols)
    hi = max(span(c)[1] for c in cols)
    for _, off, n in counting:
        assert (lo <= off and off + n <= hi) or off >= size - footer_read, (off, n, lo, hi)

    # explain() charges the row group
    assert roi._lazy().info().bytes_read == rg_bytes


def test_record_table_kernel_counter(record_table):
    """Same read, counted by the kernel (catches reads that bypass open_input)."""
    path, imgs = record_table
    of.scan(path, row_index=0).select(y=(0, 8), x=(0, 8)).export("numpy")  # warm imports
    r0 = _rchar()
    if r0 is None:
        pytest.skip("no /proc/self/io")
    got = of.scan(path, row_index=5).select(y=(10, 20), x=(30, 40)).export("numpy")
    r1 = _rchar()
    assert np.array_equal(got[0, 0, 0], imgs[5][10:20, 30:40])
    rg_bytes, header_bytes, footer_read = _record_costs(path, 5)
    bound = rg_bytes + header_bytes + footer_read + RCHAR_SLACK
    print(f"record table: kernel rchar delta {r1 - r0} B; bound {bound} B; file {os.path.getsize(path)} B")
    assert r1 - r0 <= bound

"""``omeframe.polars.scan``: a Polars IO-plugin scan that pushes work into the reader.

Byte counts go through :func:`omeframe.storage.files.open_input` (every read of
the scan passes there), replaced here by a subclass that adds up ``read_range``
lengths.  Metadata caches are cleared first, so footers are charged too.
Results are compared with ``pl.read_parquet(path)`` followed by the same query,
which is the definition of "exact".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import omeframe as of
import omeframe.polars as op
from omeframe.errors import CorruptFileError, NoOmeArrowColumnError
from omeframe.formats.record.tables import records_from_arrays, write_table
from omeframe.formats.vortex import arrow_dataset as vxd
from omeframe.query import polars_scan
from omeframe.storage import files

N_IMAGES = 240
SIDE = 96  # 96x96 uint16 random pixels: 18 KiB per image, ~4.4 MB per file


class Counter:
    def __init__(self) -> None:
        self.bytes = 0
        self.reads: list[tuple[str, int, int]] = []

    def touched(self, path: Path, ranges: list[tuple[int, int]]) -> int:
        """Bytes read inside ``ranges`` of ``path``."""
        total = 0
        for p, off, n in self.reads:
            if os.path.samefile(p, path):
                for lo, hi in ranges:
                    total += max(0, min(hi, off + n) - max(lo, off))
        return total


def _pixel_ranges(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of the pixel column chunks of a Parquet file."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    out = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for j in range(rg.num_columns):
            col = rg.column(j)
            if col.path_in_schema.endswith(("pixel_bytes", "pixels.list.element")):
                start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
                out.append((start, start + col.total_compressed_size))
    return out


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Counter:
    c = Counter()

    class CountingInput(files.InputFile):
        def read_range(self, offset: int, length: int) -> bytes:
            data = super().read_range(offset, length)
            c.bytes += len(data)
            c.reads.append((self.path, offset, len(data)))
            return data

    monkeypatch.setattr(files, "open_input", CountingInput)
    polars_scan._PQ_META.clear()
    polars_scan._SCHEMAS.clear()
    vxd._FOOTER_CACHE.clear()
    return c


def _features(n: int) -> dict[str, object]:
    rng = np.random.default_rng(1)
    area = rng.random(n) * 100
    area[::17] = np.nan
    score = [None if i % 11 == 0 else float(i % 13) for i in range(n)]
    return {
        "cell_id": np.arange(n, dtype=np.int64),  # sorted: row-group statistics prune
        "area": area,
        "score": score,
        "plate": [f"P{i % 3}" for i in range(n)],
        "well": [None if i % 29 == 0 else f"W{i % 24:02d}" for i in range(n)],
        "n": np.arange(n, dtype=np.int32) % 50,
    }


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("scan")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 65535, (SIDE, SIDE), dtype=np.uint16) for _ in range(N_IMAGES)]
    ids = [f"img-{i:04d}" for i in range(N_IMAGES)]
    records = records_from_arrays(images, image_ids=ids, chunk_compression=None, progress=False)
    out = {}
    for fmt in ("parquet", "vortex"):  # the same records (and timestamps) in both
        out[fmt] = write_table(
            d / f"cells.{fmt}",
            records,
            columns=_features(N_IMAGES),
            row_group_bytes=400_000,  # ~21 images per row group, 12 groups
        )
    return out


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Larger images (192x192 uint16, 72 KiB each) in default-sized row groups."""
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(3)
    n = 200
    images = [rng.integers(0, 65535, (192, 192), dtype=np.uint16) for _ in range(n)]
    records = records_from_arrays(images, chunk_compression=None, progress=False)
    return {
        fmt: write_table(d / f"big.{fmt}", records, columns=_features(n))
        for fmt in ("parquet", "vortex")
    }


@pytest.fixture(scope="module")
def reference(tables: dict[str, Path]) -> pl.DataFrame:
    return pl.read_parquet(tables["parquet"])


def _header_ref(df: pl.DataFrame) -> pl.DataFrame:
    rec = pl.col("ome_arrow")
    pm = rec.struct.field("pixels_meta")
    return df.with_columns(
        rec.struct.field("id").alias("ome_id"),
        rec.struct.field("name").alias("ome_name"),
        pm.struct.field("type").alias("ome_dtype"),
        pm.struct.field("size_x").alias("ome_size_x"),
        pm.struct.field("size_y").alias("ome_size_y"),
        pm.struct.field("size_c").alias("ome_size_c"),
    )


# --------------------------------------------------------------------- schema
@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_schema_is_the_files(tables: dict[str, Path], reference: pl.DataFrame, fmt: str) -> None:
    lf = op.scan(tables[fmt])
    assert lf.collect_schema() == reference.schema
    assert lf.collect_schema()["ome_arrow"].fields[8].dtype.inner.fields[-1].dtype == pl.Binary  # type: ignore[union-attr]
    full = op.scan(tables[fmt]).collect()
    assert_frame_equal(full, reference)


def test_header_column_schema(tables: dict[str, Path]) -> None:
    schema = op.scan(tables["parquet"], header_columns=True).collect_schema()
    assert schema["ome_id"] == pl.String
    assert schema["ome_size_x"] == pl.Int32
    assert schema["ome_size_c"] == pl.Int16
    assert schema["ome_dtype"] == pl.String
    custom = op.scan(tables["parquet"], header_columns="img_").collect_schema()
    assert "img_size_y" in custom and "ome_size_y" not in custom
    assert set(op.HEADER_FIELDS) <= {n[len("img_") :] for n in custom.names() if n.startswith("img_")}


# ------------------------------------------------------------- bytes read
@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_metadata_query_reads_under_2_percent(big: dict[str, Path], counter: Counter, fmt: str) -> None:
    path = big[fmt]
    size = os.path.getsize(path)
    query = (
        lambda lf: lf.filter(pl.col("area") > 50)
        .select("cell_id", "area", "plate")
        .select(pl.len(), pl.col("cell_id").sum())
    )
    got = query(op.scan(path, reader="omeframe")).collect()  # footer included: caches were cleared
    assert counter.bytes < 0.02 * size, (counter.bytes, size)
    assert_frame_equal(got, query(pl.scan_parquet(big["parquet"])).collect())
    if fmt == "parquet":
        assert counter.touched(path, _pixel_ranges(path)) == 0
    print(f"{fmt}: metadata query read {counter.bytes} of {size} B ({100 * counter.bytes / size:.2f}%)")


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_header_columns_read_no_pixel_bytes(
    tables: dict[str, Path], reference: pl.DataFrame, counter: Counter, fmt: str
) -> None:
    path = tables[fmt]
    size = os.path.getsize(path)
    lf = (
        op.scan(path, header_columns=True)
        .filter((pl.col("ome_size_x") == SIDE) & (pl.col("ome_id") >= "img-0200"))
        .select("ome_id", "ome_dtype", "ome_size_y", "plate")
    )
    got = lf.collect()
    assert [r.reader for r in op.scan_routes(lf)] == ["omeframe"]
    if fmt == "parquet":  # small file, small row groups: footer-dominated, no pixels
        assert counter.touched(path, _pixel_ranges(path)) == 0
        assert counter.bytes < 0.05 * size, (counter.bytes, size)
    else:
        assert counter.bytes < 0.02 * size, (counter.bytes, size)
    want = (
        _header_ref(reference)
        .filter((pl.col("ome_size_x") == SIDE) & (pl.col("ome_id") >= "img-0200"))
        .select("ome_id", "ome_dtype", "ome_size_y", "plate")
    )
    assert_frame_equal(got, want)
    assert got.height == N_IMAGES - 200


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_projection_reads_only_the_selected_columns(big: dict[str, Path], counter: Counter, fmt: str) -> None:
    path = big[fmt]
    size = os.path.getsize(path)
    assert op.scan(path, reader="omeframe").select("cell_id").collect().height == 200
    small = counter.bytes
    counter.bytes = 0
    op.scan(path, reader="omeframe").select("ome_arrow").collect()
    assert small < 0.01 * size, (small, size)
    assert counter.bytes > 0.9 * size


def test_row_group_pruning_and_late_materialisation(
    tables: dict[str, Path], reference: pl.DataFrame, counter: Counter
) -> None:
    path = tables["parquet"]
    size = os.path.getsize(path)
    # One image: statistics on the sorted cell_id leave one row group, and the
    # pixels are read for that group only.
    one = op.scan(path, reader="omeframe").filter(pl.col("cell_id") == 123).select("ome_arrow", "plate").collect()
    assert_frame_equal(one, reference.filter(pl.col("cell_id") == 123).select("ome_arrow", "plate"))
    assert counter.bytes < 0.15 * size, (counter.bytes, size)
    # A predicate the statistics cannot use (modulo): every row group's
    # predicate column is read, pixels only where rows match.
    counter.bytes = 0
    q = lambda lf: lf.filter((pl.col("cell_id") % 97) == 5).select("ome_arrow")  # noqa: E731
    got = q(op.scan(path, reader="omeframe")).collect()
    assert_frame_equal(got, q(reference.lazy()).collect())
    assert got.height == 3
    assert counter.bytes < 0.35 * size, (counter.bytes, size)
    # A struct field in the predicate: only that leaf is read to evaluate it.
    counter.bytes = 0
    q = lambda lf: lf.filter(pl.col("ome_arrow").struct.field("id") == "img-0007").select("cell_id")  # noqa: E731
    assert q(op.scan(path, reader="omeframe")).collect()["cell_id"].to_list() == [7]
    assert counter.bytes < 0.15 * size, (counter.bytes, size)


# -------------------------------------------------------------- exactness
PREDICATES = [
    pl.col("cell_id") > 100,
    pl.col("cell_id") == 7,
    pl.col("cell_id").is_between(30, 40),
    (pl.col("cell_id") >= 50) & (pl.col("plate") == "P1"),
    (pl.col("cell_id") < 5) | (pl.col("cell_id") > 230),
    pl.col("area") > 50,  # NaN: Polars orders it above every number
    pl.col("area") == float("nan"),
    pl.col("area").is_nan(),
    ~(pl.col("area") > 50),
    pl.col("score") <= 3.0,
    pl.col("score").is_null(),
    pl.col("well").is_not_null() & (pl.col("well") != "W03"),
    pl.col("well") < "W05",
    pl.col("well").is_in(["W01", "W07"]),
    ~pl.col("well").is_in(["W01", "W07"]),
    pl.col("well").str.starts_with("W1"),
    pl.col("n") == 3,
    pl.col("n").cast(pl.Float64) > 47.5,
    (pl.col("cell_id") % 7) == 3,
    pl.lit(5) < pl.col("n"),
    pl.col("ome_arrow").struct.field("pixels_meta").struct.field("size_y") == SIDE,
    pl.col("ome_arrow").struct.field("id").is_in(["img-0003", "img-0100"]),
    pl.col("ome_arrow").is_not_null() & (pl.col("cell_id") == 1),
]


@pytest.mark.parametrize("reader", op.READERS)
@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
@pytest.mark.parametrize("i", range(len(PREDICATES)))
def test_predicate_is_exact(
    tables: dict[str, Path], reference: pl.DataFrame, fmt: str, i: int, reader: str
) -> None:
    pred = PREDICATES[i]
    lf = op.scan(tables[fmt], reader=reader).filter(pred).select("cell_id", "area", "well")
    want = reference.filter(pred).select("cell_id", "area", "well")
    assert_frame_equal(lf.collect(), want)
    if reader != "auto":
        assert [r.reader for r in op.scan_routes(lf)] == [reader]


@pytest.mark.parametrize("reader", op.READERS)
@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_predicate_on_header_columns_is_exact(
    tables: dict[str, Path], reference: pl.DataFrame, fmt: str, reader: str
) -> None:
    ref = _header_ref(reference)
    lf = op.scan(tables[fmt], header_columns=True, reader=reader)
    for pred in [
        pl.col("ome_id") == "img-0042",
        pl.col("ome_id").is_between(pl.lit("img-0010"), pl.lit("img-0019")) & (pl.col("area") > 10),
        (pl.col("ome_size_c") == 1) & (pl.col("ome_dtype") == "uint16") & (pl.col("n") < 3),
        pl.col("ome_name").str.ends_with("7"),
    ]:
        cols = ["cell_id", "ome_id", "ome_size_x"]
        assert_frame_equal(lf.filter(pred).select(cols).collect(), ref.filter(pred).select(cols))


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_streaming_engine_and_whole_rows(tables: dict[str, Path], reference: pl.DataFrame, fmt: str) -> None:
    pred = (pl.col("cell_id") % 5 == 0) & (pl.col("plate") != "P2")
    got = op.scan(tables[fmt]).filter(pred).collect(engine="streaming")
    assert_frame_equal(got, reference.filter(pred))


# ------------------------------------------------------------------ n_rows
@pytest.mark.parametrize("reader", op.READERS)
@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
def test_n_rows(tables: dict[str, Path], reference: pl.DataFrame, fmt: str, reader: str) -> None:
    lf = op.scan(tables[fmt], reader=reader)
    for k in (0, 1, 21, 22, 100, N_IMAGES + 5):
        assert_frame_equal(lf.head(k).collect(), reference.head(k))
        assert_frame_equal(lf.select("cell_id", "well").head(k).collect(), reference.select("cell_id", "well").head(k))
    # n_rows applies to source rows, before the predicate: head(5).filter(...)
    pred = pl.col("cell_id") > 2
    assert_frame_equal(lf.head(5).filter(pred).collect(), reference.head(5).filter(pred))
    assert_frame_equal(lf.head(40).filter(pl.col("cell_id") > 30).select("plate").collect(),
                       reference.head(40).filter(pl.col("cell_id") > 30).select("plate"))
    assert_frame_equal(lf.filter(pred).head(5).collect(), reference.filter(pred).head(5))
    assert_frame_equal(lf.slice(30, 7).collect(), reference.slice(30, 7))


def test_n_rows_stops_reading(tables: dict[str, Path], counter: Counter) -> None:
    path = tables["parquet"]
    size = os.path.getsize(path)
    got = op.scan(path, reader="omeframe").head(3).collect()
    assert got["cell_id"].to_list() == [0, 1, 2]
    assert counter.bytes < 0.15 * size, (counter.bytes, size)  # the first row group + footer


def test_batch_size_is_honoured(tables: dict[str, Path], reference: pl.DataFrame) -> None:
    tbl = polars_scan._Table([str(tables["parquet"])], "parquet", reference.to_arrow().schema)
    frames = list(polars_scan._Reader(tbl, ["cell_id", "plate"], pl.col("n") < 40, None, 7))
    assert max(f.height for f in frames) <= 7
    got = pl.concat(frames)
    assert_frame_equal(got, reference.filter(pl.col("n") < 40).select("cell_id", "plate"))


# ---------------------------------------------------------------- datasets
@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ds") / "ds"
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 1000, (1, 2, 2, 200, 200), dtype=np.uint16) for _ in range(3)]
    of.write_dataset(imgs, d, chunk_shape=(1, 128, 128), image_ids=["a", "b", "c"], progress=False)
    of.write_dataset(imgs[:1], d, mode="append", chunk_shape=(1, 100, 100), image_ids=["d"], progress=False)
    return d


def test_dataset_images_and_chunks(dataset_dir: Path) -> None:
    m = of.open_dataset(dataset_dir).manifest
    images = pl.read_parquet(dataset_dir / m.images)
    assert_frame_equal(op.scan(dataset_dir).collect(), images)
    assert_frame_equal(op.scan(dataset_dir, table="images").filter(pl.col("image_id") == "c").collect(),
                       images.filter(pl.col("image_id") == "c"))
    parts = [pl.read_parquet(dataset_dir / p) for p in m.parts]
    assert len(parts) == 2
    chunks = pl.concat(parts)
    lf = op.scan(dataset_dir, table="chunks")
    assert_frame_equal(lf.collect(), chunks)
    pred = (pl.col("image_id") == "d") & (pl.col("max") > 500)
    cols = ["image_id", "c", "z", "y", "x", "max"]
    assert_frame_equal(lf.filter(pred).select(cols).collect(), chunks.filter(pred).select(cols))
    k = parts[0].height + 3  # n_rows across parts
    assert_frame_equal(lf.head(k).select(cols).collect(), chunks.head(k).select(cols))
    hdr = op.scan(dataset_dir, header_columns=True).select("ome_id", "ome_size_x", "ome_size_c").collect()
    assert hdr.rows() == [("a", 200, 2), ("b", 200, 2), ("c", 200, 2), ("d", 200, 2)]


def test_dataset_chunks_metadata_query_reads_no_pixels(dataset_dir: Path, counter: Counter) -> None:
    m = of.open_dataset(dataset_dir).manifest
    got = (
        op.scan(dataset_dir, table="chunks", reader="omeframe")
        .group_by("image_id").agg(pl.col("max").max(), pl.len())
        .sort("image_id").collect()
    )
    assert got["len"].to_list() == [16, 16, 16, 16]
    for part in m.parts:
        assert counter.touched(dataset_dir / part, _pixel_ranges(dataset_dir / part)) == 0


# ---------------------------------------------------------- plain Parquet
def test_polars_reads_omeframe_files_without_omeframe(tables: dict[str, Path]) -> None:
    code = f"""
import sys
import polars as pl
p = {str(tables["parquet"])!r}
df = pl.read_parquet(p)
assert df.height == {N_IMAGES} and df.columns[0] == "ome_arrow", df.columns
assert df.schema["ome_arrow"].fields[8].dtype.inner.fields[-1].dtype == pl.Binary
lf = pl.scan_parquet(p).filter(pl.col("cell_id") < 10)
out = lf.select(pl.col("ome_arrow").struct.field("id"), "plate").collect()
assert out["id"].to_list() == ["img-%04d" % i for i in range(10)], out
assert not any(m.startswith("omeframe") for m in sys.modules), "omeframe was imported"
print("ok")
"""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


# ------------------------------------------------------------------ misc
def test_explain_names_the_scan(tables: dict[str, Path]) -> None:
    for kwargs in ({"reader": "omeframe"}, {"header_columns": True}, {"reader": "native"}):
        plan = op.scan(tables["parquet"], **kwargs).filter(pl.col("cell_id") > 3).select("plate").explain()
        assert "PYTHON[omeframe] SCAN" in plan and "omeframe scan #" in plan, plan
        assert "SELECTION" in plan
    # a Parquet table without header columns: the plugin, which hands plain reads to Polars' own scan
    # after checking the page CRCs of what that scan decodes
    q = op.scan(tables["parquet"]).filter(pl.col("cell_id") > 3).select("plate")
    assert "PYTHON[omeframe] SCAN" in q.explain()
    q.collect()
    assert [r.via for r in op.scan_routes(q)] == ["polars.scan_parquet"]
    plan = op.scan(tables["vortex"]).select("plate").explain()
    assert "PYTHON[omeframe] SCAN" in plan, plan


def test_errors(tmp_path: Path, tables: dict[str, Path]) -> None:
    with pytest.raises(FileNotFoundError):
        op.scan(tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match="table="):
        op.scan(tables["parquet"], table="chunks")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(CorruptFileError):
        op.scan(bad)
    plain = tmp_path / "plain.parquet"
    pl.DataFrame({"ome_id": [1]}).write_parquet(plain)
    with pytest.raises(NoOmeArrowColumnError):
        op.scan(plain, header_columns=True)
    assert op.scan(plain).collect()["ome_id"].to_list() == [1]  # any Parquet file scans


def test_polars_schema_helper() -> None:
    import pyarrow as pa

    s = op.polars_schema(pa.schema([("b", pa.large_binary()), ("s", pa.large_string()), ("n", pa.null())]))
    assert s == pl.Schema({"b": pl.Binary, "s": pl.String, "n": pl.Null})


# ----------------------------------------------------------------- routing
# (query, reader on Parquet, reader on Vortex); every query on a scan with header columns
ROUTED = {
    "header-only count by well": (
        lambda lf: lf.group_by("well").len().sort("well"), "native", "omeframe"),
    "filter + pixels": (
        lambda lf: lf.filter(pl.col("n") > 40).select("well", "ome_arrow"), "native", "omeframe"),
    "all rows + pixels": (lambda lf: lf.select("ome_arrow"), "native", "omeframe"),
    "head": (lambda lf: lf.head(5).select("cell_id", "ome_arrow"), "native", "omeframe"),
    "header columns only": (
        lambda lf: lf.filter(pl.col("ome_id") > "img-0100").select("ome_id", "plate"), "omeframe", "omeframe"),
    "header column beside its record": (
        lambda lf: lf.select("ome_size_x", "ome_arrow"), "native", "omeframe"),
    "header predicate, pixels": (
        lambda lf: lf.filter(pl.col("ome_id") == "img-0042").select("ome_arrow"), "omeframe", "omeframe"),
    "struct-field predicate": (
        lambda lf: lf.filter(pl.col("ome_arrow").struct.field("name") == "img-7").select("cell_id"),
        "omeframe", "omeframe"),
}


def _native_scan(path: Path) -> pl.LazyFrame:
    """Polars' own scan of the same file, with the header columns derived."""
    if path.suffix == ".parquet":
        lf = pl.scan_parquet(path)
    else:
        lf = pl.scan_pyarrow_dataset(vxd.vortex_plain_dataset(path), allow_pyarrow_filter=False)
    rec = pl.col("ome_arrow")
    return lf.with_columns(
        rec.struct.field("id").alias("ome_id"),
        rec.struct.field("pixels_meta").struct.field("size_x").alias("ome_size_x"),
    )


@pytest.mark.parametrize("fmt", ["parquet", "vortex"])
@pytest.mark.parametrize("name", list(ROUTED))
def test_routing_and_results_equal_the_native_scan(tables: dict[str, Path], fmt: str, name: str) -> None:
    query, on_parquet, on_vortex = ROUTED[name]
    lf = query(op.scan(tables[fmt], header_columns=True))
    got = lf.collect()
    (route,) = op.scan_routes(lf)
    assert route.reader == (on_parquet if fmt == "parquet" else on_vortex), str(route)
    if route.reader == "native":
        assert route.via == ("polars.scan_parquet" if fmt == "parquet" else "polars.scan_pyarrow_dataset")
    else:
        assert route.via == "omeframe"
    assert str(route).startswith(f"{route.reader} ({route.via}): ")
    assert got.height > 0
    assert_frame_equal(got, query(_native_scan(tables[fmt])).collect())
    # the other reader gives the same frame
    other = "omeframe" if route.reader == "native" else "native"
    forced = query(op.scan(tables[fmt], header_columns=True, reader=other))
    assert_frame_equal(forced.collect(), got)
    assert [r.reader for r in op.scan_routes(forced)] == [other]


def test_routes_of_a_plan_with_two_scans(tables: dict[str, Path]) -> None:
    left = op.scan(tables["parquet"], reader="native").select("cell_id", "plate")
    right = op.scan(tables["vortex"], header_columns=True).select("cell_id", "ome_id")
    q = left.join(right, on="cell_id").filter(pl.col("ome_id") < "img-0010")
    assert op.scan_routes(q) == []  # nothing has run yet
    assert q.collect().height == 10
    routes = op.scan_routes(q)
    assert sorted(r.via for r in routes) == ["omeframe", "polars.scan_parquet"]


def test_native_route_honours_batch_size(tables: dict[str, Path]) -> None:
    lf = op.scan(tables["parquet"], reader="native")
    tag = re.search(r"omeframe scan #(\d+)", lf.explain())
    assert tag is not None
    src = polars_scan._SOURCES[int(tag.group(1))]
    frames = list(src(["cell_id", "plate"], pl.col("n") < 40, None, 50))
    assert src.last_route is not None and src.last_route.reader == "native"
    assert len(frames) > 1 and max(f.height for f in frames) <= 50
    want = pl.read_parquet(tables["parquet"]).filter(pl.col("n") < 40).select("cell_id", "plate")
    assert_frame_equal(pl.concat(frames), want)
    assert lf.collect_schema().names()[0] == "ome_arrow"


def test_native_route_of_a_dataset(dataset_dir: Path) -> None:
    m = of.open_dataset(dataset_dir).manifest
    chunks = pl.concat([pl.read_parquet(dataset_dir / p) for p in m.parts])
    q = lambda lf: lf.filter(pl.col("max") > 900).select("image_id", "c", "max")  # noqa: E731
    want = q(chunks.lazy()).collect()
    lf = q(op.scan(dataset_dir, table="chunks"))  # Polars' own scan of the manifest's parts
    assert_frame_equal(lf.collect(), want)
    assert [r.via for r in op.scan_routes(lf)] == ["polars.scan_parquet"]
    lf = q(op.scan(dataset_dir, table="chunks", reader="native"))  # the same, through the plugin
    assert_frame_equal(lf.collect(), want)
    (route,) = op.scan_routes(lf)
    assert route.via == "polars.scan_parquet" and route.predicate is not None
    # header columns of the images table: leaves of pixels_meta, omeframe's reader
    lf = op.scan(dataset_dir, header_columns=True).filter(pl.col("ome_size_x") == 200).select("image_id")
    assert lf.collect()["image_id"].to_list() == ["a", "b", "c", "d"]
    assert [r.reader for r in op.scan_routes(lf)] == ["omeframe"]


def test_reader_must_be_known(tables: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="reader must be one of"):
        op.scan(tables["parquet"], reader="pyarrow")


def test_damaged_pixels_never_reach_polars(tmp_path: Path) -> None:
    """Polars' Parquet reader checks no page CRCs, and a Vortex scan returns what the file holds: a flipped
    pixel byte must raise ChunkChecksumError from every reader and route, never come back as pixels."""
    from omeframe.storage.parquet_crc import CheckedParquetFile
    from vortex_damage import write_flipped

    rng = np.random.default_rng(3)
    stack = rng.integers(0, 255, (40, 3, 16, 16), dtype=np.uint8)
    pq_path = tmp_path / "cells.parquet"
    write_table(pq_path, stack, dim_order="CYX", columns={"cell_id": list(range(40))}, row_group_bytes=8192)
    with CheckedParquetFile(pq_path) as pf:  # a page body of the pixel bytes in the row group of row 25
        md = pf.metadata
        ends = np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)])
        g = int(np.searchsorted(ends, 25, side="right"))
        assert g > 0 and ends[0] >= 5, ends
        leaf = [md.schema.column(j).path for j in range(md.num_columns)].index(
            "ome_arrow.chunks.list.element.pixel_bytes"
        )
        pages = pf._pages(md.row_group(g), g, leaf)
        at = int(pages.starts[0] + pages.lengths[0] // 2)
    # checked once per version of the file: the intact file passes, its damaged rewrite is checked anew
    assert op.scan(pq_path).collect().height == 40
    time.sleep(0.05)  # a rewrite in the same timestamp tick would look like the same version
    data = bytearray(pq_path.read_bytes())
    data[at] ^= 0x20
    pq_path.write_bytes(bytes(data))
    for reader in ("auto", "native", "omeframe"):
        # omeframe's reader decodes with Arrow's own page check (a CorruptFileError naming the page)
        error, match = (CorruptFileError, "page integrity") if reader == "omeframe" else (
            of.ChunkChecksumError, f"row group {g}")
        lf = op.scan(pq_path, reader=reader)
        with pytest.raises(error, match=match):
            lf.collect()
        with pytest.raises(error, match=match):
            lf.filter(pl.col("cell_id") == 25).collect()
    # the first rows lie in row groups before the damage: a head reads and checks those only
    head = op.scan(pq_path).head(5).collect()
    assert np.array_equal(of.to_numpy_stack(head["ome_arrow"].to_arrow()), stack[:5])
    assert op.scan(pq_path).select("cell_id").collect()["cell_id"].to_list() == list(range(40))

    vx_path = tmp_path / "cells.vortex"
    write_flipped(vx_path, stack, row=27, chunk=1, mask=0x10)
    by_id = pl.col("ome_arrow").struct.field("id")
    for lf in (op.scan(vx_path), op.scan(vx_path, reader="omeframe"), op.scan(vx_path).head(30)):
        with pytest.raises(of.ChunkChecksumError, match=r"rows 27\)"):
            lf.collect()
    # a filter on a field read alone, which the rows' checks do not take: the body is checked, and fails
    for wanted in ("img-27", "img-26"):
        with pytest.raises(CorruptFileError, match="fail their CRC-32"):
            op.scan(vx_path).filter(by_id == wanted).collect()
    fine = op.scan(vx_path).head(27).collect()
    assert np.array_equal(of.to_numpy_stack(fine["ome_arrow"].to_arrow()), stack[:27])

"""``vortex_plain_dataset``: Vortex files as pyarrow Datasets that DuckDB pushes into.

DuckDB does not re-apply a filter it pushed into a pyarrow Dataset, so every
result is compared with DuckDB over the same data as an in-memory Arrow table
(where DuckDB hands the filter to pyarrow: the same semantics).  Bytes are
counted through :func:`omeframe.storage.files.open_input` and, independently,
with the kernel's ``rchar`` counter.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pytest

from omeframe.formats.record.tables import records_from_arrays, write_table
from omeframe.formats.vortex import arrow_dataset as vxd
from omeframe.formats.vortex.arrow_dataset import plan_filter, vortex_plain_dataset
from omeframe.formats.vortex.file import SCHEMA_COLUMN_PREFIX, read_vortex_table
from omeframe.storage import files

duckdb = pytest.importorskip("duckdb")
vortex = pytest.importorskip("vortex")

N = 300


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("vxds")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 65535, (128, 128), dtype=np.uint16) for _ in range(N)]
    records = records_from_arrays(
        images, image_ids=[f"img-{i:03d}" for i in range(N)], chunk_compression=None, progress=False
    )
    area = rng.random(N) * 100
    area[::13] = np.nan
    columns = pa.table(
        {
            "cell_id": pa.array(np.arange(N), pa.int64()),
            "k": pa.array(np.arange(N) % 10, pa.int32()),
            "u": pa.array(np.arange(N) % 7, pa.uint16()),
            "area": pa.array([None if i % 31 == 5 else float(a) for i, a in enumerate(area)], pa.float64()),
            "plate": pa.array([f"P{i % 3}" for i in range(N)], pa.string()),
            "well": pa.array([None if i % 17 == 0 else f"W{i % 24:02d}" for i in range(N)], pa.large_string()),
            "ok": pa.array([i % 4 == 0 for i in range(N)]),
        }
    )
    return write_table(d / "cells.vortex", records, columns=columns)


@pytest.fixture(scope="module")
def table(path: Path) -> pa.Table:
    return read_vortex_table(path)


@pytest.fixture
def con(path: Path, table: pa.Table):  # noqa: ANN201
    c = duckdb.connect()
    c.register("t", vortex_plain_dataset(path))
    c.register("r", table)
    yield c
    c.close()


class Counter:
    bytes = 0


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> type[Counter]:
    Counter.bytes = 0

    class CountingInput(files.InputFile):
        def read_range(self, offset: int, length: int) -> bytes:
            data = super().read_range(offset, length)
            Counter.bytes += len(data)
            return data

    monkeypatch.setattr(files, "open_input", CountingInput)
    vxd._FOOTER_CACHE.clear()
    return Counter


def _norm(rows: list) -> list:  # noqa: ANN001
    """Rows with NaN replaced by a marker (NaN != NaN would fail equal results)."""
    return [tuple("NaN" if isinstance(v, float) and v != v else v for v in r) for r in rows]


def _same(a: pa.Table, b: pa.Table) -> bool:
    return a.schema.equals(b.schema) and _norm([tuple(r.values()) for r in a.to_pylist()]) == _norm(
        [tuple(r.values()) for r in b.to_pylist()]
    )


def _rchar() -> int | None:
    try:
        with open("/proc/self/io") as fh:
            for line in fh:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# ------------------------------------------------------------------ schema
def test_schema_is_plain_and_hides_the_stored_schema_column(path: Path, table: pa.Table) -> None:
    ds = vortex_plain_dataset(path)
    assert isinstance(ds, pds.Dataset)
    names = ds.schema.names
    assert not any(n.startswith(SCHEMA_COLUMN_PREFIX) for n in names)
    assert sorted(names) == sorted(table.schema.names)
    assert names[0] == "ok"  # cheapest column first: DuckDB's count(*) reads it
    assert ds.schema.field("plate").type == pa.string()
    assert ds.schema.field("well").type == pa.large_string()
    rec = ds.schema.field("ome_arrow").type
    pixel = rec.field("chunks").type.value_type.field("pixel_bytes").type
    assert pixel == pa.large_binary()
    assert ds.schema.metadata[b"ome.arrow.type"] == b"ome.arrow"
    ordered = vortex_plain_dataset(path, cheap_first=False)
    assert ordered.schema.names == table.schema.names
    view_types = (pa.string_view(), pa.binary_view())
    assert all(f.type not in view_types for f in ds.schema)


def test_pyarrow_api(path: Path, table: pa.Table) -> None:
    ds = vortex_plain_dataset(path)
    flt = (pc.field("k") > 5) & (pc.field("plate") == "P1")
    got = ds.to_table(columns=["cell_id", "well"], filter=flt)
    assert _same(got, table.filter(flt).select(["cell_id", "well"]))
    assert got.schema.field("well").type == pa.large_string()
    assert ds.count_rows() == N
    assert ds.count_rows(filter=flt) == table.filter(flt).num_rows
    assert ds.head(4, columns=["cell_id"]).column(0).to_pylist() == [0, 1, 2, 3]
    assert ds.take([5, 1], columns=["cell_id", "plate"]).to_pylist() == [
        {"cell_id": 5, "plate": "P2"},
        {"cell_id": 1, "plate": "P1"},
    ]
    sub = ds.filter(pc.field("k") == 3)
    assert sub.count_rows() == N // 10
    assert sub.to_table(columns=["k"], filter=pc.field("cell_id") < 50).column(0).to_pylist() == [3] * 5
    sc = ds.scanner(columns=["cell_id"], filter=pc.field("ok"))
    assert sc.projected_schema.names == ["cell_id"]
    assert sc.to_table().num_rows == N // 4
    assert sum(b.num_rows for b in ds.to_batches(columns=[], filter=pc.field("k") == 0)) == N // 10
    with pytest.raises(KeyError):
        ds.to_table(columns=["nope"])
    with pytest.raises(NotImplementedError):
        ds.get_fragments()
    import pickle

    assert pickle.loads(pickle.dumps(sub)).count_rows() == N // 10


# ------------------------------------------------------------------ DuckDB
def test_duckdb_pushes_projection_and_filters_into_the_scan(con) -> None:  # noqa: ANN001
    plan = con.sql("EXPLAIN SELECT cell_id FROM t WHERE k > 5 AND plate = 'P1'").fetchall()[0][1]
    assert "PYTHON_ARROW_SCAN" in plan
    scan = plan[plan.index("PYTHON_ARROW_SCAN") :]
    assert "Filters:" in scan and '"k" > 5' in scan and "plate" in scan
    assert "Projections: cell_id" in scan
    got = con.sql("SELECT cell_id FROM t WHERE k > 5 AND plate = 'P1' ORDER BY 1").fetchall()
    want = con.sql("SELECT cell_id FROM r WHERE k > 5 AND plate = 'P1' ORDER BY 1").fetchall()
    assert got == want and len(got) == 40


QUERIES = [
    "SELECT count(*) FROM {t}",
    "SELECT cell_id FROM {t} WHERE k = 3",
    "SELECT cell_id, plate FROM {t} WHERE k BETWEEN 2 AND 4 AND plate <> 'P0'",
    "SELECT cell_id FROM {t} WHERE u > 4",
    "SELECT cell_id FROM {t} WHERE area > 50",
    "SELECT cell_id FROM {t} WHERE area IS NULL",
    "SELECT cell_id FROM {t} WHERE isnan(area)",
    "SELECT cell_id FROM {t} WHERE well IN ('W01', 'W05') OR well IS NULL",
    "SELECT cell_id FROM {t} WHERE well NOT IN ('W01', 'W05')",
    "SELECT cell_id FROM {t} WHERE well IS NOT NULL AND well < 'W03'",
    "SELECT cell_id FROM {t} WHERE plate LIKE 'P%' AND cell_id < 7",
    "SELECT cell_id FROM {t} WHERE ok AND k < 5",
    "SELECT cell_id FROM {t} WHERE NOT ok AND cell_id >= 290",
    "SELECT cell_id FROM {t} WHERE k = 1 OR cell_id = 2",
    "SELECT ome_arrow.id FROM {t} WHERE ome_arrow.pixels_meta.size_x = 128 AND cell_id < 3",
    "SELECT cell_id FROM {t} WHERE ome_arrow.id = 'img-042'",
    "SELECT cell_id FROM {t} WHERE ome_arrow.id IN ('img-001', 'img-299')",
    "SELECT plate, count(*), sum(cell_id), round(avg(area) FILTER (WHERE NOT isnan(area)), 6) "
    "FROM {t} WHERE k > 1 GROUP BY plate",
    "SELECT cell_id, k, u, area, plate, well, ok FROM {t} WHERE cell_id > 295",
    "SELECT max(cell_id) FROM {t} WHERE cell_id < 100",
]


@pytest.mark.parametrize("i", range(len(QUERIES)))
def test_duckdb_results_are_exact(con, i: int) -> None:  # noqa: ANN001
    q = QUERIES[i]
    if "GROUP BY" in q:
        q += " ORDER BY 1"
    elif "count(*)" not in q and "max(" not in q:
        q += " ORDER BY 1"
    got = con.sql(q.format(t="t")).fetchall()
    want = con.sql(q.format(t="r")).fetchall()
    assert _norm(got) == _norm(want), q


def test_duckdb_whole_rows(con) -> None:  # noqa: ANN001
    got = con.sql("SELECT * FROM t WHERE cell_id IN (3, 250) ORDER BY cell_id").to_arrow_table()
    assert got.num_rows == 2
    want = con.sql("SELECT * FROM r WHERE cell_id IN (3, 250) ORDER BY cell_id").to_arrow_table()
    assert _same(got.select(want.column_names), want)


def test_projection_only_query_reads_few_bytes(path: Path, counter: type[Counter]) -> None:
    size = os.path.getsize(path)
    c = duckdb.connect()
    c.register("t", vortex_plain_dataset(path))
    opened = counter.bytes  # the footer, once
    r0 = _rchar()
    assert c.sql("SELECT sum(k), count(*) FROM t").fetchall() == [(sum(i % 10 for i in range(N)), N)]
    r1 = _rchar()
    read = counter.bytes - opened
    assert read < 0.01 * size, (read, size)
    if r0 is not None and r1 is not None:  # kernel counter: nothing bypassed the wrapper
        assert r1 - r0 < 0.02 * size, (r1 - r0, size)
    counter.bytes = 0
    assert c.sql("SELECT count(*) FROM t").fetchall() == [(N,)]
    assert counter.bytes < 0.001 * size  # column 0 is the cheapest
    counter.bytes = 0
    c.sql("SELECT count(*) FROM t WHERE ome_arrow.pixels_meta.size_y = 128").fetchall()
    assert counter.bytes < 0.01 * size  # one struct leaf, not the pixels
    counter.bytes = 0
    assert len(c.sql("SELECT ome_arrow FROM t").fetchall()) == N
    assert counter.bytes > 0.9 * size
    c.close()


# ---------------------------------------------------------------- filters
def test_plan_filter_translation(path: Path) -> None:
    s = vortex_plain_dataset(path)._file_schema
    exact = [
        pc.field("k") > 5,
        (pc.field("k") >= 2) & (pc.field("plate") == "P1"),
        pc.field("ome_arrow", "pixels_meta", "size_x") == 128,
        pc.field("well").isin(["W01", "W02"]),
        pc.field("ok"),
        ~(pc.field("k") == 3),
        pc.field("well").is_null() | (pc.field("cell_id") < 4),
    ]
    for e in exact:
        plan = plan_filter(e, s)
        assert plan.exact is not None, e
    # Float comparisons keep pyarrow's NaN semantics: evaluated by pyarrow.
    plan = plan_filter((pc.field("area") > 3.0) & (pc.field("k") == 1), s)
    assert plan.exact is None and plan.prefilter is not None
    assert sorted(plan.refs or []) == ["area", "k"]
    plan = plan_filter(~pc.field("well").isin(["W01"]), s)
    assert plan.exact is None and plan.refs == ["well"]
    plan = plan_filter(pc.field("u") > pa.scalar(3, pa.uint16()), s)  # unsigned literal
    assert plan.exact is None and plan.refs == ["u"]
    plan = plan_filter(pc.field("k") > 2.5, s)  # a cast: Substrait cannot say it
    assert plan.refs is None and plan.exact is None


@pytest.mark.parametrize(
    "flt",
    [
        pc.field("area") > 50,
        pc.field("area") != 1.0,
        ~(pc.field("area") > 50),
        pc.field("area").is_nan(),
        pc.field("k") > 2.5,
        ~pc.field("well").isin(["W01", "W05"]),
        pc.field("well").isin(["W01", None]),
        (pc.field("u") < 3) | pc.field("area").is_null(),
        pc.field("ome_arrow", "id") >= "img-290",
        pc.field("ome_arrow", "pixels_meta", "size_c") == pa.scalar(1, pa.int16()),
    ],
    ids=str,
)
def test_pyarrow_filters_are_exact(path: Path, table: pa.Table, flt: pc.Expression) -> None:
    ds = vortex_plain_dataset(path)
    got = ds.to_table(columns=["cell_id", "area"], filter=flt)
    want = table.filter(flt).select(["cell_id", "area"])
    assert _same(got, want), flt


def test_other_vortex_files(tmp_path: Path) -> None:
    """A file not written by omeframe: view types come back as plain ones."""
    t = pa.table({"s": pa.array(["a", "b", None]), "b": pa.array([b"x", b"y", b"z"]), "n": [1, 2, 3]})
    p = tmp_path / "plain.vortex"
    vortex.io.write(t, str(p))
    ds = vortex_plain_dataset(p)
    assert ds.schema.field("s").type == pa.string()
    assert ds.schema.field("b").type == pa.binary()
    c = duckdb.connect()
    c.register("t", ds)
    assert c.sql("SELECT n FROM t WHERE s = 'b'").fetchall() == [(2,)]
    assert c.sql("SELECT count(*) FROM t WHERE b = 'z'::BLOB").fetchall() == [(1,)]


def test_errors(tmp_path: Path) -> None:
    from omeframe.errors import CorruptFileError

    with pytest.raises(FileNotFoundError):
        vortex_plain_dataset(tmp_path / "missing.vortex")
    bad = tmp_path / "bad.vortex"
    bad.write_bytes(b"not a vortex file at all" * 10)
    with pytest.raises(CorruptFileError):
        vortex_plain_dataset(bad)


# ------------------------------------------------------------------ verify=True


def _features_table(tmp_path: Path, name: str = "f.vortex", seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    stack = rng.integers(0, 255, (40, 2, 8, 8), dtype=np.uint8)
    columns = {"area": rng.random(40) * 100, "well": [f"W{i % 6}" for i in range(40)], "n": np.arange(40)}
    return write_table(tmp_path / name, stack, dim_order="CYX", columns=columns)


def test_scans_the_rows_checks_cannot_cover_check_the_body_once_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omeframe.formats.vortex.file import RowCrcCheck, is_verified

    path = _features_table(tmp_path)
    calls = []
    real = RowCrcCheck.__call__
    monkeypatch.setattr(RowCrcCheck, "__call__", lambda self, batch: calls.append(1) or real(self, batch))
    expected = read_vortex_table(path)
    everything = expected.column_names

    def streamed(ds: vxd.VortexPlainDataset) -> pa.Table:  # batches: no whole-table body check
        return pa.Table.from_batches(list(ds.to_batches(columns=everything)))

    plain = vortex_plain_dataset(path)
    assert streamed(plain).equals(expected) and calls  # every column read: the rows' checks cover it
    calls.clear()
    key = files.file_key(path)
    assert not is_verified(key)
    # one feature column, or a filter: the rows' checks cannot vouch for it, the body is checked once
    assert plain.to_table(columns=["area"]).column(0).equals(expected.column("area"))
    assert is_verified(key) and not calls
    above = expected.filter(pc.field("area") > 50)
    assert plain.to_table(columns=everything, filter=pc.field("area") > 50).equals(above)
    con = duckdb.connect()
    con.register("t", plain)
    assert con.sql("SELECT count(*) FROM t WHERE area > 50").fetchall() == [(above.num_rows,)]
    assert streamed(plain).equals(expected) and not calls  # this version was checked whole
    # replaced under its name: the new version is read with the rows' checks again, or checked whole by verify=True
    os.replace(_features_table(tmp_path, "g.vortex", seed=8), path)
    fresh = read_vortex_table(path)
    assert streamed(plain).equals(fresh) and calls
    calls.clear()
    vortex_plain_dataset(path, verify=True)
    assert is_verified(files.file_key(path))
    assert streamed(plain).equals(fresh) and not calls


def test_damage_that_the_rows_checks_cannot_see_fails_the_body(tmp_path: Path) -> None:
    from omeframe.model.errors import CorruptFileError

    n = 30_000  # the area column's bytes lie before the sealed end of the file (its last 64 KiB)
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 255, (n, 1, 2, 2), dtype=np.uint8)
    area = rng.random(n) * 100

    def table(name: str, values: np.ndarray) -> Path:
        return write_table(tmp_path / name, stack, dim_order="CYX", columns={"area": values, "n": np.arange(n)})

    path, other = table("a.vortex", area), table("b.vortex", area + 1.0)
    data, diff = path.read_bytes(), other.read_bytes()
    size = min(len(data), len(diff))
    # where the two files differ, before their sealed ends: the area column's values
    where = np.flatnonzero(np.frombuffer(data[:size], np.uint8) != np.frombuffer(diff[:size], np.uint8))
    where = where[where < len(data) - 70_000]
    assert where.size, "the area column lies in the sealed end of the file: make the table larger"
    intact = read_vortex_table(path, columns=["area"])
    kept = read_vortex_table(path, columns=["n"]).filter(pa.array(area > 50))
    refused = 0
    for at in where[:: max(1, where.size // 40)]:
        damaged = bytearray(data)
        damaged[int(at)] ^= 0x10
        path.write_bytes(bytes(damaged))
        for read, exact in (
            (lambda: vortex_plain_dataset(path).to_table(columns=["area"]), intact),  # one of two feature columns
            (lambda: vortex_plain_dataset(path).to_table(columns=["n"], filter=pc.field("area") > 50), kept),
        ):
            try:
                got = read()
            except CorruptFileError as exc:
                assert "fail their CRC-32" in str(exc)
                refused += 1
                continue
            assert got.equals(exact)
        with pytest.raises(CorruptFileError, match="fail their CRC-32"):
            vortex_plain_dataset(path, verify=True)
    assert refused


CHILD = """
import os, sys
from omeframe.formats.vortex import file as vfile
key = vfile.verified_version(sys.argv[1])
assert key is not None and vfile.is_verified(key)
with vfile._VERIFIED_LOCK:  # held while the child is forked (a process of one thread: fork is safe)
    pid = os.fork()
    if pid == 0:
        free = vfile._VERIFIED_LOCK.acquire(timeout=5)
        if free:
            vfile._VERIFIED_LOCK.release()
        os._exit(0 if free and vfile.is_verified(key) else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_keeps_the_checked_versions_with_a_free_lock(tmp_path: Path) -> None:
    import subprocess
    import sys

    # in a fresh interpreter: forking this test process, whose libraries run threads, is not safe
    path = _features_table(tmp_path)
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

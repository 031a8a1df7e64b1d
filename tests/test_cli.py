"""The ``omeframe`` command line, run as a user would: ``python -m omeframe ...``.

Checks exit codes and output lines of ingest / info / sql / export / verify /
demo, and that every failure is one ``omeframe <cmd>: error: ...`` line on
stderr with a non-zero exit status and no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import omeframe as of

tifffile = pytest.importorskip("tifffile")

REGEX = r"(?P<plate>P\d+)_(?P<well>[A-H]\d+)"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("OMEFRAME_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "omeframe", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def inproc(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The same ``main()`` in this process (fast): for the many error cases."""
    from omeframe.cli import main

    capsys.readouterr()
    rc = main(list(args))
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), rc, cap.out, cap.err)


def _one_error_line(p: subprocess.CompletedProcess[str], cmd: str) -> str:
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"omeframe {cmd}: error: ") and "Traceback" not in p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("cli")
    src = root / "src"
    src.mkdir()
    arrays = {}
    for i, (plate, well) in enumerate([("P1", "A1"), ("P1", "A2"), ("P1", "B7"), ("P2", "A1")]):
        a = np.random.default_rng(i).integers(0, 4000, (2, 40, 50)).astype(np.uint16)
        tifffile.imwrite(src / f"{plate}_{well}_f{i}.tif", a, metadata={"axes": "CYX"})
        arrays[f"{plate}_{well}_f{i}"] = a
    big = np.random.default_rng(9).integers(0, 255, (300, 260)).astype(np.uint8)
    np.save(src / "big.npy", big)  # 78 KB: into the dataset with --max-record-mib 0.05
    arrays["big"] = big
    (src / "corrupt.tif").write_bytes(b"II*\x00" + os.urandom(500))
    out = root / "cat"
    p = run("ingest", str(src), "--out", str(out), "--workers", "2", "--columns-from-path", REGEX,
            "--max-record-mib", "0.05", "--no-progress")
    return {"root": root, "src": src, "out": out, "arrays": arrays, "ingest": p}


def test_ingest_reports_and_exits_2_on_partial_failure(catalog):
    p = catalog["ingest"]
    assert p.returncode == 2, p.stderr
    assert "6 files found; 5 ingested (4 records in images.parquet, 1 images in dataset/)" in p.stdout
    assert "failed: " in p.stdout and "corrupt.tif" in p.stdout
    line = _one_error_line(p, "ingest")
    assert "1 of 6 files failed" in line
    # again, without the corrupt file: everything unchanged, exit 0
    again = run("ingest", str(catalog["src"] / "P*.tif"), str(catalog["src"] / "big.npy"),
                "--out", str(catalog["out"]), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "0 ingested" in again.stdout and "5 unchanged skipped" in again.stdout


def test_info_and_verify_on_a_catalog(catalog):
    p = run("info", str(catalog["out"]))
    assert p.returncode == 0, p.stderr
    assert f"catalog {catalog['out']}: 6 files, 5 ok, 1 errors" in p.stdout
    assert "path columns: ['plate', 'well']" in p.stdout
    v = run("verify", str(catalog["out"]))
    assert v.returncode == 0, v.stderr
    assert "ok: 4 records decode" in v.stdout and "ok: 1 images" in v.stdout


def test_sql_over_a_catalog(catalog, capsys):
    out = catalog["out"]
    p = run("sql", "SELECT plate, count(*) AS n FROM images GROUP BY plate ORDER BY plate", "--catalog", str(out))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["plate", "n"] and lines[2].split() == ["P1", "3"] and lines[3].split() == ["P2", "1"]
    assert lines[-1] == "(2 rows)"
    p = inproc(capsys, "sql", "SELECT urlpath, error_type FROM errors", "--catalog", str(out), "--format", "json")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["urlpath"].endswith("corrupt.tif")
    # the dataset's tables, plus --table and the current directory as default catalog
    p = run("sql", "SELECT count(*) AS chunks FROM dataset_chunks", "--format", "csv", cwd=out)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "chunks" and int(p.stdout.splitlines()[1]) >= 1
    p = inproc(capsys, "sql",
               "SELECT image_id, ome_arrow.pixels_meta.size_x AS sx FROM cells ORDER BY image_id LIMIT 1",
            "--table", f"cells={out / 'images.parquet'}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[2].split() == ["P1_A1_f0", "50"]


def test_sql_errors_are_one_line(catalog, capsys):
    _one_error_line(run("sql", "SELEC 1", "--catalog", str(catalog["out"])), "sql")
    line = _one_error_line(inproc(capsys, "sql", "SELECT * FROM nope", "--catalog", str(catalog["out"])), "sql")
    assert "nope" in line
    _one_error_line(inproc(capsys, "sql", "SELECT 1", "--table", "bad"), "sql")
    _one_error_line(inproc(capsys, "sql", "SELECT 1", "--catalog", str(catalog["src"])), "sql")


def test_export_roi_and_formats(catalog, capsys):
    root, out = catalog["root"], catalog["out"]
    a = catalog["arrays"]["P1_B7_f2"]
    p = run("export", str(out), str(root / "roi.npy"), "--image-id", "P1_B7_f2", "--roi", "5,10,20,15")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"wrote {root / 'roi.npy'} (npy, TCZYX (1, 2, 1, 15, 20))"
    np.testing.assert_array_equal(np.load(root / "roi.npy")[0, :, 0], a[:, 10:25, 5:25])
    p = inproc(capsys, "export", str(out), str(root / "big.parquet"), "--image-id", "big")  # from the dataset
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(of.scan(root / "big.parquet").export("numpy")[0, 0, 0], catalog["arrays"]["big"])
    p = inproc(capsys, "export", str(out / "images.parquet"), str(root / "one.npy"), "--image-id", "P2_A1_f3")
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(np.load(root / "one.npy")[0, :, 0], catalog["arrays"]["P2_A1_f3"])
    # errors: unknown id, ROI outside, unknown suffix, existing target, missing source
    assert "nope" in _one_error_line(run("export", str(out), str(root / "x.npy"), "--image-id", "nope"), "export")
    _one_error_line(
        inproc(capsys, "export", str(out), str(root / "x.npy"), "--image-id", "big", "--roi", "0,0,999,5"), "export"
    )
    _one_error_line(inproc(capsys, "export", str(out), str(root / "x.png"), "--image-id", "big"), "export")
    p = inproc(capsys, "export", str(out), str(root / "roi.npy"), "--image-id", "big")
    assert "exists" in _one_error_line(p, "export")
    _one_error_line(inproc(capsys, "export", str(root / "missing.tif"), str(root / "x.npy")), "export")


def test_export_ome_tiff_when_available(catalog, capsys):
    root = catalog["root"]
    p = inproc(capsys, "export", str(catalog["out"]), str(root / "one.ome.tif"), "--image-id", "P1_A2_f1")
    if p.returncode != 0:
        assert "not available" in _one_error_line(p, "export")
        pytest.skip("OME-TIFF export is not in this build")
    np.testing.assert_array_equal(tifffile.imread(root / "one.ome.tif"), catalog["arrays"]["P1_A2_f1"])


def test_other_commands_still_work(tmp_path, catalog, capsys):
    p = inproc(capsys, "info", str(catalog["src"] / "P1_A1_f0.tif"))
    assert p.returncode == 0, p.stderr
    _one_error_line(inproc(capsys, "info", str(tmp_path / "missing.parquet")), "info")
    _one_error_line(run("ingest", str(tmp_path / "nothing-*.tif"), "--out", str(tmp_path / "c")), "ingest")
    d = run("demo", "--out", str(tmp_path / "demo"), "--size", "512")
    assert d.returncode == 0, d.stderr
    assert "done in" in d.stdout


def test_sql_rows_need_no_pandas_for_nanosecond_timestamps(catalog, capsys):
    import pyarrow as pa

    from omeframe.cli import _without_nanoseconds

    ns = pa.array([1_700_000_000_123_456_789], pa.timestamp("ns", tz="UTC"))
    out = _without_nanoseconds(pa.RecordBatch.from_arrays([ns, pa.array([1])], names=["t", "n"]))
    assert out.schema.field("t").type == pa.timestamp("us", tz="UTC") and out.schema.field("n").type == pa.int64()
    assert out.to_pylist()[0]["t"].microsecond == 123456
    p = inproc(capsys, "sql", "SELECT urlpath, mtime FROM catalog ORDER BY urlpath LIMIT 1",
               "--catalog", str(catalog["out"]), "--format", "json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["mtime"].startswith("20")


def test_verify_names_damaged_records_and_exits_non_zero(tmp_path, capsys):
    stack = np.random.default_rng(3).integers(0, 200, (12, 2, 16, 16), dtype=np.uint8)
    path = of.write_table(tmp_path / "t.parquet", stack, dim_order="CYX", chunk_compression="zstd")
    ok = inproc(capsys, "verify", str(path))
    assert ok.returncode == 0 and "12 records decode" in ok.stdout
    index = of.open_table(path)._index
    raw = bytearray(path.read_bytes())
    chunk = int(index.first_chunk[7])
    raw[int(index.offsets_of([chunk])[0]) + 3] ^= 0x40
    path.write_bytes(bytes(raw))
    bad = inproc(capsys, "verify", str(path))
    assert bad.returncode == 1
    assert "damaged" in bad.stderr and "row 7 (img-7)" in bad.stderr


def test_verify_lists_every_damaged_dataset_chunk_and_exits_non_zero(tmp_path, capsys):
    img = np.random.default_rng(4).integers(0, 60000, (64, 64), dtype=np.uint16)
    ds = of.write_dataset(img, tmp_path / "d.omeds", chunk_shape=(1, 32, 32), compression=None, image_ids=["im"])
    assert inproc(capsys, "verify", str(ds.path)).returncode == 0
    e = ds.entry("im")
    for i in (1, 3):
        part = ds.path / e.part_of(i)
        raw = bytearray(part.read_bytes())
        raw[int(e.offsets[i]) + 10] ^= 0x01
        part.write_bytes(bytes(raw))
    res = of.open_dataset(ds.path).verify(collect=True)
    assert len(res["damaged"]) == 2 and res["chunks"] == 4
    bad = inproc(capsys, "verify", str(ds.path))
    assert bad.returncode == 1
    lines = [ln for ln in bad.stderr.splitlines() if ln.startswith("damaged:")]
    assert len(lines) == 2 and all("image 'im'" in ln for ln in lines)
    with pytest.raises(of.ChunkChecksumError):
        of.open_dataset(ds.path).verify()


@pytest.mark.parametrize("suffix", [".parquet", ".vortex"])
def test_verify_checks_shape_tables(tmp_path, capsys, suffix):
    from omeframe.shapes import make_shape_table, write_shapes

    rows = [{"object_id": f"o{i}", "image_id": "img", "geometry": [float(i), 1.0]} for i in range(30)]
    path = Path(write_shapes(make_shape_table(rows, geometry_encoding="geoarrow.point"), tmp_path / f"s{suffix}"))
    ok = inproc(capsys, "verify", str(path))
    assert ok.returncode == 0 and "ok: 30 shapes" in ok.stdout
    assert ("page CRCs and rows checked" in ok.stdout) == (suffix == ".parquet")
    if suffix == ".parquet":  # a flipped byte in the last page of object_id
        import pyarrow.parquet as pq

        cc = pq.read_metadata(path).row_group(0).column(0)
        raw = bytearray(path.read_bytes())
        raw[(cc.dictionary_page_offset or cc.data_page_offset) + cc.total_compressed_size - 2] ^= 0x08
        path.write_bytes(bytes(raw))
        bad = inproc(capsys, "verify", str(path))
        assert bad.returncode == 1
        assert f"damaged: {path}" in bad.stderr and "fails its CRC-32" in bad.stderr
        assert "FAILED: the shapes table is damaged or invalid" in bad.stdout

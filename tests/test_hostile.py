"""Hostile input: every probe ends in a typed error naming what is wrong, or in the exact result.

* codecs: compression bombs, payloads that are short, long, truncated or garbage;
* records: chunk lists that leave gaps, overlap, leave the image, have
  non-positive shapes or another dtype than ``pixels_meta.type``, sizes beyond
  the memory limit (hypothesis fuzz of the chunk keys against an independent
  oracle);
* datasets: images tables and manifests whose paths leave the dataset or
  whose sizes, offsets, lengths, grids disagree (hypothesis fuzz of the index);
* the CLI's numeric options, Vortex writes on a full disk.

The long sweeps are marked ``slow`` (``-m slow`` or ``OMEFRAME_SLOW=1``).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omeframe as of
from omeframe.engine.codec import decode_frames, decode_payload, encode_payload
from omeframe.engine.limits import check_alloc
from omeframe.model.errors import (
    CorruptFileError,
    DtypeError,
    MissingChunksWarning,
    OmeframeError,
    PixelPayloadError,
    ResourceLimitError,
)
from omeframe.model.record import chunk_tiling

SLOW = os.environ.get("OMEFRAME_SLOW") == "1"
FUZZ = settings(max_examples=300 if SLOW else 40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def small_limit():
    """A 1 MiB memory limit for one test (restored afterwards)."""
    old = of.set_max_bytes(1 << 20)
    yield 1 << 20
    of.set_max_bytes(old)


# ---------------------------------------------------------------------------
# memory limit
# ---------------------------------------------------------------------------
def test_max_bytes_api():
    default = of.get_max_bytes()
    assert default > 0
    old = of.set_max_bytes(12345)
    try:
        assert old == default and of.get_max_bytes() == 12345
        with pytest.raises(ResourceLimitError, match=r"12,346 bytes, more than the memory limit of 12,345 bytes.*"
                                                     r"omeframe.set_max_bytes"):
            check_alloc(12346, "a test buffer")
        check_alloc(12345, "a test buffer")
    finally:
        of.set_max_bytes(None)
    assert of.get_max_bytes() == default
    for bad in (0, -1, 1.5, "1", True):
        with pytest.raises(ValueError, match="set_max_bytes expects"):
            of.set_max_bytes(bad)  # type: ignore[arg-type]
    assert issubclass(ResourceLimitError, MemoryError) and issubclass(ResourceLimitError, OmeframeError)


def _record(a: np.ndarray, chunk=(1, 4, 4), compression: str | None = None) -> dict[str, Any]:
    rec = of.from_numpy(a, dim_order="TCZYX", chunk_shape=chunk, compression=compression)
    return of.to_dict(rec)


def _scalar(d: dict[str, Any]) -> pa.StructScalar:
    return pa.scalar(d, type=of.OME_ARROW_BYTE_STRUCT)


def test_a_record_declaring_a_huge_image_is_refused_before_allocating():
    a = np.arange(64, dtype=np.uint16).reshape(1, 1, 1, 8, 8)
    d = _record(a)
    d["pixels_meta"]["size_x"] = 10**9
    d["pixels_meta"]["size_y"] = 10**9
    for read in (lambda: of.to_numpy(d), lambda: of.to_numpy_batch(pa.array([d], type=of.OME_ARROW_BYTE_STRUCT))):
        with pytest.raises(ResourceLimitError, match=r"2,000,000,000,000,000,000 bytes.*set_max_bytes"):
            read()


def test_the_limit_applies_to_records_batches_and_datasets(small_limit, tmp_path):
    a = np.ones((1, 1, 1, 1024, 1024), dtype=np.uint16)  # 2 MiB decoded
    rec = of.from_numpy(a, dim_order="TCZYX", chunk_shape=(1, 256, 256))
    with pytest.raises(ResourceLimitError, match="memory limit of 1,048,576 bytes"):
        of.to_numpy(rec)
    with pytest.raises(ResourceLimitError):
        of.to_numpy_batch(pa.array([of.to_dict(rec)], type=rec.type))
    of.set_max_bytes(None)
    ds = of.write_dataset(a, tmp_path / "ds", chunk_shape=(1, 256, 256), progress=False)
    of.set_max_bytes(small_limit)
    with pytest.raises(ResourceLimitError):
        of.open_dataset(tmp_path / "ds").read()
    # a region inside the limit still reads, exactly
    got = of.open_dataset(tmp_path / "ds").read(y=(0, 100), x=(0, 100))
    np.testing.assert_array_equal(got, a[..., :100, :100])
    del ds


# ---------------------------------------------------------------------------
# codecs: bombs and payloads that lie
# ---------------------------------------------------------------------------
def test_zstd_bomb_without_content_size_is_bounded():
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (64 << 20))
    with pytest.raises(PixelPayloadError, match="decodes to more than 2048 bytes"):
        decode_payload(bomb, "zstd", np.dtype("u2"), 1024, label="c")


def test_zstd_bomb_with_a_content_size_is_refused_from_its_header():
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))
    with pytest.raises(PixelPayloadError, match="declares 67108864 bytes of content in its header"):
        decode_payload(bomb, "zstd", np.dtype("u2"), 1024, label="c")
    with pytest.raises(PixelPayloadError, match="declares 67108864 bytes"):
        decode_frames(bomb, [len(bomb)], np.dtype("u2"), 1024, label="c")


def test_a_zstd_bomb_hidden_behind_a_valid_first_frame_is_bounded():
    a = np.arange(1024, dtype=np.uint16)
    payload = zstandard.ZstdCompressor().compress(a[:512].tobytes()) + zstandard.ZstdCompressor(
        write_content_size=False).compress(b"\0" * (64 << 20))
    with pytest.raises(PixelPayloadError, match="more than 2048 bytes"):
        decode_payload(payload, "zstd", a.dtype, a.size, label="c")
    two = zstandard.ZstdCompressor().compress(a[:512].tobytes()) + zstandard.ZstdCompressor().compress(
        a[512:].tobytes())
    np.testing.assert_array_equal(decode_payload(two, "zstd", a.dtype, a.size, label="c"), a)


CODECS = [c for c in ("zstd", "lz4", "gzip", "brotli", "snappy", "lz4_raw") if pa.Codec.is_available(c)]


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_refuses_short_long_and_truncated_payloads(codec):
    a = np.arange(4096, dtype=np.uint16)
    stored, payload = encode_payload(a, codec, None)
    assert stored == codec
    np.testing.assert_array_equal(decode_payload(payload, stored, a.dtype, a.size, label="c"), a)
    raw = bytes(memoryview(payload))
    for count in (a.size - 1, a.size + 1, 2 * a.size):
        with pytest.raises(PixelPayloadError, match="^c: "):
            decode_payload(raw, codec, a.dtype, count, label="c")
    with pytest.raises(PixelPayloadError):
        decode_payload(raw[: len(raw) // 2], codec, a.dtype, a.size, label="c")
    with pytest.raises(PixelPayloadError):
        decode_payload(b"not a compressed payload at all", codec, a.dtype, a.size, label="c")
    if codec != "lz4_raw":  # a raw LZ4 block does not know its length: it cannot be padded
        got = decode_payload(raw, codec, a.dtype, a.size + 10, label="c", strict=False)
        np.testing.assert_array_equal(got[: a.size], a)
        assert not got[a.size:].any()


@pytest.mark.parametrize("codec", CODECS)
@FUZZ
@given(data=st.data())
def test_damaged_payloads_decode_to_an_error_or_the_right_length(codec, data):
    a = (np.arange(2048, dtype=np.uint16) * 7) % 500
    _, payload = encode_payload(a, codec, None)
    damaged = bytearray(bytes(memoryview(payload)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(damaged) - 1))
        damaged[pos] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(1, len(damaged)))
    try:
        got = decode_payload(bytes(damaged[:cut]), codec, a.dtype, a.size, label="c")
    except PixelPayloadError:
        return
    assert got.size == a.size  # never a silently padded or truncated chunk


# ---------------------------------------------------------------------------
# records: chunk lists that do not tile their image
# ---------------------------------------------------------------------------
IMG = (np.arange(2 * 3 * 8 * 12, dtype=np.uint16).reshape(1, 2, 3, 8, 12) * 37) % 4000


def _both(d: dict[str, Any]) -> list[Any]:
    """The record decoded one by one and in a batch (with the other records of the batch valid)."""
    return [lambda: of.to_numpy(d), lambda: of.to_numpy_batch(
        pa.array([_record(IMG), d], type=of.OME_ARROW_BYTE_STRUCT))[1]]


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda d: d["chunks"].__setitem__(1, {**d["chunks"][1], "x": d["chunks"][1]["x"] - 2}), "overlaps|both cover"),
        (lambda d: d["chunks"].append(dict(d["chunks"][0])), "overlaps|both cover"),
        (lambda d: d["chunks"][0].update(x=10), "outside the image"),
        (lambda d: d["chunks"][0].update(c=5), "outside the image"),
        (lambda d: d["chunks"][0].update(shape_y=0), "non-positive|outside"),
        (lambda d: d["chunks"][0].update(shape_x=-4), "non-positive|outside"),
        (lambda d: d["chunks"][0].update(y=-4), "outside the image"),
        (lambda d: d["pixels_meta"].update(type="bit"), r"chunks\[0\]\.dtype is '?uint16'? but pixels_meta.type"),
        (lambda d: d["chunks"][3].update(dtype="int16"), r"chunks\[3\]\.dtype is '?int16'?"),
    ],
)
def test_damaged_chunk_lists_raise_naming_the_record_and_field(damage, match):
    d = _record(IMG)
    damage(d)
    for read in _both(d):
        with pytest.raises(PixelPayloadError, match=match) as info:
            read()
        assert "record" in str(info.value) and "chunks[" in str(info.value)


def test_unknown_pixel_type_names_the_field():
    d = _record(IMG)
    d["pixels_meta"]["type"] = "uint12"
    for read in _both(d):
        with pytest.raises(DtypeError, match="pixels_meta.type"):
            read()


def test_missing_chunks_warn_and_read_as_zero_or_raise_without_fill():
    d = _record(IMG)
    gone = d["chunks"].pop(4)
    expected = IMG.copy()
    expected[gone["t"], gone["c"], gone["z"]:gone["z"] + gone["shape_z"], gone["y"]:gone["y"] + gone["shape_y"],
             gone["x"]:gone["x"] + gone["shape_x"]] = 0
    for read in _both(d):
        with pytest.warns(MissingChunksWarning, match="pixels"):
            got = read()
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(of.SelectionError, match="fill_missing=True"), warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingChunksWarning)
        of.OMEArrow(_scalar(d)).slice(0, 12, 0, 8, fill_missing=False)


def test_chunk_tiling_of_an_irregular_layout():
    shape = (1, 1, 1, 6, 6)
    o = np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 4], [0, 0, 0, 4, 0]])
    e = np.array([[1, 4, 4], [1, 6, 2], [1, 2, 4]])
    assert chunk_tiling(shape, o, e, label="r") == 0
    assert chunk_tiling(shape, o[:2], e[:2], label="r") == 8
    o2 = np.vstack([o, [[0, 0, 0, 3, 3]]])
    e2 = np.vstack([e, [[1, 1, 1]]])
    with pytest.raises(PixelPayloadError, match=r"chunks\[0\].*overlaps chunks\[3\]"):
        chunk_tiling(shape, o2, e2, label="r")


def _oracle(d: dict[str, Any]) -> np.ndarray | None:
    """Independent decoding of a raw (uncompressed) record: ``None`` when its chunks do not tile the image."""
    pm = d["pixels_meta"]
    shape = tuple(pm[k] for k in ("size_t", "size_c", "size_z", "size_y", "size_x"))
    if min(shape) <= 0:
        return None
    cover = np.zeros(shape, dtype=np.int64)
    out = np.zeros(shape, dtype=np.uint16)
    for ch in d["chunks"]:
        t, c, z, y, x = (ch[k] for k in "tczyx")
        dz, dy, dx = ch["shape_z"], ch["shape_y"], ch["shape_x"]
        if min(t, c, z, y, x) < 0 or min(dz, dy, dx) <= 0:
            return None
        if t >= shape[0] or c >= shape[1] or z + dz > shape[2] or y + dy > shape[3] or x + dx > shape[4]:
            return None
        block = np.frombuffer(ch["pixel_bytes"], dtype=np.uint16)
        if block.size != dz * dy * dx:
            return None
        cover[t, c, z:z + dz, y:y + dy, x:x + dx] += 1
        out[t, c, z:z + dz, y:y + dy, x:x + dx] = block.reshape(dz, dy, dx)
    return out if (cover == 1).all() else None


KEYS = ["t", "c", "z", "y", "x", "shape_z", "shape_y", "shape_x"]


@FUZZ
@given(data=st.data())
def test_fuzzed_record_fields_give_a_typed_error_or_the_exact_pixels(data):
    d = _record(IMG, chunk=(2, 4, 6))
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["key", "size", "drop", "dup", "type"]))
        if what == "key":
            ch = data.draw(st.sampled_from(d["chunks"]))
            ch[data.draw(st.sampled_from(KEYS))] = data.draw(st.integers(-3, 14))
        elif what == "size":
            k = data.draw(st.sampled_from(["size_t", "size_c", "size_z", "size_y", "size_x"]))
            d["pixels_meta"][k] = data.draw(st.integers(-1, 14))
        elif what == "drop" and len(d["chunks"]) > 1:
            d["chunks"].pop(data.draw(st.integers(0, len(d["chunks"]) - 1)))
        elif what == "dup":
            d["chunks"].append(dict(data.draw(st.sampled_from(d["chunks"]))))
        else:
            d["pixels_meta"]["type"] = data.draw(st.sampled_from(["uint16", "uint8", "bit", "float", "u2", "nope"]))
    expected = _oracle(d) if of.to_dict(_scalar(d))["pixels_meta"]["type"] in ("uint16", "u2") else None
    for read in _both(d):
        with warnings.catch_warnings():
            warnings.simplefilter("error", MissingChunksWarning)
            try:
                got = read()
            except (OmeframeError, MissingChunksWarning):
                continue
        assert expected is not None, "a record whose chunks do not tile its image decoded without an error"
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------
# datasets: contained paths, consistent index
# ---------------------------------------------------------------------------
A = (np.arange(2 * 40 * 30, dtype=np.uint16).reshape(1, 2, 1, 40, 30) * 11) % 3000


@pytest.fixture
def ds(tmp_path):
    path = tmp_path / "ds"
    of.write_dataset(A, path, chunk_shape=(1, 16, 16), progress=False, image_ids=["a"])
    return path


def _images(path: Path) -> tuple[pa.Table, Path]:
    m = json.loads((path / "manifest.json").read_text())
    return pq.read_table(path / m["images"]), path / m["images"]


def _seal(target: Path, m: dict[str, Any]) -> None:
    """Write manifest ``m`` to ``target`` with its own CRC made to match, as a crafter would."""
    from omeframe.formats.dataset.manifest import _content_crc

    m = {k: v for k, v in m.items() if k != "crc32"}
    m["crc32"] = _content_crc(m)
    target.write_text(json.dumps(m))


def _reseal(path: Path, names: list[Path]) -> None:
    """Record the CRCs of the files ``names`` in the dataset's current manifests (a crafted dataset is consistent)."""
    from omeframe.formats.dataset.manifest import generation_path, list_generations

    for target in (generation_path(path, list_generations(path)[-1]), path / "manifest.json"):
        m = json.loads(target.read_text())
        m["checksums"] = {**m.get("checksums", {}), **{f.name: zlib.crc32(f.read_bytes()) for f in names}}
        _seal(target, m)


def _rewrite(path: Path, table: pa.Table) -> None:
    """Replace the images table (and its Arrow IPC copy) of a dataset: a crafted dataset."""
    _, p = _images(path)
    pq.write_table(table, p)
    fast = p.with_suffix(".arrow")
    if fast.exists():
        with pa.OSFile(str(fast), "wb") as fh, pa.ipc.new_file(fh, table.schema) as w:
            w.write_table(table)
    _reseal(path, [p, fast] if fast.exists() else [p])


def _set(table: pa.Table, name: str, values: list[Any]) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def _secret(tmp_path: Path) -> Path:
    s = tmp_path / "secret.txt"
    s.write_bytes(b"top secret bytes " * 64)
    return s


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_part_outside_the_dataset_is_never_read(ds, tmp_path, how):
    secret = _secret(tmp_path)
    t, _ = _images(ds)
    if how == "dotdot":
        part = "../secret.txt"
    elif how == "absolute":
        part = str(secret)
    else:
        (ds / "chunks" / "evil.parquet").symlink_to(secret)
        part = "chunks/evil.parquet"
    _rewrite(ds, _set(t, "part", [part]))
    with pytest.raises(CorruptFileError, match=r"field 'part'.*outside the dataset") as info:
        of.open_dataset(ds).read("a")
    assert str(ds) in str(info.value) and "image 'a'" in str(info.value)


def test_a_remote_images_table_is_checked_without_touching_local_files(ds, monkeypatch):
    from omeframe.formats.dataset.validate import validate_images

    t, _ = _images(ds)

    def local(*args: object, **kw: object) -> None:
        raise AssertionError("a remote dataset's names were resolved on the local filesystem")

    monkeypatch.setattr(os.path, "realpath", local)
    monkeypatch.setattr(Path, "stat", local)
    validate_images("s3://bucket/ds", t, "images.arrow", remote=True)
    for part in ("../secret.txt", "/etc/hostname", "s3://other/chunks/p.parquet", "chunks/../../x"):
        with pytest.raises(CorruptFileError, match=r"field 'part'.*not a path inside the dataset"):
            validate_images("s3://bucket/ds", _set(t, "part", [part]), "images.arrow", remote=True)


@pytest.mark.parametrize("field", ["images", "parts"])
def test_manifest_paths_outside_the_dataset_are_refused(ds, tmp_path, field):
    _secret(tmp_path)
    from omeframe.formats.dataset.manifest import generation_path, list_generations

    current = generation_path(ds, list_generations(ds)[-1])  # the commit of record
    m = json.loads(current.read_text())
    m[field] = "../secret.txt" if field == "images" else ["/etc/hostname"]
    for target in (current, ds / "manifest.json"):
        _seal(target, m)
    with pytest.raises(CorruptFileError, match=f"manifest '{field}"):
        of.open_dataset(ds).read("a")


def test_every_flipped_byte_of_the_images_files_is_caught_by_the_manifest_crc(ds):
    """The images table and its Arrow IPC copy carry no checksum of their own: one flipped bit could
    change an image's dtype or where its chunks lie. The manifest records the CRC-32 of both files."""
    _, p = _images(ds)
    fast = p.with_suffix(".arrow")
    want = of.open_dataset(ds).read("a")
    for f in (fast, p):  # the copy readers prefer, then (with the copy gone) the table itself
        good = f.read_bytes()
        for at in np.random.default_rng(5).choice(len(good), 40, replace=False).tolist():
            bad = bytearray(good)
            bad[at] ^= 1 << (at % 8)
            f.write_bytes(bytes(bad))
            with pytest.raises(of.ChunkChecksumError, match=f"{f.name}.*fails the CRC-32 that generation 1"):
                of.open_dataset(ds).read("a")
        f.write_bytes(good)
        np.testing.assert_array_equal(of.open_dataset(ds).read("a"), want)
        if f is fast:
            fast.unlink()


def test_a_damaged_manifest_fails_its_own_crc(ds):
    from omeframe.formats.dataset.manifest import generation_path

    current = generation_path(ds, 1)
    good = current.read_text()
    m = json.loads(good)
    part = m["parts"][0]
    # well-formed JSON that means something else: another part name of the same length
    current.write_text(good.replace(part, part[:-9] + ("0" if part[-9] != "0" else "1") + part[-8:]))
    with pytest.raises(CorruptFileError, match="0000000001.json.*fails its CRC-32"):
        of.open_dataset(ds)
    current.write_text(good)
    assert of.open_dataset(ds).image_ids == ["a"]


def test_a_manifest_that_is_a_fifo_is_refused_without_blocking(ds):
    """Opening a FIFO for reading waits for a writer: a manifest that is one must be refused, not read."""
    from omeframe.formats.dataset.manifest import generation_path

    if not hasattr(os, "mkfifo"):
        pytest.skip("needs os.mkfifo")
    current = generation_path(ds, 1)
    current.unlink()
    os.mkfifo(current)
    code = (
        "import omeframe as of\n"
        "try:\n"
        f"    of.open_dataset({str(ds)!r})\n"
        "except of.NotRegularFileError as exc:\n"
        "    print('refused:', exc)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-1500:]
    assert run.stdout.startswith("refused:") and "0000000001.json" in run.stdout and "not a regular file" in run.stdout


def test_a_chunk_part_whose_footer_renames_a_column_is_corrupt(ds):
    """A flipped byte in a column name of a part's footer made chunk_stats drop that column silently."""
    (part,) = (ds / "chunks").glob("part-*.parquet")
    data = part.read_bytes()
    n = int.from_bytes(data[-8:-4], "little")
    body, footer = data[: len(data) - 8 - n], data[len(data) - 8 - n : -8]
    assert footer.count(b"mean") >= 1
    part.write_bytes(body + footer.replace(b"mean", b"meam") + data[-8:])
    with pytest.raises(CorruptFileError, match=r"part-.*'mean' is named 'meam' in the Parquet schema"):
        of.open_dataset(ds).chunk_stats("a")
    # a part without the stored Arrow schema is refused by its columns
    table = pq.read_table(part)
    pq.write_table(table, part, store_schema=False)
    with pytest.raises(CorruptFileError, match=r"part-.*holds columns \['min', 'max', 'nonzero'\] where"):
        of.open_dataset(ds).chunk_stats("a")


def test_a_vortex_part_with_a_damaged_layout_is_corrupt(tmp_path):
    path = tmp_path / "v"
    of.write_dataset(A, path, chunk_shape=(1, 16, 16), progress=False, image_ids=["a"], format="vortex")
    (part,) = (path / "chunks").glob("part-*.vortex")
    data = part.read_bytes()
    at = data.index(b"vortex.flat\x00") + 3  # a layout encoding of the footer: 'vortex.flat' -> 'vorUex.flat'
    part.write_bytes(data[:at] + b"U" + data[at + 1 :])
    with pytest.raises(CorruptFileError, match="part-.*vortex"):
        of.open_dataset(path).chunk_stats("a")


@pytest.mark.parametrize("how", ["symlink", "directory"])
def test_a_manifest_that_is_a_symlink_or_a_directory_is_refused(ds, tmp_path, how):
    from omeframe.formats.dataset.manifest import generation_path

    current = generation_path(ds, 1)
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes(current.read_bytes())  # a valid manifest, outside the dataset
    current.unlink()
    if how == "symlink":
        current.symlink_to(outside)
    else:
        current.mkdir()
    with pytest.raises(of.NotRegularFileError, match="0000000001.json' is (a symbolic link|not a regular file)"):
        of.open_dataset(ds)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("generation", "x", "'generation' is 'x'"),
        ("format", "zarr", "'format' is 'zarr'"),
        ("parts", "chunks", "'parts' is not a list"),
        ("checksums", {"a": "b"}, "'checksums' is not"),
        ("images", None, "names no images table"),
        ("images", "chunks", "lacks its images table 'chunks'"),
    ],
)
def test_manifest_fields_of_the_wrong_type_are_refused(ds, field, value, message):
    """A crafted manifest (its own CRC made to match): each field is checked, no assertion or TypeError escapes."""
    from omeframe.formats.dataset.manifest import generation_path

    for target in (generation_path(ds, 1), ds / "manifest.json"):
        m = json.loads(target.read_text())
        m[field] = value
        _seal(target, m)
    with pytest.raises(CorruptFileError, match=message):
        of.open_dataset(ds).read("a")


def test_a_symlinked_images_copy_pointing_out_is_refused(ds, tmp_path):
    secret = _secret(tmp_path)
    _, p = _images(ds)
    fast = p.with_suffix(".arrow")
    fast.unlink()
    fast.symlink_to(secret)
    with pytest.raises(CorruptFileError, match="outside the dataset"):
        of.open_dataset(ds).read("a")


def _with_list(t: pa.Table, name: str, fn) -> pa.Table:
    row = t.column(name).to_pylist()
    return _set(t, name, [fn(list(v)) if v is not None else v for v in row])


@pytest.mark.parametrize(
    "damage, field",
    [
        (lambda t: _set(t, "n_chunks", [t["n_chunks"][0].as_py() + 1]), "n_chunks"),
        (lambda t: _with_list(t, "chunk_lengths", lambda v: v[:-1]), "chunk_lengths"),
        (lambda t: _with_list(t, "chunk_lengths", lambda v: [-5] + v[1:]), "chunk_lengths"),
        (lambda t: _with_list(t, "chunk_offsets", lambda v: [10**9] + v[1:]), "chunk_offsets"),
        (lambda t: _with_list(t, "chunk_offsets", lambda v: [-1] + v[1:]), "chunk_offsets"),
        (lambda t: _with_list(t, "chunk_checksums", lambda v: v + [1]), "chunk_checksums"),
        (lambda t: _set(t, "row_start", [-1]), "row_start"),
        (lambda t: _set(t, "dtype", ["uint12"]), "dtype"),
        (lambda t: _set(t, "codec", ["zip"]), "codec"),
        (lambda t: _set(t, "chunk_grid", [{**t["chunk_grid"][0].as_py(), "chunk_x": 0}]), "chunk_grid"),
        (lambda t: _set(t, "pixels_meta", [{**t["pixels_meta"][0].as_py(), "size_y": -40}]), "pixels_meta"),
        (lambda t: pa.concat_tables([t, t]), "image_id"),
        (lambda t: _set(t, "part", [None]), "part"),
    ],
)
def test_an_inconsistent_images_table_is_refused_at_open_naming_the_field(ds, damage, field):
    t, p = _images(ds)
    _rewrite(ds, damage(t))
    with pytest.raises(CorruptFileError, match=f"images table '{p.stem}.*field '{field}'"):
        of.open_dataset(ds).read("a")


INDEX_FIELDS = ["n_chunks", "row_start", "chunk_offsets", "chunk_lengths", "chunk_checksums", "size_x", "size_y",
                "chunk_x", "chunk_y", "part"]


@FUZZ
@given(data=st.data())
def test_fuzzed_images_tables_give_a_typed_error_or_the_exact_pixels(ds, data):
    t, _ = _images(ds)
    row = t.to_pylist()[0]
    for _ in range(data.draw(st.integers(1, 3))):
        f = data.draw(st.sampled_from(INDEX_FIELDS))
        v = data.draw(st.integers(-2, 2_000))
        if f in ("size_x", "size_y"):
            row["pixels_meta"][f] = v
        elif f in ("chunk_x", "chunk_y"):
            row["chunk_grid"][f] = v
        elif f == "part":
            row["part"] = data.draw(st.sampled_from(["../x", "/etc/hostname", "chunks", "", "chunks/none.parquet"]))
        elif f in ("n_chunks", "row_start"):
            row[f] = v
        else:
            lst = list(row[f])
            i = data.draw(st.integers(0, len(lst) - 1))
            if data.draw(st.booleans()):
                lst[i] = max(v, 0) if f == "chunk_checksums" else v
            else:
                del lst[i]
            row[f] = lst
    try:
        bad = pa.Table.from_pylist([row], schema=t.schema)
    except (pa.ArrowInvalid, OverflowError):
        return
    path = ds.parent / f"fz-{uuid.uuid4().hex[:8]}"
    import shutil

    shutil.copytree(ds, path)
    try:
        _rewrite(path, bad)
        try:
            got = of.open_dataset(path).read("a")
        except (OmeframeError, FileNotFoundError):
            return
        np.testing.assert_array_equal(got, A)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_flipped_byte_in_a_chunk_part_is_an_error_or_exact(ds):
    m = json.loads((ds / "manifest.json").read_text())
    part = ds / m["parts"][0]
    raw = bytearray(part.read_bytes())
    for pos in range(0, len(raw), max(1, len(raw) // 97)):
        damaged = bytearray(raw)
        damaged[pos] ^= 0x5A
        part.write_bytes(bytes(damaged))
        try:
            got = of.open_dataset(ds).read("a")
        except (OmeframeError, OSError):
            continue
        np.testing.assert_array_equal(got, A)
    part.write_bytes(bytes(raw))


# ---------------------------------------------------------------------------
# CLI and full disk
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, option",
    [
        (["info", "x", "--rows", "-1"], "--rows"),
        (["info", "x", "--rows", "0"], "--rows"),
        (["sql", "select 1", "--max-rows", "-3"], "--max-rows"),
        (["sql", "select 1", "--width", "0"], "--width"),
        (["ingest", "a", "--out", "b", "--workers", "0"], "--workers"),
        (["ingest", "a", "--out", "b", "--max-record-mib", "-1"], "--max-record-mib"),
        (["ingest", "a", "--out", "b", "--timeout", "-2"], "--timeout"),
        (["export", "a", "b", "--row", "-1"], "--row"),
        (["demo", "--size", "nan"], "--size"),
    ],
)
def test_cli_refuses_negative_and_zero_counts(argv, option, capsys):
    from omeframe.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected" in err and argv[argv.index(option) + 1] in err


def _tmpfs(tmp_path: Path, size: str) -> Path:
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small tmpfs, which only root can mount")
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    return mnt


def test_vortex_write_on_a_full_disk_is_enospc_and_leaves_nothing(tmp_path):
    from omeframe.formats.vortex.file import write_vortex_table

    mnt = _tmpfs(tmp_path, "256k")
    try:
        t = pa.table({"a": np.random.default_rng(0).integers(0, 2**62, size=200_000)})
        with pytest.raises(OSError) as info:
            write_vortex_table(t, mnt / "x.vortex")
        assert info.value.errno == errno.ENOSPC
        assert "cannot write Vortex file" in str(info.value) and "Backtrace" not in str(info.value)
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_the_full_disk_message_reaches_the_cli_as_one_line(tmp_path):
    mnt = _tmpfs(tmp_path, "64k")
    try:
        src = tmp_path / "a.npy"
        np.save(src, np.random.default_rng(1).integers(0, 60000, (512, 512), dtype=np.uint16))
        r = subprocess.run(
            [sys.executable, "-m", "omeframe", "export", str(src), str(mnt / "a.vortex")],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert r.returncode == 1, r.stderr
        assert "No space left on device" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not [n for n in os.listdir(mnt) if n.endswith(".vortex")]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _replace_in_footer(path: Path, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (same length) in the Thrift footer of the Parquet file ``path``."""
    data = path.read_bytes()
    n = int.from_bytes(data[-8:-4], "little")
    body, footer = data[: len(data) - 8 - n], data[len(data) - 8 - n : -8]
    assert old in footer and len(old) == len(new)
    path.write_bytes(body + footer.replace(old, new) + data[-8:])


def test_a_damaged_parquet_footer_is_a_corrupt_file_on_every_read(tmp_path):
    """pyarrow raises UnicodeDecodeError for a column name that is not UTF-8: typed, with the file named."""
    stack = np.random.default_rng(1).integers(0, 255, (20, 3, 8, 8), dtype=np.uint8)
    path = of.write_table(tmp_path / "t.parquet", stack, dim_order="CYX", columns={"cell_id": list(range(20))})
    _replace_in_footer(path, b"cell_id", b"\xffell_id")  # in the schema and in every chunk's path
    for read in (lambda: of.read_table(path), lambda: of.open_table(path).to_numpy([0, 1]),
                 lambda: of.verify_table(path)):
        with pytest.raises(CorruptFileError, match="t.parquet"):
            read()


def test_verify_table_reports_damaged_feature_columns(tmp_path):
    """A flipped byte in a feature column's page: every checking reader refuses the row group, so the
    report must name it too (it used to check the record column only)."""
    from omeframe.storage.parquet_crc import CheckedParquetFile

    stack = np.random.default_rng(2).integers(0, 255, (30, 3, 8, 8), dtype=np.uint8)
    path = of.write_table(tmp_path / "t.parquet", stack, dim_order="CYX", columns={"cell_id": list(range(30))},
                          compression=None)
    with CheckedParquetFile(path) as pf:
        leaf = pf._leaves(["cell_id"])[0]
        pages = pf._pages(pf.metadata.row_group(0), 0, leaf)
        at = int(pages.starts[0] + pages.lengths[0] - 3)
    data = bytearray(path.read_bytes())
    data[at] ^= 0x11
    path.write_bytes(bytes(data))
    report = of.verify_table(path)
    assert not report.ok and "cell_id" in str(report.damaged[0]), report
    with pytest.raises(of.ChunkChecksumError, match="cell_id"):
        of.read_table(path)


def test_a_vortex_table_with_a_damaged_layout_is_corrupt_on_takes(tmp_path):
    """vortex lists a file's splits lazily: a damaged layout raised a bare RuntimeError from takes."""
    stack = np.random.default_rng(3).integers(0, 255, (20, 3, 8, 8), dtype=np.uint8)
    path = of.write_table(tmp_path / "t.vortex", stack, dim_order="CYX")
    data = path.read_bytes()
    at = data.index(b"vortex.flat\x00") + 3
    path.write_bytes(data[:at] + b"U" + data[at + 1 :])
    for read in (lambda: of.open_table(path).to_numpy([0, 3]), lambda: of.read_table(path, rows=[2])):
        with pytest.raises(CorruptFileError, match="t.vortex"):
            read()


def test_a_symlinked_manifest_json_copy_is_ignored_when_generations_rule(ds, tmp_path):
    """manifest.json is a convenience copy: as a symlink it is neither followed nor in the way."""
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes((ds / "manifest.json").read_bytes())
    (ds / "manifest.json").unlink()
    (ds / "manifest.json").symlink_to(outside)
    np.testing.assert_array_equal(of.open_dataset(ds).read("a"), A)


def test_the_images_table_carries_page_crcs_for_readers_other_than_omeframe(ds):
    from omeframe.storage.parquet_crc import CheckedParquetFile

    _, p = _images(ds)
    with CheckedParquetFile(p) as pf:
        pages = [pf._pages(pf.metadata.row_group(g), g, c) for g in range(pf.metadata.num_row_groups)
                 for c in range(pf.metadata.num_columns)]
    assert pages and all((t.crcs >= 0).all() for t in pages)


def test_a_stored_vortex_schema_with_a_name_that_is_not_utf8_is_corrupt():
    """A damaged byte in a nested field name of the stored Arrow schema surfaced later as UnicodeDecodeError."""
    import base64

    from omeframe.formats.vortex import file as vfile

    inner = pa.struct([("inner_name", pa.list_(pa.field("item", pa.uint8())))])
    schema = pa.schema([("a", pa.int32()), ("rec", inner)])
    raw = schema.serialize().to_pybytes()
    assert raw.count(b"inner_name") == 1
    damaged = raw.replace(b"inner_name", b"inner\xbaname")

    class _DType:
        def names(self) -> list[str]:
            return ["a", "rec", vfile.SCHEMA_COLUMN_PREFIX + base64.b64encode(damaged).decode("ascii")]

    class _File:
        dtype = _DType()

    with pytest.raises(CorruptFileError, match="'t.vortex': the stored Arrow schema cannot be decoded"):
        vfile._stored_schema(_File(), "t.vortex")


def test_lazy_scans_and_registration_name_damaged_parquet_files(tmp_path):
    """Arrow's page check and thrift parser raise plain OSError: omeframe.scan and duckdb.register name the file."""
    import omeframe.duckdb as ofdb
    from omeframe.storage.parquet_crc import CheckedParquetFile

    stack = np.random.default_rng(6).integers(0, 255, (12, 3, 8, 8), dtype=np.uint8)
    path = of.write_table(tmp_path / "t.parquet", stack, dim_order="CYX", compression=None)
    with CheckedParquetFile(path) as pf:
        leaf = pf._leaves(["ome_arrow"])[-1]
        pages = pf._pages(pf.metadata.row_group(0), 0, leaf)
        at = int(pages.starts[0] + pages.lengths[0] // 2)
    good = path.read_bytes()
    bad = bytearray(good)
    bad[at] ^= 0x04
    path.write_bytes(bytes(bad))
    with pytest.raises(CorruptFileError, match="t.parquet"):  # the page check, or the page's header
        of.scan(path, row_index=0).export("numpy")
    n = int.from_bytes(good[-8:-4], "little")
    start = len(good) - 8 - n
    path.write_bytes(good[:start] + b"\xff" * 8 + good[start + 8 :])  # a footer thrift cannot parse
    with pytest.raises(CorruptFileError, match="t.parquet"):
        ofdb.register(ofdb.connect(), "t", path)

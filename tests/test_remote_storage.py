"""The storage layer for URLs against a real S3 server (moto on the loopback, see tests/s3server.py)."""

from __future__ import annotations

import errno

import pytest

from forking import run_forked
from omeframe.engine.cache import shared_cache
from omeframe.errors import ConcurrentWriteError, RemoteStorageError
from omeframe.storage import remote
from omeframe.storage.remote import RemoteStore, coalesce
from omeframe.storage.url import is_remote, local_path, parse_location


def test_parse_locations() -> None:
    assert parse_location("s3://b//k/") .url == "s3://b/k"  # type: ignore[union-attr]
    assert parse_location("gs://b/k").protocol == "gcs"  # type: ignore[union-attr]
    assert parse_location("az://c/k").protocol == "az"  # type: ignore[union-attr]
    assert parse_location("https://h:8/a/b").path == "https://h:8/a/b"  # type: ignore[union-attr]
    assert parse_location("memory://x/y").path == "/x/y"  # type: ignore[union-attr]
    assert not is_remote("a/b") and not is_remote("C:\\data\\x.tif") and not is_remote("file:///tmp/x")
    assert str(local_path("file:///tmp/a%20b")) == "/tmp/a b"
    with pytest.raises(ValueError, match="unknown URL scheme 'ftp'"):
        parse_location("ftp://host/x")
    with pytest.raises(ValueError, match="no bucket"):
        parse_location("s3://")


def test_coalesce() -> None:
    assert coalesce([(100, 110), (0, 10), (12, 20)], gap=5) == [(0, 20), (100, 110)]
    assert coalesce([(0, 10), (10, 20)], gap=1, limit=15) == [(0, 10), (10, 20)]


def test_ranges_coalesced_concurrent_and_cached(bucket) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    store = RemoteStore(url + "/d", opts)
    blob = bytes(range(256)) * 64
    store.put("blob.bin", blob)
    server.counts.reset()
    f = store.open("blob.bin", size=len(blob))
    got = f.read_ranges([(0, 10), (20, 30), (8000, 8100)])
    assert got == [blob[0:10], blob[20:30], blob[8000:8100]]
    assert server.counts.requests(method="GET") == 1  # one coalesced request
    assert f.read_range(20, 10) == blob[20:30]
    assert server.counts.requests() == 1  # served from the shared cache
    remote.COALESCE_GAP, old = 4, remote.COALESCE_GAP
    try:
        f2 = store.open("blob.bin", size=len(blob))
        shared_cache().discard_prefix(("remote", f2.url))
        f2.read_ranges([(100, 110), (5000, 5010), (9000, 9010)])
    finally:
        remote.COALESCE_GAP = old
    assert server.counts.requests(method="GET") == 4


def test_retries_and_errors(bucket, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    monkeypatch.setattr(remote, "BACKOFF_SECONDS", 0.001)
    store = RemoteStore(url, opts)
    store.put("x.bin", b"abcdefgh" * 100)
    for inject in (lambda: server.faults.status(503, 2), lambda: server.faults.drop(1),
                   lambda: server.faults.truncate(1), lambda: server.faults.status(429, 1)):
        shared_cache().clear()
        server.counts.reset()
        inject()
        assert store.open("x.bin", size=800).read_range(0, 800) == b"abcdefgh" * 100
        assert server.counts.requests() >= 2
    server.faults.status(403, 1)
    server.counts.reset()
    shared_cache().clear()
    with pytest.raises(RemoteStorageError, match=r"x\.bin.*HTTP 403") as info:
        store.open("x.bin", size=800).read_range(0, 8)
    assert info.value.status == 403 and server.counts.requests() == 1  # 4xx: no retry
    server.faults.status(500, 99)
    server.counts.reset()
    with pytest.raises(RemoteStorageError, match=r"HTTP 500.*gave up after 4 retries"):
        store.open("x.bin", size=800).read_range(0, 16)
    assert server.counts.requests() == 1 + remote.RETRIES  # one retry layer, not the client's on top
    server.faults.clear()
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        store.open("missing.bin").read_range(0, 4)
    with pytest.raises(FileNotFoundError):
        RemoteStore("s3://no-such-bucket-omeframe", opts).open("k").read_range(0, 4)


def test_conditional_put(bucket) -> None:  # type: ignore[no-untyped-def]
    url, opts, _ = bucket
    store = RemoteStore(url, opts)
    store.put("_manifests/1.json", b"one", if_none_match=True)
    with pytest.raises(ConcurrentWriteError):
        store.put("_manifests/1.json", b"two", if_none_match=True)
    assert store.cat("_manifests/1.json") == b"one"
    assert store.list("_manifests") == ["1.json"]


@pytest.mark.parametrize("client", ["s3", "memory"])
def test_an_open_file_reads_its_version_or_raises_file_changed(bucket, client, default_cache) -> None:  # type: ignore[no-untyped-def]
    """Overwritten (longer, shorter, same size) or removed: never the new bytes, never a retry loop."""
    from omeframe.errors import FileChangedError

    url, opts, _ = bucket
    store = RemoteStore(url, opts) if client == "s3" else RemoteStore(f"memory://{url[5:]}")
    old = bytes(range(256)) * 8
    for new in (b"x" * 100, b"y" * len(old), b"z" * (2 * len(old)), None):
        store.put("a.bin", old)
        f = store.open("a.bin")
        assert f.size == len(old)  # the HEAD that pins the version (as opening a table does)
        assert f.read_range(0, 16) == old[:16]
        if new is None:
            store.delete("a.bin")
        else:
            store.put("a.bin", new)
        retries = remote.STATS.snapshot()["retries"]
        assert f.read_range(0, 16) == old[:16]  # cached under the version it was opened at
        with pytest.raises(FileChangedError, match="open it again") as err:
            f.read_range(1000, 24)  # never read: the old version is gone
        assert err.value.filename == f.url and err.value.errno == errno.ESTALE
        assert ("removed" if new is None else "overwritten") in str(err.value)
        assert remote.STATS.snapshot()["retries"] == retries


def test_object_versions_and_the_etags_a_get_can_be_conditional_on() -> None:
    """Each client's name for the ETag or modification time; only strong ETags go into If-Match."""
    assert remote.object_version({"ETag": '"abc"', "LastModified": 1}) == "abc"  # s3fs
    assert remote.object_version({"etag": "0x8D1"}) == "0x8D1"  # adlfs, gcsfs
    assert remote.object_version({"Last-Modified": "Sun, 06 Dec 2026 14:49:53 GMT"}) == (
        "Last-Modified=Sun, 06 Dec 2026 14:49:53 GMT")  # fsspec's HTTP client, a server without ETags
    assert remote.object_version({"size": 3}) is None
    assert remote._etag("abc") == "abc"
    assert remote._etag("created=2026-12-06") is None  # a time, not an ETag
    assert remote._etag(remote.object_version({"ETag": 'W/"5f3c-1a2b"'})) is None  # weak: If-Match never matches


def test_locks_held_by_a_parent_thread_at_fork_are_free_in_the_child() -> None:
    """A fork while another thread probes a server (or commits to memory://) leaves the child usable."""
    run_forked(
        "import threading, omeframe.storage.remote as r\n"
        "held, done = threading.Event(), threading.Event()\n"
        "def hold():\n"
        "    with r._IF_MATCH_LOCK, r._MEMORY_LOCK:\n"
        "        held.set(); done.wait(30)\n"
        "threading.Thread(target=hold, daemon=True).start(); held.wait(10)\n",
        "ok = r._IF_MATCH_LOCK.acquire(timeout=5) and r._MEMORY_LOCK.acquire(timeout=5)\n"
        "os._exit(0 if ok else 3)\n",
        after="done.set()\n",
    )

"""The two read clients of the storage layer (obstore and fsspec/s3fs) against the test S3 server.

Reads, listings, retries and errors must behave the same whichever client
serves them; obstore stands in for s3fs only where its options mean the same
thing, and never in a process forked after it ran.
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Iterator
from typing import Any

import pytest

from omeframe.engine.cache import shared_cache
from omeframe.errors import OptionalDependencyError, RemoteStorageError
from omeframe.storage import obstore_reads, remote
from omeframe.storage.obstore_reads import CLIENT_ENV, obstore_reader
from omeframe.storage.remote import RemoteStore
from omeframe.storage.url import parse_location


@pytest.fixture(params=["obstore", "fsspec"])
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Force one read client for the test (fresh readers either way); obstore comes with the remote extra."""
    monkeypatch.setenv(CLIENT_ENV, request.param)
    obstore_reads._CACHE.clear()
    yield request.param
    obstore_reads._CACHE.clear()


def test_reads_listings_retries_and_errors_are_the_same_on_both_clients(bucket, client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    monkeypatch.setattr(remote, "BACKOFF_SECONDS", 0.001)
    store = RemoteStore(url + "/d", opts)
    assert (store.reader is not None) == (client == "obstore")
    blob = bytes(range(256)) * 40
    store.put("sub/blob.bin", blob)
    store.put("top.json", b"{}")
    assert store.list("") == ["sub", "top.json"] and store.list("sub") == ["blob.bin"] and store.list("none") == []
    assert store.cat("top.json") == b"{}"
    server.counts.reset()
    f = store.open("sub/blob.bin", size=len(blob))
    assert f.read_ranges([(0, 10), (5000, 5100), (10230, 10240)], cache=False) == [
        blob[0:10], blob[5000:5100], blob[10230:10240]]
    assert server.counts.requests(method="GET") == 1  # coalesced into one request
    for inject in (lambda: server.faults.status(503, 2), lambda: server.faults.drop(1),
                   lambda: server.faults.truncate(1), lambda: server.faults.status(429, 1)):
        shared_cache().clear()
        server.counts.reset()
        inject()
        assert store.open("sub/blob.bin", size=len(blob)).read_range(100, 900) == blob[100:1000]
        assert server.counts.requests() >= 2
    shared_cache().clear()
    server.faults.status(403, 1)
    with pytest.raises(RemoteStorageError, match=r"blob\.bin.*HTTP 403.*credentials") as info:
        store.open("sub/blob.bin", size=len(blob)).read_range(0, 8)
    assert info.value.status == 403
    server.faults.status(500, 99)
    server.counts.reset()
    with pytest.raises(RemoteStorageError, match=r"HTTP 500.*gave up after 4 retries"):
        store.cat("top.json")
    assert server.counts.requests() == 1 + remote.RETRIES  # obstore's own retries are off
    server.faults.clear()
    with pytest.raises(FileNotFoundError, match=r"missing\.bin.*HTTP 404"):
        store.cat("missing.bin")
    with pytest.raises(FileNotFoundError, match=r"missing\.bin"):
        store.open("missing.bin", size=10).read_range(0, 4)


def test_obstore_stands_in_only_where_the_options_mean_the_same(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    loc = parse_location("s3://bkt/prefix")
    assert loc is not None
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    cfg = obstore_reads._config({"key": "k", "secret": "s", "token": "t",
                                 "endpoint_url": "http://127.0.0.1:9", "client_kwargs": {"region_name": "eu"}})
    assert cfg == {"access_key_id": "k", "secret_access_key": "s", "session_token": "t", "region": "eu",
                   "endpoint": "http://127.0.0.1:9", "client_options": {"allow_http": True},
                   "retry_config": {"max_retries": 0}}
    anon = obstore_reads._config({"anon": True, "client_kwargs": {"region_name": "us-west-2"}})
    assert isinstance(anon, dict) and anon["skip_signature"] is True and anon["client_options"] == {}
    for options, why in (
        ({"key": "k", "secret": "s", "profile": "lab"}, "profile"),
        ({"key": "k", "secret": "s", "client_kwargs": {"region_name": "eu", "verify": False}}, "verify"),
        ({"key": "k", "secret": "s", "config_kwargs": {"signature_version": "s3v4"}}, "signature_version"),
        ({"client_kwargs": {"region_name": "eu"}}, "~/.aws"),
        ({"key": "k", "secret": "s"}, "region"),
    ):
        reason = obstore_reads._config(options)
        assert isinstance(reason, str) and why in reason
        obstore_reads._CACHE.clear()
        assert obstore_reader(loc, options) is None  # auto: s3fs serves it
        monkeypatch.setenv(CLIENT_ENV, "obstore")
        obstore_reads._CACHE.clear()
        with pytest.raises(ValueError, match=re.escape(why)):
            obstore_reader(loc, options)
        monkeypatch.delenv(CLIENT_ENV)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    obstore_reads._CACHE.clear()
    assert obstore_reader(loc, {}) is not None  # credentials and region from the environment
    mem = parse_location("memory://x/y")
    assert mem is not None and obstore_reader(mem, {}) is None
    monkeypatch.setenv(CLIENT_ENV, "obstore")
    with pytest.raises(ValueError, match="s3:// only"):
        obstore_reader(mem, {})
    monkeypatch.setenv(CLIENT_ENV, "rust")
    with pytest.raises(ValueError, match="'rust' is not a read client"):
        obstore_reader(loc, {})
    obstore_reads._CACHE.clear()


def test_obstore_forced_without_obstore_names_the_package(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import builtins

    real_import = builtins.__import__

    def no_obstore(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("obstore"):
            raise ImportError("No module named 'obstore'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_obstore)
    monkeypatch.setenv(CLIENT_ENV, "obstore")
    obstore_reads._CACHE.clear()
    loc = parse_location("s3://bkt/p")
    assert loc is not None
    with pytest.raises(OptionalDependencyError, match="pip install obstore"):
        obstore_reader(loc, {"anon": True, "client_kwargs": {"region_name": "eu"}})
    monkeypatch.setenv(CLIENT_ENV, "auto")
    assert obstore_reader(loc, {"anon": True, "client_kwargs": {"region_name": "eu"}}) is None
    obstore_reads._CACHE.clear()


def _child_read(url: str, opts: dict[str, Any]) -> tuple[bool, bytes, int]:
    store = RemoteStore(url, opts)
    return store.reader is None, store.cat("x.bin"), sum(len(c) for c in obstore_reads._INHERITED)


@pytest.fixture
def auto_store(bucket, monkeypatch):  # type: ignore[no-untyped-def]
    """``(store, url, options, server)``: a store read through obstore by the default rule, holding x.bin."""
    url, opts, server = bucket
    monkeypatch.setenv(CLIENT_ENV, "auto")
    obstore_reads._CACHE.clear()
    store = RemoteStore(url, opts)
    store.put("x.bin", b"payload")
    assert store.reader is not None and not store.reader.redirected
    yield store, url, opts, server
    obstore_reads._CACHE.clear()


def test_a_process_forked_after_obstore_ran_reads_through_fsspec(auto_store) -> None:  # type: ignore[no-untyped-def]
    store, url, opts, _ = auto_store
    assert store.cat("x.bin") == b"payload"  # obstore's threads now run here
    with multiprocessing.get_context("fork").Pool(1) as pool:
        on_fsspec, data, inherited = pool.apply_async(_child_read, (url, opts)).get(timeout=60)
    assert on_fsspec and data == b"payload"  # a hang or crash here is what the fallback prevents
    assert inherited >= 1  # the parent's client was set aside in the child, never dropped there


def test_a_bucket_in_another_region_moves_the_reads_to_fsspec(auto_store) -> None:  # type: ignore[no-untyped-def]
    store, url, opts, server = auto_store
    server.faults.status(301, 1)  # what S3 answers a request sent to another region's endpoint
    server.counts.reset()
    assert store.cat("x.bin") == b"payload"  # s3fs, which finds the bucket's own region, served it
    assert server.counts.requests() == 2 and store.reader.redirected
    other = RemoteStore(url, opts)  # every store of the bucket now reads through fsspec
    assert other.reader is store.reader
    other.put("y.bin", b"more")
    assert other.cat("y.bin") == b"more" and other.list("") == ["x.bin", "y.bin"]
    server.faults.status(403, 1)
    with pytest.raises(RemoteStorageError, match="HTTP 403"):  # other answers are errors, not fallbacks
        RemoteStore(url, {**opts, "token": "other"}).cat("x.bin")


def test_only_a_redirect_or_a_region_complaint_counts_as_the_wrong_region() -> None:
    from obstore.exceptions import GenericError

    def translated(message: str) -> Exception:
        return obstore_reads._translate(GenericError(message + "\n\nDebug source: retry_timeout: 180s"))

    moved = translated("Error performing GET in 4ms - Received redirect without LOCATION")
    assert isinstance(moved, obstore_reads.ObstoreHTTPError) and moved.wrong_region and moved.status == 301
    signed = translated("Server returned non-2xx status code: 400 Bad Request: the region 'us-east-1' is wrong")
    assert isinstance(signed, obstore_reads.ObstoreHTTPError) and signed.wrong_region
    bad = translated("Server returned non-2xx status code: 400 Bad Request: <Code>InvalidRequest</Code>")
    assert isinstance(bad, obstore_reads.ObstoreHTTPError) and not bad.wrong_region and bad.status == 400
    other = translated("Generic S3 error: something unexpected")  # the debug dump's "timeout" is not read
    assert not isinstance(other, (ConnectionError, obstore_reads.ObstoreHTTPError))
    assert isinstance(translated("HTTP error: error sending request"), ConnectionError)

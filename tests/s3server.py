"""An S3 server on the loopback address for the tests: moto in server mode behind a counting proxy.

:func:`start` launches ``moto.server.ThreadedMotoServer`` on 127.0.0.1 (a free
port) and a small HTTP proxy in front of it. Clients talk to the proxy, which
counts every request and the body bytes it returns per path, and can inject
faults: latency, HTTP 5xx answers, dropped connections and truncated bodies.
Nothing leaves the loopback address.

Example (inside a test)::

    server = s3server.start()
    server.faults.status(503, times=2)     # the next two requests get 503
    server.counts.reset(); ...; server.counts.requests("bucket/ds/")
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


@dataclass
class Counts:
    """Requests and response body bytes per request path (thread-safe)."""

    log: list[tuple[str, str, int, float, float]] = field(default_factory=list)  # method, path, bytes, t0, t1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, nbytes: int, t0: float) -> None:
        with self.lock:
            self.log.append((method, path, nbytes, t0, time.monotonic()))

    def reset(self) -> None:
        with self.lock:
            self.log.clear()

    def requests(self, prefix: str = "", method: str | None = None) -> int:
        with self.lock:
            return sum(1 for m, p, _, _, _ in self.log if p.lstrip("/").startswith(prefix) and method in (None, m))

    def bytes(self, prefix: str = "") -> int:
        with self.lock:
            return sum(n for _, p, n, _, _ in self.log if p.lstrip("/").startswith(prefix))

    def rounds(self, prefix: str = "") -> int:
        """Sequential round trips: the most requests of which each started after the previous ended.

        Requests sent together overlap (the proxy's latency keeps them in
        flight together), so they count as one round.
        """
        with self.lock:
            spans = sorted((t1, t0) for _, p, _, t0, t1 in self.log if p.lstrip("/").startswith(prefix))
        n, end = 0, float("-inf")
        for t1, t0 in spans:
            if t0 >= end:
                n, end = n + 1, t1
        return n

    def by_path(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        with self.lock:
            for _, p, _, _, _ in self.log:
                out[p] += 1
        return dict(out)


@dataclass
class Faults:
    """Faults the proxy injects into the next requests (each entry is used once)."""

    latency: float = 0.0
    ignore_if_match: bool = False  # forward requests without If-Match, as a server or cache that ignores it
    queue: list[tuple[str, Any]] = field(default_factory=list)
    match: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self, code: int, times: int = 1, match: str = "") -> None:
        """Answer the next ``times`` requests (whose path contains ``match``) with HTTP ``code``."""
        with self.lock:
            self.queue += [("status", (code, match))] * times

    def drop(self, times: int = 1, match: str = "") -> None:
        """Close the connection without an answer, ``times`` times."""
        with self.lock:
            self.queue += [("drop", (0, match))] * times

    def truncate(self, times: int = 1, match: str = "") -> None:
        """Send half of the body (with the full Content-Length) and close, ``times`` times."""
        with self.lock:
            self.queue += [("truncate", (0, match))] * times

    def clear(self) -> None:
        with self.lock:
            self.queue.clear()
            self.latency = 0.0
            self.ignore_if_match = False

    def take(self, path: str) -> tuple[str, int] | None:
        with self.lock:
            for i, (kind, (code, match)) in enumerate(self.queue):
                if match in path:
                    del self.queue[i]
                    return kind, code
        return None


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as HTTP servers set it: the headers and the body go out as two
    # writes, and with Nagle's algorithm a small body waited for the client's
    # delayed ACK of the headers (about 40 ms on Linux on a kept-alive connection).
    disable_nagle_algorithm = True
    server: Any

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        srv = self.server
        t0 = time.monotonic()
        path = urlsplit(self.path).path
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = self._read_chunked()
        else:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
        if srv.faults.latency:
            time.sleep(srv.faults.latency)
        fault = srv.faults.take(path)
        if fault is not None and fault[0] == "drop":
            srv.counts.add(self.command, path, 0, t0)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault[0] == "status":
            code = {403: "AccessDenied", 404: "NoSuchKey", 429: "SlowDown", 503: "SlowDown"}.get(
                fault[1], "InternalError" if fault[1] >= 500 else "InvalidRequest")
            msg = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
            srv.counts.add(self.command, path, 0, t0)
            self.send_response(fault[1])
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            if self.command != "HEAD":  # a body after a HEAD answer would corrupt the kept-alive connection
                self.wfile.write(msg)
            return
        conn = http.client.HTTPConnection("127.0.0.1", srv.upstream_port, timeout=30)
        dropped = HOP | ({"if-match"} if srv.faults.ignore_if_match else set())
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
        if body or self.command in ("PUT", "POST"):
            headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
            headers["Content-Length"] = str(len(body))
        # S3 decides a conditional write and makes it in one step; moto checks the condition, then
        # writes, on a thread per request, so two conditional creates of one key could both succeed.
        # The proxy lets one conditional write through at a time, as S3 behaves.
        conditional = self.command in ("PUT", "POST") and any(
            k.lower() in ("if-none-match", "if-match") for k in headers
        )
        with srv.conditional_writes if conditional else contextlib.nullcontext():
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        conn.close()
        srv.counts.add(self.command, path, len(data), t0)
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and (k.lower() != "content-length" or self.command == "HEAD"):
                self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault is not None and fault[0] == "truncate" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


@dataclass
class S3Server:
    """A running moto server and its proxy (use :attr:`endpoint` as ``endpoint_url``)."""

    endpoint: str
    counts: Counts
    faults: Faults
    moto: Any
    proxy: ThreadingHTTPServer

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"key": "testing", "secret": "testing", "endpoint_url": self.endpoint,
                "client_kwargs": {"region_name": "us-east-1"}}

    def stop(self) -> None:
        self.proxy.shutdown()
        self.proxy.server_close()
        self.moto.stop()


def _serve_moto() -> None:
    """Child process of :func:`start` with ``own_process=True``: run moto, print its port, stop at stdin's end."""
    import logging
    import sys

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    _serve_ranges_from_memory()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    print(moto.get_host_and_port()[1], flush=True)
    sys.stdin.read()  # returns when the parent closes the pipe (or exits)
    moto.stop()


def _serve_ranges_from_memory() -> None:
    """Make a ranged GET cost what it costs on S3, not a read of the whole object.

    moto answers every GET, ranged or not, by reading the object's whole body
    from its spool file and slicing it: a 1 KiB range of a 32 MiB object took
    21 ms against 2 ms for a small object. Here each object's body is read
    once and kept (objects are immutable; writing a key drops its copy), so
    a range costs its own bytes, as on a real object store.
    """
    from moto.s3.models import FakeKey

    prop = FakeKey.value
    read, write = prop.fget, prop.fset

    def value(self: Any) -> bytes:
        body = self.__dict__.get("_kept_body")
        if body is None:
            body = self.__dict__["_kept_body"] = read(self)
        return body

    def set_value(self: Any, new: Any) -> None:
        self.__dict__.pop("_kept_body", None)
        write(self, new)

    FakeKey.value = property(value, set_value)  # type: ignore[method-assign,assignment]


class _MotoProcess:
    """moto in a process of its own (the ``moto`` of an :class:`S3Server` started with ``own_process``)."""

    def __init__(self) -> None:
        import os
        import subprocess
        import sys

        here = os.path.dirname(os.path.abspath(__file__))
        code = f"import sys; sys.path.insert(0, {here!r}); import s3server; s3server._serve_moto()"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self._proc.kill()
            raise RuntimeError(f"moto's server process did not report its port (got {line!r})")
        self.port = int(line)

    def stop(self) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
            self._proc.wait(10)
        except Exception:  # noqa: BLE001 - a server that does not stop is killed
            self._proc.kill()


def start(own_process: bool = False) -> S3Server:
    """Start moto (server mode) and the proxy on 127.0.0.1; both on free ports.

    With ``own_process`` (the benchmarks), moto runs in a process of its own,
    as a real object store would, so its request handling does not compete
    with the client for this interpreter, and serves ranged GETs from a kept
    copy of each object (:func:`_serve_ranges_from_memory`). The proxy, which
    counts and injects faults, stays in this process.
    """
    import logging

    # moto serves through werkzeug, which logs every request at INFO: keep test and benchmark output clean
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    moto: Any
    if own_process:
        moto = _MotoProcess()
        port = moto.port
    else:
        from moto.server import ThreadedMotoServer

        # port 0: the server binds an ephemeral port itself (no window in which another
        # process could take a port chosen beforehand)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        port = moto.get_host_and_port()[1]
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    proxy.daemon_threads = True
    proxy.upstream_port = port  # type: ignore[attr-defined]
    proxy.conditional_writes = threading.Lock()  # type: ignore[attr-defined]
    proxy.counts = Counts()  # type: ignore[attr-defined]
    proxy.faults = Faults()  # type: ignore[attr-defined]
    threading.Thread(target=proxy.serve_forever, daemon=True, name="s3-proxy").start()
    endpoint = f"http://127.0.0.1:{proxy.server_address[1]}"
    return S3Server(endpoint, proxy.counts, proxy.faults, moto, proxy)  # type: ignore[attr-defined]

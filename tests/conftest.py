"""Shared fixtures: the optional array libraries (torch, JAX) the tensor tests need, and more.

pyproject's ``test`` extra declares JAX for every supported Python and torch
for Python 3.11 only (the one torch wheel this project's machines hold is a
CPU build for 3.11; elsewhere pip would download a multi-GB CUDA build). A
test that asks for one of these fixtures skips, with the reason, where the
package is not declared or not installed. Under ``OMEFRAME_REQUIRE_EXTRAS=1``
(set by ``make test`` and ``make test-all``, so by CI) a package the extra
declares for this Python but that cannot be imported fails the test instead
of skipping it, so a broken install never turns into silently skipped tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

PY = f"{sys.version_info.major}.{sys.version_info.minor}"

# gcsfs (from 2026.x) asks Google's gRPC storage-control API whether each bucket is
# zonal or hierarchical before its first request; the GCS emulator of the ``gcs``
# fixture serves only the JSON API, so every new bucket would wait out a 60 s
# timeout. gcsfs reads this switch when it is imported.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

#: torch is declared in the test extra for these Pythons only (see pyproject.toml).
TORCH_DECLARED = sys.version_info < (3, 12)

TORCH_SKIP_REASON = (
    f"torch is not tested on Python {PY}: torch is only available as a CPU build for Python 3.11 "
    "on this machine (torch==2.13.0 from the local wheel); for other Pythons pip would download "
    "a multi-GB CUDA build, so the test extra installs torch on 3.11 only"
)


def _require_extras() -> bool:
    return os.environ.get("OMEFRAME_REQUIRE_EXTRAS", "") not in ("", "0")


def _optional(name: str, declared: bool, skip_reason: str) -> ModuleType:
    """Import ``name``; skip with ``skip_reason`` when absent, fail when it should be there."""
    try:
        return __import__(name)
    except ImportError as exc:
        if declared and _require_extras():
            pytest.fail(
                f"{name} is declared in the test extra for Python {PY} but cannot be imported ({exc}); "
                "reinstall the test extra: pip install -e '.[test]' (make test-all does this when "
                "pyproject.toml changes)"
            )
        pytest.skip(skip_reason if not declared else f"{name} is not installed ({exc}); pip install -e '.[test]'")


@pytest.fixture
def torch() -> ModuleType:
    """The ``torch`` module (skips on Pythons the test extra installs no torch for)."""
    return _optional("torch", TORCH_DECLARED, TORCH_SKIP_REASON)


@pytest.fixture
def jax() -> ModuleType:
    """The ``jax`` module (declared in the test extra for every supported Python)."""
    return _optional("jax", True, "")


@pytest.fixture
def pyvista() -> ModuleType:
    """The ``pyvista`` module (declared in the test extra for every supported Python)."""
    return _optional("pyvista", True, "")


@pytest.fixture(scope="session")
def s3():  # type: ignore[no-untyped-def]
    """A moto S3 server on 127.0.0.1 behind a counting, fault-injecting proxy (see tests/s3server.py).

    Dummy AWS credentials are set for the session's duration only; nothing
    leaves the loopback address.
    """
    _optional("moto.server", True, "")  # declared in the test extra: missing fails under OMEFRAME_REQUIRE_EXTRAS
    _optional("s3fs", True, "")
    import s3server

    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    server = s3server.start()
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def bucket(s3):  # type: ignore[no-untyped-def]
    """A fresh bucket on the test S3 server: ``(url, storage_options, server)``; counts and faults reset."""
    import uuid

    import boto3

    name = f"b-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    s3.faults.clear()
    s3.counts.reset()
    yield f"s3://{name}", s3.storage_options, s3
    s3.faults.clear()


@pytest.fixture(scope="session")
def gcs_server():  # type: ignore[no-untyped-def]
    """A Google Cloud Storage emulator (``gcp-storage-emulator``, JSON API) on 127.0.0.1, in memory."""
    _optional("gcp_storage_emulator", True, "")  # declared in the test extra
    _optional("gcsfs", True, "")
    import logging

    from gcp_storage_emulator.server import create_server

    # it logs every request at INFO and every 404 (a probe for an optional object) at ERROR
    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
    _honour_if_generation_match()
    server = create_server("127.0.0.1", 0, in_memory=True)  # port 0: the server binds a free port itself
    server.start()
    try:
        yield f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
    finally:
        server.stop()


def _honour_if_generation_match() -> None:
    """Make the emulator's uploads refuse ``ifGenerationMatch=0`` when the object exists, as GCS does.

    ``gcp-storage-emulator`` ignores the precondition; GCS answers 412
    (``conditionNotMet``) to a create-only upload of an object that has a live
    version, which is how datasets commit a generation. Only that one
    condition is added; uploads without it are untouched.
    """
    from http import HTTPStatus

    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    if getattr(objects, "_omeframe_precondition", False):
        return

    def conditional(upload):  # type: ignore[no-untyped-def]
        def run(request, response, storage):  # type: ignore[no-untyped-def]
            if request.query.get("ifGenerationMatch") == ["0"]:
                name = request.query.get("name", [None])[0]
                if name is None and isinstance(request.data, dict):
                    name = (request.data.get("meta") or {}).get("name")
                try:
                    storage.get_file_obj(request.params["bucket_name"], name)
                except NotFound:
                    pass
                else:
                    response.status = HTTPStatus.PRECONDITION_FAILED
                    response.json({"error": {"code": 412, "message": "At least one of the pre-conditions "
                                             "you specified did not hold.", "errors": [
                                                 {"reason": "conditionNotMet", "message": "conditionNotMet"}]}})
                    return None
            return upload(request, response, storage)
        return run

    objects._multipart_upload = conditional(objects._multipart_upload)
    objects._media_upload = conditional(objects._media_upload)
    objects._omeframe_precondition = True


@pytest.fixture
def gcs(gcs_server):  # type: ignore[no-untyped-def]
    """A fresh bucket on the GCS emulator: ``(url, storage_options)``."""
    import uuid

    import gcsfs

    opts = {"endpoint_url": gcs_server, "token": "anon", "project": "omeframe-tests"}
    name = f"b-{uuid.uuid4().hex[:10]}"
    gcsfs.GCSFileSystem(**opts).mkdir(name)
    yield f"gs://{name}", opts


@pytest.fixture
def default_cache() -> Iterator[None]:
    """The shared byte cache with its default budget, empty before and after the test."""
    from omeframe.engine.cache import DEFAULT_CACHE_BYTES, shared_cache

    shared_cache().set_max_bytes(DEFAULT_CACHE_BYTES)
    shared_cache().clear()
    yield
    shared_cache().set_max_bytes(DEFAULT_CACHE_BYTES)
    shared_cache().clear()

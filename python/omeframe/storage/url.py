"""URLs and local paths: one parser for every place omeframe accepts a location.

A location is either a local path (``str`` or ``os.PathLike`` without a
scheme, or a ``file://`` URL) or a remote object-store / HTTP URL:
``s3://bucket/key``, ``gs://bucket/key`` (``gcs://``), ``az://container/key``
(``abfs://``, ``abfss://``), ``http(s)://host/path`` and ``memory://path``
(fsspec's in-process store, for tests). :func:`parse_location` tells them
apart; local paths keep going through :mod:`omeframe.storage.files` (``pread``
and memory maps), remote ones through :mod:`omeframe.storage.remote`.

Example
-------
>>> parse_location("s3://bucket/slides/").url
's3://bucket/slides'
>>> parse_location("file:///tmp/x.parquet") is None
True
>>> is_remote("slides/")
False
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "SCHEMES",
    "RemoteURL",
    "parse_location",
    "is_remote",
    "local_path",
    "join_url",
    "check_storage_options",
]

#: Accepted remote schemes -> the fsspec protocol that serves them.
SCHEMES: dict[str, str] = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "az",
    "abfs": "abfs",
    "abfss": "abfs",
    "http": "http",
    "https": "https",
    "memory": "memory",
}

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


@dataclass(frozen=True)
class RemoteURL:
    """A normalised remote location.

    Attributes
    ----------
    scheme : str
        The scheme as written, lower case (``"s3"``, ``"https"`` ...).
    protocol : str
        The fsspec protocol serving it (``"s3"``, ``"gcs"``, ``"az"`` ...).
    url : str
        The full URL without a trailing slash (``s3://bucket/key``).
    path : str
        What the fsspec filesystem calls the object (``bucket/key``; the full
        URL for HTTP).
    """

    scheme: str
    protocol: str
    url: str
    path: str

    def join(self, *parts: str) -> RemoteURL:
        """The location ``parts`` below this one (``/``-joined, no normalisation of ``..``)."""
        return _make(self.scheme, join_url(self.url, *parts))

    def __str__(self) -> str:
        return self.url


def join_url(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined by single slashes."""
    out = base.rstrip("/")
    for p in parts:
        p = str(p).strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def _make(scheme: str, url: str) -> RemoteURL:
    protocol = SCHEMES[scheme]
    rest = url.split("://", 1)[1]
    if protocol in ("http", "https"):
        path = url
    elif protocol == "memory":
        path = "/" + rest.lstrip("/")
    else:
        path = rest
    return RemoteURL(scheme=scheme, protocol=protocol, url=url, path=path)


def parse_location(location: object) -> RemoteURL | None:
    """The :class:`RemoteURL` of a remote location, or ``None`` for a local path.

    ``file://`` URLs and plain paths (including Windows drive paths) are local.

    Raises
    ------
    ValueError
        For a URL of an unknown scheme, or an object-store URL without a
        bucket (``s3://``).

    Example
    -------
    >>> parse_location("S3://bucket//a/b/").url
    's3://bucket/a/b'
    >>> parse_location(Path("a/b")) is None
    True
    """
    if isinstance(location, RemoteURL):
        return location
    if not isinstance(location, (str, os.PathLike)):
        return None
    text = os.fspath(location)
    if not isinstance(text, str):
        return None
    m = _SCHEME_RE.match(text)
    if m is None or _WINDOWS_DRIVE.match(text):
        return None
    scheme = m.group(1).lower()
    if scheme == "file":
        return None
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown URL scheme {scheme!r} in {text!r}: omeframe reads local paths, file:// and "
            f"{', '.join(s + '://' for s in sorted(SCHEMES))}; check the URL (or install the fsspec "
            "implementation and open the file yourself)"
        )
    rest = text[m.end():]
    if SCHEMES[scheme] in ("http", "https"):
        split = urlsplit(text)
        if not split.netloc:
            raise ValueError(f"{text!r} names no host; expected {scheme}://host/path")
        url = f"{scheme}://{split.netloc}{split.path.rstrip('/')}"
        if split.query:
            url += "?" + split.query
        return _make(scheme, url)
    parts = [p for p in rest.split("/") if p]
    if not parts and SCHEMES[scheme] != "memory":
        raise ValueError(f"{text!r} names no bucket or container; expected {scheme}://<bucket>/<key>")
    return _make(scheme, f"{scheme}://" + "/".join(parts))


def is_remote(location: object) -> bool:
    """True when ``location`` is a remote URL (see :func:`parse_location`)."""
    return parse_location(location) is not None


def check_storage_options(storage_options: Mapping[str, Any] | None, *locations: object) -> None:
    """Refuse ``storage_options`` where nothing would use them.

    Options configure the filesystem of a remote URL; a call may take several
    locations (an input and an output), ``None`` for one not given. When none
    of them is a URL, the options would do nothing: with local paths
    (``file://`` included), with an object that is already open (an
    ``ImageTable`` or ``Dataset`` reads with the options it was opened with)
    or with an array. The call is then refused rather than leaving the user to
    believe they applied. Empty options (``None``, ``{}``) are no options.

    Raises
    ------
    ValueError
        Naming the locations or the object's type, and what to do instead.

    Example
    -------
    >>> check_storage_options({"anon": True}, "s3://bucket/t.parquet")
    >>> check_storage_options({}, "t.parquet")
    >>> check_storage_options({"anon": True}, "t.parquet", None)
    Traceback (most recent call last):
    ...
    ValueError: storage_options apply to URLs only, but 't.parquet' is a local path; drop storage_options or pass a URL
    """
    if not storage_options:
        return
    given = [loc for loc in locations if loc is not None]
    paths = [os.fspath(loc) for loc in given if isinstance(loc, (str, os.PathLike))]
    if any(parse_location(p) is not None for p in paths):
        return
    for loc in given:
        if not isinstance(loc, (str, os.PathLike)):
            kind = type(loc).__name__
            if kind in ("ImageTable", "Dataset", "DatasetReader"):
                raise ValueError(
                    f"storage_options apply to a path or URL, but an open {kind} was given, which reads with "
                    f"the options it was opened with; drop storage_options, or pass its URL instead"
                )
            raise ValueError(f"storage_options apply to a path or URL, but a {kind} was given; drop storage_options")
    if not paths:
        raise ValueError("storage_options apply to URLs only, but no URL was given; drop storage_options")
    named = " and ".join(repr(p) for p in paths)
    raise ValueError(
        f"storage_options apply to URLs only, but {named} {'is a local path' if len(paths) == 1 else 'are local'}; "
        "drop storage_options or pass a URL"
    )


def local_path(location: str | os.PathLike[str]) -> Path:
    """The local :class:`~pathlib.Path` of a plain path or a ``file://`` URL.

    Raises
    ------
    ValueError
        When ``location`` is a remote URL (use :mod:`omeframe.storage.remote`).
    """
    text = os.fspath(location)
    if parse_location(text) is not None:
        raise ValueError(f"{text!r} is a remote URL, not a local path")
    if text.lower().startswith("file://"):
        split = urlsplit(text)
        if split.netloc not in ("", "localhost"):
            raise ValueError(f"{text!r} names host {split.netloc!r}; file:// URLs must be local")
        return Path(unquote(split.path))
    return Path(text)

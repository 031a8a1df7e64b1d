"""Exception types raised by omeframe.

Every error derives from :class:`OmeframeError` and from the builtin type a
caller would naturally catch (``ValueError``, ``TypeError``, ``IndexError`` ...),
so ``except ValueError`` keeps working for code written against ``ome_arrow``.
"""

from __future__ import annotations

__all__ = [
    "OmeframeError",
    "DimOrderError",
    "DtypeError",
    "SchemaError",
    "NoOmeArrowColumnError",
    "RowIndexError",
    "PixelPayloadError",
    "CorruptFileError",
    "ChunkChecksumError",
    "ConcurrentWriteError",
    "SelectionError",
    "ImageNotFoundError",
    "OptionalDependencyError",
    "UnsupportedFormatError",
    "ResourceLimitError",
    "MissingChunksWarning",
    "NotRegularFileError",
    "FileChangedError",
    "FileTimeoutError",
    "InvalidOMEXMLValueWarning",
    "ShapeValidationError",
    "UnitError",
    "RemoteStorageError",
]


class OmeframeError(Exception):
    """Base class of every error omeframe raises on purpose."""


class DimOrderError(OmeframeError, ValueError):
    """A dimension-order / axes string does not describe the array."""


class DtypeError(OmeframeError, ValueError):
    """A pixel dtype is unknown, unsupported, or cannot be stored as asked."""


class SchemaError(OmeframeError, ValueError):
    """An Arrow value or table does not follow the OME-Arrow schema."""


class NoOmeArrowColumnError(SchemaError):
    """A table has no column holding OME-Arrow records."""


class RowIndexError(OmeframeError, IndexError, ValueError):
    """A row index is outside the table."""


class PixelPayloadError(OmeframeError, ValueError):
    """A chunk or plane carries a pixel payload of the wrong size or encoding."""

    #: In a bulk decode of many frames: the number of the frame that failed (counting from 0 in
    #: the order they were decoded), so that the caller can name its record; ``None`` otherwise.
    frame: int | None = None


class CorruptFileError(OmeframeError, ValueError):
    """A file is truncated, corrupt, or not of the format it claims."""


class ChunkChecksumError(CorruptFileError):
    """A chunk's bytes do not match the checksum stored beside them."""


class ConcurrentWriteError(OmeframeError, RuntimeError):
    """Another writer committed to the same dataset first; nothing of this write was committed.

    Dataset writes commit by compare-and-swap on the manifest generation: of
    two writers based on the same generation exactly one commits. The other
    raises this error (after cleaning up its own files) unless it was given
    ``retries=`` and its images do not clash with the winner's, in which case
    it rebases onto the new generation and commits after it.
    """


class RemoteStorageError(OmeframeError, OSError):
    """A request to object storage or an HTTP server failed (after any retries).

    The message names the URL, the operation and the HTTP status (or the
    network error) and says whether retrying could help.

    Attributes
    ----------
    url : str
        The object the request was for.
    status : int | None
        The HTTP status, when the server answered.
    """

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SelectionError(OmeframeError, ValueError):
    """A region or index selection does not fit the image."""


class ImageNotFoundError(OmeframeError, KeyError):
    """A dataset or table has no image with the requested id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class OptionalDependencyError(OmeframeError, ImportError):
    """A feature needs an optional package that is not installed."""


class UnsupportedFormatError(OmeframeError, ValueError, TypeError):
    """A path or object is of no format omeframe can open.

    A ``ValueError`` for paths and a ``TypeError`` for objects of unsupported
    types, as callers of ``ome_arrow`` would catch them.

    The message names what was given, the formats the registry knows (with
    their suffixes) and, where a format needs one, the extra to install.
    """


class ResourceLimitError(OmeframeError, MemoryError):
    """An operation would allocate more memory than the configured limit allows.

    Raised before allocating, from sizes a file or record declares (an image
    claiming ``size_x=10**9``, a chunk grid, a tensor view). The message gives
    the declared size, the limit and how to raise it
    (``omeframe.set_max_bytes``).
    """


class MissingChunksWarning(UserWarning):
    """A lenient read (``strict=False``) filled pixels no stored chunk covers with zeros."""


class NotRegularFileError(OmeframeError, OSError):
    """A path names a FIFO, device, socket, symlink loop or dangling symlink: it is never opened."""


class FileChangedError(OmeframeError, OSError):
    """A file or object changed since it was opened, so reading on would mix versions (``errno.ESTALE``).

    ``filename`` names the path or URL. Raised, instead of returning bytes of
    another version:

    * by a record table whose file was replaced or rewritten since it was
      opened, on a read that would open the file again by its name, a take
      from its memory map after a rewrite in place, or a range GET of a
      remote object overwritten (or removed) since;
    * in a worker process, by a table or a lazy plan sent there whose file is
      no longer the version its sender opened;
    * as a catalog build's error row, for a file that changed while it was
      read (the next build reads it again).

    Open the table (or make the plan) again to read the current version.
    """


class FileTimeoutError(OmeframeError, TimeoutError):
    """Reading one file took longer than its time budget (a catalog build's ``timeout=``)."""


class InvalidOMEXMLValueWarning(UserWarning):
    """An optional metadata value the OME schema forbids was left out of written OME-XML.

    OME-XML writers (``to_ome_tiff``) validate every optional value against the
    OME 2016-06 schema before writing it: a wavelength that is not > 0 (OME-Arrow
    records often carry ``emission_um=0.0`` meaning "unknown"), an
    ``IlluminationType`` outside ``Transmitted``, ``Epifluorescence``,
    ``Oblique``, ``NonLinear``, ``Other`` (e.g. ``"Unknown"``), a physical size
    that is not > 0 or has a unit the schema does not know. Such a value is
    dropped, never written, so the file stays readable by strict OME readers;
    the warning names each dropped value. Pixels are never affected.
    """


class ShapeValidationError(SchemaError):
    """A shape or relationship table breaks the OME-Arrow shapes rules.

    ``row`` is the first offending row (``None`` when the schema or its
    metadata is wrong), ``field`` the column, ``object_id`` the row's object
    (for shape tables) when known.
    """

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None,
                 object_id: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.field = field
        self.object_id = object_id


class UnitError(OmeframeError, ValueError):
    """A physical size is missing, or its unit is not a length omeframe converts to µm."""


#: Errors that say a file could not be read as it was opened (gone, denied, changed, a request that
#: failed), never that its bytes are damaged: readers pass them on instead of raising CorruptFileError.
ACCESS_ERRORS: tuple[type[BaseException], ...] = (
    OmeframeError, FileNotFoundError, PermissionError, IsADirectoryError, TimeoutError, InterruptedError,
)


def reraise_access_error(exc: BaseException) -> None:
    """Re-raise ``exc`` if it is one of :data:`ACCESS_ERRORS`; return otherwise.

    Parsers (tifffile, pyarrow) raise ``OSError`` and ``ValueError`` for damaged
    bytes, and readers turn those into :class:`CorruptFileError`. The same
    parsers pass on what the file object under them raised: a remote object
    overwritten since it was opened (:class:`FileChangedError`), a failed
    request (:class:`RemoteStorageError`), a file removed or denied. Call this
    first in such an ``except`` block, so that these keep their own type and
    message instead of calling the file corrupt (omeframe's own errors, a
    :class:`ChunkChecksumError` among them, are already precise).

    Example
    -------
    >>> try:
    ...     try:
    ...         raise FileChangedError(116, "overwritten since it was opened", "s3://b/a.tif")
    ...     except OSError as exc:
    ...         reraise_access_error(exc)
    ...         raise CorruptFileError("not a readable TIFF file") from exc
    ... except OSError as exc:
    ...     print(type(exc).__name__)
    FileChangedError
    """
    if isinstance(exc, ACCESS_ERRORS):
        raise exc

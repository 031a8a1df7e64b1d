"""Pixel dtypes: the names stored in ``pixels_meta.type`` and their numpy types."""

from __future__ import annotations

from typing import Any

import numpy as np

from omeframe.model.errors import DtypeError

__all__ = ["SUPPORTED_DTYPES", "LIST_VARIANT_DTYPES", "to_numpy_dtype", "dtype_name", "native"]

#: Every pixel dtype omeframe stores natively, by the name written to the record.
SUPPORTED_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name)
    for name in (
        "bool",
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "uint64",
        "int64",
        "float32",
        "float64",
    )
}

#: Dtypes whose every value fits in the list variant's ``list<uint16>`` exactly.
LIST_VARIANT_DTYPES = frozenset({"bool", "uint8", "uint16"})

# Names other writers use for the same types (OME-XML pixel types among them).
_ALIASES = {
    "bit": "bool",
    "boolean": "bool",
    "float": "float32",
    "single": "float32",
    "double": "float64",
    "u1": "uint8",
    "u2": "uint16",
    "u4": "uint32",
    "u8": "uint64",
    "i1": "int8",
    "i2": "int16",
    "i4": "int32",
    "i8": "int64",
    "f4": "float32",
    "f8": "float64",
}


def to_numpy_dtype(value: Any) -> np.dtype[Any]:
    """Return the numpy dtype for a dtype name, numpy dtype or Python type.

    Raises
    ------
    DtypeError
        If the dtype is unknown or not one omeframe stores.
    """
    if isinstance(value, str):
        key = value.strip().lower()
        key = _ALIASES.get(key, key)
        found = SUPPORTED_DTYPES.get(key)
        if found is None:
            raise DtypeError(
                f"unknown pixel dtype {value!r}; expected one of "
                f"{', '.join(SUPPORTED_DTYPES)} (or an OME alias: bit, float, double)"
            )
        return found
    try:
        dt = np.dtype(value)
    except TypeError as exc:
        raise DtypeError(f"not a dtype: {value!r}") from exc
    name = dt.newbyteorder("=").name if dt.byteorder not in ("=", "|") else dt.name
    if name not in SUPPORTED_DTYPES:
        raise DtypeError(
            f"pixel dtype {dt} is not supported; expected one of "
            f"{', '.join(SUPPORTED_DTYPES)}"
        )
    return SUPPORTED_DTYPES[name]


def output_dtype(value: Any) -> np.dtype[Any]:
    """The numpy dtype pixels are read out as: any bool, integer or float dtype numpy knows (float16 too).

    Raises
    ------
    DtypeError
        For a name numpy does not know, or complex, string and object dtypes.

    Example
    -------
    >>> output_dtype("float16")
    dtype('float16')
    """
    try:
        dt = np.dtype(value)
    except TypeError as exc:
        raise DtypeError(f"dtype {value!r} is no numpy dtype; pass e.g. 'uint16' or 'float32'") from exc
    if dt.kind not in "biuf":
        raise DtypeError(f"pixels cannot be read out as {dt}; pass a bool, integer or float dtype")
    return dt


def dtype_name(value: Any) -> str:
    """Return the canonical record name (``"uint16"``, ``"float32"`` ...) of a dtype."""
    return to_numpy_dtype(value).name


def native(arr: np.ndarray) -> np.ndarray:
    """Return ``arr`` in native byte order (a view when it already is)."""
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "<" and np.little_endian is False):
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr

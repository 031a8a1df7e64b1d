"""Column selections of tables: one check for every reader that takes ``columns=``."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["check_column_name", "check_columns"]


def check_columns(columns: Sequence[str] | None, names: Sequence[str], where: str) -> list[str] | None:
    """``columns`` as a list, checked against the table's column ``names``; ``None`` for all columns.

    Parameters
    ----------
    columns
        The selection a caller passed (``None``: every column).
    names
        The columns the table has.
    where
        Names the table in messages (a path or URL, quoted).

    Raises
    ------
    TypeError
        For a string (a selection is a list of names: ``["area"]``, not ``"area"``).
    KeyError
        For names the table does not have (the message lists its columns).
    ValueError
        For a name given twice.

    Example
    -------
    >>> check_columns(["b"], ["a", "b"], "'t.parquet'")
    ['b']
    >>> check_columns(["c"], ["a", "b"], "'t.parquet'")
    Traceback (most recent call last):
    ...
    KeyError: "'t.parquet' has no column(s) ['c']; its columns: ['a', 'b']"
    """
    if columns is None:
        return None
    if isinstance(columns, (str, bytes)):
        raise TypeError(f"columns must be a list of column names, not a string; pass [{columns!r}]")
    wanted = list(columns)
    have = set(names)
    missing = [c for c in wanted if c not in have]
    if missing:
        raise KeyError(f"{where} has no column(s) {missing}; its columns: {list(names)}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"columns names a column twice: {wanted}")
    return wanted


def check_column_name(name: object, argument: str = "column_name", *, optional: bool = False) -> None:
    """Refuse a column name that is not a non-empty string (``None`` too, when ``optional``).

    Raises
    ------
    TypeError
        For anything but a string (a number, a list ...).
    ValueError
        For the empty string.

    Example
    -------
    >>> check_column_name("image")
    >>> check_column_name(5)
    Traceback (most recent call last):
    ...
    TypeError: column_name must be the name of a column (a string), got 5
    """
    if name is None and optional:
        return
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be the name of a column (a string), got {name!r}")
    if not name:
        raise ValueError(f"{argument} must not be empty")

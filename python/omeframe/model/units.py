"""Length units of physical pixel sizes, and the pixel sizes of an image in micrometres.

OME metadata stores a pixel size with its unit (``physical_size_x`` and
``physical_size_x_unit``). :func:`to_micrometres` converts a length in any
OME length unit to µm; :func:`pixel_size_um` returns an image header's pixel
size along one axis in µm, and raises :class:`~omeframe.model.errors.UnitError` when the header
has none (``None``) or its unit is not a length (``"pixel"``, ``"s"`` ...).
Nothing here guesses: an image without a physical size is never read as
1 µm per pixel.

Pure values: this module imports :mod:`omeframe.model.errors` only.

Example
-------
>>> to_micrometres(250.0, "nm")
0.25
>>> micrometres_per("mm")
1000.0
"""

from __future__ import annotations

import math
from typing import Any

from omeframe.model.errors import UnitError

__all__ = ["micrometres_per", "to_micrometres", "pixel_size_um"]


#: Micrometres per unit, by the spellings OME-XML, OME-Zarr and ImageJ use.
_UM_PER: dict[str, float] = {
    "ym": 1e-18, "yoctometer": 1e-18, "yoctometre": 1e-18,
    "zm": 1e-15, "zeptometer": 1e-15, "zeptometre": 1e-15,
    "am": 1e-12, "attometer": 1e-12, "attometre": 1e-12,
    "fm": 1e-9, "femtometer": 1e-9, "femtometre": 1e-9,
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "å": 1e-4, "Å": 1e-4, "angstrom": 1e-4, "ångström": 1e-4,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "dm": 1e5, "decimeter": 1e5, "decimetre": 1e5,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "in": 25400.0, "inch": 25400.0,
    "ft": 304800.0, "foot": 304800.0,
    "mi": 1609344e3, "mile": 1609344e3,
    "yd": 914400.0, "yard": 914400.0,
    "pt": 25400.0 / 72, "thou": 25.4, "mil": 25.4,
}


def micrometres_per(unit: str) -> float:
    """How many µm one ``unit`` is (``"nm"`` -> 0.001).

    Raises
    ------
    UnitError
        If ``unit`` is not a length unit (e.g. ``"pixel"``, ``"s"``).
    """
    key = str(unit).strip()
    factor = _UM_PER.get(key, _UM_PER.get(key.lower()))
    if factor is None:
        raise UnitError(
            f"unit {unit!r} is not a length omeframe can convert to micrometres; known units include "
            "nm, µm (um, micron), mm, cm, m, Å and inch; fix the image's physical_size_*_unit metadata"
        )
    return factor


#: Length units OME allows besides physical ones: sizes in pixels, or in an unnamed reference frame.
NON_PHYSICAL_UNITS = frozenset({"pixel", "reference frame"})


def check_physical_sizes(sizes: dict[str, Any], unit: str | None) -> None:
    """Check pixel sizes given when an image is built: finite and > 0, in a length unit OME knows.

    ``sizes`` maps ``"physical_size_x"`` ... to a value or ``None`` (unknown).

    Raises
    ------
    ValueError
        For a size that is not a finite number > 0.
    UnitError
        For a unit that is not a length (``"pixel"`` and ``"reference frame"`` are allowed).

    Example
    -------
    >>> check_physical_sizes({"physical_size_x": 0.5}, "nm")
    >>> check_physical_sizes({"physical_size_x": -1.0}, "µm")
    Traceback (most recent call last):
    ...
    ValueError: physical_size_x must be a finite number > 0 (a pixel size), got -1.0; pass None when it is unknown
    """
    for name, value in sizes.items():
        if value is None:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if isinstance(value, bool) or not math.isfinite(v) or v <= 0:
            raise ValueError(
                f"{name} must be a finite number > 0 (a pixel size), got {value!r}; pass None when it is unknown"
            )
    if unit is not None and str(unit).strip().lower() not in NON_PHYSICAL_UNITS:
        micrometres_per(unit)


def to_micrometres(value: float, unit: str) -> float:
    """``value`` ``unit`` in µm."""
    return float(value) * micrometres_per(unit)


def pixel_size_um(header: Any, axis: str) -> float:
    """The pixel size of ``header`` along ``axis`` (``"x"``, ``"y"`` or ``"z"``) in µm.

    Parameters
    ----------
    header
        An :class:`~omeframe.model.header.ImageHeader` (anything with
        ``physical_size_<axis>`` and ``physical_size_<axis>_unit``).
    axis
        ``"x"``, ``"y"`` or ``"z"``.

    Raises
    ------
    UnitError
        When the header has no pixel size along ``axis``, the size is not
        positive, or its unit is not a length.

    Example
    -------
    >>> from omeframe.model.header import ImageHeader
    >>> h = ImageHeader.basic("a", "a", 1, physical={"x": 250.0, "y": 250.0, "unit": "nm"})
    >>> pixel_size_um(h, "x")
    0.25
    """
    if axis not in ("x", "y", "z"):
        raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    size = getattr(header, f"physical_size_{axis}", None)
    unit = getattr(header, f"physical_size_{axis}_unit", None)
    name = getattr(header, "image_id", None) or "the image"
    how = (
        "select in pixels instead, or give the image its pixel size when it is ingested "
        "(e.g. omeframe.from_numpy(arr, physical_size_x=0.5, physical_size_y=0.5, physical_size_unit='µm'), "
        "or write the source file with its pixel size: OME-XML PhysicalSize*, TIFF resolution tags, "
        "OME-Zarr scale with a unit)"
    )
    if size is None:
        raise UnitError(
            f"{name!r} has no physical pixel size along {axis.upper()} (it is unknown, not 1 µm), so a size, "
            f"position or resolution in micrometres cannot be converted to pixels; {how}"
        )
    value = float(size)
    if not value > 0:
        raise UnitError(f"{name!r} has physical_size_{axis}={size!r}; a pixel size must be > 0")
    if unit is None:
        raise UnitError(
            f"{name!r} has physical_size_{axis}={value:g} without a unit, so its pixel size in micrometres is "
            f"unknown; {how}"
        )
    return value * micrometres_per(unit)

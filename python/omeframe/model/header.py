"""The header of an image: everything about it except its pixels.

:class:`ImageHeader` is what every source reports and every writer records.
It is immutable (a frozen dataclass whose channels are a tuple of frozen
:class:`Channel` values): derive a changed header with
``dataclasses.replace``, so no reader or writer can alter another's header.
``default_channels`` / ``select_channels`` build channel entries and
``normalize_chunk_shape`` clips a chunk shape to an image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from omeframe.model.arrow import OME_ARROW_TAG_TYPE, OME_ARROW_TAG_VERSION
from omeframe.model.checks import is_integer

#: ``color_rgba`` of a channel without a colour of its own (opaque white).
DEFAULT_COLOR_RGBA = 0xFFFFFFFF


@dataclass(frozen=True)
class Channel:
    """One channel of an image: the ``pixels_meta.channels`` entry of OME-Arrow.

    Attributes
    ----------
    id, name
        Identifier and display name.
    emission_um, excitation_um
        Wavelengths in micrometres, when known.
    illumination
        Illumination type (e.g. ``"Epifluorescence"``), when known.
    color_rgba
        Display colour packed as ``0xRRGGBBAA``.

    Examples
    --------
    >>> ch = Channel.from_dict({"id": "ch-0", "name": "DAPI", "color_rgba": 0x0000FFFF})
    >>> ch.name, hex(ch.color_rgba)
    ('DAPI', '0xffff')
    >>> Channel.from_dict(ch.as_dict()) == ch
    True
    """

    id: str | None = None
    name: str | None = None
    emission_um: float | None = None
    excitation_um: float | None = None
    illumination: str | None = None
    color_rgba: int | None = None

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | Channel, index: int = 0) -> Channel:
        """A channel from an OME-Arrow ``channels`` entry (missing fields stay ``None``).

        Raises
        ------
        TypeError
            When ``entry`` is neither a mapping nor a :class:`Channel`.
        """
        if isinstance(entry, Channel):
            return entry
        if not isinstance(entry, Mapping):
            raise TypeError(f"a channel entry must be a mapping or a Channel, got {type(entry).__name__}")
        unknown = set(entry) - _CHANNEL_FIELDS
        if unknown:
            raise ValueError(
                f"channel {index} has unknown fields {sorted(unknown)}; an OME-Arrow channel has "
                f"{sorted(_CHANNEL_FIELDS)}"
            )
        return cls(**entry)

    def as_dict(self) -> dict[str, Any]:
        """The OME-Arrow ``channels`` entry (a plain dict)."""
        return asdict(self)


_CHANNEL_FIELDS = frozenset(f.name for f in fields(Channel))


def channels_of(entries: Iterable[Mapping[str, Any] | Channel] | None) -> tuple[Channel, ...]:
    """Channel entries (mappings or :class:`Channel` values) as a tuple of channels."""
    return tuple(Channel.from_dict(e, i) for i, e in enumerate(entries or ()))


@dataclass(frozen=True)
class ImageHeader:
    """Everything about one image except its pixels (immutable).

    ``channels`` may be given as mappings (OME-Arrow ``channels`` entries);
    they are stored as a tuple of :class:`Channel`.

    A physical pixel size that is not known is ``None`` (with a ``None``
    unit): it is stored as a null in the record's ``pixels_meta`` (the
    OME-Arrow struct is unchanged; its fields are nullable) and every read in
    micrometres refuses it (:func:`omeframe.model.units.pixel_size_um`). A
    size without a unit is not known in micrometres either.

    Examples
    --------
    >>> from dataclasses import replace
    >>> h = ImageHeader.basic("img-1", "cells", 2)
    >>> [c.name for c in h.channels]
    ['C0', 'C1']
    >>> replace(h, name="renamed").name, h.name
    ('renamed', 'cells')
    """

    image_id: str
    name: str
    image_type: str | None
    acquisition_datetime: datetime | None
    channels: tuple[Channel, ...]
    physical_size_x: float | None = None
    physical_size_y: float | None = None
    physical_size_z: float | None = None
    physical_size_x_unit: str | None = None
    physical_size_y_unit: str | None = None
    physical_size_z_unit: str | None = None
    dtype_meta: str | None = None
    dimension_order: str | None = None
    type_: str = OME_ARROW_TAG_TYPE
    version: str = OME_ARROW_TAG_VERSION

    def __post_init__(self) -> None:
        chans: Any = self.channels
        if not (isinstance(chans, tuple) and all(isinstance(c, Channel) for c in chans)):
            object.__setattr__(self, "channels", channels_of(chans))

    def pixels_meta(self, shape: Sequence[int], dtype_str: str) -> dict[str, Any]:
        """The OME-Arrow ``pixels_meta`` dict of an image of TCZYX ``shape`` with this header."""
        st, sc, sz, sy, sx = (int(v) for v in shape)
        return {
            "dimension_order": self.dimension_order or ("XYZCT" if sz > 1 else "XYCT"),
            "type": self.dtype_meta or dtype_str,
            "size_x": sx,
            "size_y": sy,
            "size_z": sz,
            "size_c": sc,
            "size_t": st,
            "physical_size_x": self.physical_size_x,
            "physical_size_y": self.physical_size_y,
            "physical_size_z": self.physical_size_z,
            "physical_size_x_unit": self.physical_size_x_unit,
            "physical_size_y_unit": self.physical_size_y_unit,
            "physical_size_z_unit": self.physical_size_z_unit,
            "channels": [c.as_dict() for c in self.channels],
        }

    @classmethod
    def basic(
        cls,
        image_id: str,
        name: str,
        size_c: int,
        *,
        channel_names: Sequence[str] | None = None,
        physical: Any = None,
        image_type: str | None = None,
    ) -> ImageHeader:
        """A header for a source that knows little: ids, default channels, spacing.

        ``physical`` maps ``"x"``/``"y"``/``"z"`` to pixel sizes and ``"unit"``
        to their unit (default ``"µm"``); a missing or ``None`` size is
        unknown (``None``, with a ``None`` unit; see :func:`physical_fields`).
        """
        phys = physical or {}
        return cls(
            image_id=image_id,
            name=name,
            image_type=image_type,
            acquisition_datetime=None,
            channels=default_channels(channel_names, size_c),
            **physical_fields(phys.get("x"), phys.get("y"), phys.get("z"), phys.get("unit")),
        )

    @classmethod
    def from_meta(
        cls,
        pixels_meta: dict[str, Any],
        *,
        image_id: str | None,
        name: str | None,
        image_type: str | None = None,
        acquisition_datetime: datetime | None = None,
        type_: str | None = None,
        version: str | None = None,
    ) -> ImageHeader:
        """The header of an image described by an OME-Arrow ``pixels_meta`` dict."""
        pm = pixels_meta
        size_c = int(pm.get("size_c") or 1)
        chans = channels_of(pm.get("channels")) or default_channels(None, size_c)
        return cls(
            image_id=image_id or "unnamed",
            name=name or "unknown",
            image_type=image_type,
            acquisition_datetime=acquisition_datetime,
            channels=chans,
            physical_size_x=pm.get("physical_size_x"),
            physical_size_y=pm.get("physical_size_y"),
            physical_size_z=pm.get("physical_size_z"),
            physical_size_x_unit=pm.get("physical_size_x_unit"),
            physical_size_y_unit=pm.get("physical_size_y_unit"),
            physical_size_z_unit=pm.get("physical_size_z_unit"),
            dtype_meta=pm.get("type"),
            dimension_order=pm.get("dimension_order"),
            type_=type_ or OME_ARROW_TAG_TYPE,
            version=version or OME_ARROW_TAG_VERSION,
        )


def physical_fields(
    x: float | None, y: float | None, z: float | None, unit: str | None = None
) -> dict[str, Any]:
    """The six ``physical_size_*`` header fields from per-axis sizes and one unit.

    A size of ``None`` is unknown: it stays ``None`` and so does its unit.
    A known size gets ``unit`` (``"µm"`` when ``None``).

    Examples
    --------
    >>> physical_fields(0.5, 0.5, None)["physical_size_z"] is None
    True
    >>> physical_fields(0.5, 0.5, None, "nm")["physical_size_x_unit"]
    'nm'
    """
    out: dict[str, Any] = {}
    for axis, value in (("x", x), ("y", y), ("z", z)):
        known = value is not None
        out[f"physical_size_{axis}"] = float(value) if known else None  # type: ignore[arg-type]
        out[f"physical_size_{axis}_unit"] = (unit or "µm") if known else None
    return out


def check_labels(label: str, values: Sequence[Any] | None, n: int, of: str = "images") -> None:
    """Check per-image ``image_ids`` / ``names`` / ``channel_names``: one non-empty entry per item.

    Entries are strings (integers are taken as their decimal text, as ids
    often are); ``None``, empty strings and other types are refused, and a
    string where a list is expected is not split into characters.

    Raises
    ------
    TypeError
        For a string instead of a list, or entries of another type.
    ValueError
        For the wrong number of entries, or an empty or missing one.

    Example
    -------
    >>> check_labels("image_ids", ["a", "b"], 2)
    >>> check_labels("image_ids", "ab", 2)
    Traceback (most recent call last):
    ...
    TypeError: image_ids must be a list with one entry per item, not a string; for one item pass ['ab']
    """
    if values is None:
        return
    if isinstance(values, (str, bytes)):
        raise TypeError(
            f"{label} must be a list with one entry per item, not a string; for one item pass [{values!r}]"
        )
    if len(values) != n:
        raise ValueError(f"{label} has {len(values)} entries for {n} {of}")
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pa.array(values) if not isinstance(values, pa.Array) else values
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TypeError(f"{label} must hold strings (or integers), got mixed or other values: {exc}") from exc
    if pa.types.is_integer(arr.type):
        bad = arr.null_count
    elif pa.types.is_null(arr.type):
        bad = len(arr)
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        bad = arr.null_count + int(pc.sum(pc.equal(pc.utf8_length(arr), 0)).as_py() or 0)
    else:
        raise TypeError(f"{label} must hold strings (or integers), got {arr.type} values")
    if bad:
        raise ValueError(
            f"{label} has {bad} empty or missing entr{'y' if bad == 1 else 'ies'}; each must be a non-empty string"
        )


def default_channels(names: Sequence[str] | None, size_c: int) -> tuple[Channel, ...]:
    """Channel entries for ``size_c`` channels (names ``C0..`` when not given).

    Examples
    --------
    >>> [c.name for c in default_channels(["DNA", "actin"], 2)]
    ['DNA', 'actin']
    """
    if names is None or len(names) == 0:
        names = [f"C{i}" for i in range(size_c)]
    check_labels("channel_names", names, size_c, of="channels")
    return tuple(Channel(id=f"ch-{i}", name=str(n), color_rgba=DEFAULT_COLOR_RGBA) for i, n in enumerate(names))


def select_channels(
    channels: Sequence[Channel], selected: Sequence[int] | None, n_out: int
) -> tuple[Channel, ...]:
    """Channel entries after a C selection; defaults when they do not line up."""
    chans = tuple(channels)
    if selected is not None and chans:
        if max(selected, default=-1) < len(chans):
            chans = tuple(chans[i] for i in selected)
    return chans if len(chans) == n_out else default_channels(None, n_out)


def normalize_chunk_shape(
    chunk_shape: Sequence[int] | None, size_z: int, size_y: int, size_x: int
) -> tuple[int, int, int]:
    """Clip a ``(Z, Y, X)`` chunk shape to the image; ``None`` means (1, 512, 512)."""
    if chunk_shape is None:
        chunk_shape = (1, 512, 512)
    if isinstance(chunk_shape, (str, bytes)) or not all(is_integer(v) for v in chunk_shape):
        raise ValueError(f"chunk_shape must be three positive integers (Z, Y, X), got {chunk_shape!r}")
    vals = tuple(int(v) for v in chunk_shape)
    if len(vals) != 3 or min(vals) <= 0:
        raise ValueError(
            f"chunk_shape must be three positive integers (Z, Y, X), got {chunk_shape!r}"
        )
    return (min(vals[0], size_z), min(vals[1], size_y), min(vals[2], size_x))

"""Typed, validated models of OME-Zarr 0.4 and 0.5 image metadata.

The models follow the OME-NGFF specification (https://ngff.openmicroscopy.org,
versions 0.4 and 0.5): ``multiscales`` (axes, datasets, scale/translation
coordinate transformations, type, metadata), the transitional ``omero`` block
(channels with colours and display windows) and image-label metadata.

* 0.4 (zarr v2) stores them at the top of the group attributes:
  ``{"multiscales": [...], "omero": {...}}``.
* 0.5 (zarr v3) nests them under ``"ome"``:
  ``{"ome": {"version": "0.5", "multiscales": [...], "omero": {...}}}``.

:class:`ImageMetadata` is the version-independent entry point:
``from_zarr`` / ``from_attrs`` read and validate, ``new`` builds from axes and
scales (or shapes), ``to_version`` converts, ``to_attrs`` gives the dict to
store in ``group.attrs``, and ``to_pixels_meta`` / ``from_pixels_meta`` map to
and from OME-Arrow's ``pixels_meta``.

Every model is frozen and keeps unknown fields where the specification allows
them. Invalid metadata raises :class:`omeframe.errors.SchemaError` naming the
field (``multiscales[0].axes[2].unit``) and the reason. The package
``pydantic`` (v2) is imported here, so import this module lazily.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from omeframe.model.dtypes import dtype_name, to_numpy_dtype
from omeframe.model.errors import SchemaError

__all__ = [
    "SPACE_UNITS",
    "TIME_UNITS",
    "Axis",
    "ScaleTransform",
    "TranslationTransform",
    "Dataset",
    "Multiscale",
    "Window",
    "OmeroChannel",
    "Omero",
    "LabelColor",
    "LabelProperty",
    "LabelSource",
    "ImageLabel",
    "ImageAttrs04",
    "OmeAttrs05",
    "ImageAttrs05",
    "ImageMetadata",
    "unit_to_ome_arrow",
    "unit_to_ngff",
    "color_hex_to_rgba",
    "color_rgba_to_hex",
    "format_validation_error",
]

#: Space units the specification lists (UDUNITS-2 names).
SPACE_UNITS = frozenset(
    """angstrom attometer centimeter decimeter exameter femtometer foot gigameter
    hectometer inch kilometer megameter meter micrometer mile millimeter nanometer
    parsec petameter picometer terameter yard yoctometer yottameter zeptometer
    zettameter""".split()
)
#: Time units the specification lists.
TIME_UNITS = frozenset(
    """attosecond centisecond day decisecond exasecond femtosecond gigasecond
    hectosecond hour kilosecond megasecond microsecond millisecond minute
    nanosecond petasecond picosecond second terasecond yoctosecond yottasecond
    zeptosecond zettasecond""".split()
)

# Abbreviations found in files written by other tools, mapped to spec names.
_UNIT_ALIASES = {
    "µm": "micrometer", "μm": "micrometer", "um": "micrometer", "micron": "micrometer",
    "microns": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter",
    "m": "meter", "pm": "picometer", "å": "angstrom", "Å": "angstrom", "km": "kilometer",
    "s": "second", "sec": "second", "ms": "millisecond", "µs": "microsecond",
    "μs": "microsecond", "us": "microsecond", "ns": "nanosecond", "min": "minute",
    "h": "hour", "hr": "hour", "d": "day",
}
# Spec names mapped to the OME(-XML / -Arrow) unit symbols.
_NGFF_TO_SYMBOL = {
    "micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm",
    "decimeter": "dm", "meter": "m", "picometer": "pm", "angstrom": "Å", "kilometer": "km",
    "femtometer": "fm", "attometer": "am", "inch": "in", "foot": "ft", "yard": "yd",
    "mile": "mi", "second": "s", "millisecond": "ms", "microsecond": "µs",
    "nanosecond": "ns", "picosecond": "ps", "minute": "min", "hour": "h", "day": "d",
}
_SYMBOL_TO_NGFF = {v: k for k, v in _NGFF_TO_SYMBOL.items()}


def unit_to_ngff(unit: str | None) -> str | None:
    """The specification's unit name for ``unit`` (``"µm"`` -> ``"micrometer"``).

    Returns ``None`` for ``None`` and for units the specification does not list.
    """
    if unit is None:
        return None
    u = str(unit).strip()
    if u in SPACE_UNITS or u in TIME_UNITS:
        return u
    return _SYMBOL_TO_NGFF.get(u) or _UNIT_ALIASES.get(u) or _UNIT_ALIASES.get(u.lower())


def unit_to_ome_arrow(unit: str | None) -> str | None:
    """The OME-Arrow symbol of a specification unit (``"micrometer"`` -> ``"µm"``)."""
    if unit is None:
        return None
    return _NGFF_TO_SYMBOL.get(unit, unit)


def color_hex_to_rgba(color: str | None) -> int:
    """``"RRGGBB"`` (optionally ``#``-prefixed) -> packed ``0xRRGGBBAA`` with alpha 0xFF."""
    if not color:
        return 0xFFFFFFFF
    c = color.lstrip("#")
    if len(c) == 8:  # already RRGGBBAA
        return int(c, 16)
    return (int(c[:6], 16) << 8) | 0xFF


def color_rgba_to_hex(rgba: int | None) -> str:
    """Packed ``0xRRGGBBAA`` -> ``"RRGGBB"`` (alpha dropped; ``None`` -> white)."""
    if rgba is None:
        return "FFFFFF"
    return f"{(int(rgba) >> 8) & 0xFFFFFF:06X}"


# ---------------------------------------------------------------------------
# error formatting


def _loc(loc: Sequence[Any]) -> str:
    out = ""
    parts = list(loc)
    for i, part in enumerate(parts):
        if (
            part in ("scale", "translation")
            and i >= 2
            and isinstance(parts[i - 1], int)
            and parts[i - 2] == "coordinateTransformations"
        ):
            continue  # the discriminated union's tag, not a field
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def format_validation_error(exc: ValidationError, what: str) -> str:
    """One line per problem: ``field.path: reason``."""
    lines = []
    for err in exc.errors(include_url=False):
        msg = str(err.get("msg", ""))
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        inp = err.get("input")
        shown = ""
        if err.get("type") not in ("missing",) and not isinstance(inp, (dict, list, tuple)):
            shown = f" (got {inp!r})"
        where = _loc(err.get("loc", ()))
        lines.append(f"{where}: {msg}{shown}" if where else f"{msg}{shown}")
    n = len(lines)
    head = f"invalid {what}: " + ("1 problem" if n == 1 else f"{n} problems")
    return head + "\n  " + "\n  ".join(lines)


class _Model(BaseModel):
    """Frozen model whose validation errors are :class:`SchemaError`."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SchemaError(format_validation_error(exc, f"OME-Zarr {type(self).__name__}")) from exc

    # Mark the override as pydantic's own __init__ so that nested models are
    # validated by pydantic-core directly (errors keep their field paths) and
    # only a top-level construction converts the error.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def validate_dict(cls, data: Any, what: str | None = None) -> Any:
        """Validate ``data`` (a dict from JSON) into this model, or raise ``SchemaError``."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SchemaError(format_validation_error(exc, what or f"OME-Zarr {cls.__name__}")) from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (aliases, no ``None`` fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ---------------------------------------------------------------------------
# multiscales


AxisType = Literal["space", "time", "channel"]


class Axis(_Model):
    """An element of ``multiscales[].axes``: ``name``, optional ``type`` and ``unit``.

    Units of ``space`` and ``time`` axes must be names from the specification's
    lists (``"micrometer"``, ``"second"`` ...); common symbols (``"µm"``,
    ``"um"``, ``"ms"``) are converted to those names.
    """

    name: str
    type: str | None = None
    unit: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v:
            raise ValueError("axis name must be a non-empty string")
        return v

    @model_validator(mode="before")
    @classmethod
    def _norm_unit(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("unit"), str):
            typ = data.get("type")
            if typ in ("space", "time"):
                fixed = unit_to_ngff(data["unit"])
                if fixed is not None and fixed in (SPACE_UNITS if typ == "space" else TIME_UNITS):
                    data = {**data, "unit": fixed}
        return data

    @model_validator(mode="after")
    def _unit_matches_type(self) -> Axis:
        if self.unit is None:
            return self
        if self.type == "space" and self.unit not in SPACE_UNITS:
            raise ValueError(
                f"unit {self.unit!r} of space axis {self.name!r} is not a space unit of the "
                f"specification (e.g. 'micrometer', 'nanometer', 'millimeter')"
            )
        if self.type == "time" and self.unit not in TIME_UNITS:
            raise ValueError(
                f"unit {self.unit!r} of time axis {self.name!r} is not a time unit of the "
                f"specification (e.g. 'second', 'millisecond', 'minute')"
            )
        return self


def _check_vector(v: Sequence[float], what: str, positive: bool) -> tuple[float, ...]:
    vals = tuple(float(x) for x in v)
    if not vals:
        raise ValueError(f"{what} must list one value per axis, got an empty list")
    bad = [x for x in vals if not math.isfinite(x) or (positive and x <= 0)]
    if bad:
        cond = "finite and > 0" if positive else "finite"
        raise ValueError(f"{what} values must be {cond}, got {list(vals)}")
    return vals


def _inline_vector(v: Any, what: str, *, positive: bool) -> Any:
    """A transform's values, given inline (a path to a binary file is not supported)."""
    if isinstance(v, str):
        raise ValueError(f"{what} given by a path (binary file) is not supported; give the values inline")
    return _check_vector(v, what, positive=positive)


class ScaleTransform(_Model):
    """``{"type": "scale", "scale": [...]}``: pixel size per axis."""

    type: Literal["scale"] = "scale"
    scale: tuple[float, ...]

    @field_validator("scale", mode="before")
    @classmethod
    def _vals(cls, v: Any) -> Any:
        return _inline_vector(v, "scale", positive=True)


class TranslationTransform(_Model):
    """``{"type": "translation", "translation": [...]}``: offset per axis."""

    type: Literal["translation"] = "translation"
    translation: tuple[float, ...]

    @field_validator("translation", mode="before")
    @classmethod
    def _vals(cls, v: Any) -> Any:
        return _inline_vector(v, "translation", positive=False)


Transform = Annotated[ScaleTransform | TranslationTransform, Field(discriminator="type")]


def _scale_of(ts: Sequence[ScaleTransform | TranslationTransform]) -> tuple[float, ...]:
    """The values of the leading ``scale`` transform of ``ts`` (validated by :func:`_check_transforms`)."""
    t = ts[0] if ts else None
    if not isinstance(t, ScaleTransform):
        raise SchemaError(
            "coordinateTransformations must start with a 'scale' transform, got "
            f"{[x.type for x in ts]}"
        )
    return t.scale


def _translation_of(ts: Sequence[ScaleTransform | TranslationTransform]) -> tuple[float, ...] | None:
    """The values of the ``translation`` transform following the scale in ``ts``, if any."""
    if len(ts) < 2:
        return None
    t = ts[1]
    if not isinstance(t, TranslationTransform):
        raise SchemaError(
            "the second coordinate transformation must be a 'translation', got "
            f"{[x.type for x in ts]}"
        )
    return t.translation


def _check_transforms(ts: Sequence[Any]) -> Sequence[Any]:
    kinds = [t.type for t in ts]
    if kinds not in (["scale"], ["scale", "translation"]):
        raise ValueError(
            "coordinateTransformations must be exactly one 'scale' optionally followed by "
            f"one 'translation', got {kinds}"
        )
    if len(ts) == 2 and len(ts[0].scale) != len(ts[1].translation):
        raise ValueError(
            f"scale has {len(ts[0].scale)} values but translation has {len(ts[1].translation)}"
        )
    return ts


class Dataset(_Model):
    """One resolution level: the array ``path`` and its transforms (scale[, translation])."""

    path: str
    coordinateTransformations: tuple[Transform, ...]

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v or v.startswith("/"):
            raise ValueError(f"dataset path must be a non-empty relative path, got {v!r}")
        return v

    @field_validator("coordinateTransformations")
    @classmethod
    def _transforms(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(_check_transforms(v))

    @property
    def scale(self) -> tuple[float, ...]:
        return _scale_of(self.coordinateTransformations)

    @property
    def translation(self) -> tuple[float, ...] | None:
        return _translation_of(self.coordinateTransformations)

    @classmethod
    def build(cls, path: str, scale: Sequence[float], translation: Sequence[float] | None = None) -> Dataset:
        ts: list[Any] = [ScaleTransform(scale=tuple(scale))]
        if translation is not None:
            ts.append(TranslationTransform(translation=tuple(translation)))
        return cls(path=path, coordinateTransformations=tuple(ts))


class Multiscale(_Model):
    """An element of ``multiscales``: axes, datasets (full resolution first), transforms."""

    axes: tuple[Axis, ...]
    datasets: tuple[Dataset, ...]
    coordinateTransformations: tuple[Transform, ...] | None = None
    name: Any = None
    type: Any = None
    metadata: Any = None
    version: str | None = None  # 0.4 only (0.5 moves it to ome.version)

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes: tuple[Axis, ...]) -> tuple[Axis, ...]:
        n = len(axes)
        if not 2 <= n <= 5:
            raise ValueError(f"there must be 2 to 5 axes, got {n}")
        names = [a.name for a in axes]
        dup = sorted(k for k, c in Counter(names).items() if c > 1)
        if dup:
            raise ValueError(f"axis names must be unique, {dup} repeated in {names}")
        types = [a.type for a in axes]
        n_space = types.count("space")
        if n_space not in (2, 3):
            raise ValueError(f"there must be 2 or 3 axes of type 'space', got {n_space} in {types}")
        if types.count("time") > 1:
            raise ValueError(f"there may be at most one 'time' axis, got {types}")
        if types.count("channel") > 1:
            raise ValueError(f"there may be at most one 'channel' axis, got {types}")
        custom = [t for t in types if t not in ("space", "time", "channel")]
        if types.count("channel") + len(custom) > 1:
            raise ValueError(
                f"there may be at most one 'channel' or custom-typed axis, got {types}"
            )
        rank = {"time": 0, "space": 2}
        ranks = [rank.get(t, 1) for t in types]  # type: ignore[arg-type]
        if ranks != sorted(ranks):
            raise ValueError(
                f"axes must be ordered time, then channel (or custom), then space; got types {types}"
            )
        return axes

    @field_validator("datasets")
    @classmethod
    def _some(cls, v: tuple[Dataset, ...]) -> tuple[Dataset, ...]:
        if not v:
            raise ValueError("there must be at least one dataset (resolution level)")
        return v

    @field_validator("coordinateTransformations")
    @classmethod
    def _global(cls, v: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        return None if v is None else tuple(_check_transforms(v))

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and v != "0.4":
            raise ValueError(
                f"multiscales version {v!r} is not supported; omeframe reads OME-Zarr 0.4 "
                "(multiscales version '0.4') and 0.5 (ome.version '0.5')"
            )
        return v

    @model_validator(mode="after")
    def _dims(self) -> Multiscale:
        n = len(self.axes)
        paths = [d.path for d in self.datasets]
        dup = sorted(k for k, c in Counter(paths).items() if c > 1)
        if dup:
            raise ValueError(f"dataset paths must be unique, {dup} repeated")
        for i, d in enumerate(self.datasets):
            for t in d.coordinateTransformations:
                vals = t.scale if t.type == "scale" else t.translation
                if len(vals) != n:
                    raise ValueError(
                        f"datasets[{i}] ({d.path!r}) {t.type} has {len(vals)} values but there are "
                        f"{n} axes {[a.name for a in self.axes]}"
                    )
        for t in self.coordinateTransformations or ():
            vals = t.scale if t.type == "scale" else t.translation
            if len(vals) != n:
                raise ValueError(
                    f"coordinateTransformations {t.type} has {len(vals)} values but there are {n} axes"
                )
        for i in range(1, len(self.datasets)):
            prev, cur = self.datasets[i - 1].scale, self.datasets[i].scale
            finer = [self.axes[k].name for k in range(n) if cur[k] < prev[k] * (1 - 1e-9)]
            if finer:
                raise ValueError(
                    f"datasets must be ordered from highest to lowest resolution, but datasets[{i}] "
                    f"({self.datasets[i].path!r}) has a smaller scale than datasets[{i - 1}] on axes {finer}"
                )
        return self

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    def level_scale(self, level: int = 0) -> tuple[float, ...]:
        """Scale of ``level`` combined with the multiscale-wide scale, if any."""
        s = self.datasets[level].scale
        g = self.coordinateTransformations
        if g:
            s = tuple(a * b for a, b in zip(s, _scale_of(g), strict=True))
        return s


# ---------------------------------------------------------------------------
# omero (transitional) metadata


class Window(_Model):
    """Display window: value range (``min``/``max``) and rendered range (``start``/``end``)."""

    min: float | None = None
    max: float | None = None
    start: float
    end: float


_HEX = "0123456789abcdefABCDEF"


class OmeroChannel(_Model):
    """An ``omero.channels`` entry: label, colour (``RRGGBB`` hex), window, active ..."""

    label: str | None = None
    color: str | None = None
    window: Window | None = None
    active: bool | None = None
    coefficient: float | None = None
    family: str | None = None
    inverted: bool | None = None

    @field_validator("color")
    @classmethod
    def _color(cls, v: str | None) -> str | None:
        if v is None:
            return v
        c = v.lstrip("#")
        if len(c) not in (6, 8) or any(ch not in _HEX for ch in c):
            raise ValueError(f"color must be a hex RGB string like 'FF00FF', got {v!r}")
        return c.upper()


class Omero(_Model):
    """The ``omero`` block: channels and rendering defaults (``rdefs``)."""

    channels: tuple[OmeroChannel, ...] = ()
    rdefs: dict[str, Any] | None = None
    id: Any = None
    name: str | None = None
    version: str | None = None


# ---------------------------------------------------------------------------
# labels


class LabelColor(_Model):
    label_value: int = Field(alias="label-value")
    rgba: tuple[int, int, int, int] | None = None

    @field_validator("rgba")
    @classmethod
    def _rgba(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(not 0 <= x <= 255 for x in v):
            raise ValueError(f"rgba values must be in 0..255, got {list(v)}")
        return v


class LabelProperty(_Model):
    label_value: int = Field(alias="label-value")


class LabelSource(_Model):
    image: str | None = "../../"


class ImageLabel(_Model):
    """``image-label`` metadata of a label image (colours, properties, source)."""

    colors: tuple[LabelColor, ...] | None = None
    properties: tuple[LabelProperty, ...] | None = None
    source: LabelSource | None = None
    version: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> ImageLabel:
        if self.colors:
            vals = [c.label_value for c in self.colors]
            dup = sorted(k for k, c in Counter(vals).items() if c > 1)
            if dup:
                raise ValueError(f"colors label-value must be unique, {dup} repeated")
        return self


# ---------------------------------------------------------------------------
# group attributes, per version


def _nonempty_multiscales(v: tuple[Multiscale, ...]) -> tuple[Multiscale, ...]:
    if not v:
        raise ValueError("multiscales must hold at least one multiscale image")
    return v


class ImageAttrs04(_Model):
    """Group attributes of an OME-Zarr 0.4 image (zarr v2)."""

    multiscales: tuple[Multiscale, ...]
    omero: Omero | None = None
    image_label: ImageLabel | None = Field(default=None, alias="image-label")

    @field_validator("multiscales")
    @classmethod
    def _some(cls, v: tuple[Multiscale, ...]) -> tuple[Multiscale, ...]:
        return _nonempty_multiscales(v)


class OmeAttrs05(_Model):
    """The ``ome`` object of an OME-Zarr 0.5 image (zarr v3)."""

    version: Literal["0.5"]
    multiscales: tuple[Multiscale, ...]
    omero: Omero | None = None
    image_label: ImageLabel | None = Field(default=None, alias="image-label")

    @field_validator("multiscales")
    @classmethod
    def _some(cls, v: tuple[Multiscale, ...]) -> tuple[Multiscale, ...]:
        return _nonempty_multiscales(v)

    @field_validator("multiscales")
    @classmethod
    def _no_version(cls, v: tuple[Multiscale, ...]) -> tuple[Multiscale, ...]:
        _nonempty_multiscales(v)
        for i, m in enumerate(v):
            if m.version is not None:
                raise ValueError(
                    f"multiscales[{i}] has version {m.version!r}; in OME-Zarr 0.5 the version is "
                    "ome.version only"
                )
        return v


class ImageAttrs05(_Model):
    """Group attributes of an OME-Zarr 0.5 image: ``{"ome": {...}}``."""

    ome: OmeAttrs05


# ---------------------------------------------------------------------------
# version-independent metadata


_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def _axes_from(
    axes: str | Sequence[Axis | Mapping[str, Any]], space_unit: str | None, time_unit: str | None
) -> tuple[Axis, ...]:
    if isinstance(axes, str):
        out = []
        for a in axes.lower():
            typ = _AXIS_TYPES.get(a)
            if typ is None:
                raise SchemaError(f"axes {axes!r}: unknown axis letter {a!r}; use letters from 'tczyx'")
            unit = unit_to_ngff(space_unit) if typ == "space" else unit_to_ngff(time_unit) if typ == "time" else None
            out.append(Axis(name=a, type=typ, unit=unit))
        return tuple(out)
    return tuple(a if isinstance(a, Axis) else Axis(**dict(a)) for a in axes)


class ImageMetadata(_Model):
    """OME-Zarr image metadata, independent of its on-disk version.

    Attributes
    ----------
    version
        ``"0.4"`` (zarr v2) or ``"0.5"`` (zarr v3).
    multiscales
        At least one :class:`Multiscale`; omeframe uses the first.
    omero
        Optional channel rendering metadata.
    image_label
        ``image-label`` metadata when the group is a label image.
    """

    version: Literal["0.4", "0.5"] = "0.5"
    multiscales: tuple[Multiscale, ...]
    omero: Omero | None = None
    image_label: ImageLabel | None = None

    # ---- reading ---------------------------------------------------------
    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], *, where: str = "zarr group") -> ImageMetadata:
        """Validate group attributes of either version (detected from their layout)."""
        attrs = dict(attrs)
        ome = attrs.get("ome")
        if isinstance(ome, Mapping) and "multiscales" in ome:
            if ome.get("version") != "0.5":
                raise SchemaError(
                    f"{where}: ome.version is {ome.get('version')!r}; omeframe reads OME-Zarr "
                    "0.5 metadata under 'ome' (and 0.4 at the top level)"
                )
            m = ImageAttrs05.validate_dict(attrs, f"OME-Zarr 0.5 metadata in {where}").ome
            return cls.model_construct(
                version="0.5", multiscales=m.multiscales, omero=m.omero, image_label=m.image_label
            )
        if "multiscales" in attrs:
            m4 = ImageAttrs04.validate_dict(attrs, f"OME-Zarr 0.4 metadata in {where}")
            return cls.model_construct(
                version="0.4", multiscales=m4.multiscales, omero=m4.omero, image_label=m4.image_label
            )
        keys = sorted(attrs) if not isinstance(ome, Mapping) else sorted(attrs) + [f"ome.{k}" for k in ome]
        hint = ""
        if "bioformats2raw.layout" in attrs or (isinstance(ome, Mapping) and "bioformats2raw.layout" in ome):
            hint = "; it is a bioformats2raw container: open one of its images (image_path='0')"
        elif "plate" in attrs or "well" in attrs or (isinstance(ome, Mapping) and ("plate" in ome or "well" in ome)):
            hint = "; it is an HCS plate/well group: open one of its field images"
        elif "labels" in attrs or (isinstance(ome, Mapping) and "labels" in ome):
            hint = "; it is a labels group: open one of the label images it lists"
        raise SchemaError(
            f"{where} has no OME-Zarr 'multiscales' metadata (looked for attrs['multiscales'] "
            f"(0.4) and attrs['ome']['multiscales'] (0.5); found keys {keys}){hint}"
        )

    @classmethod
    def from_zarr(cls, group_or_path: Any) -> ImageMetadata:
        """Read and validate the metadata of a zarr group (or a path to one)."""
        import zarr

        if isinstance(group_or_path, (str, os.PathLike)):
            if not os.path.exists(group_or_path):
                raise FileNotFoundError(f"no such zarr store: {str(group_or_path)!r}")
            try:
                node = zarr.open_group(str(group_or_path), mode="r")
            except Exception as exc:  # noqa: BLE001 - zarr raises many kinds
                raise SchemaError(f"{str(group_or_path)!r} is not a zarr group: {exc}") from exc
            where = f"zarr group {str(group_or_path)!r}"
        else:
            node = group_or_path
            if not isinstance(node, zarr.Group):
                raise SchemaError(
                    f"OME-Zarr image metadata lives on a zarr group, got a {type(node).__name__}"
                )
            where = f"zarr group {getattr(node, 'path', '') or '/'!r}"
        return cls.from_attrs(node.attrs.asdict(), where=where)

    # ---- building --------------------------------------------------------
    @classmethod
    def new(
        cls,
        axes: str | Sequence[Axis | Mapping[str, Any]],
        *,
        scales: Sequence[Sequence[float]] | None = None,
        shapes: Sequence[Sequence[int]] | None = None,
        base_scale: Sequence[float] | None = None,
        translations: Sequence[Sequence[float] | None] | None = None,
        paths: Sequence[str] | None = None,
        space_unit: str | None = "micrometer",
        time_unit: str | None = None,
        name: str | None = None,
        multiscale_type: str | None = None,
        metadata: Any = None,
        channels: Sequence[OmeroChannel | Mapping[str, Any]] | None = None,
        rdefs: Mapping[str, Any] | None = None,
        image_label: ImageLabel | Mapping[str, Any] | None = None,
        version: Literal["0.4", "0.5"] = "0.5",
    ) -> ImageMetadata:
        """Build metadata from axes and per-level scales (or level shapes).

        Parameters
        ----------
        axes
            An axes string (``"tczyx"``, ``"cyx"``...; types inferred, space axes
            get ``space_unit``, time ``time_unit``) or :class:`Axis` objects/dicts.
        scales
            One scale vector per level (full resolution first).
        shapes, base_scale
            Alternatively: the array shape of every level and the level-0 scale
            (default 1.0); level ``i``'s scale is ``base * shape0 / shape_i``.
        translations
            Optional translation vector per level.
        paths
            Array paths per level (default ``"0"``, ``"1"``, ...).
        channels, rdefs
            ``omero`` channels (:class:`OmeroChannel` or dicts) and render defaults.
        """
        ax = _axes_from(axes, space_unit, time_unit)
        n = len(ax)
        if scales is None:
            if shapes is None:
                raise SchemaError("ImageMetadata.new needs scales= or shapes=")
            base = tuple(float(v) for v in (base_scale or [1.0] * n))
            s0 = shapes[0]
            for i, s in enumerate(shapes):
                if len(s) != n:
                    raise SchemaError(f"shapes[{i}] has {len(s)} dimensions but there are {n} axes")
            scales = [
                tuple(b * (a0 / a) if a else b for b, a0, a in zip(base, s0, s, strict=True)) for s in shapes
            ]
        paths = list(paths) if paths is not None else [str(i) for i in range(len(scales))]
        if len(paths) != len(scales):
            raise SchemaError(f"{len(paths)} paths given for {len(scales)} levels")
        trs = list(translations) if translations is not None else [None] * len(scales)
        if len(trs) != len(scales):
            raise SchemaError(f"{len(trs)} translations given for {len(scales)} levels")
        ms = Multiscale(
            axes=ax,
            datasets=tuple(Dataset.build(p, s, t) for p, s, t in zip(paths, scales, trs, strict=True)),
            name=name,
            type=multiscale_type,
            metadata=metadata,
            version="0.4" if version == "0.4" else None,
        )
        omero = None
        if channels is not None or rdefs is not None:
            omero = Omero(
                channels=tuple(c if isinstance(c, OmeroChannel) else OmeroChannel(**dict(c)) for c in channels or ()),
                rdefs=dict(rdefs) if rdefs is not None else None,
            )
        il = image_label
        if il is not None and not isinstance(il, ImageLabel):
            il = ImageLabel(**dict(il))
        return cls(version=version, multiscales=(ms,), omero=omero, image_label=il)

    # ---- accessors -------------------------------------------------------
    @property
    def multiscale(self) -> Multiscale:
        """The first multiscale (the one omeframe reads)."""
        return self.multiscales[0]

    @property
    def axes(self) -> tuple[Axis, ...]:
        return self.multiscale.axes

    @property
    def axes_string(self) -> str:
        """Axis names joined upper-case (``"TCZYX"``)."""
        return "".join(a.name for a in self.axes).upper()

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(d.path for d in self.multiscale.datasets)

    # ---- conversion ------------------------------------------------------
    def to_version(self, version: Literal["0.4", "0.5"]) -> ImageMetadata:
        """The same metadata for OME-Zarr ``version`` (``"0.4"`` or ``"0.5"``)."""
        if version not in ("0.4", "0.5"):
            raise SchemaError(f"unsupported OME-Zarr version {version!r}; use '0.4' or '0.5'")
        if version == self.version:
            return self
        ms = tuple(
            m.model_copy(update={"version": "0.4" if version == "0.4" else None}) for m in self.multiscales
        )
        return self.model_copy(update={"version": version, "multiscales": ms})

    def to_attrs(self) -> dict[str, Any]:
        """The dict to store in the zarr group's attributes (0.4 flat, 0.5 under ``"ome"``)."""
        body: dict[str, Any] = {}
        ms = []
        for m in self.multiscales:
            d = m.to_dict()
            if self.version == "0.4":
                d["version"] = "0.4"
            else:
                d.pop("version", None)
            ms.append(d)
        body["multiscales"] = ms
        if self.omero is not None:
            body["omero"] = self.omero.to_dict()
        if self.image_label is not None:
            body["image-label"] = self.image_label.to_dict()
        if self.version == "0.5":
            return {"ome": {"version": "0.5", **body}}
        return body

    def validate_attrs(self) -> ImageMetadata:
        """Round-trip :meth:`to_attrs` through the per-version attribute models."""
        return ImageMetadata.from_attrs(self.to_attrs(), where=f"OME-Zarr {self.version} metadata")

    # ---- OME-Arrow mapping ----------------------------------------------
    def to_pixels_meta(self, shapes: Sequence[int] | Sequence[Sequence[int]], dtype: Any) -> dict[str, Any]:
        """OME-Arrow ``pixels_meta`` of level 0.

        ``shapes`` is the array shape of level 0 (in the axes' order) or a list
        of level shapes (the first is used). Physical sizes come from level 0's
        scale (times the multiscale-wide scale); units are mapped to OME-Arrow
        symbols (``micrometer`` -> ``µm``; an axis without unit gives ``µm``,
        as ome-arrow does); channel names and colours come from ``omero``
        (``RRGGBB`` -> ``0xRRGGBBFF``). Display windows stay in :attr:`omero`.
        """
        shape: list[Any] = list(shapes)
        if shape and isinstance(shape[0], (list, tuple)):
            shape = list(shape[0])
        names = [a.name.lower() for a in self.axes]
        if len(shape) != len(names):
            raise SchemaError(
                f"shape {tuple(shape)} has {len(shape)} dimensions but the metadata has "
                f"{len(names)} axes {names}"
            )
        size = dict(zip(names, (int(s) for s in shape), strict=True))
        scale = dict(zip(names, self.multiscale.level_scale(0), strict=True))
        units = {a.name.lower(): a.unit for a in self.axes}
        st, sc, sz = size.get("t", 1), size.get("c", 1), size.get("z", 1)

        def unit(ax: str) -> str | None:
            if ax not in units:
                return "µm"
            return unit_to_ome_arrow(units[ax]) or "µm"

        chans = []
        omero_ch = list(self.omero.channels) if self.omero is not None else []
        use = len(omero_ch) == sc
        for i in range(sc):
            ch = omero_ch[i] if use else None
            chans.append(
                {
                    "id": f"ch-{i}",
                    "name": (ch.label if ch is not None and ch.label else f"C{i}"),
                    "emission_um": None,
                    "excitation_um": None,
                    "illumination": None,
                    "color_rgba": color_hex_to_rgba(ch.color if ch is not None else None),
                }
            )
        return {
            "dimension_order": "XYZCT" if sz > 1 else "XYCT",
            "type": dtype_name(to_numpy_dtype(dtype)),
            "size_x": size.get("x", 1),
            "size_y": size.get("y", 1),
            "size_z": sz,
            "size_c": sc,
            "size_t": st,
            "physical_size_x": float(scale.get("x", 1.0)),
            "physical_size_y": float(scale.get("y", 1.0)),
            "physical_size_z": float(scale.get("z", 1.0)),
            "physical_size_x_unit": unit("x"),
            "physical_size_y_unit": unit("y"),
            "physical_size_z_unit": unit("z"),
            "channels": chans,
        }

    @classmethod
    def from_pixels_meta(
        cls,
        pixels_meta: Mapping[str, Any],
        n_levels: int = 1,
        *,
        downscale: int = 2,
        dim_order: str = "TCZYX",
        version: Literal["0.4", "0.5"] = "0.5",
        name: str | None = None,
        windows: Sequence[Window | Mapping[str, Any] | Sequence[float] | None] | None = None,
        paths: Sequence[str] | None = None,
        multiscale_type: str | None = None,
    ) -> ImageMetadata:
        """Metadata describing an OME-Arrow image written with ``n_levels`` levels.

        Axes follow ``dim_order`` (a subset of TCZYX in that order); level ``i``
        scales Y and X by ``downscale**i``. Channel names and colours
        (``0xRRGGBBAA`` -> ``"RRGGBB"``) become ``omero`` channels; ``windows``
        (one per channel: :class:`Window`, dict or ``(min, max, start, end)``)
        default to the dtype's range.
        """
        pm = dict(pixels_meta)
        order = dim_order.lower()
        units = {
            "x": pm.get("physical_size_x_unit"),
            "y": pm.get("physical_size_y_unit"),
            "z": pm.get("physical_size_z_unit"),
        }
        space_unit = next((unit_to_ngff(u) for u in units.values() if unit_to_ngff(u)), None)
        phys = {k: pm.get(f"physical_size_{k}") for k in "xyz"}
        axes = []
        for a in order:
            typ = _AXIS_TYPES.get(a)
            if typ is None:
                raise SchemaError(f"dim_order {dim_order!r}: unknown axis {a.upper()!r}")
            u = None
            if typ == "space":
                # an unknown size (null) gets no unit: its scale of 1 then claims no length
                u = unit_to_ngff(units[a]) or (space_unit if phys[a] is not None else None)
                if u not in SPACE_UNITS:
                    u = None
            axes.append(Axis(name=a, type=typ, unit=u))
        scales = []
        for i in range(n_levels):
            f = float(downscale) ** i
            s = []
            for a in order:
                if a in "xyz":
                    v = phys[a]
                    v = 1.0 if v is None or not math.isfinite(float(v)) or float(v) <= 0 else float(v)
                    s.append(v * f if a in "xy" else v)
                else:
                    s.append(1.0)
            scales.append(s)
        dtype = None
        try:
            dtype = to_numpy_dtype(pm.get("type")) if pm.get("type") else None
        except Exception:  # noqa: BLE001 - unknown dtype names: no default windows
            dtype = None
        chans_in = list(pm.get("channels") or [])
        sc = int(pm.get("size_c") or len(chans_in) or 1)
        if len(chans_in) != sc:
            chans_in = [{"name": f"C{i}", "color_rgba": None} for i in range(sc)]
        if windows is not None and len(windows) != sc:
            raise SchemaError(f"{len(windows)} windows given for {sc} channels")
        channels = []
        for i, ch in enumerate(chans_in):
            w = windows[i] if windows is not None else None
            if w is None:
                w = _default_window(dtype)
            elif not isinstance(w, (Window, Mapping)):
                lo, hi, start, end = (float(v) for v in w)
                w = Window(min=lo, max=hi, start=start, end=end)
            elif isinstance(w, Mapping):
                w = Window(**dict(w))
            channels.append(
                OmeroChannel(
                    label=str(ch.get("name") or f"C{i}"),
                    color=color_rgba_to_hex(ch.get("color_rgba")),
                    window=w,
                    active=True,
                    coefficient=1.0,
                    family="linear",
                    inverted=False,
                )
            )
        sz = int(pm.get("size_z") or 1)
        rdefs = {"defaultT": 0, "defaultZ": sz // 2, "model": "color" if sc > 1 else "greyscale"}
        return cls.new(
            tuple(axes),
            scales=scales,
            paths=paths,
            name=name,
            multiscale_type=multiscale_type,
            channels=channels,
            rdefs=rdefs,
            version=version,
        )


def _default_window(dtype: np.dtype[Any] | None) -> Window:
    if dtype is not None and dtype.kind in "iu":
        info = np.iinfo(dtype)
        return Window(min=float(info.min), max=float(info.max), start=float(info.min), end=float(info.max))
    if dtype is not None and dtype.kind == "b":
        return Window(min=0.0, max=1.0, start=0.0, end=1.0)
    return Window(min=0.0, max=1.0, start=0.0, end=1.0)

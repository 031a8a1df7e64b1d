"""OME-XML helpers: parse the metadata omeframe keeps, build it back for writers.

Parsing is namespace-agnostic (any OME schema year) and keeps what the
OME-Arrow model holds: image id/name, acquisition date, dimension order,
sizes, physical sizes *with their units* (values are not converted), and per
channel the name, colour, emission/excitation wavelengths (converted to µm,
the unit of ``emission_um``/``excitation_um``), illumination type and samples
per pixel.

OME ``Color`` is a signed 32-bit integer holding ``0xRRGGBBAA``; OME-Arrow's
``color_rgba`` is the same packing as an unsigned 32-bit integer, so the two
convert with ``& 0xFFFFFFFF`` and back with a two's-complement reinterpretation.

Building goes through :class:`tifffile.OmeXml` (the same code
``tifffile.TiffWriter(ome=True)`` uses), so the ``TiffData`` entries always
match the pages actually written; :func:`tifffile_ome_metadata` returns the
metadata dict for ``TiffWriter.write``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.etree import ElementTree

from omeframe.model.errors import InvalidOMEXMLValueWarning, SchemaError
from omeframe.model.header import DEFAULT_COLOR_RGBA, Channel

__all__ = [
    "OMEXMLMismatchWarning",
    "OmeChannel",
    "OmeImage",
    "parse_ome_xml",
    "normalize_length_unit",
    "wavelength_to_um",
    "ome_color_to_rgba",
    "rgba_to_ome_color",
    "header_channels",
    "tifffile_ome_metadata",
    "build_ome_xml",
    "OME_ILLUMINATION_TYPES",
    "OME_LENGTH_UNITS",
]


class OMEXMLMismatchWarning(UserWarning):
    """The OME-XML of a file disagrees with its pixel data (omeframe trusts the pixels)."""


_MICRO = "µm"  # U+00B5, the spelling of the OME schema
_LENGTH_ALIASES = {
    "um": _MICRO,
    "µm": _MICRO,
    "μm": _MICRO,  # Greek small letter mu (U+03BC)
    "micron": _MICRO,
    "microns": _MICRO,
    "micrometer": _MICRO,
    "micrometre": _MICRO,
    "\\u00b5m": _MICRO,  # ImageJ writes the escape sequence literally
    "nanometer": "nm",
    "millimeter": "mm",
    "meter": "m",
    "centimeter": "cm",
    "angstrom": "Å",
    "a": "Å",
    "inch": "in",
}
#: Length units in micrometres (for wavelengths and unit-aware comparisons).
_UM_PER_UNIT = {
    "ym": 1e-18, "zm": 1e-15, "am": 1e-12, "fm": 1e-9, "pm": 1e-6, "Å": 1e-4,
    "nm": 1e-3, _MICRO: 1.0, "mm": 1e3, "cm": 1e4, "dm": 1e5, "m": 1e6,
    "dam": 1e7, "hm": 1e8, "km": 1e9, "in": 25400.0, "ft": 304800.0,
    "yd": 914400.0, "mi": 1.609344e9, "pt": 25400.0 / 72,
}


def normalize_length_unit(unit: str | None) -> str | None:
    """A length unit in OME spelling (``"micron"``, ``"um"``, ``"μm"`` -> ``"µm"``)."""
    if unit is None:
        return None
    u = str(unit).strip()
    if not u:
        return None
    return _LENGTH_ALIASES.get(u.lower(), _LENGTH_ALIASES.get(u, u))


def wavelength_to_um(value: Any, unit: str | None = "nm") -> float | None:
    """A wavelength in µm (OME's default wavelength unit is nm); ``None`` if unusable."""
    if value is None or value == "":
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    factor = _UM_PER_UNIT.get(normalize_length_unit(unit or "nm") or "nm")
    return None if factor is None else v * factor


def ome_color_to_rgba(value: Any) -> int | None:
    """OME ``Color`` (signed int32, RRGGBBAA) -> unsigned ``color_rgba``."""
    if value is None or value == "":
        return None
    try:
        return int(value) & 0xFFFFFFFF
    except (TypeError, ValueError):
        return None


def rgba_to_ome_color(rgba: int) -> int:
    """Unsigned ``color_rgba`` -> OME ``Color`` (signed int32)."""
    v = int(rgba) & 0xFFFFFFFF
    return v - (1 << 32) if v >= (1 << 31) else v


@dataclass
class OmeChannel:
    id: str | None = None
    name: str | None = None
    samples_per_pixel: int = 1
    color_rgba: int | None = None
    emission_um: float | None = None
    excitation_um: float | None = None
    illumination: str | None = None
    fluor: str | None = None


@dataclass
class OmeImage:
    id: str | None = None
    name: str | None = None
    acquisition_datetime: datetime | None = None
    description: str | None = None
    dimension_order: str | None = None
    pixel_type: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)  # X, Y, Z, C, T
    physical_size: dict[str, float | None] = field(default_factory=dict)  # x, y, z
    physical_size_unit: dict[str, str | None] = field(default_factory=dict)
    channels: list[OmeChannel] = field(default_factory=list)

    @property
    def total_samples(self) -> int:
        """Channel count with RGB channels (SamplesPerPixel > 1) expanded."""
        return sum(max(1, ch.samples_per_pixel) for ch in self.channels)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [c for c in el if _local(c.tag) == name]


def _float(v: str | None) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def _int(v: str | None, default: int | None = None) -> int | None:
    try:
        return int(v) if v not in (None, "") else default
    except ValueError:
        return default


def parse_datetime(text: str | None) -> datetime | None:
    """An ISO-8601 (OME) or TIFF ``YYYY:MM:DD HH:MM:SS`` date, ``None`` if unparsable."""
    if not text:
        return None
    s = str(text).strip().rstrip("\x00")
    m = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", s)
    if m:
        s = f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}:{m[6]}"
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    # fromisoformat accepts at most 6 fractional digits
    s = re.sub(r"(\.\d{6})\d+", r"\1", s)
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        return None


def parse_ome_xml(xml: str | bytes) -> list[OmeImage]:
    """The ``Image`` elements of an OME-XML document, in document order.

    Raises
    ------
    SchemaError
        When the text is not well-formed XML or has no ``OME`` root.
    """
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8", errors="replace")
    try:
        root = ElementTree.fromstring(xml.strip().rstrip("\x00"))
    except ElementTree.ParseError as exc:
        raise SchemaError(f"OME-XML is not well-formed XML: {exc}") from exc
    if _local(root.tag) != "OME":
        raise SchemaError(f"not an OME-XML document: the root element is <{_local(root.tag)}>, not <OME>")
    images = []
    for im in _children(root, "Image"):
        out = OmeImage(id=im.get("ID"), name=im.get("Name"))
        for child in im:
            tag = _local(child.tag)
            if tag == "AcquisitionDate":
                out.acquisition_datetime = parse_datetime(child.text)
            elif tag == "Description":
                out.description = child.text
        px = next(iter(_children(im, "Pixels")), None)
        if px is not None:
            out.dimension_order = px.get("DimensionOrder")
            out.pixel_type = px.get("Type")
            for ax in "XYZCT":
                v = _int(px.get(f"Size{ax}"))
                if v is not None:
                    out.sizes[ax] = v
            for ax in "XYZ":
                val = _float(px.get(f"PhysicalSize{ax}"))
                out.physical_size[ax.lower()] = val
                unit = px.get(f"PhysicalSize{ax}Unit")
                out.physical_size_unit[ax.lower()] = (
                    normalize_length_unit(unit) if unit else (_MICRO if val is not None else None)
                )
            for ch in _children(px, "Channel"):
                out.channels.append(
                    OmeChannel(
                        id=ch.get("ID"),
                        name=ch.get("Name"),
                        samples_per_pixel=_int(ch.get("SamplesPerPixel"), 1) or 1,
                        color_rgba=ome_color_to_rgba(ch.get("Color")),
                        emission_um=wavelength_to_um(
                            ch.get("EmissionWavelength"), ch.get("EmissionWavelengthUnit") or "nm"
                        ),
                        excitation_um=wavelength_to_um(
                            ch.get("ExcitationWavelength"), ch.get("ExcitationWavelengthUnit") or "nm"
                        ),
                        illumination=ch.get("IlluminationType"),
                        fluor=ch.get("Fluor"),
                    )
                )
        images.append(out)
    return images


_SAMPLE_COLORS = (0xFF0000FF, 0x00FF00FF, 0x0000FFFF, 0xFFFFFFFF)
_SAMPLE_SUFFIX = ("R", "G", "B", "A")


def header_channels(image: OmeImage | None, size_c: int, *, rgb: bool = False) -> list[Channel] | None:
    """OME-Arrow channels for ``size_c`` channels, or ``None`` if the counts disagree.

    OME channels with ``SamplesPerPixel`` > 1 (RGB) expand into one channel per
    sample, named ``"<name>:R"`` etc. and coloured red, green, blue.
    """
    if image is None or not image.channels:
        return None
    out: list[Channel] = []
    for i, ch in enumerate(image.channels):
        spp = max(1, ch.samples_per_pixel)
        for s in range(spp):
            n = len(out)
            if spp > 1:
                base = ch.name or f"C{i}"
                name = f"{base}:{_SAMPLE_SUFFIX[s]}" if s < 4 else f"{base}:{s}"
                color = _SAMPLE_COLORS[s] if (rgb or spp in (3, 4)) and s < 4 else ch.color_rgba
            else:
                name = ch.name if ch.name else f"C{n}"
                color = ch.color_rgba
            out.append(
                Channel(
                    id=(ch.id or f"ch-{n}") + (f":{s}" if spp > 1 else ""),
                    name=str(name),
                    emission_um=ch.emission_um,
                    excitation_um=ch.excitation_um,
                    illumination=ch.illumination,
                    color_rgba=DEFAULT_COLOR_RGBA if color is None else int(color),
                )
            )
    if len(out) != size_c:
        return None
    return out


def _fmt_float(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


#: ``IlluminationType`` values the OME 2016-06 schema allows (keyed by lower case).
OME_ILLUMINATION_TYPES: dict[str, str] = {
    v.lower(): v for v in ("Transmitted", "Epifluorescence", "Oblique", "NonLinear", "Other")
}
#: ``UnitsLength`` symbols of the OME 2016-06 schema.
OME_LENGTH_UNITS: frozenset[str] = frozenset(
    {
        "Ym", "Zm", "Em", "Pm", "Tm", "Gm", "Mm", "km", "hm", "dam", "m", "dm", "cm", "mm", _MICRO,
        "nm", "pm", "fm", "am", "zm", "ym", "Å", "thou", "li", "in", "ft", "yd", "mi", "ua", "ly",
        "pc", "pt", "pixel", "reference frame",
    }
)


def _positive_float(value: Any) -> float | None:
    """``value`` as a finite float > 0 (the schema's ``PositiveFloat``), else ``None``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _valid_illumination(value: Any) -> str | None:
    """The schema spelling of an ``IlluminationType`` (case-insensitive), else ``None``."""
    return OME_ILLUMINATION_TYPES.get(str(value).strip().lower())


def tifffile_ome_metadata(
    header: Any,
    *,
    axes: str,
    use_channel_colors: bool = False,
    size_c: int | None = None,
    stacklevel: int = 2,
) -> dict[str, Any]:
    """``metadata=`` for ``tifffile.TiffWriter(ome=True).write`` from an ImageHeader.

    ``axes`` is the written axes string (e.g. ``"TCZYX"``); channel names are
    always written, colours only with ``use_channel_colors``, wavelengths (nm)
    when known, physical sizes with their units.

    Every optional value is checked against the OME 2016-06 schema first:
    wavelengths and physical sizes must be finite and > 0, physical size units
    OME ``UnitsLength`` symbols, illumination one of ``Transmitted``,
    ``Epifluorescence``, ``Oblique``, ``NonLinear``, ``Other`` (any case). A
    value that fails is left out and named in one
    :class:`~omeframe.model.errors.InvalidOMEXMLValueWarning` (raised
    ``stacklevel`` frames up), so the XML written from these metadata always
    validates. OME-Arrow's "unknown" defaults (``emission_um=0.0``,
    ``excitation_um=0.0``, ``illumination="Unknown"``) are such values.

    Example
    -------
    >>> import warnings
    >>> from dataclasses import replace
    >>> from omeframe.model.header import ImageHeader
    >>> h = ImageHeader.basic("img-1", "cells", 1)
    >>> h = replace(h, channels=({"name": "DNA", "emission_um": 0.0, "illumination": "Unknown"},))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     md = tifffile_ome_metadata(h, axes="TCZYX")
    >>> md["Channel"], caught[0].category.__name__
    ([{'Name': 'DNA'}], 'InvalidOMEXMLValueWarning')
    """
    md: dict[str, Any] = {"axes": axes}
    dropped: list[str] = []
    if getattr(header, "name", None):
        md["Name"] = str(header.name)
    dt = getattr(header, "acquisition_datetime", None)
    if isinstance(dt, datetime):
        md["AcquisitionDate"] = dt.replace(microsecond=0).isoformat()
    for ax in "xyz":
        val = getattr(header, f"physical_size_{ax}", None)
        if val is None:
            continue
        key = f"PhysicalSize{ax.upper()}"
        v = _positive_float(val)
        if v is None:
            dropped.append(f"{key}={val!r} (must be a number > 0)")
            continue
        raw_unit = getattr(header, f"physical_size_{ax}_unit", None)
        if raw_unit is None:
            continue  # a size without a unit is unknown in µm: OME-XML would read it as µm
        unit = normalize_length_unit(raw_unit)
        if unit is not None and unit not in OME_LENGTH_UNITS:
            # without its unit the size would read as µm: leave both out
            dropped.append(f"{key}={val!r} with unit {raw_unit!r} (not an OME length unit)")
            continue
        md[key] = _fmt_float(v)
        if unit is not None:
            md[f"{key}Unit"] = unit
    chans = list(getattr(header, "channels", None) or [])
    if size_c is not None and len(chans) != size_c:
        chans = []
    if chans:
        chans = [Channel.from_dict(c, i) for i, c in enumerate(chans)]
        # One dict per channel with only the attributes it has: tifffile leaves out
        # missing keys (in per-key lists it would write ``None`` as the text "None").
        ch_list: list[dict[str, Any]] = []
        for i, c in enumerate(chans):
            entry: dict[str, Any] = {"Name": str(c.name or f"C{i}")}
            if use_channel_colors and c.color_rgba is not None:
                entry["Color"] = rgba_to_ome_color(int(c.color_rgba))
            for key, ome in (("emission_um", "EmissionWavelength"), ("excitation_um", "ExcitationWavelength")):
                raw = getattr(c, key)
                if raw is None:
                    continue
                v = _positive_float(raw)
                if v is None:
                    dropped.append(f"channel {i} {ome}: {key}={raw!r} (must be a number > 0)")
                    continue
                # 7 significant digits: OME-Arrow stores wavelengths as float32
                entry[ome] = float(f"{v * 1000.0:.7g}")
                entry[ome + "Unit"] = "nm"
            raw_il = c.illumination
            if raw_il not in (None, ""):
                il = _valid_illumination(raw_il)
                if il is None:
                    dropped.append(
                        f"channel {i} IlluminationType={raw_il!r} "
                        f"(allowed: {', '.join(OME_ILLUMINATION_TYPES.values())})"
                    )
                else:
                    entry["IlluminationType"] = il
            ch_list.append(entry)
        md["Channel"] = ch_list
    if dropped:
        warnings.warn(
            "OME-XML: left out optional values the OME 2016-06 schema forbids (the file stays valid; "
            "pixels are unaffected): " + "; ".join(dropped),
            InvalidOMEXMLValueWarning,
            stacklevel=stacklevel,
        )
    return md


def build_ome_xml(
    images: Sequence[tuple[Sequence[int], Any, dict[str, Any]]],
    *,
    declaration: bool = True,
) -> str:
    """A complete OME-XML document for ``(shape, dtype, metadata)`` images.

    ``metadata`` takes the keys of :func:`tifffile_ome_metadata` (``axes``
    required); each image is assumed stored one YX plane per page, in order.
    """
    import tifffile

    ome = tifffile.OmeXml()
    for shape, dtype, md in images:
        md = dict(md)
        axes = md.pop("axes")
        shape = tuple(int(s) for s in shape)
        planes = math.prod(shape[:-2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ome.addimage(dtype, shape, (planes, 1, 1, shape[-2], shape[-1], 1), axes=axes, **md)
    return ome.tostring(declaration=declaration)

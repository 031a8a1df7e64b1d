"""Every omero-py name the OMERO adapter uses, by the omero-py class that defines it.

The adapter (:mod:`omeframe.formats.omero.source`) calls nothing else on
omero-py objects; ``tests/test_omero.py`` downloads the omero-py release
:data:`OMERO_PY_CHECKED`, parses its source (no import: omero-py needs
ZeroC Ice) and asserts that each class below defines (or inherits) each
method and attribute, so a renamed call fails the test suite. The test's
stand-in gateway implements exactly these names.

Class names are omero-py's: ``_BlitzGateway`` (``omero.gateway.BlitzGateway``),
the ``omero.gateway`` wrappers, and the Ice proxies the gateway hands out
(``RawPixelsStorePrx`` from ``conn.createRawPixelsStore()``, inheriting the
pyramid calls of ``PyramidServicePrx`` and ``close`` of
``StatefulServiceInterfacePrx``).
"""

from __future__ import annotations

__all__ = ["OMERO_API", "OMERO_ATTRIBUTES", "OMERO_GATEWAY_KWARGS", "OMERO_PY_CHECKED"]

#: The omero-py release the names were checked against (tests/test_omero.py downloads it).
OMERO_PY_CHECKED = "5.23.0"

#: Methods called, by omero-py class (inherited methods count: the check follows base classes).
OMERO_API: dict[str, tuple[str, ...]] = {
    "_BlitzGateway": (
        "__init__", "connect", "getLastError", "isConnected", "close", "getObject", "createRawPixelsStore",
    ),
    "_ImageWrapper": (
        "getId", "getName", "getSizeX", "getSizeY", "getSizeZ", "getSizeC", "getSizeT", "getPixelsType",
        "getPixelSizeX", "getPixelSizeY", "getPixelSizeZ", "getChannels", "getPixelsId",
        "requiresPixelsPyramid", "getAcquisitionDate",
    ),
    "_ChannelWrapper": (
        "getLabel", "getColor", "getEmissionWave", "getExcitationWave", "getWindowStart", "getWindowEnd",
        "isActive",
    ),
    "ColorHolder": ("getRed", "getGreen", "getBlue", "getAlpha"),
    "LengthI": ("getValue",),
    "RawPixelsStorePrx": (
        "setPixelsId", "getPlane", "getTile", "getResolutionLevels", "getResolutionDescriptions",
        "setResolutionLevel", "getTileSize", "close",
    ),
}

#: Attributes read (set in the class body, in a method as ``self.<name> = ...``, or an ``__init__`` parameter).
OMERO_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "_BlitzGateway": ("SERVICE_OPTS", "host"),
    "ResolutionDescription": ("sizeX", "sizeY"),
}

#: Keyword arguments passed to ``BlitzGateway(...)`` by :func:`~omeframe.formats.omero.source.open_omero`.
OMERO_GATEWAY_KWARGS: tuple[str, ...] = ("username", "passwd", "host", "port", "secure")

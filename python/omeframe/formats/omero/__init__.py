"""OMERO: images on an OMERO server read lazily through omero-py's BlitzGateway (:mod:`.source`).

The names of every omero-py call the adapter makes are listed in :mod:`.api`
(tests/test_omero.py checks them against the real omero-py classes).
"""

#: The extra that installs omero-py: ``pip install 'omeframe[omero]'``.
OMERO_EXTRA = "omero"
#: URL scheme of :func:`~omeframe.formats.omero.source.open_omero`: ``omero://host[:port]/image/<id>``.
OMERO_URL_SCHEME = "omero"
#: The OMERO server's default port (Ice, unencrypted and SSL alike).
OMERO_DEFAULT_PORT = 4064

__all__ = ["OMERO_EXTRA", "OMERO_URL_SCHEME", "OMERO_DEFAULT_PORT"]

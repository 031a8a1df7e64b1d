"""omeframe's napari plugin: open datasets, record tables, OME-Zarr and TIFF in napari, lazily.

The plugin is an npe2 manifest (``napari.yaml`` in this package, announced by
the ``napari.manifest`` entry point) with one reader contribution:
:func:`~omeframe.napari.reader.napari_get_reader`. With omeframe installed
(``pip install 'omeframe[napari]'``), ``napari slides.omeds`` or
``viewer.open("crops.parquet", plugin="omeframe")`` use it.

:func:`read_layers` returns the layer data tuples without napari, for scripts
and tests: ``viewer._add_layer_from_data(*layer)`` or
``viewer.add_image(data, **kwargs)`` add them. See
``docs/howto/viewing.md`` (section "napari") for what each input becomes.

Example
-------
>>> from omeframe.napari import read_layers
>>> layers = read_layers("slides.omeds")                       # doctest: +SKIP
>>> [(kw["name"], kind) for _, kw, kind in layers]            # doctest: +SKIP
"""

from __future__ import annotations

from omeframe.napari.reader import (
    COARSEST_SIDE,
    COMPUTE_LEVELS_ABOVE,
    LayerData,
    napari_get_reader,
    read_layers,
    source_layers,
)

#: The npe2 manifest shipped in this package.
MANIFEST = "napari.yaml"

__all__ = [
    "COARSEST_SIDE",
    "COMPUTE_LEVELS_ABOVE",
    "LayerData",
    "MANIFEST",
    "napari_get_reader",
    "read_layers",
    "source_layers",
]

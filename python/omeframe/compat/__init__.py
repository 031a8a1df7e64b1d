"""Drop-in compatibility layers for other libraries' APIs, built on omeframe's engine.

:mod:`omeframe.compat.ome_arrow` mirrors ome-arrow 0.1.0 (module names,
public names, defaults, exception types and warning categories): replace
``import ome_arrow`` with ``import omeframe.compat.ome_arrow as ome_arrow``.
"""

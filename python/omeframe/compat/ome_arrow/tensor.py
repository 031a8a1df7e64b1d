"""Tensor views (``ome_arrow.tensor``): omeframe's ``TensorView`` and ``LazyTensorView``."""

from __future__ import annotations

from omeframe.ops.tensor_view import LazyTensorView, TensorView

__all__ = ["LazyTensorView", "TensorView"]

"""JAX batches from a record table.

:func:`batches` walks a record table in mini-batches, each decoded in one
:meth:`ImageTable.to_numpy <omeframe.ImageTable.to_numpy>` call and handed to
JAX with ``jax.numpy.asarray``. Shuffling keeps reads local as in
:mod:`omeframe.torch` (blocks of neighbouring rows, then rows within a
buffer of blocks; see :func:`omeframe.torch.shuffled_rows`). JAX is imported
on the first call, not with this module.

Example
-------
>>> import numpy as np, omeframe as of, tempfile, os                    # doctest: +SKIP
>>> from omeframe.jax import batches                                    # doctest: +SKIP
>>> path = os.path.join(tempfile.mkdtemp(), "crops.parquet")            # doctest: +SKIP
>>> _ = of.write_table(path, np.zeros((10, 2, 8, 8), np.uint8), dim_order="CYX")  # doctest: +SKIP
>>> [b.shape for b in batches(path, 4)]                                 # doctest: +SKIP
[(4, 2, 8, 8), (4, 2, 8, 8), (2, 2, 8, 8)]
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from omeframe.formats.record.image_table import ImageTable
from omeframe.formats.record.stack import stack_dims
from omeframe.model.errors import OptionalDependencyError
from omeframe.storage.url import check_storage_options
from omeframe.torch import _integer, local_blocks, shuffled_rows

__all__ = ["batches"]


def _jnp() -> Any:
    try:
        import jax.numpy as jnp
    except ImportError as exc:
        raise OptionalDependencyError(
            f"omeframe.jax needs JAX, which cannot be imported ({exc}); install it with: "
            "pip install 'omeframe[jax]'"
        ) from exc
    return jnp


def batches(
    table: ImageTable | str | os.PathLike[str],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    dims: str = "CYX",
    drop_last: bool = False,
    block_size: int | None = None,
    buffer_blocks: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """Yield the table's images as ``jax.Array`` batches ``(n, *dims)``.

    Parameters
    ----------
    table
        An :class:`omeframe.ImageTable`, or a record table path or URL
        (``s3://...``, read by ranged requests; options in ``storage_options``).
    batch_size
        Rows per batch (the last one may be shorter unless ``drop_last``).
    shuffle, seed, epoch, block_size, buffer_blocks
        Local shuffling (see :func:`omeframe.torch.shuffled_rows`; blocks by
        default as :func:`omeframe.torch.local_blocks` picks them); pass a
        new ``epoch`` each epoch for a new order. ``shuffle=False`` reads in
        row order.
    dims
        Axes of each image, from ``TCZYX`` (default ``"CYX"``).
    drop_last
        Drop the last, short batch.

    Raises
    ------
    OptionalDependencyError
        When JAX is not installed.
    TypeError
        When ``batch_size``, ``seed``, ``epoch``, ``block_size`` or
        ``buffer_blocks`` is not an integer (bools are not).
    ValueError
        For ``batch_size < 1``, a negative ``seed`` or ``epoch``,
        ``block_size`` or ``buffer_blocks`` below 1 and invalid ``dims``
        (checked when called, before the first batch).
    FileNotFoundError
        When ``table`` is a path that does not exist.

    Example
    -------
    >>> import numpy as np, omeframe as of, tempfile, os
    >>> from omeframe.jax import batches
    >>> path = os.path.join(tempfile.mkdtemp(), "crops.parquet")
    >>> _ = of.write_table(path, np.ones((5, 1, 4, 4), np.uint8), dim_order="CYX")
    >>> [b.shape for b in batches(path, 2, shuffle=True, seed=1)]
    [(2, 1, 4, 4), (2, 1, 4, 4), (1, 1, 4, 4)]
    """
    _integer("batch_size", batch_size, 1, "rows per batch")
    _integer("seed", seed, 0, "the seed of the shuffle")
    _integer("epoch", epoch, 0, "the epoch, which reseeds the shuffle")
    if not shuffle and (seed or epoch):
        raise ValueError("seed= and epoch= apply to shuffled batches; pass shuffle=True too, or drop them")
    d = stack_dims(dims)
    check_storage_options(storage_options, table)
    t = table if isinstance(table, ImageTable) else ImageTable(table, storage_options=storage_options)
    size, count = local_blocks(t, block_size, buffer_blocks)
    rows, _ = shuffled_rows(len(t), shuffle=shuffle, seed=seed, epoch=epoch, block_size=size, buffer_blocks=count)
    bs = int(batch_size)
    stop = len(rows) - len(rows) % bs if drop_last else len(rows)
    jnp = _jnp()  # imported once the arguments are known to be good
    return (jnp.asarray(t.to_numpy(rows[i : i + bs], dims=d)) for i in range(0, stop, bs))

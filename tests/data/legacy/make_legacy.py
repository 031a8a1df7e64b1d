"""Write the legacy-layout fixtures (run with omeframe at commit c8741e6, before ``_manifests/``).

Usage: ``PYTHONPATH=<old checkout>/python python make_legacy.py tests/data/legacy``
"""

import sys
from pathlib import Path

import numpy as np

import omeframe as of

out = Path(sys.argv[1])
rng = np.random.default_rng(7)
a = rng.integers(0, 60000, (1, 2, 1, 20, 24), dtype=np.uint16)
b = rng.integers(0, 200, (1, 1, 2, 17, 9), dtype=np.uint8)
for fmt in ("parquet", "vortex"):
    p = out / f"legacy-{fmt}"
    of.write_dataset(a, p, format=fmt, image_ids=["a"], chunk_shape=(1, 16, 16), dim_order="TCZYX", progress=False)
    of.write_dataset(b, p, mode="append", image_ids=["b"], dim_order="TCZYX", progress=False)
np.save(out / "legacy-a.npy", a)
np.save(out / "legacy-b.npy", b)

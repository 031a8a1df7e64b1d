"""The files in schemas/ are generated from omeframe.model and must not drift."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.ipc

from omeframe.formats.schemas import generate, schema_registry
from omeframe.model.arrow import OME_ARROW_BYTE_STRUCT, OME_ARROW_STRUCT

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def test_schema_files_match_code(tmp_path: Path) -> None:
    fresh = {p.name: p.read_bytes() for p in generate(tmp_path)}
    committed = {p.name: p.read_bytes() for p in SCHEMAS.iterdir() if p.is_file()}
    stale = sorted(n for n in fresh if committed.get(n) != fresh[n])
    extra = sorted(set(committed) - set(fresh))
    assert not stale, f"schemas/ is out of date for {stale}; run `make schemas`"
    assert not extra, f"schemas/ holds files no schema produces: {extra}"


def test_ipc_files_read_back_as_the_canonical_types() -> None:
    list_schema = pa.ipc.read_schema(pa.py_buffer((SCHEMAS / "ome_arrow_struct.arrows").read_bytes()))
    byte_schema = pa.ipc.read_schema(pa.py_buffer((SCHEMAS / "ome_arrow_byte_struct.arrows").read_bytes()))
    assert list_schema.field("ome_arrow").type == OME_ARROW_STRUCT
    assert byte_schema.field("ome_arrow").type == OME_ARROW_BYTE_STRUCT
    for name, (schema, _) in schema_registry().items():
        on_disk = pa.ipc.read_schema(pa.py_buffer((SCHEMAS / f"{name}.arrows").read_bytes()))
        assert on_disk.equals(schema, check_metadata=True), name

"""The format registry: one table of formats, one resolver, one error for what it cannot open."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import tifffile

import omeframe as of
from omeframe import registry
from omeframe.engine.derived import PlanSource, as_source
from omeframe.engine.lazy import LazyImage
from omeframe.engine.source import HeaderOptions, HeaderOverride, LazySource
from omeframe.errors import UnsupportedFormatError
from omeframe.formats.array.source import ArraySource, RecordSource
from omeframe.formats.dataset import MANIFEST_NAME, DatasetReader, DatasetSource, WriteOptions, write_items
from omeframe.formats.record.source import RecordTableSource
from omeframe.formats.tiff.source import TiffSource

PKG = Path(of.__file__).resolve().parent


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    a = np.arange(2 * 3 * 40 * 50, dtype=np.uint16).reshape(2, 3, 40, 50)
    tif = root / "cells.ome.tif"
    tifffile.imwrite(tif, a, metadata={"axes": "ZCYX"}, ome=True)
    table = root / "cells.parquet"
    of.to_ome_parquet(of.from_numpy(a, dim_order="ZCYX", image_id="t"), table)
    disguised = root / "cells.bin"
    disguised.write_bytes(table.read_bytes())
    ds = root / "ds"
    of.write_dataset(a, ds, image_ids=["d"], dim_order="ZCYX", progress=False)
    zarr_path = root / "cells.ome.zarr"
    of.to_ome_zarr(of.from_numpy(a, dim_order="ZCYX"), zarr_path)
    text = root / "notes.txt"
    text.write_text("not an image")
    empty = root / "empty"
    empty.mkdir()
    return {"tiff": tif, "table": table, "disguised": disguised, "dataset": ds, "zarr": zarr_path,
            "text": text, "empty": empty, "czi": root / "scan.czi"}


def test_entries_are_distinct_and_typed():
    names = [e.name for e in registry.FORMATS]
    assert len(names) == len(set(names))
    suffixes = [s for e in registry.FORMATS for s in e.suffixes]
    assert len(suffixes) == len(set(suffixes)), "two formats claim the same suffix"
    assert all(s.startswith(".") and s == s.lower() for s in suffixes)
    with pytest.raises(AttributeError):
        registry.FORMATS[0].name = "other"  # type: ignore[misc]
    czi = next(e for e in registry.FORMATS if e.name == "czi")
    assert czi.extra == "czi" and "omeframe[czi]" in czi.label()


@pytest.mark.parametrize(
    ("key", "name", "kind"),
    [
        ("tiff", "tiff", TiffSource),
        ("table", "record-table", RecordTableSource),
        ("disguised", "record-table", RecordTableSource),  # found by its magic bytes
        ("dataset", "dataset", DatasetSource),
    ],
)
def test_detect_and_open(files, key, name, kind):
    assert registry.detect(files[key]).name == name
    src = registry.open_source(files[key])
    assert isinstance(src, kind)
    assert src.shape == (1, 3, 2, 40, 50)


def test_zarr_store_is_detected_and_opened(files):
    assert registry.detect(files["zarr"]).name == "ome-zarr"
    src = registry.open_source(files["zarr"])
    np.testing.assert_array_equal(LazyImage(src).execute(), LazyImage(registry.open_source(files["tiff"])).execute())


def test_czi_is_known_by_suffix(files):
    files["czi"].write_bytes(b"ZISRAWFILE" + bytes(64))
    assert registry.detect(files["czi"]).name == "czi"


def test_unknown_file_lists_the_known_formats_and_extras(files):
    with pytest.raises(UnsupportedFormatError) as ei:
        registry.detect(files["text"])
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, of.OmeframeError)
    for e in registry.FORMATS:
        assert e.name in msg
    assert ".tif" in msg and ".parquet" in msg and "pip install 'omeframe[czi]'" in msg
    assert "format='parquet'" in msg
    with pytest.raises(UnsupportedFormatError, match="neither an omeframe dataset"):
        of.scan(files["empty"])


def test_missing_path_and_unsupported_objects(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        registry.detect(tmp_path / "missing.tif")
    with pytest.raises(UnsupportedFormatError, match="cannot scan a set") as ei:
        registry.open_source({1, 2})
    assert isinstance(ei.value, TypeError) and "tiff" in str(ei.value)


def test_format_option_overrides_the_suffix(files, tmp_path):
    odd = tmp_path / "table.data"
    odd.write_bytes(files["table"].read_bytes())
    src = registry.open_source(odd, format="parquet")
    assert isinstance(src, RecordTableSource) and src.format == "parquet"


def test_objects_resolve_to_sources(files):
    a = np.zeros((4, 5), np.uint8)
    assert isinstance(registry.open_source(a), ArraySource)
    assert isinstance(registry.open_source(of.from_numpy(a)), RecordSource)
    src = registry.open_source(files["tiff"])
    assert registry.open_source(src) is src
    assert registry.open_source(LazyImage(src)) is src  # identity plans are their source
    assert isinstance(registry.open_source(LazyImage(src).select(c=[1])), PlanSource)
    reader = DatasetReader(files["dataset"])
    assert isinstance(registry.open_source(reader, image_id="d"), DatasetSource)
    img = of.scan(files["tiff"]).select(c=[0, 2])
    got = registry.open_source(img)
    assert got.shape == (1, 2, 2, 40, 50)
    # engine code resolves paths through the registry without importing it
    assert isinstance(as_source(str(files["tiff"])), TiffSource)


def test_omearrow_image_type_reaches_the_source(files):
    img = of.OMEArrow.scan(files["tiff"], image_type="label")
    src = img.to_source()
    assert isinstance(src, HeaderOverride) and src.header().image_type == "label"


def test_writer_returns_the_manifest_and_facade_wraps_it(files, tmp_path):
    src = registry.open_source(files["tiff"])
    opts = WriteOptions(chunk_shape=(1, 16, 16), progress=False)
    manifest = write_items([(HeaderOptions(image_id="w").apply(src), None, 0, None)], tmp_path / "w", opts)
    assert manifest.generation == 1 and (tmp_path / "w" / MANIFEST_NAME).is_file()
    ds = of.open_dataset(tmp_path / "w")
    assert isinstance(ds, of.Dataset) and ds.image_ids == ["w"]
    assert isinstance(ds.scan("w"), of.OMEArrow)
    np.testing.assert_array_equal(ds.read("w"), LazyImage(src).execute())


def test_one_default_per_write_option():
    import inspect

    opts = WriteOptions()
    for fn in (of.write_dataset, of.from_tiff, of.from_ome_zarr, of.ingest_source):
        params = inspect.signature(fn).parameters
        for name in ("compression", "compression_level", "format", "mode", "chunk_shape", "progress"):
            if name in params:
                assert params[name].default == getattr(opts, name), (fn.__name__, name)


def test_header_options_check_channel_names(files):
    src = registry.open_source(files["tiff"])
    h = HeaderOptions(name="n", channel_names=["a", "b", "c"]).header(src)
    assert h.name == "n" and [c.name for c in h.channels] == ["a", "b", "c"]
    assert src.header().channels[0].name != "a"  # the source's header is untouched
    with pytest.raises(ValueError, match="channel_names has 2 names but the image has 3 channels"):
        HeaderOptions(channel_names=["a", "b"]).header(src)


#: Modules that define format constants (suffixes, marker files, the manifest name).
_CONSTANT_HOMES = {
    "formats/tiff/__init__.py", "formats/zarr/__init__.py", "formats/czi/__init__.py",
    "formats/record/files.py", "formats/dataset/manifest.py",
}
_FORMAT_LITERALS = {
    MANIFEST_NAME, ".tif", ".tiff", ".btf", ".tf8", ".tf2", ".czi", ".zarr", ".parquet", ".pq", ".parq",
    ".vortex", ".vtx", "zarr.json", ".zgroup", ".zarray", ".zattrs",
}


def _literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }
    return [
        (n.lineno, n.value) for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
        and id(n) not in docs and n.value in _FORMAT_LITERALS
    ]


def test_format_constants_are_defined_once():
    spelled = []
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG).as_posix()
        if rel in _CONSTANT_HOMES:
            continue
        spelled += [f"{rel}:{line}: {value!r}" for line, value in _literals(p)]
    assert not spelled, "format constants spelled out (import them from their format package):\n" + "\n".join(spelled)


def test_no_duck_typing_on_private_members():
    for p in PKG.rglob("*.py"):
        text = p.read_text(encoding="utf-8")
        for probe in ('hasattr(data, "_lazy")', '"_record_view"', "image_input()"):
            assert probe not in text, f"{p.relative_to(PKG)} probes {probe}"


def test_lazy_source_has_no_writer_hook():
    assert not hasattr(LazySource, "image_input")


def test_npy_files_open_memory_mapped_with_inferred_axes(tmp_path):
    rgb = np.arange(16 * 12 * 3, dtype=np.uint8).reshape(16, 12, 3)
    np.save(tmp_path / "rgb.npy", rgb)
    assert registry.detect(tmp_path / "rgb.npy").name == "numpy"
    src = registry.open_source(tmp_path / "rgb.npy")
    assert src.shape == (1, 3, 1, 16, 12)  # trailing RGB samples become channels
    assert np.array_equal(of.scan(tmp_path / "rgb.npy").export("numpy")[0, :, 0], rgb.transpose(2, 0, 1))
    as_zyx = registry.open_source(tmp_path / "rgb.npy", dim_order="ZYX")
    assert as_zyx.shape == (1, 1, 16, 12, 3)
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="not a readable .npy array file"):
        registry.open_source(tmp_path / "bad.npy")

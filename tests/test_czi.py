"""CZI through pylibCZIrw: files written by pylibCZIrw's own writer, read lazily.

The tests that need the library skip when it is absent; the missing-library
error is checked by simulating its absence.
"""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import numpy as np
import pytest

import omeframe as of
from omeframe.engine.lazy import LazyImage
from omeframe.errors import CorruptFileError, OptionalDependencyError, SchemaError
from omeframe.facade import ingest_source
from omeframe.model.record import RecordView

RNG = np.random.default_rng(11)


def _pyczi():
    pytest.importorskip("pylibCZIrw")
    from pylibCZIrw import czi as pyczi

    return pyczi


def _write_tczyx(path: Path, a: np.ndarray, *, names=None, scale=(0.5e-6, 0.5e-6, 2e-6), location=(10, 20)) -> None:
    pyczi = _pyczi()
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        for t in range(a.shape[0]):
            for c in range(a.shape[1]):
                for z in range(a.shape[2]):
                    w.write(a[t, c, z][..., None], plane={"T": t, "C": c, "Z": z}, location=location)
        w.write_metadata(
            document_name="probe",
            channel_names=dict(enumerate(names)) if names else None,
            scale_x=scale[0], scale_y=scale[1], scale_z=scale[2],
        )


@pytest.fixture
def tczyx_czi(tmp_path):
    a = RNG.integers(0, 60000, (2, 3, 4, 40, 50), dtype=np.uint16)
    path = tmp_path / "stack.czi"
    _write_tczyx(path, a, names=["DAPI", "GFP", "RFP"])
    return path, a


def test_gray16_tczyx_lazy_reads(tczyx_czi):
    from omeframe.formats.czi.source import open_czi_source

    path, a = tczyx_czi
    src = open_czi_source(path, tile=16)
    assert src.shape == (2, 3, 4, 40, 50) and src.dtype == np.uint16
    h = src.header()
    assert [c.name for c in h.channels] == ["DAPI", "GFP", "RFP"]
    assert h.physical_size_x == pytest.approx(0.5) and h.physical_size_z == pytest.approx(2.0)
    np.testing.assert_array_equal(LazyImage(src).execute(), a)
    plan = LazyImage(src).select(t=[1], c=[2], z=[3], y=(5, 15), x=(3, 20))
    assert plan.info().chunks_touched == 2  # one tile row, two tile columns
    np.testing.assert_array_equal(plan.execute()[0, 0, 0], a[1, 2, 3, 5:15, 3:20])


def test_only_touched_tiles_are_read(tczyx_czi, monkeypatch):
    from omeframe.formats.czi.source import open_czi_source

    path, a = tczyx_czi
    src = open_czi_source(path, tile=16)
    calls = []
    reader = src._reader()
    real = reader.read
    monkeypatch.setattr(reader, "read", lambda **kw: (calls.append(kw), real(**kw))[1])
    LazyImage(src).select(t=[0], c=[1], z=[2], y=(0, 10), x=(0, 10)).execute()  # one tile: read inline
    assert len(calls) == 1
    assert calls[0]["plane"] == {"T": 0, "C": 1, "Z": 2} and calls[0]["roi"] == (10, 20, 16, 16)


def test_float32_and_bgr24(tmp_path):
    pyczi = _pyczi()
    from omeframe.formats.czi.source import open_czi_source

    f = RNG.random((20, 25), dtype=np.float32)
    with pyczi.create_czi(str(tmp_path / "f.czi"), exist_ok=True) as w:
        w.write(f)
    src = open_czi_source(tmp_path / "f.czi")
    assert src.shape == (1, 1, 1, 20, 25) and src.dtype == np.float32
    np.testing.assert_array_equal(LazyImage(src).execute()[0, 0, 0], f)

    bgr = RNG.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    with pyczi.create_czi(str(tmp_path / "rgb.czi"), exist_ok=True) as w:
        w.write(bgr, plane={"C": 0})
        w.write_metadata(channel_names={0: "brightfield"})
    src = open_czi_source(tmp_path / "rgb.czi")
    assert src.shape == (1, 3, 1, 30, 40) and src.dtype == np.uint8
    assert [c.name for c in src.header().channels] == ["brightfield_R", "brightfield_G", "brightfield_B"]
    # CZI stores BGR; omeframe exposes R, G, B.
    np.testing.assert_array_equal(LazyImage(src).execute()[0, :, 0], bgr[..., ::-1].transpose(2, 0, 1))


def test_scenes(tmp_path):
    pyczi = _pyczi()
    from omeframe.formats.czi.source import czi_scenes, open_czi_source

    s0 = RNG.integers(0, 255, (2, 16, 20), dtype=np.uint8)  # Z, Y, X
    s1 = RNG.integers(0, 255, (2, 12, 10), dtype=np.uint8)
    with pyczi.create_czi(str(tmp_path / "sc.czi"), exist_ok=True) as w:
        for z in range(2):
            w.write(s0[z][..., None], plane={"Z": z, "C": 0}, location=(0, 0), scene=0)
            w.write(s1[z][..., None], plane={"Z": z, "C": 0}, location=(100, 50), scene=1)
    assert czi_scenes(tmp_path / "sc.czi") == [0, 1]
    a = open_czi_source(tmp_path / "sc.czi", scene=1)
    assert a.shape == (1, 1, 2, 12, 10) and a.header().image_id == "sc_scene1"
    np.testing.assert_array_equal(LazyImage(a).execute()[0, 0], s1)
    np.testing.assert_array_equal(LazyImage(open_czi_source(tmp_path / "sc.czi", scene=0)).execute()[0, 0], s0)
    with pytest.raises(SchemaError, match=r"scenes \[0, 1\]; scene 5 does not exist"):
        open_czi_source(tmp_path / "sc.czi", scene=5)


def test_ingest_record_and_dataset(tczyx_czi, tmp_path):
    from omeframe.formats.czi.source import open_czi_source

    path, a = tczyx_czi
    rec = ingest_source(open_czi_source(path))
    assert RecordView(rec).dtype == np.uint16
    np.testing.assert_array_equal(of.to_numpy(rec), a)
    ds = ingest_source(open_czi_source(path, tile=32), out=tmp_path / "ds", image_id="czi")
    img = of.scan(ds, image_id="czi")
    np.testing.assert_array_equal(img.select(t=[1], z=[2]).export("numpy")[0, :, 0], a[1, :, 2])


def test_bad_files(tmp_path):
    _pyczi()
    from omeframe.formats.czi.source import open_czi_source

    with pytest.raises(FileNotFoundError, match="no such CZI file"):
        open_czi_source(tmp_path / "nope.czi")
    (tmp_path / "junk.czi").write_bytes(b"\0" * 64)
    with pytest.raises(CorruptFileError, match="not a readable CZI file"):
        open_czi_source(tmp_path / "junk.czi")


def test_missing_pylibczirw_gives_install_hint(monkeypatch, tmp_path):
    """Simulate an environment without pylibCZIrw (whether or not it is installed)."""
    from omeframe.formats.czi.source import open_czi_source
    from omeframe.loaders import load_czis

    for mod in [m for m in sys.modules if m == "pylibCZIrw" or m.startswith("pylibCZIrw.")]:
        monkeypatch.delitem(sys.modules, mod)
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "pylibCZIrw" or name.startswith("pylibCZIrw."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    (tmp_path / "x.czi").write_bytes(b"")
    with pytest.raises(OptionalDependencyError, match=r"pylibCZIrw.*pip install 'omeframe\[czi\]'") as ei:
        open_czi_source(tmp_path / "x.czi")
    assert isinstance(ei.value, ImportError)
    with pytest.raises(OptionalDependencyError, match=r"omeframe\[czi\]"):
        load_czis([tmp_path / "x.czi"], "SCYX")

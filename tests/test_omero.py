"""The OMERO adapter against a stand-in gateway, and its omero-py names against omero-py itself.

No OMERO server runs here and omero-py cannot be installed (its dependency
zeroc-ice has no wheel), so:

* the stand-in classes below implement exactly the omero-py calls listed in
  ``omeframe.formats.omero.api`` (nothing else: a call outside the list fails
  with ``AttributeError``), and serve pixels big-endian as the server does,
  with OMERO's level order (level 0 the smallest);
* ``test_checked_names_exist_in_omero_py`` downloads the pinned omero-py wheel
  (``pip download``, cached under ``~/.cache/omeframe``), parses its source
  with ``ast`` (no import) and asserts every listed method and attribute is
  defined on the named class or one of its bases.
"""

from __future__ import annotations

import ast
import os
import pickle
import re
import subprocess
import sys
import threading
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import omeframe
from omeframe.engine.lazy import LazyImage
from omeframe.errors import ImageNotFoundError, OptionalDependencyError, SchemaError
from omeframe.formats.omero import source as omero_source
from omeframe.formats.omero.api import OMERO_API, OMERO_ATTRIBUTES, OMERO_GATEWAY_KWARGS, OMERO_PY_CHECKED
from omeframe.formats.omero.source import (
    OmeroConnectionError,
    OmeroSource,
    get_image_metadata,
    omero_catalog,
    omero_level,
    open_omero,
    parse_omero_url,
)
from omeframe.tiles import TileProvider

# ---------------------------------------------------------------------------
# the stand-in gateway: exactly the omero-py names the adapter may use
# ---------------------------------------------------------------------------
_UNITS = {"MICROMETER": 1.0, "NANOMETER": 1e3}  # factors from µm


class FakeLength:
    IMPLEMENTS = "LengthI"

    def __init__(self, value: float) -> None:
        self._v = value

    def getValue(self) -> float:
        return self._v


class FakeColor:
    IMPLEMENTS = "ColorHolder"

    def __init__(self, r: int, g: int, b: int, a: int = 255) -> None:
        self._rgba = (r, g, b, a)

    def getRed(self) -> int:
        return self._rgba[0]

    def getGreen(self) -> int:
        return self._rgba[1]

    def getBlue(self) -> int:
        return self._rgba[2]

    def getAlpha(self) -> int:
        return self._rgba[3]


def _length_in(value_um: float | None, units: str | None) -> Any:
    if value_um is None:
        return None
    if value_um == "pixel":  # a size stored in PIXEL units: omero-py's conversion raises a plain Exception
        raise Exception("1.0 PIXEL cannot be converted to MICROMETER")  # noqa: TRY002 - as omero-py does
    return FakeLength(value_um * _UNITS[units]) if units else value_um


class FakeChannel:
    IMPLEMENTS = "_ChannelWrapper"

    def __init__(self, label: str, color: FakeColor | None, em_um: float | None, window: tuple[float, float],
                 active: bool) -> None:
        self._label, self._color, self._em, self._window, self._active = label, color, em_um, window, active

    def getLabel(self) -> str:
        return self._label

    def getColor(self) -> FakeColor | None:
        return self._color

    def getEmissionWave(self, units: str | None = None) -> Any:
        return _length_in(self._em, units)

    def getExcitationWave(self, units: str | None = None) -> Any:
        return None

    def getWindowStart(self) -> float:
        return self._window[0]

    def getWindowEnd(self) -> float:
        return self._window[1]

    def isActive(self) -> bool:
        return self._active


class FakeImage:
    IMPLEMENTS = "_ImageWrapper"

    def __init__(self, server: FakeServer, iid: int) -> None:
        self._s, self._id = server, iid
        self._spec = server.images[iid]

    def _full(self) -> np.ndarray:
        return self._spec["levels"][-1]  # OMERO order: the last level is the full resolution

    def getId(self) -> int:
        return self._id

    def getName(self) -> str:
        return self._spec["name"]

    def getSizeX(self) -> int:
        return self._full().shape[4]

    def getSizeY(self) -> int:
        return self._full().shape[3]

    def getSizeZ(self) -> int:
        return self._full().shape[2]

    def getSizeC(self) -> int:
        return self._full().shape[1]

    def getSizeT(self) -> int:
        return self._full().shape[0]

    def getPixelsType(self) -> str:
        return self._spec["pixel_type"]

    def getPixelSizeX(self, units: str | None = None) -> Any:
        return _length_in(self._spec["pixel_size"][0], units)

    def getPixelSizeY(self, units: str | None = None) -> Any:
        return _length_in(self._spec["pixel_size"][1], units)

    def getPixelSizeZ(self, units: str | None = None) -> Any:
        return _length_in(self._spec["pixel_size"][2], units)

    def getChannels(self) -> list[FakeChannel]:
        return list(self._spec["channels"])

    def getPixelsId(self) -> int:
        return 1000 + self._id

    def requiresPixelsPyramid(self) -> bool:
        return self._spec["large"]

    def getAcquisitionDate(self) -> Any:
        return None


class FakeResolutionDescription:
    IMPLEMENTS = "ResolutionDescription"

    def __init__(self, size_x: int, size_y: int) -> None:
        self.sizeX, self.sizeY = size_x, size_y


class FakeStore:
    """A raw pixels store: big-endian bytes, OMERO's level numbering (0 = smallest)."""

    IMPLEMENTS = "RawPixelsStorePrx"

    def __init__(self, server: FakeServer) -> None:
        self._s = server
        self._pix: int | None = None
        self._level: int | None = None
        self.closed = False

    def _levels(self) -> list[np.ndarray]:
        assert self._pix is not None, "setPixelsId was not called"
        return self._s.images[self._pix - 1000]["levels"]

    def _array(self) -> np.ndarray:
        levels = self._levels()
        return levels[len(levels) - 1 if self._level is None else self._level]

    def setPixelsId(self, pixels_id: int, bypass: bool, ctx: Any = None) -> None:
        assert ctx is self._s.SERVICE_OPTS
        self._pix, self._level = pixels_id, None

    def getResolutionLevels(self) -> int:
        return len(self._levels())

    def getResolutionDescriptions(self) -> list[FakeResolutionDescription]:
        return [FakeResolutionDescription(a.shape[4], a.shape[3]) for a in reversed(self._levels())]

    def setResolutionLevel(self, level: int) -> None:
        assert 0 <= level < len(self._levels())
        self._s.calls.append(("setResolutionLevel", level))
        self._level = level

    def getTileSize(self) -> list[int]:
        return list(self._s.tile_size)

    def _bytes(self, a: np.ndarray) -> bytes:
        return np.ascontiguousarray(a).astype(a.dtype.newbyteorder(">")).tobytes()

    def getPlane(self, z: int, c: int, t: int) -> bytes:
        self._s.calls.append(("getPlane", z, c, t))
        return self._bytes(self._array()[t, c, z])

    def getTile(self, z: int, c: int, t: int, x: int, y: int, w: int, h: int) -> bytes:
        self._s.calls.append(("getTile", self._level, z, c, t, x, y, w, h))
        if self._s.fail_tiles:
            raise RuntimeError("Ice.ConnectionLostException: recv() returned zero")
        a = self._array()
        assert x + w <= a.shape[4] and y + h <= a.shape[3], "tile outside the level"
        return self._bytes(a[t, c, z, y : y + h, x : x + w])

    def close(self) -> None:
        self.closed = True


class FakeGateway:
    """``BlitzGateway`` over an in-memory server (keyword names as omero-py's)."""

    IMPLEMENTS = "_BlitzGateway"

    def __init__(self, username: str | None = None, passwd: str | None = None, host: str | None = None,
                 port: int | None = None, secure: bool = False) -> None:
        self.SERVICE_OPTS = {"omero.group": "-1"}
        self.host = host
        self._server: FakeServer | None = None
        self._connected = False
        self._login = (username, passwd, port, secure)

    def connect(self) -> bool:
        server = SERVERS.get(self.host or "")
        if server is None or self._login[1] != "secret":
            return False
        self._server, self._connected = server, True
        server.SERVICE_OPTS = self.SERVICE_OPTS
        return True

    def getLastError(self) -> str:
        return "login failed: bad password or unknown host"

    def isConnected(self) -> bool:
        return self._connected

    def close(self) -> None:
        self._connected = False

    def getObject(self, obj_type: str, oid: int) -> FakeImage | None:
        assert obj_type == "Image"
        assert self._server is not None
        return FakeImage(self._server, oid) if oid in self._server.images else None

    def createRawPixelsStore(self) -> FakeStore:
        assert self._server is not None
        store = FakeStore(self._server)
        self._server.stores.append(store)
        return store


class FakeServer:
    def __init__(self, tile_size: tuple[int, int] = (64, 48)) -> None:
        self.images: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.stores: list[FakeStore] = []
        self.tile_size = tile_size
        self.fail_tiles = False
        self.SERVICE_OPTS: Any = None


SERVERS: dict[str, FakeServer] = {}

STAND_INS = (FakeLength, FakeColor, FakeChannel, FakeImage, FakeResolutionDescription, FakeStore, FakeGateway)


def _channels() -> list[FakeChannel]:
    return [
        FakeChannel("DAPI", FakeColor(0, 0, 255), 0.461, (10.0, 900.0), True),
        FakeChannel("GFP", FakeColor(0, 255, 0, 128), None, (0.0, 4000.0), False),
    ]


@pytest.fixture
def server() -> Any:
    rng = np.random.default_rng(7)
    s = FakeServer()
    # a regular image: 1 level, planes (uint16 values above 255 check the byte order)
    small = rng.integers(0, 60000, size=(2, 2, 3, 40, 50), dtype=np.uint16)
    s.images[11] = {"name": "regular", "pixel_type": "uint16", "pixel_size": (0.5, 0.5, 2.0),
                    "channels": _channels(), "large": False, "levels": [small]}
    # a pyramid: OMERO order, smallest first; each level its own values
    full = rng.integers(-30000, 30000, size=(1, 2, 1, 300, 200), dtype=np.int16)
    mid = rng.integers(-30000, 30000, size=(1, 2, 1, 150, 100), dtype=np.int16)
    low = rng.integers(-30000, 30000, size=(1, 2, 1, 75, 50), dtype=np.int16)
    s.images[22] = {"name": "slide", "pixel_type": "int16", "pixel_size": (0.25, 0.25, None),
                    "channels": _channels(), "large": True, "levels": [low, mid, full]}
    # a size in PIXEL units, float pixels
    s.images[33] = {"name": "", "pixel_type": "float", "pixel_size": ("pixel", "pixel", None),
                    "channels": [], "large": False,
                    "levels": [rng.random((1, 1, 1, 8, 9), dtype=np.float32)]}
    SERVERS["omero.test"] = s
    yield s
    SERVERS.pop("omero.test", None)


@pytest.fixture
def conn(server: FakeServer) -> FakeGateway:
    g = FakeGateway("me", "secret", host="omero.test", port=4064)
    assert g.connect()
    return g


def _read(src: OmeroSource, **sel: Any) -> np.ndarray:
    plan = LazyImage(src)
    return (plan.select(**sel) if sel else plan).execute()


# ---------------------------------------------------------------------------
# the names: stand-in == checked list == omero-py
# ---------------------------------------------------------------------------
def _public_methods(cls: type) -> set[str]:
    names = {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
    return names | ({"__init__"} if cls is FakeGateway else set())


def test_the_stand_in_implements_exactly_the_checked_names() -> None:
    by_class = {c.IMPLEMENTS: c for c in STAND_INS}
    for cls_name, methods in OMERO_API.items():
        assert _public_methods(by_class[cls_name]) == set(methods), cls_name
    for cls_name in set(by_class) - set(OMERO_API):
        assert _public_methods(by_class[cls_name]) == set(), cls_name
    gw = FakeGateway()
    for attr in OMERO_ATTRIBUTES["_BlitzGateway"]:
        assert hasattr(gw, attr)
    desc = FakeResolutionDescription(1, 2)
    assert set(vars(desc)) == set(OMERO_ATTRIBUTES["ResolutionDescription"])


def test_the_adapter_calls_only_checked_names() -> None:
    """Every omero-style (camelCase) method the adapter calls or reads is in the checked list."""
    tree = ast.parse(Path(omero_source.__file__).read_text(encoding="utf-8"))
    checked = {n for names in OMERO_API.values() for n in names}
    camel = re.compile(r"^[a-z]+[A-Z]\w*$")
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    attrs = {n for names in OMERO_ATTRIBUTES.values() for n in names}
    camel_used = {n for n in used if camel.match(n)} - attrs
    assert camel_used <= checked, f"omero-py calls outside OMERO_API: {sorted(camel_used - checked)}"
    unused = checked - {"__init__"} - used
    assert not unused, f"OMERO_API names the adapter no longer uses: {sorted(unused)}"


def _omero_py_wheel() -> Path:
    cache = Path(os.environ.get("OMEFRAME_TEST_CACHE", Path.home() / ".cache" / "omeframe")) / "omero-py"
    found = sorted(cache.glob(f"omero_py-{OMERO_PY_CHECKED}-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"omero-py=={OMERO_PY_CHECKED}", "-d", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    found = sorted(cache.glob(f"omero_py-{OMERO_PY_CHECKED}-*.whl"))
    if proc.returncode != 0 or not found:
        pytest.fail(
            f"could not download omero-py {OMERO_PY_CHECKED} to check the OMERO adapter's calls against it "
            f"(`{' '.join(cmd)}` exited {proc.returncode}):\n{proc.stderr[-2000:]}\n"
            f"Put the wheel omero_py-{OMERO_PY_CHECKED}-py3-none-any.whl into {cache} to run offline.",
            pytrace=False,
        )
    return found[0]


#: The omero-py files defining the classes the adapter touches.
_OMERO_FILES = (
    "omero/gateway/__init__.py",
    "omero_api_RawPixelsStore_ice.py",
    "omero_api_PyramidService_ice.py",
    "omero_ServicesF_ice.py",
    "omero_model_LengthI.py",
)


def _class_index(wheel: Path) -> dict[str, ast.ClassDef]:
    index: dict[str, ast.ClassDef] = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in _OMERO_FILES:
            tree = ast.parse(zf.read(name).decode("utf-8"), filename=name)
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    index.setdefault(node.name, node)
    return index


def _members(cls: ast.ClassDef, index: dict[str, ast.ClassDef]) -> tuple[set[str], set[str], dict[str, list[str]]]:
    """Methods, attributes and method parameter names of ``cls`` and its bases (by name)."""
    methods: set[str] = set()
    attrs: set[str] = set()
    params: dict[str, list[str]] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            methods.add(node.name)
            params.setdefault(node.name, [a.arg for a in node.args.args + node.args.kwonlyargs])
            if node.name == "__init__":
                attrs.update(params["__init__"][1:])
        elif isinstance(node, ast.Assign):
            attrs.update(t.id for t in node.targets if isinstance(t, ast.Name))
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    attrs.add(t.attr)
    for base in cls.bases:
        bname = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
        if bname in index and bname != cls.name:
            m, a, p = _members(index[bname], index)
            methods |= m
            attrs |= a
            for k, v in p.items():
                params.setdefault(k, v)
    return methods, attrs, params


def test_checked_names_exist_in_omero_py() -> None:
    index = _class_index(_omero_py_wheel())
    missing = []
    for cls_name in sorted(set(OMERO_API) | set(OMERO_ATTRIBUTES)):
        if cls_name not in index:
            missing.append(f"class {cls_name}")
            continue
        methods, attrs, params = _members(index[cls_name], index)
        missing += [f"{cls_name}.{m}()" for m in OMERO_API.get(cls_name, ()) if m not in methods]
        missing += [f"{cls_name}.{a}" for a in OMERO_ATTRIBUTES.get(cls_name, ()) if a not in attrs]
        if cls_name == "_BlitzGateway":
            missing += [f"BlitzGateway({k}=...)" for k in OMERO_GATEWAY_KWARGS if k not in params["__init__"]]
        for meth in ("getPixelSizeX", "getPixelSizeY", "getPixelSizeZ", "getEmissionWave", "getExcitationWave"):
            if meth in OMERO_API.get(cls_name, ()) and "units" not in params[meth]:
                missing.append(f"{cls_name}.{meth}(units=...)")
    assert not missing, f"omero-py {OMERO_PY_CHECKED} has no: {missing}"
    # the stand-in's positional signatures of the pixel calls match omero-py's
    _, _, store_params = _members(index["RawPixelsStorePrx"], index)
    assert store_params["getTile"][1:8] == ["z", "c", "t", "x", "y", "w", "h"]
    assert store_params["getPlane"][1:4] == ["z", "c", "t"]
    assert store_params["setPixelsId"][1:3] == ["pixelsId", "bypassOriginalFile"]


def test_the_check_finds_a_renamed_call(tmp_path: Path) -> None:
    src = "class Base:\n    def getTile(self): pass\nclass RawPixelsStorePrx(Base):\n    def getPlan(self): pass\n"
    index = {n.name: n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ClassDef)}
    methods, _, _ = _members(index["RawPixelsStorePrx"], index)
    assert "getTile" in methods and "getPlane" not in methods


# ---------------------------------------------------------------------------
# pixels
# ---------------------------------------------------------------------------
def test_regular_image_reads_planes(conn: FakeGateway, server: FakeServer) -> None:
    data = server.images[11]["levels"][0]
    src = OmeroSource(conn, 11)
    assert src.shape == data.shape and src.dtype == np.uint16
    assert len(src.levels()) == 1 and src.chunk_shape() == (1, 40, 50)
    np.testing.assert_array_equal(_read(src), data)
    assert {c[0] for c in server.calls} == {"getPlane"}
    server.calls.clear()
    np.testing.assert_array_equal(_read(src, t=[1], c=[0], z=[2], y=(5, 9)), data[1:2, 0:1, 2:3, 5:9])
    assert server.calls == [("getPlane", 2, 0, 1)]


def test_pyramid_levels_map_to_omero_order_and_read_by_tiles(conn: FakeGateway, server: FakeServer) -> None:
    low, mid, full = server.images[22]["levels"]
    src = OmeroSource(conn, 22)
    levels = src.levels()
    assert [lv.shape for lv in levels] == [full.shape, mid.shape, low.shape]
    assert src.chunk_shape() == (1, 48, 64)  # getTileSize() is (width, height)
    assert [omero_level(k, 3) for k in range(3)] == [2, 1, 0]
    for k, expected in enumerate((full, mid, low)):
        server.calls.clear()
        np.testing.assert_array_equal(_read(levels[k]), expected)
        assert {c for c in server.calls if c[0] == "setResolutionLevel"} <= {("setResolutionLevel", 2 - k)}
        assert all(c[1] == 2 - k for c in server.calls if c[0] == "getTile")
    # a region reads only the tiles it touches: rows 50..100 x cols 70..130 -> 2 tile rows x 2 tile columns
    server.calls.clear()
    np.testing.assert_array_equal(_read(src, c=[1], y=(50, 100), x=(70, 130)), full[:, 1:2, :, 50:100, 70:130])
    tiles = sorted(c[5:] for c in server.calls if c[0] == "getTile")
    assert tiles == [(64, 48, 64, 48), (64, 96, 64, 48), (128, 48, 64, 48), (128, 96, 64, 48)]
    # OmeroSource(level=k) is the same level as levels()[k]
    np.testing.assert_array_equal(_read(OmeroSource(conn, 22, level=2)), low)


def test_parallel_reads_share_a_bounded_pool_of_stores(conn: FakeGateway, server: FakeServer) -> None:
    full = server.images[22]["levels"][-1]
    src = OmeroSource(conn, 22, max_stores=2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            np.testing.assert_array_equal(_read(src, c=[0]), full[:, :1])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert 1 <= len(server.stores) <= 2
    src.close()
    assert all(s.closed for s in server.stores)
    with pytest.raises(ValueError, match="closed"):
        _read(src, c=[1])


# ---------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------
def test_metadata_channels_windows_wavelengths_sizes(conn: FakeGateway, server: FakeServer) -> None:
    src = OmeroSource(conn, 22)
    meta = src.metadata()
    assert meta["id"] == 22 and meta["name"] == "slide" and meta["pixel_type"] == "int16"
    assert (meta["size_t"], meta["size_c"], meta["size_z"], meta["size_y"], meta["size_x"]) == (1, 2, 1, 300, 200)
    assert (meta["pixel_size_x"], meta["pixel_size_y"], meta["pixel_size_z"]) == (0.25, 0.25, None)
    dapi, gfp = meta["channels"]
    assert dapi == {"name": "DAPI", "color": "0000FF", "color_rgba": 0x0000FFFF,
                    "emission_wavelength": pytest.approx(461.0), "excitation_wavelength": None,
                    "window_start": 10.0, "window_end": 900.0, "active": True}
    assert gfp["color"] == "00FF00" and gfp["color_rgba"] == 0x00FF0080 and gfp["active"] is False
    assert gfp["window_end"] == 4000.0 and gfp["emission_wavelength"] is None
    assert meta["levels"] == [(200, 300), (100, 150), (50, 75)] and meta["tile_size"] == (64, 48)
    assert get_image_metadata(conn.getObject("Image", 22)).keys() <= meta.keys()

    h = src.header()
    assert h.image_id == "22" and h.name == "slide"
    assert [c.name for c in h.channels] == ["DAPI", "GFP"]
    assert h.channels[0].emission_um == pytest.approx(0.461) and h.channels[0].color_rgba == 0x0000FFFF
    assert (h.physical_size_x, h.physical_size_z, h.physical_size_z_unit) == (0.25, None, None)
    coarse = src.levels()[2].header()
    assert (coarse.physical_size_x, coarse.physical_size_y) == (1.0, 1.0)  # 200 / 50 * 0.25


def test_metadata_without_channels_or_convertible_sizes(conn: FakeGateway) -> None:
    src = OmeroSource(conn, 33)
    h = src.header()
    assert src.dtype == np.float32
    assert h.physical_size_x is None and h.physical_size_x_unit is None  # PIXEL units: no µm size
    assert [c.name for c in h.channels] == ["C0"] and h.name == "omero image 33"


# ---------------------------------------------------------------------------
# providers, ingest, catalogs
# ---------------------------------------------------------------------------
def test_tile_provider_over_an_omero_source(conn: FakeGateway, server: FakeServer) -> None:
    low, mid, full = server.images[22]["levels"]
    tp = TileProvider(OmeroSource(conn, 22), tile=64)
    assert tp.levels == [full.shape, mid.shape, low.shape] and tp.computed_levels == [False] * 3
    np.testing.assert_array_equal(tp.get_tile(0, 0, 1, 0, 2, 1), full[0, 1, 0, 128:192, 64:128])
    np.testing.assert_array_equal(tp.get_tile(2, 0, 0, 0, 1, 0), low[0, 0, 0, 64:75, 0:50])
    assert tp.best_level_for_scale(0.3) == 1
    np.testing.assert_array_equal(tp.load_overview(max_size=100), low[0, :, 0])


def test_plans_pick_omero_levels_and_the_zarr_view_serves_them(conn: FakeGateway, server: FakeServer) -> None:
    low, mid, full = server.images[22]["levels"]
    img = omeframe.scan(OmeroSource(conn, 22))
    server.calls.clear()
    np.testing.assert_array_equal(img.at_resolution(0.5).export("numpy"), mid)  # level 1: 0.5 µm per pixel
    assert {c[1] for c in server.calls if c[0] == "getTile"} == {1}  # OMERO level 1 of 0..2
    group = img.zarr_group()
    np.testing.assert_array_equal(np.asarray(group["2"][:]).reshape(low.shape), low)


def test_ingest_into_a_dataset(conn: FakeGateway, server: FakeServer, tmp_path: Path) -> None:
    omeframe.write_dataset([OmeroSource(conn, 11), OmeroSource(conn, 22)], tmp_path / "omero.ds")
    slide = omeframe.scan(tmp_path / "omero.ds", image_id="22")
    np.testing.assert_array_equal(slide.export("numpy"), server.images[22]["levels"][-1])
    regular = omeframe.scan(tmp_path / "omero.ds", image_id="11")
    np.testing.assert_array_equal(regular.export("numpy"), server.images[11]["levels"][0])
    assert tuple(regular.channel_names) == ("DAPI", "GFP")
    assert regular.physical_sizes["x"].value == 0.5


def test_catalog_of_image_ids(conn: FakeGateway) -> None:
    table = omero_catalog(conn, [11, "22"])
    rows = table.to_pylist()
    assert [r["image_id"] for r in rows] == ["11", "22"]
    assert rows[0]["urlpath"] == "omero://omero.test/image/11"
    assert rows[1]["shape"] == [1, 2, 1, 300, 200] and rows[1]["dtype"] == "int16"
    assert rows[0]["channel_names"] == ["DAPI", "GFP"] and [r["large"] for r in rows] == [False, True]
    assert rows[0]["physical_size_z"] == 2.0
    with pytest.raises(ImageNotFoundError, match="404"):
        omero_catalog(conn, [11, 404])


# ---------------------------------------------------------------------------
# errors, URLs
# ---------------------------------------------------------------------------
def test_missing_image_names_the_id(conn: FakeGateway) -> None:
    with pytest.raises(ImageNotFoundError, match=r"no OMERO image with id 404"):
        OmeroSource(conn, 404)
    with pytest.raises(ValueError, match="must be an integer"):
        OmeroSource(conn, "abc")
    with pytest.raises(ValueError, match="level 3 does not exist"):
        OmeroSource(conn, 22, level=3)


def test_connection_failures_are_surfaced(conn: FakeGateway, server: FakeServer) -> None:
    src = OmeroSource(conn, 22)
    server.fail_tiles = True
    with pytest.raises(OmeroConnectionError, match=r"getTile for image 22 failed \(RuntimeError: Ice"):
        _read(src, c=[0], y=(0, 10), x=(0, 10))
    conn.close()
    with pytest.raises(OmeroConnectionError, match="not connected"):
        OmeroSource(conn, 22)
    with pytest.raises(TypeError, match="BlitzGateway"):
        OmeroSource(object(), 22)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(src)


def test_bad_pixel_type_and_short_payload(conn: FakeGateway, server: FakeServer) -> None:
    server.images[44] = dict(server.images[11], pixel_type="bit")
    with pytest.raises(SchemaError, match="pixel type 'bit'"):
        OmeroSource(conn, 44)
    src = OmeroSource(conn, 11)
    server.images[11]["levels"][0] = server.images[11]["levels"][0][..., :10]  # the server sends less
    with pytest.raises(omeframe.errors.PixelPayloadError, match="returned 800 bytes"):
        _read(src, t=[0], c=[0], z=[0])


def test_urls_and_open_omero(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_omero_url("omero://omero.test:4063/image/22") == ("omero.test", 4063, 22)
    for bad in ("http://omero.test/image/22", "omero://omero.test/dataset/3", "omero://omero.test/image/x"):
        with pytest.raises(ValueError, match="no OMERO image URL"):
            parse_omero_url(bad)
    monkeypatch.setitem(sys.modules, "omero", None)
    monkeypatch.setitem(sys.modules, "omero.gateway", None)
    with pytest.raises(OptionalDependencyError, match=r"omeframe\[omero\]"):
        open_omero("omero://omero.test/image/22", username="me", password="secret")
    fake = types.ModuleType("omero.gateway")
    fake.BlitzGateway = FakeGateway  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "omero", types.ModuleType("omero"))
    monkeypatch.setitem(sys.modules, "omero.gateway", fake)
    with pytest.raises(OmeroConnectionError, match="bad password"):
        open_omero("omero://omero.test/image/22", username="me", password="wrong")
    with open_omero("omero://omero.test/image/22", username="me", password="secret", level=1) as src:
        np.testing.assert_array_equal(_read(src), server.images[22]["levels"][1])
    assert all(s.closed for s in server.stores)

"""``view_pyvista`` and ``OMEArrow.view(how="pyvista")``, rendered off-screen.

Every plotter is built with ``off_screen=True`` (or PyVista's global
off-screen switch) and ``show=False``, so no window or X server is needed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import omeframe
from omeframe.engine.lazy import LazyImage
from omeframe.errors import OptionalDependencyError
from omeframe.ops.view3d import SCALARS, view_pyvista

PKG_PARENT = Path(__file__).resolve().parents[1] / "python"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """TCZYX uint16: channel 0 a ramp, channel 1 a bright box, distinct values at t=1."""
    arr = np.zeros((2, 2, 9, 20, 26), np.uint16)
    arr[:, 0] = (np.arange(9 * 20 * 26).reshape(9, 20, 26) % 997).astype(np.uint16)
    arr[0, 1, 2:7, 5:15, 6:20] = 1000
    arr[1] = arr[0] + 7
    return arr


@pytest.fixture(scope="module")
def record(image: np.ndarray) -> Any:
    return omeframe.from_numpy(
        image, dim_order="TCZYX", physical_size_x=0.25, physical_size_y=0.5, physical_size_z=2.0,
        chunk_shape=(1, 8, 8),
    )


def _volume(pv: ModuleType, plotter: Any) -> Any:
    vols = [a for a in plotter.renderer.actors.values() if isinstance(a, pv.Volume)]
    assert len(vols) == 1
    return vols[0]


def _voxels(volume: Any) -> np.ndarray:
    grid = volume.mapper.dataset
    nx, ny, nz = grid.dimensions
    return np.asarray(grid.point_data[SCALARS]).reshape(nz, ny, nx)


def test_volume_holds_the_channel_with_physical_spacing(pyvista: ModuleType, record: Any, image: np.ndarray):
    pl = view_pyvista(record, c=1, clim=(0, 1000), opacity=0.4, off_screen=True, show=False)
    try:
        vol = _volume(pyvista, pl)
        assert vol.mapper.dataset.dimensions == (26, 20, 9)
        assert vol.mapper.dataset.spacing == pytest.approx((0.25, 0.5, 2.0))
        assert tuple(vol.mapper.scalar_range) == (0, 1000)
        np.testing.assert_array_equal(_voxels(vol), image[0, 1])
        opac = vol.prop.GetScalarOpacity()
        assert [opac.GetValue(v) for v in (0, 500, 1000)] == pytest.approx([0.4] * 3)
        assert vol.prop.interpolation_type == "nearest"
        assert vol.mapper.GetSampleDistance() == pytest.approx(0.25 * 0.5)
    finally:
        pl.close()


def test_c_t_downsample_and_scaling_values(pyvista: ModuleType, record: Any, image: np.ndarray):
    pl = view_pyvista(record, c=0, downsample=2, scaling_values=(3.0, 1.0, 1.0), t=1,
                      interpolation="linear", off_screen=True, show=False)
    try:
        vol = _volume(pyvista, pl)
        assert vol.mapper.dataset.dimensions == (13, 10, 5)
        assert vol.mapper.dataset.spacing == pytest.approx((2.0, 2.0, 6.0))
        np.testing.assert_array_equal(_voxels(vol), image[1, 0, ::2, ::2, ::2])
        lo, hi = np.percentile(image[1, 0, ::2, ::2, ::2], (1.0, 99.9))
        assert tuple(vol.mapper.scalar_range) == pytest.approx((lo, hi))
        assert vol.prop.interpolation_type == "linear"
        opac = vol.prop.GetScalarOpacity()  # the default "sigmoid" rises across clim
        assert opac.GetValue(lo) < 0.05 < 0.95 < opac.GetValue(hi)
    finally:
        pl.close()


def test_lazy_input_reads_only_the_channel_and_the_kept_planes(
    pyvista: ModuleType, record: Any, image: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "img.parquet"
    omeframe.OMEArrow(record).export("parquet", out=path)
    reads: list[tuple[Any, Any]] = []
    execute = LazyImage.execute

    def spy(self: LazyImage, **kw: Any) -> np.ndarray:
        sel = self.selection.resolve(self.source.shape)
        reads.append((tuple(sel.c), tuple(sel.z)))
        return execute(self, **kw)

    monkeypatch.setattr(LazyImage, "execute", spy)
    pl = view_pyvista(omeframe.scan(path), c=1, downsample=3, off_screen=True, show=False)
    try:
        np.testing.assert_array_equal(_voxels(_volume(pyvista, pl)), image[0, 1, ::3, ::3, ::3])
    finally:
        pl.close()
    assert reads and {c for c, _ in reads} == {(1,)}
    assert sorted(z for _, zs in reads for z in zs) == [0, 3, 6]


def test_screenshot_renders_the_volume(pyvista: ModuleType, record: Any):
    pl = view_pyvista(record, c=1, clim=(0, 1000), opacity="linear", show_axes=False,
                      off_screen=True, show=False)
    try:
        pl.camera_position = "xy"
        shot = np.asarray(pl.screenshot(return_img=True, window_size=(160, 120)))
    finally:
        pl.close()
    assert shot.shape == (120, 160, 3)
    centre = shot[45:75, 60:100].astype(int).sum(axis=-1)
    assert (centre > 150).mean() > 0.5  # the bright box fills the middle of a black scene


def test_omearrow_view_pyvista(pyvista: ModuleType, record: Any, image: np.ndarray,
                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pyvista, "OFF_SCREEN", True)
    img = omeframe.OMEArrow(record, tcz=(1, 1, 0))
    pl = img.view(how="pyvista", show=False, downsample=2, show_axes=False)
    try:
        assert isinstance(pl, pyvista.Plotter) and pl.off_screen
        np.testing.assert_array_equal(_voxels(_volume(pyvista, pl)), image[1, 1, ::2, ::2, ::2])
    finally:
        pl.close()
    pl = img.view(how="pyvista", show=False, c=0, clim=(1, 2), scaling_values=(1, 1, 1))
    try:
        vol = _volume(pyvista, pl)
        np.testing.assert_array_equal(_voxels(vol), image[1, 0])
        assert tuple(vol.mapper.scalar_range) == (1, 2) and vol.mapper.dataset.spacing == (1, 1, 1)
    finally:
        pl.close()
    with pytest.raises(ValueError, match="'pyvista'"):
        img.view(how="vtk", show=False)


def test_single_plane_renders_as_a_slab(pyvista: ModuleType):
    plane = np.arange(12 * 10, dtype=np.float32).reshape(12, 10)
    pl = view_pyvista(plane, off_screen=True, show=False)
    try:
        vol = _volume(pyvista, pl)
        assert vol.mapper.dataset.dimensions == (10, 12, 1)
        np.testing.assert_array_equal(_voxels(vol)[0], plane)
    finally:
        pl.close()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"c": 2}, ValueError, r"c=2 is out of range.*2 channel"),
        ({"c": -1}, ValueError, "valid c are 0..1"),
        ({"t": 5}, ValueError, "t=5 is out of range"),
        ({"c": 1.0}, TypeError, "c must be an integer"),
        ({"downsample": 0}, ValueError, "downsample must be a positive integer"),
        ({"downsample": -2}, ValueError, "downsample must be a positive integer"),
        ({"clim": (5, 5)}, ValueError, "clim must be finite with low < high"),
        ({"opacity": 1.5}, ValueError, r"opacity must lie in \[0, 1\]"),
        ({"interpolation": "cubic"}, ValueError, "'nearest' or 'linear'"),
        ({"backend": "vnc"}, ValueError, "backend must be one of"),
        ({"scaling_values": (1, 0, 1)}, ValueError, "scaling_values must be positive"),
        ({"sampling_scale": 0}, ValueError, "sampling_scale must be a positive"),
    ],
)
def test_bad_arguments(pyvista: ModuleType, record: Any, kwargs: dict[str, Any], error: type, match: str):
    with pytest.raises(error, match=match):
        view_pyvista(record, off_screen=True, show=False, **kwargs)


def test_missing_pyvista_names_the_extra(record: Any, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pyvista", None)
    with pytest.raises(OptionalDependencyError, match=r"omeframe\[viz3d\]"):
        view_pyvista(record, show=False)
    with pytest.raises(ImportError, match="viz3d"):
        omeframe.OMEArrow(record).view(how="pyvista", show=False)


def test_importing_the_facade_does_not_load_pyvista():
    code = (
        f"import sys; sys.path.insert(0, {str(PKG_PARENT)!r})\n"
        "import omeframe.facade, omeframe.ops.view3d\n"
        "print(sorted(m for m in ('pyvista', 'vtk') if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"

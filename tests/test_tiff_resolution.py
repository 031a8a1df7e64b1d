"""TIFF resolution tags are read as declared (pixels per ResolutionUnit), as tifffile/BioIO/Bio-Formats do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from omeframe.registry import open_source


@pytest.mark.parametrize(
    ("resolution", "unit", "expected_um"),
    [
        ((72.0, 72.0), "INCH", (25400 / 72, 25400 / 72)),  # an image editor's default: 352.78 µm
        ((3000.0, 1500.0), "CENTIMETER", (10000 / 3000, 10000 / 1500)),
        ((40000.0, 40000.0), "INCH", (0.635, 0.635)),
    ],
)
def test_resolution_tags_give_pixel_size(
    tmp_path: Path, resolution: tuple[float, float], unit: str, expected_um: tuple[float, float]
) -> None:
    p = tmp_path / "res.tif"
    tifffile.imwrite(p, np.zeros((4, 5), "uint8"), resolution=resolution, resolutionunit=unit)
    h = open_source(p).header()
    assert (h.physical_size_x, h.physical_size_y) == pytest.approx(expected_um)
    assert h.physical_size_x_unit == h.physical_size_y_unit == "µm"


def test_resolution_without_unit_is_no_size(tmp_path: Path) -> None:
    p = tmp_path / "nounit.tif"
    tifffile.imwrite(p, np.zeros((4, 5), "uint8"), resolution=(72.0, 72.0), resolutionunit="NONE")
    h = open_source(p).header()
    default = open_source(np.zeros((1, 1, 1, 4, 5), "uint8"), dim_order="TCZYX").header()
    assert (h.physical_size_x, h.physical_size_y) == (default.physical_size_x, default.physical_size_y)

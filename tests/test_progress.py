"""Progress bars: only when asked, or on an interactive terminal."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

import omeframe as of
from omeframe.engine import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_none_is_off_in_pipes_and_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delenv("CI", raising=False)
    assert not progress.wanted(None)
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert progress.wanted(None)
    assert not progress.wanted(None, large=False)
    monkeypatch.setenv("CI", "true")
    assert not progress.wanted(None)
    assert progress.wanted(True)
    with pytest.raises(TypeError, match="progress must be"):
        progress.wanted("yes")  # type: ignore[arg-type]


def test_many_crops_write_prints_nothing_to_a_log(tmp_path, capfd) -> None:
    crops = np.zeros((1500, 4, 4), dtype=np.uint8)
    of.write_table(tmp_path / "t.parquet", list(crops), dim_order="YX")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_asked_for_bar_is_drawn(tmp_path, capfd) -> None:
    of.write_table(tmp_path / "t.parquet", [np.zeros((4, 4), np.uint8)] * 3, dim_order="YX",
                   progress=True)
    assert "encoding batches" in capfd.readouterr().err  # same-shape images: stacked batches
    ragged = [np.zeros((4, 4), np.uint8), np.zeros((5, 3), np.uint8)]
    of.write_table(tmp_path / "r.parquet", ragged, dim_order="YX", progress=True)
    assert "encoding images" in capfd.readouterr().err  # the general, per-image path

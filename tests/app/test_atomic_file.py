"""Directories made for files that must survive a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import atomic_file
from app.atomic_file import made_directories


def test_every_directory_made_is_synced_into_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink's first file of a new output made DIR/OUTPUT/partition=P and synced only OUTPUT:
    after a power cut OUTPUT itself could be gone, and with it files a reader already took."""
    synced: list[Path] = []
    monkeypatch.setattr(atomic_file, "synced_directory", synced.append)
    made_directories(tmp_path / "out" / "orders.user-totals" / "partition=0")
    assert (tmp_path / "out" / "orders.user-totals" / "partition=0").is_dir()
    assert synced == [tmp_path, tmp_path / "out", tmp_path / "out" / "orders.user-totals"]
    synced.clear()
    made_directories(tmp_path / "out" / "orders.user-totals" / "partition=1")
    assert synced == [tmp_path / "out" / "orders.user-totals"]  # only what it made
    synced.clear()
    made_directories(tmp_path / "out")
    assert synced == []

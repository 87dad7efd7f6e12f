"""How much disk a home uses, as ``status`` reports it (``-wal`` files included)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cis.home import Home

__all__ = ["StorageUsage", "measure_storage"]


@dataclass(frozen=True, slots=True)
class StorageUsage:
    node_db_bytes: int
    rooms_bytes: int
    blobs_bytes: int
    total_bytes: int
    """The three above plus skills' databases."""


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _tree_size(root: Path) -> int:
    """Regular files under ``root`` (``-shm`` index files excluded: they are not data)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if not name.endswith("-shm"):
                total += _file_size(Path(folder) / name)
    return total


def measure_storage(home: Home) -> StorageUsage:
    node_db = _file_size(home.node_db) + _file_size(home.root / "node.db-wal")
    rooms = _tree_size(home.rooms)
    blobs = _tree_size(home.blobs)
    skills = _tree_size(home.skills)
    return StorageUsage(node_db, rooms, blobs, node_db + rooms + blobs + skills)

"""Client-Server stores run on a real ``node.db`` (the foundation's ``NodeStore``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cis.home import Home
from cis.storage.database import Database
from cis.storage.node_store import NodeStore


def open_node_db(root: Path) -> NodeStore:
    root.mkdir(mode=0o700, exist_ok=True)
    return NodeStore.open(Home(root), create=True)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    store = open_node_db(tmp_path / "home")
    yield store.db
    store.close()

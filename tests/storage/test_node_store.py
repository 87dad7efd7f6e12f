from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cis.home import Home
from cis.identity import NodeIdentity
from cis.storage.errors import NoNode, StorageError
from cis.storage.node_store import NodeStore, inspect_node_db


def test_initialise_then_load_identity_and_status(tmp_path: Path) -> None:
    home = Home(tmp_path)
    identity = NodeIdentity.generate("alpha")
    store = NodeStore.open(home, create=True)
    try:
        store.initialise(identity, 1_000)
        loaded = store.load_identity()
        assert loaded.did == identity.did and loaded.seed == identity.seed
        with pytest.raises(StorageError, match="already holds"):
            store.initialise(NodeIdentity.generate("beta"), 2_000)
        status = store.status()
        assert status.clean_shutdown and status.stream_max == 0
        assert store.begin_run(3_000).clean_shutdown  # read, then cleared
        assert not store.status().clean_shutdown
        store.end_run(4_000, stream_max=42)
        assert store.status().clean_shutdown and store.status().stream_max == 42
        store.end_run(5_000, stream_max=7)  # never moves back
        assert store.status().stream_max == 42
    finally:
        store.close()
    assert stat.S_IMODE(home.node_db.stat().st_mode) == 0o600
    summary = inspect_node_db(home.node_db)
    assert summary.identity.did == identity.did and summary.rooms == 0


def test_system_user_cannot_log_in(tmp_path: Path) -> None:
    home = Home(tmp_path)
    identity = NodeIdentity.generate("alpha")
    store = NodeStore.open(home, create=True)
    try:
        store.initialise(identity, 1_000)
        row = store.db.read_blocking(
            "user",
            lambda conn: conn.execute("SELECT user_id, is_system, can_login FROM users").fetchall(),
        )
        assert row == [("@cis:alpha.cis.local", 1, 0)]
    finally:
        store.close()


def test_a_home_without_a_node_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NoNode, match="cis-node init"):
        NodeStore.open(Home(tmp_path))
    with pytest.raises(NoNode):
        inspect_node_db(tmp_path / "node.db")
    empty = NodeStore.open(Home(tmp_path), create=True)
    try:
        with pytest.raises(NoNode, match="no node identity"):
            empty.load_identity()
    finally:
        empty.close()
    with pytest.raises(NoNode):
        inspect_node_db(tmp_path / "node.db")

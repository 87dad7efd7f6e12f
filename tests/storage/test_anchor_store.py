"""The anchor's SQLite store: schema, upserts, the live window, polls, pruning."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from cis.storage.anchor import KIND, MIGRATIONS, AnchorStore, AnchorTxn
from cis.storage.errors import WrongDatabaseKind
from cis.storage.sqlite import application_id, connect, migrate


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AnchorStore]:
    store = AnchorStore(tmp_path / "anchor.db")
    store.open()
    yield store
    store.close()


def put(txn: AnchorTxn, node: str, key: str, ts: int, now: int) -> None:
    txn.put_heartbeat(
        node, f"did:cis:{node}:x", key, ts=ts, now_ms=now, record=f'{{"n":"{node}"}}'.encode()
    )


def test_the_file_is_an_anchor_database(store: AnchorStore, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "anchor.db")
    assert conn.execute("PRAGMA application_id").fetchone()[0] == application_id(KIND)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_another_kind_of_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "room.db"
    conn = connect(path)
    migrate(conn, "room", MIGRATIONS, path)
    conn.close()
    store = AnchorStore(path)
    with pytest.raises(WrongDatabaseKind):
        store.open()
    store.close()


def test_heartbeats_insert_then_replace(store: AnchorStore) -> None:
    store.run_sync("put", lambda t: put(t, "alpha", "k1", 10, 1000))
    store.run_sync("put", lambda t: t.touch_poll("alpha", 55, 1500))
    store.run_sync("put", lambda t: put(t, "alpha", "k1", 20, 2000))
    row = store.run_sync("get", lambda t: t.get("alpha"))
    assert row is not None
    assert (row.last_ts, row.heartbeat_at_ms, row.last_seen_ms, row.last_poll_ts) == (
        20,
        2000,
        2000,
        55,
    )
    store.run_sync("rebind", lambda t: put(t, "alpha", "k2", 5, 3000))
    row = store.run_sync("get", lambda t: t.get("alpha"))
    assert row is not None and row.did_key == "k2" and row.last_poll_ts == 0  # new key, new count
    assert store.run_sync("count", lambda t: t.count()) == 1


def test_live_records_by_arrival_excluding_the_caller(store: AnchorStore) -> None:
    store.run_sync("put", lambda t: put(t, "a", "ka", 1, 1000))
    store.run_sync("put", lambda t: put(t, "b", "kb", 1, 2000))
    store.run_sync("put", lambda t: put(t, "c", "kc", 1, 3000))
    live = store.run_sync("live", lambda t: t.live_records(2000, exclude_node="c"))
    assert live == [b'{"n":"b"}']
    assert len(store.run_sync("live", lambda t: t.live_records(0))) == 3


def test_prune_forgets_nodes_not_seen(store: AnchorStore) -> None:
    store.run_sync("put", lambda t: put(t, "old", "k", 1, 1000))
    store.run_sync("put", lambda t: put(t, "polled", "k", 1, 1000))
    store.run_sync("poll", lambda t: t.touch_poll("polled", 2, 5000))
    assert store.run_sync("prune", lambda t: t.prune(4000)) == 1
    assert store.run_sync("get", lambda t: t.get("old")) is None
    assert store.run_sync("get", lambda t: t.get("polled")) is not None


def test_a_failing_transaction_leaves_nothing(store: AnchorStore) -> None:
    def half_done(txn: AnchorTxn) -> None:
        put(txn, "alpha", "k", 1, 1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.run_sync("half", half_done)
    assert store.run_sync("count", lambda t: t.count()) == 0


async def test_async_transactions_run_off_the_loop(store: AnchorStore) -> None:
    await store.run("put", lambda t: put(t, "alpha", "k", 1, 1))
    assert await store.run("count", lambda t: t.count()) == 1


def test_the_data_survives_reopening(tmp_path: Path) -> None:
    first = AnchorStore(tmp_path / "a.db")
    first.open()
    first.run_sync("put", lambda t: put(t, "alpha", "k", 7, 1))
    first.close()
    second = AnchorStore(tmp_path / "a.db")
    second.open()
    row = second.run_sync("get", lambda t: t.get("alpha"))
    second.close()
    assert row is not None and row.last_ts == 7

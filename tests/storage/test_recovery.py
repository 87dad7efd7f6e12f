from __future__ import annotations

import sqlite3
from pathlib import Path

from cis.home import Home, room_dir_name
from cis.ids import RoomId
from cis.storage.node_store import NodeStore
from cis.storage.recovery import reindex
from cis.storage.rooms.types import RoomStatus
from tests.consistency import check_home
from tests.factories import chain, make_event
from tests.storage.conftest import MakeManager, settle

A, B = "!a:alpha.cis.local", "!b:alpha.cis.local"
BOB = "@bob:alpha.cis.local"


async def _fill(make_manager: MakeManager) -> None:
    manager = make_manager()
    a, b = await manager.get_or_create(A), await manager.get_or_create(B)
    await a.store_events(chain(A, 5))
    join = make_event(A, type="m.room.member", state_key=BOB, content={"membership": "join"})
    await a.store_event(join)
    await b.store_events(chain(B, 3))
    await settle(manager)
    await manager.close()


def _node_sql(node: NodeStore, sql: str, *args: object) -> None:
    def run(conn: sqlite3.Connection) -> None:
        conn.execute(sql, args)

    node.db.run_interaction_blocking("test_edit", run)


async def test_a_lost_index_tail_is_reindexed(
    make_manager: MakeManager, node_store: NodeStore, home: Home
) -> None:
    await _fill(make_manager)
    # A crash after the room commits, before their index commit: the last rows of A are gone.
    _node_sql(node_store, "DELETE FROM stream WHERE room_id = ? AND stream_ordering > 3", A)
    _node_sql(node_store, "DELETE FROM memberships")
    _node_sql(node_store, "UPDATE rooms SET indexed_upto = 3 WHERE room_id = ?", A)
    report = reindex(home, node_store, full=False, now_ms=0)
    assert (report.rooms_checked, report.rooms_reindexed, report.events_indexed) == (2, 1, 3)
    check_home(home.root)


async def test_index_rows_the_room_file_lost_are_dropped(
    make_manager: MakeManager, node_store: NodeStore, home: Home
) -> None:
    await _fill(make_manager)
    # A power cut with synchronous=NORMAL lost room writes that node.db (FULL) had indexed.
    _node_sql(
        node_store,
        "INSERT INTO stream VALUES (999, ?, '$lost', 'm.room.message', ?, NULL, 'timeline')",
        B,
        BOB,
    )
    _node_sql(node_store, "UPDATE rooms SET indexed_upto = 999 WHERE room_id = ?", B)
    report = reindex(home, node_store, full=False, now_ms=0)
    assert report.rooms_reindexed == 1
    assert node_store.status().stream_max >= 999  # positions are never reused
    check_home(home.root)


async def test_missing_folders_unknown_folders_and_unfinished_archives(
    make_manager: MakeManager, node_store: NodeStore, home: Home
) -> None:
    await _fill(make_manager)
    # A's folder is gone (a restore from a bare node.db); B is on disk but not registered.
    for path in home.room_dir(A).iterdir():
        path.unlink()
    home.room_dir(A).rmdir()
    _node_sql(node_store, "DELETE FROM rooms WHERE room_id = ?", B)
    _node_sql(node_store, "DELETE FROM stream WHERE room_id = ?", B)
    report = reindex(home, node_store, full=False, now_ms=0)
    assert (report.rooms_missing, report.rooms_registered) == (1, 1)
    info_a = node_store.db.read_blocking(
        "get", lambda c: c.execute("SELECT status FROM rooms WHERE room_id = ?", (A,)).fetchone()
    )
    assert info_a == (RoomStatus.MISSING.value,)
    check_home(home.root)
    # B archived in the registry, but the crash came before the folder moved.
    _node_sql(node_store, "UPDATE rooms SET status = 'archived' WHERE room_id = ?", B)
    report = reindex(home, node_store, full=False, now_ms=0)
    assert report.archives_completed == 1
    assert (home.archived_rooms / room_dir_name(B) / "events.db").exists()
    assert not home.room_dir(B).exists()


async def test_full_rebuild_and_a_clean_home_needs_nothing(
    make_manager: MakeManager, node_store: NodeStore, home: Home
) -> None:
    await _fill(make_manager)
    quiet = reindex(home, node_store, full=False, now_ms=0)
    assert (quiet.rooms_reindexed, quiet.events_indexed) == (0, 0)
    _node_sql(node_store, "DELETE FROM stream")
    _node_sql(node_store, "DELETE FROM memberships")
    full = reindex(home, node_store, full=True, now_ms=0)
    assert (full.rooms_reindexed, full.events_indexed) == (2, 9)
    check = check_home(home.root)
    assert len(check.events_by_room[RoomId(A)]) == 6


def test_reindex_of_an_empty_home(tmp_path: Path) -> None:
    home = Home(tmp_path)
    node = NodeStore.open(home, create=True)
    try:
        report = reindex(home, node, full=False, now_ms=0)
        assert report.rooms_checked == 0 and report.stream_max == 0
    finally:
        node.close()

"""Re-deriving ``node.db``'s indexes from the room files (crash recovery and restore).

The room files are the source of truth; ``node.db``'s ``stream``/``memberships`` rows and each
room's ``indexed_upto`` are derived. A clean stop leaves them in agreement and sets the
clean-shutdown marker. When a start finds the marker unset (a crash, ``kill -9``, a power cut),
or after a restore, ``reindex`` walks the home before anything is served:

1. A room the registry says is archived but whose folder is still in ``rooms/`` (a crash
   between the registry update and the rename) is moved to ``rooms/archived/``.
2. For every room folder: compare the room file's ``(count, highest position)`` with the
   index's. Equal: nothing to do. The index is a prefix of the file (the usual crash: the last
   events were committed to the room but not yet indexed): index the tail. Anything else (a
   power cut lost room writes that ``node.db`` had indexed, a restore): rebuild the room's
   index. The membership index of a changed room is rebuilt from its ``room_state``.
3. A registered room whose folder is absent, but which had indexed events, is marked
   ``missing`` (federation re-fetches it later) and its derived rows are dropped; a folder the
   registry does not know (a restore) is registered from its ``meta.json``.
4. The highest position found is folded into ``stream_max``, so positions are never reused.

With ``full=True`` every room is rebuilt. Blocking; run before the node opens any room.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cis.home import Home, room_dir_name
from cis.ids import RoomId
from cis.log import get_logger
from cis.storage import node_store
from cis.storage.errors import StorageError
from cis.storage.node_store import NodeStore
from cis.storage.rooms import schema, txns
from cis.storage.rooms.manager import EVENTS_FILE, move_to_archive, read_meta
from cis.storage.rooms.types import RoomStatus
from cis.storage.sqlite import Synchronous, connect, migrate

__all__ = ["ReindexReport", "reindex"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReindexReport:
    rooms_checked: int
    rooms_reindexed: int
    events_indexed: int
    rooms_missing: int
    rooms_registered: int
    archives_completed: int
    stream_max: int


def reindex(home: Home, node: NodeStore, *, full: bool, now_ms: int) -> ReindexReport:
    db = node.db
    registry = {r.room_id: r for r in db.read_blocking("list_rooms", node_store.list_rooms)}
    by_dir = {r.dir_name: r for r in registry.values()}
    folders = _room_folders(home)
    checked = reindexed = events = missing = registered = archives = 0
    # Positions must never be reused: start above anything handed out or indexed.
    highest = max(
        db.read_blocking("read_status", node_store.read_status).stream_max,
        db.read_blocking("stream_top", node_store.stream_top),
    )

    for info in registry.values():
        if info.status is RoomStatus.ARCHIVED and info.dir_name in folders:
            move_to_archive(home, info.room_id)
            folders.pop(info.dir_name)
            archives += 1
            log.info("archive_completed", room_id=info.room_id)

    for dir_name, folder in sorted(folders.items()):
        known = by_dir.get(dir_name)
        if known is None:
            room_id = _room_id_of(folder)
            if room_id is None:
                continue
            created_ts = int(read_meta(folder).get("created_ts", now_ms))
            db.run_interaction_blocking(
                "register_room", node_store.register_room_txn, room_id, dir_name, created_ts
            )
            registered += 1
        else:
            room_id = known.room_id
        checked += 1
        changed, count, top = _reindex_room(node, room_id, folder / EVENTS_FILE, full=full)
        highest = max(highest, top)
        reindexed += changed
        events += count

    for info in registry.values():
        if info.status is RoomStatus.ARCHIVED or info.dir_name in folders:
            continue
        count, _top = db.read_blocking(
            "room_index_summary", node_store.room_index_summary, info.room_id
        )
        # After a restore every absent room is missing; after a crash, a room registered but
        # never written (its folder was not created yet) is simply still empty.
        if full or info.status is RoomStatus.MISSING or count or info.indexed_upto:
            db.run_interaction_blocking(
                "drop_room_index", node_store.drop_room_index_txn, info.room_id,
                RoomStatus.MISSING,
            )  # fmt: skip
            missing += 1
            log.warning("room_missing", room_id=info.room_id)

    db.run_interaction_blocking("raise_stream_max", node_store.raise_stream_max_txn, highest)
    report = ReindexReport(checked, reindexed, events, missing, registered, archives, highest)
    log.info(
        "reindexed", rooms=reindexed, events=events, rooms_checked=checked,
        rooms_missing=missing, rooms_registered=registered, archives_completed=archives,
        full=full,
    )  # fmt: skip
    return report


def _room_folders(home: Home) -> dict[str, Path]:
    """``rooms/<32 hex digits>/`` folders holding an ``events.db``."""
    if not home.rooms.is_dir():
        return {}
    found: dict[str, Path] = {}
    for entry in home.rooms.iterdir():
        if (
            entry.is_dir()
            and len(entry.name) == 32
            and all(c in "0123456789abcdef" for c in entry.name)
            and (entry / EVENTS_FILE).is_file()
        ):
            found[entry.name] = entry
    return found


def _room_id_of(folder: Path) -> RoomId | None:
    try:
        room_id = RoomId(str(read_meta(folder)["room_id"]))
    except StorageError:
        log.warning("room_folder_unreadable", folder=str(folder))
        return None
    if room_dir_name(room_id) != folder.name:
        log.warning("room_folder_mismatch", folder=str(folder), room_id=room_id)
        return None
    return room_id


def _reindex_room(
    node: NodeStore, room_id: RoomId, path: Path, *, full: bool
) -> tuple[bool, int, int]:
    """Bring the room's derived rows in line with its file.

    Returns (whether anything changed, events indexed, the file's highest position).
    """
    db = node.db
    conn = connect(path, synchronous=Synchronous.NORMAL, cache_size_kib=2048)
    try:
        migrate(conn, schema.KIND, schema.MIGRATIONS, path)
        room_count, room_top = txns.count_and_max(conn)
        index_count, index_top = db.read_blocking(
            "room_index_summary", node_store.room_index_summary, room_id
        )
        if not full and (room_count, room_top) == (index_count, index_top):
            return False, 0, room_top
        from_position = 0
        if not full and room_top > index_top:
            prefix_count, _ = txns.count_and_max(conn, upto=index_top)
            if prefix_count == index_count:
                from_position = index_top  # the index is a prefix: add the tail
        db.run_interaction_blocking(
            "delete_room_index_above", node_store.delete_room_index_above_txn, room_id,
            from_position,
        )  # fmt: skip
        indexed = 0
        conn.execute("BEGIN")
        try:
            for rows in txns.index_rows_above(conn, from_position):
                db.run_interaction_blocking(
                    "insert_stream_rows", node_store.insert_stream_rows_txn, room_id, rows
                )
                indexed += len(rows)
            members = txns.member_state(conn)
        finally:
            conn.execute("ROLLBACK")
        db.run_interaction_blocking(
            "finish_room_index", node_store.finish_room_index_txn, room_id, members, room_top
        )
        log.info(
            "room_reindexed", room_id=room_id, events=indexed, from_position=from_position,
            top=room_top,
        )  # fmt: skip
        return True, indexed, room_top
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot re-index {path}: {exc}") from exc
    finally:
        conn.close()

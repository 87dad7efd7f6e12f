"""``NodeStore``: ``node.db``, the node's own database (schema in ``node_schema``).

It is the Room Store's ``RoomIndex`` (the registry and the derived stream and membership
indexes) and holds the identity, users and the clean-shutdown marker. Every statement on
``node.db`` lives in this module; transactions are the ``*_txn`` functions, reads take a reader
connection.
"""

from __future__ import annotations

import concurrent.futures
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cis.home import Home
from cis.identity import NodeIdentity
from cis.ids import NodeId, RoomId
from cis.storage import node_schema
from cis.storage.database import Database
from cis.storage.errors import NoNode, StorageError
from cis.storage.rooms.index import IndexRow
from cis.storage.rooms.types import RoomInfo, RoomStatus
from cis.storage.sqlite import Synchronous, check_schema, connect

__all__ = ["NodeStatusRow", "NodeStore", "NodeSummary", "inspect_node_db"]

NODE_DB_MODE: Final = 0o600


@dataclass(frozen=True, slots=True)
class NodeStatusRow:
    clean_shutdown: bool
    stream_max: int


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """What ``cis-node status`` shows of a node that is not running."""

    identity: NodeIdentity
    rooms: int
    missing_rooms: int
    schema_version: int


# ---------------------------------------------------------------------------- transactions


def initialise_txn(conn: sqlite3.Connection, identity: NodeIdentity, now_ms: int) -> None:
    if conn.execute("SELECT 1 FROM node_identity").fetchone() is not None:
        raise StorageError("node.db already holds a node identity")
    conn.execute(
        "INSERT INTO node_identity (id, node_id, signing_seed, created_ts) VALUES (1, ?, ?, ?)",
        (identity.node_id, identity.seed, now_ms),
    )
    conn.execute(
        "INSERT INTO users (user_id, localpart, is_system, can_login, created_ts)"
        " VALUES (?, ?, 1, 0, ?)",
        (identity.system_user_id, identity.system_user_id[1:].split(":", 1)[0], now_ms),
    )


def read_identity(conn: sqlite3.Connection) -> NodeIdentity | None:
    row = conn.execute("SELECT node_id, signing_seed FROM node_identity WHERE id = 1").fetchone()
    if row is None:
        return None
    return NodeIdentity.from_seed(NodeId(row[0]), bytes(row[1]))


def read_status(conn: sqlite3.Connection) -> NodeStatusRow:
    clean, stream_max = conn.execute(
        "SELECT clean_shutdown, stream_max FROM node_status WHERE id = 1"
    ).fetchone()
    return NodeStatusRow(bool(clean), int(stream_max))


def begin_run_txn(conn: sqlite3.Connection, now_ms: int) -> NodeStatusRow:
    """Read the marker, then clear it: from now until ``end_run_txn`` a stop is unclean."""
    status = read_status(conn)
    conn.execute(
        "UPDATE node_status SET clean_shutdown = 0, last_start_ts = ? WHERE id = 1", (now_ms,)
    )
    return status


def end_run_txn(conn: sqlite3.Connection, now_ms: int, stream_max: int) -> None:
    conn.execute(
        "UPDATE node_status SET clean_shutdown = 1, last_stop_ts = ?,"
        " stream_max = max(stream_max, ?) WHERE id = 1",
        (now_ms, stream_max),
    )


def raise_stream_max_txn(conn: sqlite3.Connection, position: int) -> None:
    conn.execute("UPDATE node_status SET stream_max = max(stream_max, ?) WHERE id = 1", (position,))


def _room_info(row: tuple[str, str, str, int, int]) -> RoomInfo:
    room_id, dir_name, status, created_ts, indexed_upto = row
    return RoomInfo(RoomId(room_id), dir_name, RoomStatus(status), created_ts, indexed_upto)


_ROOM_COLUMNS: Final = "room_id, dir_name, status, created_ts, indexed_upto"


def get_room(conn: sqlite3.Connection, room_id: RoomId) -> RoomInfo | None:
    row = conn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room_id = ?", (room_id,))
    found = row.fetchone()
    return _room_info(found) if found is not None else None


def list_rooms(conn: sqlite3.Connection) -> list[RoomInfo]:
    return [
        _room_info(row)
        for row in conn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms ORDER BY room_id")
    ]


def count_rooms(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(rooms not archived, of which missing)``."""
    total, missing = conn.execute(
        "SELECT count(*), coalesce(sum(status = 'missing'), 0) FROM rooms"
        " WHERE status != 'archived'"
    ).fetchone()
    return int(total), int(missing)


def register_room_txn(
    conn: sqlite3.Connection, room_id: RoomId, dir_name: str, created_ts: int
) -> RoomInfo:
    conn.execute(
        "INSERT INTO rooms (room_id, dir_name, status, created_ts) VALUES (?, ?, 'active', ?)"
        " ON CONFLICT (room_id) DO UPDATE SET status = 'active' WHERE status = 'missing'",
        (room_id, dir_name, created_ts),
    )
    info = get_room(conn, room_id)
    assert info is not None
    return info


def set_room_status_txn(conn: sqlite3.Connection, room_id: RoomId, status: RoomStatus) -> None:
    conn.execute("UPDATE rooms SET status = ? WHERE room_id = ?", (status.value, room_id))


def index_events_txn(
    conn: sqlite3.Connection, entries: Sequence[tuple[RoomId, Sequence[IndexRow]]]
) -> None:
    """Add newly stored events (by room, in commit order) to the stream and membership
    indexes."""
    tops: dict[RoomId, int] = {}
    for room_id, rows in entries:
        if not rows:
            continue
        insert_stream_rows_txn(conn, room_id, rows)
        _upsert_memberships(conn, room_id, rows)
        newest = max(r.stream_ordering for r in rows)
        tops[room_id] = max(tops.get(room_id, 0), newest)
    if not tops:
        return
    conn.executemany(
        "UPDATE rooms SET indexed_upto = max(indexed_upto, ?) WHERE room_id = ?",
        [(top, room_id) for room_id, top in tops.items()],
    )
    raise_stream_max_txn(conn, max(tops.values()))


def _upsert_memberships(
    conn: sqlite3.Connection, room_id: RoomId, rows: Iterable[IndexRow]
) -> None:
    members = [
        (room_id, r.state_key, r.membership, r.event_id, r.stream_ordering)
        for r in rows
        if r.membership is not None and r.state_key is not None
    ]
    if members:
        conn.executemany(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, user_id) DO UPDATE SET"
            " membership = excluded.membership, event_id = excluded.event_id,"
            " stream_ordering = excluded.stream_ordering"
            " WHERE excluded.stream_ordering > memberships.stream_ordering",
            members,
        )


def stream_top(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(stream_ordering), 0) FROM stream").fetchone()[0])


def room_index_summary(conn: sqlite3.Connection, room_id: RoomId) -> tuple[int, int]:
    """``(count, highest position)`` of a room's rows in the stream index."""
    count, top = conn.execute(
        "SELECT count(*), coalesce(max(stream_ordering), 0) FROM stream WHERE room_id = ?",
        (room_id,),
    ).fetchone()
    return int(count), int(top)


def delete_room_index_above_txn(
    conn: sqlite3.Connection, room_id: RoomId, from_position: int
) -> None:
    conn.execute(
        "DELETE FROM stream WHERE room_id = ? AND stream_ordering > ?", (room_id, from_position)
    )


def insert_stream_rows_txn(
    conn: sqlite3.Connection, room_id: RoomId, rows: Sequence[IndexRow]
) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO stream"
        " (stream_ordering, room_id, event_id, type, sender, state_key, status)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (r.stream_ordering, room_id, r.event_id, r.type, r.sender, r.state_key, r.status.value)
            for r in rows
        ],
    )


def finish_room_index_txn(
    conn: sqlite3.Connection,
    room_id: RoomId,
    memberships: Sequence[IndexRow],
    indexed_upto: int,
) -> None:
    """Replace the room's membership index with its current member state; record progress."""
    conn.execute("DELETE FROM memberships WHERE room_id = ?", (room_id,))
    _upsert_memberships(conn, room_id, memberships)
    conn.execute(
        "UPDATE rooms SET indexed_upto = ?, status = 'active' WHERE room_id = ?",
        (indexed_upto, room_id),
    )
    raise_stream_max_txn(conn, indexed_upto)


def drop_room_index_txn(conn: sqlite3.Connection, room_id: RoomId, status: RoomStatus) -> None:
    """Forget a room's derived rows (its files are gone) and set its status."""
    conn.execute("DELETE FROM stream WHERE room_id = ?", (room_id,))
    conn.execute("DELETE FROM memberships WHERE room_id = ?", (room_id,))
    conn.execute(
        "UPDATE rooms SET status = ?, indexed_upto = 0 WHERE room_id = ?", (status.value, room_id)
    )


# ---------------------------------------------------------------------------- the store


class NodeStore:
    """``node.db`` behind its writer thread."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(
        cls,
        home: Home,
        *,
        create: bool = False,
        read_executor: concurrent.futures.Executor | None = None,
    ) -> NodeStore:
        """Open ``node.db`` (blocking). Without ``create`` a home with no node is ``NoNode``."""
        path = home.node_db
        existed = path.exists()
        if not existed and not create:
            raise NoNode(f"no node in {home.root} (run: cis-node init --home {home.root})")
        db = Database.open(
            path,
            kind=node_schema.KIND,
            migrations=node_schema.MIGRATIONS,
            synchronous=Synchronous.FULL,
            max_readers=4,
            read_executor=read_executor,
            # The Room Store's index (derived, committed without fsync) is written on the
            # event loop when node.db's writer is idle; durable writes still go to its thread.
            inline_writes=True,
        )
        if not existed:
            os.chmod(path, NODE_DB_MODE)
        return cls(db)

    def close(self, *, checkpoint: bool = True) -> None:
        self.db.close(checkpoint=checkpoint)

    # ------------------------------------------------------------------ identity and lifecycle

    def initialise(self, identity: NodeIdentity, now_ms: int) -> None:
        self.db.run_interaction_blocking("initialise", initialise_txn, identity, now_ms)

    def load_identity(self) -> NodeIdentity:
        identity = self.db.read_blocking("read_identity", read_identity)
        if identity is None:
            raise NoNode(f"{self.db.path} holds no node identity (run: cis-node init)")
        return identity

    def begin_run(self, now_ms: int) -> NodeStatusRow:
        return self.db.run_interaction_blocking("begin_run", begin_run_txn, now_ms)

    def end_run(self, now_ms: int, stream_max: int) -> None:
        self.db.run_interaction_blocking("end_run", end_run_txn, now_ms, stream_max)

    def status(self) -> NodeStatusRow:
        return self.db.read_blocking("read_status", read_status)

    async def count_rooms(self) -> tuple[int, int]:
        return await self.db.run_read("count_rooms", count_rooms)

    # ------------------------------------------------------------------ RoomIndex

    async def get_room(self, room_id: RoomId) -> RoomInfo | None:
        return await self.db.run_read("get_room", get_room, room_id)

    async def register_room(self, room_id: RoomId, dir_name: str, created_ts: int) -> RoomInfo:
        return await self.db.run_interaction(
            "register_room", register_room_txn, room_id, dir_name, created_ts
        )

    async def set_room_status(self, room_id: RoomId, status: RoomStatus) -> None:
        await self.db.run_interaction("set_room_status", set_room_status_txn, room_id, status)

    async def list_rooms(self) -> list[RoomInfo]:
        return await self.db.run_read("list_rooms", list_rooms)

    def submit_index(
        self, entries: Sequence[tuple[RoomId, Sequence[IndexRow]]]
    ) -> concurrent.futures.Future[None]:
        # Derived from the room files and rebuilt from them after an unclean stop
        # (``cis.storage.recovery``): no need to wait for the disk.
        return self.db.submit_derived("index_events", index_events_txn, entries)


def inspect_node_db(path: Path) -> NodeSummary:
    """Read a node's identity and room counts without writing anything (node may be running)."""
    if not path.exists():
        raise NoNode(f"no node in {path.parent} (run: cis-node init --home {path.parent})")
    conn = connect(path, readonly=True, cache_size_kib=512)
    try:
        version = check_schema(conn, node_schema.KIND, node_schema.MIGRATIONS, path)
        if version == 0:
            raise NoNode(f"{path} holds no node")
        conn.execute("BEGIN")
        identity = read_identity(conn)
        if identity is None:
            raise NoNode(f"{path} holds no node identity")
        rooms, missing = count_rooms(conn)
        conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()
    return NodeSummary(identity, rooms, missing, version)

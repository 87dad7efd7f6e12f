"""Every SQL statement on a room's ``events.db``, one named function per transaction.

Write functions (``*_txn`` run through ``Database.run_interaction``) take the writer
connection inside an open transaction; read functions take a reader connection inside a read
transaction. None of them begins or ends a transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from canonicaljson import encode_canonical_json

from cis.ids import EventId, RoomId, UserId
from cis.storage.errors import StorageError, UnknownEvent
from cis.storage.events import (
    EventStatus,
    PersistableEvent,
    StoredEvent,
    content_strings,
    encode_needle,
)
from cis.storage.rooms.index import MEMBER_EVENT_TYPE, IndexRow, membership_of
from cis.storage.rooms.types import Direction, EventFilter, Page, Pagination, TxnKey

_IN_CHUNK: Final = 500
"""Bound variables per ``IN (…)``; well under SQLite's limit."""

_COLUMNS: Final = (
    "stream_ordering, event_id, sender, type, state_key, origin_server_ts, received_ts, "
    "depth, redacts, room_version, status, pdu"
)

_INSERT_EVENTS: Final = (
    f"INSERT OR IGNORE INTO events ({_COLUMNS}, strings)"
    f" VALUES ({', '.join('?' * (_COLUMNS.count(',') + 2))})"
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event on its way into a room, with how it is to be stored."""

    event: PersistableEvent
    status: EventStatus
    received_ts: int
    txn: TxnKey | None = None


def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(count: int) -> str:
    return ",".join("?" * count)


# ---------------------------------------------------------------------------- writes


def init_room_txn(conn: sqlite3.Connection, room_id: RoomId, created_ts: int) -> None:
    """Record which room this file holds, or check that it holds ``room_id``."""
    row = conn.execute("SELECT room_id FROM room WHERE id = 1").fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO room (id, room_id, created_ts) VALUES (1, ?, ?)", (room_id, created_ts)
        )
    elif row[0] != room_id:
        raise StorageError(f"room file holds {row[0]}, not {room_id}")


def store_events_txn(
    conn: sqlite3.Connection, first_position: int, items: Sequence[PendingEvent]
) -> list[int]:
    """Store the events not yet held; return the offsets in ``items`` of the new ones.

    ``items[i]`` gets position ``first_position + i`` if it is new; a position whose event is
    already held (or repeated within ``items``) stays unused. The stored copy of an event is
    never replaced.
    """
    event_rows: list[tuple[Any, ...]] = []
    for offset, item in enumerate(items):
        ev = item.event
        event_rows.append(
            (
                first_position + offset,
                ev.event_id,
                ev.sender,
                ev.type,
                ev.state_key,
                ev.origin_server_ts,
                item.received_ts,
                ev.depth,
                ev.redacts,
                ev.room_version,
                item.status.value,
                ev.canonical_bytes,
                content_strings(ev.content),
            )
        )
    # Insert first and let the UNIQUE(event_id) constraint skip what is held: in the usual
    # case (every event new) that costs nothing more; otherwise the positions actually used
    # say which events were new.
    changes = conn.total_changes
    conn.executemany(_INSERT_EVENTS, event_rows)
    if conn.total_changes - changes == len(items):
        fresh: Sequence[int] = range(len(items))
    else:
        used = {
            row[0]
            for row in conn.execute(
                "SELECT stream_ordering FROM events WHERE stream_ordering BETWEEN ? AND ?",
                (first_position, first_position + len(items) - 1),
            )
        }
        fresh = [offset for offset in range(len(items)) if first_position + offset in used]
    edge_rows: list[tuple[str, str]] = []
    auth_rows: list[tuple[str, str]] = []
    timeline: list[tuple[int, PersistableEvent]] = []
    for offset in fresh:
        item = items[offset]
        ev = item.event
        edge_rows.extend((ev.event_id, prev) for prev in ev.prev_events)
        auth_rows.extend((ev.event_id, auth) for auth in ev.auth_events)
        if item.status is EventStatus.TIMELINE:
            timeline.append((first_position + offset, ev))
    if edge_rows:
        conn.executemany(
            "INSERT OR IGNORE INTO event_edges (event_id, prev_event_id) VALUES (?, ?)", edge_rows
        )
    if auth_rows:
        conn.executemany(
            "INSERT OR IGNORE INTO event_auth (event_id, auth_id) VALUES (?, ?)", auth_rows
        )
    txn_rows = [
        (
            item.txn.user_id,
            item.txn.device_id,
            item.txn.txn_id,
            item.event.event_id,
            item.received_ts,
        )
        for item in items
        if item.txn is not None
    ]
    if txn_rows:
        conn.executemany(
            "INSERT OR IGNORE INTO event_txn_ids"
            " (user_id, device_id, txn_id, event_id, inserted_ts) VALUES (?, ?, ?, ?, ?)",
            txn_rows,
        )
    if timeline:
        _update_extremities(conn, [ev for _, ev in timeline])
        state_rows = [
            (ev.type, ev.state_key, ev.event_id, position)
            for position, ev in timeline
            if ev.state_key is not None
        ]
        if state_rows:
            conn.executemany(
                "INSERT INTO room_state (type, state_key, event_id, stream_ordering)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (type, state_key) DO UPDATE"
                " SET event_id = excluded.event_id, stream_ordering = excluded.stream_ordering"
                " WHERE excluded.stream_ordering > room_state.stream_ordering",
                state_rows,
            )
    return list(fresh)


def stored_event(room_id: RoomId, item: PendingEvent, position: int) -> StoredEvent:
    """The ``StoredEvent`` an item became once stored at ``position``."""
    ev = item.event
    return StoredEvent(
        event_id=ev.event_id,
        room_id=room_id,
        sender=ev.sender,
        type=ev.type,
        state_key=ev.state_key,
        origin_server_ts=ev.origin_server_ts,
        depth=ev.depth,
        prev_events=tuple(ev.prev_events),
        auth_events=tuple(ev.auth_events),
        content=ev.content,
        redacts=ev.redacts,
        room_version=ev.room_version,
        canonical_bytes=ev.canonical_bytes,
        stream_ordering=position,
        received_ts=item.received_ts,
        status=item.status,
    )


def index_row(item: PendingEvent, position: int) -> IndexRow:
    ev = item.event
    return IndexRow(
        position,
        ev.event_id,
        ev.type,
        ev.sender,
        ev.state_key,
        item.status,
        membership_of(ev.type, ev.state_key, item.status, ev.content),
    )


def _update_extremities(conn: sqlite3.Connection, timeline: Sequence[PersistableEvent]) -> None:
    """Forward extremities: timeline events no timeline event names as a prev_event.

    The new events' prev_events stop being extremities; a new event becomes one unless a
    timeline event already held (arrived earlier, out of order) or in this batch names it.
    """
    prevs = {prev for ev in timeline for prev in ev.prev_events}
    if prevs:
        conn.executemany(
            "DELETE FROM forward_extremities WHERE event_id = ?", [(p,) for p in prevs]
        )
    candidates = [(ev.event_id,) for ev in timeline if ev.event_id not in prevs]
    # One statement: each candidate unless a timeline event already held names it.
    conn.executemany(
        "INSERT OR IGNORE INTO forward_extremities (event_id) SELECT ?1 WHERE NOT EXISTS ("
        "SELECT 1 FROM event_edges AS e JOIN events AS ev ON ev.event_id = e.event_id"
        " WHERE e.prev_event_id = ?1 AND ev.status = 'timeline')",
        candidates,
    )


def set_sync_position_txn(conn: sqlite3.Connection, peer: str, position: int, now_ms: int) -> int:
    """Record that ``peer`` acknowledged this room up to ``position`` (never moves back)."""
    conn.execute(
        "INSERT INTO sync_positions (peer, stream_ordering, updated_ts) VALUES (?, ?, ?)"
        " ON CONFLICT (peer) DO UPDATE SET stream_ordering = excluded.stream_ordering,"
        " updated_ts = excluded.updated_ts"
        " WHERE excluded.stream_ordering > sync_positions.stream_ordering",
        (peer, position, now_ms),
    )
    row = conn.execute(
        "SELECT stream_ordering FROM sync_positions WHERE peer = ?", (peer,)
    ).fetchone()
    return int(row[0])


# ---------------------------------------------------------------------------- reads


def _event_from_row(room_id: RoomId, row: sqlite3.Row | tuple[Any, ...]) -> StoredEvent:
    (
        position,
        event_id,
        sender,
        event_type,
        state_key,
        origin_server_ts,
        received_ts,
        depth,
        redacts,
        room_version,
        status,
        pdu,
    ) = row
    raw = bytes(pdu)
    parsed = json.loads(raw)
    content = parsed.get("content")
    return StoredEvent(
        event_id=EventId(event_id),
        room_id=room_id,
        sender=UserId(sender),
        type=event_type,
        state_key=state_key,
        origin_server_ts=origin_server_ts,
        depth=depth,
        prev_events=tuple(EventId(e) for e in parsed.get("prev_events", ())),
        auth_events=tuple(EventId(e) for e in parsed.get("auth_events", ())),
        content=content if isinstance(content, dict) else {},
        redacts=EventId(redacts) if redacts is not None else None,
        room_version=room_version,
        canonical_bytes=raw,
        stream_ordering=position,
        received_ts=received_ts,
        status=EventStatus(status),
    )


def position_of(conn: sqlite3.Connection, event_id: str) -> int:
    row = conn.execute(
        "SELECT stream_ordering FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()
    if row is None:
        raise UnknownEvent(f"unknown event {event_id}")
    return int(row[0])


def query_events(
    conn: sqlite3.Connection, room_id: RoomId, flt: EventFilter, page: Pagination
) -> Page:
    after = position_of(conn, page.after) if page.after is not None else None
    before = position_of(conn, page.before) if page.before is not None else None
    conds = [f"status IN ({_marks(len(flt.statuses))})"]
    params: list[Any] = [s.value for s in flt.statuses]
    if flt.since is not None:
        conds.append("origin_server_ts >= ?")
        params.append(flt.since)
    if flt.until is not None:
        conds.append("origin_server_ts <= ?")
        params.append(flt.until)
    if flt.contains is not None:
        conds.append("instr(strings, ?) > 0")
        params.append(encode_needle(flt.contains))
    if after is not None:
        conds.append("stream_ordering > ?")
        params.append(after)
    if before is not None:
        conds.append("stream_ordering < ?")
        params.append(before)
    order = "ASC" if page.direction is Direction.FORWARDS else "DESC"
    fetch = page.limit + 1  # one more tells whether there is more
    # One indexed branch per type (or per sender): each walks (type, stream_ordering) in
    # order and stops after ``fetch`` rows, so a page costs O(limit · branches), never a sort
    # of every match.
    branches: list[tuple[str, list[Any]]] = []
    if flt.types is not None:
        for event_type in flt.types:
            clauses = ["type = ?"]
            values: list[Any] = [event_type]
            if flt.senders is not None:
                clauses.append(f"sender IN ({_marks(len(flt.senders))})")
                values.extend(flt.senders)
            branches.append((" AND ".join(clauses), values))
    elif flt.senders is not None:
        branches = [("sender = ?", [sender]) for sender in flt.senders]
    else:
        branches = [("1", [])]
    where = " AND ".join(conds)
    selects: list[str] = []
    all_params: list[Any] = []
    for extra, extra_params in branches:
        selects.append(
            f"SELECT {_COLUMNS} FROM events WHERE {extra} AND {where}"
            f" ORDER BY stream_ordering {order} LIMIT {fetch}"
        )
        all_params.extend(extra_params)
        all_params.extend(params)
    if len(selects) == 1:
        sql = selects[0]
    else:
        sql = (
            " UNION ALL ".join(f"SELECT * FROM ({s})" for s in selects)
            + f" ORDER BY stream_ordering {order} LIMIT {fetch}"
        )
    rows = conn.execute(sql, all_params).fetchall()
    has_more = len(rows) > page.limit
    events = tuple(_event_from_row(room_id, row) for row in rows[: page.limit])
    return Page(events=events, has_more=has_more)


def events_after_position(
    conn: sqlite3.Connection,
    room_id: RoomId,
    position: int,
    limit: int,
    statuses: Iterable[EventStatus],
) -> list[StoredEvent]:
    wanted = [s.value for s in statuses]
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE stream_ordering > ?"
        f" AND status IN ({_marks(len(wanted))}) ORDER BY stream_ordering LIMIT ?",
        (position, *wanted, limit),
    ).fetchall()
    return [_event_from_row(room_id, row) for row in rows]


def events_upto_position(
    conn: sqlite3.Connection,
    room_id: RoomId,
    position: int,
    limit: int,
    statuses: Iterable[EventStatus],
) -> list[StoredEvent]:
    """Events at or below stream ``position``, newest first (backwards pagination)."""
    wanted = [s.value for s in statuses]
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE stream_ordering <= ?"
        f" AND status IN ({_marks(len(wanted))}) ORDER BY stream_ordering DESC LIMIT ?",
        (position, *wanted, limit),
    ).fetchall()
    return [_event_from_row(room_id, row) for row in rows]


def get_events(
    conn: sqlite3.Connection, room_id: RoomId, event_ids: Sequence[str]
) -> dict[EventId, StoredEvent]:
    found: dict[EventId, StoredEvent] = {}
    for chunk in _chunks(list(dict.fromkeys(event_ids))):
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE event_id IN ({_marks(len(chunk))})", chunk
        ):
            event = _event_from_row(room_id, row)
            found[event.event_id] = event
    return found


def forward_extremities(conn: sqlite3.Connection) -> list[EventId]:
    return [
        EventId(row[0])
        for row in conn.execute("SELECT event_id FROM forward_extremities ORDER BY event_id")
    ]


def current_state(conn: sqlite3.Connection) -> dict[tuple[str, str], EventId]:
    return {
        (row[0], row[1]): EventId(row[2])
        for row in conn.execute("SELECT type, state_key, event_id FROM room_state")
    }


def state_event(
    conn: sqlite3.Connection, room_id: RoomId, event_type: str, state_key: str
) -> StoredEvent | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE event_id ="
        " (SELECT event_id FROM room_state WHERE type = ? AND state_key = ?)",
        (event_type, state_key),
    ).fetchone()
    return _event_from_row(room_id, row) if row is not None else None


def event_id_for_txn(conn: sqlite3.Connection, key: TxnKey) -> EventId | None:
    row = conn.execute(
        "SELECT event_id FROM event_txn_ids WHERE user_id = ? AND device_id = ? AND txn_id = ?",
        (key.user_id, key.device_id, key.txn_id),
    ).fetchone()
    return EventId(row[0]) if row is not None else None


def txn_ids_since(
    conn: sqlite3.Connection, since_ts: int, limit: int
) -> list[tuple[TxnKey, EventId]]:
    """The client txn ids recorded since ``since_ts`` (ms), newest first, at most ``limit``."""
    rows = conn.execute(
        "SELECT user_id, device_id, txn_id, event_id FROM event_txn_ids"
        " WHERE inserted_ts >= ? ORDER BY inserted_ts DESC LIMIT ?",
        (since_ts, limit),
    )
    return [(TxnKey(UserId(r[0]), r[1], r[2]), EventId(r[3])) for r in rows]


def delete_txn_ids_before_txn(conn: sqlite3.Connection, before_ts: int) -> int:
    """Forget client txn ids recorded before ``before_ts`` (ms): retention is bounded."""
    return conn.execute("DELETE FROM event_txn_ids WHERE inserted_ts < ?", (before_ts,)).rowcount


def sync_positions(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        row[0]: int(row[1])
        for row in conn.execute("SELECT peer, stream_ordering FROM sync_positions ORDER BY peer")
    }


def max_position(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(stream_ordering) FROM events").fetchone()
    return int(row[0]) if row[0] is not None else 0


def count_and_max(conn: sqlite3.Connection, upto: int | None = None) -> tuple[int, int]:
    """``(count, highest position)`` of the events (at or below ``upto`` if given)."""
    if upto is None:
        row = conn.execute(
            "SELECT count(*), coalesce(max(stream_ordering), 0) FROM events"
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT count(*), coalesce(max(stream_ordering), 0) FROM events"
            " WHERE stream_ordering <= ?",
            (upto,),
        ).fetchone()
    return int(row[0]), int(row[1])


def index_rows_above(
    conn: sqlite3.Connection, position: int, chunk: int = 10_000
) -> Iterator[list[IndexRow]]:
    """The stream-index rows of every event above ``position``, in chunks."""
    cursor = conn.execute(
        "SELECT stream_ordering, event_id, type, sender, state_key, status FROM events"
        " WHERE stream_ordering > ? ORDER BY stream_ordering",
        (position,),
    )
    while rows := cursor.fetchmany(chunk):
        yield [
            IndexRow(pos, EventId(eid), etype, UserId(sender), skey, EventStatus(status), None)
            for pos, eid, etype, sender, skey, status in rows
        ]


def member_state(conn: sqlite3.Connection) -> list[IndexRow]:
    """The room's current ``m.room.member`` state, as membership index rows."""
    rows = conn.execute(
        "SELECT e.stream_ordering, e.event_id, e.type, e.sender, e.state_key, e.status, e.pdu"
        " FROM room_state AS s JOIN events AS e ON e.event_id = s.event_id"
        " WHERE s.type = ?",
        (MEMBER_EVENT_TYPE,),
    ).fetchall()
    out: list[IndexRow] = []
    for pos, eid, etype, sender, skey, status, pdu in rows:
        content = json.loads(bytes(pdu)).get("content")
        membership = membership_of(
            etype, skey, EventStatus(status), content if isinstance(content, dict) else {}
        )
        row = IndexRow(
            pos, EventId(eid), etype, UserId(sender), skey, EventStatus(status), membership
        )
        out.append(row)
    return out


@dataclass(frozen=True, slots=True)
class RawStats:
    total: int
    earliest_ts: int | None
    latest_ts: int | None
    max_position: int | None
    type_counts: dict[str, int]
    status_counts: dict[str, int]
    extremities: int


def stats(conn: sqlite3.Connection) -> RawStats:
    total, earliest, latest, top = conn.execute(
        "SELECT count(*), min(origin_server_ts), max(origin_server_ts), max(stream_ordering)"
        " FROM events"
    ).fetchone()
    types = {
        row[0]: int(row[1])
        for row in conn.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type")
    }
    statuses = {
        row[0]: int(row[1])
        for row in conn.execute("SELECT status, count(*) FROM events GROUP BY status")
    }
    extremities = int(conn.execute("SELECT count(*) FROM forward_extremities").fetchone()[0])
    return RawStats(int(total), earliest, latest, top, types, statuses, extremities)


def export_jsonl(conn: sqlite3.Connection, target: Path) -> int:
    """Write every event, in stream order, as one canonical-JSON line; return the count.

    A line is the wire PDU plus ``_cis``: ``{"room_version", "status", "stream_ordering",
    "received_ts"}``. Runs in one read transaction, so the file is one snapshot.
    """
    count = 0
    with target.open("wb") as out:
        cursor = conn.execute(
            "SELECT stream_ordering, received_ts, status, room_version, pdu FROM events"
            " ORDER BY stream_ordering"
        )
        for position, received_ts, status, room_version, pdu in cursor:
            line: dict[str, Any] = json.loads(bytes(pdu))
            line["_cis"] = {
                "received_ts": received_ts,
                "room_version": room_version,
                "status": status,
                "stream_ordering": position,
            }
            out.write(encode_canonical_json(line))
            out.write(b"\n")
            count += 1
    return count

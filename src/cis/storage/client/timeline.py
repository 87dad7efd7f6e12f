"""Reads of ``node.db``'s derived stream and membership indexes for the Client-Server API.

The foundation keeps, for every stored event, a ``stream`` row (position, room, id, type,
sender, state key, status) and, per room and user, the current ``memberships`` row. ``/sync``,
``/messages`` and the visibility rules read them here: every query names a room (or a user) and
a position range, and is served by an index (``stream_room``, ``memberships_user``, and this
package's partial index of state events, ``cs_stream_state``). Event bodies come from the
rooms' own files.

Only ``timeline`` events take part: outliers, rejected and soft-failed events never reach a
client's timeline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from cis.ids import EventId, RoomId, UserId
from cis.storage.database import Database


@dataclass(frozen=True, slots=True)
class StreamRow:
    position: int
    event_id: EventId
    type: str
    sender: UserId
    state_key: str | None


@dataclass(frozen=True, slots=True)
class MembershipRow:
    room_id: RoomId
    user_id: UserId
    membership: str
    event_id: EventId
    position: int


@dataclass(frozen=True, slots=True)
class RangeRow:
    """A row of the node-wide stream between two positions (what the change pump reads)."""

    position: int
    room_id: RoomId
    type: str
    state_key: str | None


def _row(r: tuple[int, str, str, str, str | None]) -> StreamRow:
    return StreamRow(int(r[0]), EventId(r[1]), r[2], UserId(r[3]), r[4])


def room_events(
    conn: sqlite3.Connection,
    room_id: RoomId,
    after: int,
    upto: int,
    limit: int,
    *,
    newest_first: bool,
) -> list[StreamRow]:
    """Timeline events of the room with ``after < position <= upto``, at most ``limit``."""
    order = "DESC" if newest_first else "ASC"
    rows = conn.execute(
        "SELECT stream_ordering, event_id, type, sender, state_key FROM stream"
        " WHERE room_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
        f" AND status = 'timeline' ORDER BY stream_ordering {order} LIMIT ?",
        (room_id, after, upto, limit),
    )
    return [_row(r) for r in rows]


def state_changes(
    conn: sqlite3.Connection, room_id: RoomId, after: int, upto: int
) -> dict[tuple[str, str], StreamRow]:
    """The latest state event per key among those with ``after < position <= upto``."""
    rows = conn.execute(
        "SELECT stream_ordering, event_id, type, sender, state_key FROM stream"
        " INDEXED BY cs_stream_state"
        " WHERE room_id = ? AND state_key IS NOT NULL AND stream_ordering > ?"
        " AND stream_ordering <= ? AND status = 'timeline' ORDER BY stream_ordering",
        (room_id, after, upto),
    )
    out: dict[tuple[str, str], StreamRow] = {}
    for r in rows:
        row = _row(r)
        assert row.state_key is not None
        out[(row.type, row.state_key)] = row
    return out


def state_before(
    conn: sqlite3.Connection, room_id: RoomId, keys: Iterable[tuple[str, str]], before: int
) -> dict[tuple[str, str], StreamRow]:
    """For each key, the last state event at a position below ``before`` (if any)."""
    out: dict[tuple[str, str], StreamRow] = {}
    for event_type, state_key in keys:
        r = conn.execute(
            "SELECT stream_ordering, event_id, type, sender, state_key FROM stream"
            " INDEXED BY cs_stream_state"
            " WHERE room_id = ? AND type = ? AND state_key = ? AND stream_ordering < ?"
            " AND status = 'timeline' ORDER BY stream_ordering DESC LIMIT 1",
            (room_id, event_type, state_key, before),
        ).fetchone()
        if r is not None:
            out[(event_type, state_key)] = _row(r)
    return out


def key_history(
    conn: sqlite3.Connection, room_id: RoomId, event_type: str, state_key: str
) -> list[StreamRow]:
    """Every timeline state event of one key, oldest first (membership and visibility
    histories for the history-visibility rules)."""
    rows = conn.execute(
        "SELECT stream_ordering, event_id, type, sender, state_key FROM stream"
        " INDEXED BY cs_stream_state"
        " WHERE room_id = ? AND type = ? AND state_key = ? AND status = 'timeline'"
        " ORDER BY stream_ordering",
        (room_id, event_type, state_key),
    )
    return [_row(r) for r in rows]


def user_memberships(conn: sqlite3.Connection, user_id: UserId) -> list[MembershipRow]:
    rows = conn.execute(
        "SELECT room_id, membership, event_id, stream_ordering FROM memberships WHERE user_id = ?",
        (user_id,),
    )
    return [MembershipRow(RoomId(r[0]), user_id, r[1], EventId(r[2]), int(r[3])) for r in rows]


def room_memberships(conn: sqlite3.Connection, room_id: RoomId) -> list[MembershipRow]:
    rows = conn.execute(
        "SELECT user_id, membership, event_id, stream_ordering FROM memberships"
        " WHERE room_id = ? ORDER BY user_id",
        (room_id,),
    )
    return [MembershipRow(room_id, UserId(r[0]), r[1], EventId(r[2]), int(r[3])) for r in rows]


def membership_of(
    conn: sqlite3.Connection, room_id: RoomId, user_id: UserId
) -> MembershipRow | None:
    r = conn.execute(
        "SELECT membership, event_id, stream_ordering FROM memberships"
        " WHERE room_id = ? AND user_id = ?",
        (room_id, user_id),
    ).fetchone()
    return None if r is None else MembershipRow(room_id, user_id, r[0], EventId(r[1]), int(r[2]))


def changes_between(conn: sqlite3.Connection, after: int, upto: int) -> list[RangeRow]:
    """Every indexed timeline event with ``after < position <= upto`` (room, type, key)."""
    rows = conn.execute(
        "SELECT stream_ordering, room_id, type, state_key FROM stream"
        " WHERE stream_ordering > ? AND stream_ordering <= ? AND status = 'timeline'"
        " ORDER BY stream_ordering",
        (after, upto),
    )
    return [RangeRow(int(r[0]), RoomId(r[1]), r[2], r[3]) for r in rows]


def room_positions(conn: sqlite3.Connection) -> dict[RoomId, int]:
    """How far each active room is indexed (its latest position)."""
    rows = conn.execute("SELECT room_id, indexed_upto FROM rooms WHERE status = 'active'")
    return {RoomId(r[0]): int(r[1]) for r in rows}


def rooms_sharing_with(
    conn: sqlite3.Connection, user_id: UserId, others: Sequence[UserId]
) -> set[UserId]:
    """The users among ``others`` who are joined to a room ``user_id`` is joined to."""
    found: set[UserId] = set()
    for other in others:
        r = conn.execute(
            "SELECT 1 FROM memberships a JOIN memberships b ON a.room_id = b.room_id"
            " WHERE a.user_id = ? AND a.membership = 'join' AND b.user_id = ?"
            " AND b.membership = 'join' LIMIT 1",
            (user_id, other),
        ).fetchone()
        if r is not None:
            found.add(other)
    return found


def sharing_rooms(
    db: Database,
) -> Callable[[UserId, Sequence[UserId]], Awaitable[set[UserId]]]:
    """``rooms_sharing_with`` as an async function over ``db``."""

    async def sharing(user_id: UserId, others: Sequence[UserId]) -> set[UserId]:
        if not others:
            return set()
        return await db.run_read("rooms_sharing_with", rooms_sharing_with, user_id, others)

    return sharing


def forget_room_txn(conn: sqlite3.Connection, user_id: UserId, room_id: RoomId) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO cs_forgotten_rooms (user_id, room_id) VALUES (?, ?)",
        (user_id, room_id),
    )


def unforget_room_txn(conn: sqlite3.Connection, user_id: UserId, room_id: RoomId) -> None:
    conn.execute(
        "DELETE FROM cs_forgotten_rooms WHERE user_id = ? AND room_id = ?", (user_id, room_id)
    )


def forgotten_rooms(conn: sqlite3.Connection, user_id: UserId) -> set[RoomId]:
    rows = conn.execute("SELECT room_id FROM cs_forgotten_rooms WHERE user_id = ?", (user_id,))
    return {RoomId(r[0]) for r in rows}


def record_redactions_txn(
    conn: sqlite3.Connection, room_id: RoomId, pairs: Sequence[tuple[EventId, EventId]]
) -> None:
    """Remember that each ``(target, redaction)`` applies (the first redaction wins)."""
    conn.executemany(
        "INSERT OR IGNORE INTO cs_redactions (target_id, room_id, redaction_id) VALUES (?, ?, ?)",
        [(target, room_id, redaction) for target, redaction in pairs],
    )


def redactions_of(conn: sqlite3.Connection, event_ids: Sequence[EventId]) -> dict[EventId, EventId]:
    """``target → redaction`` for the targets among ``event_ids`` that were redacted."""
    out: dict[EventId, EventId] = {}
    ids = list(event_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for target, redaction in conn.execute(
            f"SELECT target_id, redaction_id FROM cs_redactions WHERE target_id IN ({marks})",
            chunk,
        ):
            out[EventId(target)] = EventId(redaction)
    return out


def stream_tops(conn: sqlite3.Connection) -> tuple[int, int, int, int]:
    """The current positions of the node.db streams: receipts, account data, to-device,
    device lists."""
    receipts, account_data = (
        int(conn.execute("SELECT position FROM cs_streams WHERE name = ?", (name,)).fetchone()[0])
        for name in ("receipts", "account_data")
    )
    to_device_row = conn.execute(
        "SELECT seq FROM sqlite_sequence WHERE name = 'cs_to_device'"
    ).fetchone()
    device_lists = conn.execute(
        "SELECT coalesce(max(stream_id), 0) FROM cs_device_list_changes"
    ).fetchone()
    return (
        receipts,
        account_data,
        0 if to_device_row is None else int(to_device_row[0]),
        int(device_lists[0]),
    )

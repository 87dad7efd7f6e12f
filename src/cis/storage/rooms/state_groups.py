"""Federation's tables in a room's ``events.db`` (room migration 3) and their statements.

- ``state_groups``: a state is a group: ``prev_id`` (the group it is a delta of, or NULL for
  a full state) and ``delta``, the JSON list ``[[type, state_key, event_id], …]`` it adds.
- ``event_state``: the group of the state *after* each event (for a rejected event, the state
  before it: a rejected event changes nothing).

Both are derived from the room's DAG (the state after an event is a function of its
ancestors), so a crash that loses a write here loses nothing: the group is computed again.

Also here: ``held_ids`` and ``cited_ids`` (cheap DAG reads receipt needs), and
``replace_state_txn``, which makes ``room_state`` hold the room's *resolved* current state
(the Room Store keeps there the latest state event per key by arrival, which is the resolved
state only while the room's graph has one branch).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from cis.ids import EventId

StateKey = tuple[str, str]

STATE_GROUPS_SCHEMA: Final[tuple[str, ...]] = (
    """CREATE TABLE state_groups (
        id INTEGER PRIMARY KEY,
        prev_id INTEGER,
        delta TEXT NOT NULL
    )""",
    """CREATE TABLE event_state (
        event_id TEXT PRIMARY KEY,
        state_group INTEGER NOT NULL
    ) WITHOUT ROWID""",
)

_IN_CHUNK: Final = 500


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def encode_delta(delta: Mapping[StateKey, str]) -> str:
    return json.dumps(sorted([t, k, e] for (t, k), e in delta.items()), separators=(",", ":"))


def decode_delta(text: str) -> dict[StateKey, EventId]:
    return {(t, k): EventId(e) for t, k, e in json.loads(text)}


def max_group_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM state_groups").fetchone()
    return int(row[0])


def load_groups(
    conn: sqlite3.Connection, group_ids: Sequence[int]
) -> dict[int, tuple[int | None, dict[StateKey, EventId]]]:
    """``id → (prev_id, delta)`` of the groups asked for, following each chain to its root."""
    out: dict[int, tuple[int | None, dict[StateKey, EventId]]] = {}
    todo = [g for g in group_ids if g not in out]
    while todo:
        wanted = list(dict.fromkeys(todo))
        todo = []
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT id, prev_id, delta FROM state_groups WHERE id IN ({marks})", chunk
            ).fetchall()
            for gid, prev, delta in rows:
                out[int(gid)] = (int(prev) if prev is not None else None, decode_delta(delta))
                if prev is not None and int(prev) not in out:
                    todo.append(int(prev))
    return out


def groups_of(conn: sqlite3.Connection, event_ids: Sequence[str]) -> dict[EventId, int]:
    found: dict[EventId, int] = {}
    for chunk in _chunks(list(dict.fromkeys(event_ids))):
        marks = ",".join("?" * len(chunk))
        for event_id, group in conn.execute(
            f"SELECT event_id, state_group FROM event_state WHERE event_id IN ({marks})", chunk
        ):
            found[EventId(event_id)] = int(group)
    return found


def store_groups_txn(
    conn: sqlite3.Connection,
    groups: Sequence[tuple[int, int | None, str]],
    mappings: Sequence[tuple[str, int]],
) -> None:
    if groups:
        conn.executemany(
            "INSERT OR IGNORE INTO state_groups (id, prev_id, delta) VALUES (?, ?, ?)", groups
        )
    if mappings:
        conn.executemany(
            "INSERT OR REPLACE INTO event_state (event_id, state_group) VALUES (?, ?)", mappings
        )


def ungrouped_ancestors(
    conn: sqlite3.Connection, from_ids: Sequence[str], known: Callable[[str], bool]
) -> tuple[list[str], dict[EventId, int]]:
    """The held events among ``from_ids`` and their ancestors that have no state group yet,
    walking ``prev_events`` back until groups (the file's, or ``known``'s) are met: one
    read for the whole walk, a few queries per 500 events, instead of reads per event.
    Returns them (no order) and the groups of the ancestors where the walk stopped."""
    out: list[str] = []
    groups: dict[EventId, int] = {}
    seen: set[str] = set()
    queue = [e for e in dict.fromkeys(from_ids) if not known(e)]
    while queue:
        chunk, queue = queue[:_IN_CHUNK], queue[_IN_CHUNK:]
        marks = ",".join("?" * len(chunk))
        grouped = dict(conn.execute(
            f"SELECT event_id, state_group FROM event_state WHERE event_id IN ({marks})", chunk
        ).fetchall())  # fmt: skip
        held = {r[0] for r in conn.execute(
            f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk
        )}  # fmt: skip
        for event_id, group in grouped.items():
            groups[EventId(event_id)] = int(group)
        todo = [e for e in chunk if e in held and e not in grouped]
        out.extend(todo)
        if not todo:
            continue
        marks = ",".join("?" * len(todo))
        for (prev,) in conn.execute(
            f"SELECT prev_event_id FROM event_edges WHERE event_id IN ({marks})", todo
        ):
            if prev not in seen and not known(prev):
                seen.add(prev)
                queue.append(prev)
    return out, groups


def held_ids(conn: sqlite3.Connection, event_ids: Sequence[str]) -> dict[EventId, str]:
    """``event_id → status`` of the ids the room holds."""
    found: dict[EventId, str] = {}
    for chunk in _chunks(list(dict.fromkeys(event_ids))):
        for event_id, status in conn.execute(
            f"SELECT event_id, status FROM events WHERE event_id IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            found[EventId(event_id)] = status
    return found


def cited_ids(conn: sqlite3.Connection, event_ids: Sequence[str]) -> set[EventId]:
    """Those of ``event_ids`` that a held timeline event names as a prev_event."""
    found: set[EventId] = set()
    for chunk in _chunks(list(dict.fromkeys(event_ids))):
        for (prev,) in conn.execute(
            "SELECT e.prev_event_id FROM event_edges AS e JOIN events AS ev"
            " ON ev.event_id = e.event_id"
            f" WHERE e.prev_event_id IN ({','.join('?' * len(chunk))}) AND ev.status = 'timeline'",
            chunk,
        ):
            found.add(EventId(prev))
    return found


def held_and_cited(
    conn: sqlite3.Connection, event_ids: Sequence[str], batch_ids: Sequence[str]
) -> tuple[dict[EventId, str], set[EventId]]:
    """``held_ids(event_ids)`` and ``cited_ids(batch_ids)`` in one read (receipt's first)."""
    return held_ids(conn, event_ids), cited_ids(conn, batch_ids)


def replace_state_txn(conn: sqlite3.Connection, state: Mapping[StateKey, str]) -> None:
    """Make ``room_state`` hold exactly ``state``; rows that already agree are left alone."""
    current = {
        (t, k): e for t, k, e in conn.execute("SELECT type, state_key, event_id FROM room_state")
    }
    top_row = conn.execute("SELECT coalesce(max(stream_ordering), 0) FROM events").fetchone()
    top = int(top_row[0])
    gone = [key for key in current if key not in state]
    if gone:
        conn.executemany("DELETE FROM room_state WHERE type = ? AND state_key = ?", gone)
    changed = [(t, k, e, top) for (t, k), e in state.items() if current.get((t, k)) != e]
    if changed:
        conn.executemany(
            "INSERT INTO room_state (type, state_key, event_id, stream_ordering)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (type, state_key) DO UPDATE SET"
            " event_id = excluded.event_id, stream_ordering = excluded.stream_ordering",
            changed,
        )


def room_events_in_order(
    conn: sqlite3.Connection, after: int, limit: int
) -> list[tuple[int, str, str, bytes]]:
    """``(position, event_id, status, pdu)`` above ``after``, in stream order (for tests and
    comparisons of what two nodes hold)."""
    return [
        (int(r[0]), r[1], r[2], bytes(r[3]))
        for r in conn.execute(
            "SELECT stream_ordering, event_id, status, pdu FROM events WHERE stream_ordering > ?"
            " ORDER BY stream_ordering LIMIT ?",
            (after, limit),
        )
    ]


def all_event_ids(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """``(event_id, status)`` of every event held, ordered by id."""
    return [(r[0], r[1]) for r in conn.execute("SELECT event_id, status FROM events ORDER BY 1")]

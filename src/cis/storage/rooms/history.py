"""Reads of a room's history that another server asks for (catch-up, backfill), each one
statement however long the stretch of history: a recursive walk back over ``event_edges``, and
a range of events in this node's storage order.

- ``ancestors_walk`` serves ``GetMissingEvents`` and ``Backfill``: breadth-first from the
  events named, through held events only. On a linear chain the former per-level loop cost two
  queries an event; the recursive query is one statement for the whole walk.
- ``history_after`` serves ``GetHistory`` (docs/federation.md §4): the events stored after a
  position, oldest first. A node stores an event only once its ``prev_events`` are held (receipt
  skips the others, local events build on held ones), so storage order is a topological order
  of the graph it holds; outliers (state and auth events held out of the graph) and rejected
  events are left out.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Final

SERVED_STATUSES: Final = ("timeline", "soft_failed")


def ancestors_walk(
    conn: sqlite3.Connection,
    from_ids: Sequence[str],
    stop_ids: Sequence[str],
    limit: int,
) -> tuple[list[tuple[str, bytes]], bool]:
    """Breadth-first walk back over ``prev_events`` from (and including) ``from_ids``, not
    entering ``stop_ids``, through held events only; at most ``limit`` events
    ``(event_id, pdu)`` in walk order (the starting events, then their parents, …; the parents
    of one event in id order), and whether the walk was cut short.

    SQLite runs a recursive query without ORDER BY as a FIFO queue (its documentation, "Recursive
    Common Table Expressions"), which is the breadth-first order; ``UNION`` visits each event
    once however many children name it.
    """
    if limit <= 0:
        return [], bool(from_ids)
    rows = conn.execute(
        """
        WITH RECURSIVE
          stop(id) AS (SELECT value FROM json_each(?1)),
          walk(id, pdu) AS (
            SELECT ev.event_id, ev.pdu FROM json_each(?2) AS start
              JOIN events AS ev ON ev.event_id = start.value
              WHERE start.value NOT IN stop
            UNION
            SELECT ev.event_id, ev.pdu FROM walk
              JOIN event_edges AS edge ON edge.event_id = walk.id
              JOIN events AS ev ON ev.event_id = edge.prev_event_id
              WHERE edge.prev_event_id NOT IN stop
            LIMIT ?3
          )
        SELECT id, pdu FROM walk
        """,
        (json.dumps(list(stop_ids)), json.dumps(list(dict.fromkeys(from_ids))), limit + 1),
    ).fetchall()
    out = [(str(r[0]), bytes(r[1])) for r in rows[:limit]]
    return out, len(rows) > limit


def history_after(
    conn: sqlite3.Connection,
    earliest_ids: Sequence[str],
    after: int,
    limit: int,
    max_bytes: int,
) -> tuple[list[tuple[str, bytes]], int, bool] | None:
    """The events stored after position ``after`` (when it is 0: after the earliest held of
    ``earliest_ids``), oldest first, at most ``limit`` of them and ``max_bytes`` of PDUs (one
    at least); with the position to continue after and whether more follow. ``None`` when
    ``after`` is 0 and no event of ``earliest_ids`` is held."""
    if after <= 0:
        row = conn.execute(
            "SELECT min(stream_ordering) FROM events"
            " WHERE event_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(earliest_ids)),),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        after = int(row[0])
    marks = ",".join("?" * len(SERVED_STATUSES))
    cursor = conn.execute(
        "SELECT stream_ordering, event_id, pdu FROM events"
        f" WHERE stream_ordering > ? AND status IN ({marks})"
        " ORDER BY stream_ordering LIMIT ?",
        (after, *SERVED_STATUSES, max(1, limit) + 1),
    )
    out: list[tuple[str, bytes]] = []
    position = after
    size = 0
    for stream_ordering, event_id, pdu in cursor:
        raw = bytes(pdu)
        if len(out) >= limit or (out and size + len(raw) > max_bytes):
            return out, position, True
        out.append((str(event_id), raw))
        size += len(raw)
        position = int(stream_ordering)
    return out, position, False

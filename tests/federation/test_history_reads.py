"""The history reads that serve catch-up (``cis.storage.rooms.history``), on a room file with
the real schema: the recursive walk back over ``prev_events`` on a linear chain and on a forked
graph, and ``history_after``'s pages in storage order."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from cis.matrix import Event
from cis.storage.rooms import schema
from cis.storage.rooms.history import ancestors_walk, history_after
from cis.storage.sqlite import migrate
from tests.factories import chain, make_event

ROOM = "!history:alpha.cis.local"


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "events.db"
    connection = sqlite3.connect(path, isolation_level=None)
    migrate(connection, schema.KIND, schema.MIGRATIONS, path)
    yield connection
    connection.close()


def store(conn: sqlite3.Connection, events: Sequence[Event], status: str = "timeline") -> None:
    """Rows as the Room Store writes them, in the order given (that is the storage order)."""
    for event in events:
        conn.execute(
            "INSERT INTO events (event_id, sender, type, state_key, origin_server_ts,"
            " received_ts, depth, room_version, status, pdu, strings)"
            " VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, x'')",
            (event.event_id, event.sender, event.type, event.state_key,
             event.origin_server_ts, event.depth, event.room_version, status,
             event.canonical_bytes),
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?)",
            [(event.event_id, p) for p in event.prev_events],
        )


def ids(pairs: Sequence[tuple[str, bytes]]) -> list[str]:
    return [e for e, _pdu in pairs]


def test_walk_on_a_linear_chain_is_newest_first_and_says_when_cut(
    conn: sqlite3.Connection,
) -> None:
    events = chain(ROOM, 10)
    store(conn, events)
    newest_first = [e.event_id for e in reversed(events)]

    walked, more = ancestors_walk(conn, [events[-1].event_id], [], 4)
    assert ids(walked) == newest_first[:4]
    assert more
    pdus = dict(walked)
    assert pdus[events[-1].event_id] == events[-1].canonical_bytes

    walked, more = ancestors_walk(conn, [events[-1].event_id], [], 100)
    assert ids(walked) == newest_first
    assert not more

    walked, more = ancestors_walk(conn, [events[-1].event_id], [events[5].event_id], 100)
    assert ids(walked) == newest_first[:4]  # events 9, 8, 7, 6: the walk stops at 5
    assert not more
    assert ancestors_walk(conn, [events[-1].event_id], [], 0) == ([], True)


def test_walk_on_a_forked_graph_visits_each_event_once_breadth_first(
    conn: sqlite3.Connection,
) -> None:
    root = make_event(ROOM, content={"body": "root"})
    left = make_event(ROOM, content={"body": "left"}, prev_events=[root.event_id], depth=2)
    right = make_event(ROOM, content={"body": "right"}, prev_events=[root.event_id], depth=2)
    deeper = make_event(ROOM, content={"body": "deeper"}, prev_events=[left.event_id], depth=3)
    missing = "$not-held:alpha.cis.local"
    merge = make_event(
        ROOM, content={"body": "merge"}, depth=4,
        prev_events=[deeper.event_id, right.event_id, missing],
    )  # fmt: skip
    store(conn, [root, left, right, deeper, merge])

    walked, more = ancestors_walk(conn, [merge.event_id, missing], [], 100)
    order = ids(walked)
    assert not more
    assert sorted(order) == sorted(e.event_id for e in (root, left, right, deeper, merge))
    assert len(order) == len(set(order))  # root, named by two children, once
    assert order[0] == merge.event_id
    assert set(order[1:3]) == {deeper.event_id, right.event_id}  # the merge's parents
    assert order.index(left.event_id) < order.index(root.event_id)

    walked, more = ancestors_walk(conn, [merge.event_id], [right.event_id, left.event_id], 100)
    assert ids(walked) == [merge.event_id, deeper.event_id]
    assert not more


def test_history_after_pages_in_storage_order(conn: sqlite3.Connection) -> None:
    events = chain(ROOM, 12)
    store(conn, events[:3])
    store(conn, [make_event(ROOM, content={"body": "outlier"})], status="outlier")
    store(conn, events[3:6])
    store(conn, [make_event(ROOM, content={"body": "rejected"})], status="rejected")
    store(conn, events[6:8])
    store(conn, events[8:10], status="soft_failed")
    store(conn, events[10:])
    served = [e.event_id for e in events[2:]]  # after events[1]; no outlier, no rejected

    first = history_after(conn, [events[1].event_id, "$unknown"], 0, 4, 1 << 20)
    assert first is not None
    page, position, more = first
    assert ids(page) == served[:4]
    assert more
    assert dict(page)[events[2].event_id] == events[2].canonical_bytes

    collected = ids(page)
    while more:
        found = history_after(conn, [], position, 4, 1 << 20)
        assert found is not None
        page, position, more = found
        collected += ids(page)
    assert collected == served


def test_history_after_starts_after_the_earliest_held_and_bounds_bytes(
    conn: sqlite3.Connection,
) -> None:
    events = chain(ROOM, 6)
    store(conn, events)
    assert history_after(conn, ["$a", "$b"], 0, 10, 1 << 20) is None

    found = history_after(conn, [events[4].event_id, events[2].event_id], 0, 10, 1 << 20)
    assert found is not None
    assert ids(found[0]) == [e.event_id for e in events[3:]]
    assert not found[2]

    one = len(events[1].canonical_bytes)
    found = history_after(conn, [events[0].event_id], 0, 10, one + one // 2)
    assert found is not None
    page, _position, more = found
    assert ids(page) == [events[1].event_id]  # the second would pass the byte budget
    assert more
    tiny = history_after(conn, [events[0].event_id], 0, 10, 1)
    assert tiny is not None and len(tiny[0]) == 1  # at least one event, whatever its size

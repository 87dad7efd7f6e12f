"""The stream watcher: rows from the index tap, per-room latest positions, recent rows in
memory (and the fallback to node.db when memory does not cover a range), wake-ups."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cis.handlers.stream_watch import RECENT_ROWS_PER_ROOM
from cis.ids import RoomId
from cis.storage.client import timeline
from tests.api.client.harness import Harness, make_harness
from tests.api.client.rooms_helpers import create_room, send, settle


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path):
        yield harness


async def test_recent_rows_match_the_index(h: Harness) -> None:
    alice: dict[str, Any] = await h.register("alice")
    room = RoomId(await create_room(h, alice["access_token"]))
    await settle(h)
    start = h.positions.current
    sent = [await send(h, alice["access_token"], room, f"m{i}") for i in range(20)]
    await settle(h)
    upto = h.positions.current
    assert h.watcher.latest(room) == upto
    memory = h.watcher.recent_rows(room, start, upto, 5)
    assert memory is not None
    assert [r.event_id for r in memory] == list(reversed(sent))[:5]
    from_db = await h.db.run_read(
        "room_events", timeline.room_events, room, start, upto, 5, newest_first=True
    )
    assert memory == from_db
    # A room created since start-up is wholly in memory (up to the bound per room) ...
    whole = h.watcher.recent_rows(room, 0, upto, 1000)
    everything = await h.db.run_read(
        "room_events", timeline.room_events, room, 0, upto, 1000, newest_first=True
    )
    assert whole == everything
    # ... but never past what the watcher has processed.
    assert h.watcher.recent_rows(room, upto, upto + 10, 5) is None


async def test_memory_is_bounded_per_room(h: Harness) -> None:
    alice: dict[str, Any] = await h.register("alice")
    room = RoomId(await create_room(h, alice["access_token"]))
    await settle(h)
    start = h.positions.current
    for i in range(RECENT_ROWS_PER_ROOM + 10):
        await send(h, alice["access_token"], room, f"m{i}")
    await settle(h)
    assert h.watcher.recent_rows(room, start, h.positions.current, 5) is None
    recent = h.watcher.recent_rows(room, h.positions.current - 5, h.positions.current, 10)
    assert recent is not None and len(recent) == 5


async def test_membership_cache_follows_membership_events(h: Harness) -> None:
    alice: dict[str, Any] = await h.register("alice")
    bob: dict[str, Any] = await h.register("bob")
    assert await h.watcher.memberships(bob["user_id"]) == []
    room = await create_room(h, alice["access_token"], invite=[bob["user_id"]])
    await settle(h)
    rows = await h.watcher.memberships(bob["user_id"])
    assert [(r.room_id, r.membership) for r in rows] == [(room, "invite")]

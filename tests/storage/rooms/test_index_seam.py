"""The manager against the in-memory ``RoomIndex``: the derived-index failure path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cis.clock import FakeClock
from cis.home import Home
from cis.storage.rooms import manager as manager_module
from cis.storage.rooms.index import MemoryRoomIndex
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.stream import StreamPositions
from tests.factories import chain

ROOM = "!seam:alpha.cis.local"


async def test_index_rows_go_through_the_seam_in_commit_order(tmp_path: Path) -> None:
    index = MemoryRoomIndex()
    manager = RoomStoreManager(
        Home(tmp_path), index, StreamPositions(0), clock=FakeClock(), max_open_rooms=2
    )
    try:
        store = await manager.get_or_create(ROOM)
        events = chain(ROOM, 6)
        await asyncio.gather(*(store.store_event(e) for e in events))
        async with asyncio.timeout(5):
            await manager.positions.wait_beyond(manager.positions.last_allocated - 1)
        positions = [row.stream_ordering for _, row in index.rows]
        assert positions == sorted(positions) and len(positions) == 6
        assert [r.room_id for r in await manager.list_rooms()] == [ROOM]
    finally:
        await manager.close()


async def test_a_failing_index_never_blocks_readers_and_marks_the_stop_unclean(
    tmp_path: Path,
) -> None:
    index = MemoryRoomIndex()
    positions = StreamPositions(0)
    manager = RoomStoreManager(Home(tmp_path), index, positions, clock=FakeClock())
    try:
        store = await manager.get_or_create(ROOM)
        index.fail_index = True
        await store.store_events(chain(ROOM, 3))  # the room commit succeeds
        async with asyncio.timeout(5):
            await positions.wait_beyond(0)
        assert positions.current == positions.last_allocated == 3  # readers are not stuck
        assert manager.counters.index_failures == 1  # so the node skips the clean marker
        assert (await store.stats()).total_events == 3  # the room file holds the events
    finally:
        await manager.close()


class CountingIndex(MemoryRoomIndex):
    def __init__(self) -> None:
        super().__init__()
        self.interactions = 0

    def submit_index(self, entries: Any) -> Any:
        self.interactions += 1
        return super().submit_index(entries)


async def test_index_interactions_start_a_window_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone write is indexed at once; writes that follow within the window share the next
    index interaction, and become visible only then."""
    monkeypatch.setattr(manager_module, "INDEX_WINDOW_S", 2.0)
    index = CountingIndex()
    positions = StreamPositions(0)
    manager = RoomStoreManager(Home(tmp_path), index, positions, clock=FakeClock())
    try:
        store = await manager.get_or_create(ROOM)
        events = chain(ROOM, 5)
        await store.store_event(events[0])
        for event in events[1:]:
            await store.store_event(event)
        assert index.interactions == 1
        async with asyncio.timeout(5):
            await positions.wait_beyond(0)
        assert positions.current == 1  # the others wait for the window
        async with asyncio.timeout(5):
            await positions.wait_beyond(4)
        assert index.interactions == 2
        assert [row.event_id for _, row in index.rows] == [e.event_id for e in events]
    finally:
        await manager.close()


async def test_close_does_not_wait_out_the_index_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_module, "INDEX_WINDOW_S", 60.0)
    index = CountingIndex()
    manager = RoomStoreManager(Home(tmp_path), index, StreamPositions(0), clock=FakeClock())
    store = await manager.get_or_create(ROOM)
    events = chain(ROOM, 3)
    for event in events:
        await store.store_event(event)
    async with asyncio.timeout(5):
        await manager.close()
    assert [row.event_id for _, row in index.rows] == [e.event_id for e in events]
    assert manager.positions.current == 3

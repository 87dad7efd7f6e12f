from __future__ import annotations

import asyncio

import pytest

from cis.storage.stream import StreamPositions


def test_positions_are_handed_out_in_order() -> None:
    positions = StreamPositions(10)
    assert positions.allocate(3) == range(11, 14)
    assert positions.allocate(0) == range(14, 14)
    assert positions.allocate(1) == range(14, 15)
    assert positions.last_allocated == 14
    assert positions.current == 10  # nothing complete yet


def test_current_never_passes_a_position_in_flight() -> None:
    positions = StreamPositions(0)
    room_a = positions.allocate(2)  # 1, 2
    room_b = positions.allocate(3)  # 3, 4, 5
    room_c = positions.allocate(1)  # 6
    positions.complete(room_b)  # B finished first: 3..5 are indexed, 1..2 are not
    assert positions.current == 0
    positions.complete(room_c)
    assert positions.current == 0
    positions.complete(room_a)
    assert positions.current == 6
    assert positions.in_flight == 0


def test_completing_twice_or_unknown_ranges_is_a_bug() -> None:
    positions = StreamPositions(0)
    allocated = positions.allocate(2)
    positions.complete(allocated)
    with pytest.raises(ValueError, match="not in flight"):
        positions.complete(allocated)
    with pytest.raises(ValueError):
        StreamPositions(-1)


async def test_wait_beyond_wakes_when_current_advances_and_on_close() -> None:
    positions = StreamPositions(0)
    allocated = positions.allocate(1)
    waiter = asyncio.create_task(positions.wait_beyond(0))
    await asyncio.sleep(0)
    assert not waiter.done()
    positions.complete(allocated)
    async with asyncio.timeout(5):
        assert await waiter == 1
    assert await positions.wait_beyond(0) == 1  # already beyond: immediate
    blocked = asyncio.create_task(positions.wait_beyond(1))
    await asyncio.sleep(0)
    positions.close()
    async with asyncio.timeout(5):
        assert await blocked == 1

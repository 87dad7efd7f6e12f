"""Client txn ids: in memory with the room's snapshot, reloaded from the room file, and kept
for 24 hours only (retention is bounded)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cis.handlers.room_cache import TXN_RETENTION_MS
from cis.ids import RoomId
from tests.api.client.harness import Harness, make_harness
from tests.api.client.rooms_helpers import create_room, send


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path):
        yield harness


def drop_snapshot(h: Harness, room: str) -> None:
    """Forget the room's in-memory snapshot, as a restart would."""
    h.creator.cache.invalidate(RoomId(room))


async def test_txn_ids_survive_a_reload_and_expire(h: Harness) -> None:
    alice: dict[str, Any] = await h.register("alice")
    token = alice["access_token"]
    room = await create_room(h, token)
    first = await send(h, token, room, "once", txn="T")
    drop_snapshot(h, room)
    assert await send(h, token, room, "retry", txn="T") == first  # from the room file
    h.clock.advance(TXN_RETENTION_MS / 1000 - 60)
    drop_snapshot(h, room)
    assert await send(h, token, room, "retry", txn="T") == first  # still within 24 h
    h.clock.advance(120)
    drop_snapshot(h, room)
    # Past the retention window the mapping is gone: the same txn id is a new send.
    assert await send(h, token, room, "later", txn="T") != first
    store = await h.manager.get(room)
    assert store is not None
    assert len(await store.txn_ids_since(0, 100)) == 1  # the old row was deleted on reload

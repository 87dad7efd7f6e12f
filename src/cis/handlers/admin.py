"""Node administration behind the admin API (everything but ``status`` needs the admin token)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final, TypedDict

from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.stream import StreamPositions

__all__ = ["MAX_WAIT_S", "AdminHandler", "RoomEntry"]

MAX_WAIT_S: Final = 60.0


class RoomEntry(TypedDict):
    room_id: str
    status: str
    open: bool
    created_ts: int
    indexed_upto: int


class AdminHandler:
    def __init__(self, rooms: RoomStoreManager, positions: StreamPositions) -> None:
        self._rooms = rooms
        self._positions = positions

    async def list_rooms(self) -> list[RoomEntry]:
        return [
            {
                "room_id": info.room_id,
                "status": info.status.value,
                "open": info.open,
                "created_ts": info.created_ts,
                "indexed_upto": info.indexed_upto,
            }
            for info in await self._rooms.list_rooms()
        ]

    async def wait_stream(self, after: int, timeout_s: float) -> int:
        """The node's stream position once it passes ``after``, or at the timeout.

        A long-poll: it returns early (with the current position) when the node stops.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(max(timeout_s, 0.0), MAX_WAIT_S)):
                await self._positions.wait_beyond(after)
        return self._positions.current

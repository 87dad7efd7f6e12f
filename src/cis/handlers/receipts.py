"""Receipts and read markers (Client-Server API §"Receipts", §"Fully read markers").

- ``m.read`` and ``m.read.private`` receipts are rows of the ``receipts`` stream (private ones
  are served only to their owner); ``m.fully_read`` is the user's room account data.
- A user must be joined to a room to send receipts there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from cis.clock import Clock
from cis.handlers.account_data import AccountDataHandler
from cis.handlers.auth import Requester
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.notifier import Notifier
from cis.handlers.room_cache import RoomCache
from cis.handlers.stream_counters import StreamCounters
from cis.ids import EventId, RoomId
from cis.storage.client.receipts import Receipt, ReceiptStore

RECEIPT_TYPES: Final = frozenset({"m.read", "m.read.private"})
FULLY_READ: Final = "m.fully_read"


def _event_id(value: object) -> EventId:
    if not isinstance(value, str) or not value.startswith("$") or len(value) > 255:
        raise ApiError(Errcode.INVALID_PARAM, "Invalid event id")
    return EventId(value)


class ReceiptHandler:
    def __init__(
        self,
        *,
        store: ReceiptStore,
        account_data: AccountDataHandler,
        cache: RoomCache,
        counters: StreamCounters,
        notifier: Notifier,
        clock: Clock,
    ) -> None:
        self._store = store
        self._account_data = account_data
        self._cache = cache
        self._counters = counters
        self._notifier = notifier
        self._clock = clock
        self.on_local: Callable[[Receipt], None] | None = None
        """Set when the node federates: a local user's receipt goes to the room's servers."""

    async def _joined(self, requester: Requester, room_id: str) -> RoomId:
        snapshot = await self._cache.get(RoomId(room_id)) if room_id.startswith("!") else None
        if snapshot is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown room")
        if snapshot.membership(requester.user_id) != "join":
            raise ApiError(Errcode.FORBIDDEN, "You are not in this room")
        return snapshot.room_id

    async def receipt(
        self,
        requester: Requester,
        room_id: str,
        receipt_type: str,
        event_id: str,
        body: dict[str, Any],
    ) -> None:
        rid = await self._joined(requester, room_id)
        target = _event_id(event_id)
        if receipt_type == FULLY_READ:
            await self._account_data.put(
                requester.user_id, rid, FULLY_READ, {"event_id": target}, server=True
            )
            return
        if receipt_type not in RECEIPT_TYPES:
            raise ApiError(Errcode.INVALID_PARAM, "Unknown receipt type")
        thread = body.get("thread_id", "")
        if not isinstance(thread, str) or len(thread) > 255:
            raise ApiError(Errcode.INVALID_PARAM, "Invalid thread_id")
        ts = self._clock.time_ms()
        position = await self._store.put(
            room_id=rid,
            receipt_type=receipt_type,
            user_id=requester.user_id,
            thread_id=thread,
            event_id=target,
            ts=ts,
        )
        self._counters.advance("receipts", position)
        self._notifier.notify_room(rid)
        if self.on_local is not None:
            self.on_local(
                Receipt(rid, receipt_type, requester.user_id, thread, target, ts, position)
            )

    async def read_markers(self, requester: Requester, room_id: str, body: dict[str, Any]) -> None:
        await self._joined(requester, room_id)
        for key in (FULLY_READ, "m.read", "m.read.private"):
            value = body.get(key)
            if value is not None:
                await self.receipt(requester, room_id, key, _event_id(value), {})

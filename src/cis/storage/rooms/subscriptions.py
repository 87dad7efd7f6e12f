"""Subscriptions to a room's new events, held by the manager and based on positions.

Invariants:

1. A subscription lives in the ``SubscriptionHub``, not in an open ``RoomStore``: evicting a
   cold room from the LRU never silences it.
2. It remembers ``last_delivered``, the stream position of the last event it handed out, and
   only ever hands out events above it, in position order (a room commits in position order).
3. Memory is bounded: at most ``max_pending`` events wait in its buffer. When a notification
   would overflow it, the buffer is dropped and the subscription is *lagging*: the next ``get``
   raises ``SubscriptionLagged(last_delivered)``. Nothing is dropped silently: the subscriber
   re-reads the room from that position (``RoomStore.events_after``), then calls
   ``advance(position)``.
4. Raising ``SubscriptionLagged`` re-arms the buffer at once, before the subscriber re-reads,
   so an event committed during the re-read is either in the re-read or in the buffer (or
   both: ``advance`` drops what was re-read).

``RoomStoreManager.follow`` wraps this loop for subscribers that just want every event.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

from cis.errors import CisError
from cis.ids import RoomId
from cis.storage.events import EventStatus, StoredEvent

DEFAULT_MAX_PENDING: Final = 1000


class SubscriptionLagged(CisError):
    """The subscriber fell behind; re-read the room after ``last_delivered``, then ``advance``."""

    def __init__(self, room_id: RoomId, last_delivered: int) -> None:
        super().__init__(
            f"subscription to {room_id} fell behind after position {last_delivered}; re-read"
        )
        self.room_id = room_id
        self.last_delivered = last_delivered


class SubscriptionClosed(CisError):
    """The subscription ended (closed, the room was archived, or the node is stopping)."""


class Subscription:
    """New events of one room, in position order. Use from the event loop's thread."""

    def __init__(
        self,
        hub: SubscriptionHub,
        room_id: RoomId,
        after: int,
        statuses: Iterable[EventStatus],
        max_pending: int,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.room_id = room_id
        self.statuses = frozenset(statuses)
        self.max_pending = max_pending
        self._hub = hub
        self._last_delivered = after
        self._buffer: deque[StoredEvent] = deque()
        self._overflowed = False
        self._lag_pending = False
        self._closed_reason: str | None = None
        self._wakeup: asyncio.Event = asyncio.Event()

    @property
    def last_delivered(self) -> int:
        return self._last_delivered

    @property
    def lagging(self) -> bool:
        return self._lag_pending

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    def _offer(self, events: Sequence[StoredEvent]) -> None:
        if self._closed_reason is not None or self._overflowed:
            return
        wanted = [
            ev
            for ev in events
            if ev.status in self.statuses and ev.stream_ordering > self._last_delivered
        ]
        if not wanted:
            return
        if len(self._buffer) + len(wanted) > self.max_pending:
            self._buffer.clear()
            self._overflowed = True
            self._lag_pending = True
        else:
            self._buffer.extend(wanted)
        self._wakeup.set()

    def mark_lagging(self) -> None:
        """Tell the subscriber to re-read (used when it may have missed events)."""
        self._lag_pending = True
        self._wakeup.set()

    def _end(self, reason: str) -> None:
        self._closed_reason = reason
        self._buffer.clear()
        self._wakeup.set()

    async def get(self) -> StoredEvent:
        """The next event; bound the wait with ``asyncio.timeout``.

        Raises ``SubscriptionLagged`` (see the module docstring) or ``SubscriptionClosed``.
        Cancelling a ``get`` loses nothing.
        """
        while True:
            if self._lag_pending:
                self._lag_pending = False
                self._overflowed = False  # re-armed before the subscriber re-reads
                raise SubscriptionLagged(self.room_id, self._last_delivered)
            while self._buffer:
                event = self._buffer.popleft()
                if event.stream_ordering > self._last_delivered:
                    self._last_delivered = event.stream_ordering
                    return event
            if self._closed_reason is not None:
                raise SubscriptionClosed(
                    f"subscription to {self.room_id} ended: {self._closed_reason}"
                )
            self._wakeup.clear()
            await self._wakeup.wait()

    def advance(self, position: int) -> None:
        """The subscriber has handled everything up to ``position`` (after a re-read)."""
        if position > self._last_delivered:
            self._last_delivered = position
            while self._buffer and self._buffer[0].stream_ordering <= position:
                self._buffer.popleft()

    def close(self) -> None:
        self._hub.remove(self)
        self._end("closed")


class SubscriptionHub:
    """Every live subscription, by room."""

    def __init__(self) -> None:
        self._by_room: dict[RoomId, set[Subscription]] = {}

    def add(
        self,
        room_id: RoomId,
        after: int,
        statuses: Iterable[EventStatus] = (EventStatus.TIMELINE,),
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> Subscription:
        sub = Subscription(self, room_id, after, statuses, max_pending)
        self._by_room.setdefault(room_id, set()).add(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        subs = self._by_room.get(sub.room_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_room[sub.room_id]

    def count(self, room_id: RoomId | None = None) -> int:
        if room_id is not None:
            return len(self._by_room.get(room_id, ()))
        return sum(len(subs) for subs in self._by_room.values())

    def notify(self, room_id: RoomId, events: Sequence[StoredEvent]) -> None:
        """Offer newly committed events (in position order) to the room's subscribers."""
        for sub in self._by_room.get(room_id, ()):
            sub._offer(events)

    def mark_lagging(self, room_id: RoomId) -> None:
        for sub in self._by_room.get(room_id, ()):
            sub.mark_lagging()

    def end_room(self, room_id: RoomId, reason: str) -> None:
        for sub in self._by_room.pop(room_id, set()):
            sub._end(reason)

    def end_all(self, reason: str) -> None:
        for room_id in list(self._by_room):
            self.end_room(room_id, reason)

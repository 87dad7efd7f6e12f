"""Waking long-polling ``/sync`` requests: one wait list per room and one per user.

Invariants:

- A listener is registered under each room the user is in and under the user itself *before*
  the sync handler reads what is new, so an event landing during that read wakes it: a wake-up
  that arrives early is remembered (``woken``) and the following ``wait`` returns at once.
- ``notify_room(room)`` wakes exactly the listeners of that room, all at once; its cost is the
  number of those listeners, whatever the number of rooms on the node. ``notify_user(user)`` is
  for the user's own streams (invites, to-device messages, account data, device lists,
  receipts and typing reach rooms through ``notify_room``).
- A woken or closed listener is removed from every list it was in, so lists hold only live
  waits.
- At most ``max_per_user`` listeners wait for one user; a further one wakes the oldest (its
  client gets an early, possibly empty, answer and polls again), so one user cannot pile up
  unbounded waits.
- ``close()`` (node shutdown) wakes everyone and makes later waits return at once, so long-polls
  end promptly on SIGTERM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Final

from cis.ids import RoomId, UserId

DEFAULT_MAX_PER_USER: Final = 8


class Listener:
    """One waiting ``/sync``; use as a context manager so it is always unregistered."""

    __slots__ = ("_future", "_notifier", "_rooms", "_user", "superseded", "woken")

    def __init__(self, notifier: Notifier, user_id: UserId, rooms: tuple[RoomId, ...]) -> None:
        self._notifier = notifier
        self._user = user_id
        self._rooms = rooms
        self._future: asyncio.Future[None] | None = None
        self.woken = False
        self.superseded = False
        """Woken to make room for a newer wait of the same user: answer now, do not wait
        again."""

    @property
    def user_id(self) -> UserId:
        return self._user

    @property
    def rooms(self) -> tuple[RoomId, ...]:
        return self._rooms

    def wake(self) -> None:
        if self.woken:
            return
        self.woken = True
        self._notifier._unregister(self)
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a wake-up; True if one came (or had come)."""
        if self.woken:
            return True
        if seconds <= 0:
            return False
        self._future = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._future, seconds)
        except TimeoutError:
            return self.woken
        return True

    def close(self) -> None:
        if not self.woken:
            self._notifier._unregister(self)
        self.woken = True
        if self._future is not None and not self._future.done():
            self._future.cancel()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Notifier:
    """Per-room and per-user wait lists (see the module docstring)."""

    def __init__(self, *, max_per_user: int = DEFAULT_MAX_PER_USER) -> None:
        self._max_per_user = max_per_user
        self._by_room: dict[RoomId, dict[Listener, None]] = {}
        self._by_user: dict[UserId, dict[Listener, None]] = {}
        self._closed = False

    def listen(self, user_id: UserId, room_ids: Iterable[RoomId]) -> Listener:
        """Register a listener for ``user_id`` on ``room_ids`` (and the user's own streams)."""
        listener = Listener(self, user_id, tuple(room_ids))
        if self._closed:
            listener.woken = True
            listener.superseded = True
            return listener
        mine = self._by_user.setdefault(user_id, {})
        while len(mine) >= self._max_per_user:
            oldest = next(iter(mine))
            oldest.superseded = True
            oldest.wake()
        mine[listener] = None
        for room_id in listener.rooms:
            self._by_room.setdefault(room_id, {})[listener] = None
        return listener

    def notify_room(self, room_id: RoomId) -> int:
        """Wake every listener of ``room_id``; return how many were woken."""
        waiting = self._by_room.get(room_id)
        if not waiting:
            return 0
        listeners = list(waiting)
        for listener in listeners:
            listener.wake()
        return len(listeners)

    def notify_user(self, user_id: UserId) -> int:
        waiting = self._by_user.get(user_id)
        if not waiting:
            return 0
        listeners = list(waiting)
        for listener in listeners:
            listener.wake()
        return len(listeners)

    def notify_users(self, user_ids: Iterable[UserId]) -> int:
        return sum(self.notify_user(u) for u in user_ids)

    def close(self) -> None:
        """Wake everyone and refuse to wait from now on (shutdown)."""
        self._closed = True
        for waiting in list(self._by_user.values()):
            for listener in list(waiting):
                listener.superseded = True
                listener.wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def waiting(self, user_id: UserId | None = None) -> int:
        """How many listeners wait (for ``user_id``, or in all)."""
        if user_id is not None:
            return len(self._by_user.get(user_id, ()))
        return sum(len(w) for w in self._by_user.values())

    def rooms_listened(self) -> int:
        return len(self._by_room)

    def _unregister(self, listener: Listener) -> None:
        mine = self._by_user.get(listener.user_id)
        if mine is not None:
            mine.pop(listener, None)
            if not mine:
                del self._by_user[listener.user_id]
        for room_id in listener.rooms:
            waiting = self._by_room.get(room_id)
            if waiting is not None:
                waiting.pop(listener, None)
                if not waiting:
                    del self._by_room[room_id]

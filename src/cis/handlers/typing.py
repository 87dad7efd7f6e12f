"""Typing notifications (Client-Server API §"Typing Notifications"), held in memory only.

Typing is ephemeral: it is not stored, and after a restart nobody is typing. Its stream
positions start from the wall clock in milliseconds at start-up and go up by one per change,
so a position issued after a restart is above any issued before it (see
``cis.handlers.sync_tokens``).

A user typing in a room has an expiry (the client's ``timeout``, at most ``MAX_TIMEOUT_MS``);
``expire_due()`` removes the expired ones, and in a running loop it is scheduled for the next
expiry, so a client that stops sending ``typing: false`` still stops "typing" on time.
Each change wakes the room's long-polls through the notifier. ``TypingChecks`` is the
Client-Server entry: only the user themself, and only in a room they are joined to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from cis.clock import Clock
from cis.handlers.auth import Requester
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.notifier import Notifier
from cis.handlers.room_cache import RoomCache
from cis.ids import RoomId, UserId

MAX_TIMEOUT_MS: Final = 120_000
DEFAULT_TIMEOUT_MS: Final = 30_000


class TypingHandler:
    """Who is typing where, with a position per room for ``/sync``."""

    def __init__(self, clock: Clock, notifier: Notifier) -> None:
        self._clock = clock
        self._notifier = notifier
        self._position = clock.time_ms()
        self._typing: dict[RoomId, dict[UserId, float]] = {}  # user -> monotonic expiry
        self._changed_at: dict[RoomId, int] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def position(self) -> int:
        return self._position

    def set_typing(self, room_id: RoomId, user_id: UserId, typing: bool, timeout_ms: int) -> None:
        """Start (with a timeout) or stop ``user_id`` typing in ``room_id``."""
        users = self._typing.setdefault(room_id, {})
        if typing:
            timeout = min(max(0, timeout_ms), MAX_TIMEOUT_MS) / 1000
            was_typing = user_id in users
            users[user_id] = self._clock.monotonic() + timeout
            if not was_typing:
                self._changed(room_id)
            self._schedule()
        elif users.pop(user_id, None) is not None:
            self._changed(room_id)
        if not users:
            self._typing.pop(room_id, None)

    def _changed(self, room_id: RoomId) -> None:
        self._position += 1
        self._changed_at[room_id] = self._position
        self._notifier.notify_room(room_id)

    def expire_due(self) -> int:
        """Drop every expired entry; return how many were dropped."""
        now = self._clock.monotonic()
        dropped = 0
        for room_id in list(self._typing):
            users = self._typing[room_id]
            expired = [u for u, expiry in users.items() if expiry <= now]
            for user in expired:
                del users[user]
            if expired:
                dropped += len(expired)
                self._changed(room_id)
            if not users:
                del self._typing[room_id]
        self._schedule()
        return dropped

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        expiries = [e for users in self._typing.values() for e in users.values()]
        if expiries:
            delay = max(0.0, min(expiries) - self._clock.monotonic())
            self._timer = loop.call_later(delay + 0.01, self.expire_due)

    def typing_users(self, room_id: RoomId) -> list[UserId]:
        now = self._clock.monotonic()
        return sorted(u for u, e in self._typing.get(room_id, {}).items() if e > now)

    def changed_rooms(self, room_ids: Iterable[RoomId], since: int) -> dict[RoomId, list[UserId]]:
        """For rooms whose typing changed after ``since`` (all of them when ``since`` is
        before this process started), the users typing now."""
        out: dict[RoomId, list[UserId]] = {}
        for room_id in room_ids:
            changed = self._changed_at.get(room_id)
            if changed is not None and changed > since:
                out[room_id] = self.typing_users(room_id)
        return out

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def typing_event(user_ids: Iterable[UserId]) -> Mapping[str, Any]:
    """The ephemeral ``m.typing`` event of a room's ``/sync`` section."""
    return {"type": "m.typing", "content": {"user_ids": list(user_ids)}}


class TypingChecks:
    def __init__(self, typing: TypingHandler, cache: RoomCache) -> None:
        self._typing = typing
        self._cache = cache
        self.on_local: Callable[[RoomId, UserId, bool], None] | None = None
        """Set when the node federates: a local user's typing goes to the room's servers."""

    async def set_typing(
        self, requester: Requester, room_id: str, user_id: str, body: dict[str, Any]
    ) -> None:
        if user_id != requester.user_id:
            raise ApiError(Errcode.FORBIDDEN, "Cannot set another user's typing state")
        snapshot = await self._cache.get(RoomId(room_id)) if room_id.startswith("!") else None
        if snapshot is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown room")
        if snapshot.membership(requester.user_id) != "join":
            raise ApiError(Errcode.FORBIDDEN, "You are not in this room")
        typing = body.get("typing")
        if not isinstance(typing, bool):
            raise ApiError(Errcode.BAD_JSON, "typing must be a boolean")
        timeout = body.get("timeout", DEFAULT_TIMEOUT_MS)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise ApiError(Errcode.BAD_JSON, "timeout must be a non-negative integer")
        self._typing.set_typing(snapshot.room_id, requester.user_id, typing, timeout)
        if self.on_local is not None:
            self.on_local(snapshot.room_id, requester.user_id, typing)

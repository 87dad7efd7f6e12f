"""From "events are indexed" to "the right long-polls wake up".

The Room Store queues each batch's index rows to ``node.db`` (``RoomIndex.submit_index``);
``IndexTap`` sits on that seam and hands the same rows to the ``StreamWatcher``, so nothing
has to be read back. The watcher runs one task: it waits until the position readers may see
moves on (``StreamPositions.wait_beyond``: the events are stored in their room *and* indexed),
takes the rows up to that position, and then:

- records each room's latest position (``latest(room)``), so ``/sync`` skips rooms that did not
  change since a token without reading anything;
- keeps each room's most recent rows (``recent_rows``), so an incremental ``/sync`` that is
  close to the head reads its timeline from memory;
- wakes that room's listeners through the notifier (one wake-up list per room), and the
  *target* of every membership event (an invitee is not in the room yet, a kicked user no
  longer is), and forgets the cached room list of those users;
- records which events a redaction applies to, so they are served redacted.

Waking after the index (not after the room commit) matters: a woken ``/sync`` reads up to the
visible position, so it finds the event it was woken for.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import contextlib
from collections.abc import Sequence
from typing import Final

from cis.handlers.notifier import Notifier
from cis.handlers.room_cache import EventCreator, RoomCache, to_event
from cis.ids import EventId, RoomId, UserId
from cis.log import get_logger
from cis.matrix import Event, redaction_allowed
from cis.storage.client import timeline
from cis.storage.database import Database
from cis.storage.events import EventStatus
from cis.storage.node_store import NodeStore
from cis.storage.rooms.index import IndexRow
from cis.storage.rooms.types import RoomInfo, RoomStatus
from cis.storage.stream import StreamPositions

log = get_logger(__name__)

RECENT_ROWS_PER_ROOM: Final = 128
MAX_MEMBERSHIP_CACHE: Final = 10_000
MAX_REDACTIONS_IN_MEMORY: Final = 10_000


class IndexTap:
    """``RoomIndex`` for the Room Store: ``node.db``'s, plus a copy of every index batch."""

    def __init__(self, inner: NodeStore) -> None:
        self._inner = inner
        self.listener: StreamWatcher | None = None

    async def get_room(self, room_id: RoomId) -> RoomInfo | None:
        return await self._inner.get_room(room_id)

    async def register_room(self, room_id: RoomId, dir_name: str, created_ts: int) -> RoomInfo:
        return await self._inner.register_room(room_id, dir_name, created_ts)

    async def set_room_status(self, room_id: RoomId, status: RoomStatus) -> None:
        await self._inner.set_room_status(room_id, status)

    async def list_rooms(self) -> list[RoomInfo]:
        return await self._inner.list_rooms()

    def submit_index(
        self, entries: Sequence[tuple[RoomId, Sequence[IndexRow]]]
    ) -> concurrent.futures.Future[None]:
        if self.listener is not None:
            for room_id, rows in entries:
                self.listener.on_indexed(room_id, rows)
        return self._inner.submit_index(entries)


class Redactions:
    """Which events were redacted, by what: ``node.db``'s table and the recent ones in memory.

    For an event created since start-up, memory alone answers (every redaction since then went
    through the watcher); older events are looked up in ``node.db``.
    """

    def __init__(self, node_db: Database) -> None:
        self._db = node_db
        self.recent: collections.OrderedDict[EventId, EventId] = collections.OrderedDict()

    def remember(self, pairs: Sequence[tuple[EventId, EventId]]) -> None:
        for target, redaction in pairs:
            self.recent.setdefault(target, redaction)
        while len(self.recent) > MAX_REDACTIONS_IN_MEMORY:
            self.recent.popitem(last=False)

    async def of(
        self, event_ids: Sequence[EventId], known_fresh: set[EventId]
    ) -> dict[EventId, EventId]:
        found = {e: self.recent[e] for e in event_ids if e in self.recent}
        older = [e for e in event_ids if e not in known_fresh and e not in found]
        if older:
            found.update(await self._db.run_read("redactions_of", timeline.redactions_of, older))
        return found


class StreamWatcher:
    def __init__(
        self,
        positions: StreamPositions,
        node_db: Database,
        notifier: Notifier,
        creator: EventCreator,
        redactions: Redactions,
    ) -> None:
        self._positions = positions
        self._db = node_db
        self._notifier = notifier
        self._creator = creator
        self._rooms: RoomCache = creator.cache
        self._redactions = redactions
        self._latest: dict[RoomId, int] = {}
        self._known_from: dict[RoomId, int] = {}
        self._recent: dict[RoomId, collections.deque[timeline.StreamRow]] = {}
        self._memberships: dict[UserId, list[timeline.MembershipRow]] = {}
        self._pending: list[tuple[int, RoomId, IndexRow]] = []
        self._last = positions.current
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def position(self) -> int:
        """How far this watcher has processed the stream."""
        return self._last

    def latest(self, room_id: RoomId) -> int:
        return self._latest.get(room_id, 0)

    async def start(self) -> None:
        self._latest = await self._db.run_read("room_positions", timeline.room_positions)
        self._known_from = dict(self._latest)
        self._last = self._positions.current
        self._task = asyncio.ensure_future(self._run())

    def on_indexed(self, room_id: RoomId, rows: Sequence[IndexRow]) -> None:
        """Rows the Room Store queued for ``node.db`` (visible once their positions are)."""
        for row in rows:
            self._pending.append((row.stream_ordering, room_id, row))

    def recent_rows(
        self, room_id: RoomId, after: int, upto: int, limit: int
    ) -> list[timeline.StreamRow] | None:
        """The room's rows with ``after < position <= upto``, newest first, at most ``limit``;
        ``None`` when memory does not hold all of them (read ``node.db`` then)."""
        if after < self._known_from.get(room_id, 0) or upto > self._last:
            return None
        rows = self._recent.get(room_id)
        if not rows:
            return []
        positions = [r.position for r in rows]
        hi = bisect.bisect_right(positions, upto)
        lo = bisect.bisect_right(positions, after)
        picked = list(rows)[max(lo, hi - limit) : hi]
        picked.reverse()
        return picked

    async def memberships(self, user_id: UserId) -> list[timeline.MembershipRow]:
        """The user's rooms and memberships (cached until a membership event of theirs)."""
        cached = self._memberships.get(user_id)
        if cached is not None:
            return cached
        rows = await self._db.run_read("user_memberships", timeline.user_memberships, user_id)
        if len(self._memberships) > MAX_MEMBERSHIP_CACHE:
            self._memberships.clear()
        self._memberships[user_id] = rows
        return rows

    def memberships_changed(self, users: set[UserId]) -> None:
        """Memberships changed outside the stream's order (federation's state resolution, a
        remote invite): forget the users' cached room lists and wake their long-polls."""
        for user in users:
            self._memberships.pop(user, None)
        self._notifier.notify_users(users)

    async def _run(self) -> None:
        while not self._closed:
            current = await self._positions.wait_beyond(self._last)
            if self._closed or current <= self._last:
                return
            try:
                await self.process(current)
            except Exception:
                log.exception("stream_watch_failed", upto=current)
            self._last = max(self._last, current)

    async def process(self, upto: int) -> None:
        """Handle the indexed rows up to ``upto`` (see the module docstring)."""
        self._pending.sort(key=lambda item: item[0])
        cut = bisect.bisect_right([p for p, _, _ in self._pending], upto)
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        rooms: set[RoomId] = set()
        users: set[UserId] = set()
        redactions: list[tuple[RoomId, EventId]] = []
        for position, room_id, row in ready:
            if row.status is not EventStatus.TIMELINE:
                continue
            if position > self._latest.get(room_id, 0):
                self._latest[room_id] = position
            recent = self._recent.get(room_id)
            if recent is None:
                recent = self._recent[room_id] = collections.deque()
            if len(recent) == RECENT_ROWS_PER_ROOM:
                self._known_from[room_id] = recent.popleft().position
            recent.append(
                timeline.StreamRow(position, row.event_id, row.type, row.sender, row.state_key)
            )
            rooms.add(room_id)
            if row.type == "m.room.member" and row.state_key is not None:
                users.add(UserId(row.state_key))
            elif row.type == "m.room.redaction":
                redactions.append((room_id, row.event_id))
        for user in users:
            self._memberships.pop(user, None)
        for room_id, event_id in redactions:
            with contextlib.suppress(Exception):
                await self._record_redaction(room_id, event_id)
        for room_id in rooms:
            self._notifier.notify_room(room_id)
        self._notifier.notify_users(users)

    async def _event(self, room_id: RoomId, event_id: EventId) -> Event | None:
        recent = self._creator.recent.get(event_id)
        if recent is not None:
            return recent
        store = await self._rooms.manager.get(room_id)
        stored = await store.get_event(event_id) if store is not None else None
        return to_event(stored) if stored is not None else None

    async def _record_redaction(self, room_id: RoomId, redaction_id: EventId) -> None:
        redaction = await self._event(room_id, redaction_id)
        snapshot = await self._rooms.get(room_id)
        if redaction is None or redaction.redacts is None or snapshot is None:
            return
        original = await self._event(room_id, redaction.redacts)
        if original is None:
            return
        if redaction_allowed(snapshot.room_version, redaction, original, snapshot.state):
            pair = [(original.event_id, redaction.event_id)]
            await self._db.run_interaction(
                "record_redactions", timeline.record_redactions_txn, room_id, pair
            )
            self._redactions.remember(pair)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

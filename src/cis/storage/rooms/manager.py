"""``RoomStoreManager``: the node's rooms, a hot-room LRU and the subscriptions.

Invariants:

1. At most ``max_open_rooms`` room databases are open, opening or closing at any time (each
   costs a writer thread and about six file descriptors). A room is *pinned* while a call uses
   it; only unpinned rooms are evicted (least recently used first), and a call that finds every
   slot pinned waits for one. Eviction drains the room's write queue before closing it, and a
   room being closed is not reopened until its close finished (one writer per file, always).
2. Writing events: concurrent callers for one room are merged into one batch, written from
   the loop's next turn: pin the room, allocate stream positions, queue the room transaction
   (no ``await`` between the two, so a room commits in position order); when its COMMIT
   returns, offer the events to subscribers, queue the derived index rows to ``node.db``,
   answer each caller. The positions complete (become visible to readers) once that index
   commit lands. The batch is written whatever happens to its callers, so a cancelled caller
   never leaves positions in flight. A hot room's batch costs no task, and when its writer is
   idle and the file is at ``synchronous=NORMAL`` no thread hand-off either: it is written
   inline (``Database.submit_inline``), so a lone caller pays what its transaction costs.
3. The registry in ``node.db`` is written before a room's files exist (a crash in between
   leaves a registered room with no files, which the next open creates), and archived before
   the folder moves (the next start finishes a move a crash interrupted).
4. Subscriptions live here (``SubscriptionHub``), not in open rooms.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import json
import os
import resource
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

from cis.clock import Clock
from cis.home import Home, room_dir_name
from cis.ids import RoomId
from cis.log import get_logger
from cis.matrix import parse_pdu
from cis.storage.database import Database
from cis.storage.errors import (
    DatabaseClosed,
    InvalidQuery,
    RoomArchived,
    StorageError,
    UnknownRoom,
)
from cis.storage.events import MAX_ID_BYTES, EventStatus, PersistableEvent, StoredEvent
from cis.storage.rooms import schema, txns
from cis.storage.rooms.index import IndexRow, RoomIndex
from cis.storage.rooms.store import RoomStore
from cis.storage.rooms.subscriptions import (
    DEFAULT_MAX_PENDING,
    Subscription,
    SubscriptionClosed,
    SubscriptionHub,
    SubscriptionLagged,
)
from cis.storage.rooms.types import RoomInfo, RoomStatus
from cis.storage.sqlite import Synchronous
from cis.storage.stream import StreamPositions

__all__ = [
    "DEFAULT_ROOM_CACHE_KIB",
    "PduParser",
    "RoomStoreManager",
    "default_max_open_rooms",
    "raise_nofile_limit",
    "validate_room_id",
]

log = get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

PduParser = Callable[[str, dict[str, Any]], PersistableEvent]
"""``parse(room_version, pdu) -> event``; by default the Matrix core's ``parse_pdu``."""

DEFAULT_ROOM_CACHE_KIB: Final = 256
"""Per room connection: 256 rooms x 2 connections stay near 128 MiB at worst."""

FDS_PER_ROOM: Final = 6
"""A writer (db, -wal, -shm) and a reader (db, -wal) connection, and some slack."""

RESERVED_FDS: Final = 64
MERGE_LIMIT: Final = 5000
"""Events of concurrent callers merged into one room transaction, at most."""
INDEX_WINDOW_S: Final = 0.002
"""Under sustained writes, index interactions on ``node.db`` begin at least this far apart,
so successive commits (of one room or several) share one: a position becomes visible to
``/sync`` at most this much later, and only while writes keep coming."""
INLINE_MAX_EVENTS: Final = 16
"""Larger batches are always written on the room's writer thread: an inline write blocks the
event loop for its transaction (a few hundred microseconds for a few events)."""
META_FILE: Final = "meta.json"
EVENTS_FILE: Final = "events.db"


def raise_nofile_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit where allowed; return the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # macOS refuses more than kern.maxfilesperproc
        return soft
    return target


def default_max_open_rooms(soft_nofile: int) -> int:
    """``min(256, (soft RLIMIT_NOFILE - 64) / 6)``, at least 1."""
    return max(1, min(256, (soft_nofile - RESERVED_FDS) // FDS_PER_ROOM))


def validate_room_id(room_id: str) -> RoomId:
    """A Matrix room id: ``!opaque:server``, at most 255 bytes, no NUL."""
    if (
        not isinstance(room_id, str)
        or not room_id.startswith("!")
        or ":" not in room_id[2:]
        or "\x00" in room_id
        or len(room_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES
    ):
        shown = room_id[:80] if isinstance(room_id, str) else type(room_id).__name__
        raise InvalidQuery(f"invalid room id {shown!r} (expected !opaque:server, <= 255 bytes)")
    return RoomId(room_id)


@dataclass(slots=True)
class _OpenRoom:
    room_id: RoomId
    db: Database
    pins: int = 0


@dataclass(slots=True)
class _WriteBatch:
    """Events of concurrent callers for one room, written in one transaction."""

    items: list[txns.PendingEvent] = field(default_factory=list)
    waiters: list[tuple[int, int, asyncio.Future[int]]] = field(default_factory=list)


@dataclass(slots=True)
class _Counters:
    opened: int = 0
    evicted: int = 0
    index_failures: int = 0


class RoomStoreManager:
    """Every room of a node. Create with the node's ``RoomIndex`` and ``StreamPositions``."""

    def __init__(
        self,
        home: Home,
        index: RoomIndex,
        positions: StreamPositions,
        *,
        clock: Clock,
        max_open_rooms: int | None = None,
        synchronous: Synchronous = Synchronous.NORMAL,
        cache_size_kib: int = DEFAULT_ROOM_CACHE_KIB,
        read_executor: concurrent.futures.Executor | None = None,
        pdu_parser: PduParser | None = None,
        max_pending_per_subscription: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if max_open_rooms is None:
            max_open_rooms = default_max_open_rooms(raise_nofile_limit())
        if max_open_rooms < 1:
            raise ValueError("max_open_rooms must be at least 1")
        self.home = home
        self.clock = clock
        self.max_open_rooms = max_open_rooms
        self.synchronous = Synchronous(synchronous)
        self.cache_size_kib = cache_size_kib
        self.pdu_parser: PduParser = pdu_parser or parse_pdu
        self.positions = positions
        self.subscriptions = SubscriptionHub()
        self.counters = _Counters()
        self._index = index
        self._read_executor = read_executor
        self._max_pending = max_pending_per_subscription
        self._open: OrderedDict[RoomId, _OpenRoom] = OrderedDict()
        self._opening: dict[RoomId, asyncio.Task[_OpenRoom]] = {}
        self._closing: dict[RoomId, asyncio.Task[None]] = {}
        self._slot_waiters: list[asyncio.Future[None]] = []
        self._active: set[RoomId] = set()
        self._archived: set[RoomId] = set()
        self._archiving: set[RoomId] = set()
        self._batches: dict[RoomId, _WriteBatch] = {}
        self._writes_pending = 0  # batches created and not yet answered
        self._writes_idle = asyncio.Event()
        self._writes_idle.set()
        self._index_queue: list[tuple[RoomId, list[IndexRow], range]] = []
        self._index_inflight: concurrent.futures.Future[None] | None = None
        self._index_timer: asyncio.TimerHandle | None = None
        self._index_started = float("-inf")  # loop time the last index interaction began
        self._index_idle = asyncio.Event()
        self._index_idle.set()
        self._closed = False

    # ------------------------------------------------------------------ public API

    @property
    def open_rooms(self) -> int:
        """Rooms whose database is open, opening or closing (bounded by ``max_open_rooms``)."""
        return len(self._open) + len(self._opening) + len(self._closing)

    async def get_or_create(self, room_id: str) -> RoomStore:
        """The room's store, registering it and creating its files on first use."""
        rid = validate_room_id(room_id)
        self._check_usable(rid)
        if rid not in self._active:
            info = await self._index.get_room(rid)
            if info is None or info.status is RoomStatus.MISSING:
                info = await self._index.register_room(
                    rid, room_dir_name(rid), self.clock.time_ms()
                )
            if info.status is RoomStatus.ARCHIVED:
                self._archived.add(rid)
                raise RoomArchived(f"room {rid} is archived")
            async with self._pinned(rid):
                pass  # creates the folder, meta.json and events.db
            self._active.add(rid)
        return RoomStore(self, rid)

    async def get(self, room_id: str) -> RoomStore | None:
        """The store of an active room the node holds, else ``None`` (nothing is created)."""
        rid = validate_room_id(room_id)
        if rid in self._active:
            return RoomStore(self, rid)
        if rid in self._archived:
            return None
        info = await self._index.get_room(rid)
        if info is None or info.status is not RoomStatus.ACTIVE:
            return None
        self._active.add(rid)
        return RoomStore(self, rid)

    async def list_rooms(self) -> list[RoomInfo]:
        rooms = await self._index.list_rooms()
        return [
            RoomInfo(
                room_id=r.room_id,
                dir_name=r.dir_name,
                status=r.status,
                created_ts=r.created_ts,
                indexed_upto=r.indexed_upto,
                open=r.room_id in self._open,
            )
            for r in rooms
        ]

    async def close_room(self, room_id: str) -> None:
        """Close the room's database (draining its writes); it reopens on next use."""
        rid = validate_room_id(room_id)
        await self._close_when_unpinned(rid)

    async def archive_room(self, room_id: str) -> None:
        """Close, checkpoint and move the room to ``rooms/archived/``; it is then read-only."""
        rid = validate_room_id(room_id)
        info = await self._index.get_room(rid)
        if info is None:
            raise UnknownRoom(f"unknown room {rid}")
        if info.status is RoomStatus.ARCHIVED:
            return
        self._archiving.add(rid)
        try:
            await self._close_when_unpinned(rid)
            await self._index.set_room_status(rid, RoomStatus.ARCHIVED)
            self._active.discard(rid)
            self._archived.add(rid)
            await self.run_blocking(move_to_archive, self.home, rid)
        finally:
            self._archiving.discard(rid)
        self.subscriptions.end_room(rid, "room archived")
        log.info("room_archived", room_id=rid)

    async def subscribe(
        self,
        room_id: str,
        *,
        after: int | None = None,
        statuses: Iterable[EventStatus] = (EventStatus.TIMELINE,),
        max_pending: int | None = None,
    ) -> Subscription:
        """Subscribe to the room's events above stream position ``after`` (default: now).

        When events above ``after`` are already stored, the first ``get`` raises
        ``SubscriptionLagged`` so the subscriber reads them from the store first.
        """
        store = await self.get(room_id)
        if store is None:
            raise UnknownRoom(f"unknown room {room_id}")
        wanted = tuple(EventStatus(s) for s in statuses)
        # Register first, then look at what is stored: an event committed after this line is
        # offered to the subscription; one committed before it is found by the read below.
        sub = self.subscriptions.add(
            store.room_id, after or 0, wanted, max_pending or self._max_pending
        )
        async with self._pinned(store.room_id) as db:
            top = await db.run_read("max_position", txns.max_position)
        if after is None:
            sub.advance(top)
        elif top > after:
            sub.mark_lagging()
        return sub

    async def follow(
        self,
        room_id: str,
        *,
        after: int | None = None,
        statuses: Iterable[EventStatus] = (EventStatus.TIMELINE,),
        max_pending: int | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Every event of the room above ``after``, in order, re-reading whenever it lags.

        Ends when the room is archived or the manager closes.
        """
        wanted = tuple(EventStatus(s) for s in statuses)
        sub = await self.subscribe(room_id, after=after, statuses=wanted, max_pending=max_pending)
        store = RoomStore(self, sub.room_id)
        try:
            while True:
                try:
                    event = await sub.get()
                except SubscriptionLagged as lag:
                    position = lag.last_delivered
                    while True:
                        batch = await store.events_after(position, 200, wanted)
                        for event in batch:
                            yield event
                            position = event.stream_ordering
                        if len(batch) < 200:
                            break
                    sub.advance(position)
                    continue
                except SubscriptionClosed:
                    return
                yield event
        finally:
            sub.close()

    async def run_blocking(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking file work off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        """Finish queued writes and their index rows, then close every room (checkpointed)."""
        if self._closed:
            return
        self._closed = True
        await self._writes_idle.wait()
        if self._index_timer is not None:  # no need to wait out the window
            self._index_timer.cancel()
            self._index_timer = None
            if self._index_inflight is None:
                self._flush_index()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await self._index_idle.wait()
        for task in list(self._opening.values()):
            with contextlib.suppress(Exception):
                await task
        rooms = list(self._open.values())
        self._open.clear()
        for room in rooms:
            self._start_close(room)
        if self._closing:
            await asyncio.gather(*list(self._closing.values()), return_exceptions=True)
        self.subscriptions.end_all("node stopping")
        log.info("rooms_closed", rooms=len(rooms))

    # ------------------------------------------------------------------ writing events

    async def _persist(self, room_id: RoomId, items: Sequence[txns.PendingEvent]) -> int:
        """Store ``items``; return how many were new, once their room transaction committed.

        Concurrent calls for one room are merged into one transaction: the batch is written
        from the loop's next turn, so every caller of this turn joins it.
        """
        self._check_usable(room_id)
        loop = asyncio.get_running_loop()
        batch = self._batches.get(room_id)
        if batch is None or len(batch.items) >= MERGE_LIMIT:
            batch = _WriteBatch()
            self._batches[room_id] = batch
            self._writes_started()
            loop.call_soon(self._start_write, room_id, batch)
        waiter: asyncio.Future[int] = loop.create_future()
        batch.waiters.append((len(batch.items), len(items), waiter))
        batch.items.extend(items)
        # A cancelled caller cancels only its waiter: the batch is written regardless.
        return await waiter

    def _start_write(self, room_id: RoomId, batch: _WriteBatch) -> None:
        """Write one merged batch: pin, allocate, queue the transaction (no ``await`` between
        allocating and queuing, so a room commits in position order).

        A hot room needs no ``await`` at all: a small batch is written inline when the room's
        writer is idle and its file is at ``synchronous=NORMAL`` (``Database.submit_inline``),
        else it goes to the writer thread; ``_written`` finishes it once the COMMIT returned.
        A room that is not open is opened first, in a task (``_write_cold``).
        """
        room = self._open.get(room_id)
        if room is None:
            task = asyncio.ensure_future(self._write_cold(room_id, batch))
            task.add_done_callback(lambda _task: self._writes_finished())
            return
        try:
            self._check_usable(room_id, accepted=True)
        except Exception as exc:
            self._take_batch(room_id, batch)
            self._fail_batch(batch, exc)
            self._writes_finished()
            return
        self._take_batch(room_id, batch)
        self._open.move_to_end(room_id)
        room.pins += 1
        positions = self.positions.allocate(len(batch.items))
        submit = room.db.submit_inline if len(batch.items) <= INLINE_MAX_EVENTS else room.db.submit
        try:
            future = submit("store_events", txns.store_events_txn, positions.start, batch.items)
        except Exception as exc:
            self.positions.complete(positions)
            self._unpin(room)
            self._fail_batch(batch, exc)
            self._writes_finished()
            return
        if future.done():  # written inline: the room's writer was idle
            self._written(room, batch, positions, future)
            return
        loop = asyncio.get_running_loop()

        def committed(fut: concurrent.futures.Future[list[int]]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the node is stopping
                loop.call_soon_threadsafe(self._written, room, batch, positions, fut)

        future.add_done_callback(committed)

    def _written(
        self,
        room: _OpenRoom,
        batch: _WriteBatch,
        positions: range,
        future: concurrent.futures.Future[list[int]],
    ) -> None:
        self._unpin(room)
        try:
            error = future.exception()
        except concurrent.futures.CancelledError:
            error = DatabaseClosed(f"the write to room {room.room_id} was cancelled")
        if error is not None:
            self.positions.complete(positions)
            self._fail_batch(batch, error)
        else:
            self._committed(room.room_id, batch, positions, future.result())
        self._writes_finished()

    async def _write_cold(self, room_id: RoomId, batch: _WriteBatch) -> None:
        """``_start_write`` for a room that must be opened first (its own task, so a
        cancelled caller never leaves positions in flight)."""
        try:
            async with self._pinned(room_id, accepted=True) as db:
                # Callers that arrived while the room was being pinned joined this batch.
                self._take_batch(room_id, batch)
                positions = self.positions.allocate(len(batch.items))
                try:
                    future = db.submit(
                        "store_events", txns.store_events_txn, positions.start, batch.items
                    )
                    fresh = await asyncio.wrap_future(future)
                except BaseException:
                    self.positions.complete(positions)
                    raise
        except BaseException as exc:
            self._take_batch(room_id, batch)
            self._fail_batch(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._committed(room_id, batch, positions, fresh)

    def _take_batch(self, room_id: RoomId, batch: _WriteBatch) -> None:
        """Close ``batch`` to new callers (later ones start the next batch)."""
        if self._batches.get(room_id) is batch:
            del self._batches[room_id]

    @staticmethod
    def _fail_batch(batch: _WriteBatch, exc: BaseException) -> None:
        for _offset, _count, waiter in batch.waiters:
            if waiter.done():
                continue
            if isinstance(exc, Exception):
                waiter.set_exception(exc)
            else:
                waiter.cancel()

    def _committed(
        self, room_id: RoomId, batch: _WriteBatch, positions: range, fresh: list[int]
    ) -> None:
        """The batch's COMMIT returned: offer it to subscribers before anything else can run
        (position order), queue its index rows, answer the callers."""
        items = batch.items
        start = positions.start
        if self.subscriptions.count(room_id):
            stored = [txns.stored_event(room_id, items[o], start + o) for o in fresh]
            self.subscriptions.notify(room_id, stored)
        self._index_events(room_id, [txns.index_row(items[o], start + o) for o in fresh], positions)
        for offset, count, waiter in batch.waiters:
            new = bisect.bisect_left(fresh, offset + count) - bisect.bisect_left(fresh, offset)
            if not waiter.done():
                waiter.set_result(new)

    def _writes_started(self) -> None:
        self._writes_pending += 1
        self._writes_idle.clear()

    def _writes_finished(self) -> None:
        self._writes_pending -= 1
        if not self._writes_pending:
            self._writes_idle.set()

    def _unpin(self, room: _OpenRoom) -> None:
        room.pins -= 1
        if room.pins == 0:
            self._wake_slot_waiters()

    def _index_events(self, room_id: RoomId, rows: list[IndexRow], positions: range) -> None:
        """Queue index rows for ``node.db``; one index interaction is in flight at a time,
        and they start at least ``INDEX_WINDOW_S`` apart.

        Rows that arrive meanwhile are written together in the next, so under sustained
        writes the index costs one ``node.db`` interaction per window, not per event (a lone
        write is indexed at once), and lands in the order the rooms committed.
        """
        if not rows:
            self.positions.complete(positions)
            return
        self._index_queue.append((room_id, rows, positions))
        self._index_idle.clear()
        self._schedule_index()

    def _schedule_index(self) -> None:
        if self._index_inflight is not None or self._index_timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._index_started + INDEX_WINDOW_S - loop.time()
        if wait > 0:
            self._index_timer = loop.call_later(wait, self._index_window_ended)
        else:
            self._flush_index()

    def _index_window_ended(self) -> None:
        self._index_timer = None
        if self._index_queue:
            self._schedule_index()

    def _flush_index(self) -> None:
        entries, self._index_queue = self._index_queue, []
        self._index_started = asyncio.get_running_loop().time()
        try:
            future = self._index.submit_index([(room_id, rows) for room_id, rows, _ in entries])
        except Exception:
            self._indexed(entries, None)
            return
        if future.done():  # written inline: node.db's writer was idle
            self._indexed(entries, future)
            return
        self._index_inflight = future
        self._index_idle.clear()
        loop = asyncio.get_running_loop()

        def done(fut: concurrent.futures.Future[None]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the node is stopping
                loop.call_soon_threadsafe(self._indexed, entries, fut)

        future.add_done_callback(done)

    def _indexed(
        self,
        entries: list[tuple[RoomId, list[IndexRow], range]],
        future: concurrent.futures.Future[None] | None,
    ) -> None:
        self._index_inflight = None
        failed = future is None or future.cancelled() or future.exception() is not None
        for room_id, _rows, positions in entries:
            if failed:
                self._index_failed(room_id, positions)
            else:
                self.positions.complete(positions)
        if self._index_queue:
            self._schedule_index()
        else:
            self._index_idle.set()

    def _index_failed(self, room_id: RoomId, positions: range) -> None:
        # The room file holds the events; node.db's index does not. The next start re-indexes
        # (the clean-shutdown marker is not written while ``index_failures`` is non-zero).
        self.counters.index_failures += 1
        log.error("index_failed", room_id=room_id, first=positions.start, last=positions.stop - 1)
        self.positions.complete(positions)

    # ------------------------------------------------------------------ the LRU

    def _check_usable(self, room_id: RoomId, *, accepted: bool = False) -> None:
        """Refuse a closed manager or an archived room; ``accepted``: a write accepted before
        ``close`` began, which ``close`` waits for."""
        if self._closed and not accepted:
            raise DatabaseClosed("the room store is closed")
        if room_id in self._archived or room_id in self._archiving:
            raise RoomArchived(f"room {room_id} is archived")

    @contextlib.asynccontextmanager
    async def _pinned(self, room_id: RoomId, *, accepted: bool = False) -> AsyncIterator[Database]:
        room = await self._acquire(room_id, accepted=accepted)
        try:
            yield room.db
        finally:
            self._unpin(room)

    async def _acquire(self, room_id: RoomId, *, accepted: bool = False) -> _OpenRoom:
        while True:
            self._check_usable(room_id, accepted=accepted)
            closing = self._closing.get(room_id)
            if closing is not None:
                await asyncio.shield(closing)
                continue
            room = self._open.get(room_id)
            if room is not None:
                self._open.move_to_end(room_id)
                room.pins += 1
                return room
            opening = self._opening.get(room_id)
            if opening is not None:
                await asyncio.shield(opening)
                continue
            if self.open_rooms >= self.max_open_rooms:
                victim = next((r for r in self._open.values() if r.pins == 0), None)
                if victim is not None:
                    del self._open[victim.room_id]
                    self.counters.evicted += 1
                    log.debug("room_evicted", room_id=victim.room_id)
                    self._start_close(victim)
                await self._wait_for_slot()
                continue
            task = asyncio.ensure_future(self._open_room(room_id))
            self._opening[room_id] = task
            try:
                return await asyncio.shield(task)  # opened with our pin already taken
            except asyncio.CancelledError:
                task.add_done_callback(self._unpin_opened)
                raise

    def _unpin_opened(self, task: asyncio.Task[_OpenRoom]) -> None:
        if not task.cancelled() and task.exception() is None:
            room = task.result()
            room.pins -= 1
            if room.pins == 0:
                self._wake_slot_waiters()

    async def _open_room(self, room_id: RoomId) -> _OpenRoom:
        try:
            db = await self.run_blocking(
                open_room_database,
                self.home,
                room_id,
                self.clock.time_ms(),
                synchronous=self.synchronous,
                cache_size_kib=self.cache_size_kib,
                read_executor=self._read_executor,
            )
            room = _OpenRoom(room_id, db, pins=1)
            self._open[room_id] = room
            self.counters.opened += 1
            return room
        finally:
            del self._opening[room_id]
            self._wake_slot_waiters()

    def _start_close(self, room: _OpenRoom) -> None:
        async def close() -> None:
            try:
                await room.db.aclose()
            except Exception:
                log.exception("room_close_failed", room_id=room.room_id)
            finally:
                del self._closing[room.room_id]
                self._wake_slot_waiters()

        self._closing[room.room_id] = asyncio.ensure_future(close())

    async def _close_when_unpinned(self, room_id: RoomId) -> None:
        while True:
            closing = self._closing.get(room_id)
            if closing is not None:
                await asyncio.shield(closing)
                continue
            opening = self._opening.get(room_id)
            if opening is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(opening)
                continue
            room = self._open.get(room_id)
            if room is None:
                return
            if room.pins:
                await self._wait_for_slot()
                continue
            del self._open[room_id]
            self._start_close(room)

    async def _wait_for_slot(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._slot_waiters.remove(waiter)

    def _wake_slot_waiters(self) -> None:
        waiters, self._slot_waiters = self._slot_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


# ---------------------------------------------------------------------- files


def write_meta(folder: Path, room_id: RoomId, created_ts: int) -> None:
    """``meta.json``: which room the folder holds (the folder name is a hash)."""
    meta = folder / META_FILE
    if meta.exists():
        return
    partial = folder / f".{META_FILE}.partial"
    partial.write_text(
        json.dumps({"room_id": room_id, "created_ts": created_ts}, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    os.replace(partial, meta)


def read_meta(folder: Path) -> Mapping[str, Any]:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {folder / META_FILE}: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("room_id"), str):
        raise StorageError(f"{folder / META_FILE} does not name a room")
    return meta


def open_room_database(
    home: Home,
    room_id: RoomId,
    now_ms: int,
    *,
    synchronous: Synchronous,
    cache_size_kib: int,
    read_executor: concurrent.futures.Executor | None,
) -> Database:
    """Open (creating on first use) the room's ``events.db``. Blocking."""
    folder = home.room_dir(room_id)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_meta(folder, room_id, now_ms)
    db = Database.open(
        folder / EVENTS_FILE,
        kind=schema.KIND,
        migrations=schema.MIGRATIONS,
        synchronous=synchronous,
        cache_size_kib=cache_size_kib,
        max_readers=1,
        read_executor=read_executor,
        inline_writes=synchronous is Synchronous.NORMAL,
    )
    try:
        db.run_interaction_blocking("init_room", txns.init_room_txn, room_id, now_ms)
    except BaseException:
        db.close(checkpoint=False)
        raise
    return db


def move_to_archive(home: Home, room_id: RoomId) -> None:
    """Move the closed room's folder (with any ``-wal``/``-shm``) to ``rooms/archived/``."""
    source = home.room_dir(room_id)
    target = home.archived_rooms / source.name
    if not source.exists():
        return  # already moved (or never created)
    home.archived_rooms.mkdir(mode=0o700, parents=True, exist_ok=True)
    if target.exists():
        raise StorageError(f"cannot archive {room_id}: {target} already exists")
    os.replace(source, target)

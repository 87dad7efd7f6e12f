"""``RoomStore``: one room's events (seed 001), as an async API.

A ``RoomStore`` is a light handle (room id + manager). Each call pins the room's open database
in the manager's hot-room LRU for its duration, opening it if it was evicted, so a handle stays
valid however long it is kept. Writes go through the room's writer thread (group commit);
reads run on reader connections in the manager's read pool.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Concatenate, Final, ParamSpec, TypeVar

from cis.ids import EventId, RoomId
from cis.log import get_logger
from cis.storage.errors import ImportFailed, InvalidEvent, InvalidQuery
from cis.storage.events import EventStatus, PersistableEvent, StoredEvent, validate_event
from cis.storage.rooms import txns
from cis.storage.rooms.types import (
    MAX_LIMIT,
    Direction,
    EventFilter,
    Page,
    Pagination,
    RoomStats,
    TxnKey,
)

if TYPE_CHECKING:
    from cis.storage.rooms.manager import PduParser, RoomStoreManager

log = get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

IMPORT_CHUNK: Final = 1000
SHORT_READ_EVENTS: Final = 16
"""A read by key of at most this many ids is a short read (on the event loop's thread when
a reader connection is idle: ``Database.run_read_short``)."""
_MAX_PEER_CHARS: Final = 255


class RoomStore:
    """The events of one room. Obtain it from ``RoomStoreManager.get_or_create``/``get``."""

    __slots__ = ("_manager", "room_id")

    def __init__(self, manager: RoomStoreManager, room_id: RoomId) -> None:
        self._manager = manager
        self.room_id = room_id

    def __repr__(self) -> str:
        return f"RoomStore({self.room_id!r})"

    @property
    def path(self) -> Path:
        """The room's folder, ``rooms/<first 32 hex digits of sha256(room_id)>/``."""
        return self._manager.home.room_dir(self.room_id)

    # ------------------------------------------------------------------ writes

    async def store_event(
        self,
        event: PersistableEvent,
        *,
        status: EventStatus = EventStatus.TIMELINE,
        txn: TxnKey | None = None,
    ) -> EventId:
        """Store ``event`` (once: storing an id again keeps the first copy); return its id.

        With ``txn``, the ``(user, device, txn_id) → event_id`` row commits with the event.
        Returns after the room's COMMIT.
        """
        validate_event(event, self.room_id)
        status = _status(status)
        item = txns.PendingEvent(event, status, self._manager.clock.time_ms(), txn)
        await self._manager._persist(self.room_id, [item])
        return event.event_id

    async def store_events(
        self, events: Sequence[PersistableEvent], *, status: EventStatus = EventStatus.TIMELINE
    ) -> list[EventId]:
        """Store ``events`` in one transaction; return their ids in the order given."""
        for event in events:
            validate_event(event, self.room_id)
        status = _status(status)
        now = self._manager.clock.time_ms()
        items = [txns.PendingEvent(event, status, now) for event in events]
        if items:
            await self._manager._persist(self.room_id, items)
        return [event.event_id for event in events]

    async def store_classified(self, items: Sequence[tuple[PersistableEvent, EventStatus]]) -> int:
        """Store events each with its own status (federation's receipt: timeline, outlier,
        rejected or soft-failed) in one transaction, in the order given; return how many were
        new."""
        now = self._manager.clock.time_ms()
        pending = []
        for event, status in items:
            validate_event(event, self.room_id)
            pending.append(txns.PendingEvent(event, _status(status), now))
        if not pending:
            return 0
        return await self._manager._persist(self.room_id, pending)

    async def run_read(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run another storage module's read function on this room's file (one read
        transaction): for the tables that module adds to rooms by migration."""
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_read(name, fn, *args, **kwargs)

    async def run_read_by_ids(
        self,
        ids: int,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``run_read`` for a read by key of ``ids`` ids: a short read
        (``Database.run_read_short``) up to ``SHORT_READ_EVENTS`` of them."""
        async with self._manager._pinned(self.room_id) as db:
            read = db.run_read_short if ids <= SHORT_READ_EVENTS else db.run_read
            return await read(name, fn, *args, **kwargs)

    async def run_interaction(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run another storage module's transaction on this room's writer (see ``run_read``)."""
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_interaction(name, fn, *args, **kwargs)

    async def set_sync_position(self, peer: str, position: int) -> int:
        """Record that ``peer`` acknowledged this room up to ``position``; return the stored one.

        Positions never move back: a lower one is ignored.
        """
        if not isinstance(peer, str) or not peer or len(peer) > _MAX_PEER_CHARS:
            raise InvalidQuery(f"peer must be a string of 1-{_MAX_PEER_CHARS} characters")
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise InvalidQuery("position must be a non-negative integer")
        now = self._manager.clock.time_ms()
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_interaction(
                "set_sync_position", txns.set_sync_position_txn, peer, position, now
            )

    # ------------------------------------------------------------------ reads

    async def query_events(
        self, flt: EventFilter | None = None, page: Pagination | None = None
    ) -> Page:
        """Events matching ``flt``, ordered by stream position, one page at a time."""
        flt = flt if flt is not None else EventFilter()
        page = page if page is not None else Pagination()
        if not isinstance(flt, EventFilter) or not isinstance(page, Pagination):
            raise InvalidQuery("query_events takes an EventFilter and a Pagination")
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_read("query_events", txns.query_events, self.room_id, flt, page)

    async def get_events_since(
        self, since_event_id: EventId | None, limit: int = 100
    ) -> list[StoredEvent]:
        """Timeline events after ``since_event_id`` (from the start when ``None``), oldest first.

        An id the room does not hold is ``UnknownEvent``, never a silent restart from zero.
        """
        page = await self.query_events(EventFilter(), Pagination(limit=limit, after=since_event_id))
        return list(page.events)

    async def get_latest_events(self, n: int) -> list[StoredEvent]:
        """The ``n`` newest timeline events, oldest first."""
        page = await self.query_events(
            EventFilter(), Pagination(limit=n, direction=Direction.BACKWARDS)
        )
        return list(reversed(page.events))

    async def events_after(
        self,
        position: int,
        limit: int = 100,
        statuses: Iterable[EventStatus] = (EventStatus.TIMELINE,),
    ) -> list[StoredEvent]:
        """Events above stream ``position``, oldest first (how a lagging subscriber re-reads)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}")
        wanted = tuple(EventStatus(s) for s in statuses)
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_read(
                "events_after", txns.events_after_position, self.room_id, position, limit, wanted
            )

    async def events_upto(
        self,
        position: int,
        limit: int = 100,
        statuses: Iterable[EventStatus] = (EventStatus.TIMELINE,),
    ) -> list[StoredEvent]:
        """Events at or below stream ``position``, newest first (``events_after`` backwards)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}")
        wanted = tuple(EventStatus(s) for s in statuses)
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_read(
                "events_upto", txns.events_upto_position, self.room_id, position, limit, wanted
            )

    async def get_event(self, event_id: EventId) -> StoredEvent | None:
        found = await self.get_events([event_id])
        return found.get(event_id)

    async def get_events(self, event_ids: Sequence[EventId]) -> dict[EventId, StoredEvent]:
        """The held events among ``event_ids`` (any status), by id."""
        return await self.run_read_by_ids(
            len(event_ids), "get_events", txns.get_events, self.room_id, event_ids
        )

    async def forward_extremities(self) -> list[EventId]:
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_read_short("forward_extremities", txns.forward_extremities)

    async def current_state(self) -> dict[tuple[str, str], EventId]:
        """The room's state map, ``(type, state_key) → event_id``."""
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_read("current_state", txns.current_state)

    async def state_event(self, event_type: str, state_key: str) -> StoredEvent | None:
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_read_short(
                "state_event", txns.state_event, self.room_id, event_type, state_key
            )

    async def event_id_for_txn(self, key: TxnKey) -> EventId | None:
        """The event a client's ``(user, device, txn_id)`` already produced, if any."""
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_read_short("event_id_for_txn", txns.event_id_for_txn, key)

    async def txn_ids_since(self, since_ts: int, limit: int) -> list[tuple[TxnKey, EventId]]:
        """Client txn ids recorded since ``since_ts`` (ms), newest first (a send cache)."""
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_read("txn_ids_since", txns.txn_ids_since, since_ts, limit)

    async def delete_txn_ids_before(self, before_ts: int) -> int:
        """Forget client txn ids older than ``before_ts`` (ms); return how many."""
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_interaction(
                "delete_txn_ids", txns.delete_txn_ids_before_txn, before_ts
            )

    async def sync_positions(self) -> dict[str, int]:
        """Per peer, the highest stream position of this room it acknowledged."""
        async with self._manager._pinned(self.room_id) as db:
            return await db.run_read("sync_positions", txns.sync_positions)

    async def stats(self) -> RoomStats:
        async with self._manager._pinned(self.room_id) as db:
            raw = await db.run_read("stats", txns.stats)
            size = sum(_size(db.path.with_name(db.path.name + suffix)) for suffix in ("", "-wal"))
        return RoomStats(
            total_events=raw.total,
            earliest_ts=raw.earliest_ts,
            latest_ts=raw.latest_ts,
            max_stream_ordering=raw.max_position,
            event_type_counts=raw.type_counts,
            status_counts=raw.status_counts,
            forward_extremities=raw.extremities,
            db_size_bytes=size,
        )

    # ------------------------------------------------------------------ JSONL

    async def export_to_jsonl(self, path: Path) -> int:
        """Write every event (all statuses) to ``path`` as JSONL; return how many.

        Each line is the canonical JSON (UTF-8) of the wire PDU plus a ``_cis`` object
        (``stream_ordering``, ``received_ts``, ``status``, ``room_version``). The file is
        written beside ``path`` and renamed into place, so it is whole or absent.
        """
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        async with self._manager._pinned(self.room_id) as db:
            try:
                count = await db.run_read("export_jsonl", txns.export_jsonl, partial)
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
        log.info("room_exported", room_id=self.room_id, events=count, path=str(target))
        return count

    async def import_from_jsonl(self, path: Path, *, parse: PduParser | None = None) -> int:
        """Store the events of a JSONL export; return how many were new.

        Every line is re-parsed (``parse(room_version, pdu)``, by default the Matrix core's
        ``parse_pdu``, which recomputes the event id) and must belong to this room. The whole
        file is checked before anything is stored: a malformed line fails with its line number
        and nothing from the file is stored. Importing a file twice stores each event once.
        """
        parser = parse if parse is not None else self._manager.pdu_parser
        source = Path(path)
        count = await self._manager.run_blocking(_check_jsonl, source, self.room_id, parser)
        stored = 0
        reader = _ChunkReader(source, self.room_id, parser)
        try:
            while items := await self._manager.run_blocking(reader.next_chunk):
                stored += await self._manager._persist(self.room_id, items)
        finally:
            reader.close()
        if reader.lines != count:
            raise ImportFailed(f"{source.name} changed while it was imported")
        log.info("room_imported", room_id=self.room_id, lines=count, stored=stored)
        return stored


def _status(status: EventStatus | str) -> EventStatus:
    try:
        return EventStatus(status)
    except ValueError as exc:
        raise InvalidEvent(f"unknown event status {status!r}") from exc


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------------- JSONL parsing


def _parse_line(
    raw: bytes, lineno: int, source: Path, room_id: RoomId, parse: PduParser
) -> txns.PendingEvent:
    where = f"{source.name}:{lineno}"
    try:
        obj: Any = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImportFailed(f"{where}: not a JSON line ({exc})") from exc
    if not isinstance(obj, dict):
        raise ImportFailed(f"{where}: not a JSON object")
    meta = obj.pop("_cis", None)
    if not isinstance(meta, dict):
        raise ImportFailed(f"{where}: missing the _cis object")
    room_version = meta.get("room_version")
    received_ts = meta.get("received_ts")
    if not isinstance(room_version, str):
        raise ImportFailed(f"{where}: _cis.room_version must be a string")
    if not isinstance(received_ts, int) or isinstance(received_ts, bool) or received_ts < 0:
        raise ImportFailed(f"{where}: _cis.received_ts must be a non-negative integer")
    try:
        status = EventStatus(str(meta.get("status")))
    except ValueError as exc:
        raise ImportFailed(f"{where}: _cis.status is not a known status") from exc
    try:
        event = parse(room_version, obj)
    except Exception as exc:
        raise ImportFailed(f"{where}: invalid PDU ({exc})") from exc
    if event.room_id != room_id:
        raise ImportFailed(f"{where}: event of room {event.room_id}, not {room_id}")
    try:
        validate_event(event, room_id)
    except InvalidEvent as exc:
        raise ImportFailed(f"{where}: {exc}") from exc
    return txns.PendingEvent(event, status, received_ts)


def _lines(source: Path) -> Iterable[tuple[int, bytes]]:
    try:
        with source.open("rb") as handle:
            yield from enumerate(handle, start=1)
    except OSError as exc:
        raise ImportFailed(f"cannot read {source}: {exc.strerror or exc}") from exc


def _check_jsonl(source: Path, room_id: RoomId, parse: PduParser) -> int:
    """Parse every line once; return how many events the file holds."""
    count = 0
    for lineno, raw in _lines(source):
        if not raw.strip():
            raise ImportFailed(f"{source.name}:{lineno}: empty line")
        _parse_line(raw, lineno, source, room_id, parse)
        count += 1
    return count


class _ChunkReader:
    """Reads the (already checked) file again, ``IMPORT_CHUNK`` events at a time."""

    def __init__(self, source: Path, room_id: RoomId, parse: PduParser) -> None:
        self._source = source
        self._room_id = room_id
        self._parse = parse
        self._handle: BinaryIO | None = None
        self.lines = 0

    def next_chunk(self) -> list[txns.PendingEvent]:
        if self._handle is None:
            try:
                self._handle = self._source.open("rb")
            except OSError as exc:
                raise ImportFailed(f"cannot read {self._source}: {exc.strerror or exc}") from exc
        items: list[txns.PendingEvent] = []
        for raw in self._handle:
            self.lines += 1
            items.append(_parse_line(raw, self.lines, self._source, self._room_id, self._parse))
            if len(items) == IMPORT_CHUNK:
                break
        return items

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


__all__ = ["IMPORT_CHUNK", "RoomStore"]

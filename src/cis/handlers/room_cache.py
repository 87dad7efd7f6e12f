"""Each room's current state in memory, and event creation serialised per room.

Invariants:

1. A ``RoomSnapshot`` holds a room's current state (full events, as the auth rules read them),
   its forward extremities with their depths, and a lock. It is loaded from the Room Store on
   first use and kept up to date by every event created here, so a send needs no database
   read.
2. Event creation for one room is one critical section under the room's lock: lay the event out
   on the extremities (``prepare_pdu``), hash and sign it (``build_event``), authorise it
   against the snapshot's state (``check_auth``), hand it to the Room Store, and apply it to the
   snapshot. Concurrent senders therefore never fork the room's graph: each event cites the one
   created before it.
3. The lock is released once the event is *queued* in the Room Store, not once it committed:
   the store writes a room's events in the order they were queued, so the next event may be
   built on this one while it commits (group commit across senders). If the commit fails, the
   snapshot is dropped and reloaded from the store on next use, and the caller gets the error.
4. A local event that fails the auth rules is never stored: ``AuthError`` names the rule.
5. ``(user, device, txn_id)`` makes a send idempotent: a retry returns the first event, whether
   it is still being created, was created since start-up, or is only in the room's file (the
   mapping commits with the event, so it survives a crash).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import nacl.signing

from cis.clock import Clock
from cis.ids import DeviceId, EventId, RoomId, UserId
from cis.log import get_logger
from cis.matrix import Event, build_event, check_auth, parse_pdu, prepare_pdu
from cis.matrix.events import StateKey
from cis.matrix.power_levels import PowerLevels, effective_power_levels
from cis.matrix.room_versions import get_room_version
from cis.storage.events import StoredEvent
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.rooms.store import RoomStore
from cis.storage.rooms.types import TxnKey

log = get_logger(__name__)

DEFAULT_MAX_ROOMS: Final = 1024
MAX_RECENT_TXNS: Final = 50_000
TXN_RETENTION_MS: Final = 24 * 3600 * 1000
"""How long a client txn id makes a send idempotent (as other servers keep them)."""
MAX_TXNS_PER_ROOM: Final = 20_000
"""Txn ids of one room kept in memory; past that, a send not found in memory asks the file."""
CLEANUP_EVERY: Final = 10_000
RECENT_EVENTS: Final = 512
"""Events created here kept in memory for ``/sync`` (most deliveries read nothing else)."""


TxnTriple = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Extremity:
    event_id: EventId
    depth: int


class RoomSnapshot:
    """A room's current state and extremities (see the module docstring)."""

    __slots__ = (
        "created",
        "extremities",
        "lock",
        "room_id",
        "room_version",
        "state",
        "txns",
        "txns_complete",
        "valid",
    )

    def __init__(
        self,
        room_id: RoomId,
        room_version: str,
        state: dict[StateKey, Event],
        extremities: dict[EventId, int],
        txns: dict[TxnTriple, EventId] | None = None,
        *,
        txns_complete: bool = True,
    ) -> None:
        self.room_id = room_id
        self.room_version = room_version
        self.state = state
        self.extremities = extremities
        self.lock = asyncio.Lock()
        self.valid = True
        # (user, device, txn id) -> event id of the room's sends in the retention window;
        # complete unless it overflowed (then a miss is checked against the room's file).
        self.txns: dict[TxnTriple, EventId] = txns if txns is not None else {}
        self.txns_complete = txns_complete
        self.created = 0

    def remember_txn(self, key: TxnTriple, event_id: EventId) -> None:
        self.txns[key] = event_id
        if len(self.txns) > MAX_TXNS_PER_ROOM:
            del self.txns[next(iter(self.txns))]
            self.txns_complete = False

    def membership(self, user_id: str) -> str | None:
        event = self.state.get(("m.room.member", user_id))
        return event.membership if event is not None else None

    def levels(self) -> PowerLevels:
        return effective_power_levels(
            get_room_version(self.room_version),
            self.state.get(("m.room.create", "")),
            self.state.get(("m.room.power_levels", "")),
        )

    def members(self, membership: str = "join") -> list[UserId]:
        return sorted(
            UserId(key)
            for (kind, key), event in self.state.items()
            if kind == "m.room.member" and event.membership == membership
        )

    def content(self, event_type: str, state_key: str = "") -> Mapping[str, Any] | None:
        event = self.state.get((event_type, state_key))
        return event.content if event is not None else None

    def apply(self, event: Event) -> None:
        """The state and extremities once ``event`` is added (it cites the extremities)."""
        if event.state_key is not None:
            self.state[(event.type, event.state_key)] = event
        for prev in event.prev_events:
            self.extremities.pop(prev, None)
        self.extremities[event.event_id] = event.depth

    def extremity_list(self) -> list[Extremity]:
        return [Extremity(e, d) for e, d in self.extremities.items()]

    def replace(self, state: dict[StateKey, Event], extremities: dict[EventId, int]) -> None:
        """The state and extremities after events arrived from elsewhere (federation's
        receipt resolves them; callers hold ``lock``)."""
        self.state = state
        self.extremities = extremities


def to_event(stored: StoredEvent) -> Event:
    """A stored event as the Matrix core's frozen ``Event`` (re-parsed from its bytes)."""
    return parse_pdu(stored.room_version, stored.pdu())


async def load_snapshot(store: RoomStore, now_ms: int) -> RoomSnapshot | None:
    """Read a room's state, extremities and recent txn ids from its file; ``None`` if it holds
    no events. Txn ids past the retention window are deleted on the way."""
    state_ids = await store.current_state()
    create_id = state_ids.get(("m.room.create", ""))
    if create_id is None:
        return None
    extremity_ids = await store.forward_extremities()
    found = await store.get_events([*state_ids.values(), *extremity_ids])
    create = found.get(create_id)
    if create is None:
        return None
    state = {key: to_event(found[eid]) for key, eid in state_ids.items() if eid in found}
    extremities = {eid: found[eid].depth for eid in extremity_ids if eid in found}
    horizon = now_ms - TXN_RETENTION_MS
    await store.delete_txn_ids_before(horizon)
    recent = await store.txn_ids_since(horizon, MAX_TXNS_PER_ROOM + 1)
    txns: dict[TxnTriple, EventId] = {
        (k.user_id, k.device_id, k.txn_id): eid for k, eid in reversed(recent)
    }
    return RoomSnapshot(
        store.room_id,
        create.room_version,
        state,
        extremities,
        txns,
        txns_complete=len(recent) <= MAX_TXNS_PER_ROOM,
    )


@dataclass(frozen=True, slots=True)
class Signer:
    server_name: str
    key_id: str
    signing_key: nacl.signing.SigningKey


class RoomCache:
    """Snapshots of recently used rooms, least recently used evicted first."""

    def __init__(
        self, manager: RoomStoreManager, clock: Clock, *, max_rooms: int = DEFAULT_MAX_ROOMS
    ) -> None:
        self._manager = manager
        self._clock = clock
        self._max_rooms = max_rooms
        self._rooms: OrderedDict[RoomId, RoomSnapshot] = OrderedDict()
        self._loading: dict[RoomId, asyncio.Future[RoomSnapshot | None]] = {}

    @property
    def manager(self) -> RoomStoreManager:
        return self._manager

    async def get(self, room_id: RoomId) -> RoomSnapshot | None:
        """The room's snapshot, or ``None`` if this node holds no such room."""
        snapshot = self._rooms.get(room_id)
        if snapshot is not None:
            self._rooms.move_to_end(room_id)
            return snapshot
        loading = self._loading.get(room_id)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[RoomSnapshot | None] = asyncio.get_running_loop().create_future()
        self._loading[room_id] = future
        try:
            store = await self._manager.get(room_id)
            snapshot = (
                await load_snapshot(store, self._clock.time_ms()) if store is not None else None
            )
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters re-raise it
            raise
        finally:
            self._loading.pop(room_id, None)
        if snapshot is not None:
            self.put(snapshot)
        future.set_result(snapshot)
        return snapshot

    def put(self, snapshot: RoomSnapshot) -> None:
        self._rooms[snapshot.room_id] = snapshot
        self._rooms.move_to_end(snapshot.room_id)
        while len(self._rooms) > self._max_rooms:
            victim = next((s for s in self._rooms.values() if not s.lock.locked()), None)
            if victim is None:
                break
            del self._rooms[victim.room_id]

    def invalidate(self, room_id: RoomId) -> None:
        snapshot = self._rooms.pop(room_id, None)
        if snapshot is not None:
            snapshot.valid = False

    def cached(self, room_id: RoomId) -> RoomSnapshot | None:
        return self._rooms.get(room_id)


@dataclass(frozen=True, slots=True)
class Draft:
    """An event to create: what the client (or the handler) asks for."""

    sender: UserId
    type: str
    content: Mapping[str, Any]
    state_key: str | None = None
    redacts: EventId | None = None


Check = Callable[[RoomSnapshot], None]
"""A handler's own precondition, run under the room's lock before the event is built."""

Countersign = Callable[[Event], Awaitable[Event]]
"""A last step under the room's lock, after the event is built and authorised and before it is
stored: returns the same event (same id) with more signatures (a remote invitee's server
signs its invite, Server-Server API "Inviting to a room"); raising refuses the event."""

EventListener = Callable[[Event], None]
"""Told of every event created here once it is stored (federation sends it on)."""


class EventCreator:
    """Builds, signs, authorises and stores local events, one room at a time."""

    def __init__(self, cache: RoomCache, signer: Signer, clock: Clock) -> None:
        self._cache = cache
        self._signer = signer
        self._clock = clock
        self._inflight: dict[tuple[RoomId, str, str, str], asyncio.Future[EventId]] = {}
        # event id -> (device, txn id) of recent sends: unsigned.transaction_id in /sync.
        self.sent_by: OrderedDict[EventId, tuple[DeviceId, str]] = OrderedDict()
        # Events created here, newest last: /sync serves fresh events without a read.
        self.recent: OrderedDict[EventId, Event] = OrderedDict()
        self._listeners: list[EventListener] = []

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def _created(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event_listener_failed", event_id=event.event_id)

    @property
    def cache(self) -> RoomCache:
        return self._cache

    def _build(self, snapshot: RoomSnapshot, draft: Draft) -> Event:
        pdu = prepare_pdu(
            snapshot.room_version,
            room_id=snapshot.room_id,
            sender=draft.sender,
            event_type=draft.type,
            content=draft.content,
            origin_server_ts=self._clock.time_ms(),
            forward_extremities=snapshot.extremity_list(),
            current_state={k: e.event_id for k, e in snapshot.state.items()},
            state_key=draft.state_key,
            redacts=draft.redacts,
        )
        event = build_event(
            snapshot.room_version,
            pdu,
            self._signer.server_name,
            self._signer.key_id,
            self._signer.signing_key,
        )
        check_auth(snapshot.room_version, event, snapshot.state)
        return event

    async def create(
        self,
        room_id: RoomId,
        draft: Draft,
        *,
        txn: TxnKey | None = None,
        check: Check | None = None,
        countersign: Countersign | None = None,
    ) -> tuple[Event | None, EventId]:
        """Create and store one event; return it (``None`` when a txn retry found the first
        one) and its id. Raises ``LookupError`` for an unknown room, ``AuthError``/
        ``InvalidPdu`` for a refused event, and whatever ``check`` or ``countersign``
        raise."""
        if txn is None:
            event = await self._create(room_id, draft, None, check, countersign)
            return event, event.event_id
        snapshot = await self._cache.get(room_id)
        if snapshot is None:
            raise LookupError(room_id)
        triple = (txn.user_id, txn.device_id, txn.txn_id)
        known = snapshot.txns.get(triple)
        if known is not None:
            return None, known
        key = (room_id, *triple)
        pending = self._inflight.get(key)
        if pending is not None:
            return None, await asyncio.shield(pending)
        future: asyncio.Future[EventId] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            if not snapshot.txns_complete:
                store = RoomStore(self._cache.manager, room_id)
                stored_id = await store.event_id_for_txn(txn)
                if stored_id is not None:
                    snapshot.remember_txn(triple, stored_id)
                    future.set_result(stored_id)
                    return None, stored_id
            event = await self._create(room_id, draft, txn, check, countersign)
            self.sent_by[event.event_id] = (txn.device_id, txn.txn_id)
            while len(self.sent_by) > MAX_RECENT_TXNS:
                self.sent_by.popitem(last=False)
            future.set_result(event.event_id)
            return event, event.event_id
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
                future.exception()  # retrieved: concurrent retries re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)

    def _keep(self, event: Event) -> None:
        self.recent[event.event_id] = event
        while len(self.recent) > RECENT_EVENTS:
            self.recent.popitem(last=False)

    async def _create(
        self,
        room_id: RoomId,
        draft: Draft,
        txn: TxnKey | None,
        check: Check | None,
        countersign: Countersign | None = None,
    ) -> Event:
        while True:
            snapshot = await self._cache.get(room_id)
            if snapshot is None:
                raise LookupError(room_id)
            async with snapshot.lock:
                if not snapshot.valid:
                    continue  # dropped while we waited: reload
                if check is not None:
                    check(snapshot)
                event = self._build(snapshot, draft)
                if countersign is not None:
                    signed = await countersign(event)
                    if signed.event_id != event.event_id:
                        raise ValueError("a countersignature changed the event")
                    event = signed
                store = RoomStore(self._cache.manager, room_id)
                # The task's first step queues the event in the store. The loop runs steps in
                # the order they were scheduled, and the next creation in this room can only
                # resume (and schedule its own) after this lock is released: so events are
                # queued in the order they were built.
                stored = asyncio.ensure_future(store.store_event(event, txn=txn))
                snapshot.apply(event)
                if txn is not None:
                    snapshot.remember_txn((txn.user_id, txn.device_id, txn.txn_id), event.event_id)
                self._keep(event)
            try:
                await stored
            except BaseException:
                self._cache.invalidate(room_id)
                self.recent.pop(event.event_id, None)
                log.error("event_store_failed", room_id=room_id, event_id=event.event_id)
                raise
            snapshot.created += 1
            self._created(event)
            if snapshot.created % CLEANUP_EVERY == 0:
                await store.delete_txn_ids_before(self._clock.time_ms() - TXN_RETENTION_MS)
            return event

    async def create_room(
        self, room_id: RoomId, room_version: str, drafts: Iterable[Draft]
    ) -> list[Event]:
        """The events of a new room, each built on the previous and authorised against the
        state so far, stored in one room transaction."""
        snapshot = RoomSnapshot(room_id, room_version, {}, {})
        events: list[Event] = []
        for draft in drafts:
            event = self._build(snapshot, draft)
            snapshot.apply(event)
            events.append(event)
        store = await self._cache.manager.get_or_create(room_id)
        await store.store_events(events)
        self._cache.put(snapshot)
        for event in events:
            self._keep(event)
        for event in events:
            self._created(event)
        return events

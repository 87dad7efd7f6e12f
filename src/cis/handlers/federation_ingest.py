"""Receipt of events from other servers (Server-Server API, "Checks performed on receipt of
a PDU"), in the spec's order:

1. malformed (``parse_pdu``) or not signed by the sender's server under a key this node
   believes → dropped (nothing stored); an event whose server's key is not known yet waits
   for it, bounded in time (``key_wait``) and number (``max_waiting``), then is dropped (not
   rejected: catch-up brings it again);
2. content hash mismatch → replaced by its redacted form (same id);
3. refused by the auth rules against its own auth events, or against the state before it
   (``resolve_state`` over the states after its ``prev_events``) → stored ``rejected``: never
   shown, never a ``prev_event``, never part of a state;
4. refused only against the room's *current* state (when it does not build on every forward
   extremity) → stored ``soft_failed``: valid, kept, not a forward extremity;
5. otherwise ``timeline``.

A room's current state is ``resolve_state`` over the states after each forward extremity;
after each batch it is written to the Room Store (``room_state``), the room's snapshot (the
state local events are authorised against) and the membership index. Events whose sender's
server is at trust level 0 are neither stored nor marked (they arrive once the level rises),
nor is anything that depends on them.

Batches are processed oldest first (topological order), under the room's lock, so local
event creation and receipt never interleave inside a room. CPU-heavy steps (signature checks
of big batches, state resolution) run in an executor; the per-event loop yields to the event
loop regularly so tunnels keep answering pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any, Final, Protocol

import nacl.signing

from cis.handlers.federation_auth import AuthChecker
from cis.handlers.federation_keys import KeyRing
from cis.handlers.federation_state import EventCache, StateGroups, StateMap, topological
from cis.handlers.room_cache import RoomCache, RoomSnapshot
from cis.ids import EventId, RoomId, UserId
from cis.log import get_logger
from cis.matrix import (
    AuthError,
    Event,
    InvalidPdu,
    MissingEvents,
    SignatureError,
    UnsupportedRoomVersion,
    auth_types_for_event,
    canonical_json,
    check_auth_events_selection,
)
from cis.matrix.errors import InvalidJson
from cis.matrix.events import StateKey, freeze, parse_received_pdu
from cis.matrix.signing import verify_signed_bytes
from cis.storage import federation as fed_store
from cis.storage.database import Database
from cis.storage.events import EventStatus
from cis.storage.rooms import state_groups as sg
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.rooms.store import RoomStore

log = get_logger(__name__)

EXECUTOR_BATCH: Final = 32
"""Batches at least this big are checked (parse, hash, signature) off the event loop."""
POOL_BATCH: Final = 256
"""Batches at least this big are checked in worker processes (``Ingest.workers``), in
``POOL_CHUNK``-sized pieces: the checks hold the GIL, so threads do not add cores."""
POOL_CHUNK: Final = 250
YIELD_EVERY: Final = 128


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


class KeyLookup(Protocol):
    """The origin keys receipt checks signatures with (``KeyRing``, ``KeySnapshot``)."""

    def key_ids(self, server_name: str) -> list[str]: ...
    def verify_key(self, server_name: str, key_id: str) -> nacl.signing.VerifyKey | None: ...


class KeySnapshot:
    """The keys of a ``KeyLookup`` for some servers, as plain bytes: what is sent to the
    worker processes (a ``KeyRing`` holds a database and waiters)."""

    def __init__(self, keys: Mapping[str, Mapping[str, bytes]]) -> None:
        self.keys = {server: dict(ids) for server, ids in keys.items()}
        self._verify: dict[tuple[str, str], nacl.signing.VerifyKey] = {}

    @classmethod
    def of(cls, lookup: KeyLookup, servers: Iterable[str]) -> KeySnapshot:
        keys: dict[str, dict[str, bytes]] = {}
        for server in servers:
            for key_id in lookup.key_ids(server):
                verify_key = lookup.verify_key(server, key_id)
                if verify_key is not None:
                    keys.setdefault(server, {})[key_id] = bytes(verify_key)
        return cls(keys)

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeySnapshot, (self.keys,))

    def key_ids(self, server_name: str) -> list[str]:
        return list(self.keys.get(server_name, {}))

    def verify_key(self, server_name: str, key_id: str) -> nacl.signing.VerifyKey | None:
        found = self._verify.get((server_name, key_id))
        if found is None:
            public = self.keys.get(server_name, {}).get(key_id)
            if public is None:
                return None
            found = self._verify[(server_name, key_id)] = nacl.signing.VerifyKey(public)
        return found


@dataclass(frozen=True, slots=True)
class Checked:
    """An event that passed steps 1 and 2 (``redacted`` when its hash did not match)."""

    event: Event
    redacted: bool


@dataclass(frozen=True, slots=True)
class KeyMissing:
    server_name: str
    raw: bytes | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class IngestResult:
    statuses: dict[EventId, EventStatus]
    skipped: list[EventId]
    """Not stored: a missing ancestor or auth event, or a sender at trust level 0."""
    missing: list[EventId] = field(default_factory=list)
    """``prev_events`` of the events given that this node does not hold and that were not
    among them: what a caller fetches before giving the skipped events again."""


def check_pdu(
    room_version: str, raw: bytes | Mapping[str, Any], keys: KeyLookup
) -> Checked | KeyMissing | None:
    """Steps 1 and 2 for one PDU; ``None`` when it is dropped."""
    try:
        data = raw if isinstance(raw, bytes | str) else canonical_json.encode(dict(raw))
        received = parse_received_pdu(room_version, data)
    except (InvalidJson, InvalidPdu, UnsupportedRoomVersion, TypeError, ValueError):
        return None
    event = received.event
    server = server_of(event.sender)
    signatures = event.signatures.get(server) or {}
    known = keys.key_ids(server)
    if not known:
        return KeyMissing(server, raw)
    key_id = next((k for k in known if k in signatures), None)
    verify_key = keys.verify_key(server, key_id) if key_id is not None else None
    signature = signatures.get(key_id) if key_id is not None else None
    if verify_key is None or not isinstance(signature, str):
        return None
    try:
        verify_signed_bytes(received.signed_bytes, signature, verify_key)
    except SignatureError:
        return None
    if not received.content_hash_ok:
        return Checked(event.redacted(), True)
    return Checked(event, False)


class Ingest:
    def __init__(
        self,
        *,
        cache: RoomCache,
        events: EventCache,
        groups: StateGroups,
        keys: KeyRing,
        server_level: Callable[[str], int],
        node_db: Database,
        on_memberships: Callable[[RoomId, set[UserId]], None],
        executor: Executor | None = None,
        key_wait: float = 30.0,
        max_waiting: int = 1000,
        workers: int | None = None,
    ) -> None:
        self._cache = cache
        self._manager: RoomStoreManager = cache.manager
        self.events = events
        self.groups = groups
        self._keys = keys
        self._server_level = server_level
        self._db = node_db
        self._on_memberships = on_memberships
        self._executor = executor
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        """Worker processes for big batches; 1 or fewer checks them in a thread instead."""
        self._pool: ProcessPoolExecutor | None = None
        self.key_wait = key_wait
        self.max_waiting = max_waiting
        self._waiting = 0
        self._locks: dict[RoomId, asyncio.Lock] = {}
        self.auth = AuthChecker()
        self.counters: dict[str, int] = {
            "dropped": 0,
            "redacted": 0,
            "rejected": 0,
            "soft_failed": 0,
            "timeline": 0,
            "skipped": 0,
            "key_waits": 0,
        }

    def _worker_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: this process has SQLite writer threads and an event loop.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self._pool

    def prepare_workers(self) -> None:
        """Start the worker processes now, for a catch-up about to need them: spawning one
        (a fresh interpreter importing this package) takes about a second, which the first
        page of history would otherwise wait for."""
        if self.workers > 1:
            pool = self._worker_pool()
            for _ in range(self.workers):
                pool.submit(os.getpid)  # each submission starts a worker while none is idle

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def notify_memberships(self, room_id: RoomId, users: set[UserId]) -> None:
        """Tell ``/sync`` that these users' memberships in ``room_id`` changed."""
        with contextlib.suppress(Exception):
            self._on_memberships(room_id, users)

    def room_lock(self, room_id: RoomId) -> asyncio.Lock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = self._locks[room_id] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------------ steps 1-2

    async def check(
        self, room_version: str, raws: Sequence[bytes | Mapping[str, Any]]
    ) -> list[Event]:
        """Steps 1 and 2 for a batch; returns the events kept, in the order given."""
        loop = asyncio.get_running_loop()
        results: list[Checked | KeyMissing | None]
        if len(raws) >= POOL_BATCH and self.workers > 1:
            keys = KeySnapshot.of(self._keys, [s.server_name for s in self._keys.servers()])
            pool = self._worker_pool()
            chunks = [list(raws[i : i + POOL_CHUNK]) for i in range(0, len(raws), POOL_CHUNK)]
            parts = await asyncio.gather(
                *(loop.run_in_executor(pool, _check_in_worker, room_version, c, keys)
                  for c in chunks)
            )  # fmt: skip
            results = [_from_worker(r) for part in parts for r in part]
        elif len(raws) >= EXECUTOR_BATCH:
            results = await loop.run_in_executor(
                self._executor, _check_all, room_version, list(raws), self._keys
            )
        else:
            results = _check_all(room_version, raws, self._keys)
        out: list[Event] = []
        for first in results:
            result = (
                await self._wait_for_key(room_version, first)
                if isinstance(first, KeyMissing)
                else first
            )
            if result is None:
                self.counters["dropped"] += 1
                continue
            if result.redacted:
                self.counters["redacted"] += 1
                log.info("event_hash_mismatch", event_id=result.event.event_id)
            out.append(result.event)
        return out

    async def _wait_for_key(self, room_version: str, missing: KeyMissing) -> Checked | None:
        if self._waiting >= self.max_waiting:
            log.info("event_key_unknown", server=missing.server_name, waiting=self._waiting)
            return None
        self._waiting += 1
        self.counters["key_waits"] += 1
        try:
            known = await self._keys.wait_for(missing.server_name, self.key_wait)
        finally:
            self._waiting -= 1
        if not known:
            log.info("event_key_unknown", server=missing.server_name, waited_s=self.key_wait)
            return None
        result = check_pdu(room_version, missing.raw, self._keys)
        return result if isinstance(result, Checked) else None

    # ------------------------------------------------------------------ steps 3-5

    async def held(self, room_id: RoomId, event_ids: Iterable[str]) -> dict[EventId, str]:
        ids = list(dict.fromkeys(event_ids))
        if not ids or await self._manager.get(room_id) is None:
            return {}
        return await RoomStore(self._manager, room_id).run_read("held_ids", sg.held_ids, ids)

    async def process(
        self, room_id: RoomId, room_version: str, events: Sequence[Event]
    ) -> IngestResult:
        """Steps 3-5 for checked events (any order; ancestors first is found by itself),
        under the room's locks; stores them and updates the room's current state."""
        async with self.room_lock(room_id):
            snapshot = await self._cache.get(room_id)
            if snapshot is None:
                return await self._process(room_id, room_version, events, None)
            async with snapshot.lock:
                if not snapshot.valid:
                    snapshot = await self._cache.get(room_id)
                    if snapshot is None:
                        return await self._process(room_id, room_version, events, None)
                return await self._process(room_id, room_version, events, snapshot)

    async def _process(
        self,
        room_id: RoomId,
        room_version: str,
        events: Sequence[Event],
        snapshot: RoomSnapshot | None,
    ) -> IngestResult:
        unique = {e.event_id: e for e in events if e.room_id == room_id}
        referenced = {r for e in unique.values() for r in (*e.prev_events, *e.auth_events)}
        # One read for what is held and which of the batch a held event builds on.
        held: dict[EventId, str] = {}
        cited: set[EventId] = set()
        if unique and await self._manager.get(room_id) is not None:
            held, cited = await RoomStore(self._manager, room_id).run_read_by_ids(
                len(unique), "held_and_cited", sg.held_and_cited, [*unique, *referenced],
                list(unique),
            )  # fmt: skip
        missing = list(
            dict.fromkeys(
                p for e in unique.values() for p in e.prev_events
                if p not in held and p not in unique
            )
        )  # fmt: skip
        new = topological([e for e in unique.values() if e.event_id not in held])
        if not new:
            return IngestResult({}, [], missing)
        store = await self._manager.get_or_create(room_id)
        groups = self.groups
        prev_held = [p for e in new for p in e.prev_events if p in held]
        prev_groups = await groups.ensure(room_id, room_version, prev_held) if prev_held else {}
        rejected: set[str] = {e for e, status in held.items() if status == "rejected"}
        cited |= {p for e in new for p in e.prev_events}
        if snapshot is not None:
            extremities = set(snapshot.extremities)
        else:
            extremities = set(await store.forward_extremities())
        extremity_groups = await groups.ensure(room_id, room_version, list(extremities))
        batch: dict[EventId, Event] = {}
        after: dict[EventId, int] = dict(prev_groups)
        statuses: dict[EventId, EventStatus] = {}
        skipped: list[EventId] = []
        for index, event in enumerate(new):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            server = server_of(event.sender)
            if self._server_level(server) <= 0:
                skipped.append(event.event_id)
                continue
            if any(p not in after for p in event.prev_events) or (
                not event.prev_events and event.type != "m.room.create"
            ):
                skipped.append(event.event_id)  # an ancestor is missing or was skipped
                continue
            before = await groups.resolve(
                room_id, room_version, [after[p] for p in event.prev_events]
            )
            before_map: StateMap = await groups.state(room_id, before) if before is not None else {}
            status = await self._authorise(
                room_id, room_version, event, before=before_map, batch=batch, rejected=rejected
            )
            if status is None:
                skipped.append(event.event_id)
                continue
            if status is EventStatus.TIMELINE and event.event_id not in cited:
                # It would become a forward extremity: check it against the current state
                # unless it builds on every current extremity (then that state is the one
                # it was just checked against).
                if not extremities <= set(event.prev_events):
                    others = [extremity_groups[x] for x in extremities - set(event.prev_events)
                              if x in extremity_groups]  # fmt: skip
                    current = await groups.resolve(
                        room_id, room_version, [*others, *([before] if before is not None else [])]
                    )
                    current_map = (
                        await groups.state(room_id, current) if current is not None else {}
                    )
                    if not await self._allowed(room_id, room_version, event, current_map, batch):
                        status = EventStatus.SOFT_FAILED
                if status is EventStatus.TIMELINE:
                    extremities -= set(event.prev_events)
                    extremities.add(event.event_id)
            gid = before
            if event.state_key is not None and status is not EventStatus.REJECTED:
                gid = await groups.new_group(
                    room_id, before, {(event.type, event.state_key): event.event_id}
                )
            elif gid is None:
                gid = await groups.new_group(room_id, None, {})
            if status is EventStatus.TIMELINE:
                extremity_groups[event.event_id] = gid
            after[event.event_id] = gid
            groups.remember(room_id, event.event_id, gid)
            statuses[event.event_id] = status
            batch[event.event_id] = event
            self.events.put(event, status)  # later resolutions in this batch may need it
            if status is EventStatus.REJECTED:
                rejected.add(event.event_id)
                log.info("event_rejected", room_id=room_id, event_id=event.event_id)
            self.counters[status.value] += 1
        self.counters["skipped"] += len(skipped)
        if not batch:
            groups.schedule_flush(room_id)
            return IngestResult(statuses, skipped, missing)
        await store.store_classified([(batch[e], statuses[e]) for e in batch])
        groups.schedule_flush(room_id)
        await self._update_current(
            room_id, room_version, store=store, snapshot=snapshot, batch=batch, statuses=statuses
        )
        return IngestResult(statuses, skipped, missing)

    async def _authorise(
        self,
        room_id: RoomId,
        room_version: str,
        event: Event,
        *,
        before: StateMap,
        batch: Mapping[EventId, Event],
        rejected: set[str],
    ) -> EventStatus | None:
        """Step 3: ``timeline`` or ``rejected``; ``None`` when an auth event is missing."""
        cited = await self._events(room_id, event.auth_events, batch)
        try:
            selected = check_auth_events_selection(event, list(cited.values()), rejected=rejected)
            self.auth.check(room_version, event, selected, is_signed_by=self._signed_by(event))
        except MissingEvents:
            return None
        except AuthError as exc:
            log.debug("auth_events_refuse", event_id=event.event_id, rule=exc.rule)
            return EventStatus.REJECTED
        if all(
            before.get(key) == (selected[key].event_id if key in selected else None)
            for key in auth_types_for_event(event)
        ):
            return EventStatus.TIMELINE  # the state before it names the same events: same rules
        if not await self._allowed(room_id, room_version, event, before, batch):
            return EventStatus.REJECTED
        return EventStatus.TIMELINE

    async def _allowed(
        self,
        room_id: RoomId,
        room_version: str,
        event: Event,
        state: StateMap,
        batch: Mapping[EventId, Event],
    ) -> bool:
        keys = [k for k in auth_types_for_event(event) if k in state]
        loaded = await self._events(room_id, [state[k] for k in keys], batch)
        auth_state: dict[StateKey, Event] = {}
        for key in keys:
            found = loaded.get(state[key])
            if found is not None:
                auth_state[key] = found
        try:
            self.auth.check(room_version, event, auth_state, is_signed_by=self._signed_by(event))
        except AuthError as exc:
            log.debug("state_refuses", event_id=event.event_id, rule=exc.rule)
            return False
        return True

    async def _events(
        self, room_id: RoomId, ids: Iterable[str], batch: Mapping[EventId, Event]
    ) -> dict[EventId, Event]:
        out: dict[EventId, Event] = {}
        missing: list[str] = []
        for event_id in ids:
            found = batch.get(EventId(event_id)) or self.events.get(event_id)
            if found is not None:
                out[EventId(event_id)] = found
            else:
                missing.append(event_id)
        if missing:
            out.update(await self.events.load(room_id, missing))
        return out

    def _signed_by(self, event: Event) -> Callable[[str], bool]:
        """Rule 4.2: whether ``event`` carries a valid signature by a server."""
        return functools.partial(self._keys.signed_by, event)

    # ------------------------------------------------------------------ current state

    async def current_state(
        self, room_id: RoomId, room_version: str, extremities: Sequence[str]
    ) -> tuple[int | None, StateMap]:
        groups = await self.groups.ensure(room_id, room_version, list(extremities))
        gid = await self.groups.resolve(room_id, room_version, list(groups.values()))
        state = await self.groups.state(room_id, gid) if gid is not None else {}
        return gid, state

    async def _update_current(
        self,
        room_id: RoomId,
        room_version: str,
        *,
        store: RoomStore,
        snapshot: RoomSnapshot | None,
        batch: Mapping[EventId, Event],
        statuses: Mapping[EventId, EventStatus],
    ) -> None:
        extremity_ids = await store.forward_extremities()
        _gid, state = await self.current_state(room_id, room_version, extremity_ids)
        previous = {k: e.event_id for k, e in snapshot.state.items()} if snapshot else {}
        # Storing a state event moved the store's state row to it (the newest by stream order),
        # whatever resolution says, so only a batch without state events may skip the rewrite.
        stored_state = any(
            e.state_key is not None and statuses[e.event_id] is not EventStatus.REJECTED
            for e in batch.values()
        )
        if snapshot is None or stored_state or state != previous:
            await store.run_interaction("replace_state", sg.replace_state_txn, state)
        loaded = await self.events.load(room_id, [*state.values(), *extremity_ids])
        if snapshot is not None:
            snapshot.state = {k: loaded[e] for k, e in state.items() if e in loaded}
            snapshot.extremities = {e: loaded[e].depth for e in extremity_ids if e in loaded}
        # The membership index: every member key this batch touched or resolution moved.
        touched = {
            e.state_key
            for e in batch.values()
            if e.type == "m.room.member" and e.state_key is not None
            and statuses[e.event_id] is not EventStatus.REJECTED
        }  # fmt: skip
        touched |= {
            key for (kind, key), eid in state.items()
            if kind == "m.room.member" and previous.get((kind, key)) != eid
        }  # fmt: skip
        touched |= {
            key for (kind, key) in previous if kind == "m.room.member" and (kind, key) not in state
        }  # fmt: skip
        if not touched:
            return
        rows: list[tuple[UserId, str | None, EventId | None]] = []
        for user in sorted(touched):
            event_id = state.get(("m.room.member", user))
            member = loaded.get(event_id) if event_id is not None else None
            rows.append((UserId(user), member.membership if member else None, event_id))
        position = max(
            (s.stream_ordering for s in (await store.get_events(list(batch))).values()), default=0
        )
        await self._db.run_interaction(
            "set_memberships", fed_store.set_memberships_txn, room_id, rows, position
        )
        self.notify_memberships(room_id, {UserId(u) for u in touched})


def _check_all(
    room_version: str, raws: Sequence[bytes | Mapping[str, Any]], keys: KeyLookup
) -> list[Checked | KeyMissing | None]:
    return [check_pdu(room_version, raw, keys) for raw in raws]


# Events cross back from the worker processes as their plain fields: pickling an ``Event``
# thaws and refreezes its content, hashes and signatures (most of a worker's time after the
# signature check); these are read again here from the canonical bytes they came from.
_FROZEN_FIELDS: Final = ("content", "hashes", "signatures")
_PLAIN_FIELDS: Final = tuple(f.name for f in fields(Event) if f.name not in _FROZEN_FIELDS)
_FromWorker = tuple[tuple[Any, ...], bool] | KeyMissing | None


def _check_in_worker(
    room_version: str, raws: Sequence[bytes | Mapping[str, Any]], keys: KeyLookup
) -> list[_FromWorker]:
    out: list[_FromWorker] = []
    for result in _check_all(room_version, raws, keys):
        if isinstance(result, Checked):
            plain = tuple(getattr(result.event, name) for name in _PLAIN_FIELDS)
            out.append((plain, result.redacted))
        else:
            out.append(result)
    return out


def _from_worker(result: _FromWorker) -> Checked | KeyMissing | None:
    if not isinstance(result, tuple):
        return result
    plain, redacted = result
    values = dict(zip(_PLAIN_FIELDS, plain, strict=True))
    wire = json.loads(values["canonical_bytes"])
    frozen = {name: freeze(wire[name]) for name in _FROZEN_FIELDS}
    return Checked(Event(**values, **frozen), redacted)

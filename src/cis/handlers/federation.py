"""Rooms across nodes: what rides on the tunnels (docs/federation.md, "Rooms across nodes").

``FederationService`` is what the node wires to its ``TunnelManager``: the ``on_frame``
handler, the listener of peer events, and the hooks the Client-Server handlers call.

Invariants:

1. **Only federated rooms leave the node.** A room federates when its
   ``io.cis.room.federation`` state says ``{"federate": true}`` and its create event does not
   say ``"m.federate": false``. Nothing of another room is sent, served or answered for.
2. **Push, then catch-up as the source of truth.** The origin pushes each new event to the
   servers of the users joined (``federation_sender``). On every tunnel (re)connect and every
   ``catchup_interval`` each side sends its forward extremities for the rooms it shares with
   the peer. The receiver first asks for the history the peer stored after its own
   extremities (``GetHistory`` pages, oldest first, each stored as it comes while the next is
   fetched: ``stream_history``), then fetches whatever it still lacks by walking
   ``prev_events`` back (``GetEvents``, then ``GetMissingEvents`` in batches of up to 1,000)
   until it meets events it holds or the create event, and hands that to receipt
   (``federation_ingest``) oldest first: the walk decides completeness. A
   registered room whose files are gone (a node restored from ``node.db`` alone) is rebuilt
   the same way from any peer that shares it.
3. **Frames never stall a tunnel.** The handler returns at once: pushed PDUs go to a worker
   per room (in arrival order), requests and catch-up run as tasks; a request answered by a
   peer never waits behind that peer's own frames.
4. **Serving respects history visibility.** An event a requesting server's users may not see
   (Client-Server API "History visibility", applied per server) is served in its redacted
   form, so the requester's graph stays complete while the content stays here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cis.clock import Clock
from cis.federation import frames
from cis.federation import wire_pb2 as pb
from cis.federation.errors import FederationError
from cis.federation.handshake import PeerIdentity
from cis.federation.manager import (
    OutboxOverflow,
    PeerEvent,
    PeerOffline,
    PeerOnline,
    TunnelManager,
)
from cis.handlers.federation_ingest import Ingest, server_of
from cis.handlers.federation_keys import KeyRing
from cis.handlers.federation_sender import Outbound
from cis.handlers.federation_state import EventCache, StateGroups, topological
from cis.handlers.federation_trust import NodeTrust
from cis.handlers.room_cache import EventCreator, RoomCache, RoomSnapshot
from cis.handlers.visibility import normalise_visibility
from cis.identity.keys import NodeIdentity
from cis.ids import Did, EventId, RoomId, UserId
from cis.log import get_logger
from cis.matrix import Event
from cis.matrix.redaction import redact
from cis.storage import federation as fed_store
from cis.storage.database import Database
from cis.storage.rooms import history
from cis.storage.rooms.store import RoomStore
from cis.storage.rooms.types import RoomStatus

log = get_logger(__name__)

FEDERATION_STATE: Final = "io.cis.room.federation"
MAX_WALK_ROUNDS: Final = 10_000
FIRST_WALK_LIMIT: Final = 50
PROCESS_CHUNK: Final = 1000
MAX_PENDING_PER_ROOM: Final = 10_000
HISTORY_PAGES_AHEAD: Final = 2
"""Checked ``GetHistory`` pages waiting for receipt while the next is fetched and checked."""
HISTORY_MAX_BYTES: Final = 900 * 1024
"""PDU bytes in one ``GetHistory`` answer: its frame stays under the 1 MiB limit."""
MAX_CONCURRENT_REQUESTS: Final = 16
RTT_PERSIST_INTERVAL: Final = 5.0


class RemoteError(FederationError):
    """A peer answered a request with a Matrix error."""

    def __init__(self, errcode: str, error: str) -> None:
        super().__init__(f"{errcode}: {error}")
        self.errcode = errcode
        self.error = error


def is_federated(snapshot: RoomSnapshot) -> bool:
    create = snapshot.state.get(("m.room.create", ""))
    if create is None or create.content.get("m.federate") is False:
        return False
    content = snapshot.content(FEDERATION_STATE)
    return bool(content is not None and content.get("federate") is True)


def joined_servers(snapshot: RoomSnapshot) -> set[str]:
    return {
        server_of(key)
        for (kind, key), event in snapshot.state.items()
        if kind == "m.room.member" and event.membership == "join"
    }


def member_servers(snapshot: RoomSnapshot) -> set[str]:
    """Servers with any membership in the room's current state (they may ask about it)."""
    return {server_of(key) for (kind, key) in snapshot.state if kind == "m.room.member"}


def expect(response: pb.Response, kind: str) -> Any:
    """The body of ``response``, which must be ``kind``; a Matrix error raises ``RemoteError``."""
    got = response.WhichOneof("kind")
    if got == "error":
        raise RemoteError(response.error.errcode, response.error.error)
    if got != kind:
        raise RemoteError("M_UNKNOWN", f"expected a {kind} response, got {got}")
    return getattr(response, kind)


@dataclass(slots=True)
class _RoomInbox:
    items: list[tuple[Did, bytes]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


RequestHandler = Callable[[PeerIdentity, pb.Request], Awaitable[pb.Response]]


class FederationService:
    def __init__(
        self,
        *,
        identity: NodeIdentity,
        cache: RoomCache,
        creator: EventCreator,
        node_db: Database,
        keys: KeyRing,
        trust: NodeTrust,
        clock: Clock,
        on_memberships: Callable[[RoomId, set[UserId]], None],
        catchup_interval: float = 60.0,
        key_wait: float = 30.0,
    ) -> None:
        self.identity = identity
        self.server_name = identity.server_name
        self.cache = cache
        self.creator = creator
        self._db = node_db
        self.keys = keys
        self.trust = trust
        self._clock = clock
        self.catchup_interval = catchup_interval
        self.history_page = frames.MAX_BATCH
        """Events asked for in one ``GetHistory`` request (tests lower it to get many pages)."""
        self.events = EventCache(cache.manager)
        self.groups = StateGroups(cache.manager, self.events)
        self.ingest = Ingest(
            cache=cache,
            events=self.events,
            groups=self.groups,
            keys=keys,
            server_level=self.server_level,
            node_db=node_db,
            on_memberships=on_memberships,
            key_wait=key_wait,
        )
        self.manager: TunnelManager | None = None
        self.outbound: Outbound | None = None
        self._inboxes: dict[RoomId, _RoomInbox] = {}
        self._catchups: dict[RoomId, asyncio.Task[None]] = {}
        self._catchup_pending: dict[RoomId, dict[Did, list[EventId]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._request_slots: dict[Did, asyncio.Semaphore] = {}
        self._handlers: dict[str, RequestHandler] = {}
        self._edu_handler: Callable[[PeerIdentity, pb.Edu], Awaitable[None]] | None = None
        self._missing_rooms: set[RoomId] = set()
        self._building: dict[RoomId, list[tuple[Did, bytes]]] = {}
        self._periodic: asyncio.Task[None] | None = None
        self._closed = False
        self.register("get_extremities", self._serve_extremities)
        self.register("get_events", self._serve_get_events)
        self.register("get_missing_events", self._serve_missing_events)
        self.register("backfill", self._serve_backfill)
        self.register("get_history", self._serve_history)
        self.register("get_state_ids", self._serve_state_ids)
        self.register("server_keys", self._serve_server_keys)

    # ------------------------------------------------------------------ lifecycle

    def attach(self, manager: TunnelManager) -> None:
        self.manager = manager
        self.outbound = Outbound(manager, on_overflow=self._outbox_overflowed)
        manager.add_listener(self._on_peer_event)
        self.keys.fetch_documents = self._fetch_key_documents
        self.keys.trusted_dids = self.trust.trustees
        self.creator.add_listener(self._on_local_event)
        self.trust.add_listener(self._on_trust_changed)

    async def start(self) -> None:
        await self._db.run_interaction("peers_offline", fed_store.mark_all_peers_offline_txn)
        rooms = await self.cache.manager.list_rooms()
        self._missing_rooms = {r.room_id for r in rooms if r.status is RoomStatus.MISSING}
        if self._missing_rooms:
            log.info("rooms_to_rebuild", rooms=len(self._missing_rooms))
        self._periodic = asyncio.ensure_future(self._run_periodic())

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._periodic, *self._tasks, *self._catchups.values()) if t]
        tasks += [i.task for i in self._inboxes.values() if i.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.outbound is not None:
            await self.outbound.close()
        self.ingest.close()
        await self.groups.flush_all()

    @property
    def node_db(self) -> Database:
        return self._db

    def register(self, kind: str, handler: RequestHandler) -> None:
        """Answer requests of ``kind`` (a ``Request`` oneof field) with ``handler``; what the
        rooms and EDU modules, and other subsystems (skills), plug in."""
        self._handlers[kind] = handler

    def set_edu_handler(self, handler: Callable[[PeerIdentity, pb.Edu], Awaitable[None]]) -> None:
        self._edu_handler = handler

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("federation_task_failed", task=task.get_name(), error=repr(task.exception()))

    # ------------------------------------------------------------------ trust and peers

    def server_level(self, server_name: str) -> int:
        if server_name == self.server_name:
            return 2
        known = self.keys.server(server_name)
        if known is None:
            return self.trust.default
        return self.trust.level(known.did, known.did_key)

    def did_of_server(self, server_name: str) -> Did | None:
        return self.keys.did_of(server_name)

    def online(self, did: Did) -> bool:
        status = self.manager.status(did) if self.manager is not None else None
        return status is not None and status.online

    def online_peers(self) -> list[Did]:
        if self.manager is None:
            return []
        return [s.did for s in self.manager.peers() if s.online]

    async def request(self, did: Did, request: pb.Request, within: float = 30.0) -> pb.Response:
        """``request`` answered by ``did`` within ``within`` seconds (``TimeoutError``)."""
        if self.manager is None:
            raise FederationError("federation is not running")
        async with asyncio.timeout(within):
            return await self.manager.request(did, request)

    def _on_peer_event(self, event: PeerEvent) -> None:
        if isinstance(event, PeerOnline):
            status = event.status
            self.spawn(
                self._peer_online(status.did, status.did_key, status.endpoint), "peer online"
            )
        elif isinstance(event, PeerOffline):
            status = event.status
            self.spawn(
                self._persist_peer(status.did, status.endpoint, False, status.last_seen_ms, None),
                "peer offline",
            )
        elif isinstance(event, OutboxOverflow):
            self._outbox_overflowed(event.did)

    async def _peer_online(self, did: Did, did_key: str, endpoint: str | None) -> None:
        await self.keys.learn(did, did_key, "handshake")
        await self._persist_peer(did, endpoint, True, self._clock.time_ms(), None)
        await self.exchange_extremities(did)
        if self._missing_rooms:
            await self._rebuild_from(did)

    async def _persist_peer(
        self, did: Did, endpoint: str | None, online: bool, seen: int | None, rtt: float | None
    ) -> None:
        known = self.keys.by_did(did)
        node_id = known.node_id if known is not None else did.split(":")[2]
        await self._db.run_interaction(
            "upsert_peer", fed_store.upsert_peer_txn, node_id=node_id, did=did, endpoint=endpoint,
            online=online, last_seen_ms=seen, rtt_ms=round(rtt) if rtt is not None else None,
        )  # fmt: skip

    def _on_trust_changed(self, did: str, level: int) -> None:
        if self.manager is None:
            return
        self.manager.trust_changed(did)
        known = self.keys.by_did(did)
        if level > 0 and known is not None and self.online(known.did):
            self.spawn(self.exchange_extremities(known.did), "catch-up after trust change")

    def _outbox_overflowed(self, did: Did) -> None:
        if self.online(did):
            self.spawn(self.exchange_extremities(did), "catch-up after overflow")

    async def _run_periodic(self) -> None:
        last_exchange = self._clock.monotonic()
        while not self._closed:
            await asyncio.sleep(min(RTT_PERSIST_INTERVAL, self.catchup_interval))
            if self.manager is None:
                continue
            for status in self.manager.peers():
                if status.online:
                    with contextlib.suppress(Exception):
                        await self._persist_peer(
                            status.did, status.endpoint, True, status.last_seen_ms, status.rtt_ms
                        )
            if self._clock.monotonic() - last_exchange >= self.catchup_interval:
                last_exchange = self._clock.monotonic()
                for did in self.online_peers():
                    self.spawn(self.exchange_extremities(did), "periodic catch-up")

    # ------------------------------------------------------------------ rooms

    async def federated_snapshot(self, room_id: RoomId) -> RoomSnapshot | None:
        snapshot = await self.cache.get(room_id)
        return snapshot if snapshot is not None and is_federated(snapshot) else None

    async def shared_rooms(self, server: str) -> list[RoomSnapshot]:
        """Federated rooms where ``server`` has a member (any membership)."""
        out: list[RoomSnapshot] = []
        for info in await self.cache.manager.list_rooms():
            if info.status is not RoomStatus.ACTIVE:
                continue
            snapshot = await self.cache.get(info.room_id)
            if (
                snapshot is not None
                and is_federated(snapshot)
                and server in member_servers(snapshot)
            ):
                out.append(snapshot)
        return out

    # ------------------------------------------------------------------ sending

    def _on_local_event(self, event: Event) -> None:
        snapshot = self.cache.cached(event.room_id)
        if snapshot is None or not is_federated(snapshot):
            return  # a room federated later gets its state groups from the graph (ensure)
        if not self.groups.remember_local(event):
            self.spawn(
                self.groups.ensure(event.room_id, event.room_version, [event.event_id]),
                "state group",
            )
        servers = joined_servers(snapshot)
        if event.type == "m.room.member" and event.state_key is not None:
            servers.add(server_of(event.state_key))
        self.send_pdu(event, servers)

    def send_pdu(self, event: Event, servers: Iterable[str]) -> None:
        if self.outbound is not None:
            for did in self._recipients(servers):
                self.outbound.enqueue_pdu(did, event.canonical_bytes)

    def send_edu(self, servers: Iterable[str], edu: pb.Edu) -> None:
        if self.outbound is not None:
            for did in self._recipients(servers):
                self.outbound.enqueue_edu(did, edu)

    def _recipients(self, servers: Iterable[str]) -> list[Did]:
        """The DIDs of ``servers`` other than this one, skipping those at trust level 0."""
        out = []
        for server in sorted(set(servers)):
            if server == self.server_name or self.server_level(server) <= 0:
                continue
            did = self.did_of_server(server)
            if did is not None:
                out.append(did)
        return out

    # ------------------------------------------------------------------ receiving

    async def on_frame(self, peer: PeerIdentity, frame: pb.Frame) -> None:
        """The tunnel manager's ``on_frame``: dispatch and return at once (invariant 3)."""
        if self._closed:
            return
        kind = frame.WhichOneof("body")
        if kind == "pdus":
            self._receive_pdus(peer.did, list(frame.pdus.pdus))
        elif kind == "extremities":
            self._compare_extremities(peer, frame.extremities)
        elif kind == "request":
            self.spawn(self._serve(peer, frame.request), "serve request")
        elif kind == "edus" and self._edu_handler is not None:
            for edu in frame.edus.edus:
                self.spawn(self._edu_handler(peer, edu), "edu")

    def _receive_pdus(self, origin: Did, pdus: Sequence[bytes]) -> None:
        for raw in pdus:
            room_id = _room_id_of(raw)
            if room_id is None:
                self.ingest.counters["dropped"] += 1
                continue
            building = self._building.get(room_id)
            if building is not None:
                if len(building) < MAX_PENDING_PER_ROOM:
                    building.append((origin, raw))
                continue
            inbox = self._inboxes.get(room_id)
            if inbox is None:
                inbox = self._inboxes[room_id] = _RoomInbox()
            if len(inbox.items) >= MAX_PENDING_PER_ROOM:
                continue  # catch-up brings it
            inbox.items.append((origin, raw))
            if inbox.task is None:
                inbox.task = asyncio.ensure_future(self._drain_inbox(room_id, inbox))

    async def _drain_inbox(self, room_id: RoomId, inbox: _RoomInbox) -> None:
        try:
            while inbox.items and not self._closed:
                items, inbox.items = inbox.items, []
                by_origin: dict[Did, list[bytes]] = {}
                for origin, raw in items:
                    by_origin.setdefault(origin, []).append(raw)
                for origin, raws in by_origin.items():
                    try:
                        await self.receive(room_id, origin, raws)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("receive_failed", room_id=room_id, origin=origin)
        finally:
            inbox.task = None
            if not inbox.items:
                self._inboxes.pop(room_id, None)

    async def receive(self, room_id: RoomId, origin: Did, raws: Sequence[bytes]) -> None:
        """Pushed PDUs of one room: check, fetch missing ancestors from ``origin``, store."""
        snapshot = await self.federated_snapshot(room_id)
        if snapshot is None:
            return
        events = await self.ingest.check(snapshot.room_version, raws)
        if not events:
            return
        await self._ingest_with_ancestors(room_id, snapshot.room_version, origin, events)

    async def _ingest_with_ancestors(
        self, room_id: RoomId, room_version: str, origin: Did, events: list[Event]
    ) -> int:
        """Receipt of ``events`` at once (the common case: they build on held events, and
        receipt's own read finds that out); those that build on events this node lacks are
        skipped there, and go through receipt again with their ancestors, fetched from
        ``origin`` by walking back."""
        given = {e.event_id for e in events}
        stored = 0
        skipped: set[EventId] = set()
        missing: dict[EventId, None] = {}
        ordered = topological(events)
        for start in range(0, len(ordered), PROCESS_CHUNK):
            result = await self.ingest.process(
                room_id, room_version, ordered[start : start + PROCESS_CHUNK]
            )
            stored += len(result.statuses)
            skipped.update(result.skipped)
            missing.update((m, None) for m in result.missing if m not in given)
        waiting = [e for e in events if e.event_id in skipped]
        if not missing or not waiting:
            return stored
        held = await self.ingest.held(room_id, list(missing))
        wanted = [m for m in missing if m not in held]
        fetched = await self.fetch_missing(origin, room_id, room_version, wanted, known=held)
        return stored + await self._process_in_chunks(room_id, room_version, [*fetched, *waiting])

    async def _process_in_chunks(
        self, room_id: RoomId, room_version: str, events: list[Event]
    ) -> int:
        stored = 0
        ordered = topological(events)
        for start in range(0, len(ordered), PROCESS_CHUNK):
            result = await self.ingest.process(
                room_id, room_version, ordered[start : start + PROCESS_CHUNK]
            )
            stored += len(result.statuses)
        return stored

    # ------------------------------------------------------------------ fetching

    async def fetch_missing(
        self,
        did: Did,
        room_id: RoomId,
        room_version: str,
        wanted: Sequence[EventId],
        *,
        known: Mapping[EventId, str] | None = None,
        prefetched: Mapping[EventId, Event] | None = None,
    ) -> list[Event]:
        """``wanted`` and every ancestor of them this node lacks, fetched from ``did`` by
        walking ``prev_events`` back (docstring, invariant 2). Events the peer does not
        have are left out (receipt then skips what depends on them)."""
        fetched: dict[EventId, Event] = {}
        held: set[str] = set(known or {})
        store_exists = await self.cache.manager.get(room_id) is not None
        earliest: list[EventId] = []
        if store_exists:
            earliest = (await RoomStore(self.cache.manager, room_id).forward_extremities())[:20]
        pre = dict(prefetched or {})
        # Missing parent → the fetched events naming it, kept as the walk goes: each round
        # looks only at what it just fetched, not at everything fetched so far.
        waiting: dict[str, list[EventId]] = {}

        def add(events: Sequence[Event]) -> None:
            for event in events:
                fetched[event.event_id] = event
                waiting.pop(event.event_id, None)
            for event in events:
                for p in event.prev_events:
                    if p not in fetched and p not in held:
                        waiting.setdefault(p, []).append(event.event_id)

        todo = [w for w in dict.fromkeys(wanted) if w not in held]
        add([pre.pop(w) for w in todo if w in pre])
        todo = [w for w in todo if w not in fetched]
        for start in range(0, len(todo), frames.MAX_BATCH):
            chunk = todo[start : start + frames.MAX_BATCH]
            response = await self.request(
                did, pb.Request(get_events=pb.GetEvents(room_id=room_id, event_ids=chunk))
            )
            body = expect(response, "events")
            add(await self.ingest.check(room_version, list(body.pdus)))
        limit = FIRST_WALK_LIMIT
        for _round in range(MAX_WALK_ROUNDS):
            taken = [p for p in waiting if p in pre]
            if taken:  # what send_join handed over first; ask the peer only for the rest
                add([pre.pop(EventId(p)) for p in taken])
                continue
            if waiting and store_exists:
                found = await self.ingest.held(room_id, list(waiting))
                held.update(found)
                for event_id in found:
                    waiting.pop(event_id, None)
            if not waiting:
                break
            # The events whose parents are missing are where the walk goes on from.
            latest = list(dict.fromkeys(c for children in waiting.values() for c in children))
            response = await self.request(
                did,
                pb.Request(
                    get_missing_events=pb.GetMissingEvents(
                        room_id=room_id,
                        earliest_events=earliest,
                        latest_events=latest[: frames.MAX_BATCH],
                        limit=limit,
                    )
                ),
            )
            body = expect(response, "events")
            got = await self.ingest.check(room_version, list(body.pdus))
            new = [e for e in got if e.event_id not in fetched]
            if not new:
                log.info("walk_incomplete", room_id=room_id, did=did, missing=len(waiting))
                break
            add(new)
            limit = min(limit * 4, frames.MAX_BATCH)
        return list(fetched.values())

    async def stream_history(self, did: Did, room_id: RoomId, room_version: str) -> int:
        """Store, oldest first, what ``did`` stored after this node's forward extremities
        (``GetHistory`` pages; docs/federation.md §4), pipelined: the next page is asked for
        as soon as one arrives, and a page is checked (signatures, hashes: worker processes)
        while the one before goes through receipt. Returns how many events receipt stored;
        0 when the room has no file yet or ``did`` does not serve history this way (the
        ``GetMissingEvents`` walk, which follows anyway, then does it all)."""
        if await self.cache.manager.get(room_id) is None:
            return 0
        earliest = (await RoomStore(self.cache.manager, room_id).forward_extremities())[
            : frames.MAX_BATCH
        ]
        if not earliest:
            return 0
        self.ingest.prepare_workers()
        pages: asyncio.Queue[list[Event] | None] = asyncio.Queue(maxsize=HISTORY_PAGES_AHEAD)

        async def fetch(after: int) -> pb.Events:
            request = pb.GetHistory(
                room_id=room_id, earliest_events=earliest, after=after, limit=self.history_page
            )
            response = await self.request(did, pb.Request(get_history=request))
            events: pb.Events = expect(response, "events")
            return events

        async def produce() -> None:
            after = 0
            pending: asyncio.Future[pb.Events] | None = asyncio.ensure_future(fetch(after))
            try:
                while pending is not None:
                    body = await pending
                    pending = None
                    if body.truncated and body.next > after:
                        after = body.next
                        pending = asyncio.ensure_future(fetch(after))
                    await pages.put(await self.ingest.check(room_version, list(body.pdus)))
            finally:
                if pending is not None:
                    pending.cancel()
                    await asyncio.gather(pending, return_exceptions=True)
                with contextlib.suppress(asyncio.QueueFull):
                    pages.put_nowait(None)

        producer = asyncio.ensure_future(produce())
        stored = 0
        try:
            while (page := await pages.get()) is not None:
                stored += await self._process_in_chunks(room_id, room_version, page)
                if pages.empty() and producer.done():
                    break  # it stopped without room for its end mark
            await producer
        except RemoteError as exc:
            log.info("history_not_served", room_id=room_id, did=did, error=str(exc))
        finally:
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
        return stored

    # ------------------------------------------------------------------ catch-up

    async def exchange_extremities(self, did: Did) -> None:
        """Send this node's forward extremities of every room shared with ``did``."""
        if self.manager is None or self._closed:
            return
        known = self.keys.by_did(did)
        if known is None or self.server_level(known.server_name) <= 0:
            return
        rooms = []
        for snapshot in await self.shared_rooms(known.server_name):
            rooms.append(
                pb.RoomExtremities(room_id=snapshot.room_id, event_ids=list(snapshot.extremities))
            )
        for start in range(0, max(len(rooms), 1), 100):
            chunk = rooms[start : start + 100]
            if not chunk:
                break
            try:
                await self.manager.send(
                    did, pb.Frame(extremities=pb.ForwardExtremities(rooms=chunk))
                )
            except FederationError as exc:
                log.info("extremities_not_sent", did=did, error=str(exc))
                return

    def _compare_extremities(self, peer: PeerIdentity, body: pb.ForwardExtremities) -> None:
        for room in body.rooms:
            self.catch_up(RoomId(room.room_id), peer.did, [EventId(e) for e in room.event_ids])

    def catch_up(self, room_id: RoomId, did: Did, their_extremities: list[EventId]) -> None:
        """Fetch from ``did`` whatever this node lacks of ``their_extremities``. One task per
        room: what other peers report meanwhile waits, and is looked at (what is still
        missing of it) once the running walk is done."""
        pending = self._catchup_pending.setdefault(room_id, {})
        pending[did] = their_extremities
        if room_id in self._catchups:
            return
        task = asyncio.ensure_future(self._catch_up(room_id))
        self._catchups[room_id] = task

        def done(t: asyncio.Task[None]) -> None:
            self._catchups.pop(room_id, None)
            if not t.cancelled() and t.exception() is not None:
                log.error("catch_up_failed", room_id=room_id, error=repr(t.exception()))
            if self._catchup_pending.get(room_id) and not self._closed:
                self.catch_up(room_id, *self._catchup_pending[room_id].popitem())

        task.add_done_callback(done)

    async def _catch_up(self, room_id: RoomId) -> None:
        pending = self._catchup_pending.get(room_id, {})
        while pending:
            did, their = pending.popitem()
            snapshot = await self.federated_snapshot(room_id)
            known = self.keys.by_did(did)
            if snapshot is None or known is None or self.server_level(known.server_name) <= 0:
                continue
            if known.server_name not in member_servers(snapshot):
                continue
            held = await self.ingest.held(room_id, their)
            missing = [e for e in their if e not in held]
            if not missing:
                continue
            started = self._clock.monotonic()
            streamed = 0
            try:
                streamed = await self.stream_history(did, room_id, snapshot.room_version)
                if streamed:
                    held = await self.ingest.held(room_id, their)
                    missing = [e for e in their if e not in held]
                fetched = await self.fetch_missing(
                    did, room_id, snapshot.room_version, missing, known=held
                ) if missing else []  # fmt: skip
            except (FederationError, TimeoutError) as exc:
                log.info("catch_up_interrupted", room_id=room_id, did=did, error=str(exc))
                continue
            stored = await self._process_in_chunks(room_id, snapshot.room_version, fetched)
            log.info(
                "caught_up", room_id=room_id, did=did, streamed=streamed, fetched=len(fetched),
                stored=stored, seconds=round(self._clock.monotonic() - started, 3),
            )  # fmt: skip
        self._catchup_pending.pop(room_id, None)

    async def _rebuild_from(self, did: Did) -> None:
        """Ask ``did`` for the rooms whose files are gone; rebuild those it shares."""
        missing = sorted(self._missing_rooms)
        if not missing:
            return
        try:
            response = await self.request(
                did, pb.Request(get_extremities=pb.GetExtremities(room_ids=missing))
            )
            body = expect(response, "extremities")
        except (FederationError, TimeoutError) as exc:
            log.info("rebuild_ask_failed", did=did, error=str(exc))
            return
        for room in body.rooms:
            room_id = RoomId(room.room_id)
            if room_id not in self._missing_rooms or not room.event_ids:
                continue
            try:
                count = await self.build_room(did, room_id, [EventId(e) for e in room.event_ids])
            except (FederationError, TimeoutError) as exc:
                log.warning("room_rebuild_failed", room_id=room_id, did=did, error=str(exc))
                continue
            self._missing_rooms.discard(room_id)
            log.info("room_rebuilt", room_id=room_id, did=did, events=count)

    async def build_room(
        self,
        did: Did,
        room_id: RoomId,
        extremities: Sequence[EventId],
        prefetched: Mapping[EventId, Event] | None = None,
        room_version: str | None = None,
    ) -> int:
        """Fetch a room this node does not hold from ``did`` down to its create event and
        store it (a join, a rebuild). PDUs pushed meanwhile wait and are handled after."""
        self._building.setdefault(room_id, [])
        try:
            version = room_version or await self._room_version_of(
                did, room_id, extremities, prefetched
            )
            fetched = await self.fetch_missing(
                did, room_id, version, extremities, known={}, prefetched=prefetched
            )
            count = await self._process_in_chunks(room_id, version, fetched)
        finally:
            pending = self._building.pop(room_id, [])
        self.cache.invalidate(room_id)
        self._receive_later(pending)
        return count

    def _receive_later(self, pending: list[tuple[Did, bytes]]) -> None:
        by_origin: dict[Did, list[bytes]] = {}
        for origin, raw in pending:
            by_origin.setdefault(origin, []).append(raw)
        for origin, raws in by_origin.items():
            self._receive_pdus(origin, raws)

    async def _room_version_of(
        self,
        did: Did,
        room_id: RoomId,
        extremities: Sequence[EventId],
        prefetched: Mapping[EventId, Event] | None,
    ) -> str:
        """A room's version, from its create event (asked of ``did``)."""
        if prefetched:
            return next(iter(prefetched.values())).room_version
        response = await self.request(
            did,
            pb.Request(get_state_ids=pb.GetStateIds(room_id=room_id, event_id=extremities[0])),
        )
        body = expect(response, "state_ids")
        ids = list(body.pdu_ids)
        response = await self.request(
            did,
            pb.Request(get_events=pb.GetEvents(room_id=room_id, event_ids=ids[: frames.MAX_BATCH])),
        )
        for raw in expect(response, "events").pdus:
            pdu = json.loads(raw)
            if pdu.get("type") == "m.room.create" and isinstance(pdu.get("content"), dict):
                version = pdu["content"].get("room_version", "1")
                if isinstance(version, str):
                    return version
        raise RemoteError("M_NOT_FOUND", "no create event in the room's state")

    # ------------------------------------------------------------------ serving

    async def _serve(self, peer: PeerIdentity, request: pb.Request) -> None:
        assert self.manager is not None
        slots = self._request_slots.get(peer.did)
        if slots is None:
            slots = self._request_slots[peer.did] = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        async with slots:
            kind = request.WhichOneof("kind")
            handler = self._handlers.get(kind or "")
            try:
                if handler is None:
                    response = frames.error_response(
                        request.id, "M_UNRECOGNIZED", f"unknown request {kind}"
                    )
                elif self.server_level(peer.server_name) <= 0:
                    response = frames.error_response(request.id, "M_FORBIDDEN", "trust level 0")
                else:
                    response = await handler(peer, request)
            except RemoteError as exc:
                response = frames.error_response(request.id, exc.errcode, exc.error)
            except Exception:
                log.exception("request_failed", did=peer.did, kind=kind)
                response = frames.error_response(request.id, "M_UNKNOWN", "internal error")
            try:
                await self.manager.respond(peer.did, request.id, response)
            except FederationError as exc:
                log.info("response_not_sent", did=peer.did, error=str(exc))

    async def _room_for(self, peer: PeerIdentity, room_id: str) -> RoomSnapshot:
        """A room ``peer`` may ask about: federated, and its server has a member."""
        snapshot = await self.federated_snapshot(RoomId(room_id))
        if snapshot is None or peer.server_name not in member_servers(snapshot):
            raise RemoteError("M_FORBIDDEN", "not a room shared with your server")
        return snapshot

    async def _serve_extremities(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        wanted = list(request.get_extremities.room_ids)[:1000]
        rooms: list[pb.RoomExtremities] = []
        if wanted:
            for room_id in wanted:
                with contextlib.suppress(RemoteError):
                    snapshot = await self._room_for(peer, room_id)
                    rooms.append(
                        pb.RoomExtremities(room_id=room_id, event_ids=list(snapshot.extremities))
                    )
        else:
            for snapshot in await self.shared_rooms(peer.server_name):
                rooms.append(
                    pb.RoomExtremities(
                        room_id=snapshot.room_id, event_ids=list(snapshot.extremities)
                    )
                )
        return pb.Response(id=request.id, extremities=pb.ForwardExtremities(rooms=rooms))

    async def _serve_get_events(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = request.get_events
        snapshot = await self._room_for(peer, body.room_id)
        store = RoomStore(self.cache.manager, snapshot.room_id)
        found = await store.get_events([EventId(e) for e in body.event_ids])
        pairs = [
            (e, found[EventId(e)].canonical_bytes) for e in body.event_ids if EventId(e) in found
        ]
        pdus = await self._visible(snapshot, peer.server_name, pairs)
        return pb.Response(id=request.id, events=pb.Events(pdus=pdus))

    async def _serve_missing_events(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = request.get_missing_events
        snapshot = await self._room_for(peer, body.room_id)
        latest = list(body.latest_events)[: frames.MAX_BATCH]
        limit = max(1, min(body.limit or 10, frames.MAX_BATCH))
        store = RoomStore(self.cache.manager, snapshot.room_id)
        walked, more = await store.run_read(
            "missing_events",
            history.ancestors_walk,
            latest,
            list(body.earliest_events),
            limit + len(latest),
        )
        skip = set(latest)
        pairs = [(e, pdu) for e, pdu in walked if e not in skip][:limit]
        pdus = await self._visible(snapshot, peer.server_name, pairs)
        return pb.Response(id=request.id, events=pb.Events(pdus=pdus, truncated=more))

    async def _serve_history(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = request.get_history
        snapshot = await self._room_for(peer, body.room_id)
        limit = max(1, min(body.limit or 100, frames.MAX_BATCH))
        store = RoomStore(self.cache.manager, snapshot.room_id)
        found = await store.run_read(
            "history_after",
            history.history_after,
            list(body.earliest_events)[: frames.MAX_BATCH],
            body.after,
            limit,
            HISTORY_MAX_BYTES,
        )
        if found is None:
            raise RemoteError("M_NOT_FOUND", "none of earliest_events is held")
        pairs, position, more = found
        pdus = await self._visible(snapshot, peer.server_name, pairs)
        events = pb.Events(pdus=pdus, truncated=more, next=position)
        return pb.Response(id=request.id, events=events)

    async def _serve_backfill(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = request.backfill
        snapshot = await self._room_for(peer, body.room_id)
        limit = max(1, min(body.limit or 10, frames.MAX_BATCH))
        store = RoomStore(self.cache.manager, snapshot.room_id)
        start = list(body.from_event_ids)[: frames.MAX_BATCH]
        walked, more = await store.run_read("backfill", history.ancestors_walk, start, [], limit)
        pdus = await self._visible(snapshot, peer.server_name, walked)
        return pb.Response(id=request.id, events=pb.Events(pdus=pdus, truncated=more))

    async def _serve_state_ids(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = request.get_state_ids
        snapshot = await self._room_for(peer, body.room_id)
        state, auth_chain = await self.state_and_auth_chain(snapshot, EventId(body.event_id))
        return pb.Response(
            id=request.id,
            state_ids=pb.StateIds(
                pdu_ids=sorted(state.values()), auth_chain_ids=sorted(auth_chain)
            ),
        )

    async def state_and_auth_chain(
        self, snapshot: RoomSnapshot, event_id: EventId
    ) -> tuple[dict[tuple[str, str], EventId], set[EventId]]:
        """The state *before* ``event_id`` (held) and the auth chain of that state."""
        store = RoomStore(self.cache.manager, snapshot.room_id)
        event = await store.get_event(event_id)
        if event is None:
            raise RemoteError("M_NOT_FOUND", "unknown event")
        groups = await self.groups.ensure(
            snapshot.room_id, snapshot.room_version, list(event.prev_events)
        )
        gid = await self.groups.resolve(
            snapshot.room_id, snapshot.room_version, list(groups.values())
        )
        state = dict(await self.groups.state(snapshot.room_id, gid)) if gid is not None else {}
        closure, _rejected = await self.events.auth_closure(snapshot.room_id, state.values())
        return state, set(closure) - set(state.values())

    async def _serve_server_keys(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        name = request.server_keys.server_name
        documents: list[bytes] = []
        if name == self.server_name:
            documents.append(self.keys.own_document())
        return pb.Response(id=request.id, server_keys=pb.ServerKeysResponse(server_keys=documents))

    async def _fetch_key_documents(self, server_name: str) -> list[bytes]:
        """Ask every online peer for ``server_name``'s key document (a relay's copy counts only
        through its own signature: ``KeyRing.learn_document``)."""
        documents: list[bytes] = []
        for did in self.online_peers():
            try:
                response = await self.request(
                    did, pb.Request(server_keys=pb.ServerKeysQuery(server_name=server_name)), 10.0
                )
                documents.extend(expect(response, "server_keys").server_keys)
            except (FederationError, TimeoutError):
                continue
        return documents

    # ------------------------------------------------------------------ visibility

    async def _visible(
        self, snapshot: RoomSnapshot, server: str, pairs: Sequence[tuple[str, bytes]]
    ) -> list[bytes]:
        """The PDUs as ``server`` may see them: redacted where history visibility hides them
        from every one of its users (invariant 4)."""
        if not pairs:
            return []
        if server == self.server_name:
            return [pdu for _e, pdu in pairs]
        parsed = {e: json.loads(pdu) for e, pdu in pairs}
        prevs = {p for pdu in parsed.values() for p in pdu.get("prev_events", [])}
        groups = await self.groups.ensure(snapshot.room_id, snapshot.room_version, list(prevs))
        verdicts: dict[frozenset[int], bool] = {}
        out: list[bytes] = []
        for event_id, raw in pairs:
            pdu = parsed[event_id]
            key = frozenset(groups[p] for p in pdu.get("prev_events", []) if p in groups)
            visible = verdicts.get(key)
            if visible is None:
                visible = await self._server_may_see(snapshot, server, key)
                verdicts[key] = visible
            own_member = (
                pdu.get("type") == "m.room.member"
                and server_of(str(pdu.get("state_key", ""))) == server
            )
            if visible or own_member or pdu.get("type") == "m.room.create":
                out.append(raw)
            else:
                from canonicaljson import encode_canonical_json

                out.append(bytes(encode_canonical_json(redact(snapshot.room_version, pdu))))
        return out

    async def _server_may_see(
        self, snapshot: RoomSnapshot, server: str, groups: frozenset[int]
    ) -> bool:
        gid = await self.groups.resolve(snapshot.room_id, snapshot.room_version, sorted(groups))
        state = await self.groups.state(snapshot.room_id, gid) if gid is not None else {}
        visibility = "shared"
        vis_id = state.get(("m.room.history_visibility", ""))
        members = [
            eid
            for (kind, key), eid in state.items()
            if kind == "m.room.member" and server_of(key) == server
        ]
        loaded = await self.events.load(snapshot.room_id, [*members, *([vis_id] if vis_id else [])])
        if vis_id is not None and vis_id in loaded:
            visibility = normalise_visibility(loaded[vis_id].content.get("history_visibility"))
        if visibility in ("world_readable", "shared"):
            return True
        memberships = {loaded[m].membership for m in members if m in loaded}
        if "join" in memberships:
            return True
        return visibility == "invited" and "invite" in memberships


def _room_id_of(raw: bytes) -> RoomId | None:
    try:
        pdu = json.loads(raw)
    except ValueError:
        return None
    room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
    if not isinstance(room_id, str) or not room_id.startswith("!") or len(room_id) > 255:
        return None
    return RoomId(room_id)

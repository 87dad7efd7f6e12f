"""``SkillHost``: runs the enabled skills, delivers their rooms' events, keeps the watchdog.

Invariants (docs/skills.md gives the reasons):

1. No skill code runs on the node's event loop. Each skill has a ``SkillWorker`` (its own
   thread and loop); the host submits calls there and waits on them with a deadline.
2. One call per skill at a time for events: a skill's dispatcher hands it the events of all its
   rooms one after the other, each room in stream order. An event of a type the skill does not
   handle only advances the room's position (committed lazily: re-reading it is harmless).
3. A handled event's position commits with the handler's first write transaction
   (``api.HostedSkillDatabase``), or on its own after a handler that wrote nothing. The
   positions on disk are the truth after a restart.
4. A call that raises (anything but ``CommandError``), overruns its deadline, or a skill that
   empties its event bucket, disables the skill: logged (``skill_disabled``), counted, its
   deliveries stopped, every later API call refused, its worker stopped or abandoned. The node
   and the other skills go on.
5. Closing never hangs on a skill: a database whose writer is stuck in a skill's function and
   a worker stuck in blocking code are left behind (daemon threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeVar

from cis.clock import Clock
from cis.home import Home
from cis.identity import NodeIdentity
from cis.identity.errors import InvalidName
from cis.identity.names import server_name_for, validate_node_name
from cis.ids import DeviceId, EventId, RoomId, UserId
from cis.log import get_logger
from cis.matrix import DEFAULT_ROOM_VERSION, Event, parse_pdu
from cis.skills.api import CURRENT_DELIVERY, Delivery, HostedSkillDatabase, NodeSkillApi
from cis.skills.contract import (
    CommandError,
    CommandHandler,
    DuplexStream,
    EventHandler,
    PeerHandler,
    RoomSpec,
    Skill,
    SkillDisabled,
    SkillError,
    SkillUnavailable,
    StreamHandler,
)
from cis.skills.discovery import InstalledSkill, installed_skills, load_skill
from cis.skills.gateway import EventDraft, RoomGateway
from cis.skills.peers import PeerTransport, PeerUnreachable, decode_body, encode_body
from cis.skills.watchdog import Ticket, TokenBucket, Watchdog
from cis.skills.worker import SkillWorker
from cis.storage.database import Database
from cis.storage.errors import RoomArchived, StorageError, UnknownRoom
from cis.storage.events import StoredEvent
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.rooms.types import Direction, EventFilter, Pagination, RoomStatus, TxnKey
from cis.storage.skills import advance_position_txn, delivery_positions, open_skill_database

__all__ = [
    "SKILL_CREATE_KEY",
    "SkillCounters",
    "SkillHost",
    "SkillSettings",
    "SkillState",
    "SkillStatus",
]

log = get_logger(__name__)

T = TypeVar("T")

SKILL_CREATE_KEY: Final = "io.cis.skill"
"""In a skill room's create event: the skill that owns the room."""
FEDERATION_STATE: Final = "io.cis.room.federation"
INBOX_SIZE: Final = 64
STREAM_DEADLINE_S: Final = 6 * 3600.0
"""Streams are interactive (a clone may take long); their endpoint also ends idle ones."""
CLOSE_WAIT_S: Final = 5.0
TICK_MIN_S: Final = 0.02
TICK_MAX_S: Final = 0.5
ROOM_SCAN_S: Final = 2.0
"""How often the host looks for rooms that appeared on the node (joined through federation)
whose create event names one of its skills."""


class SkillState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DISABLED = "disabled"
    FAILED = "failed"
    """Could not be loaded or started (not installed, import error, bad shape)."""
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SkillSettings:
    enabled: tuple[str, ...] = ("git", "memory")
    handler_timeout_s: float = 30.0
    events_per_s: float = 50.0
    events_burst: float = 500.0
    per_skill: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class SkillCounters:
    events: int = 0
    errors: int = 0
    timeouts: int = 0
    floods: int = 0
    commands: int = 0
    streams: int = 0


@dataclass(frozen=True, slots=True)
class SkillStatus:
    name: str
    installed: bool
    enabled: bool
    state: str
    """``not enabled``, ``not installed`` or a ``SkillState``."""
    reason: str | None
    rooms: tuple[str, ...]
    distribution: str | None
    version: str | None
    counters: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "installed": self.installed,
            "enabled": self.enabled,
            "state": self.state,
            "reason": self.reason,
            "rooms": list(self.rooms),
            "distribution": self.distribution,
            "version": self.version,
            "counters": dict(self.counters),
        }


class _Runtime:
    """One enabled skill inside the host."""

    def __init__(self, name: str, installed: InstalledSkill | None, home: Home) -> None:
        self.name = name
        self.installed = installed
        self.skill: Skill | None = None
        self.config: Mapping[str, Any] = {}
        self.data_dir: Path = home.skills / name
        self.state = SkillState.STARTING
        self.reason: str | None = None
        self.counters = SkillCounters()
        self.worker: SkillWorker | None = None
        self.db: Database | None = None
        self.api: NodeSkillApi | None = None
        self.handlers: dict[str, EventHandler] = {}
        self.commands: dict[str, CommandHandler] = {}
        self.streams: dict[str, StreamHandler] = {}
        self.peer_methods: dict[str, PeerHandler] = {}
        self.positions: dict[RoomId, int] = {}
        self.dirty: dict[RoomId, tuple[int, EventId]] = {}
        self.followers: dict[RoomId, asyncio.Task[None]] = {}
        self.sandboxes: set[RoomId] = set()
        self.inbox: asyncio.Queue[StoredEvent] = asyncio.Queue(INBOX_SIZE)
        self.dispatcher: asyncio.Task[None] | None = None
        self.bucket: TokenBucket | None = None
        self.bucket_lock = threading.Lock()

    @property
    def disabled(self) -> bool:
        return self.state in (SkillState.DISABLED, SkillState.FAILED, SkillState.STOPPED)

    def handler_for(self, event_type: str) -> EventHandler | None:
        handler = self.handlers.get(event_type)
        if handler is None and self.skill is not None and event_type in self.skill.event_types:
            return self.skill.on_event
        return handler


def to_event(stored: StoredEvent) -> Event:
    """A stored event as the Matrix core's frozen ``Event`` (re-parsed from its bytes)."""
    return parse_pdu(stored.room_version, stored.pdu())


async def _handle(handler: EventHandler, event: Event, delivery: Delivery) -> None:
    """Runs on the skill's loop: the handler, with its delivery set for its writes."""
    token = CURRENT_DELIVERY.set(delivery)
    try:
        await handler(event)
    finally:
        delivery.open = False
        CURRENT_DELIVERY.reset(token)


class SkillHost:
    """The node's skills. ``start`` (on the node's loop), then ``stop``."""

    def __init__(
        self,
        *,
        home: Home,
        identity: NodeIdentity,
        rooms: RoomStoreManager,
        settings: SkillSettings,
        clock: Clock,
        gateway: RoomGateway | None = None,
        discover: Callable[[], Mapping[str, InstalledSkill]] = installed_skills,
    ) -> None:
        self.home = home
        self.identity = identity
        self.settings = settings
        self.clock = clock
        self._rooms = rooms
        self._gateway = gateway
        self._peers: PeerTransport | None = None
        self._discover = discover
        self._watchdog = Watchdog(clock)
        self._runtimes: dict[str, _Runtime] = {}
        self._installed: Mapping[str, InstalledSkill] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._scanner: asyncio.Task[None] | None = None
        self._scanned: set[RoomId] = set()
        self._room_locks: dict[RoomId, asyncio.Lock] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the skill host is not started")
        return self._loop

    def set_gateway(self, gateway: RoomGateway) -> None:
        self._gateway = gateway

    @property
    def has_gateway(self) -> bool:
        return self._gateway is not None

    def set_peer_transport(self, transport: PeerTransport | None) -> None:
        """How skills reach the same skill on other nodes (federation's tunnels)."""
        self._peers = transport

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load and start every enabled skill (concurrently; each bounded by its deadline)."""
        self._loop = asyncio.get_running_loop()
        self._installed = await asyncio.to_thread(self._discover)
        for name in self.settings.enabled:
            runtime = _Runtime(name, self._installed.get(name), self.home)
            runtime.config = dict(self.settings.per_skill.get(name, {}))
            runtime.bucket = TokenBucket(
                self.clock, self.settings.events_per_s, self.settings.events_burst
            )
            self._runtimes[name] = runtime
        self._ticker = asyncio.create_task(self._tick())
        await asyncio.gather(*(self._start_skill(rt) for rt in self._runtimes.values()))
        self._scanner = asyncio.create_task(self._scan_rooms())

    async def stop(self) -> None:
        """Stop deliveries, then every skill: its worker (or abandon it) and its database."""
        self._stopping = True
        for task in (self._ticker, self._scanner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(
            *(self._stop_skill(rt) for rt in self._runtimes.values()), return_exceptions=True
        )
        for task in list(self._background):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), CLOSE_WAIT_S)

    async def _start_skill(self, rt: _Runtime) -> None:
        if rt.installed is None:
            self._fail(rt, "not installed (no entry point in the cis.skills group)")
            return
        try:
            rt.skill = await asyncio.to_thread(load_skill, rt.installed)
            rt.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            rt.db = await asyncio.to_thread(
                open_skill_database, self.home, rt.name, tuple(rt.skill.migrations)
            )
            positions = await rt.db.run_read("delivery_positions", delivery_positions)
        except (SkillError, StorageError, OSError) as exc:
            self._fail(rt, str(exc))
            return
        rt.positions = {RoomId(room): position for room, position in positions.items()}
        rt.worker = SkillWorker(rt.name)
        rt.worker.start()
        database = HostedSkillDatabase(self, rt, rt.db)
        rt.api = NodeSkillApi(self, rt, database)
        try:
            await self._call(rt, "init", rt.skill.init, rt.api)
            for spec in rt.skill.rooms:
                await self._ensure_room(rt, spec)
        except SkillDisabled:
            return
        except SkillError as exc:
            self._disable(rt, "start_failed", str(exc))
            return
        rt.state = SkillState.RUNNING
        rt.dispatcher = asyncio.create_task(self._dispatch(rt), name=f"skill-{rt.name}")
        for room_id in rt.positions:
            self._follow(rt, room_id)
        log.info(
            "skill_started", skill=rt.name, rooms=len(rt.followers),
            handlers=len(rt.handlers), commands=len(rt.commands), streams=len(rt.streams),
        )  # fmt: skip

    async def _ensure_room(self, rt: _Runtime, spec: RoomSpec) -> None:
        try:
            await self.create_room(rt, spec)
        except SkillUnavailable as exc:
            log.warning("skill_room_unavailable", skill=rt.name, room=spec.localpart, why=str(exc))

    async def _stop_skill(self, rt: _Runtime) -> None:
        was_disabled = rt.disabled
        if not rt.disabled:
            rt.state = SkillState.STOPPED
        await self._halt_deliveries(rt)
        if not was_disabled and rt.db is not None and rt.dirty:
            with contextlib.suppress(Exception):
                await self._flush_dirty(rt)
        await self._retire(rt)

    async def _halt_deliveries(self, rt: _Runtime) -> None:
        current = asyncio.current_task()
        tasks = [t for t in (*rt.followers.values(), rt.dispatcher) if t is not None]
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        rt.followers.clear()

    async def _retire(self, rt: _Runtime) -> None:
        """Stop the worker and close the database, abandoning whatever is stuck."""
        worker, rt.worker = rt.worker, None
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        db, rt.db = rt.db, None
        if db is not None:
            await _close_or_abandon(db, rt.name)

    # ------------------------------------------------------------------ calls and the watchdog

    async def _call(
        self,
        rt: _Runtime,
        what: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        timeout_s: float | None = None,
    ) -> T:
        """Run ``fn(*args)`` on the skill's worker under the watchdog; disable on failure."""
        if rt.disabled or rt.worker is None:
            raise SkillDisabled(f"skill {rt.name} is {rt.state.value}")
        future = rt.worker.submit(fn, *args)
        ticket = self._watchdog.begin(
            rt.name, what, timeout_s or self.settings.handler_timeout_s, future
        )
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if ticket.expired:
                raise SkillDisabled(f"skill {rt.name} overran its deadline in {what}") from None
            raise
        except (SkillDisabled, SkillUnavailable, CommandError):
            raise  # expected: the skill is not at fault
        except Exception as exc:
            rt.counters.errors += 1
            log.error(
                "skill_raised", skill=rt.name, during=what, error=type(exc).__name__,
                message=str(exc)[:200],
            )  # fmt: skip
            self._disable(rt, "raised", f"{type(exc).__name__} in {what}")
            raise SkillDisabled(f"skill {rt.name} raised in {what}") from exc
        finally:
            self._watchdog.end(ticket)

    async def _tick(self) -> None:
        tick = min(TICK_MAX_S, max(TICK_MIN_S, self.settings.handler_timeout_s / 10))
        while True:
            await asyncio.sleep(tick)
            for ticket in self._watchdog.expire():
                self._overran(ticket)

    def _overran(self, ticket: Ticket) -> None:
        rt = self._runtimes.get(ticket.skill)
        if rt is None:
            return
        rt.counters.timeouts += 1
        elapsed = self.clock.monotonic() - ticket.started
        log.error("skill_overran", skill=rt.name, during=ticket.what, seconds=round(elapsed, 3))
        self._disable(rt, "deadline", f"{ticket.what} ran over {elapsed:.1f} s")
        if ticket.future is not None:
            ticket.future.cancel()

    def count_production(self, rt: _Runtime, what: str) -> None:
        """An event-producing call from the skill (any of its threads); refuses a flood."""
        bucket = rt.bucket
        if bucket is None:
            return
        with rt.bucket_lock:
            allowed = bucket.take()
        if allowed:
            return
        if not rt.disabled:
            rt.state = SkillState.DISABLED  # at once: the skill's next call is refused
            rt.counters.floods += 1
            reason = f"flooding ({what} beyond {self.settings.events_burst:g} events)"
            self.loop.call_soon_threadsafe(self._disable, rt, "flood", reason, True)
        raise SkillDisabled(f"skill {rt.name} is flooding the node and was disabled")

    def _fail(self, rt: _Runtime, reason: str) -> None:
        rt.state = SkillState.FAILED
        rt.reason = reason
        log.error("skill_failed", skill=rt.name, reason=reason)

    def _disable(self, rt: _Runtime, cause: str, reason: str, force: bool = False) -> None:
        """Disable ``rt`` (idempotent): stop its deliveries and retire it in the background."""
        if (rt.disabled and not force) or rt.reason is not None:
            return
        rt.state = SkillState.DISABLED
        rt.reason = reason
        log.error("skill_disabled", skill=rt.name, cause=cause, reason=reason)
        task = asyncio.ensure_future(self._halt_and_retire(rt))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _halt_and_retire(self, rt: _Runtime) -> None:
        await self._halt_deliveries(rt)
        await self._retire(rt)

    # ------------------------------------------------------------------ delivery

    async def _scan_rooms(self) -> None:
        while True:
            try:
                await self.scan_rooms()
            except StorageError as exc:
                log.warning("skill_room_scan_failed", why=str(exc))
            await asyncio.sleep(ROOM_SCAN_S)

    async def scan_rooms(self) -> int:
        """Deliver to each skill the rooms of this node whose create event names it (its own
        and those of other nodes this node joined, e.g. a repository of another node); return
        how many were added."""
        added = 0
        for info in await self._rooms.list_rooms():
            if info.room_id in self._scanned or info.status is not RoomStatus.ACTIVE:
                continue
            store = await self._rooms.get(info.room_id)
            create = await store.state_event("m.room.create", "") if store is not None else None
            if create is None:
                continue  # not joined yet: look again later
            self._scanned.add(info.room_id)
            owner = create.content.get(SKILL_CREATE_KEY)
            rt = self._runtimes.get(owner) if isinstance(owner, str) else None
            if rt is None or rt.state is not SkillState.RUNNING or info.room_id in rt.positions:
                continue
            await self.watch_room(rt, info.room_id)
            log.info("skill_room_found", skill=rt.name, room_id=info.room_id)
            added += 1
        return added

    def _follow(self, rt: _Runtime, room_id: RoomId) -> None:
        if room_id in rt.followers or rt.disabled:
            return
        after = rt.positions.get(room_id, 0)
        rt.followers[room_id] = asyncio.create_task(
            self._follow_room(rt, room_id, after), name=f"skill-{rt.name}-follow"
        )

    async def _follow_room(self, rt: _Runtime, room_id: RoomId, after: int) -> None:
        try:
            async for stored in self._rooms.follow(room_id, after=after):
                await rt.inbox.put(stored)
        except (UnknownRoom, RoomArchived) as exc:
            log.warning("skill_room_gone", skill=rt.name, room_id=room_id, why=str(exc))
        except StorageError as exc:
            if not self._stopping:
                log.error("skill_follow_failed", skill=rt.name, room_id=room_id, why=str(exc))

    async def _dispatch(self, rt: _Runtime) -> None:
        assert rt.db is not None
        while True:
            if rt.inbox.empty() and rt.dirty:
                await self._flush_dirty(rt)
            stored = await rt.inbox.get()
            room_id, position = stored.room_id, stored.stream_ordering
            if position <= rt.positions.get(room_id, 0):
                continue  # re-read after a lag: already handled
            handler = rt.handler_for(stored.type)
            if handler is None:
                rt.positions[room_id] = position
                rt.dirty[room_id] = (position, stored.event_id)
                continue
            try:
                event = to_event(stored)
            except Exception:
                log.exception("skill_event_unparsable", skill=rt.name, event_id=stored.event_id)
                rt.positions[room_id] = position
                rt.dirty[room_id] = (position, stored.event_id)
                continue
            delivery = Delivery(room_id, position, stored.event_id)
            try:
                await self._call(rt, f"event {stored.type}", _handle, handler, event, delivery)
            except SkillDisabled:
                return
            rt.counters.events += 1
            rt.positions[room_id] = position
            rt.dirty.pop(room_id, None)
            if not delivery.committed:
                await rt.db.run_interaction(
                    "advance_position", advance_position_txn, room_id, position, stored.event_id
                )

    async def _flush_dirty(self, rt: _Runtime) -> None:
        assert rt.db is not None
        dirty, rt.dirty = rt.dirty, {}

        def flush(conn: Any) -> None:
            for room_id, (position, event_id) in dirty.items():
                advance_position_txn(conn, room_id, position, event_id)

        await rt.db.run_interaction("advance_positions", flush)

    # ------------------------------------------------------------------ the SkillApi's node side

    def _room_of(self, rt: _Runtime, room_id: str) -> RoomId:
        rid = RoomId(room_id)
        if rid not in rt.followers and rid not in rt.positions:
            raise SkillError(f"skill {rt.name} neither owns nor watches {room_id}")
        return rid

    async def create_room(self, rt: _Runtime, spec: RoomSpec) -> RoomId:
        room_id = RoomId(f"!{spec.localpart}:{self.identity.server_name}")
        lock = self._room_locks.setdefault(room_id, asyncio.Lock())
        async with lock:  # two calls for one room create it once
            return await self._create_room(rt, spec, room_id)

    async def _create_room(self, rt: _Runtime, spec: RoomSpec, room_id: RoomId) -> RoomId:
        assert rt.skill is not None
        store = await self._rooms.get(room_id)
        if store is not None:
            create = await store.state_event("m.room.create", "")
            owner = create.content.get(SKILL_CREATE_KEY) if create is not None else None
            if owner != rt.name:
                raise SkillError(f"room {room_id} exists and does not belong to skill {rt.name}")
        else:
            if self._gateway is None:
                raise SkillUnavailable("creating rooms needs the node's event creation")
            await self._gateway.create_room(
                room_id, DEFAULT_ROOM_VERSION, self._room_plan(rt.name, rt.skill, spec)
            )
            log.info("skill_room_created", skill=rt.name, room_id=room_id, federate=spec.federate)
        if spec.sandbox:
            rt.sandboxes.add(room_id)
        await self.watch_room(rt, room_id)
        return room_id

    def _room_plan(self, name: str, skill: Skill, spec: RoomSpec) -> list[EventDraft]:
        sovereign = self.identity.system_user_id
        create: dict[str, Any] = {"room_version": DEFAULT_ROOM_VERSION, SKILL_CREATE_KEY: name}
        if spec.sandbox:
            create["m.federate"] = False  # permanently private (docs/federation.md)
        users = {sovereign: 100, **{u: int(level) for u, level in spec.power_levels.items()}}
        events = {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100, FEDERATION_STATE: 100,
            **dict(skill.event_types),
        }  # fmt: skip
        power_levels = {
            "users": users, "users_default": 0, "events": events, "events_default": 0,
            "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 50,
        }  # fmt: skip
        plan = [
            EventDraft(sovereign, "m.room.create", create, ""),
            EventDraft(sovereign, "m.room.member", {"membership": "join"}, sovereign),
            EventDraft(sovereign, "m.room.power_levels", power_levels, ""),
            EventDraft(sovereign, "m.room.join_rules", {"join_rule": spec.join_rule}, ""),
            EventDraft(
                sovereign, "m.room.history_visibility", {"history_visibility": "shared"}, ""
            ),
        ]
        if not spec.sandbox:
            plan.append(EventDraft(sovereign, FEDERATION_STATE, {"federate": spec.federate}, ""))
        if spec.name is not None:
            plan.append(EventDraft(sovereign, "m.room.name", {"name": spec.name}, ""))
        return plan

    async def archive_sandbox_room(self, rt: _Runtime, room_id: RoomId) -> None:
        if room_id not in rt.sandboxes:
            raise SkillError(f"{room_id} is not a sandbox room of skill {rt.name}")
        follower = rt.followers.pop(room_id, None)
        if follower is not None:
            follower.cancel()
        await self._rooms.archive_room(room_id)
        rt.sandboxes.discard(room_id)

    async def watch_room(self, rt: _Runtime, room_id: RoomId) -> None:
        if room_id in rt.followers:
            return
        if await self._rooms.get(room_id) is None:
            raise SkillError(f"this node holds no room {room_id}")
        assert rt.db is not None
        if room_id not in rt.positions:
            await rt.db.run_interaction("watch_room", _watch_room_txn, room_id)
            rt.positions[room_id] = 0
        if rt.state is SkillState.RUNNING:
            self._follow(rt, room_id)

    async def send(
        self,
        rt: _Runtime,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        *,
        state_key: str | None,
        txn_id: str | None,
    ) -> EventId:
        rid = self._room_of(rt, room_id)
        if self._gateway is None:
            raise SkillUnavailable("sending events needs the node's event creation")
        sovereign = self.identity.system_user_id
        txn = TxnKey(sovereign, DeviceId(f"skill.{rt.name}"), txn_id) if txn_id else None
        draft = EventDraft(sovereign, event_type, content, state_key)
        return await self._gateway.send(rid, draft, txn=txn)

    async def get_state(
        self, rt: _Runtime, room_id: str, event_type: str, state_key: str
    ) -> Event | None:
        store = await self._rooms.get(self._room_of(rt, room_id))
        if store is None:
            return None
        stored = await store.state_event(event_type, state_key)
        return to_event(stored) if stored is not None else None

    async def state_of_type(self, rt: _Runtime, room_id: str, event_type: str) -> dict[str, Event]:
        store = await self._rooms.get(self._room_of(rt, room_id))
        if store is None:
            return {}
        state = await store.current_state()
        wanted = [eid for (kind, _key), eid in state.items() if kind == event_type]
        found = await store.get_events(wanted)
        return {e.state_key: to_event(e) for e in found.values() if e.state_key is not None}

    async def room_events(
        self,
        rt: _Runtime,
        room_id: str,
        types: Sequence[str] | None,
        after: EventId | None,
        limit: int,
    ) -> list[Event]:
        store = await self._rooms.get(self._room_of(rt, room_id))
        if store is None:
            return []
        page = await store.query_events(
            EventFilter(types=tuple(types) if types else None),
            Pagination(limit=limit, after=after, direction=Direction.FORWARDS),
        )
        return [to_event(e) for e in page.events]

    async def attach_sources(self, rt: _Runtime, attach: Mapping[str, str]) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for alias, source in attach.items():
            kind, _, name = source.partition(":")
            if kind == "skill" and name:
                path = self.home.skill_db(name)
            elif kind == "room" and name:
                path = self.home.room_dir(self._room_of(rt, name)) / "events.db"
            else:
                raise SkillError(f"attach {alias!r}: expected skill:NAME or room:ROOM_ID")
            files[alias] = path
        return files

    # ------------------------------------------------------------------ local tools

    def runtime(self, name: str) -> _Runtime | None:
        return self._runtimes.get(name)

    async def call_command(
        self, skill: str, name: str, args: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        rt = self._running(skill)
        handler = rt.commands.get(name)
        if handler is None:
            raise CommandError(f"skill {skill} has no command {name!r}")
        rt.counters.commands += 1
        result: object = await self._call(rt, f"command {name}", handler, args)
        if not isinstance(result, Mapping):
            self._disable(rt, "raised", f"command {name} returned a {type(result).__name__}")
            raise SkillDisabled(f"skill {skill}: command {name} did not return an object")
        return result

    async def run_stream(
        self, skill: str, name: str, stream: DuplexStream, params: Mapping[str, str]
    ) -> int:
        rt = self._running(skill)
        handler = rt.streams.get(name)
        if handler is None:
            raise CommandError(f"skill {skill} has no stream {name!r}")
        rt.counters.streams += 1
        status: object = await self._call(
            rt, f"stream {name}", handler, stream, params, timeout_s=STREAM_DEADLINE_S
        )
        return status if isinstance(status, int) else 1

    # ------------------------------------------------------------------ other nodes

    async def call_peer(
        self,
        rt: _Runtime,
        node_id: str,
        method: str,
        header: Mapping[str, Any],
        payload: bytes,
    ) -> tuple[dict[str, Any], bytes]:
        if node_id == self.identity.node_id:
            raise SkillError("a skill calls other nodes, not its own")
        if self._peers is None:
            raise SkillUnavailable(f"node {node_id} unreachable (no tunnels are running)")
        body = encode_body(header, payload)
        try:
            answer = await self._peers.call(node_id, rt.name, method, body)
        except PeerUnreachable as exc:
            raise SkillUnavailable(f"node {node_id} unreachable ({exc})") from None
        try:
            reply, data = decode_body(answer)
        except ValueError as exc:
            raise SkillUnavailable(f"node {node_id} answered nonsense ({exc})") from None
        if "error" in reply:
            raise CommandError(f"node {node_id}: {str(reply['error'])[:300]}")
        return reply, data

    def peer_trust(self, node_id: str) -> int:
        return self._peers.trust_level(node_id) if self._peers is not None else 0

    async def invite(self, rt: _Runtime, room_id: str, user_id: str) -> None:
        rid = self._room_of(rt, room_id)
        if self._gateway is None:
            raise SkillUnavailable("inviting needs the node's event creation")
        if not _is_user_id(user_id):
            raise SkillError(f"not a user id: {user_id[:80]!r}")
        await self._gateway.invite(rid, self.identity.system_user_id, UserId(user_id))

    async def join_room(self, rt: _Runtime, room_id: str, via: Sequence[str]) -> None:
        if not room_id.startswith("!") or ":" not in room_id or len(room_id) > 255:
            raise SkillError(f"not a room id: {room_id[:80]!r}")
        rid = RoomId(room_id)
        if self._gateway is None:
            raise SkillUnavailable("joining needs the node's event creation")
        try:
            servers = [server_name_for(validate_node_name(n)) for n in via]
        except InvalidName as exc:
            raise SkillError(str(exc)) from None
        await self._gateway.join(rid, self.identity.system_user_id, servers)
        store = await self._rooms.get(rid)
        create = await store.state_event("m.room.create", "") if store is not None else None
        owner = create.content.get(SKILL_CREATE_KEY) if create is not None else None
        if owner != rt.name:
            raise SkillError(f"room {room_id} does not belong to skill {rt.name}")
        self._scanned.add(rid)
        await self.watch_room(rt, rid)

    async def handle_peer_call(self, caller: str, skill: str, method: str, body: bytes) -> bytes:
        """A call from ``skill`` on node ``caller`` (authenticated by the transport)."""
        try:
            rt = self._running(skill)
            handler = rt.peer_methods.get(method)
            if handler is None:
                raise CommandError(f"skill {skill} has no peer method {method!r}")
            header, payload = decode_body(body)
            result: object = await self._call(
                rt, f"peer {method}", handler, caller, header, payload, timeout_s=STREAM_DEADLINE_S
            )
            if not isinstance(result, tuple) or len(result) != 2:
                raise CommandError(f"skill {skill}: peer method {method} answered nothing")
            reply, data = result
            return encode_body(reply, data)
        except (CommandError, SkillError, ValueError) as exc:
            return encode_body({"error": str(exc)})

    def _running(self, skill: str) -> _Runtime:
        rt = self._runtimes.get(skill)
        if rt is None:
            raise SkillUnavailable(f"skill {skill} is not enabled on this node")
        if rt.state is not SkillState.RUNNING:
            raise SkillUnavailable(f"skill {skill} is {rt.state.value}")
        return rt

    def statuses(self) -> list[SkillStatus]:
        """Installed and enabled skills, with their rooms and state."""
        names = sorted(set(self._installed) | set(self._runtimes))
        out = []
        for name in names:
            installed = self._installed.get(name)
            rt = self._runtimes.get(name)
            out.append(
                SkillStatus(
                    name=name,
                    installed=installed is not None,
                    enabled=rt is not None,
                    state=rt.state.value if rt is not None else "not enabled",
                    reason=rt.reason if rt is not None else None,
                    rooms=tuple(sorted(rt.positions)) if rt is not None else (),
                    distribution=installed.distribution if installed else None,
                    version=installed.version if installed else None,
                    counters=vars_of(rt.counters) if rt is not None else {},
                )
            )
        return out


def _is_user_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith("@")
        and ":" in value
        and len(value.encode("utf-8")) <= 255
    )


def vars_of(counters: SkillCounters) -> dict[str, int]:
    return {
        "events": counters.events,
        "errors": counters.errors,
        "timeouts": counters.timeouts,
        "floods": counters.floods,
        "commands": counters.commands,
        "streams": counters.streams,
    }


def _watch_room_txn(conn: Any, room_id: str) -> None:
    conn.execute(
        "INSERT INTO cis_skill_delivery (room_id, stream_ordering, event_id) VALUES (?, 0, '')"
        " ON CONFLICT (room_id) DO NOTHING",
        (room_id,),
    )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _close_or_abandon(db: Database, skill: str) -> None:
    """Close ``db`` in a daemon thread; give up waiting after ``CLOSE_WAIT_S`` (its writer may
    be stuck inside a disabled skill's function)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def close() -> None:
        try:
            db.close()
        except Exception:
            log.exception("skill_db_close_failed", skill=skill)
        finally:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, done)

    threading.Thread(target=close, name=f"cis-skill-close-{skill}", daemon=True).start()
    try:
        await asyncio.wait_for(done, CLOSE_WAIT_S)
    except TimeoutError:
        log.warning("skill_db_abandoned", skill=skill, path=str(db.path))

"""The state of a room at any event, for receipt and state resolution.

Invariants:

1. The state *after* an event is a function of the room's graph: for an event with one
   ``prev_event`` it starts from the state after that event, for several from
   ``resolve_state`` over the states after each; a state event that is not rejected then sets
   its own key. Every node computes the same states from the same events.
2. A state is named by a *group* (``cis.storage.rooms.state_groups``): a full map, or a delta
   over a previous group (chains are cut every ``MAX_CHAIN`` deltas by a full map). Each event
   maps to the group after it. Groups and mappings are written to the room's file in the
   background; a lost write is recomputed from the graph when next needed.
3. Groups, the full maps of recently used groups, the group of recent events and the results
   of resolutions (by the set of groups resolved) are cached in memory, bounded.
4. ``EventCache`` holds parsed events by id (bounded); resolution loads the full auth chains
   of the states it resolves through it, and runs ``resolve_state`` in an executor so a large
   resolution never holds up the event loop (tunnel pings keep being answered).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Final, TypeVar

from cis.ids import EventId, RoomId
from cis.log import get_logger
from cis.matrix import Event, MissingEvents, parse_pdu, resolve_state
from cis.matrix.events import StateKey
from cis.storage.events import EventStatus, StoredEvent
from cis.storage.rooms import state_groups as sg
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.rooms.store import RoomStore

log = get_logger(__name__)

StateMap = dict[StateKey, EventId]

MAX_CHAIN: Final = 64
MAX_FULL_STATES: Final = 512
MAX_EVENT_GROUPS: Final = 100_000
MAX_RESOLVED: Final = 4096
MAX_CACHED_EVENTS: Final = 50_000
MAX_RESOLVE_ROUNDS: Final = 64
FLUSH_DELAY_S: Final = 0.5
"""How long new groups and mappings wait in memory before they are written, so a stream of
events shares one write (invariant 2: a write lost to a crash is recomputed)."""


def to_event(stored: StoredEvent) -> Event:
    return parse_pdu(stored.room_version, stored.pdu())


class EventCache:
    """Parsed events by id with their status, least recently used dropped first."""

    def __init__(self, manager: RoomStoreManager, max_events: int = MAX_CACHED_EVENTS) -> None:
        self._manager = manager
        self._max = max_events
        self._events: OrderedDict[EventId, tuple[Event, EventStatus]] = OrderedDict()

    def put(self, event: Event, status: EventStatus) -> None:
        self._events[event.event_id] = (event, status)
        self._events.move_to_end(event.event_id)
        while len(self._events) > self._max:
            self._events.popitem(last=False)

    def get(self, event_id: str) -> Event | None:
        found = self._events.get(EventId(event_id))
        return found[0] if found is not None else None

    def status(self, event_id: str) -> EventStatus | None:
        found = self._events.get(EventId(event_id))
        return found[1] if found is not None else None

    async def load(self, room_id: RoomId, event_ids: Iterable[str]) -> dict[EventId, Event]:
        """The held events among ``event_ids`` (any status), from memory or the room's file."""
        out: dict[EventId, Event] = {}
        missing: list[EventId] = []
        for event_id in dict.fromkeys(event_ids):
            found = self._events.get(EventId(event_id))
            if found is not None:
                out[EventId(event_id)] = found[0]
            else:
                missing.append(EventId(event_id))
        if missing:
            store = RoomStore(self._manager, room_id)
            for event_id, stored in (await store.get_events(missing)).items():
                event = to_event(stored)
                self.put(event, stored.status)
                out[event_id] = event
        return out

    async def auth_closure(
        self, room_id: RoomId, event_ids: Iterable[str]
    ) -> tuple[dict[EventId, Event], set[EventId]]:
        """The events and every event in their auth chains (those held), and which of them
        were rejected."""
        events: dict[EventId, Event] = {}
        frontier: set[str] = set(event_ids)
        while frontier:
            loaded = await self.load(room_id, frontier)
            events.update(loaded)
            auth: set[str] = {a for e in loaded.values() for a in e.auth_events}
            frontier = {a for a in auth if a not in events} - frontier
        rejected = {e for e in events if self.status(e) is EventStatus.REJECTED}
        return events, rejected


@dataclass(slots=True)
class _Group:
    prev: int | None
    delta: dict[StateKey, EventId]
    chain: int


@dataclass(slots=True)
class _RoomGroups:
    next_id: int
    groups: dict[int, _Group] = field(default_factory=dict)
    pending_groups: list[tuple[int, int | None, str]] = field(default_factory=list)
    pending_maps: dict[EventId, int] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flushing: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None


class StateGroups:
    """Groups of every room, loaded on first use (see the module docstring)."""

    def __init__(
        self, manager: RoomStoreManager, events: EventCache, executor: Executor | None = None
    ) -> None:
        self._manager = manager
        self.events = events
        self._executor = executor
        self._rooms: dict[RoomId, _RoomGroups] = {}
        self._full: OrderedDict[tuple[RoomId, int], StateMap] = OrderedDict()
        self._event_groups: OrderedDict[EventId, int] = OrderedDict()
        self._resolved: OrderedDict[tuple[RoomId, frozenset[int]], int] = OrderedDict()
        self._flushes: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ rooms

    async def _room(self, room_id: RoomId) -> _RoomGroups:
        room = self._rooms.get(room_id)
        if room is None:
            top = await RoomStore(self._manager, room_id).run_read("max_group", sg.max_group_id)
            room = self._rooms.get(room_id)
            if room is None:
                room = self._rooms[room_id] = _RoomGroups(next_id=top + 1)
        return room

    def forget_room(self, room_id: RoomId) -> None:
        self._rooms.pop(room_id, None)

    # ------------------------------------------------------------------ groups

    async def new_group(
        self, room_id: RoomId, prev: int | None, delta: Mapping[StateKey, EventId]
    ) -> int:
        """A group: ``prev``'s state with ``delta`` applied (a full state when ``prev`` is
        None, or when the chain would grow past ``MAX_CHAIN``)."""
        room = await self._room(room_id)
        chain = 0
        if prev is not None:
            parent = await self._group(room_id, room, prev)
            chain = parent.chain + 1
            if chain > MAX_CHAIN:
                full = dict(await self.state(room_id, prev))
                full.update(delta)
                prev, delta, chain = None, full, 0
        return self._add_group(room, prev, delta, chain)

    def _add_group(
        self, room: _RoomGroups, prev: int | None, delta: Mapping[StateKey, EventId], chain: int
    ) -> int:
        gid = room.next_id
        room.next_id += 1
        group = _Group(prev, dict(delta), chain)
        room.groups[gid] = group
        room.pending_groups.append((gid, prev, sg.encode_delta(group.delta)))
        return gid

    def remember_local(self, event: Event) -> bool:
        """Record the group after an event this node just created, from memory alone: when
        the groups after all its ``prev_events`` are known and are one group (no resolution),
        the state after it is that group, plus its own key for a state event (invariant 1;
        a local event is never rejected). False when that is not known without reading or
        resolving: ``ensure`` then works it out."""
        room = self._rooms.get(event.room_id)
        if room is None or not event.prev_events:
            return False
        before = {self._event_groups.get(p) for p in event.prev_events}
        if len(before) != 1:
            return False
        (gid,) = before
        if gid is None:
            return False
        if event.state_key is not None:
            parent = room.groups.get(gid)
            if parent is None or parent.chain + 1 > MAX_CHAIN:
                return False
            delta = {(event.type, event.state_key): event.event_id}
            gid = self._add_group(room, gid, delta, parent.chain + 1)
        self.remember(event.room_id, event.event_id, gid)
        self.schedule_flush(event.room_id)
        return True

    async def _group(self, room_id: RoomId, room: _RoomGroups, gid: int) -> _Group:
        group = room.groups.get(gid)
        if group is not None:
            return group
        loaded = await RoomStore(self._manager, room_id).run_read(
            "load_groups", sg.load_groups, [gid]
        )
        if gid not in loaded:
            raise LookupError(f"state group {gid} of {room_id} is not stored")

        # Chains are loaded root first so each knows its length.
        def chain_of(g: int) -> int:
            known = room.groups.get(g)
            if known is not None:
                return known.chain
            prev, _delta = loaded[g]
            length = 0 if prev is None else chain_of(prev) + 1
            room.groups[g] = _Group(prev, loaded[g][1], length)
            return length

        chain_of(gid)
        return room.groups[gid]

    async def state(self, room_id: RoomId, gid: int) -> StateMap:
        """The full state of group ``gid`` (shared: callers never change it)."""
        key = (room_id, gid)
        full = self._full.get(key)
        if full is not None:
            self._full.move_to_end(key)
            return full
        room = await self._room(room_id)
        chain: list[_Group] = []
        base: StateMap = {}
        current: int | None = gid
        while current is not None:
            cached = self._full.get((room_id, current))
            if cached is not None:
                base = cached
                break
            group = await self._group(room_id, room, current)
            chain.append(group)
            current = group.prev
        result = dict(base)
        for group in reversed(chain):
            result.update(group.delta)
        self._full[key] = result
        while len(self._full) > MAX_FULL_STATES:
            self._full.popitem(last=False)
        return result

    def remember(self, room_id: RoomId, event_id: EventId, gid: int) -> None:
        """``event_id``'s state-after is ``gid`` (written to the room's file in the background)."""
        self._event_groups[event_id] = gid
        self._event_groups.move_to_end(event_id)
        while len(self._event_groups) > MAX_EVENT_GROUPS:
            self._event_groups.popitem(last=False)
        room = self._rooms.get(room_id)
        if room is not None:
            room.pending_maps[event_id] = gid

    async def groups_of(self, room_id: RoomId, event_ids: Iterable[str]) -> dict[EventId, int]:
        """The group after each of ``event_ids`` that is known (memory, then the file)."""
        out: dict[EventId, int] = {}
        missing: list[str] = []
        for event_id in event_ids:
            gid = self._event_groups.get(EventId(event_id))
            if gid is not None:
                out[EventId(event_id)] = gid
            else:
                missing.append(event_id)
        if missing:
            found = await RoomStore(self._manager, room_id).run_read_by_ids(
                len(missing), "groups_of", sg.groups_of, missing
            )
            for event_id, gid in found.items():
                self._event_groups[event_id] = gid
            out.update(found)
        return out

    async def ensure(
        self, room_id: RoomId, room_version: str, event_ids: Sequence[str]
    ) -> dict[EventId, int]:
        """The group after each of ``event_ids`` (held events), computing from the graph
        whatever is not known (e.g. events stored before this node federated the room)."""
        known = await self.groups_of(room_id, event_ids)
        todo = [e for e in event_ids if e not in known]
        if not todo:
            return known
        room = await self._room(room_id)
        async with room.lock:
            return await self._ensure(room_id, room_version, event_ids, known)

    async def _ensure(
        self,
        room_id: RoomId,
        room_version: str,
        event_ids: Sequence[str],
        known: dict[EventId, int],
    ) -> dict[EventId, int]:
        known.update(await self.groups_of(room_id, [e for e in event_ids if e not in known]))
        todo = [e for e in event_ids if e not in known]
        if not todo:
            return {EventId(e): known[EventId(e)] for e in event_ids if EventId(e) in known}
        store = RoomStore(self._manager, room_id)
        remembered = self._event_groups

        def is_known(event_id: str) -> bool:  # read from the reader thread: lookups only
            return event_id in known or event_id in remembered

        ids, found = await store.run_read(
            "ungrouped_ancestors", sg.ungrouped_ancestors, todo, is_known
        )
        self._event_groups.update(found)
        known.update(found)
        loaded: dict[EventId, StoredEvent] = {}
        for start in range(0, len(ids), 1000):
            loaded.update(await store.get_events([EventId(e) for e in ids[start : start + 1000]]))
        for event in loaded.values():  # ancestors grouped in memory only (not yet flushed)
            for p in event.prev_events:
                if p not in known and p in remembered:
                    known[p] = remembered[p]
        order = topological(list(loaded.values()))
        for index, stored in enumerate(order):
            if index % 256 == 255:
                await asyncio.sleep(0)
            prev_groups = [known[p] for p in stored.prev_events if p in known]
            before = await self.resolve(room_id, room_version, prev_groups)
            after = before
            if stored.state_key is not None and stored.status is not EventStatus.REJECTED:
                after = await self.new_group(
                    room_id, before, {(stored.type, stored.state_key): stored.event_id}
                )
            elif after is None:
                after = await self.new_group(room_id, None, {})
            known[stored.event_id] = after
            self.remember(room_id, stored.event_id, after)
        self.schedule_flush(room_id)
        return {EventId(e): known[EventId(e)] for e in event_ids if EventId(e) in known}

    async def resolve(self, room_id: RoomId, room_version: str, gids: Sequence[int]) -> int | None:
        """The group of ``resolve_state`` over the groups ``gids`` (cached by their set)."""
        unique = list(dict.fromkeys(gids))
        if not unique:
            return None
        if len(unique) == 1:
            return unique[0]
        key = (room_id, frozenset(unique))
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        maps = [await self.state(room_id, g) for g in unique]
        resolved = await self.resolve_maps(room_id, room_version, maps)
        gid = await self.new_group(room_id, None, resolved)
        self._full[(room_id, gid)] = resolved
        self._resolved[key] = gid
        while len(self._resolved) > MAX_RESOLVED:
            self._resolved.popitem(last=False)
        return gid

    async def resolve_maps(
        self, room_id: RoomId, room_version: str, maps: Sequence[Mapping[StateKey, EventId]]
    ) -> StateMap:
        if not maps:
            return {}
        first = maps[0]
        if all(m == first for m in maps[1:]):
            return dict(first)
        ids = {e for m in maps for e in m.values()}
        events, rejected = await self.events.auth_closure(room_id, ids)
        loop = asyncio.get_running_loop()
        for _ in range(MAX_RESOLVE_ROUNDS):
            try:
                snapshot: dict[str, Event] = {str(k): v for k, v in events.items()}
                resolved = await loop.run_in_executor(
                    self._executor, resolve_state, room_version, list(maps), snapshot, rejected
                )
                return {k: EventId(v) for k, v in resolved.items()}
            except MissingEvents as exc:
                more, more_rejected = await self.events.auth_closure(room_id, exc.event_ids)
                if not more:
                    raise
                events.update(more)
                rejected |= more_rejected
        raise MissingEvents(list(ids))

    # ------------------------------------------------------------------ persistence

    def schedule_flush(self, room_id: RoomId) -> None:
        """Write the room's new groups and mappings ``FLUSH_DELAY_S`` from now (one write
        for everything that arrives meanwhile)."""
        room = self._rooms.get(room_id)
        if room is None or room.flushing is not None or room.timer is not None:
            return
        if not room.pending_groups and not room.pending_maps:
            return
        loop = asyncio.get_running_loop()
        room.timer = loop.call_later(FLUSH_DELAY_S, self._flush_now, room_id, room)

    def _flush_now(self, room_id: RoomId, room: _RoomGroups) -> None:
        if room.timer is not None:
            room.timer.cancel()
            room.timer = None
        if room.flushing is not None or (not room.pending_groups and not room.pending_maps):
            return
        task = asyncio.ensure_future(self._flush(room_id, room))
        room.flushing = task
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, room_id: RoomId, room: _RoomGroups) -> None:
        groups, room.pending_groups = room.pending_groups, []
        maps, room.pending_maps = room.pending_maps, {}
        try:
            await RoomStore(self._manager, room_id).run_interaction(
                "store_state_groups", sg.store_groups_txn, groups, list(maps.items())
            )
        except Exception as exc:
            log.warning("state_groups_not_stored", room_id=room_id, error=type(exc).__name__)
        finally:
            room.flushing = None
        self.schedule_flush(room_id)  # what arrived during the write

    async def flush_all(self) -> None:
        """Write every room's pending groups now and leave no write scheduled (a node
        stopping)."""
        for room_id, room in list(self._rooms.items()):
            if room.flushing is not None:
                await asyncio.gather(room.flushing, return_exceptions=True)
            self._flush_now(room_id, room)
            if room.flushing is not None:
                await asyncio.gather(room.flushing, return_exceptions=True)
            if room.timer is not None:  # arrived during that write: recomputed when needed
                room.timer.cancel()
                room.timer = None


E = TypeVar("E", Event, StoredEvent)


def topological(events: Sequence[E]) -> list[E]:
    """``events`` ordered so each comes after those of its ``prev_events`` among them
    (Kahn's algorithm; ties by depth, then event id, so the order is deterministic)."""
    import heapq

    by_id = {e.event_id: e for e in events}
    children: dict[EventId, list[EventId]] = {}
    waiting: dict[EventId, int] = {}
    for e in events:
        parents = {p for p in e.prev_events if p in by_id and p != e.event_id}
        waiting[e.event_id] = len(parents)
        for p in parents:
            children.setdefault(p, []).append(e.event_id)
    ready = [(by_id[i].depth, i) for i, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out: list[E] = []
    while ready:
        _depth, event_id = heapq.heappop(ready)
        out.append(by_id[event_id])
        for child in children.get(event_id, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (by_id[child].depth, child))
    if len(out) < len(events):  # a cycle (malformed input): the rest by depth
        placed = {e.event_id for e in out}
        out.extend(sorted((e for e in events if e.event_id not in placed), key=lambda e: e.depth))
    return out

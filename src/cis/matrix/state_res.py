"""State resolution v2 (``content/rooms/fragments/v2-state-res.md``), used by room versions 10
and 11.

``resolve_state(room_version, state_sets, event_map, rejected)`` follows the spec's algorithm:

0. Split the state sets into the *unconflicted state map* (keys present in every set with the
   same event) and the *conflicted state set*; with no conflict, the unconflicted map is the
   answer.
1. *Auth difference*: the union of the sets' full auth chains minus their intersection. The
   *full conflicted set* is the conflicted state set plus the auth difference.
2. The *power events* of the full conflicted set (power levels, join rules, create, and
   ``leave``/``ban`` memberships sent by someone else), with those events of their auth chains
   that are in the full conflicted set, sorted by *reverse topological power ordering*
   (Kahn's algorithm over ``auth_events``, smallest first by −sender power level,
   ``origin_server_ts``, event id).
3. *Iterative auth checks* of that list, starting from the unconflicted state map.
4. The remaining events in *mainline ordering* of the power levels event just resolved, then
   iterative auth checks of them on top of step 3.
5. The unconflicted state map applied over the result.

Where the text leaves room, this follows what Synapse and Ruma compute, so that we converge
with them:

- A state set's auth chain includes the state events themselves (Synapse's and Ruma's
  ``get_auth_chain_difference``): an event in one set and in the other's auth chain is no
  difference.
- ``m.room.create`` counts as a power event, and power events have the state key ``""``.
- The auth chains walked in step 2 stop at events outside the full conflicted set.

Rejected events: the spec says events rejected against the state before them are "handled as
usual" (they are re-checked and may enter the state), while rejected events are never used as
auth events from an event's own ``auth_events``. That is what this does. (Synapse instead
skips rejected events outright and says so in a TODO.)

Cost: each auth chain is walked once (shared visited sets, no per-event chain sets, which would
be quadratic); the mainline depth of each power levels event is memoised. Everything is linear
in the events reachable from the state sets, plus ``n log n`` sorts of the conflicted events.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Final

from cis.ids import EventId, RoomId, UserId
from cis.matrix.auth import (
    CREATE,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    auth_types_for_event,
    check_auth,
)
from cis.matrix.errors import AuthError, InvalidPdu, MissingEvents
from cis.matrix.events import Event, EventLike, StateKey
from cis.matrix.power_levels import CREATOR_LEVEL_WITHOUT_POWER_LEVELS, room_creator
from cis.matrix.room_versions import RoomVersion, get_room_version

StateMap = dict[StateKey, EventId]

_EMPTY: Final[Mapping[str, Any]] = {}


class _PduView:
    """The fields the algorithm reads from a PDU dict, checked for type. The dict is trusted
    otherwise: no hash, signature or id check (``resolve_state`` trusts its event map)."""

    __slots__ = (
        "auth_events",
        "content",
        "event_id",
        "origin_server_ts",
        "prev_events",
        "room_id",
        "sender",
        "signatures",
        "state_key",
        "type",
    )

    def __init__(self, event_id: str, pdu: Mapping[str, Any]) -> None:
        claimed = pdu.get("event_id", event_id)
        if claimed != event_id:
            raise InvalidPdu(f"event_map[{event_id}] says its event_id is {claimed!r}")
        self.event_id = EventId(event_id)
        self.type: str = _field(pdu, event_id, "type", str)
        self.room_id = RoomId(_field(pdu, event_id, "room_id", str))
        self.sender = UserId(_field(pdu, event_id, "sender", str))
        state_key = pdu.get("state_key")
        if state_key is not None and not isinstance(state_key, str):
            raise InvalidPdu(f"{event_id}: state_key must be a string")
        self.state_key: str | None = state_key
        ts = pdu.get("origin_server_ts")
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise InvalidPdu(f"{event_id}: origin_server_ts must be an integer")
        self.origin_server_ts: int = ts
        self.auth_events = _ids(pdu, event_id, "auth_events")
        self.prev_events = _ids(pdu, event_id, "prev_events")
        self.content: Mapping[str, Any] = _field(pdu, event_id, "content", Mapping)
        signatures = pdu.get("signatures", _EMPTY)
        self.signatures: Mapping[str, Mapping[str, str]] = (
            signatures if isinstance(signatures, Mapping) else _EMPTY
        )


def _field(pdu: Mapping[str, Any], event_id: str, key: str, kind: type) -> Any:
    value = pdu.get(key)
    if not isinstance(value, kind):
        raise InvalidPdu(f"{event_id}: {key} is missing or of the wrong type")
    return value


def _ids(pdu: Mapping[str, Any], event_id: str, key: str) -> tuple[EventId, ...]:
    value = pdu.get(key)
    if not isinstance(value, list | tuple) or not all(isinstance(i, str) for i in value):
        raise InvalidPdu(f"{event_id}: {key} must be a list of event ids")
    return tuple(EventId(i) for i in value)


class _Events:
    """Lazy, cached access to ``event_map`` as ``EventLike``s."""

    __slots__ = ("_map", "_views")

    def __init__(self, event_map: Mapping[str, Event | Mapping[str, Any]]) -> None:
        self._map = event_map
        self._views: dict[str, EventLike] = {}

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._views or event_id in self._map

    def __getitem__(self, event_id: str) -> EventLike:
        view = self._views.get(event_id)
        if view is None:
            raw = self._map.get(event_id)
            if raw is None:
                raise MissingEvents([event_id])
            if isinstance(raw, Event):
                view = raw
            elif isinstance(raw, Mapping):
                view = _PduView(event_id, raw)
            else:
                raise InvalidPdu(f"event_map[{event_id}] is neither an Event nor a PDU dict")
            self._views[event_id] = view
        return view


# ------------------------------------------------------------------ the algorithm


def resolve_state(
    room_version: str,
    state_sets: Sequence[Mapping[StateKey, str]],
    event_map: Mapping[str, Event | Mapping[str, Any]],
    rejected: Collection[str] = (),
) -> StateMap:
    """Resolve ``state_sets`` (``{(type, state_key): event_id}`` each) into one state map.

    ``event_map`` holds the events of the state sets and their full auth chains, as ``Event``
    objects or PDU dicts (with an ``event_id`` key, as over federation); it is trusted, not
    verified. ``rejected`` names events known to be rejected. ``MissingEvents`` if an auth
    chain is incomplete; ``InvalidPdu`` if a dict lacks the fields the algorithm reads.
    """
    rv = get_room_version(room_version)
    if not state_sets:
        return {}
    unconflicted, conflicted = _separate(state_sets)
    if not conflicted:
        return unconflicted
    events = _Events(event_map)
    rejected_set = frozenset(rejected)

    full_conflicted = conflicted | _auth_difference(state_sets, unconflicted, events)

    # Step 1: power events and the parts of their auth chains in the full conflicted set.
    power = [e for e in full_conflicted if _is_power_event(events[e])]
    sorted_power = _reverse_topological_power_sort(rv, power, full_conflicted, events)

    # Step 2.
    resolved = _iterative_auth_checks(rv, sorted_power, unconflicted, events, rejected_set)

    # Step 3: the rest, in mainline order of the power levels resolved so far.
    in_step_1 = set(sorted_power)
    leftover = [e for e in full_conflicted if e not in in_step_1]
    ordered = _mainline_sort(leftover, resolved.get((POWER_LEVELS, "")), events)

    # Step 4.
    resolved = _iterative_auth_checks(rv, ordered, resolved, events, rejected_set)

    # Step 5.
    resolved.update(unconflicted)
    return resolved


def _separate(state_sets: Sequence[Mapping[StateKey, str]]) -> tuple[StateMap, set[EventId]]:
    """The unconflicted state map and the conflicted state set ("Definitions")."""
    first, rest = state_sets[0], state_sets[1:]
    unconflicted: StateMap = {}
    conflicted: set[EventId] = set()
    keys: set[StateKey] = set(first)
    for s in rest:
        keys.update(s)
    for key in keys:
        value = first.get(key)
        if value is not None and all(s.get(key) == value for s in rest):
            unconflicted[key] = EventId(value)
        else:
            conflicted.update(EventId(s[key]) for s in state_sets if key in s)
    return unconflicted, conflicted


def _reachable(
    starts: Iterable[EventId], events: _Events, stop: Collection[EventId] = ()
) -> set[EventId]:
    """``starts`` and everything reachable from them over ``auth_events``, not entering
    ``stop`` (whose own auth chains the caller already has)."""
    seen: set[EventId] = set()
    todo = [e for e in starts if e not in stop]
    missing: set[str] = set()
    while todo:
        event_id = todo.pop()
        if event_id in seen:
            continue
        seen.add(event_id)
        if event_id not in events:
            missing.add(event_id)
            continue
        for parent in events[event_id].auth_events:
            if parent not in seen and parent not in stop:
                todo.append(parent)
    if missing:
        raise MissingEvents(missing)
    return seen


def _auth_difference(
    state_sets: Sequence[Mapping[StateKey, str]], unconflicted: StateMap, events: _Events
) -> set[EventId]:
    """∪ Cᵢ − ∩ Cᵢ, with Cᵢ the full auth chain of state set i (its events included).

    Every set holds the unconflicted events U, so Cᵢ = A ∪ Bᵢ with A the chain of U and Bᵢ that
    of the set's other events; then ∪Cᵢ − ∩Cᵢ = (∪Bᵢ − ∩Bᵢ) − A. A is walked once, and each Bᵢ
    only down to where it meets A.
    """
    common = _reachable(set(unconflicted.values()), events)
    own = [
        _reachable({EventId(e) for e in s.values()} - common, events, stop=common)
        for s in state_sets
    ]
    union: set[EventId] = set().union(*own)
    return union - own[0].intersection(*own[1:])


def _is_power_event(event: EventLike) -> bool:
    """ "Power events" ("Definitions"), plus ``m.room.create`` as Synapse and Ruma count it."""
    if event.type in (POWER_LEVELS, JOIN_RULES, CREATE):
        return event.state_key == ""
    if event.type == MEMBER and event.state_key is not None:
        membership = event.content.get("membership")
        return membership in ("leave", "ban") and event.sender != event.state_key
    return False


def _auth_event_of_type(event: EventLike, key: StateKey, events: _Events) -> EventLike | None:
    for parent_id in event.auth_events:
        if parent_id in events:
            parent = events[parent_id]
            if parent.type == key[0] and parent.state_key == key[1]:
                return parent
    return None


def _sender_power_level(rv: RoomVersion, event: EventLike, events: _Events) -> int:
    """The sender's power level "when looking at their respective auth_events"."""
    pl = _auth_event_of_type(event, (POWER_LEVELS, ""), events)
    if pl is None:
        create = _auth_event_of_type(event, (CREATE, ""), events)
        if create is not None and room_creator(rv, create) == event.sender:
            return CREATOR_LEVEL_WITHOUT_POWER_LEVELS
        return 0
    users = pl.content.get("users")
    level = users.get(event.sender) if isinstance(users, Mapping) else None
    if level is None:
        level = pl.content.get("users_default", 0)
    return level if isinstance(level, int) and not isinstance(level, bool) else 0


def _reverse_topological_power_sort(
    rv: RoomVersion,
    power_events: Iterable[EventId],
    full_conflicted: set[EventId],
    events: _Events,
) -> list[EventId]:
    """Step 1's graph (power events plus their auth ancestors in the full conflicted set,
    edges along ``auth_events``) in reverse topological power ordering, earliest first."""
    parents: dict[EventId, list[EventId]] = {}
    todo = list(power_events)
    while todo:
        event_id = todo.pop()
        if event_id in parents:
            continue
        in_set = [a for a in dict.fromkeys(events[event_id].auth_events) if a in full_conflicted]
        parents[event_id] = in_set
        todo.extend(a for a in in_set if a not in parents)

    children: dict[EventId, list[EventId]] = {e: [] for e in parents}
    waiting: dict[EventId, int] = {}
    for event_id, ps in parents.items():
        waiting[event_id] = len(ps)
        for p in ps:
            children[p].append(event_id)

    def key(event_id: EventId) -> tuple[int, int, str]:
        e = events[event_id]
        return (-_sender_power_level(rv, e, events), e.origin_server_ts, event_id)

    heap = [(key(e), e) for e, n in waiting.items() if n == 0]
    heapq.heapify(heap)
    ordered: list[EventId] = []
    while heap:
        _, event_id = heapq.heappop(heap)
        ordered.append(event_id)
        for child in children[event_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(heap, (key(child), child))
    if len(ordered) != len(parents):  # pragma: no cover - auth_events form a DAG by hashing
        raise InvalidPdu("the auth events of the conflicted events form a cycle")
    return ordered


def _signed_by_structurally(event: EventLike) -> Callable[[str], bool]:
    """Rule 4.2 inside resolution: the events were verified on receipt (``resolve_state``
    trusts its event map), so a signature entry by the server is taken as valid."""
    return lambda server: bool(event.signatures.get(server))


def _iterative_auth_checks(
    rv: RoomVersion,
    event_ids: Sequence[EventId],
    base: StateMap,
    events: _Events,
    rejected: frozenset[str],
) -> StateMap:
    """ "Iterative auth checks": apply each event that passes the auth rules against the
    state so far, falling back to its own non-rejected auth events for keys not in it."""
    state = dict(base)
    for event_id in event_ids:
        event = events[event_id]
        if event.state_key is None:
            continue  # not state: cannot be applied (only state events reach here)
        auth: dict[StateKey, EventLike] = {}
        for parent_id in event.auth_events:
            if parent_id in rejected:
                continue
            parent = events[parent_id]
            if parent.state_key is not None:
                auth[(parent.type, parent.state_key)] = parent
        for key in auth_types_for_event(event):
            current = state.get(key)
            if current is not None:
                auth[key] = events[current]
        try:
            check_auth(rv.identifier, event, auth, is_signed_by=_signed_by_structurally(event))
        except AuthError:
            continue
        state[(event.type, event.state_key)] = event_id
    return state


def _mainline_sort(
    event_ids: Iterable[EventId], power_levels_id: EventId | None, events: _Events
) -> list[EventId]:
    """ "Mainline ordering" based on ``power_levels_id``.

    With the mainline [P₀, …, Pₙ], an event's *mainline position* is the index of the first
    mainline event on its chain of power levels auth events (∞ if none); larger positions
    sort first. Here the key is ``depth = n + 1 − position`` (0 for ∞), sorted ascending:
    the same order.
    """
    mainline: list[EventId] = []
    current = power_levels_id
    while current is not None:
        mainline.append(current)
        parent = _auth_event_of_type(events[current], (POWER_LEVELS, ""), events)
        current = parent.event_id if parent is not None else None
    depth_of: dict[EventId, int] = {e: len(mainline) - i for i, e in enumerate(mainline)}

    def mainline_depth(event: EventLike) -> int:
        path: list[EventId] = []
        pl = _auth_event_of_type(event, (POWER_LEVELS, ""), events)
        depth = 0
        while pl is not None:
            known = depth_of.get(pl.event_id)
            if known is not None:
                depth = known
                break
            path.append(pl.event_id)
            pl = _auth_event_of_type(pl, (POWER_LEVELS, ""), events)
        for p in path:  # memoise: every power levels event on the path has the same answer
            depth_of[p] = depth
        return depth

    keyed = []
    for event_id in event_ids:
        e = events[event_id]
        keyed.append(((mainline_depth(e), e.origin_server_ts, event_id), event_id))
    keyed.sort()
    return [event_id for _, event_id in keyed]

"""A small room simulator for the tests: real, signed events on branches of one room's DAG.

Each ``Branch`` keeps the state after its events and its forward extremities, so forks made
with ``Branch.fork`` model partitioned servers. ``Branch.send`` lays out an event with
``prepare_pdu`` (auth events from the branch's state), signs it with ``build_event`` and, unless
told not to, asserts that the auth rules allow it against the branch's state, so a scenario
cannot silently rest on an event that should not exist.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.signing

from cis.ids import EventId
from cis.matrix import (
    Event,
    StateKey,
    build_event,
    check_auth,
    check_auth_events_selection,
    next_forward_extremities,
    prepare_pdu,
    state_after,
)

ALICE = "@alice:a.test"
BOB = "@bob:a.test"
CHARLIE = "@charlie:b.test"
EVELYN = "@evelyn:c.test"
ZARA = "@zara:b.test"
ROOM_ID = "!room:a.test"
KEY_ID = "ed25519:k1"


def signing_key(server: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(server.encode()).digest())


def server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


@dataclass
class Room:
    room_version: str = "11"
    events: dict[EventId, Event] = field(default_factory=dict)
    clock: int = 0

    def tick(self) -> int:
        self.clock += 1
        return self.clock


@dataclass
class Branch:
    room: Room
    state: dict[StateKey, EventId] = field(default_factory=dict)
    extremities: set[EventId] = field(default_factory=set)

    def fork(self) -> Branch:
        return Branch(self.room, dict(self.state), set(self.extremities))

    def event(self, key: StateKey) -> Event:
        return self.room.events[self.state[key]]

    def auth_state(self) -> dict[StateKey, Event]:
        return {k: self.room.events[v] for k, v in self.state.items()}

    def make(
        self,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        ts: int | None = None,
        redacts: str | None = None,
        room_id: str = ROOM_ID,
        **extra: Any,
    ) -> Event:
        """A signed event on this branch, neither checked nor applied. ``extra`` top-level
        keys override what ``prepare_pdu`` laid out (to build malformed or odd events)."""
        room = self.room
        pdu = prepare_pdu(
            room.room_version,
            room_id=room_id,
            sender=sender,
            event_type=event_type,
            content=content,
            origin_server_ts=room.tick() if ts is None else ts,
            forward_extremities=[room.events[e] for e in self.extremities],
            current_state=self.state,
            state_key=state_key,
            redacts=redacts,
        )
        pdu.update(extra)
        server = server_of(sender)
        event = build_event(room.room_version, pdu, server, KEY_ID, signing_key(server))
        room.events[event.event_id] = event
        return event

    def apply(self, event: Event) -> Event:
        """Add ``event`` to this branch: its state and forward extremities."""
        self.state = state_after(self.state, event)
        self.extremities = next_forward_extremities(self.extremities, event)
        return event

    def send(
        self,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        check: bool = True,
        **kw: Any,
    ) -> Event:
        """``make``, check against the auth rules (cited auth events and this branch's
        state) unless ``check`` is false, and ``apply``."""
        event = self.make(sender, event_type, content, state_key, **kw)
        if check:
            rv = self.room.room_version
            cited = [self.room.events[e] for e in event.auth_events]
            check_auth(rv, event, check_auth_events_selection(event, cited))
            check_auth(rv, event, self.auth_state())
        return self.apply(event)

    # conveniences
    def join(self, user: str, **kw: Any) -> Event:
        return self.send(user, "m.room.member", {"membership": "join"}, user, **kw)

    def member(self, sender: str, target: str, membership: str, **kw: Any) -> Event:
        return self.send(sender, "m.room.member", {"membership": membership}, target, **kw)

    def power_levels(self, sender: str, users: Mapping[str, int], **kw: Any) -> Event:
        return self.send(sender, "m.room.power_levels", {"users": dict(users)}, "", **kw)

    def topic(self, sender: str, topic: str, **kw: Any) -> Event:
        return self.send(sender, "m.room.topic", {"topic": topic}, "", **kw)

    def join_rule(self, sender: str, rule: str, **kw: Any) -> Event:
        return self.send(sender, "m.room.join_rules", {"join_rule": rule}, "", **kw)


def new_room(
    room_version: str = "11",
    *,
    creator: str = ALICE,
    create_content: Mapping[str, Any] | None = None,
) -> Branch:
    """A room with only its create event and the creator's join."""
    branch = Branch(Room(room_version))
    branch.send(creator, "m.room.create", dict(create_content or {}), "")
    branch.join(creator)
    return branch


def standard_room(
    room_version: str = "11",
    *,
    levels: Mapping[str, int] | None = None,
    pl_content: Mapping[str, Any] | None = None,
    members: Sequence[str] = (BOB, CHARLIE),
) -> Branch:
    """Alice creates a public room, sets power levels (``users``: Alice 100 plus ``levels``;
    other keys from ``pl_content``), and ``members`` join, in that order."""
    branch = new_room(room_version)
    users = {ALICE: 100, **(levels or {})}
    branch.send(ALICE, "m.room.power_levels", {**(pl_content or {}), "users": users}, "")
    branch.join_rule(ALICE, "public")
    for user in members:
        branch.join(user)
    return branch


def as_pdu_dicts(events: Mapping[EventId, Event]) -> dict[str, dict[str, Any]]:
    """The event map as it arrives over federation: PDU dicts with an ``event_id`` key."""
    return {eid: {**e.to_pdu(), "event_id": eid} for eid, e in events.items()}

"""Room DAG helpers for the handlers: what a new event points at, and what state follows it.

- ``prepare_pdu`` lays out a new event on the room's forward extremities (the events without
  children, server-server API, "PDUs"): at most ``MAX_PREV_EVENTS_BUILT`` of them as
  ``prev_events``, the deepest first; ``depth`` one more than the deepest, capped at 2^53−1
  (``depth_v6.yaml``); ``auth_events`` from the current state by the auth events selection.
  ``cis.matrix.events.build_event`` then hashes and signs it.
- ``state_after`` is the state after an event given the state before it
  (``fragments/v2-state-res.md``, first paragraphs): a state event replaces its key.
- ``next_forward_extremities`` is the extremities after adding an event.

The state *before* an event with several ``prev_events`` is ``resolve_state`` of the states
after each of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

from cis.ids import EventId
from cis.matrix.auth import CREATE, REDACTION, auth_types_for
from cis.matrix.canonical_json import MAX_SAFE_INTEGER
from cis.matrix.events import EventLike, StateKey, thaw
from cis.matrix.room_versions import get_room_version

MAX_PREV_EVENTS_BUILT: Final = 10
"""How many forward extremities a new event cites (the format allows 20; servers cite 10)."""

MAX_DEPTH: Final = MAX_SAFE_INTEGER


class Extremity(Protocol):
    @property
    def event_id(self) -> EventId: ...
    @property
    def depth(self) -> int: ...


def choose_prev_events(forward_extremities: Iterable[Extremity]) -> tuple[list[EventId], int]:
    """The ``prev_events`` (deepest first, ties by id) and the ``depth`` of a new event."""
    chosen = sorted(forward_extremities, key=lambda e: (-e.depth, e.event_id))
    chosen = chosen[:MAX_PREV_EVENTS_BUILT]
    if not chosen:
        return [], 1
    return [e.event_id for e in chosen], min(chosen[0].depth + 1, MAX_DEPTH)


def prepare_pdu(
    room_version: str,
    *,
    room_id: str,
    sender: str,
    event_type: str,
    content: Mapping[str, Any],
    origin_server_ts: int,
    forward_extremities: Iterable[Extremity],
    current_state: Mapping[StateKey, str],
    state_key: str | None = None,
    redacts: str | None = None,
) -> dict[str, Any]:
    """A new event without ``hashes`` and ``signatures``, ready for ``build_event``.

    ``current_state`` maps state keys to event ids (the resolved state at the extremities).
    For ``m.room.create`` the content gets ``room_version`` and, in v10, ``creator`` if
    missing. ``redacts`` goes where the room version puts it (v11: ``content.redacts``).
    """
    rv = get_room_version(room_version)
    body: dict[str, Any] = thaw(content)
    pdu: dict[str, Any] = {
        "room_id": room_id,
        "sender": sender,
        "type": event_type,
        "origin_server_ts": origin_server_ts,
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    prev_events: list[EventId]
    auth_events: list[str]
    if event_type == CREATE:
        body.setdefault("room_version", rv.identifier)
        if not rv.implicit_room_creator:
            body.setdefault("creator", sender)
        prev_events, depth, auth_events = [], 1, []
    else:
        prev_events, depth = choose_prev_events(forward_extremities)
        selection = auth_types_for(event_type, state_key, sender, body)
        auth_events = [current_state[k] for k in sorted(selection) if k in current_state]
    if redacts is not None and event_type == REDACTION:
        if rv.redacts_in_content:
            body["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    pdu.update(content=body, depth=depth, prev_events=prev_events, auth_events=auth_events)
    return pdu


def state_after(state_before: Mapping[StateKey, str], event: EventLike) -> dict[StateKey, EventId]:
    """S′(E): S(E) with E's key replaced if E is a state event."""
    after = {k: EventId(v) for k, v in state_before.items()}
    if event.state_key is not None:
        after[(event.type, event.state_key)] = event.event_id
    return after


def next_forward_extremities(extremities: Iterable[str], event: EventLike) -> set[EventId]:
    """The forward extremities once ``event`` is added: it replaces those it cites."""
    cited = set(event.prev_events)
    return {EventId(e) for e in extremities if e not in cited} | {event.event_id}

"""``RoomGateway``: the seam between the skill host and the node's event creation.

Skills never build events themselves: every room they create and every event they send goes
through the same handlers as a Matrix client's (built on the room's extremities, authorised
against its state, stored in the Room Store with the client's guarantees). ``cis.node`` wires
an implementation backed by the Client-Server API's ``EventCreator``; without one (a node
built without that API) the skills' sends fail with ``SkillUnavailable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cis.ids import EventId, RoomId, UserId
from cis.storage.rooms.types import TxnKey

__all__ = ["EventDraft", "RoomGateway"]


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event to create, as its sender asks for it."""

    sender: UserId
    type: str
    content: Mapping[str, Any]
    state_key: str | None = None


class RoomGateway(Protocol):
    async def create_room(
        self, room_id: RoomId, room_version: str, events: Sequence[EventDraft]
    ) -> None:
        """Create ``room_id`` from ``events`` (its create event first), each authorised against
        the state before it, all stored in one room transaction."""
        ...

    async def send(
        self, room_id: RoomId, draft: EventDraft, *, txn: TxnKey | None = None
    ) -> EventId:
        """Create one event in an existing room (``txn``: idempotent per key)."""
        ...

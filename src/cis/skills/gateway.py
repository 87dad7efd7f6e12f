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

from cis.handlers.room_cache import Draft, EventCreator
from cis.ids import EventId, RoomId, UserId
from cis.matrix import AuthError, InvalidPdu
from cis.skills.contract import SkillError
from cis.storage.rooms.types import TxnKey

__all__ = ["CreatorGateway", "EventDraft", "RoomGateway"]


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


class CreatorGateway:
    """``RoomGateway`` over the Client-Server API's ``EventCreator``: a skill's rooms and events
    take exactly a client's path (laid out on the room's extremities under its lock, authorised
    against its state, stored with txn ids committed alongside)."""

    def __init__(self, creator: EventCreator) -> None:
        self._creator = creator

    async def create_room(
        self, room_id: RoomId, room_version: str, events: Sequence[EventDraft]
    ) -> None:
        drafts = [Draft(e.sender, e.type, e.content, e.state_key) for e in events]
        try:
            await self._creator.create_room(room_id, room_version, drafts)
        except AuthError as exc:
            raise SkillError(f"the room's first events were refused (rule {exc.rule})") from exc
        except InvalidPdu as exc:
            raise SkillError(f"a first event of the room is not valid: {exc}") from exc

    async def send(
        self, room_id: RoomId, draft: EventDraft, *, txn: TxnKey | None = None
    ) -> EventId:
        try:
            _event, event_id = await self._creator.create(
                room_id, Draft(draft.sender, draft.type, draft.content, draft.state_key), txn=txn
            )
        except LookupError:
            raise SkillError(f"this node holds no room {room_id}") from None
        except AuthError as exc:
            raise SkillError(
                f"{draft.type} refused by the room's authorisation rules (rule {exc.rule})"
            ) from exc
        except InvalidPdu as exc:
            raise SkillError(f"{draft.type} is not a valid event: {exc}") from exc
        return event_id

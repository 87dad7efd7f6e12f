"""``RoomGateway``: the seam between the skill host and the node's event creation.

Skills never build events themselves: every room they create and every event they send goes
through the same handlers as a Matrix client's (built on the room's extremities, authorised
against its state, stored in the Room Store with the client's guarantees). ``cis.node`` wires
an implementation backed by the Client-Server API's ``EventCreator``; without one (a node
built without that API) the skills' sends fail with ``SkillUnavailable``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cis.handlers.errors import ApiError
from cis.handlers.room_cache import Countersign, Draft, EventCreator, RoomSnapshot
from cis.ids import EventId, RoomId, UserId
from cis.matrix import AuthError, InvalidPdu
from cis.skills.contract import SkillError, SkillUnavailable
from cis.storage.rooms.types import TxnKey

__all__ = ["CreatorGateway", "EventDraft", "RoomFederation", "RoomGateway"]


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

    async def invite(self, room_id: RoomId, sender: UserId, target: UserId) -> EventId | None:
        """Invite ``target`` (a user of another node: its node countersigns); ``None`` when
        already invited or joined."""
        ...

    async def join(self, room_id: RoomId, user: UserId, via: Sequence[str]) -> None:
        """Join a room of another node through ``via`` (server names) and hold it here."""
        ...


class RoomFederation(Protocol):
    """What the gateway needs of federation (``cis.handlers.federation_rooms.RemoteRooms``):
    the same policy, countersigned invites and remote joins as a client's requests."""

    def is_remote(self, user_id: str) -> bool: ...

    def check_local(self, snapshot: RoomSnapshot, draft: Draft) -> None: ...

    def countersign_invite(self, room_id: RoomId, target: UserId) -> Countersign: ...

    async def join(self, user_id: UserId, room_id: RoomId, via: Sequence[str] = ()) -> RoomId: ...


class CreatorGateway:
    """``RoomGateway`` over the Client-Server API's ``EventCreator``: a skill's rooms and events
    take exactly a client's path (laid out on the room's extremities under its lock, authorised
    against its state, stored with txn ids committed alongside)."""

    def __init__(
        self,
        creator: EventCreator,
        federation: Callable[[], RoomFederation | None] = lambda: None,
    ) -> None:
        self._creator = creator
        self._federation = federation

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
        return await self._create(
            room_id, Draft(draft.sender, draft.type, draft.content, draft.state_key), txn=txn
        )

    async def _create(
        self,
        room_id: RoomId,
        draft: Draft,
        *,
        txn: TxnKey | None = None,
        countersign: Countersign | None = None,
    ) -> EventId:
        federation = self._federation()
        check: Callable[[RoomSnapshot], None] | None = None
        if federation is not None:

            def check(snapshot: RoomSnapshot, federation: RoomFederation = federation) -> None:
                federation.check_local(snapshot, draft)  # a client's send gets the same policy

        try:
            _event, event_id = await self._creator.create(
                room_id, draft, txn=txn, check=check, countersign=countersign
            )
        except LookupError:
            raise SkillError(f"this node holds no room {room_id}") from None
        except AuthError as exc:
            raise SkillError(
                f"{draft.type} refused by the room's authorisation rules (rule {exc.rule})"
            ) from exc
        except InvalidPdu as exc:
            raise SkillError(f"{draft.type} is not a valid event: {exc}") from exc
        except ApiError as exc:
            raise SkillError(f"{draft.type} refused: {exc}") from None
        return event_id

    async def invite(self, room_id: RoomId, sender: UserId, target: UserId) -> EventId | None:
        snapshot = await self._creator.cache.get(room_id)
        if snapshot is None:
            raise SkillError(f"this node holds no room {room_id}")
        if snapshot.membership(target) in ("invite", "join"):
            return None
        federation = self._federation()
        countersign = None
        if federation is not None and federation.is_remote(target):
            countersign = federation.countersign_invite(room_id, target)
        elif federation is None and target.partition(":")[2] != room_id.partition(":")[2]:
            raise SkillUnavailable("inviting a user of another node needs federation")
        draft = Draft(sender, "m.room.member", {"membership": "invite"}, target)
        return await self._create(room_id, draft, countersign=countersign)

    async def join(self, room_id: RoomId, user: UserId, via: Sequence[str]) -> None:
        federation = self._federation()
        if federation is None:
            raise SkillUnavailable("joining a room of another node needs federation")
        snapshot = await self._creator.cache.get(room_id)
        if snapshot is not None and snapshot.membership(user) == "join":
            return
        try:
            await federation.join(user, room_id, via)
        except ApiError as exc:
            raise SkillUnavailable(f"could not join {room_id}: {exc}") from None

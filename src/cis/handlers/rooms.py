"""Rooms: create, join, invite, leave, kick, ban, unban, forget, send, state, redact, aliases.

Every event goes through ``EventCreator`` (built, authorised and stored one at a time per room);
this module turns Client-Server requests into those events and maps refusals onto Matrix
errors:

- an event the auth rules refuse is 403 ``M_FORBIDDEN`` naming the rule;
- a malformed event (too big: 413 ``M_TOO_LARGE``; otherwise 400 ``M_BAD_JSON``);
- an unknown room is 404 ``M_NOT_FOUND`` (rooms on other nodes come with federation);
- sends are limited per user (100/s, burst 1,000 by default).

Redactions: the auth rules accept any redaction event; whether it may apply is the server's
call. Here a user may redact their own events, or anyone's with the room's redact level
(Client-Server API §"Redactions").
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Final, Protocol

from cis.clock import Clock
from cis.handlers.auth import Requester
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.notifier import Notifier
from cis.handlers.ratelimit import RateLimiter
from cis.handlers.room_cache import Countersign, Draft, EventCreator, RoomSnapshot
from cis.handlers.room_creation import CreateRoomRequest, plan_room
from cis.ids import EventId, RoomId, ServerName, UserId
from cis.matrix import AuthError, InvalidPdu
from cis.matrix.events import MAX_PDU_BYTES
from cis.storage.client import timeline
from cis.storage.client.account_data import AccountDataStore, AliasTaken
from cis.storage.client.accounts import AccountStore
from cis.storage.database import Database
from cis.storage.rooms.types import TxnKey

MEMBER: Final = "m.room.member"
MAX_REASON_LENGTH: Final = 512


class RemoteRoomsHooks(Protocol):
    """What federation adds to rooms (``cis.handlers.federation_rooms.RemoteRooms``)."""

    def is_remote(self, user_id: str) -> bool: ...

    def check_local(self, snapshot: RoomSnapshot, draft: Draft) -> None:
        """Raise ``ApiError`` for a local event the node's federation policy forbids."""
        ...

    def countersign_invite(self, room_id: RoomId, target: UserId) -> Countersign: ...

    async def join(self, user_id: UserId, room_id: RoomId) -> RoomId: ...

    async def leave(self, user_id: UserId, room_id: RoomId) -> bool: ...


def refused(exc: AuthError) -> ApiError:
    return ApiError(
        Errcode.FORBIDDEN, f"Refused by the room's authorisation rules (rule {exc.rule})"
    )


def unknown_room() -> ApiError:
    return ApiError(Errcode.NOT_FOUND, "Unknown room")


def _user_id(value: object) -> UserId:
    if (
        not isinstance(value, str)
        or not value.startswith("@")
        or ":" not in value
        or len(value.encode("utf-8")) > 255
    ):
        raise ApiError(Errcode.INVALID_PARAM, "Invalid user id")
    return UserId(value)


def _reason(body: dict[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise ApiError(Errcode.INVALID_PARAM, "Invalid reason")
    return reason


class RoomHandler:
    def __init__(
        self,
        *,
        server_name: ServerName,
        creator: EventCreator,
        accounts: AccountStore,
        aliases: AccountDataStore,
        node_db: Database,
        notifier: Notifier,
        message_limiter: RateLimiter,
        clock: Clock,
    ) -> None:
        self._server_name = server_name
        self._creator = creator
        self._accounts = accounts
        self._aliases = aliases
        self._node_db = node_db
        self._notifier = notifier
        self._messages = message_limiter
        self._clock = clock
        self.federation: RemoteRoomsHooks | None = None
        """Set by the node when it federates: policy, remote invites, joins and leaves."""

    @property
    def creator(self) -> EventCreator:
        return self._creator

    # ------------------------------------------------------------------ helpers

    async def snapshot(self, room_id: str) -> RoomSnapshot:
        if not room_id.startswith("!") or ":" not in room_id or len(room_id) > 255:
            raise unknown_room()
        snapshot = await self._creator.cache.get(RoomId(room_id))
        if snapshot is None:
            raise unknown_room()
        return snapshot

    async def _send(
        self,
        room_id: RoomId,
        draft: Draft,
        *,
        txn: TxnKey | None = None,
        check: Any = None,
        countersign: Countersign | None = None,
    ) -> EventId:
        federation = self.federation
        if federation is not None:
            check = _with_policy(federation, draft, check)
        try:
            _event, event_id = await self._creator.create(
                room_id, draft, txn=txn, check=check, countersign=countersign
            )
        except LookupError:
            raise unknown_room() from None
        except AuthError as exc:
            raise refused(exc) from None
        except InvalidPdu as exc:
            if "bytes in canonical JSON" in str(exc):
                raise ApiError(
                    Errcode.TOO_LARGE, f"Event larger than {MAX_PDU_BYTES} bytes"
                ) from None
            raise ApiError(Errcode.BAD_JSON, "Event is not valid") from None
        return event_id

    async def _member_content(self, user_id: UserId, membership: str) -> dict[str, Any]:
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            user = await self._accounts.get_user(user_id)
            if user is not None:
                if user.displayname is not None:
                    content["displayname"] = user.displayname
                if user.avatar_url is not None:
                    content["avatar_url"] = user.avatar_url
        return content

    async def resolve_room(self, room_id_or_alias: str) -> RoomId:
        if room_id_or_alias.startswith("#"):
            found = await self._aliases.get_alias(room_id_or_alias)
            if found is None:
                raise ApiError(Errcode.NOT_FOUND, "Unknown room alias")
            return found[0]
        if room_id_or_alias.startswith("!") and ":" in room_id_or_alias:
            return RoomId(room_id_or_alias)
        raise ApiError(Errcode.INVALID_PARAM, "Expected a room id or alias")

    # ------------------------------------------------------------------ rooms

    async def create_room(self, requester: Requester, request: CreateRoomRequest) -> RoomId:
        room_id = RoomId(f"!{secrets.token_urlsafe(18)}:{self._server_name}")
        plan = plan_room(request, requester.user_id, self._server_name)
        remote_invites: list[UserId] = []
        if self.federation is not None:
            # Remote invitees are invited once the room exists: their servers countersign.
            remote = self.federation.is_remote
            remote_invites = [u for u in request.invite if remote(u)]
            if remote_invites and not _plan_federates(request):
                raise ApiError(
                    Errcode.FORBIDDEN,
                    "This room does not federate (io.cis.room.federation): users of other"
                    " servers cannot be invited",
                )
            plan = type(plan)(
                tuple(
                    e for e in plan.events
                    if not (e.type == MEMBER and e.state_key in remote_invites)
                ),
                plan.alias,
            )  # fmt: skip
        if plan.alias is not None:
            try:
                await self._aliases.add_alias(
                    plan.alias, room_id, requester.user_id, self._clock.time_ms()
                )
            except AliasTaken:
                raise ApiError(Errcode.ROOM_IN_USE, "Room alias already taken") from None
        profile = await self._member_content(requester.user_id, "join")
        drafts = []
        for spec in plan.events:
            content = spec.content
            if spec.type == MEMBER and spec.state_key == requester.user_id:
                content = profile
            drafts.append(Draft(requester.user_id, spec.type, content, spec.state_key))
        try:
            await self._creator.create_room(room_id, request.room_version, drafts)
        except AuthError:
            if plan.alias is not None:
                await self._aliases.delete_alias(plan.alias)
            raise ApiError(
                Errcode.INVALID_ROOM_STATE, "The requested initial state is not allowed"
            ) from None
        except InvalidPdu:
            if plan.alias is not None:
                await self._aliases.delete_alias(plan.alias)
            raise ApiError(Errcode.BAD_JSON, "An initial event is not valid") from None
        for user in remote_invites:
            body: dict[str, Any] = {"user_id": user}
            await self.invite(requester, room_id, body, is_direct=request.is_direct)
        return room_id

    async def join(self, requester: Requester, room_id_or_alias: str) -> RoomId:
        room_id = await self.resolve_room(room_id_or_alias)
        federation = self.federation
        if federation is not None:
            held = await self._creator.cache.get(room_id)
            stale = (
                held is not None
                and federation.is_remote(f"@x:{room_id.split(':', 1)[1]}")
                and not any(not federation.is_remote(u) for u in held.members())
            )
            if (held is None or stale) and (
                held is None or held.membership(requester.user_id) != "join"
            ):
                # Not held here (or held without a local member, so its graph may be stale):
                # join through the room's servers.
                await federation.join(requester.user_id, room_id)
                await self._node_db.run_interaction(
                    "unforget_room", timeline.unforget_room_txn, requester.user_id, room_id
                )
                return room_id
        snapshot = await self.snapshot(room_id)
        if snapshot.membership(requester.user_id) == "join":
            return room_id  # joining again changes nothing (profile updates go elsewhere)
        content = await self._member_content(requester.user_id, "join")
        await self._send(room_id, Draft(requester.user_id, MEMBER, content, requester.user_id))
        await self._node_db.run_interaction(
            "unforget_room", timeline.unforget_room_txn, requester.user_id, room_id
        )
        return room_id

    async def invite(
        self, requester: Requester, room_id: str, body: dict[str, Any], *, is_direct: bool = False
    ) -> None:
        target = _user_id(body.get("user_id"))
        snapshot = await self.snapshot(room_id)
        countersign: Countersign | None = None
        if target.split(":", 1)[1] == self._server_name:
            user = await self._accounts.get_user(target)
            if user is None or user.system:
                raise ApiError(Errcode.NOT_FOUND, "Unknown user")
        elif self.federation is not None:
            countersign = self.federation.countersign_invite(snapshot.room_id, target)
        content: dict[str, Any] = {"membership": "invite"}
        if is_direct:
            content["is_direct"] = True
        reason = _reason(body)
        if reason is not None:
            content["reason"] = reason
        if snapshot.membership(target) == "invite":
            return  # already invited: nothing to change
        await self._send(
            snapshot.room_id,
            Draft(requester.user_id, MEMBER, content, target),
            countersign=countersign,
        )
        self._notifier.notify_user(target)

    async def leave(self, requester: Requester, room_id: str, body: dict[str, Any]) -> None:
        if self.federation is not None and room_id.startswith("!"):
            held = await self._creator.cache.get(RoomId(room_id))
            if (
                held is None or held.membership(requester.user_id) is None
            ) and await self.federation.leave(requester.user_id, RoomId(room_id)):
                return  # a remote invite, rejected
        snapshot = await self.snapshot(room_id)
        content: dict[str, Any] = {"membership": "leave"}
        reason = _reason(body)
        if reason is not None:
            content["reason"] = reason
        if snapshot.membership(requester.user_id) in (None, "leave"):
            raise ApiError(Errcode.FORBIDDEN, "You are not in this room")
        await self._send(
            snapshot.room_id, Draft(requester.user_id, MEMBER, content, requester.user_id)
        )

    async def set_membership(
        self, requester: Requester, room_id: str, membership: str, body: dict[str, Any]
    ) -> None:
        """``kick`` (leave of another user), ``ban`` and ``unban`` (leave of a banned user)."""
        target = _user_id(body.get("user_id"))
        snapshot = await self.snapshot(room_id)
        current = snapshot.membership(target)
        if membership == "unban" and current != "ban":
            raise ApiError(Errcode.FORBIDDEN, "That user is not banned")
        if membership == "kick" and current not in ("join", "invite", "knock"):
            raise ApiError(Errcode.FORBIDDEN, "That user is not in this room")
        content: dict[str, Any] = {"membership": "ban" if membership == "ban" else "leave"}
        reason = _reason(body)
        if reason is not None:
            content["reason"] = reason
        await self._send(snapshot.room_id, Draft(requester.user_id, MEMBER, content, target))
        self._notifier.notify_user(target)

    async def forget(self, requester: Requester, room_id: str) -> None:
        row = await self._node_db.run_read(
            "membership_of", timeline.membership_of, RoomId(room_id), requester.user_id
        )
        if row is not None and row.membership in ("join", "invite"):
            raise ApiError(Errcode.UNKNOWN, "Leave the room before forgetting it")
        if row is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown room")
        await self._node_db.run_interaction(
            "forget_room", timeline.forget_room_txn, requester.user_id, RoomId(room_id)
        )

    # ------------------------------------------------------------------ events

    async def send_event(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        txn_id: str,
        content: dict[str, Any],
    ) -> EventId:
        if not txn_id or len(txn_id) > 255:
            raise ApiError(Errcode.INVALID_PARAM, "Invalid transaction id")
        if event_type == "m.room.redaction":
            raise ApiError(Errcode.BAD_JSON, "Use the redact endpoint to redact events")
        self._messages.acquire(requester.user_id)
        snapshot = await self.snapshot(room_id)
        return await self._send(
            snapshot.room_id,
            Draft(requester.user_id, event_type, content),
            txn=TxnKey(requester.user_id, requester.device_id, txn_id),
        )

    async def put_state(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        state_key: str,
        content: dict[str, Any],
    ) -> EventId:
        # Member events may be sent here too (a per-room display name): the auth rules decide.
        if event_type == "m.room.create":
            raise ApiError(Errcode.FORBIDDEN, "The create event cannot be replaced")
        self._messages.acquire(requester.user_id)
        snapshot = await self.snapshot(room_id)
        current = snapshot.state.get((event_type, state_key))
        if (
            current is not None
            and current.sender == requester.user_id
            and dict(current.content) == content
            and event_type != MEMBER
        ):
            return current.event_id  # the same state again: nothing to change
        return await self._send(
            snapshot.room_id, Draft(requester.user_id, event_type, content, state_key)
        )

    async def redact(
        self,
        requester: Requester,
        room_id: str,
        event_id: str,
        txn_id: str,
        body: dict[str, Any],
    ) -> EventId:
        self._messages.acquire(requester.user_id)
        snapshot = await self.snapshot(room_id)
        store = await self._creator.cache.manager.get(snapshot.room_id)
        original = await store.get_event(EventId(event_id)) if store is not None else None
        if original is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown event")

        def may_redact(snap: RoomSnapshot) -> None:
            levels = snap.levels()
            if (
                original.sender != requester.user_id
                and levels.user_level(requester.user_id) < levels.redact
            ):
                raise ApiError(Errcode.FORBIDDEN, "You may not redact this event")

        content: dict[str, Any] = {}
        reason = _reason(body)
        if reason is not None:
            content["reason"] = reason
        return await self._send(
            snapshot.room_id,
            Draft(requester.user_id, "m.room.redaction", content, redacts=EventId(event_id)),
            txn=TxnKey(requester.user_id, requester.device_id, txn_id),
            check=may_redact,
        )

    async def update_profile(self, user_id: UserId, field: str, value: str | None) -> int:
        """Send a new member event carrying the profile to every room the user is joined to;
        return how many rooms it reached."""
        rows = await self._node_db.run_read("user_memberships", timeline.user_memberships, user_id)
        sent = 0
        for row in rows:
            if row.membership != "join":
                continue
            snapshot = await self._creator.cache.get(row.room_id)
            if snapshot is None or snapshot.membership(user_id) != "join":
                continue
            current = snapshot.content(MEMBER, user_id) or {}
            content = dict(current)
            if value is None:
                content.pop(field, None)
            else:
                content[field] = value
            if content == dict(current):
                continue
            try:
                await self._send(row.room_id, Draft(user_id, MEMBER, content, user_id))
                sent += 1
            except ApiError:
                continue
        return sent

    # ------------------------------------------------------------------ aliases

    async def put_alias(self, requester: Requester, alias: str, body: dict[str, Any]) -> None:
        room_id = body.get("room_id")
        if not isinstance(room_id, str):
            raise ApiError(Errcode.BAD_JSON, "room_id is required")
        self._check_alias(alias)
        snapshot = await self.snapshot(room_id)
        if snapshot.membership(requester.user_id) != "join":
            raise ApiError(Errcode.FORBIDDEN, "You are not in this room")
        try:
            await self._aliases.add_alias(
                alias, snapshot.room_id, requester.user_id, self._clock.time_ms()
            )
        except AliasTaken:
            raise ApiError(Errcode.ROOM_IN_USE, "Room alias already taken", status=409) from None

    async def get_alias(self, alias: str) -> dict[str, Any]:
        self._check_alias(alias)
        found = await self._aliases.get_alias(alias)
        if found is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown room alias")
        return {"room_id": found[0], "servers": [self._server_name]}

    async def delete_alias(self, requester: Requester, alias: str) -> None:
        self._check_alias(alias)
        found = await self._aliases.get_alias(alias)
        if found is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown room alias")
        room_id, creator = found
        allowed = creator == requester.user_id
        if not allowed:
            snapshot = await self._creator.cache.get(room_id)
            if snapshot is not None:
                levels = snapshot.levels()
                allowed = levels.user_level(requester.user_id) >= levels.state_default
        if not allowed:
            raise ApiError(Errcode.FORBIDDEN, "You may not remove this alias")
        await self._aliases.delete_alias(alias)

    def _check_alias(self, alias: str) -> None:
        if not alias.startswith("#") or ":" not in alias or len(alias.encode("utf-8")) > 255:
            raise ApiError(Errcode.INVALID_PARAM, "Invalid room alias")
        if alias.split(":", 1)[1] != self._server_name:
            raise ApiError(Errcode.NOT_FOUND, "Room aliases of other servers are not known here")


def _with_policy(
    federation: RemoteRoomsHooks, draft: Draft, check: Callable[[RoomSnapshot], None] | None
) -> Callable[[RoomSnapshot], None]:
    def checked(snapshot: RoomSnapshot) -> None:
        federation.check_local(snapshot, draft)
        if check is not None:
            check(snapshot)

    return checked


def _plan_federates(request: CreateRoomRequest) -> bool:
    """Whether a ``createRoom`` request makes a federated room (``io.cis.room.federation``
    in ``initial_state``, and no ``m.federate: false``)."""
    if request.creation_content.get("m.federate") is False:
        return False
    return any(
        spec.type == "io.cis.room.federation"
        and spec.state_key == ""
        and spec.content.get("federate") is True
        for spec in request.initial_state
    )

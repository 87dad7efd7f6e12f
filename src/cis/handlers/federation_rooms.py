"""Invites, joins and leaves across nodes, and this node's policy for federated rooms.

Both sides of each exchange (Server-Server API "Joining rooms", "Inviting to a room",
"Leaving rooms"), over tunnel requests instead of HTTPS:

- **Invite.** The inviting node builds and authorises the invite under the room's lock, asks
  the invitee's node to countersign it (``Invite``, with the room's stripped state), and only
  then stores and sends it. The invitee's node checks the inviter's signature, signs, and
  records the invite with its stripped state (``remote_invites``): ``/sync`` shows it under
  ``rooms.invite`` before the node holds anything of the room.
- **Join.** By room id, through the inviting server, then the room id's server (and any
  ``server_name`` the client gave): ``MakeJoin`` gives a template on the resident's forward
  extremities, the joining node signs it, ``SendJoin`` has the resident accept it (receipt's
  checks), hand it to the room's other servers, and answer with the state and auth chain.
  The joining node then fetches the room's history down to its create event (catch-up's
  walk, with the state and auth chain already in hand) and stores it all.
- **Leave** of a room the node does not hold (rejecting a remote invite): ``MakeLeave`` /
  ``SendLeave`` likewise.

Policy (``check_local``, run under the room's lock for every local event):

- ``io.cis.room.federation`` cannot be turned on in a room created with ``m.federate: false``
  (permanently private), nor off while users of other servers are joined or invited;
- a user of another server can be invited only into a federated room (else 403 naming
  ``io.cis.room.federation``), and not from a server at trust level 0;
- in rooms this node's users administer, users of servers at trust level 1 get power level 0:
  a local power-levels change raising one of them is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from canonicaljson import encode_canonical_json

from cis.clock import Clock
from cis.federation import frames
from cis.federation import wire_pb2 as pb
from cis.federation.errors import FederationError
from cis.federation.handshake import PeerIdentity
from cis.handlers.client_events import STRIPPED_STATE_TYPES, stripped_event
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.federation import (
    FEDERATION_STATE,
    FederationService,
    RemoteError,
    expect,
    is_federated,
    joined_servers,
)
from cis.handlers.federation_ingest import server_of
from cis.handlers.room_cache import Countersign, Draft, RoomSnapshot
from cis.identity.keys import NodeIdentity
from cis.ids import Did, EventId, RoomId, UserId
from cis.log import get_logger
from cis.matrix import (
    AuthError,
    Event,
    InvalidPdu,
    build_event,
    canonical_json,
    check_auth,
    parse_pdu,
    prepare_pdu,
    sign_event,
)
from cis.matrix.errors import InvalidJson
from cis.matrix.room_versions import SUPPORTED_ROOM_VERSIONS
from cis.storage import federation as fed_store
from cis.storage.client.accounts import AccountStore
from cis.storage.database import Database
from cis.storage.events import EventStatus
from cis.storage.node_store import raise_stream_max_txn
from cis.storage.stream import StreamPositions

log = get_logger(__name__)

MEMBER = "m.room.member"
REQUEST_TIMEOUT = 20.0


def forbidden(message: str) -> ApiError:
    return ApiError(Errcode.FORBIDDEN, message)


class RemoteRooms:
    def __init__(
        self,
        service: FederationService,
        *,
        identity: NodeIdentity,
        accounts: AccountStore,
        node_db: Database,
        positions: StreamPositions,
        clock: Clock,
    ) -> None:
        self._service = service
        self._identity = identity
        self._accounts = accounts
        self._db = node_db
        self._positions = positions
        self._clock = clock
        self.server_name = identity.server_name
        service.register("make_join", self._serve_make_join)
        service.register("send_join", self._serve_send_join)
        service.register("invite", self._serve_invite)
        service.register("make_leave", self._serve_make_leave)
        service.register("send_leave", self._serve_send_leave)

    # ------------------------------------------------------------------ policy

    def is_remote(self, user_id: str) -> bool:
        return server_of(user_id) != self.server_name

    def check_local(self, snapshot: RoomSnapshot, draft: Draft) -> None:
        """Refuse a local event this node's policy forbids (see the module docstring)."""
        if draft.type == FEDERATION_STATE and draft.state_key == "":
            create = snapshot.state.get(("m.room.create", ""))
            wants = draft.content.get("federate") is True
            if wants and create is not None and create.content.get("m.federate") is False:
                raise forbidden(
                    f"This room was created with m.federate false: {FEDERATION_STATE} cannot"
                    " be turned on"
                )
            if not wants and is_federated(snapshot) and self._remote_members(snapshot):
                raise forbidden(
                    f"Users of other servers are in this room: {FEDERATION_STATE} cannot be"
                    " turned off"
                )
        if draft.type == MEMBER and draft.state_key is not None and self.is_remote(draft.state_key):
            membership = draft.content.get("membership")
            if membership == "invite":
                if not is_federated(snapshot):
                    raise forbidden(
                        f"This room does not federate ({FEDERATION_STATE}): users of other"
                        " servers cannot be invited"
                    )
                if self._service.server_level(server_of(draft.state_key)) <= 0:
                    raise forbidden("That user's server is at trust level 0 on this node")
        if draft.type == "m.room.power_levels" and draft.state_key == "":
            users = draft.content.get("users")
            previous = snapshot.content("m.room.power_levels") or {}
            old_users = previous.get("users")
            before: Mapping[str, Any] = old_users if isinstance(old_users, Mapping) else {}
            if isinstance(users, dict):
                for user, level in users.items():
                    if not isinstance(user, str) or not self.is_remote(user):
                        continue
                    raised = isinstance(level, int) and level > 0 and level != before.get(user)
                    if raised and self._service.server_level(server_of(user)) == 1:
                        raise forbidden(
                            f"{user}'s server is at trust level 1 on this node: its users get"
                            " power level 0 in rooms administered here"
                        )

    def _remote_members(self, snapshot: RoomSnapshot) -> list[str]:
        return [
            key
            for (kind, key), event in snapshot.state.items()
            if kind == MEMBER and event.membership in ("join", "invite") and self.is_remote(key)
        ]

    # ------------------------------------------------------------------ inviting

    def countersign_invite(self, room_id: RoomId, target: UserId) -> Countersign:
        """The step the room's event creator runs under the lock for a remote invite."""

        async def countersign(event: Event) -> Event:
            server = server_of(target)
            did = self._service.did_of_server(server)
            if did is None:
                raise ApiError(Errcode.NOT_FOUND, f"No route to {server}", status=502)
            snapshot = self._service.cache.cached(room_id)
            stripped: list[bytes] = []
            if snapshot is not None:
                for kind in STRIPPED_STATE_TYPES:
                    found = snapshot.state.get((kind, ""))
                    if found is not None:
                        stripped.append(
                            bytes(encode_canonical_json(stripped_event(found.to_pdu())))
                        )
            request = pb.Request(
                invite=pb.Invite(
                    room_id=room_id,
                    event_id=event.event_id,
                    room_version=event.room_version,
                    event_json=event.canonical_bytes,
                    invite_room_state=stripped,
                )
            )
            try:
                response = await self._service.request(did, request, REQUEST_TIMEOUT)
                body = expect(response, "invite")
            except RemoteError as exc:
                raise forbidden(f"{server} refused the invite ({exc.errcode})") from None
            except (FederationError, TimeoutError):
                raise ApiError(Errcode.UNKNOWN, f"{server} did not answer", status=502) from None
            signed = self._parse(event.room_version, body.event_json)
            if signed is None or signed.event_id != event.event_id:
                raise forbidden(f"{server} returned another event")
            if not self._signed_by(signed, server) or not self._signed_by(signed, self.server_name):
                raise forbidden(f"{server} did not countersign the invite")
            return signed

        return countersign

    async def _serve_invite(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = request.invite
        if body.room_version not in SUPPORTED_ROOM_VERSIONS:
            raise RemoteError("M_INCOMPATIBLE_ROOM_VERSION", "room version not supported")
        event = self._parse(body.room_version, body.event_json)
        if event is None or event.event_id != body.event_id or event.room_id != body.room_id:
            raise RemoteError("M_BAD_JSON", "not a valid invite event")
        target = event.state_key
        if event.type != MEMBER or event.membership != "invite" or target is None:
            raise RemoteError("M_BAD_JSON", "not an invite")
        if self.is_remote(target) or server_of(event.sender) != peer.server_name:
            raise RemoteError("M_FORBIDDEN", "the invite is not from your server to mine")
        if not self._signed_by(event, peer.server_name):
            raise RemoteError("M_FORBIDDEN", "the invite is not signed by its sender's server")
        user = await self._accounts.get_user(UserId(target))
        # Of the system users only the sovereign user may be invited: skills join the rooms of
        # other nodes as it (a repository room to replicate, docs/skills.md).
        sovereign = target == self._identity.system_user_id
        if user is None or (user.system and not sovereign):
            raise RemoteError("M_NOT_FOUND", "unknown user")
        signed_pdu = sign_event(
            body.room_version, event.to_pdu(), self.server_name, self._identity.key_id,
            self._identity.signing_key,
        )  # fmt: skip
        signed = parse_pdu(body.room_version, signed_pdu)
        stripped: list[dict[str, Any]] = []
        for raw in list(body.invite_room_state)[:20]:
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict) and isinstance(item.get("type"), str):
                stripped.append(stripped_event(item))
        await self.record_invite(
            fed_store.RemoteInvite(
                RoomId(event.room_id), UserId(target), event.event_id, event.sender,
                body.room_version, stripped, self._clock.time_ms(),
            ),
            signed,
        )  # fmt: skip
        log.info("remote_invite", room_id=event.room_id, user=target, sender=event.sender)
        return pb.Response(
            id=request.id, invite=pb.InviteResponse(event_json=signed.canonical_bytes)
        )

    async def record_invite(self, invite: fed_store.RemoteInvite, event: Event) -> None:
        """Keep a remote invite and make the membership index say ``invite`` at a new stream
        position, so the invitee's ``/sync`` shows it (the room is not held here yet)."""
        snapshot = await self._service.cache.get(invite.room_id)
        if snapshot is not None and snapshot.membership(invite.user_id) in ("join", "invite"):
            return  # the room is held: the invite arrives as an event of it
        positions = self._positions.allocate(1)
        try:

            def txn(conn: Any) -> None:
                fed_store.put_remote_invite_txn(conn, invite)
                fed_store.set_memberships_txn(
                    conn, invite.room_id, [(invite.user_id, "invite", invite.event_id)],
                    positions.start,
                )  # fmt: skip
                raise_stream_max_txn(conn, positions.start)

            await self._db.run_interaction("remote_invite", txn)
        finally:
            self._positions.complete(positions)
        self._service_memberships(invite.room_id, {invite.user_id})

    def _service_memberships(self, room_id: RoomId, users: set[UserId]) -> None:
        self._service.ingest.notify_memberships(room_id, users)

    async def invite_state(self, room_id: RoomId, user_id: UserId) -> list[dict[str, Any]] | None:
        """The ``invite_state`` events ``/sync`` shows for a remote invite, if there is one."""
        invite = await self._db.run_read("remote_invite", fed_store.remote_invite, room_id, user_id)
        if invite is None:
            return None
        events = list(invite.stripped_state)
        events.append(
            {
                "type": MEMBER,
                "state_key": user_id,
                "sender": invite.sender,
                "content": {"membership": "invite"},
                "event_id": invite.event_id,
                "origin_server_ts": invite.received_ts,
            }
        )
        return events

    # ------------------------------------------------------------------ joining

    async def join(self, user_id: UserId, room_id: RoomId, via: Sequence[str] = ()) -> RoomId:
        """Join a room this node does not hold (or holds without a joined user)."""
        candidates: list[str] = list(via)
        invite = await self._db.run_read("remote_invite", fed_store.remote_invite, room_id, user_id)
        if invite is not None:
            candidates.append(server_of(invite.sender))
        candidates.append(server_of(room_id))
        tried: list[str] = []
        last: Exception | None = None
        for server in dict.fromkeys(candidates):
            if server == self.server_name or self._service.server_level(server) <= 0:
                continue
            did = self._service.did_of_server(server)
            if did is None:
                continue
            tried.append(server)
            try:
                await self._join_via(did, user_id, room_id)
            except (RemoteError, FederationError, TimeoutError) as exc:
                log.info("join_via_failed", room_id=room_id, server=server, error=str(exc))
                last = exc
                continue
            await self._db.run_interaction(
                "forget_invite", fed_store.delete_remote_invite_txn, room_id, user_id
            )
            return room_id
        if isinstance(last, RemoteError) and last.errcode == "M_FORBIDDEN":
            raise forbidden(f"The room's servers refused the join: {last.error}")
        if not tried:
            raise ApiError(Errcode.NOT_FOUND, "No server of this room is reachable from here")
        raise ApiError(Errcode.NOT_FOUND, "Could not join the room through its servers")

    async def _join_via(self, did: Did, user_id: UserId, room_id: RoomId) -> None:
        service = self._service
        response = await service.request(
            did,
            pb.Request(
                make_join=pb.MakeJoin(
                    room_id=room_id,
                    user_id=user_id,
                    supported_versions=sorted(SUPPORTED_ROOM_VERSIONS),
                )
            ),
            REQUEST_TIMEOUT,
        )
        template = expect(response, "make_join")
        version = template.room_version
        if version not in SUPPORTED_ROOM_VERSIONS:
            raise RemoteError("M_INCOMPATIBLE_ROOM_VERSION", version)
        event = await self._sign_template(version, template.event_json, user_id, room_id, "join")
        response = await service.request(
            did,
            pb.Request(
                send_join=pb.SendJoin(
                    room_id=room_id, event_id=event.event_id, event_json=event.canonical_bytes
                )
            ),
            REQUEST_TIMEOUT,
        )
        body = expect(response, "send_join")
        checked = await service.ingest.check(version, list(body.events))
        prefetched = {e.event_id: e for e in checked}
        prefetched[event.event_id] = event
        count = await service.build_room(did, room_id, [event.event_id], prefetched, version)
        held = await service.ingest.held(room_id, [event.event_id])
        if held.get(event.event_id) != EventStatus.TIMELINE.value:
            raise RemoteError("M_UNKNOWN", "the join did not take")
        log.info("room_joined_remotely", room_id=room_id, user=user_id, events=count)

    async def _sign_template(
        self, version: str, raw: bytes, user_id: UserId, room_id: RoomId, membership: str
    ) -> Event:
        try:
            template = canonical_json.loads(raw)
        except InvalidJson:
            raise RemoteError("M_BAD_JSON", "the template is not JSON") from None
        if (
            not isinstance(template, dict)
            or template.get("type") != MEMBER
            or template.get("sender") != user_id
            or template.get("state_key") != user_id
            or template.get("room_id") != room_id
            or not isinstance(template.get("content"), dict)
            or template["content"].get("membership") != membership
        ):
            raise RemoteError("M_BAD_JSON", "the template is not the expected event")
        content = dict(template["content"])
        if membership == "join":
            user = await self._accounts.get_user(user_id)
            if user is not None and user.displayname is not None:
                content["displayname"] = user.displayname
        partial = {
            k: v for k, v in template.items() if k not in ("hashes", "signatures", "unsigned")
        }
        partial["content"] = content
        partial["origin_server_ts"] = self._clock.time_ms()
        try:
            return build_event(
                version,
                partial,
                self.server_name,
                self._identity.key_id,
                self._identity.signing_key,
            )
        except InvalidPdu as exc:
            raise RemoteError("M_BAD_JSON", f"the template does not make an event: {exc}") from None

    async def _serve_make_join(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = request.make_join
        return await self._make_membership(
            peer, request.id, body.room_id, body.user_id,
            membership="join", versions=list(body.supported_versions),
        )  # fmt: skip

    async def _serve_make_leave(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = request.make_leave
        response = await self._make_membership(
            peer, request.id, body.room_id, body.user_id,
            membership="leave", versions=list(SUPPORTED_ROOM_VERSIONS),
        )  # fmt: skip
        return pb.Response(id=request.id, make_leave=response.make_join)

    async def _make_membership(
        self,
        peer: PeerIdentity,
        request_id: int,
        room_id: str,
        user_id: str,
        *,
        membership: str,
        versions: list[str],
    ) -> pb.Response:
        if server_of(user_id) != peer.server_name:
            raise RemoteError("M_FORBIDDEN", "the user is not of your server")
        snapshot = await self._service.cache.get(RoomId(room_id))
        if snapshot is None:
            raise RemoteError("M_NOT_FOUND", "unknown room")
        if not is_federated(snapshot):
            raise RemoteError("M_FORBIDDEN", f"this room does not federate ({FEDERATION_STATE})")
        if snapshot.room_version not in versions:
            raise RemoteError("M_INCOMPATIBLE_ROOM_VERSION", snapshot.room_version)
        async with snapshot.lock:
            template = prepare_pdu(
                snapshot.room_version,
                room_id=room_id,
                sender=user_id,
                event_type=MEMBER,
                content={"membership": membership},
                origin_server_ts=self._clock.time_ms(),
                forward_extremities=snapshot.extremity_list(),
                current_state={k: e.event_id for k, e in snapshot.state.items()},
                state_key=user_id,
            )
            probe = build_event(
                snapshot.room_version, template, self.server_name, self._identity.key_id,
                self._identity.signing_key,
            )  # fmt: skip
            try:
                check_auth(snapshot.room_version, probe, snapshot.state)
            except AuthError as exc:
                raise RemoteError("M_FORBIDDEN", f"not allowed (rule {exc.rule})") from None
        return pb.Response(
            id=request_id,
            make_join=pb.MakeJoinResponse(
                room_version=snapshot.room_version,
                event_json=bytes(encode_canonical_json(template)),
            ),
        )

    async def _serve_send_join(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = request.send_join
        snapshot, event = await self._accept_membership(
            peer, body.room_id, body.event_id, body.event_json, "join"
        )
        state, auth_chain = await self._service.state_and_auth_chain(snapshot, event.event_id)
        ids = [*sorted(set(state.values())), *sorted(auth_chain)]
        store = await self._service.cache.manager.get(snapshot.room_id)
        events: list[bytes] = []
        if store is not None:
            found = await store.get_events([EventId(i) for i in ids[: frames.MAX_BATCH]])
            size = 0
            for event_id in ids[: frames.MAX_BATCH]:
                stored = found.get(EventId(event_id))
                if stored is None:
                    continue
                size += len(stored.canonical_bytes) + 8
                if size > 800 * 1024:
                    break
                events.append(stored.canonical_bytes)
        return pb.Response(
            id=request.id,
            send_join=pb.SendJoinResponse(
                origin=self.server_name,
                event_json=event.canonical_bytes,
                state_ids=sorted(set(state.values())),
                auth_chain_ids=sorted(auth_chain),
                events=events,
            ),
        )

    async def _serve_send_leave(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = request.send_leave
        await self._accept_membership(peer, body.room_id, body.event_id, body.event_json, "leave")
        return pb.Response(id=request.id, send_leave=pb.Empty())

    async def _accept_membership(
        self, peer: PeerIdentity, room_id: str, event_id: str, raw: bytes, membership: str
    ) -> tuple[RoomSnapshot, Event]:
        snapshot = await self._service.federated_snapshot(RoomId(room_id))
        if snapshot is None:
            raise RemoteError("M_FORBIDDEN", f"this room does not federate ({FEDERATION_STATE})")
        checked = await self._service.ingest.check(snapshot.room_version, [raw])
        if not checked:
            raise RemoteError("M_FORBIDDEN", "the event is not validly signed")
        event = checked[0]
        if (
            event.event_id != event_id
            or event.type != MEMBER
            or event.membership != membership
            or event.state_key != event.sender
            or server_of(event.sender) != peer.server_name
            or event.room_id != room_id
        ):
            raise RemoteError("M_BAD_JSON", f"not a {membership} of a user of your server")
        result = await self._service.ingest.process(
            snapshot.room_id, snapshot.room_version, [event]
        )
        held = await self._service.ingest.held(snapshot.room_id, [event.event_id])
        if held.get(event.event_id) != EventStatus.TIMELINE.value:
            status = result.statuses.get(event.event_id)
            raise RemoteError("M_FORBIDDEN", f"the {membership} was not accepted ({status})")
        fresh = await self._service.cache.get(snapshot.room_id)
        if fresh is not None:
            # The joining server does not know the room's servers yet: the resident hands
            # the event on (as Matrix's send_join does).
            servers = joined_servers(fresh) - {peer.server_name}
            self._service.send_pdu(event, servers)
        return snapshot, event

    # ------------------------------------------------------------------ leaving

    async def leave(self, user_id: UserId, room_id: RoomId) -> bool:
        """Reject a remote invite to a room this node does not hold; False if there is none."""
        invite = await self._db.run_read("remote_invite", fed_store.remote_invite, room_id, user_id)
        if invite is None:
            return False
        server = server_of(invite.sender)
        did = self._service.did_of_server(server)
        if did is not None and self._service.server_level(server) > 0:
            try:
                await self._leave_via(did, user_id, room_id)
            except (RemoteError, FederationError, TimeoutError) as exc:
                log.info("remote_leave_failed", room_id=room_id, server=server, error=str(exc))
        positions = self._positions.allocate(1)
        try:

            def txn(conn: Any) -> None:
                fed_store.delete_remote_invite_txn(conn, room_id, user_id)
                fed_store.set_memberships_txn(
                    conn, room_id, [(user_id, "leave", invite.event_id)], positions.start
                )
                raise_stream_max_txn(conn, positions.start)

            await self._db.run_interaction("reject_remote_invite", txn)
        finally:
            self._positions.complete(positions)
        self._service_memberships(room_id, {user_id})
        return True

    async def _leave_via(self, did: Did, user_id: UserId, room_id: RoomId) -> None:
        response = await self._service.request(
            did,
            pb.Request(make_leave=pb.MakeLeave(room_id=room_id, user_id=user_id)),
            REQUEST_TIMEOUT,
        )
        template = expect(response, "make_leave")
        event = await self._sign_template(
            template.room_version, template.event_json, user_id, room_id, "leave"
        )
        response = await self._service.request(
            did,
            pb.Request(
                send_leave=pb.SendLeave(
                    room_id=room_id, event_id=event.event_id, event_json=event.canonical_bytes
                )
            ),
            REQUEST_TIMEOUT,
        )
        expect(response, "send_leave")

    # ------------------------------------------------------------------ helpers

    def _parse(self, room_version: str, raw: bytes) -> Event | None:
        try:
            pdu = canonical_json.loads(raw)
            if not isinstance(pdu, dict):
                return None
            return parse_pdu(room_version, pdu)
        except (InvalidJson, InvalidPdu):
            return None

    def _signed_by(self, event: Event, server: str) -> bool:
        return self._service.keys.signed_by(event, server)

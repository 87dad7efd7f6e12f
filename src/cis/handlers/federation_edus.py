"""Ephemeral data across nodes (Server-Server API "EDUs", "End-to-End Encryption"): typing,
read receipts, device-list updates, to-device messages, and key queries and claims, so that
ordinary clients on different nodes can talk, see each other typing and read, and encrypt.

Outbound, each hook is called by the Client-Server handler for a *local* user only, and goes
to the servers that need it (those with users joined to the room; for device lists, those
sharing a room with the user; for to-device, the target's server). Inbound, every EDU is
checked against the peer that sent it (the user it speaks for must belong to that peer's
server, and be joined where a room is involved); anything else is dropped and logged.
Key queries and claims are requests: answered from this node's store for its own users only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from cis.federation import wire_pb2 as pb
from cis.federation.errors import FederationError
from cis.federation.handshake import PeerIdentity
from cis.handlers.federation import FederationService, RemoteError, expect, joined_servers
from cis.handlers.federation_ingest import server_of
from cis.handlers.notifier import Notifier
from cis.handlers.stream_counters import StreamCounters
from cis.handlers.typing import TypingHandler
from cis.ids import DeviceId, EventId, RoomId, UserId
from cis.log import get_logger
from cis.storage.client import timeline
from cis.storage.client.accounts import AccountStore
from cis.storage.client.e2e import E2eStore
from cis.storage.client.receipts import Receipt, ReceiptStore
from cis.storage.database import Database

log = get_logger(__name__)

REMOTE_TYPING_TIMEOUT_MS: Final = 30_000
MAX_JSON_BYTES: Final = 512 * 1024
KEY_REQUEST_TIMEOUT: Final = 10.0


def _json_object(raw: bytes) -> dict[str, Any] | None:
    if len(raw) > MAX_JSON_BYTES:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class EduRelay:
    def __init__(
        self,
        service: FederationService,
        *,
        typing: TypingHandler,
        receipts: ReceiptStore,
        e2e: E2eStore,
        accounts: AccountStore,
        counters: StreamCounters,
        notifier: Notifier,
        node_db: Database,
    ) -> None:
        self._service = service
        self._typing = typing
        self._receipts = receipts
        self._e2e = e2e
        self._accounts = accounts
        self._counters = counters
        self._notifier = notifier
        self._db = node_db
        self.server_name = service.server_name
        service.set_edu_handler(self.on_edu)
        service.register("key_query", self._serve_key_query)
        service.register("key_claim", self._serve_key_claim)
        service.register("user_devices", self._serve_user_devices)

    # ------------------------------------------------------------------ outbound

    def _room_servers(self, room_id: RoomId) -> set[str]:
        snapshot = self._service.cache.cached(room_id)
        if snapshot is None:
            return set()
        from cis.handlers.federation import is_federated

        return joined_servers(snapshot) if is_federated(snapshot) else set()

    def typing_changed(self, room_id: RoomId, user_id: UserId, typing: bool) -> None:
        edu = pb.Edu(typing=pb.Typing(room_id=room_id, user_id=user_id, typing=typing))
        self._service.send_edu(self._room_servers(room_id), edu)

    def receipt_sent(self, receipt: Receipt) -> None:
        if receipt.receipt_type == "m.read.private":
            return
        edu = pb.Edu(
            receipt=pb.Receipt(
                room_id=receipt.room_id, receipt_type=receipt.receipt_type,
                user_id=receipt.user_id, event_ids=[receipt.event_id],
                thread_id=receipt.thread_id, ts=receipt.ts,
            )
        )  # fmt: skip
        self._service.send_edu(self._room_servers(receipt.room_id), edu)

    async def device_list_changed(self, user_id: UserId, device_id: DeviceId) -> None:
        servers = await self._servers_sharing(user_id)
        if not servers:
            return
        found = await self._e2e.query({user_id: [device_id]})
        keys = found.get(user_id, {}).get(device_id)
        edu = pb.Edu(
            device_list_update=pb.DeviceListUpdate(
                user_id=user_id,
                device_id=device_id,
                stream_id=await self._e2e.device_list_position(),
                deleted=keys is None,
                keys_json=json.dumps(keys).encode() if keys is not None else b"",
            )
        )
        self._service.send_edu(servers, edu)

    async def _servers_sharing(self, user_id: UserId) -> set[str]:
        rows = await self._db.run_read("user_memberships", timeline.user_memberships, user_id)
        servers: set[str] = set()
        for row in rows:
            if row.membership == "join":
                servers |= self._room_servers(row.room_id)
        servers.discard(self.server_name)
        return servers

    def send_to_device(
        self,
        sender: UserId,
        event_type: str,
        message_id: str,
        messages: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """``messages`` for users of other servers, one EDU per server."""
        by_server: dict[str, dict[str, Any]] = {}
        for user, devices in messages.items():
            server = server_of(user)
            if server != self.server_name:
                by_server.setdefault(server, {})[user] = devices
        for server, targets in by_server.items():
            edu = pb.Edu(
                direct_to_device=pb.DirectToDevice(
                    sender=sender, type=event_type, message_id=message_id,
                    messages_json=json.dumps(targets).encode(),
                )
            )  # fmt: skip
            self._service.send_edu([server], edu)

    async def query_keys(
        self, wanted: Mapping[UserId, Sequence[DeviceId]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Device keys of users of other servers, asked of each server in parallel;
        ``(device_keys, failures)``."""
        by_server: dict[str, dict[str, list[str]]] = {}
        for user, devices in wanted.items():
            by_server.setdefault(server_of(user), {})[user] = list(devices)

        async def ask(server: str, users: dict[str, list[str]]) -> dict[str, Any]:
            body = json.dumps({"device_keys": users}).encode()
            answer = await self._ask(
                server, pb.Request(key_query=pb.JsonBody(json=body)), "key_query"
            )
            keys = answer.get("device_keys")
            if not isinstance(keys, dict):
                raise RemoteError("M_BAD_JSON", "no device_keys")
            return {u: v for u, v in keys.items() if isinstance(v, dict) and server_of(u) == server}

        return await self._fan_out(by_server, ask)

    async def claim_keys(
        self, wanted: Mapping[UserId, Mapping[DeviceId, str]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        by_server: dict[str, dict[str, dict[str, str]]] = {}
        for user, devices in wanted.items():
            by_server.setdefault(server_of(user), {})[user] = {
                str(d): a for d, a in devices.items()
            }

        async def ask(server: str, users: dict[str, dict[str, str]]) -> dict[str, Any]:
            body = json.dumps({"one_time_keys": users}).encode()
            answer = await self._ask(
                server, pb.Request(key_claim=pb.JsonBody(json=body)), "key_claim"
            )
            keys = answer.get("one_time_keys")
            if not isinstance(keys, dict):
                raise RemoteError("M_BAD_JSON", "no one_time_keys")
            return {u: v for u, v in keys.items() if isinstance(v, dict) and server_of(u) == server}

        return await self._fan_out(by_server, ask)

    async def _fan_out(
        self, by_server: Mapping[str, Any], ask: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        found: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        servers = list(by_server)
        results = await asyncio.gather(
            *(ask(s, by_server[s]) for s in servers), return_exceptions=True
        )
        for server, result in zip(servers, results, strict=True):
            if isinstance(result, BaseException):
                failures[server] = {"status": 503, "message": "not reachable"}
            else:
                found.update(result)
        return found, failures

    async def _ask(self, server: str, request: pb.Request, kind: str) -> dict[str, Any]:
        did = self._service.did_of_server(server)
        if did is None or self._service.server_level(server) <= 0:
            raise RemoteError("M_NOT_FOUND", "unknown server")
        try:
            response = await self._service.request(did, request, KEY_REQUEST_TIMEOUT)
        except (FederationError, TimeoutError) as exc:
            raise RemoteError("M_UNKNOWN", str(exc)) from None
        answer = _json_object(expect(response, kind).json)
        if answer is None:
            raise RemoteError("M_BAD_JSON", "not a JSON object")
        return answer

    # ------------------------------------------------------------------ serving

    async def _serve_key_query(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = _json_object(request.key_query.json) or {}
        asked = body.get("device_keys")
        wanted: dict[UserId, list[DeviceId]] = {}
        if isinstance(asked, dict):
            for user, devices in list(asked.items())[:1000]:
                if isinstance(user, str) and server_of(user) == self.server_name:
                    ids = devices if isinstance(devices, list) else []
                    wanted[UserId(user)] = [DeviceId(d) for d in ids if isinstance(d, str)]
        found = await self._e2e.query(wanted) if wanted else {}
        answer = json.dumps({"device_keys": found}).encode()
        return pb.Response(id=request.id, key_query=pb.JsonBody(json=answer))

    async def _serve_key_claim(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        body = _json_object(request.key_claim.json) or {}
        asked = body.get("one_time_keys")
        wanted: dict[UserId, dict[DeviceId, str]] = {}
        if isinstance(asked, dict):
            for user, devices in list(asked.items())[:1000]:
                if (
                    isinstance(user, str)
                    and server_of(user) == self.server_name
                    and isinstance(devices, dict)
                ):
                    wanted[UserId(user)] = {
                        DeviceId(d): a
                        for d, a in devices.items()
                        if isinstance(d, str) and isinstance(a, str)
                    }
        claimed = await self._e2e.claim(wanted) if wanted else {}
        answer = json.dumps({"one_time_keys": claimed}).encode()
        return pb.Response(id=request.id, key_claim=pb.JsonBody(json=answer))

    async def _serve_user_devices(self, peer: PeerIdentity, request: pb.Request) -> pb.Response:
        user = request.user_devices.user_id
        if server_of(user) != self.server_name:
            raise RemoteError("M_FORBIDDEN", "not a user of this server")
        found = await self._e2e.query({UserId(user): []})
        devices = [
            {"device_id": d, "keys": k} for d, k in sorted(found.get(UserId(user), {}).items())
        ]
        answer = json.dumps({"user_id": user, "devices": devices, "stream_id": 0}).encode()
        return pb.Response(id=request.id, user_devices=pb.JsonBody(json=answer))

    # ------------------------------------------------------------------ inbound

    async def on_edu(self, peer: PeerIdentity, edu: pb.Edu) -> None:
        kind = edu.WhichOneof("kind")
        try:
            if kind == "typing":
                await self._on_typing(peer, edu.typing)
            elif kind == "receipt":
                await self._on_receipt(peer, edu.receipt)
            elif kind == "device_list_update":
                await self._on_device_list(peer, edu.device_list_update)
            elif kind == "direct_to_device":
                await self._on_to_device(peer, edu.direct_to_device)
        except Exception:
            log.exception("edu_failed", did=peer.did, kind=kind)

    async def _joined(self, room_id: str, user_id: str) -> RoomId | None:
        if not room_id.startswith("!"):
            return None
        snapshot = await self._service.federated_snapshot(RoomId(room_id))
        if snapshot is None or snapshot.membership(user_id) != "join":
            return None
        return snapshot.room_id

    async def _on_typing(self, peer: PeerIdentity, typing: pb.Typing) -> None:
        if server_of(typing.user_id) != peer.server_name:
            log.info("edu_refused", did=peer.did, kind="typing")
            return
        room_id = await self._joined(typing.room_id, typing.user_id)
        if room_id is not None:
            self._typing.set_typing(
                room_id, UserId(typing.user_id), typing.typing, REMOTE_TYPING_TIMEOUT_MS
            )

    async def _on_receipt(self, peer: PeerIdentity, receipt: pb.Receipt) -> None:
        if server_of(receipt.user_id) != peer.server_name or receipt.receipt_type != "m.read":
            log.info("edu_refused", did=peer.did, kind="receipt")
            return
        room_id = await self._joined(receipt.room_id, receipt.user_id)
        if room_id is None or not receipt.event_ids:
            return
        event_id = receipt.event_ids[-1]
        if not event_id.startswith("$") or len(event_id) > 255 or len(receipt.thread_id) > 255:
            return
        position = await self._receipts.put(
            room_id=room_id, receipt_type=receipt.receipt_type, user_id=UserId(receipt.user_id),
            thread_id=receipt.thread_id, event_id=EventId(event_id), ts=int(receipt.ts),
        )  # fmt: skip
        self._counters.advance("receipts", position)
        self._notifier.notify_room(room_id)

    async def _on_device_list(self, peer: PeerIdentity, update: pb.DeviceListUpdate) -> None:
        if server_of(update.user_id) != peer.server_name:
            log.info("edu_refused", did=peer.did, kind="device_list_update")
            return
        user = UserId(update.user_id)
        position = await self._e2e.mark_device_list_change(user)
        self._counters.advance("device_lists", position)
        rows = await self._db.run_read("room_memberships_of", timeline.user_memberships, user)
        local: set[UserId] = set()
        for row in rows:
            if row.membership != "join":
                continue
            members = await self._db.run_read(
                "room_memberships", timeline.room_memberships, row.room_id
            )
            local |= {
                m.user_id for m in members
                if m.membership == "join" and server_of(m.user_id) == self.server_name
            }  # fmt: skip
        self._notifier.notify_users(local)

    async def _on_to_device(self, peer: PeerIdentity, message: pb.DirectToDevice) -> None:
        if server_of(message.sender) != peer.server_name or not message.type:
            log.info("edu_refused", did=peer.did, kind="direct_to_device")
            return
        messages = _json_object(message.messages_json)
        if messages is None:
            return
        queued: list[tuple[UserId, DeviceId, Mapping[str, Any]]] = []
        for user, devices in list(messages.items())[:1000]:
            if not isinstance(user, str) or server_of(user) != self.server_name:
                continue
            if not isinstance(devices, dict):
                continue
            for device, content in devices.items():
                if not isinstance(content, dict):
                    continue
                if device == "*":
                    records = await self._accounts.list_devices(UserId(user))
                    queued.extend((UserId(user), r.device_id, content) for r in records)
                else:
                    queued.append((UserId(user), DeviceId(device), content))
        if not queued:
            return
        last = await self._e2e.queue_to_device(UserId(message.sender), message.type, queued[:1000])
        self._counters.advance("to_device", last)
        self._notifier.notify_users({u for u, _, _ in queued})

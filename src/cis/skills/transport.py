"""``TunnelPeerTransport``: skill peer calls carried by federation's tunnels.

Each ``SkillApi.call_peer`` is one ``TunnelManager`` request and its response, of the kind
``skill_call`` (``wire.proto``: ``SkillCall`` / ``SkillReply``), so a call gets what every
tunnel request gets: the peer authenticated by its Noise handshake and DID, frames numbered and
re-sent across reconnects, and trust: a node at trust level 0 has no tunnel, and a request
from one is refused before it reaches a skill.

Invariants:

1. **The caller is who the tunnel says.** The callee's skill is told the node id of the
   tunnel's authenticated DID, never a name taken from the call.
2. **Unreachable is one error.** No known DID for the node, no open tunnel, a trust level of 0,
   no answer in time, or a tunnel error all become ``PeerUnreachable``, which the skill host
   turns into ``SkillUnavailable("node N unreachable (…)")``; a skill's own refusal travels in
   the reply body (``cis.skills.peers``).
3. **Calls never wait behind frames.** ``FederationService`` runs each request as a task of its
   own, so a long call (a push indexed on the home node) does not hold up room replication.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from cis.federation import wire_pb2 as pb
from cis.federation.errors import FederationError
from cis.federation.handshake import PeerIdentity
from cis.identity.errors import InvalidName
from cis.identity.names import server_name_for, validate_node_name
from cis.ids import Did
from cis.log import get_logger
from cis.skills.peers import PeerUnreachable

__all__ = ["CALL_TIMEOUT_S", "PeerCallee", "TunnelPeerTransport", "TunnelRequests"]

log = get_logger(__name__)

CALL_TIMEOUT_S: Final = 120.0
"""How long one call may take, answer included (a push's last step indexes the pack)."""
SKILL_NAME_CHARS: Final = 32
METHOD_NAME_CHARS: Final = 64
RequestHandler = Callable[[PeerIdentity, pb.Request], Awaitable[pb.Response]]


class TunnelRequests(Protocol):
    """What the transport needs of federation (``FederationService``)."""

    def did_of_server(self, server_name: str) -> Did | None: ...

    def server_level(self, server_name: str) -> int: ...

    def online(self, did: Did) -> bool: ...

    async def request(self, did: Did, request: pb.Request, within: float = 30.0) -> pb.Response: ...

    def register(self, kind: str, handler: RequestHandler) -> None: ...


class PeerCallee(Protocol):
    """The callee's side (``SkillHost.handle_peer_call``)."""

    async def handle_peer_call(
        self, caller: str, skill: str, method: str, body: bytes
    ) -> bytes: ...


class TunnelPeerTransport:
    """A ``PeerTransport`` over the node's tunnels; ``attach`` also answers incoming calls."""

    def __init__(self, federation: TunnelRequests, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._federation = federation
        self._timeout_s = timeout_s

    def attach(self, callee: PeerCallee) -> None:
        """Answer ``skill_call`` requests with ``callee`` (the node's skill host)."""

        async def serve(peer: PeerIdentity, request: pb.Request) -> pb.Response:
            call = request.skill_call
            if not _valid_name(call.skill, SKILL_NAME_CHARS) or not _valid_name(
                call.method, METHOD_NAME_CHARS
            ):
                return pb.Response(
                    id=request.id,
                    error=pb.Error(errcode="M_INVALID_PARAM", error="bad skill or method name"),
                )
            body = await callee.handle_peer_call(
                str(peer.node_id), call.skill, call.method, bytes(call.body)
            )
            return pb.Response(id=request.id, skill_call=pb.SkillReply(body=body))

        self._federation.register("skill_call", serve)

    def trust_level(self, node_id: str) -> int:
        """The trust level this node gives ``node_id`` (0: nothing crosses)."""
        try:
            server = server_name_for(validate_node_name(node_id))
        except InvalidName:
            return 0
        return self._federation.server_level(server)

    async def call(self, node_id: str, skill: str, method: str, body: bytes) -> bytes:
        try:
            server = server_name_for(validate_node_name(node_id))
        except InvalidName as exc:
            raise PeerUnreachable(str(exc)) from None
        if self._federation.server_level(server) <= 0:
            raise PeerUnreachable("trust level 0")
        did = self._federation.did_of_server(server)
        if did is None:
            raise PeerUnreachable("never met")
        if not self._federation.online(did):
            raise PeerUnreachable("no tunnel open")
        request = pb.Request(skill_call=pb.SkillCall(skill=skill, method=method, body=body))
        try:
            response = await self._federation.request(did, request, self._timeout_s)
        except TimeoutError:
            raise PeerUnreachable(f"no answer within {self._timeout_s:g} s") from None
        except FederationError as exc:
            raise PeerUnreachable(str(exc)) from None
        except asyncio.CancelledError:
            raise
        kind = response.WhichOneof("kind")
        if kind == "error":
            # The peer refused the request itself (its trust, or it runs no skills).
            raise PeerUnreachable(f"{response.error.errcode}: {response.error.error[:200]}")
        if kind != "skill_call":
            raise PeerUnreachable(f"answered a skill call with {kind}")
        return bytes(response.skill_call.body)


def _valid_name(name: str, limit: int) -> bool:
    return 0 < len(name) <= limit and name.isascii() and all(c.isalnum() or c in "-_" for c in name)

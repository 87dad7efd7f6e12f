"""Calls between the same skill on two nodes (``SkillApi.call_peer``), and the seam that
carries them.

One call carries a body each way: a 4-byte big-endian length, a header (a JSON object, canonical
encoding), then payload bytes (at most ``MAX_PEER_PAYLOAD``). An answer whose header holds
``"error"`` is the peer's refusal, raised to the caller as ``CommandError``.

``PeerTransport`` is the seam: ``call(node_id, skill, method, body) -> body`` on the caller's
side, ``SkillHost.handle_peer_call(caller, skill, method, body)`` on the callee's, and
``trust_level(node_id)`` (what ``SkillApi.peer_trust`` answers). The node wires
``cis.skills.transport.TunnelPeerTransport``: one ``TunnelManager.request``/``respond`` per
call, of the request kind ``skill_call`` (``wire.proto``: ``SkillCall``/``SkillReply``), so a
call and its answer each fit in one frame (1 MiB) and the tunnel's reliability, ordering and
trust apply to them as to any request. Without a transport ``call_peer`` raises
``SkillUnavailable`` ("node N unreachable").
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any, Final, Protocol

from cis.errors import CisError
from cis.skills.contract import MAX_PEER_PAYLOAD

__all__ = ["PeerTransport", "PeerUnreachable", "decode_body", "encode_body"]

MAX_HEADER_BYTES: Final = 64 * 1024
_LENGTH: Final = struct.Struct(">I")


class PeerUnreachable(CisError):
    """The node cannot be reached now (no tunnel, it is down, or it did not answer)."""


class PeerTransport(Protocol):
    async def call(self, node_id: str, skill: str, method: str, body: bytes) -> bytes:
        """Deliver one call to ``skill`` on ``node_id`` and return its answer's body; raise
        ``PeerUnreachable`` when the node cannot be reached."""
        ...

    def trust_level(self, node_id: str) -> int:
        """The trust level this node gives ``node_id`` (0 nothing, 1 read, 2 read and write)."""
        ...


def encode_body(header: Mapping[str, Any], payload: bytes = b"") -> bytes:
    raw = json.dumps(dict(header), sort_keys=True, separators=(",", ":")).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError(f"a peer header is at most {MAX_HEADER_BYTES} bytes")
    if len(payload) > MAX_PEER_PAYLOAD:
        raise ValueError(f"a peer payload is at most {MAX_PEER_PAYLOAD} bytes")
    return _LENGTH.pack(len(raw)) + raw + payload


def decode_body(body: bytes) -> tuple[dict[str, Any], bytes]:
    """``ValueError`` for a malformed body (from an untrusted peer)."""
    if len(body) < _LENGTH.size:
        raise ValueError("peer body too short")
    (size,) = _LENGTH.unpack_from(body)
    if size > MAX_HEADER_BYTES or _LENGTH.size + size > len(body):
        raise ValueError("peer header length out of bounds")
    header = json.loads(body[_LENGTH.size : _LENGTH.size + size])
    if not isinstance(header, dict):
        raise ValueError("a peer header is a JSON object")
    payload = body[_LENGTH.size + size :]
    if len(payload) > MAX_PEER_PAYLOAD:
        raise ValueError("peer payload too large")
    return header, payload

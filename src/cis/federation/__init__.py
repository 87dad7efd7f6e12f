"""Tunnels between nodes: Noise-authenticated WebSockets carrying Protobuf frames.

docs/federation.md is the wire protocol; docs/ARCHITECTURE.md ("federation/") the design.

Sans-I/O core (no sockets, no clock, no await):
- ``handshake``: the payload binding a node's DID to its per-process Noise static key;
- ``connection``: ``TunnelConnection``, the handshake and framing state machine;
- ``chunking``, ``frames`` (over the generated ``wire_pb2``), ``reliability`` (seq/ack).

Asyncio shell:
- ``tunnel``: one connection's pump (writer, pings, silence, close);
- ``manager``: ``TunnelManager``, what the node wires (dial, accept, send, status);
- ``transport``: the ``MessageStream`` seam (websockets client, Starlette server, in-memory).

Seams the node fills: ``trust.TrustPolicy`` (``did_trust`` in node.db) and the ``on_frame``
handler. Errors: ``errors`` (``FederationError`` and below).
"""

from cis.federation.config import TunnelConfig
from cis.federation.endpoints import FEDERATION_PATH, parse_endpoint
from cis.federation.errors import (
    FederationError,
    FrameTooLarge,
    HandshakeFailed,
    PeerUnknown,
    ProtocolViolation,
    RequestTimeout,
    TunnelClosed,
    TunnelError,
)
from cis.federation.frames import MAX_BATCH, Frame, Request, Response
from cis.federation.handshake import PeerIdentity
from cis.federation.manager import (
    OutboxOverflow,
    PeerEvent,
    PeerOffline,
    PeerOnline,
    PeerStatus,
    TunnelManager,
)
from cis.federation.trust import StaticTrust, TrustLevel, TrustPolicy

UVICORN_WS_OPTIONS = {
    "ws_max_size": 65_535,
    "ws_ping_interval": None,
    "ws_per_message_deflate": False,
}
"""What the node passes to ``uvicorn.Config`` so the server side matches the client's
settings: one Noise message per WebSocket message, no library keepalive (the tunnel pings),
no compression (ciphertext does not compress)."""

__all__ = [
    "FEDERATION_PATH",
    "MAX_BATCH",
    "UVICORN_WS_OPTIONS",
    "FederationError",
    "Frame",
    "FrameTooLarge",
    "HandshakeFailed",
    "OutboxOverflow",
    "PeerEvent",
    "PeerIdentity",
    "PeerOffline",
    "PeerOnline",
    "PeerStatus",
    "PeerUnknown",
    "ProtocolViolation",
    "Request",
    "RequestTimeout",
    "Response",
    "StaticTrust",
    "TrustLevel",
    "TrustPolicy",
    "TunnelClosed",
    "TunnelConfig",
    "TunnelError",
    "TunnelManager",
    "parse_endpoint",
]

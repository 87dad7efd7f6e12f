"""Federation errors and the WebSocket close codes they map to::

    CisError
    └── FederationError
        ├── TunnelError            a tunnel is refused or broken; carries (code, reason)
        │   ├── HandshakeFailed    authentication or policy refused the handshake
        │   └── ProtocolViolation  the peer broke the wire protocol after the handshake
        ├── TunnelClosed           an operation needs an open tunnel and this one is closed
        ├── FrameTooLarge          a frame to send encodes to more than 1 MiB
        ├── PeerUnknown            no session exists for the DID
        └── RequestTimeout         a request got no response in time

Close codes (RFC 6455 §7.4.1; docs/federation.md "Closing"): 1000 normal closure (also
``"duplicate"``), 1002 protocol error, 1008 policy violation (authentication, trust), 1009
message too big, 1011 internal error (a bug on the closing side), 1013 try again later (too
many handshakes in progress). A reason is at most
123 bytes of UTF-8 (RFC 6455 §5.5: a control frame's payload is at most 125 bytes, two of which
are the code).
"""

from __future__ import annotations

from typing import Final

from cis.errors import CisError

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL: Final = 1002
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN: Final = 1013
MAX_REASON_BYTES: Final = 123


def clip_reason(reason: str) -> str:
    """``reason`` cut to at most 123 bytes of UTF-8, never inside a character."""
    data = reason.encode("utf-8")
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[:MAX_REASON_BYTES].decode("utf-8", errors="ignore")


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may be sent in a close frame (RFC 6455 §7.4.1-2)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


class FederationError(CisError):
    """Something went wrong talking to another node."""


class TunnelError(FederationError):
    """A tunnel was refused or broken; ``code`` and ``reason`` are what goes on the wire."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = clip_reason(reason)
        super().__init__(f"{self.reason} (close code {code})")


class HandshakeFailed(TunnelError):
    """The Noise handshake or the identity it carries was refused."""


class ProtocolViolation(TunnelError):
    """The peer sent something the wire protocol does not allow."""


class TunnelClosed(FederationError):
    """The tunnel is closed; nothing more can be sent on it."""


class FrameTooLarge(FederationError):
    """A frame encodes to more than the 1 MiB a peer will reassemble."""


class PeerUnknown(FederationError):
    """No tunnel or session exists for this peer."""


class RequestTimeout(FederationError):
    """A peer did not answer a request in time."""

"""``TunnelConnection``: one tunnel's protocol, sans I/O.

Bytes in, events and bytes out, in the manner of h11 and websockets' ``protocol.py``: the
caller feeds each received WebSocket message to ``receive_message``, then takes
``events_received()`` and sends every message of ``data_to_send()`` as one binary WebSocket
message, in order. Nothing here awaits, touches a socket or reads a clock; timeouts, pings and
retries belong to the asyncio shell (``tunnel``).

States and transitions (``TRANSITIONS``)::

    initiator:  AWAIT_MSG2 --msg 2 ok--> OPEN          (message 1 queued at construction)
    responder:  AWAIT_MSG1 --msg 1 ok--> AWAIT_MSG3 --msg 3 ok--> OPEN
    any state   --failure, close, peer's Close frame--> CLOSED

Invariants:
- ``peer`` is set exactly once, on entering OPEN, and only after the payload checks of
  ``handshake.verify_payload`` *and* the admission checks here: the DID is the one the dialler
  expected (when it said), it is not this node's own identity, the trust policy does not
  give it level 0, and the node's ``Admission`` hook (if any) has no objection.
  ``Authenticated`` is then the first event; ``FrameReceived`` events only ever follow it.
- Every message ``data_to_send`` returns is at most 65,535 bytes: one Noise message.
- Once CLOSED, input is ignored, ``send_frame`` raises, and exactly one ``Closed`` event has
  been emitted, carrying the close code and reason the shell puts on the WebSocket.
- A failure never sends anything further (the peer's stream may be what is broken); a local
  ``close()`` of an OPEN tunnel sends a ``Close`` frame first.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, TypeAlias

from noise.connection import Keypair, NoiseConnection

from cis.federation.chunking import (
    MAX_FRAME_BYTES,
    NOISE_MAX_MESSAGE,
    Reassembler,
    split_frame,
)
from cis.federation.errors import (
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    HandshakeFailed,
    TunnelClosed,
    TunnelError,
    clip_reason,
    is_valid_close_code,
)
from cis.federation.frames import Frame, body_kind, decode_frame, encode_frame
from cis.federation.frames import close as close_frame
from cis.federation.handshake import (
    MAX_PAYLOAD_BYTES,
    NOISE_PROTOCOL_NAME,
    PROLOGUE,
    PROTOCOL_VERSION,
    Credentials,
    PeerIdentity,
    VerifiedPayload,
    verify_payload,
)
from cis.federation.trust import Admission, TrustPolicy

DH_LEN: Final = 32
MESSAGE1_LEN: Final = DH_LEN
MAX_HANDSHAKE_MESSAGE: Final = DH_LEN + DH_LEN + 16 + MAX_PAYLOAD_BYTES + 16


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class State(Enum):
    AWAIT_MSG1 = "await_msg1"
    AWAIT_MSG2 = "await_msg2"
    AWAIT_MSG3 = "await_msg3"
    OPEN = "open"
    CLOSED = "closed"


TRANSITIONS: Final[dict[tuple[Role, State], State]] = {
    (Role.RESPONDER, State.AWAIT_MSG1): State.AWAIT_MSG3,
    (Role.RESPONDER, State.AWAIT_MSG3): State.OPEN,
    (Role.INITIATOR, State.AWAIT_MSG2): State.OPEN,
}


@dataclass(frozen=True, slots=True)
class Authenticated:
    peer: PeerIdentity


@dataclass(frozen=True, slots=True)
class FrameReceived:
    frame: Frame


@dataclass(frozen=True, slots=True)
class Closed:
    code: int
    reason: str
    by_peer: bool
    """True when the peer sent a ``Close`` frame; False for a local close or failure."""


Event: TypeAlias = Authenticated | FrameReceived | Closed


class TunnelConnection:
    """The state of one tunnel, from the first handshake message to the close."""

    def __init__(
        self,
        role: Role,
        credentials: Credentials,
        trust: TrustPolicy,
        *,
        expected_did: str | None = None,
        admission: Admission | None = None,
        max_frame: int = MAX_FRAME_BYTES,
    ) -> None:
        self.role = role
        self.expected_did = expected_did
        self._admission = admission
        self._credentials = credentials
        self._trust = trust
        self._reassembler = Reassembler(max_frame)
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self.peer: PeerIdentity | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        noise: Any = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)
        noise.set_prologue(PROLOGUE)
        noise.set_keypair_from_private_bytes(Keypair.STATIC, credentials.static_key.private)
        if role is Role.INITIATOR:
            noise.set_as_initiator()
        else:
            noise.set_as_responder()
        noise.start_handshake()
        self._noise = noise
        if role is Role.INITIATOR:
            self._outgoing.append(bytes(noise.write_message(b"")))
            self.state = State.AWAIT_MSG2
        else:
            self.state = State.AWAIT_MSG1

    # ------------------------------------------------------------ the interface

    def receive_message(self, data: bytes) -> None:
        """Take one received WebSocket message (one Noise message)."""
        if self.state is State.CLOSED:
            return
        try:
            if len(data) > NOISE_MAX_MESSAGE:
                raise TunnelError(CLOSE_TOO_BIG, f"message over {NOISE_MAX_MESSAGE} bytes")
            if self.state is State.OPEN:
                self._receive_transport(data)
            else:
                self._receive_handshake(data)
        except TunnelError as exc:
            self.fail(exc.code, exc.reason)

    def send_frame(self, frame: Frame) -> None:
        """Queue ``frame`` as one or more encrypted transport messages.

        Raises ``TunnelClosed`` unless OPEN and ``FrameTooLarge`` over 1 MiB (nothing queued).
        """
        if self.state is not State.OPEN:
            raise TunnelClosed(f"cannot send on a tunnel in state {self.state.value}")
        data = encode_frame(frame)
        for chunk in split_frame(data):
            self._outgoing.append(bytes(self._noise.encrypt(chunk)))

    def close(self, code: int, reason: str) -> None:
        """Close from this side; an OPEN tunnel tells the peer why in a ``Close`` frame."""
        if self.state is State.CLOSED:
            return
        if self.state is State.OPEN:
            self.send_frame(close_frame(code, reason))
        self._enter_closed(code, reason, by_peer=False)

    def fail(self, code: int, reason: str) -> None:
        """Give up on the tunnel: nothing more is sent, the shell closes with ``code``."""
        if self.state is State.CLOSED:
            return
        self._enter_closed(code, reason, by_peer=False)

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    @property
    def handshake_done(self) -> bool:
        return self.peer is not None

    # ------------------------------------------------------------ handshake

    def _receive_handshake(self, data: bytes) -> None:
        if self.state is State.AWAIT_MSG1:
            self._receive_message1(data)
        elif self.state is State.AWAIT_MSG2:
            self._receive_payload_message(data, which=2)
        elif self.state is State.AWAIT_MSG3:
            self._receive_payload_message(data, which=3)

    def _receive_message1(self, data: bytes) -> None:
        # Noise message 1 is ``e`` alone, sent in clear: a payload there would be unencrypted
        # and unauthenticated, so the libp2p spec forbids it and so do we.
        if len(data) < MESSAGE1_LEN:
            raise HandshakeFailed(CLOSE_PROTOCOL, "truncated handshake message 1")
        if len(data) > MESSAGE1_LEN:
            raise HandshakeFailed(CLOSE_PROTOCOL, "payload in handshake message 1")
        self._noise_read(data, 1)
        self._outgoing.append(bytes(self._noise.write_message(self._credentials.payload())))
        self._advance()

    def _receive_payload_message(self, data: bytes, which: int) -> None:
        if len(data) > MAX_HANDSHAKE_MESSAGE:
            raise HandshakeFailed(CLOSE_TOO_BIG, f"handshake message {which} too large")
        # noiseprotocol drops its handshake state when the handshake completes (on message 3
        # for the responder) and has no getter for the remote static key, so keep a reference.
        handshake_state = self._noise.noise_protocol.handshake_state
        payload = self._noise_read(data, which)
        remote_static = bytes(handshake_state.rs.public_bytes)
        verified = verify_payload(payload, remote_static)
        self._admit(verified)
        if self.role is Role.INITIATOR:
            self._outgoing.append(bytes(self._noise.write_message(self._credentials.payload())))
        self.peer = PeerIdentity(
            did=verified.did,
            did_key=verified.did_key,
            public_key=verified.public_key,
            static_key=remote_static,
            version=min(verified.version, PROTOCOL_VERSION),
            endpoints=verified.endpoints,
            we_initiated=self.role is Role.INITIATOR,
            handshake_hash=bytes(self._noise.get_handshake_hash()),
        )
        self._advance()
        self._events.append(Authenticated(self.peer))

    def _noise_read(self, data: bytes, which: int) -> bytes:
        try:
            return bytes(self._noise.read_message(data))
        except Exception as exc:  # noiseprotocol raises several unrelated types
            raise HandshakeFailed(
                CLOSE_PROTOCOL, f"handshake message {which} is malformed or forged"
            ) from exc

    def _admit(self, verified: VerifiedPayload) -> None:
        """The checks that depend on who we are and what we expected, not on the payload."""
        if verified.public_key == self._credentials.ed25519_pub:
            raise HandshakeFailed(CLOSE_POLICY, "identity conflict: peer presents our own key")
        expected = self.expected_did
        if expected is not None and expected not in (verified.did, verified.did_key):
            raise HandshakeFailed(CLOSE_POLICY, f"peer is {verified.did}, not {expected}")
        if int(self._trust.level(verified.did, verified.did_key)) <= 0:
            raise HandshakeFailed(CLOSE_POLICY, f"trust level 0 for {verified.did}")
        if self._admission is not None:
            refusal = self._admission(verified.did, verified.did_key, verified.public_key)
            if refusal is not None:
                raise HandshakeFailed(CLOSE_POLICY, refusal)

    def _advance(self) -> None:
        self.state = TRANSITIONS[(self.role, self.state)]

    # ------------------------------------------------------------ transport

    def _receive_transport(self, data: bytes) -> None:
        try:
            plaintext = bytes(self._noise.decrypt(data))
        except Exception as exc:  # NoiseInvalidMessage, cryptography's InvalidTag
            raise TunnelError(CLOSE_PROTOCOL, "transport message failed authentication") from exc
        frame_bytes = self._reassembler.feed(plaintext)
        if frame_bytes is None:
            return
        frame = decode_frame(frame_bytes)
        if body_kind(frame) == "close":
            code = frame.close.code if is_valid_close_code(frame.close.code) else CLOSE_PROTOCOL
            self._enter_closed(code, frame.close.reason, by_peer=True)
            return
        self._events.append(FrameReceived(frame))

    def _enter_closed(self, code: int, reason: str, *, by_peer: bool) -> None:
        self.state = State.CLOSED
        self.close_code = code
        self.close_reason = clip_reason(reason)
        self._events.append(Closed(code, self.close_reason, by_peer))

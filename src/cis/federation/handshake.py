"""Who is on the other end: the handshake payload, how it is made and how it is checked.

The tunnel runs ``Noise_XX_25519_ChaChaPoly_SHA256`` with prologue ``b"cis-federation/1"``
(docs/federation.md "Handshake")::

    -> e                        message 1: no payload
    <- e, ee, s, es  + payload  message 2: the responder's HandshakePayload
    -> s, se         + payload  message 3: the initiator's HandshakePayload

Each process makes one X25519 static key at start (never stored, not derived from the Ed25519
key: the libp2p Noise spec, "Static Key Authentication"). The payload binds it to the node's
identity: ``sig = Ed25519(b"cis-noise-static-key:" + X25519 static public key)``. The receiver
checks, in this order, and refuses on the first failure:

1. the payload parses (else 1002);
2. ``ed25519_pub`` has 32 bytes, ``did_key`` names it and ``did``'s 16 hex digits are its
   prefix (else 1008);
3. ``sig`` verifies under ``ed25519_pub`` over the static key *the handshake delivered*, not one
   the payload claims (libp2p's rule; else 1008);
4. ``version`` is at least 1 and ``endpoints`` are at most 8 normal-form ws/wss URLs (else 1002).

What the caller then decides (expected DID, own DID, trust) lives in ``connection``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.message import DecodeError

from cis.federation import wire_pb2 as pb
from cis.federation.endpoints import InvalidEndpoint, check_endpoints
from cis.federation.errors import CLOSE_POLICY, CLOSE_PROTOCOL, HandshakeFailed
from cis.identity.did import check_did_binds_key, did_key_from_public_key, parse_did_cis
from cis.identity.errors import InvalidDid
from cis.identity.keys import NodeIdentity
from cis.identity.names import server_name_for
from cis.ids import Did, DidKey, NodeId, ServerName

NOISE_PROTOCOL_NAME: Final = b"Noise_XX_25519_ChaChaPoly_SHA256"
PROLOGUE: Final = b"cis-federation/1"
STATIC_KEY_SIG_PREFIX: Final = b"cis-noise-static-key:"
PROTOCOL_VERSION: Final = 1
MAX_PAYLOAD_BYTES: Final = 4096
"""A HandshakePayload is a few hundred bytes; anything over this is refused (1009)."""


@dataclass(frozen=True, slots=True)
class StaticKey:
    """An X25519 key pair for Noise; one per process, never written anywhere."""

    private: bytes = field(repr=False)
    public: bytes

    @classmethod
    def generate(cls) -> StaticKey:
        key = X25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private=key.private_bytes_raw(), public=public)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What this node presents in every handshake; the signature is made once per process."""

    did: str
    did_key: str
    ed25519_pub: bytes
    sig: bytes
    static_key: StaticKey
    version: int = PROTOCOL_VERSION
    endpoints: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        identity: NodeIdentity,
        static_key: StaticKey | None = None,
        endpoints: tuple[str, ...] | list[str] = (),
    ) -> Credentials:
        static = static_key if static_key is not None else StaticKey.generate()
        return cls(
            did=identity.did,
            did_key=identity.did_key,
            ed25519_pub=identity.public_key,
            sig=identity.sign(STATIC_KEY_SIG_PREFIX + static.public),
            static_key=static,
            endpoints=check_endpoints(tuple(endpoints)),
        )

    def payload(self) -> bytes:
        return pb.HandshakePayload(
            did=self.did,
            did_key=self.did_key,
            ed25519_pub=self.ed25519_pub,
            sig=self.sig,
            version=self.version,
            endpoints=list(self.endpoints),
        ).SerializeToString()


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The authenticated peer of one tunnel."""

    did: Did
    did_key: DidKey
    public_key: bytes
    static_key: bytes
    """The peer's X25519 static key: it names the peer's *process* (a restart changes it)."""
    version: int
    endpoints: tuple[str, ...]
    we_initiated: bool
    handshake_hash: bytes = field(repr=False)

    @property
    def node_id(self) -> NodeId:
        return parse_did_cis(self.did)[0]

    @property
    def server_name(self) -> ServerName:
        return server_name_for(self.node_id)


@dataclass(frozen=True, slots=True)
class VerifiedPayload:
    did: Did
    did_key: DidKey
    public_key: bytes
    version: int
    endpoints: tuple[str, ...]


def verify_payload(data: bytes, remote_static: bytes) -> VerifiedPayload:
    """Check a received payload against the static key Noise delivered; see the module doc."""
    payload = pb.HandshakePayload()
    try:
        payload.ParseFromString(data)
    except DecodeError as exc:
        raise HandshakeFailed(CLOSE_PROTOCOL, "handshake payload is not valid protobuf") from exc
    public_key = bytes(payload.ed25519_pub)
    if len(public_key) != 32:
        raise HandshakeFailed(CLOSE_POLICY, "ed25519_pub must have 32 bytes")
    try:
        if did_key_from_public_key(public_key) != payload.did_key:
            raise HandshakeFailed(CLOSE_POLICY, "did_key does not name ed25519_pub")
        parse_did_cis(payload.did)
        check_did_binds_key(payload.did, public_key)
    except InvalidDid as exc:
        raise HandshakeFailed(CLOSE_POLICY, f"DID does not match its key: {exc}") from exc
    try:
        nacl.signing.VerifyKey(public_key).verify(
            STATIC_KEY_SIG_PREFIX + remote_static, bytes(payload.sig)
        )
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise HandshakeFailed(
            CLOSE_POLICY, "static key signature does not verify for the delivered key"
        ) from exc
    if payload.version < 1:
        raise HandshakeFailed(CLOSE_PROTOCOL, "handshake version must be at least 1")
    try:
        endpoints = check_endpoints(tuple(payload.endpoints))
    except InvalidEndpoint as exc:
        raise HandshakeFailed(CLOSE_PROTOCOL, f"bad endpoints: {exc}") from exc
    return VerifiedPayload(
        did=Did(payload.did),
        did_key=DidKey(payload.did_key),
        public_key=public_key,
        version=payload.version,
        endpoints=endpoints,
    )

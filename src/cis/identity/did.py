"""DIDs for nodes: ``did:cis`` for people, ``did:key`` for machines.

``did:cis:{node_id}:{pub_key_short}`` (seed 000) names a node and the first 16 hex digits of
its Ed25519 public key; 64 bits cannot be resolved to a key, so the full key always travels
beside it as ``did:key:z`` + base58btc(0xed 0x01 ‖ public key) (did:key v0.9: the multicodec
``ed25519-pub`` is the varint ``0xed 0x01``, the multibase prefix ``z`` means base58btc).
"""

from __future__ import annotations

import re
from typing import Final

import base58

from cis.identity.errors import InvalidDid
from cis.identity.names import NODE_NAME_RE
from cis.ids import Did, DidKey, NodeId

ED25519_MULTICODEC: Final = b"\xed\x01"
_DID_CIS_RE: Final = re.compile(r"^did:cis:([a-z0-9-]{1,63}):([0-9a-f]{16})$")
_MAX_DID_LEN: Final = 256


def pub_key_short(public_key: bytes) -> str:
    """The first 16 lower-case hex digits of a public key."""
    _check_key_length(public_key)
    return public_key.hex()[:16]


def did_cis(node_id: NodeId, public_key: bytes) -> Did:
    return Did(f"did:cis:{node_id}:{pub_key_short(public_key)}")


def did_key_from_public_key(public_key: bytes) -> DidKey:
    _check_key_length(public_key)
    return DidKey("did:key:z" + base58.b58encode(ED25519_MULTICODEC + public_key).decode("ascii"))


def public_key_from_did_key(did_key: str) -> bytes:
    """The 32-byte Ed25519 key a ``did:key`` names; raises ``InvalidDid`` for anything else."""
    if len(did_key) > _MAX_DID_LEN or not did_key.startswith("did:key:z"):
        raise InvalidDid("not an Ed25519 did:key (expected did:key:z6Mk...)")
    try:
        raw = base58.b58decode(did_key[len("did:key:z") :])
    except ValueError as exc:
        raise InvalidDid("did:key is not valid base58btc") from exc
    if len(raw) != 34 or raw[:2] != ED25519_MULTICODEC:
        raise InvalidDid("did:key does not hold an Ed25519 public key")
    return bytes(raw[2:])


def parse_did_cis(did: str) -> tuple[NodeId, str]:
    """Split ``did:cis:{node_id}:{short}``; raises ``InvalidDid``."""
    match = _DID_CIS_RE.fullmatch(did) if len(did) <= _MAX_DID_LEN else None
    if match is None or not NODE_NAME_RE.fullmatch(match.group(1)):
        raise InvalidDid("not a did:cis (expected did:cis:<node-name>:<16 hex digits>)")
    return NodeId(match.group(1)), match.group(2)


def parse_did(did: str) -> Did | DidKey:
    """Accept either form as typed on a command line; raises ``InvalidDid``."""
    if did.startswith("did:key:"):
        public_key_from_did_key(did)
        return DidKey(did)
    parse_did_cis(did)
    return Did(did)


def check_did_binds_key(did: str, public_key: bytes) -> None:
    """Raise ``InvalidDid`` unless ``did`` (either form) names ``public_key``."""
    if did.startswith("did:key:"):
        if public_key_from_did_key(did) != public_key:
            raise InvalidDid("did:key names a different public key")
        return
    _node_id, short = parse_did_cis(did)
    if short != pub_key_short(public_key):
        raise InvalidDid("did:cis key digits do not match the public key")


def _check_key_length(public_key: bytes) -> None:
    if len(public_key) != 32:
        raise InvalidDid(f"an Ed25519 public key has 32 bytes, not {len(public_key)}")

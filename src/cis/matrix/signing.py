"""Signing events and checking their signatures (server-server API, "Signing Events";
appendices, "Signing JSON" and "Checking for a Signature").

An event is signed over its *redacted* form, so a signature stays valid when the event is
redacted later, and the redacted form includes ``hashes``, so the signature still commits to
the full content. ``signedjson`` does the signing and checking proper; this module chooses
what it signs.
"""

from __future__ import annotations

import binascii
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import nacl.exceptions
import nacl.signing
import signedjson.types
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
from unpaddedbase64 import decode_base64

from cis.matrix import canonical_json
from cis.matrix.errors import InvalidJson, InvalidPdu, SignatureError
from cis.matrix.hashing import compute_content_hash
from cis.matrix.redaction import redact_with
from cis.matrix.room_versions import RoomVersion, get_room_version

SIGNING_ALGORITHM = "ed25519"


def split_key_id(key_id: str) -> tuple[str, str]:
    """``"ed25519:abc"`` → ``("ed25519", "abc")``; ``SignatureError`` for any other algorithm."""
    alg, sep, version = key_id.partition(":")
    if not sep or alg != SIGNING_ALGORITHM or not version:
        raise SignatureError(f"key id {key_id[:60]!r} is not of the form 'ed25519:<version>'")
    return alg, version


@dataclass(frozen=True, slots=True)
class _NamedSigningKey:
    """A PyNaCl key under an explicit key id, as ``signedjson`` expects (``alg``/``version``)."""

    alg: str
    version: str
    key: nacl.signing.SigningKey

    def sign(self, message: bytes) -> nacl.signing.SignedMessage:
        return self.key.sign(message)


@dataclass(frozen=True, slots=True)
class _NamedVerifyKey:
    alg: str
    version: str
    key: nacl.signing.VerifyKey

    def verify(self, message: bytes, signature: bytes) -> bytes:
        return self.key.verify(message, signature)


def _signable(rv: RoomVersion, pdu: Mapping[str, Any]) -> dict[str, Any]:
    """The redacted event without ``event_id``: what is signed. ``signedjson`` itself leaves
    out ``signatures`` and ``unsigned``."""
    redacted = redact_with(rv, pdu)
    redacted.pop("event_id", None)
    try:
        canonical_json.check_value(redacted)
    except InvalidJson as e:
        raise InvalidPdu(str(e)) from e
    return redacted


def sign_event(
    room_version: str,
    pdu: Mapping[str, Any],
    server_name: str,
    key_id: str,
    signing_key: nacl.signing.SigningKey,
) -> dict[str, Any]:
    """A copy of ``pdu`` with ``server_name``'s signature under ``key_id`` added to its
    ``signatures`` (other signatures are kept).

    The copy has no ``event_id`` key: v10/v11 PDUs carry none, and a server checking the
    signature would otherwise redact it in and fail. ``pdu`` should already carry its
    ``hashes`` (see ``hash_and_sign_event``).
    """
    rv = get_room_version(room_version)
    alg, version = split_key_id(key_id)
    signable = _signable(rv, pdu)
    signer = cast(signedjson.types.SigningKey, _NamedSigningKey(alg, version, signing_key))
    signed = sign_json(signable, server_name, signer)
    out = copy.deepcopy({k: v for k, v in pdu.items() if k != "event_id"})
    signatures = out.get("signatures")
    if not isinstance(signatures, dict):
        signatures = {}
    entity = signatures.get(server_name)
    signatures[server_name] = {
        **(entity if isinstance(entity, dict) else {}),
        key_id: signed["signatures"][server_name][key_id],
    }
    out["signatures"] = signatures
    return out


def hash_and_sign_event(
    room_version: str,
    pdu: Mapping[str, Any],
    server_name: str,
    key_id: str,
    signing_key: nacl.signing.SigningKey,
) -> dict[str, Any]:
    """Set ``hashes.sha256`` to the content hash, then sign: what the origin server does
    (server-server API, "Adding hashes and signatures to outgoing events")."""
    with_hash = {k: v for k, v in pdu.items() if k != "event_id"}
    with_hash["hashes"] = {"sha256": compute_content_hash(with_hash)}
    return sign_event(room_version, with_hash, server_name, key_id, signing_key)


def verify_signed_bytes(signed: bytes, signature: str, verify_key: nacl.signing.VerifyKey) -> None:
    """Raise ``SignatureError`` unless ``signature`` (unpadded base64) is ``verify_key``'s
    over ``signed``: ``verify_event_signature`` for a caller that already holds the bytes
    signed (``cis.matrix.events.parse_received_pdu``)."""
    try:
        verify_key.verify(signed, decode_base64(signature))
    except (nacl.exceptions.CryptoError, binascii.Error, ValueError) as e:
        raise SignatureError("bad signature") from e


def verify_event_signature(
    room_version: str,
    pdu: Mapping[str, Any],
    server_name: str,
    key_id: str,
    verify_key: nacl.signing.VerifyKey,
) -> None:
    """Raise ``SignatureError`` unless ``pdu`` carries a valid signature by ``server_name``
    under ``key_id`` made with the key ``verify_key`` checks.

    Succeeds for the full event and for its redacted copy alike. Whether the content hash
    matches is a separate question (``check_content_hash``).
    """
    rv = get_room_version(room_version)
    alg, version = split_key_id(key_id)
    signable = _signable(rv, pdu)
    signatures = signable.get("signatures")
    entity = signatures.get(server_name) if isinstance(signatures, dict) else None
    if not isinstance(entity, dict) or not isinstance(entity.get(key_id), str):
        raise SignatureError(f"no signature by {server_name} under {key_id}")
    checker = cast(signedjson.types.VerifyKey, _NamedVerifyKey(alg, version, verify_key))
    try:
        verify_signed_json(signable, server_name, checker)
    except (SignatureVerifyException, nacl.exceptions.CryptoError) as e:
        raise SignatureError(f"bad signature by {server_name} under {key_id}") from e

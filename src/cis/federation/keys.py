"""Server key documents: a node's self-signed statement of its key, in Matrix's shape.

The document is what Matrix serves at ``GET /_matrix/key/v2/server`` (server-server API,
"Publishing Keys")::

    {"server_name": "alpha.cis.local",
     "valid_until_ts": 1700000000000,
     "verify_keys": {"ed25519:4edf69e2b24b77b3": {"key": "<unpadded base64>"}},
     "old_verify_keys": {"ed25519:…": {"key": "…", "expired_ts": 1690000000000}},
     "signatures": {"alpha.cis.local": {"ed25519:4edf69e2b24b77b3": "<unpadded base64>"}}}

It travels in ``ServerKeysResponse.server_keys`` as canonical JSON bytes. Any peer may hand
over another server's document, but it counts only through its own signature: ``verify``
checks that a key listed in ``verify_keys`` signed it for ``server_name`` (a relay's word is
never enough). For a CIS server name the key id's version must be the key's first 16 hex
digits, as in the DID. Whether to *believe* a key the first time (or a new key for a known
name) is the node's decision, not this module's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import nacl.signing
from canonicaljson import encode_canonical_json
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64, encode_base64

from cis.federation.errors import FederationError
from cis.identity.did import check_did_binds_key, pub_key_short
from cis.identity.errors import InvalidDid
from cis.identity.keys import NodeIdentity
from cis.identity.names import node_id_of_server_name

MAX_KEY_DOCUMENT_BYTES: Final = 16 * 1024


class InvalidKeyDocument(FederationError):
    """A key document that does not parse, is not self-signed, or names the wrong server."""


@dataclass(frozen=True, slots=True)
class OldKey:
    key: bytes
    expired_ts: int


@dataclass(frozen=True, slots=True)
class ServerKeys:
    server_name: str
    valid_until_ts: int
    verify_keys: Mapping[str, bytes]
    old_verify_keys: Mapping[str, OldKey]
    document: bytes
    """The canonical JSON, unchanged, to hand on to whoever asks."""


def build_server_keys(
    identity: NodeIdentity, valid_until_ts: int, old_verify_keys: Mapping[str, OldKey] | None = None
) -> bytes:
    """This node's document, signed, as canonical JSON bytes."""
    old_verify_keys = old_verify_keys or {}
    document: dict[str, Any] = {
        "server_name": identity.server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": {identity.key_id: {"key": encode_base64(identity.public_key)}},
        "old_verify_keys": {
            key_id: {"key": encode_base64(old.key), "expired_ts": old.expired_ts}
            for key_id, old in old_verify_keys.items()
        },
    }
    return bytes(encode_canonical_json(identity.sign_json(document)))


def verify_server_keys(
    data: bytes, server_name: str | None = None, did: str | None = None
) -> ServerKeys:
    """Parse and check a document; raises ``InvalidKeyDocument``.

    ``server_name``, when given, must be the one the document names. ``did``, when given
    (``did:cis`` or ``did:key``), must name one of its current keys: a self-signed document
    proves only that *some* key vouches for itself, so a document from a relay is worth
    something only against what the node already knows of the origin. Expiry is not judged
    here: compare ``valid_until_ts`` with the time that matters (an event's, or now).
    """
    if len(data) > MAX_KEY_DOCUMENT_BYTES:
        raise InvalidKeyDocument("key document too large")
    try:
        document = json.loads(data)
        name = document["server_name"]
        valid_until = document["valid_until_ts"]
        raw_keys = document["verify_keys"]
        raw_old = document.get("old_verify_keys", {})
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidKeyDocument("key document is not the expected JSON object") from exc
    if not isinstance(name, str) or (server_name is not None and name != server_name):
        raise InvalidKeyDocument(f"key document is for {name!r}, not {server_name!r}")
    if not isinstance(valid_until, int) or isinstance(valid_until, bool):
        raise InvalidKeyDocument("valid_until_ts must be an integer")
    verify_keys = _keys(raw_keys, name)
    if not verify_keys:
        raise InvalidKeyDocument("key document lists no verify key")
    old = {
        key_id: OldKey(key, _expired_ts(raw_old, key_id))
        for key_id, key in _keys(raw_old, name).items()
    }
    if not any(_signed_by(document, name, key_id, key) for key_id, key in verify_keys.items()):
        raise InvalidKeyDocument(f"key document is not signed by a key of {name}")
    if did is not None and not any(_binds(did, key) for key in verify_keys.values()):
        raise InvalidKeyDocument(f"no key of the document belongs to {did}")
    return ServerKeys(name, valid_until, verify_keys, old, bytes(encode_canonical_json(document)))


def _keys(raw: object, server_name: str) -> dict[str, bytes]:
    if not isinstance(raw, dict):
        raise InvalidKeyDocument("keys must be a JSON object")
    cis_node = node_id_of_server_name(server_name)
    keys: dict[str, bytes] = {}
    for key_id, entry in raw.items():
        algorithm, _, version = str(key_id).partition(":")
        if algorithm != "ed25519" or not version:
            continue  # unknown algorithms are skipped, as the Matrix spec asks
        try:
            key = decode_base64(entry["key"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidKeyDocument(f"key {key_id} is not unpadded base64") from exc
        if len(key) != 32:
            raise InvalidKeyDocument(f"key {key_id} is not an Ed25519 public key")
        if cis_node is not None and version != pub_key_short(key):
            raise InvalidKeyDocument(f"key id {key_id} does not match its key")
        keys[key_id] = key
    return keys


def _binds(did: str, key: bytes) -> bool:
    try:
        check_did_binds_key(did, key)
    except InvalidDid:
        return False
    return True


def _expired_ts(raw: Mapping[str, Any], key_id: str) -> int:
    value = raw[key_id].get("expired_ts")
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidKeyDocument(f"old key {key_id} has no integer expired_ts")
    return value


def _signed_by(document: dict[str, Any], server_name: str, key_id: str, key: bytes) -> bool:
    verify_key: Any = nacl.signing.VerifyKey(key)
    verify_key.alg, _, verify_key.version = key_id.partition(":")
    try:
        verify_signed_json(document, server_name, verify_key)
    except SignatureVerifyException:
        return False
    return True

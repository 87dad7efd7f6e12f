"""What crosses the anchor's wire, and how each side checks it (pure functions, no I/O).

A **heartbeat** is a node's own signed statement (docs/anchor.md "Heartbeat")::

    {"anchor": "anchor.example:8600", "did": "did:cis:alpha:4edf69e2b24b77b3",
     "did_key": "did:key:z6Mk…", "node_id": "alpha",
     "endpoints": ["ws://203.0.113.7:8484/_cis/federation/v1"], "ts": 1700000000000,
     "signatures": {"alpha.cis.local": {"ed25519:4edf69e2b24b77b3": "<unpadded base64>"}}}

signed with ``signedjson`` (a Matrix signature: canonical JSON without ``signatures``). The
object has exactly these keys, so the anchor stores nothing a node did not have to say; the
``anchor`` field names the anchor it was sent to (the authority of its URL), so a heartbeat
cannot be replayed to another anchor. Every party checks a record the same way
(``parse_heartbeat``): shape, ``node_id`` = the DID's node name, DID and ``did_key`` both name
the one key, the signature verifies under that key.

A **peers request** (``GET /v1/peers``) is authenticated by a header::

    Authorization: CIS-Anchor did="did:cis:…",ts="1700000000000",sig="<unpadded base64>"

where ``sig`` is Ed25519 over the canonical JSON of
``{"anchor", "did", "method": "GET", "ts", "uri": "/v1/peers"}``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import urlsplit

import nacl.exceptions
import nacl.signing
import signedjson.types
from canonicaljson import encode_canonical_json
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64, encode_base64

from cis.anchor.errors import InvalidRecord
from cis.federation.endpoints import InvalidEndpoint, check_endpoints
from cis.identity.did import (
    check_did_binds_key,
    parse_did_cis,
    pub_key_short,
    public_key_from_did_key,
)
from cis.identity.errors import InvalidDid
from cis.identity.keys import NodeIdentity, matrix_verify_key
from cis.identity.names import server_name_for
from cis.ids import Did, DidKey, NodeId

HEARTBEAT_FIELDS: Final = frozenset({"anchor", "did", "did_key", "node_id", "endpoints", "ts"})
MAX_ANCHOR_NAME: Final = 255
PEERS_PATH: Final = "/v1/peers"
HEARTBEAT_PATH: Final = "/v1/heartbeat"
AUTH_SCHEME: Final = "CIS-Anchor"
_AUTH_RE: Final = re.compile(
    r'^CIS-Anchor did="(did:cis:[a-z0-9-]{1,63}:[0-9a-f]{16})",ts="([0-9]{1,16})",'
    r'sig="([A-Za-z0-9+/]{80,90})"$'
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Heartbeat:
    anchor: str
    did: Did
    did_key: DidKey
    node_id: NodeId
    endpoints: tuple[str, ...]
    ts: int
    public_key: bytes
    canonical: bytes
    """The signed object as canonical JSON: what the anchor stores and serves, unchanged."""


def anchor_name(url: str) -> str:
    """The name a heartbeat carries for the anchor at ``url``: its authority, lower-cased,
    without a default port (``https://Anchor.Example:443/`` → ``anchor.example``)."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url[:80]!r}")
    return authority(parts.netloc, parts.scheme)


def authority(netloc: str, scheme: str) -> str:
    """``netloc`` lower-cased, with the scheme's default port dropped."""
    name = netloc.lower().rsplit("@", 1)[-1]
    default = f":{_DEFAULT_PORTS.get(scheme, 0)}"
    return name[: -len(default)] if name.endswith(default) else name


def build_heartbeat(
    identity: NodeIdentity, anchor: str, endpoints: Sequence[str], ts: int
) -> dict[str, Any]:
    """A signed heartbeat of ``identity`` for the anchor named ``anchor``."""
    return identity.sign_json(
        {
            "anchor": anchor,
            "did": identity.did,
            "did_key": identity.did_key,
            "node_id": identity.node_id,
            "endpoints": list(check_endpoints(tuple(endpoints))),
            "ts": ts,
        }
    )


def parse_heartbeat(obj: object) -> Heartbeat:
    """Check a heartbeat completely (see the module docstring); raises ``InvalidRecord``
    whose ``forged`` says whether the shape was right but the identity or signature wrong."""
    if not isinstance(obj, dict):
        raise InvalidRecord("a heartbeat is a JSON object")
    if set(obj) != HEARTBEAT_FIELDS | {"signatures"}:
        raise InvalidRecord(f"a heartbeat has exactly the keys {sorted(HEARTBEAT_FIELDS)}")
    anchor, did, did_key, node_id = obj["anchor"], obj["did"], obj["did_key"], obj["node_id"]
    ts, endpoints = obj["ts"], obj["endpoints"]
    if not all(isinstance(v, str) for v in (anchor, did, did_key, node_id)):
        raise InvalidRecord("anchor, did, did_key and node_id are strings")
    if not anchor or len(anchor) > MAX_ANCHOR_NAME:
        raise InvalidRecord("anchor must be 1-255 characters")
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts < 2**53:
        raise InvalidRecord("ts is milliseconds since the Unix epoch")
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise InvalidRecord("endpoints is a list of strings")
    try:
        checked_endpoints = check_endpoints(endpoints)
    except InvalidEndpoint as exc:
        raise InvalidRecord(str(exc)) from exc
    try:
        did_node, _short = parse_did_cis(did)
        public_key = public_key_from_did_key(did_key)
    except InvalidDid as exc:
        raise InvalidRecord(str(exc)) from exc
    if did_node != node_id:
        raise InvalidRecord("node_id is not the DID's node name", forged=True)
    try:
        check_did_binds_key(did, public_key)
    except InvalidDid as exc:
        raise InvalidRecord("did and did_key name different keys", forged=True) from exc
    signatures = obj["signatures"]
    server_name = server_name_for(NodeId(node_id))
    if not isinstance(signatures, dict) or set(signatures) != {server_name}:
        raise InvalidRecord(f"a heartbeat is signed by {server_name} only", forged=True)
    key_ids = signatures[server_name]
    if not isinstance(key_ids, dict) or set(key_ids) != {f"ed25519:{pub_key_short(public_key)}"}:
        raise InvalidRecord("a heartbeat carries exactly the node key's signature", forged=True)
    try:
        verify_key = cast(signedjson.types.VerifyKey, matrix_verify_key(public_key))
        verify_signed_json(obj, server_name, verify_key)
    except SignatureVerifyException as exc:
        raise InvalidRecord("heartbeat signature does not verify", forged=True) from exc
    return Heartbeat(
        anchor=anchor,
        did=Did(did),
        did_key=DidKey(did_key),
        node_id=NodeId(node_id),
        endpoints=checked_endpoints,
        ts=ts,
        public_key=public_key,
        canonical=bytes(encode_canonical_json(obj)),
    )


# ---------------------------------------------------------------- peers request


def _request_message(anchor: str, did: str, ts: int, method: str, uri: str) -> bytes:
    fields = {"anchor": anchor, "did": did, "method": method, "ts": ts, "uri": uri}
    return bytes(encode_canonical_json(fields))


def sign_peers_request(identity: NodeIdentity, anchor: str, ts: int) -> str:
    """The ``Authorization`` header value for ``GET /v1/peers``."""
    signature = identity.sign(_request_message(anchor, identity.did, ts, "GET", PEERS_PATH))
    return f'{AUTH_SCHEME} did="{identity.did}",ts="{ts}",sig="{encode_base64(signature)}"'


@dataclass(frozen=True, slots=True)
class PeersAuth:
    did: Did
    ts: int
    signature: bytes


def parse_peers_auth(header: str | None) -> PeersAuth:
    """Parse the header (not yet checked against any key); raises ``InvalidRecord``."""
    match = _AUTH_RE.fullmatch(header or "")
    if match is None:
        raise InvalidRecord(f'expected Authorization: {AUTH_SCHEME} did="…",ts="…",sig="…"')
    try:
        signature = decode_base64(match.group(3))
    except ValueError as exc:
        raise InvalidRecord("sig is not unpadded base64") from exc
    return PeersAuth(Did(match.group(1)), int(match.group(2)), signature)


def verify_peers_auth(auth: PeersAuth, anchor: str, public_key: bytes) -> None:
    """Check the request signature under the key the anchor has bound to the DID."""
    message = _request_message(anchor, auth.did, auth.ts, "GET", PEERS_PATH)
    try:
        nacl.signing.VerifyKey(public_key).verify(message, auth.signature)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise InvalidRecord("request signature does not verify", forged=True) from exc

"""Content hashes, reference hashes and event ids (server-server API, "Calculating the content
hash for an event", "Calculating the reference hash for an event"; ``rooms/fragments/
v4-event-ids.md``).

Room versions 10 and 11 carry no ``event_id`` on the wire: the id is derived from the event. A
top-level ``event_id`` key, if a caller leaves one in, is ignored by every function here.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Mapping
from typing import Any, Final

from canonicaljson import encode_canonical_json
from unpaddedbase64 import decode_base64, encode_base64

from cis.ids import EventId
from cis.matrix import canonical_json
from cis.matrix.errors import InvalidJson, InvalidPdu
from cis.matrix.redaction import redact_with
from cis.matrix.room_versions import RoomVersion, get_room_version

_NOT_IN_CONTENT_HASH: Final = frozenset({"unsigned", "signatures", "hashes", "event_id"})
_NOT_IN_REFERENCE_HASH: Final = frozenset({"unsigned", "signatures", "event_id"})


def _canonical(obj: Mapping[str, Any]) -> bytes:
    try:
        return canonical_json.encode(obj)
    except InvalidJson as e:
        raise InvalidPdu(str(e)) from e


def _require_object(pdu: object) -> Mapping[str, Any]:
    if not isinstance(pdu, Mapping):
        raise InvalidPdu("a PDU is a JSON object")
    return pdu


def content_hash_bytes(pdu: Mapping[str, Any]) -> bytes:
    """SHA-256 over the canonical JSON of the whole event without ``unsigned``,
    ``signatures`` and ``hashes``: it covers the unredacted content."""
    pdu = _require_object(pdu)
    stripped = {k: v for k, v in pdu.items() if k not in _NOT_IN_CONTENT_HASH}
    return hashlib.sha256(_canonical(stripped)).digest()


def compute_content_hash(pdu: Mapping[str, Any]) -> str:
    """The value for ``hashes.sha256``: the content hash in standard unpadded base64."""
    return encode_base64(content_hash_bytes(pdu))


def _claimed_hash(pdu: Mapping[str, Any]) -> bytes | None:
    hashes = pdu.get("hashes")
    claimed = hashes.get("sha256") if isinstance(hashes, Mapping) else None
    if not isinstance(claimed, str):
        return None
    try:
        return decode_base64(claimed)
    except (binascii.Error, ValueError):
        return None


def check_content_hash(pdu: Mapping[str, Any]) -> bool:
    """Whether ``hashes.sha256`` matches the event's content.

    False when it does not, or is missing or not base64. On receipt, a false result with a good
    signature means the event must be replaced by its redacted form (server-server API,
    "Validating hashes and signatures on received events").
    """
    claimed = _claimed_hash(_require_object(pdu))
    return claimed is not None and claimed == content_hash_bytes(pdu)


def check_content_hash_of(pdu: Mapping[str, Any]) -> bool:
    """``check_content_hash`` for a PDU already known to lie in canonical JSON's domain (as
    ``canonical_json.loads`` returns it): the same answer without checking the domain again."""
    claimed = _claimed_hash(pdu)
    stripped = {k: v for k, v in pdu.items() if k not in _NOT_IN_CONTENT_HASH}
    return (
        claimed is not None and claimed == hashlib.sha256(encode_canonical_json(stripped)).digest()
    )


def reference_hash_with(rv: RoomVersion, pdu: Mapping[str, Any]) -> bytes:
    """SHA-256 over the redacted event without ``signatures`` and ``unsigned``."""
    redacted = redact_with(rv, _require_object(pdu))
    stripped = {k: v for k, v in redacted.items() if k not in _NOT_IN_REFERENCE_HASH}
    return hashlib.sha256(_canonical(stripped)).digest()


def event_id_from_reference_hash(digest: bytes) -> EventId:
    """``$`` + URL-safe unpadded base64 (appendices, "URL-safe unpadded Base64")."""
    return EventId("$" + encode_base64(digest, urlsafe=True))


def compute_event_id(room_version: str, pdu: Mapping[str, Any]) -> EventId:
    """The event id of ``pdu`` in a room of ``room_version``.

    Unchanged by redaction and by added signatures or ``unsigned`` data, since the reference
    hash covers only the redacted form without them.
    """
    rv = get_room_version(room_version)
    return event_id_from_reference_hash(reference_hash_with(rv, pdu))

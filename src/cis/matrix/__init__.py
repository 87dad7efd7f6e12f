"""The Matrix core: pure rules for room versions 10 and 11, no I/O.

- ``canonical_json``: the encoding, and the strict value domain (room versions ≥ 6).
- ``redaction``, ``hashing``, ``signing``: redaction algorithms, content/reference hashes and
  event ids, event signatures; byte for byte what other Matrix servers compute.
- ``events``: ``Event``, frozen and typed, parsed from wire PDUs (``parse_pdu``) or built
  locally (``build_event``).

The functions over plain PDU dicts (``compute_content_hash`` … ``verify_event_signature``) let
any tool compare us with other Matrix implementations. Errors are in ``cis.matrix.errors``.
"""

from cis.matrix.errors import (
    AuthError,
    InvalidJson,
    InvalidPdu,
    MatrixError,
    MissingEvents,
    SignatureError,
    UnsupportedRoomVersion,
)
from cis.matrix.events import Event, EventLike, StateKey, build_event, parse_pdu, parse_pdu_json
from cis.matrix.hashing import check_content_hash, compute_content_hash, compute_event_id
from cis.matrix.redaction import redact
from cis.matrix.room_versions import DEFAULT_ROOM_VERSION, SUPPORTED_ROOM_VERSIONS
from cis.matrix.signing import hash_and_sign_event, sign_event, verify_event_signature

__all__ = [
    "DEFAULT_ROOM_VERSION",
    "SUPPORTED_ROOM_VERSIONS",
    "AuthError",
    "Event",
    "EventLike",
    "InvalidJson",
    "InvalidPdu",
    "MatrixError",
    "MissingEvents",
    "SignatureError",
    "StateKey",
    "UnsupportedRoomVersion",
    "build_event",
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "hash_and_sign_event",
    "parse_pdu",
    "parse_pdu_json",
    "redact",
    "sign_event",
    "verify_event_signature",
]

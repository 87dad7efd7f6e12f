"""The Matrix core: pure rules for room versions 10 and 11, no I/O.

- ``canonical_json``: the encoding, and the strict value domain (room versions ≥ 6).
- ``redaction``, ``hashing``, ``signing``: redaction algorithms, content/reference hashes and
  event ids, event signatures; byte for byte what other Matrix servers compute.
- ``events``: ``Event``, frozen and typed, parsed from wire PDUs (``parse_pdu``) or built
  locally (``build_event``).
- ``auth``: the authorisation rules (``check_auth``, ``check_auth_events_selection``) and
  whether a redaction is applied.
- ``state_res``: state resolution v2 (``resolve_state``).
- ``dag``: laying out new events on the forward extremities, the state after an event.

The functions over plain PDU dicts (``compute_content_hash`` … ``verify_event_signature``) let
any tool compare us with other Matrix implementations. Errors are in ``cis.matrix.errors``.
"""

from cis.matrix.auth import (
    auth_types_for_event,
    check_auth,
    check_auth_events_selection,
    redaction_allowed,
)
from cis.matrix.dag import next_forward_extremities, prepare_pdu, state_after
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
from cis.matrix.state_res import StateMap, resolve_state

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
    "StateMap",
    "UnsupportedRoomVersion",
    "auth_types_for_event",
    "build_event",
    "check_auth",
    "check_auth_events_selection",
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "hash_and_sign_event",
    "next_forward_extremities",
    "parse_pdu",
    "parse_pdu_json",
    "prepare_pdu",
    "redact",
    "redaction_allowed",
    "resolve_state",
    "sign_event",
    "state_after",
    "verify_event_signature",
]

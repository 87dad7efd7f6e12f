"""Events of room versions 10 and 11: parsed once at the boundary into frozen objects.

An ``Event`` keeps the canonical bytes of its wire PDU (hashes and signatures included, no
``event_id``, no ``unsigned``) and its id computed from them; its ``content`` is a read-only
deep-frozen copy. Nothing can change an event after parsing, so nothing can desynchronise it
from its hash.

Validation (``parse_pdu``), from the PDU schema (``data/api/server-server/definitions/
pdu_v4.yaml``, ``pdu_v11.yaml``) and the client-server API, "Size limits":

- the PDU is in canonical JSON's domain (``canonical_json``) and its canonical form, signatures
  included, is at most 65,536 bytes;
- required keys and types: ``auth_events``, ``prev_events`` (lists of event ids, at most 10 and
  20), ``content``, ``hashes`` (with a string ``sha256``), ``signatures`` (server → key id →
  string), ``depth`` (a non-negative integer), ``origin_server_ts`` (integer), ``room_id``,
  ``sender``, ``type``, and an optional string ``state_key``; v10 may carry a top-level string
  ``redacts``;
- ``sender``, ``room_id``, ``state_key``, ``type`` and every event id at most 255 bytes of UTF-8;
  user ids look like ``@local:server``, room ids ``!opaque:server``, event ids ``$…``.

``unsigned`` is not covered by hashes or signatures and any server may rewrite it, so an
``Event`` does not keep it; a top-level ``event_id`` is ignored (the id is computed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol

import nacl.signing
from canonicaljson import encode_canonical_json
from unpaddedbase64 import encode_base64

from cis.ids import EventId, RoomId, UserId
from cis.matrix import canonical_json
from cis.matrix.errors import InvalidJson, InvalidPdu
from cis.matrix.hashing import check_content_hash_of, event_id_from_reference_hash
from cis.matrix.redaction import redact_with
from cis.matrix.room_versions import RoomVersion, get_room_version
from cis.matrix.signing import split_key_id

StateKey = tuple[str, str]
"""``(event type, state key)``: the key of a room state map."""

MAX_PDU_BYTES: Final = 65_536
MAX_ID_BYTES: Final = 255
MAX_PREV_EVENTS: Final = 20
MAX_AUTH_EVENTS: Final = 10


class EventLike(Protocol):
    """What the auth rules and state resolution read from an event.

    ``Event`` provides it; so can a light view over a trusted PDU dict.
    """

    @property
    def event_id(self) -> EventId: ...
    @property
    def room_id(self) -> RoomId: ...
    @property
    def sender(self) -> UserId: ...
    @property
    def type(self) -> str: ...
    @property
    def state_key(self) -> str | None: ...
    @property
    def origin_server_ts(self) -> int: ...
    @property
    def prev_events(self) -> tuple[EventId, ...]: ...
    @property
    def auth_events(self) -> tuple[EventId, ...]: ...
    @property
    def content(self) -> Mapping[str, Any]: ...
    @property
    def signatures(self) -> Mapping[str, Mapping[str, str]]: ...


def _unpickle_event(*fields: Any) -> Event:
    values = list(fields)
    for index in (9, 13, 14):  # content, hashes, signatures
        values[index] = freeze(values[index])
    return Event(*values)


def freeze(value: Any) -> Any:
    """A read-only deep copy of a JSON value: objects become ``MappingProxyType``, arrays
    tuples. The value must be in canonical JSON's domain (nesting is bounded there)."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a (possibly frozen) JSON value: the inverse of ``freeze``."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Event:
    """A parsed, immutable PDU. Build one with ``parse_pdu`` or ``build_event`` only: the
    constructor trusts its arguments to agree with ``canonical_bytes``."""

    event_id: EventId
    room_id: RoomId
    sender: UserId
    type: str
    state_key: str | None
    origin_server_ts: int
    depth: int
    prev_events: tuple[EventId, ...]
    auth_events: tuple[EventId, ...]
    content: Mapping[str, Any]
    redacts: EventId | None
    room_version: str
    canonical_bytes: bytes
    hashes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    signatures: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def membership(self) -> str | None:
        """``content.membership`` of an ``m.room.member`` event, if it is a string."""
        if self.type != "m.room.member":
            return None
        value = self.content.get("membership")
        return value if isinstance(value, str) else None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with plain dicts inside (``MappingProxyType`` does not pickle), so events
        checked in worker processes come back without being parsed again."""
        return (
            _unpickle_event,
            (
                self.event_id, self.room_id, self.sender, self.type, self.state_key,
                self.origin_server_ts, self.depth, self.prev_events, self.auth_events,
                thaw(self.content), self.redacts, self.room_version, self.canonical_bytes,
                thaw(self.hashes), thaw(self.signatures),
            ),
        )  # fmt: skip

    def to_pdu(self) -> dict[str, Any]:
        """A fresh deep copy of the wire PDU (no ``event_id``, no ``unsigned``)."""
        pdu: dict[str, Any] = json.loads(self.canonical_bytes)
        return pdu

    def redacted(self) -> Event:
        """This event with its room version's redaction applied; same ``event_id``."""
        rv = get_room_version(self.room_version)
        return parse_pdu(rv.identifier, redact_with(rv, self.to_pdu()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (
            self.room_version == other.room_version
            and self.canonical_bytes == other.canonical_bytes
        )

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        key = "" if self.state_key is None else f" state_key={self.state_key!r}"
        return f"<Event {self.event_id} {self.type}{key} from {self.sender}>"


# ------------------------------------------------------------------ parsing


def _bad(where: str, why: str) -> InvalidPdu:
    return InvalidPdu(f"{where}: {why}")


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8"))


def _str_field(
    pdu: Mapping[str, Any], key: str, *, sigil: str = "", needs_colon: bool = False
) -> str:
    value = pdu.get(key)
    if not isinstance(value, str):
        raise _bad(key, "required, and must be a string")
    check_id_text(key, value, sigil=sigil, needs_colon=needs_colon)
    return value


def check_id_text(where: str, value: str, *, sigil: str = "", needs_colon: bool = False) -> None:
    """The size limit (255 bytes) and the shape of an id-like string."""
    if _utf8_len(value) > MAX_ID_BYTES:
        raise _bad(where, f"longer than {MAX_ID_BYTES} bytes")
    if sigil and not value.startswith(sigil):
        raise _bad(where, f"must start with {sigil!r}")
    if needs_colon:
        _, sep, server = value[1:].partition(":")
        if not sep or not server:
            raise _bad(where, f"must look like {sigil}localpart:server")


def _int_field(pdu: Mapping[str, Any], key: str, *, minimum: int | None = None) -> int:
    value = pdu.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, "required, and must be an integer")
    if minimum is not None and value < minimum:
        raise _bad(key, f"must be at least {minimum}")
    return value


def _event_ids(pdu: Mapping[str, Any], key: str, limit: int) -> tuple[EventId, ...]:
    value = pdu.get(key)
    if not isinstance(value, list):
        raise _bad(key, "required, and must be a list of event ids")
    if len(value) > limit:
        raise _bad(key, f"at most {limit} entries")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _bad(f"{key}[{i}]", "must be an event id string")
        check_id_text(f"{key}[{i}]", item, sigil="$")
    return tuple(EventId(i) for i in value)


def _check_signatures(value: object) -> None:
    if not isinstance(value, dict):
        raise _bad("signatures", "required, and must be an object")
    for server, keys in value.items():
        if not isinstance(keys, dict) or not all(isinstance(s, str) for s in keys.values()):
            raise _bad(f"signatures.{server}", "must map key ids to strings")


@dataclass(frozen=True, slots=True)
class _Fields:
    """The typed fields of a PDU, checked; what ``parse_pdu`` and ``build_event`` share."""

    type: str
    room_id: RoomId
    sender: UserId
    state_key: str | None
    origin_server_ts: int
    depth: int
    prev_events: tuple[EventId, ...]
    auth_events: tuple[EventId, ...]
    content: dict[str, Any]
    redacts: EventId | None


def _check_fields(rv: RoomVersion, wire: Mapping[str, Any]) -> _Fields:
    """Check the required keys and their types (the module docstring's list), all but
    ``hashes`` and ``signatures``. ``wire`` is already in canonical JSON's domain."""
    event_type = _str_field(wire, "type")
    room_id = RoomId(_str_field(wire, "room_id", sigil="!", needs_colon=True))
    sender = UserId(_str_field(wire, "sender", sigil="@", needs_colon=True))
    state_key = wire.get("state_key")
    if state_key is not None:
        if not isinstance(state_key, str):
            raise _bad("state_key", "must be a string")
        check_id_text("state_key", state_key)
    elif "state_key" in wire:
        raise _bad("state_key", "must be a string, not null")
    origin_server_ts = _int_field(wire, "origin_server_ts")
    depth = _int_field(wire, "depth", minimum=0)
    prev_events = _event_ids(wire, "prev_events", MAX_PREV_EVENTS)
    auth_events = _event_ids(wire, "auth_events", MAX_AUTH_EVENTS)
    content = wire.get("content")
    if not isinstance(content, dict):
        raise _bad("content", "required, and must be an object")

    redacts: EventId | None = None
    if rv.redacts_in_content:
        # v11: content.redacts; a top-level `redacts` is an unprotected extra key.
        if event_type == "m.room.redaction" and isinstance(content.get("redacts"), str):
            redacts = EventId(content["redacts"])
    elif "redacts" in wire:
        if not isinstance(wire["redacts"], str):
            raise _bad("redacts", "must be an event id string")
        check_id_text("redacts", wire["redacts"], sigil="$")
        redacts = EventId(wire["redacts"])
    return _Fields(
        event_type,
        room_id,
        sender,
        state_key,
        origin_server_ts,
        depth,
        prev_events,
        auth_events,
        content,
        redacts,
    )


def _in_domain(wire: Mapping[str, Any]) -> None:
    try:
        canonical_json.check_value(wire)
    except InvalidJson as e:
        raise InvalidPdu(str(e)) from e


def _check_size(canonical: bytes) -> None:
    if len(canonical) > MAX_PDU_BYTES:
        raise InvalidPdu(f"{len(canonical)} bytes in canonical JSON; the limit is {MAX_PDU_BYTES}")


def _event(
    rv: RoomVersion,
    fields: _Fields,
    *,
    event_id: EventId,
    canonical: bytes,
    hashes: Mapping[str, Any],
    signatures: Mapping[str, Any],
) -> Event:
    return Event(
        event_id=event_id,
        room_id=fields.room_id,
        sender=fields.sender,
        type=fields.type,
        state_key=fields.state_key,
        origin_server_ts=fields.origin_server_ts,
        depth=fields.depth,
        prev_events=fields.prev_events,
        auth_events=fields.auth_events,
        content=freeze(fields.content),
        redacts=fields.redacts,
        room_version=rv.identifier,
        canonical_bytes=canonical,
        hashes=freeze(hashes),
        signatures=freeze(signatures),
    )


def parse_pdu(room_version: str, pdu: Mapping[str, Any]) -> Event:
    """Validate a wire PDU and freeze it into an ``Event`` (``InvalidPdu`` if malformed,
    ``UnsupportedRoomVersion`` for a room version other than 10 and 11).

    A top-level ``event_id`` is ignored (the id is computed) and ``unsigned`` is dropped.
    Hashes and signatures are *not* checked here: see ``check_content_hash`` and
    ``verify_event_signature``.
    """
    return _parse(get_room_version(room_version), pdu, in_domain=False)[0]


def _parse(
    rv: RoomVersion, pdu: Mapping[str, Any], *, in_domain: bool
) -> tuple[Event, bytes, dict[str, Any]]:
    """``parse_pdu``'s work; also returns the bytes signed (the redacted event without
    ``signatures``, the reference hash's input) and the wire dict. ``in_domain``: the
    caller already checked canonical JSON's domain (``canonical_json.loads`` did)."""
    if not isinstance(pdu, Mapping):
        raise InvalidPdu("a PDU is a JSON object")
    wire = {k: v for k, v in pdu.items() if k not in ("event_id", "unsigned")}
    if not in_domain:
        _in_domain(wire)
    fields = _check_fields(rv, wire)
    hashes = wire.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        raise _bad("hashes", "required, with a string sha256")
    _check_signatures(wire.get("signatures"))
    try:
        canonical = encode_canonical_json(wire)
        redacted = redact_with(rv, wire, share=True)  # only encoded: no copies needed
        del redacted["signatures"]
        signed = encode_canonical_json(redacted)
    except RecursionError:  # pragma: no cover - check_value bounds nesting first
        raise InvalidPdu("nested too deeply") from None
    _check_size(canonical)
    event = _event(
        rv,
        fields,
        event_id=event_id_from_reference_hash(hashlib.sha256(signed).digest()),
        canonical=canonical,
        hashes=hashes,
        signatures=wire["signatures"],
    )
    return event, signed, wire


def build_event(
    room_version: str,
    partial_pdu: Mapping[str, Any],
    server_name: str,
    key_id: str,
    signing_key: nacl.signing.SigningKey,
) -> Event:
    """A locally created event: ``partial_pdu`` (everything but ``hashes`` and
    ``signatures``, e.g. from ``cis.matrix.dag.prepare_pdu``) hashed and signed by this server.

    The same as ``parse_pdu(hash_and_sign_event(...))`` (a test holds it to that), computed
    with each canonical encoding done once: the bytes signed (the redacted event without
    ``signatures``, ``unsigned`` and ``event_id``) are exactly the reference hash's input, so
    the event id comes from them.
    """
    rv = get_room_version(room_version)
    split_key_id(key_id)
    wire = {
        k: v
        for k, v in partial_pdu.items()
        if k not in ("event_id", "unsigned", "hashes", "signatures")
    }
    _in_domain(wire)
    fields = _check_fields(rv, wire)
    hashes = {"sha256": encode_base64(hashlib.sha256(encode_canonical_json(wire)).digest())}
    wire["hashes"] = hashes
    # Shared, not copied: the redacted form is only encoded.
    signed_bytes = encode_canonical_json(redact_with(rv, wire, share=True))
    signature = encode_base64(signing_key.sign(signed_bytes).signature)
    signatures = {server_name: {key_id: signature}}
    wire["signatures"] = signatures
    canonical = encode_canonical_json(wire)
    _check_size(canonical)
    event_id = event_id_from_reference_hash(hashlib.sha256(signed_bytes).digest())
    return _event(
        rv, fields, event_id=event_id, canonical=canonical, hashes=hashes, signatures=signatures
    )


@dataclass(frozen=True, slots=True)
class ReceivedPdu:
    """A PDU from another server, parsed, with what receipt checks next."""

    event: Event
    signed_bytes: bytes
    """The redacted event without ``signatures``: what its origin signed (and the reference
    hash's input, so the event id comes from them too)."""
    content_hash_ok: bool


def parse_received_pdu(room_version: str, data: bytes | str) -> ReceivedPdu:
    """``parse_pdu_json`` for receipt, each step done once: the JSON is parsed and its domain
    checked once, and the canonical encodings the signature and hash checks need are made here
    (``parse_pdu`` followed by ``verify_event_signature`` and ``check_content_hash`` would redact
    and encode the event three more times). Same ``InvalidPdu`` refusals as ``parse_pdu``."""
    rv = get_room_version(room_version)
    try:
        value = canonical_json.loads(data)
    except InvalidJson as e:
        raise InvalidPdu(str(e)) from e
    event, signed, wire = _parse(rv, value, in_domain=True)
    return ReceivedPdu(event, signed, check_content_hash_of(wire))


def parse_pdu_json(room_version: str, data: bytes | str) -> Event:
    """``parse_pdu`` over JSON text, parsed strictly (``canonical_json.loads``)."""
    try:
        value = canonical_json.loads(data)
    except InvalidJson as e:
        raise InvalidPdu(str(e)) from e
    return parse_pdu(room_version, value)

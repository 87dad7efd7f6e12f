"""The event contract between the Matrix core and the stores.

``PersistableEvent`` is the seam: the Matrix core's frozen ``Event`` satisfies it, and so does
any object with these read-only attributes (tests use a small factory). Stores never parse
PDUs; they keep ``canonical_bytes`` (the wire PDU as canonical JSON, without ``event_id`` and
``unsigned``) verbatim and index the attributes.

``StoredEvent`` is what stores hand back: the same attributes plus where and how the event
was stored (its node-wide stream position, when it was received, its status).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

from cis.ids import EventId, RoomId, UserId
from cis.storage.errors import InvalidEvent

__all__ = [
    "EventStatus",
    "PersistableEvent",
    "StoredEvent",
    "content_strings",
    "validate_event",
]

MAX_ID_BYTES: Final = 255
"""Matrix limits event ids, room ids, user ids and types to 255 bytes."""


class PersistableEvent(Protocol):
    """What a store needs from an event (the Matrix core's ``Event`` provides exactly this)."""

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
    def depth(self) -> int: ...
    @property
    def prev_events(self) -> tuple[EventId, ...]: ...
    @property
    def auth_events(self) -> tuple[EventId, ...]: ...
    @property
    def content(self) -> Mapping[str, Any]: ...
    @property
    def redacts(self) -> EventId | None: ...
    @property
    def room_version(self) -> str: ...
    @property
    def canonical_bytes(self) -> bytes: ...
    @property
    def is_state(self) -> bool: ...


class EventStatus(StrEnum):
    """How an event takes part in its room.

    ``timeline``: accepted, in the room's timeline and state. ``outlier``: stored (for auth
    chains, backfill) but not part of the timeline. ``rejected``: failed the auth rules, kept
    only so it is not fetched again. ``soft_failed``: valid but not accepted into the current
    state (Matrix Server-Server API, "Soft failure").
    """

    TIMELINE = "timeline"
    OUTLIER = "outlier"
    REJECTED = "rejected"
    SOFT_FAILED = "soft_failed"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as a store returns it. Satisfies ``PersistableEvent``."""

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
    stream_ordering: int
    received_ts: int
    status: EventStatus

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    def pdu(self) -> dict[str, Any]:
        """The wire PDU as a dict (a fresh copy each call)."""
        parsed: dict[str, Any] = json.loads(self.canonical_bytes)
        return parsed


def _check_id(what: str, value: object, sigil: str | None) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{what} must be a non-empty string")
    if sigil is not None and not value.startswith(sigil):
        raise InvalidEvent(f"{what} must start with {sigil!r}")
    # A character takes at most 4 bytes in UTF-8: short ids need no encoding to be measured.
    too_long = len(value) > MAX_ID_BYTES // 4 and (
        len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES
    )
    if too_long or "\x00" in value:
        raise InvalidEvent(f"{what} is longer than {MAX_ID_BYTES} bytes or holds NUL")
    return value


def validate_event(event: PersistableEvent, room_id: RoomId) -> None:
    """Raise ``InvalidEvent`` unless ``event`` is a well-formed event of ``room_id``."""
    try:
        event_id = _check_id("event_id", event.event_id, "$")
        if event.room_id != room_id:
            raise InvalidEvent(f"event {event_id} belongs to another room, not {room_id}")
        _check_id("sender", event.sender, "@")
        _check_id("type", event.type, None)
        if event.state_key is not None and not isinstance(event.state_key, str):
            raise InvalidEvent(f"event {event_id}: state_key must be a string or null")
        for what, number in (("origin_server_ts", event.origin_server_ts), ("depth", event.depth)):
            if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 2**63:
                raise InvalidEvent(f"event {event_id}: {what} must be a non-negative integer")
        for what, ids in (("prev_events", event.prev_events), ("auth_events", event.auth_events)):
            if not isinstance(ids, tuple):
                raise InvalidEvent(f"event {event_id}: {what} must be a tuple of event ids")
            for ref in ids:
                _check_id(f"event {event_id}: {what} entry", ref, "$")
        if event.redacts is not None:
            _check_id(f"event {event_id}: redacts", event.redacts, "$")
        if not isinstance(event.content, Mapping):
            raise InvalidEvent(f"event {event_id}: content must be an object")
        if not isinstance(event.room_version, str) or not event.room_version:
            raise InvalidEvent(f"event {event_id}: room_version must be a string")
        raw = event.canonical_bytes
        if not isinstance(raw, bytes) or not raw.startswith(b"{") or not raw.endswith(b"}"):
            raise InvalidEvent(f"event {event_id}: canonical_bytes must be a JSON object")
    except AttributeError as exc:
        raise InvalidEvent(f"not an event: missing attribute {exc.name!r}") from exc


_SEPARATOR: Final = b"\xff"
"""Joins the string values of a content. 0xFF never occurs in UTF-8, so a UTF-8 needle can only
match inside one value."""


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def content_strings(content: Mapping[str, Any]) -> bytes:
    """Every string value of ``content`` (at any depth, keys excluded), for ``contains``."""
    values = list(content.values())
    if all(type(v) is str for v in values):  # the common flat message: no recursion needed
        return _SEPARATOR.join(v.encode("utf-8", "surrogatepass") for v in values)
    return _SEPARATOR.join(s.encode("utf-8", "surrogatepass") for s in _strings(content))


def encode_needle(needle: str) -> bytes:
    return needle.encode("utf-8", "surrogatepass")

"""Test-only events that satisfy ``cis.storage.events.PersistableEvent``.

They stand in for the Matrix core's events in storage tests: a PDU dict (room version 10
shape, no ``event_id`` key) whose canonical JSON is hashed into a ``$``-prefixed id the way a
reference hash is, so identical PDUs get identical ids.
"""

from __future__ import annotations

import hashlib
from base64 import urlsafe_b64encode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canonicaljson import encode_canonical_json

from cis.ids import EventId, RoomId, UserId

DEFAULT_SENDER = "@alice:alpha.cis.local"
DEFAULT_TS = 1_700_000_000_000


@dataclass(frozen=True, slots=True)
class FakeEvent:
    event_id: EventId
    room_id: RoomId
    sender: UserId
    type: str
    state_key: str | None
    origin_server_ts: int
    depth: int
    prev_events: tuple[EventId, ...]
    auth_events: tuple[EventId, ...]
    content: Mapping[str, Any] = field(hash=False)
    redacts: EventId | None
    room_version: str
    canonical_bytes: bytes = field(repr=False)

    @property
    def is_state(self) -> bool:
        return self.state_key is not None


class FakePduError(ValueError):
    pass


def _b64(raw: bytes) -> str:
    return urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def parse_fake_pdu(room_version: str, pdu: dict[str, Any]) -> FakeEvent:
    """Check the fields a store needs and compute the id; raises ``FakePduError``."""
    if room_version not in ("10", "11"):
        raise FakePduError(f"unsupported room version {room_version!r}")
    for key, kind in (
        ("room_id", str),
        ("sender", str),
        ("type", str),
        ("content", dict),
        ("origin_server_ts", int),
        ("depth", int),
        ("prev_events", list),
        ("auth_events", list),
    ):
        if not isinstance(pdu.get(key), kind):
            raise FakePduError(f"{key} missing or not a {kind.__name__}")
    if "event_id" in pdu:
        raise FakePduError("a v10 PDU carries no event_id")
    state_key = pdu.get("state_key")
    if state_key is not None and not isinstance(state_key, str):
        raise FakePduError("state_key must be a string")
    wire = {k: v for k, v in pdu.items() if k != "unsigned"}
    canonical = encode_canonical_json(wire)
    event_id = EventId("$" + _b64(hashlib.sha256(canonical).digest()))
    redacts = pdu.get("redacts")
    return FakeEvent(
        event_id=event_id,
        room_id=RoomId(pdu["room_id"]),
        sender=UserId(pdu["sender"]),
        type=pdu["type"],
        state_key=state_key,
        origin_server_ts=pdu["origin_server_ts"],
        depth=pdu["depth"],
        prev_events=tuple(EventId(e) for e in pdu["prev_events"]),
        auth_events=tuple(EventId(e) for e in pdu["auth_events"]),
        content=pdu["content"],
        redacts=EventId(redacts) if isinstance(redacts, str) else None,
        room_version=room_version,
        canonical_bytes=canonical,
    )


def make_pdu(
    room_id: str,
    *,
    type: str = "m.room.message",
    sender: str = DEFAULT_SENDER,
    content: Mapping[str, Any] | None = None,
    state_key: str | None = None,
    prev_events: Sequence[str] = (),
    auth_events: Sequence[str] = (),
    ts: int = DEFAULT_TS,
    depth: int = 1,
    redacts: str | None = None,
) -> dict[str, Any]:
    body = dict(content) if content is not None else {"msgtype": "m.text", "body": "hello"}
    pdu: dict[str, Any] = {
        "room_id": room_id,
        "sender": sender,
        "type": type,
        "content": body,
        "origin_server_ts": ts,
        "depth": depth,
        "prev_events": list(prev_events),
        "auth_events": list(auth_events),
        "hashes": {"sha256": _b64(hashlib.sha256(encode_canonical_json(body)).digest())},
        "signatures": {},
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        pdu["redacts"] = redacts
    return pdu


def make_event(room_id: str, **fields: Any) -> FakeEvent:
    return parse_fake_pdu("10", make_pdu(room_id, **fields))


def chain(
    room_id: str, count: int, *, start_ts: int = DEFAULT_TS, **fields: Any
) -> list[FakeEvent]:
    """``count`` messages, each naming the previous one as its prev_event."""
    events: list[FakeEvent] = []
    prev: tuple[str, ...] = ()
    for i in range(count):
        content = {"msgtype": "m.text", "body": f"message {i}"}
        event = make_event(
            room_id, prev_events=prev, ts=start_ts + i, depth=i + 1, content=content, **fields
        )
        events.append(event)
        prev = (event.event_id,)
    return events

"""Real, signed Matrix events for storage tests (built with the Matrix core).

``make_event`` signs a PDU with a fixed test server key, so identical arguments give identical
events (and ids). The stores never check signatures or auth rules: any well-formed PDU will do,
which lets tests lay out DAGs freely (forks, events arriving out of order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import nacl.signing

from cis.matrix import DEFAULT_ROOM_VERSION, Event, build_event, parse_pdu

SERVER: Final = "alpha.cis.local"
KEY_ID: Final = "ed25519:test"
SIGNING_KEY: Final = nacl.signing.SigningKey(bytes(range(32)))
DEFAULT_SENDER: Final = f"@alice:{SERVER}"
DEFAULT_TS: Final = 1_700_000_000_000

__all__ = ["DEFAULT_SENDER", "DEFAULT_TS", "chain", "make_event", "make_pdu", "parse_pdu"]


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
) -> dict[str, Any]:
    """A partial PDU: everything but ``hashes`` and ``signatures``."""
    pdu: dict[str, Any] = {
        "room_id": room_id,
        "sender": sender,
        "type": type,
        "content": dict(content) if content is not None else {"msgtype": "m.text", "body": "hi"},
        "origin_server_ts": ts,
        "depth": depth,
        "prev_events": list(prev_events),
        "auth_events": list(auth_events),
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    return pdu


def make_event(room_id: str, *, room_version: str = DEFAULT_ROOM_VERSION, **fields: Any) -> Event:
    return build_event(room_version, make_pdu(room_id, **fields), SERVER, KEY_ID, SIGNING_KEY)


def chain(room_id: str, count: int, *, start_ts: int = DEFAULT_TS, **fields: Any) -> list[Event]:
    """``count`` messages, each naming the previous one as its prev_event."""
    events: list[Event] = []
    prev: tuple[str, ...] = ()
    for i in range(count):
        content = {"msgtype": "m.text", "body": f"message {i}"}
        event = make_event(
            room_id, prev_events=prev, ts=start_ts + i, depth=i + 1, content=content, **fields
        )
        events.append(event)
        prev = (event.event_id,)
    return events

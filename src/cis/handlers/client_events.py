"""Events as clients see them (Client-Server API §"Room Event Format", ``ClientEvent``).

A stored PDU carries federation fields (``auth_events``, ``prev_events``, ``depth``,
``hashes``, ``signatures``) that clients do not get. The client format keeps ``content``,
``event_id``, ``origin_server_ts``, ``room_id``, ``sender``, ``state_key`` (state events only),
``type`` and ``unsigned``, where the server adds:

- ``age``: milliseconds since ``origin_server_ts``, as seen by this server now;
- ``transaction_id``: only for the device that sent the event (§"Transaction identifiers");
- ``prev_content``/``replaces_state`` of a state event, when known;
- ``redacted_because``: the redaction event of a redacted event.

Room version 11 moved ``redacts`` of ``m.room.redaction`` into ``content``; clients written
for older versions (matrix-nio among them) still read the top-level key, so both are served.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

_PDU_ONLY: Final = frozenset(
    {"auth_events", "prev_events", "depth", "hashes", "signatures", "origin", "prev_state",
     "membership", "unsigned", "event_id"}
)  # fmt: skip


def client_event(
    pdu: Mapping[str, Any],
    event_id: str,
    *,
    now_ms: int,
    transaction_id: str | None = None,
    prev_content: Mapping[str, Any] | None = None,
    replaces_state: str | None = None,
    redacted_because: Mapping[str, Any] | None = None,
    include_room_id: bool = True,
) -> dict[str, Any]:
    """``pdu`` (a wire PDU, with or without ``event_id``) in the client format."""
    out: dict[str, Any] = {key: value for key, value in pdu.items() if key not in _PDU_ONLY}
    out["event_id"] = event_id
    if not include_room_id:
        out.pop("room_id", None)
    if out.get("type") == "m.room.redaction" and "redacts" not in out:
        content = out.get("content")
        if isinstance(content, Mapping) and isinstance(content.get("redacts"), str):
            out["redacts"] = content["redacts"]
    unsigned: dict[str, Any] = {}
    ts = pdu.get("origin_server_ts")
    if isinstance(ts, int):
        unsigned["age"] = max(0, now_ms - ts)
    if transaction_id is not None:
        unsigned["transaction_id"] = transaction_id
    if prev_content is not None:
        unsigned["prev_content"] = dict(prev_content)
    if replaces_state is not None:
        unsigned["replaces_state"] = replaces_state
    if redacted_because is not None:
        unsigned["redacted_because"] = dict(redacted_because)
    out["unsigned"] = unsigned
    return out


STRIPPED_STATE_TYPES: Final = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
)


def stripped_event(pdu: Mapping[str, Any]) -> dict[str, Any]:
    """A stripped state event (§"Stripped state"): ``type``, ``state_key``, ``sender``,
    ``content`` only, as invitees see a room's state before joining."""
    return {
        "type": pdu.get("type"),
        "state_key": pdu.get("state_key", ""),
        "sender": pdu.get("sender"),
        "content": pdu.get("content", {}),
    }

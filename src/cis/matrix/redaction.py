"""The redaction algorithm of room versions 10 and 11 (client-server API, "Redactions";
``rooms/fragments/v9-redactions.md`` for v10, ``v11-redactions.md`` for v11).

Redaction strips an event to what the auth rules and the DAG need. Event ids and signatures are
computed over the redacted form, so this must match every other server byte for byte.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from cis.matrix.errors import InvalidPdu
from cis.matrix.room_versions import RoomVersion, get_room_version

_KEPT_TOP_LEVEL_V11: Final = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
)
# v9/v10 also keep these three (v11 dropped them: MSC2176, MSC3989).
_KEPT_TOP_LEVEL_V10: Final = _KEPT_TOP_LEVEL_V11 | {"prev_state", "origin", "membership"}

_PL_KEYS_V10: Final = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def _kept_content(
    rv: RoomVersion, event_type: object, content: Mapping[str, Any]
) -> dict[str, Any]:
    def keep(*keys: str) -> dict[str, Any]:
        return {k: copy.deepcopy(content[k]) for k in keys if k in content}

    if event_type == "m.room.member":
        kept = keep("membership", "join_authorised_via_users_server")
        if rv.updated_redaction_rules:
            # v11 keeps the `signed` key of `third_party_invite` (MSC3821). Like Synapse, an
            # object without `signed` stays as `{}`: the v11 text says the key "is no longer
            # redacted, but will only contain the signed key".
            tpi = content.get("third_party_invite")
            if isinstance(tpi, Mapping):
                kept["third_party_invite"] = (
                    {"signed": copy.deepcopy(tpi["signed"])} if "signed" in tpi else {}
                )
        return kept
    if event_type == "m.room.create":
        if rv.updated_redaction_rules:
            return copy.deepcopy(dict(content))  # v11: all of content
        return keep("creator")
    if event_type == "m.room.join_rules":
        return keep("join_rule", "allow")
    if event_type == "m.room.power_levels":
        if rv.updated_redaction_rules:
            return keep(*_PL_KEYS_V10, "invite")
        return keep(*_PL_KEYS_V10)
    if event_type == "m.room.history_visibility":
        return keep("history_visibility")
    if event_type == "m.room.redaction" and rv.updated_redaction_rules:
        return keep("redacts")
    return {}


def redact_with(rv: RoomVersion, pdu: Mapping[str, Any], *, share: bool = False) -> dict[str, Any]:
    """``redact`` for an already looked-up room version. With ``share`` the top-level values
    kept are ``pdu``'s own, not copies: for a caller that only encodes the result."""
    if not isinstance(pdu, Mapping):
        raise InvalidPdu("a PDU is a JSON object")
    content = pdu.get("content", {})
    if not isinstance(content, Mapping):
        raise InvalidPdu("content: must be an object")
    kept_keys = _KEPT_TOP_LEVEL_V11 if rv.updated_redaction_rules else _KEPT_TOP_LEVEL_V10
    redacted = {
        k: v if share else copy.deepcopy(v)
        for k, v in pdu.items()
        if k in kept_keys and k != "content"
    }
    redacted["content"] = _kept_content(rv, pdu.get("type"), content)
    return redacted


def redact(room_version: str, pdu: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``pdu`` redacted by the algorithm of ``room_version``.

    Keys the algorithm keeps are kept, ``event_id`` included if present (the spec's list names
    it); ``unsigned`` is not on the list and goes. ``pdu`` is left unchanged.
    """
    return redact_with(get_room_version(room_version), pdu)

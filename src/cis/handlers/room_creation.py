"""``POST /createRoom``: the request, validated, and the ordered plan of initial events.

The plan follows Client-Server API §"POST /createRoom" step by step; the room handler then
builds, authorises and stores every event of the plan in one room transaction:

1. ``m.room.create`` (``creation_content`` plus ``room_version``; ``creator`` in v10 only, as
   v11 takes the sender as creator);
2. the creator's ``m.room.member`` join;
3. ``m.room.power_levels``: the defaults below (or an ``initial_state`` power-levels event),
   with ``power_level_content_override`` applied on top, key by key;
4. ``m.room.canonical_alias`` if ``room_alias_name`` is given;
5. the preset's ``join_rules``, ``history_visibility`` and ``guest_access`` (skipped where
   ``initial_state`` sets the same key, which takes precedence);
6. ``initial_state`` in the order given (except keys that ``name``/``topic`` override);
7. ``m.room.name`` and ``m.room.topic``;
8. one invite per user in ``invite`` (``is_direct`` on each).

Presets: ``private_chat`` and ``trusted_private_chat`` give ``invite``/``shared``/``can_join``,
``public_chat`` gives ``public``/``shared``/``forbidden``; ``trusted_private_chat`` gives
invitees the creator's power level. Without a preset, ``visibility: public`` means
``public_chat`` and anything else ``private_chat``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from cis.handlers.capabilities import DEFAULT_ROOM_VERSION, SUPPORTED_ROOM_VERSIONS
from cis.handlers.errors import ApiError, Errcode
from cis.ids import ServerName, UserId

Preset = Literal["private_chat", "trusted_private_chat", "public_chat"]
MAX_INITIAL_STATE: Final = 100
MAX_INVITES: Final = 100
CREATOR_POWER: Final = 100
ALIAS_LOCALPART_RE: Final = re.compile(r"[^\s:#]+")
USER_ID_RE: Final = re.compile(r"@[^:\s]+:[^\s]+")

_PRESET_STATE: Final[Mapping[str, tuple[str, str, str]]] = {
    "private_chat": ("invite", "shared", "can_join"),
    "trusted_private_chat": ("invite", "shared", "can_join"),
    "public_chat": ("public", "shared", "forbidden"),
}

_FORBIDDEN_INITIAL_STATE: Final = frozenset({"m.room.create", "m.room.member"})


@dataclass(frozen=True, slots=True)
class StateSpec:
    """One event of the plan: ``state_key`` is ``None`` for a non-state event (none here)."""

    type: str
    state_key: str
    content: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CreateRoomRequest:
    preset: Preset
    room_version: str
    visibility: Literal["public", "private"]
    creation_content: Mapping[str, Any]
    initial_state: tuple[StateSpec, ...]
    power_level_content_override: Mapping[str, Any] | None
    room_alias_name: str | None
    name: str | None
    topic: str | None
    invite: tuple[UserId, ...]
    is_direct: bool


def _bad(message: str) -> ApiError:
    return ApiError(Errcode.BAD_JSON, message)


def _optional_str(body: Mapping[str, Any], key: str, max_len: int = 65_536) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise _bad(f"{key} must be a string")
    return value


def parse_create_room(body: Mapping[str, Any]) -> CreateRoomRequest:
    """Validate a ``createRoom`` body; refusals are 400 with the spec's errcodes."""
    visibility = body.get("visibility", "private")
    if visibility not in ("public", "private"):
        raise _bad("visibility must be public or private")
    raw_preset = body.get("preset")
    preset: Preset
    if raw_preset is None:
        preset = "public_chat" if visibility == "public" else "private_chat"
    elif raw_preset == "private_chat":
        preset = "private_chat"
    elif raw_preset == "trusted_private_chat":
        preset = "trusted_private_chat"
    elif raw_preset == "public_chat":
        preset = "public_chat"
    else:
        raise _bad("Unknown preset")
    room_version = body.get("room_version", DEFAULT_ROOM_VERSION)
    if not isinstance(room_version, str):
        raise _bad("room_version must be a string")
    if room_version not in SUPPORTED_ROOM_VERSIONS:
        raise ApiError(
            Errcode.UNSUPPORTED_ROOM_VERSION, "This server does not support that room version"
        )
    creation_content = body.get("creation_content", {})
    if not isinstance(creation_content, dict):
        raise _bad("creation_content must be an object")
    override = body.get("power_level_content_override")
    if override is not None and not isinstance(override, dict):
        raise _bad("power_level_content_override must be an object")
    raw_state = body.get("initial_state", [])
    if not isinstance(raw_state, list) or len(raw_state) > MAX_INITIAL_STATE:
        raise _bad("initial_state must be a list of at most 100 events")
    initial_state: list[StateSpec] = []
    for item in raw_state:
        if not isinstance(item, dict):
            raise _bad("initial_state entries must be objects")
        event_type, state_key, content = (
            item.get("type"),
            item.get("state_key", ""),
            item.get("content"),
        )
        if not isinstance(event_type, str) or not event_type or len(event_type) > 255:
            raise _bad("initial_state entries need a type")
        if not isinstance(state_key, str) or len(state_key) > 255:
            raise _bad("initial_state state_key must be a string")
        if not isinstance(content, dict):
            raise _bad("initial_state entries need a content object")
        if event_type in _FORBIDDEN_INITIAL_STATE:
            raise ApiError(
                Errcode.INVALID_PARAM, "initial_state may not set m.room.create or m.room.member"
            )
        initial_state.append(StateSpec(event_type, state_key, content))
    alias = _optional_str(body, "room_alias_name", 200)
    if alias is not None and not ALIAS_LOCALPART_RE.fullmatch(alias):
        raise ApiError(Errcode.INVALID_PARAM, "Invalid room_alias_name")
    invites_raw = body.get("invite", [])
    if not isinstance(invites_raw, list) or len(invites_raw) > MAX_INVITES:
        raise _bad("invite must be a list of user ids")
    invites: list[UserId] = []
    for user in invites_raw:
        if not isinstance(user, str) or len(user) > 255 or not USER_ID_RE.fullmatch(user):
            raise ApiError(Errcode.INVALID_PARAM, "invite entries must be user ids")
        if user not in invites:
            invites.append(UserId(user))
    if body.get("invite_3pid"):
        raise ApiError(Errcode.FORBIDDEN, "Third-party invites are not supported")
    is_direct = body.get("is_direct", False)
    if not isinstance(is_direct, bool):
        raise _bad("is_direct must be a boolean")
    return CreateRoomRequest(
        preset=preset,
        room_version=room_version,
        visibility=visibility,
        creation_content=creation_content,
        initial_state=tuple(initial_state),
        power_level_content_override=override,
        room_alias_name=alias,
        name=_optional_str(body, "name", 255),
        topic=_optional_str(body, "topic", 4096),
        invite=tuple(invites),
        is_direct=is_direct,
    )


def default_power_levels(
    creator: UserId, preset: Preset, invitees: tuple[UserId, ...]
) -> dict[str, Any]:
    users: dict[str, int] = {creator: CREATOR_POWER}
    if preset == "trusted_private_chat":
        for user in invitees:
            users[user] = CREATOR_POWER
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50 if preset == "public_chat" else 0,
        "notifications": {"room": 50},
    }


@dataclass(frozen=True, slots=True)
class RoomPlan:
    """The ordered initial events; every entry is a state event."""

    events: tuple[StateSpec, ...]
    alias: str | None


def plan_room(request: CreateRoomRequest, creator: UserId, server_name: ServerName) -> RoomPlan:
    """The events ``createRoom`` sends, in the spec's order (see the module docstring)."""
    events: list[StateSpec] = []
    create_content = dict(copy.deepcopy(request.creation_content))
    create_content.pop("creator", None)
    create_content["room_version"] = request.room_version
    if request.room_version == "10":
        create_content["creator"] = creator
    events.append(StateSpec("m.room.create", "", create_content))
    events.append(StateSpec("m.room.member", creator, {"membership": "join"}))

    given = {(s.type, s.state_key): s for s in request.initial_state}
    power = given.get(("m.room.power_levels", ""))
    pl_content = (
        dict(copy.deepcopy(power.content))
        if power is not None
        else default_power_levels(creator, request.preset, request.invite)
    )
    if request.power_level_content_override:
        for key, value in request.power_level_content_override.items():
            pl_content[key] = copy.deepcopy(value)
    events.append(StateSpec("m.room.power_levels", "", pl_content))

    alias: str | None = None
    if request.room_alias_name is not None:
        alias = f"#{request.room_alias_name}:{server_name}"
        events.append(StateSpec("m.room.canonical_alias", "", {"alias": alias}))

    join_rule, history, guest = _PRESET_STATE[request.preset]
    for spec in (
        StateSpec("m.room.join_rules", "", {"join_rule": join_rule}),
        StateSpec("m.room.history_visibility", "", {"history_visibility": history}),
        StateSpec("m.room.guest_access", "", {"guest_access": guest}),
    ):
        if (spec.type, spec.state_key) not in given:
            events.append(spec)

    overridden = set()
    if request.name is not None:
        overridden.add(("m.room.name", ""))
    if request.topic is not None:
        overridden.add(("m.room.topic", ""))
    overridden.add(("m.room.power_levels", ""))
    for spec in request.initial_state:
        if (spec.type, spec.state_key) not in overridden:
            events.append(spec)

    if request.name is not None:
        events.append(StateSpec("m.room.name", "", {"name": request.name}))
    if request.topic is not None:
        events.append(
            StateSpec(
                "m.room.topic",
                "",
                {
                    "topic": request.topic,
                    "m.topic": [{"mimetype": "text/plain", "body": request.topic}],
                },
            )
        )
    for user in request.invite:
        content: dict[str, Any] = {"membership": "invite"}
        if request.is_direct:
            content["is_direct"] = True
        events.append(StateSpec("m.room.member", user, content))
    return RoomPlan(tuple(events), alias)

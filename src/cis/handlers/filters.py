"""Matrix filters (Client-Server API §"Filtering"): JSON in, frozen objects out, then applied.

``parse_filter`` validates a filter definition (``POST /user/{userId}/filter``, or inline in
``/sync?filter={…}`` and ``/messages?filter={…}``) and raises ``M_BAD_JSON`` naming the field
that is wrong, never echoing its value. Unknown keys are ignored, as the spec allows.

Semantics (``definitions/event_filter.yaml``, ``room_event_filter.yaml``, ``sync_filter.yaml``):

- ``types``/``not_types`` entries may use ``*`` to match any run of characters (and nothing
  else is special); ``not_*`` lists win over the positive lists; an absent positive list
  includes everything, an empty one includes nothing.
- ``limit`` must be a positive integer; it is capped at ``MAX_FILTER_LIMIT``.
- ``contains_url``: ``true`` keeps only events whose content has a ``url`` key, ``false`` only
  those without; absent ignores ``url``.
- ``event_fields`` are dot-separated paths (``\\.`` escapes a dot) of the fields to keep.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cis.handlers.errors import ApiError, Errcode

MAX_FILTER_LIMIT: Final = 1000
MAX_LIST_ENTRIES: Final = 1000
MAX_ENTRY_LENGTH: Final = 1024


def _pattern(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    if not globs:
        return None
    alternatives = "|".join(".*".join(re.escape(p) for p in g.split("*")) for g in globs)
    return re.compile(f"(?:{alternatives})\\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """An ``EventFilter``: which events by type and sender, and how many."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: frozenset[str] | None = None
    not_senders: frozenset[str] = frozenset()
    _types_re: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _not_types_re: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.types is not None:
            object.__setattr__(self, "_types_re", _pattern(self.types))
        object.__setattr__(self, "_not_types_re", _pattern(self.not_types))

    def allows(self, event_type: str, sender: str) -> bool:
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        if self._not_types_re is not None and self._not_types_re.match(event_type):
            return False
        if self.types is None:
            return True
        return self._types_re is not None and self._types_re.match(event_type) is not None

    @property
    def allows_everything(self) -> bool:
        return (
            self.types is None
            and not self.not_types
            and self.senders is None
            and not self.not_senders
        )

    def filter_events(self, events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The events this filter keeps, in order (``limit`` is for the caller to apply)."""
        if self.allows_everything:
            return list(events)
        return [e for e in events if self.allows(str(e.get("type")), str(e.get("sender")))]


@dataclass(frozen=True, slots=True)
class RoomEventFilter(EventFilter):
    """A ``RoomEventFilter``: an ``EventFilter`` plus rooms, ``contains_url`` and lazy loading."""

    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def allows_event(self, event: Mapping[str, Any]) -> bool:
        if not self.allows(str(event.get("type")), str(event.get("sender"))):
            return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and "url" in content
            if has_url != self.contains_url:
                return False
        return True

    @property
    def allows_every_event(self) -> bool:
        return self.allows_everything and self.contains_url is None

    def filter_events(self, events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        if self.allows_every_event:
            return list(events)
        return [e for e in events if self.allows_event(e)]


@dataclass(frozen=True, slots=True)
class RoomFilter:
    """``room``: room selection, applied before the per-section filters."""

    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    include_leave: bool = False
    state: RoomEventFilter = field(default_factory=RoomEventFilter)
    timeline: RoomEventFilter = field(default_factory=RoomEventFilter)
    ephemeral: RoomEventFilter = field(default_factory=RoomEventFilter)
    account_data: RoomEventFilter = field(default_factory=RoomEventFilter)

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@dataclass(frozen=True, slots=True)
class Filter:
    """A whole filter definition (``sync_filter.yaml``)."""

    event_fields: tuple[tuple[str, ...], ...] | None = None
    event_format: Literal["client", "federation"] = "client"
    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    room: RoomFilter = field(default_factory=RoomFilter)

    def project(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """``event`` reduced to ``event_fields`` (all of it when there are none)."""
        if self.event_fields is None:
            return event
        return project_fields(event, self.event_fields)


DEFAULT_FILTER: Final = Filter()


def split_field_path(path: str) -> tuple[str, ...]:
    """``content.m\\.relates_to`` → ``("content", "m.relates_to")`` (appendices §"Dot-separated
    property paths": ``\\.`` is a literal dot and ``\\\\`` a literal backslash)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path) and path[i + 1] in ".\\":
            current.append(path[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


def project_fields(event: Mapping[str, Any], paths: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in paths:
        source: Any = event
        for key in path:
            if not isinstance(source, Mapping) or key not in source:
                break
            source = source[key]
        else:
            target = out
            for key in path[:-1]:
                nested = target.get(key)
                if not isinstance(nested, dict):
                    nested = {}
                    target[key] = nested
                target = nested
            target[path[-1]] = source
    return out


# -------------------------------------------------------------------------------- parsing


def _bad(name: str) -> ApiError:
    return ApiError(Errcode.BAD_JSON, f"Invalid filter: {name}")


def _str_list(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, list) or len(value) > MAX_LIST_ENTRIES:
        raise _bad(f"{where}{key} must be a list of strings")
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_ENTRY_LENGTH:
            raise _bad(f"{where}{key} must be a list of strings")
    return tuple(value)


def _id_set(obj: Mapping[str, Any], key: str, where: str, sigil: str) -> frozenset[str] | None:
    values = _str_list(obj, key, where)
    if values is None:
        return None
    if any(not v.startswith(sigil) for v in values):
        raise _bad(f"{where}{key} entries must start with {sigil}")
    return frozenset(values)


def _bool(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, bool):
        raise _bad(f"{where}{key} must be a boolean")
    return value


def _object(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key, {})
    if not isinstance(value, dict):
        raise _bad(f"{where}{key} must be an object")
    return value


def _limit(obj: Mapping[str, Any], where: str) -> int | None:
    if "limit" not in obj:
        return None
    value = obj["limit"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(f"{where}limit must be a positive integer")
    return min(value, MAX_FILTER_LIMIT)


def _event_filter_args(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    return {
        "limit": _limit(obj, where),
        "types": _str_list(obj, "types", where),
        "not_types": _str_list(obj, "not_types", where) or (),
        "senders": _id_set(obj, "senders", where, "@"),
        "not_senders": _id_set(obj, "not_senders", where, "@") or frozenset(),
    }


def parse_event_filter(obj: Mapping[str, Any], where: str = "") -> EventFilter:
    return EventFilter(**_event_filter_args(obj, where))


def parse_room_event_filter(obj: Mapping[str, Any], where: str = "") -> RoomEventFilter:
    return RoomEventFilter(
        **_event_filter_args(obj, where),
        rooms=_id_set(obj, "rooms", where, "!"),
        not_rooms=_id_set(obj, "not_rooms", where, "!") or frozenset(),
        contains_url=_bool(obj, "contains_url", where),
        lazy_load_members=bool(_bool(obj, "lazy_load_members", where)),
        include_redundant_members=bool(_bool(obj, "include_redundant_members", where)),
        unread_thread_notifications=bool(_bool(obj, "unread_thread_notifications", where)),
    )


def parse_filter(obj: object) -> Filter:
    """Validate a filter definition; raise ``M_BAD_JSON`` naming the offending field."""
    if not isinstance(obj, dict):
        raise _bad("a filter must be a JSON object")
    fields = _str_list(obj, "event_fields", "")
    event_format = obj.get("event_format", "client")
    if event_format not in ("client", "federation"):
        raise _bad("event_format must be client or federation")
    room = _object(obj, "room", "")
    return Filter(
        event_fields=None if fields is None else tuple(split_field_path(f) for f in fields),
        event_format=event_format,
        presence=parse_event_filter(_object(obj, "presence", ""), "presence."),
        account_data=parse_event_filter(_object(obj, "account_data", ""), "account_data."),
        room=RoomFilter(
            rooms=_id_set(room, "rooms", "room.", "!"),
            not_rooms=_id_set(room, "not_rooms", "room.", "!") or frozenset(),
            include_leave=bool(_bool(room, "include_leave", "room.")),
            state=parse_room_event_filter(_object(room, "state", "room."), "room.state."),
            timeline=parse_room_event_filter(_object(room, "timeline", "room."), "room.timeline."),
            ephemeral=parse_room_event_filter(
                _object(room, "ephemeral", "room."), "room.ephemeral."
            ),
            account_data=parse_room_event_filter(
                _object(room, "account_data", "room."), "room.account_data."
            ),
        ),
    )

"""Power levels as the auth rules read them (``m.room.power_levels`` schema in the
client-server API; server-server API, "Definitions").

Defaults when a field is missing: ``users_default`` 0, ``events_default`` 0, ``state_default``
50, ``ban``/``kick``/``redact`` 50, ``invite`` 0. The same defaults hold when the room has no
power levels event at all, except that the room's creator then has level 100 (v10: the
creator named by ``content.creator`` of ``m.room.create``; v11: its ``sender``).

Room versions 10 and 11 require integer values; auth rule 9 refuses any other in a new event.
Reading an existing event, a value of another type counts as absent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from cis.matrix.events import EventLike
from cis.matrix.room_versions import RoomVersion

CREATOR_LEVEL_WITHOUT_POWER_LEVELS: Final = 100
PARSED_CACHE_SIZE: Final = 256
"""Power levels events whose parsed form is kept: every event's auth check reads the room's
current one, so parsing it once per event (not per check) matters for a busy room."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _int_map(value: object) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        return MappingProxyType({})
    return MappingProxyType({k: v for k, v in value.items() if _is_int(v)})


@dataclass(frozen=True, slots=True)
class PowerLevels:
    users: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    users_default: int = 0
    events: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    events_default: int = 0
    state_default: int = 50
    ban: int = 50
    kick: int = 50
    redact: int = 50
    invite: int = 0

    def user_level(self, user_id: str) -> int:
        return self.users.get(user_id, self.users_default)

    def required_level(self, event_type: str, is_state: bool) -> int:
        """The *required power level* of an event type (server-server API, "Definitions")."""
        if event_type in self.events:
            return self.events[event_type]
        return self.state_default if is_state else self.events_default

    @classmethod
    def from_content(cls, content: Mapping[str, Any]) -> PowerLevels:
        return cls(
            users=_int_map(content.get("users")),
            users_default=_int_or(content.get("users_default"), 0),
            events=_int_map(content.get("events")),
            events_default=_int_or(content.get("events_default"), 0),
            state_default=_int_or(content.get("state_default"), 50),
            ban=_int_or(content.get("ban"), 50),
            kick=_int_or(content.get("kick"), 50),
            redact=_int_or(content.get("redact"), 50),
            invite=_int_or(content.get("invite"), 0),
        )


def room_creator(rv: RoomVersion, create: EventLike) -> str | None:
    """The creator of a room: v11 the sender of ``m.room.create``, v10 its
    ``content.creator`` (``None`` if that is not a string)."""
    if rv.implicit_room_creator:
        return create.sender
    creator = create.content.get("creator")
    return creator if isinstance(creator, str) else None


def effective_power_levels(
    rv: RoomVersion, create: EventLike | None, power_levels: EventLike | None
) -> PowerLevels:
    """The power levels in force given the room's create and power levels events."""
    if power_levels is not None:
        return _parsed(power_levels)
    creator = room_creator(rv, create) if create is not None else None
    if creator is None:
        return PowerLevels()
    return PowerLevels(users=MappingProxyType({creator: CREATOR_LEVEL_WITHOUT_POWER_LEVELS}))


_parsed_cache: dict[str, tuple[Mapping[str, Any], PowerLevels]] = {}


def _parsed(event: EventLike) -> PowerLevels:
    """``PowerLevels.from_content`` of a power levels event, cached by event id for frozen
    events (``Event.content`` is a read-only ``MappingProxyType``). The entry holds the very
    content object it was parsed from and is used only for that object, so an event id reused
    with other content (a test's fake) is parsed afresh; a mutable content is never cached.
    Each step is one dict operation, so threads calling this at once cannot corrupt it (the
    oldest entry goes first; one evicted twice is simply gone)."""
    content = event.content
    if type(content) is not MappingProxyType:
        return PowerLevels.from_content(content)
    entry = _parsed_cache.get(event.event_id)
    if entry is not None and entry[0] is content:
        return entry[1]
    levels = PowerLevels.from_content(content)
    _parsed_cache[event.event_id] = (content, levels)
    if len(_parsed_cache) > PARSED_CACHE_SIZE:
        with contextlib.suppress(KeyError, StopIteration, RuntimeError):
            del _parsed_cache[next(iter(_parsed_cache))]
    return levels

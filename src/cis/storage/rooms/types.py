"""The values the Room Store takes and returns, validated when built.

Building an ``EventFilter`` or a ``Pagination`` outside its bounds raises ``InvalidQuery``, so a
store never sees a bad query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from cis.ids import DeviceId, EventId, RoomId, UserId
from cis.storage.errors import InvalidQuery
from cis.storage.events import MAX_ID_BYTES, EventStatus, StoredEvent

__all__ = [
    "MAX_FILTER_VALUES",
    "MAX_LIMIT",
    "Direction",
    "EventFilter",
    "Page",
    "Pagination",
    "RoomInfo",
    "RoomStats",
    "RoomStatus",
    "TxnKey",
]

MAX_LIMIT: Final = 1000
MAX_FILTER_VALUES: Final = 100
MAX_CONTAINS_CHARS: Final = 1000


def _strings(what: str, values: Iterable[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise InvalidQuery(f"{what} must be a list of strings, not one string")
    out = tuple(values)
    if not out:
        raise InvalidQuery(f"{what} must not be empty (omit it to match everything)")
    if len(out) > MAX_FILTER_VALUES:
        raise InvalidQuery(f"{what} holds more than {MAX_FILTER_VALUES} values")
    for value in out:
        if not isinstance(value, str) or not value:
            raise InvalidQuery(f"{what} must hold non-empty strings")
        if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise InvalidQuery(f"{what} holds a value longer than {MAX_ID_BYTES} bytes")
    return tuple(dict.fromkeys(out))  # de-duplicated, order kept


def _timestamp(what: str, value: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise InvalidQuery(f"{what} must be a timestamp in milliseconds (a non-negative integer)")
    return value


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events ``query_events`` returns; every given criterion must hold.

    - ``types``, ``senders``: any of these (exact match).
    - ``since``, ``until``: ``origin_server_ts`` within ``[since, until]`` (milliseconds).
    - ``contains``: a case-sensitive literal substring of one of the content's string values
      (at any depth; keys do not count).
    - ``statuses``: ``timeline`` only unless asked.
    """

    types: tuple[str, ...] | None = None
    senders: tuple[str, ...] | None = None
    since: int | None = None
    until: int | None = None
    contains: str | None = None
    statuses: tuple[EventStatus, ...] = (EventStatus.TIMELINE,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", _strings("types", self.types))
        object.__setattr__(self, "senders", _strings("senders", self.senders))
        object.__setattr__(self, "since", _timestamp("since", self.since))
        object.__setattr__(self, "until", _timestamp("until", self.until))
        if self.contains is not None:
            if not isinstance(self.contains, str) or not self.contains:
                raise InvalidQuery("contains must be a non-empty string")
            if len(self.contains) > MAX_CONTAINS_CHARS:
                raise InvalidQuery(f"contains is longer than {MAX_CONTAINS_CHARS} characters")
        try:
            statuses = tuple(dict.fromkeys(EventStatus(s) for s in self.statuses))
        except (ValueError, TypeError) as exc:
            raise InvalidQuery(
                "statuses must be among " + ", ".join(s.value for s in EventStatus)
            ) from exc
        if not statuses:
            raise InvalidQuery("statuses must not be empty")
        object.__setattr__(self, "statuses", statuses)


class Direction(StrEnum):
    """Matrix's ``dir``: ``f`` walks towards newer events, ``b`` towards older ones."""

    FORWARDS = "f"
    BACKWARDS = "b"


@dataclass(frozen=True, slots=True)
class Pagination:
    """A page of ``limit`` events (1–1,000), ordered by stream position.

    ``after`` and ``before`` are exclusive bounds named by event id (an id the room does not
    hold is an ``UnknownEvent`` error). Walking forwards starts just after ``after`` (or at the
    oldest event); walking backwards starts just before ``before`` (or at the newest). Events
    come in the direction of travel.
    """

    limit: int = 50
    before: EventId | None = None
    after: EventId | None = None
    direction: Direction = Direction.FORWARDS

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or isinstance(self.limit, bool):
            raise InvalidQuery("limit must be an integer")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}")
        for what, value in (("before", self.before), ("after", self.after)):
            if value is not None and (not isinstance(value, str) or not value.startswith("$")):
                raise InvalidQuery(f"{what} must be an event id")
        try:
            object.__setattr__(self, "direction", Direction(self.direction))
        except ValueError as exc:
            raise InvalidQuery("direction must be 'f' or 'b'") from exc


@dataclass(frozen=True, slots=True)
class Page:
    """One page of ``query_events``.

    ``has_more``: more events match beyond this page in the direction of travel.
    ``first_event_id``/``last_event_id``: the page's boundaries, to continue from
    (``after=last_event_id`` forwards, ``before=last_event_id`` backwards); ``None`` when empty.
    """

    events: tuple[StoredEvent, ...]
    has_more: bool

    @property
    def first_event_id(self) -> EventId | None:
        return self.events[0].event_id if self.events else None

    @property
    def last_event_id(self) -> EventId | None:
        return self.events[-1].event_id if self.events else None


@dataclass(frozen=True, slots=True)
class TxnKey:
    """A client's idempotency key for a send: ``(user, device, txn_id)``."""

    user_id: UserId
    device_id: DeviceId
    txn_id: str

    def __post_init__(self) -> None:
        for what, value in (
            ("user_id", self.user_id),
            ("device_id", self.device_id),
            ("txn_id", self.txn_id),
        ):
            if not isinstance(value, str) or not value or len(value) > MAX_ID_BYTES:
                raise InvalidQuery(f"{what} must be a string of 1-{MAX_ID_BYTES} characters")


@dataclass(frozen=True, slots=True)
class RoomStats:
    total_events: int
    earliest_ts: int | None
    latest_ts: int | None
    max_stream_ordering: int | None
    event_type_counts: Mapping[str, int] = field(default_factory=dict)
    status_counts: Mapping[str, int] = field(default_factory=dict)
    forward_extremities: int = 0
    db_size_bytes: int = 0
    """``events.db`` plus its ``-wal`` file."""


class RoomStatus(StrEnum):
    """A room's entry in ``node.db``'s registry."""

    ACTIVE = "active"
    ARCHIVED = "archived"
    MISSING = "missing"
    """Registered, but its files are absent (a restore from a bare ``node.db``)."""


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room_id: RoomId
    dir_name: str
    status: RoomStatus
    created_ts: int
    indexed_upto: int
    open: bool = False

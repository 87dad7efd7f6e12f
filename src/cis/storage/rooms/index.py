"""The seam between the Room Store and ``node.db``.

The manager keeps a room registry and feeds the node-wide derived indexes (the stream of
positions across rooms and the membership index) through a ``RoomIndex``. ``NodeStore`` is the
real one; the indexes it holds are derived from the room files and rebuilt from them after an
unclean stop (``cis.storage.recovery``).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cis.ids import EventId, RoomId, UserId
from cis.storage.events import EventStatus, StoredEvent
from cis.storage.rooms.types import RoomInfo, RoomStatus

MEMBER_EVENT_TYPE: Final = "m.room.member"


@dataclass(frozen=True, slots=True)
class IndexRow:
    """What ``node.db`` indexes of one stored event."""

    stream_ordering: int
    event_id: EventId
    type: str
    sender: UserId
    state_key: str | None
    status: EventStatus
    membership: str | None
    """``content.membership`` of a timeline ``m.room.member`` state event, else ``None``."""

    @classmethod
    def of(cls, event: StoredEvent) -> IndexRow:
        return cls(
            event.stream_ordering,
            event.event_id,
            event.type,
            event.sender,
            event.state_key,
            event.status,
            membership_of(event.type, event.state_key, event.status, event.content),
        )


def membership_of(
    event_type: str, state_key: str | None, status: EventStatus, content: Mapping[str, Any]
) -> str | None:
    if event_type != MEMBER_EVENT_TYPE or state_key is None or status is not EventStatus.TIMELINE:
        return None
    membership = content.get("membership")
    return membership if isinstance(membership, str) else None


class RoomIndex(Protocol):
    """The rooms registry and the derived indexes, as the Room Store uses them."""

    async def get_room(self, room_id: RoomId) -> RoomInfo | None: ...

    async def register_room(self, room_id: RoomId, dir_name: str, created_ts: int) -> RoomInfo:
        """Register ``room_id`` as active (an archived or active entry is returned unchanged;
        a ``missing`` one becomes active)."""
        ...

    async def set_room_status(self, room_id: RoomId, status: RoomStatus) -> None: ...

    async def list_rooms(self) -> list[RoomInfo]: ...

    def submit_index(
        self, entries: Sequence[tuple[RoomId, Sequence[IndexRow]]]
    ) -> concurrent.futures.Future[None]:
        """Queue the index rows of newly stored events, by room, in the order the rooms
        committed them; resolves once they are committed."""
        ...


class MemoryRoomIndex:
    """An in-memory ``RoomIndex`` for tests and tools that need no ``node.db``.

    It keeps the registry in a dict and the index rows in a list; ``fail_index`` makes every
    later ``submit_index`` fail, as a full or broken ``node.db`` would.
    """

    def __init__(self) -> None:
        self.rooms: dict[RoomId, RoomInfo] = {}
        self.rows: list[tuple[RoomId, IndexRow]] = []
        self.fail_index = False

    async def get_room(self, room_id: RoomId) -> RoomInfo | None:
        return self.rooms.get(room_id)

    async def register_room(self, room_id: RoomId, dir_name: str, created_ts: int) -> RoomInfo:
        info = self.rooms.get(room_id)
        if info is None or info.status is RoomStatus.MISSING:
            info = RoomInfo(room_id, dir_name, RoomStatus.ACTIVE, created_ts, 0)
            self.rooms[room_id] = info
        return info

    async def set_room_status(self, room_id: RoomId, status: RoomStatus) -> None:
        info = self.rooms[room_id]
        self.rooms[room_id] = RoomInfo(
            info.room_id, info.dir_name, status, info.created_ts, info.indexed_upto
        )

    async def list_rooms(self) -> list[RoomInfo]:
        return sorted(self.rooms.values(), key=lambda info: info.room_id)

    def submit_index(
        self, entries: Sequence[tuple[RoomId, Sequence[IndexRow]]]
    ) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self.fail_index:
            future.set_exception(OSError("the index is unavailable"))
        else:
            self.rows.extend((room_id, row) for room_id, rows in entries for row in rows)
            future.set_result(None)
        return future

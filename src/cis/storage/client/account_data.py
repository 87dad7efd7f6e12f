"""Account data (global and per room), stored filters and room aliases in ``node.db``.

Account data rows carry a position of the ``account_data`` stream, bumped on every change, so
``/sync`` reads "what changed after N" from an index. Content is stored as compact JSON text.

Stored filters are bounded per user: an identical definition returns the existing id, and past
``MAX_FILTERS_PER_USER`` the oldest filter is dropped (a client that lost it gets 404 and
uploads it again, as the spec expects of unknown filter ids).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from cis.ids import RoomId, UserId
from cis.storage.database import Database

MAX_FILTERS_PER_USER: Final = 100
GLOBAL: Final = ""


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def next_position_txn(conn: sqlite3.Connection, stream: str) -> int:
    row = conn.execute(
        "UPDATE cs_streams SET position = position + 1 WHERE name = ? RETURNING position",
        (stream,),
    ).fetchone()
    if row is None:
        raise LookupError(f"no stream named {stream}")
    return int(row[0])


def stream_position_txn(conn: sqlite3.Connection, stream: str) -> int:
    row = conn.execute("SELECT position FROM cs_streams WHERE name = ?", (stream,)).fetchone()
    return 0 if row is None else int(row[0])


@dataclass(frozen=True, slots=True)
class AccountDataEntry:
    room_id: str  # "" for global account data
    type: str
    content: dict[str, Any]
    stream_id: int


def put_account_data_txn(
    conn: sqlite3.Connection, user_id: UserId, room_id: str, data_type: str, content: object
) -> int:
    position = next_position_txn(conn, "account_data")
    conn.execute(
        "INSERT INTO cs_account_data (user_id, room_id, type, content, stream_id)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, room_id, type) DO UPDATE SET"
        " content = excluded.content, stream_id = excluded.stream_id",
        (user_id, room_id, data_type, _dumps(content), position),
    )
    return position


def account_data_since_txn(
    conn: sqlite3.Connection, user_id: UserId, since: int
) -> list[AccountDataEntry]:
    rows = conn.execute(
        "SELECT room_id, type, content, stream_id FROM cs_account_data"
        " WHERE user_id = ? AND stream_id > ? ORDER BY stream_id",
        (user_id, since),
    )
    return [AccountDataEntry(r[0], r[1], json.loads(r[2]), int(r[3])) for r in rows]


def get_account_data_txn(
    conn: sqlite3.Connection, user_id: UserId, room_id: str, data_type: str
) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT content FROM cs_account_data WHERE user_id = ? AND room_id = ? AND type = ?",
        (user_id, room_id, data_type),
    ).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def add_filter_txn(conn: sqlite3.Connection, user_id: UserId, definition: object) -> int:
    text = _dumps(definition)
    row = conn.execute(
        "SELECT filter_id FROM cs_filters WHERE user_id = ? AND definition = ?", (user_id, text)
    ).fetchone()
    if row is not None:
        return int(row[0])
    row = conn.execute(
        "SELECT COALESCE(MAX(filter_id), -1) + 1, COUNT(*) FROM cs_filters WHERE user_id = ?",
        (user_id,),
    ).fetchone()
    filter_id, count = int(row[0]), int(row[1])
    if count >= MAX_FILTERS_PER_USER:
        conn.execute(
            "DELETE FROM cs_filters WHERE user_id = ? AND filter_id IN (SELECT filter_id FROM"
            " cs_filters WHERE user_id = ? ORDER BY filter_id LIMIT ?)",
            (user_id, user_id, count - MAX_FILTERS_PER_USER + 1),
        )
    conn.execute(
        "INSERT INTO cs_filters (user_id, filter_id, definition) VALUES (?, ?, ?)",
        (user_id, filter_id, text),
    )
    return filter_id


def get_filter_txn(conn: sqlite3.Connection, user_id: UserId, filter_id: int) -> Any:
    row = conn.execute(
        "SELECT definition FROM cs_filters WHERE user_id = ? AND filter_id = ?",
        (user_id, filter_id),
    ).fetchone()
    return None if row is None else json.loads(row[0])


class AliasTaken(Exception):
    """The alias already points at a room."""


def add_alias_txn(
    conn: sqlite3.Connection, alias: str, room_id: RoomId, creator: UserId, now_ms: int
) -> None:
    try:
        conn.execute(
            "INSERT INTO cs_room_aliases (alias, room_id, creator, created_ts) VALUES (?,?,?,?)",
            (alias, room_id, creator, now_ms),
        )
    except sqlite3.IntegrityError:
        raise AliasTaken(alias) from None


def get_alias_txn(conn: sqlite3.Connection, alias: str) -> tuple[RoomId, UserId] | None:
    row = conn.execute(
        "SELECT room_id, creator FROM cs_room_aliases WHERE alias = ?", (alias,)
    ).fetchone()
    return None if row is None else (RoomId(row[0]), UserId(row[1]))


def delete_alias_txn(conn: sqlite3.Connection, alias: str) -> bool:
    return conn.execute("DELETE FROM cs_room_aliases WHERE alias = ?", (alias,)).rowcount > 0


def room_aliases_txn(conn: sqlite3.Connection, room_id: RoomId) -> list[str]:
    rows = conn.execute(
        "SELECT alias FROM cs_room_aliases WHERE room_id = ? ORDER BY alias", (room_id,)
    )
    return [r[0] for r in rows]


class AccountDataStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def position(self) -> int:
        return await self._db.run_read(
            "account_data_position", partial(stream_position_txn, stream="account_data")
        )

    async def put(
        self, user_id: UserId, room_id: RoomId | None, data_type: str, content: object
    ) -> int:
        return await self._db.run_interaction(
            "put_account_data",
            partial(
                put_account_data_txn,
                user_id=user_id,
                room_id=room_id or GLOBAL,
                data_type=data_type,
                content=content,
            ),
        )

    async def get(
        self, user_id: UserId, room_id: RoomId | None, data_type: str
    ) -> dict[str, Any] | None:
        return await self._db.run_read(
            "get_account_data",
            partial(
                get_account_data_txn,
                user_id=user_id,
                room_id=room_id or GLOBAL,
                data_type=data_type,
            ),
        )

    async def since(self, user_id: UserId, since: int) -> list[AccountDataEntry]:
        return await self._db.run_read(
            "account_data_since", partial(account_data_since_txn, user_id=user_id, since=since)
        )

    async def add_filter(self, user_id: UserId, definition: object) -> int:
        return await self._db.run_interaction(
            "add_filter", partial(add_filter_txn, user_id=user_id, definition=definition)
        )

    async def get_filter(self, user_id: UserId, filter_id: int) -> Any:
        return await self._db.run_read(
            "get_filter", partial(get_filter_txn, user_id=user_id, filter_id=filter_id)
        )

    async def add_alias(self, alias: str, room_id: RoomId, creator: UserId, now_ms: int) -> None:
        await self._db.run_interaction(
            "add_alias",
            partial(add_alias_txn, alias=alias, room_id=room_id, creator=creator, now_ms=now_ms),
        )

    async def get_alias(self, alias: str) -> tuple[RoomId, UserId] | None:
        return await self._db.run_read("get_alias", partial(get_alias_txn, alias=alias))

    async def delete_alias(self, alias: str) -> bool:
        return await self._db.run_interaction(
            "delete_alias", partial(delete_alias_txn, alias=alias)
        )

    async def room_aliases(self, room_id: RoomId) -> list[str]:
        return await self._db.run_read("room_aliases", partial(room_aliases_txn, room_id=room_id))

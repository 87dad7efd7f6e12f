"""Read receipts (Client-Server API §"Receipts") in ``node.db``.

One row per (room, receipt type, user, thread): a newer receipt replaces the older one and
takes a new position of the ``receipts`` stream, so ``/sync`` reads the receipts of a room
that changed after a position from an index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final

from cis.ids import EventId, RoomId, UserId
from cis.storage.client.account_data import next_position_txn, stream_position_txn
from cis.storage.database import Database

MAIN_THREAD: Final = ""  # stored for unthreaded receipts; "main" is its own thread id


@dataclass(frozen=True, slots=True)
class Receipt:
    room_id: RoomId
    receipt_type: str
    user_id: UserId
    thread_id: str
    event_id: EventId
    ts: int
    stream_id: int


def put_receipt_txn(
    conn: sqlite3.Connection,
    *,
    room_id: RoomId,
    receipt_type: str,
    user_id: UserId,
    thread_id: str,
    event_id: EventId,
    ts: int,
) -> int:
    position = next_position_txn(conn, "receipts")
    conn.execute(
        "INSERT INTO cs_receipts (room_id, receipt_type, user_id, thread_id, event_id, ts,"
        " stream_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room_id, receipt_type, user_id,"
        " thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts,"
        " stream_id = excluded.stream_id",
        (room_id, receipt_type, user_id, thread_id, event_id, ts, position),
    )
    return position


def receipts_since_txn(
    conn: sqlite3.Connection, room_ids: Sequence[RoomId], since: int
) -> list[Receipt]:
    """Receipts after position ``since`` in any of ``room_ids``: one indexed range read of
    what changed on the node since then (usually little), filtered by room."""
    wanted = set(room_ids)
    rows = conn.execute(
        "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id"
        " FROM cs_receipts WHERE stream_id > ? ORDER BY stream_id",
        (since,),
    )
    return [
        Receipt(RoomId(r[0]), r[1], UserId(r[2]), r[3], EventId(r[4]), int(r[5]), int(r[6]))
        for r in rows
        if r[0] in wanted
    ]


class ReceiptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def position(self) -> int:
        return await self._db.run_read(
            "receipts_position", partial(stream_position_txn, stream="receipts")
        )

    async def put(
        self,
        *,
        room_id: RoomId,
        receipt_type: str,
        user_id: UserId,
        thread_id: str,
        event_id: EventId,
        ts: int,
    ) -> int:
        return await self._db.run_interaction(
            "put_receipt",
            partial(
                put_receipt_txn,
                room_id=room_id,
                receipt_type=receipt_type,
                user_id=user_id,
                thread_id=thread_id,
                event_id=event_id,
                ts=ts,
            ),
        )

    async def since(self, room_ids: Sequence[RoomId], since: int) -> list[Receipt]:
        if not room_ids:
            return []
        return await self._db.run_read(
            "receipts_since",
            partial(receipts_since_txn, room_ids=list(room_ids), since=since),
        )

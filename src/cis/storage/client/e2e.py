"""End-to-end encryption plumbing in ``node.db``: the server stores and hands out public keys
and opaque to-device payloads; it never sees plaintext.

- Device keys: one signed object per device, replaced on upload (a change is recorded in
  ``cs_device_list_changes`` so other users' ``/sync`` lists the user in
  ``device_lists.changed``).
- One-time keys: handed out at most once, oldest upload first (Client-Server API
  §"POST /keys/claim"); when none is left the device's fallback key is returned (and stays).
- To-device messages: queued per device with an increasing id; ``/sync`` hands them out after
  the client's position and deletes those at or before a position the client has acknowledged
  by syncing from it. The queue per device is bounded.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from cis.ids import DeviceId, UserId
from cis.storage.database import Database

MAX_TO_DEVICE_PER_DEVICE: Final = 10_000


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class ToDeviceMessage:
    stream_id: int
    sender: UserId
    type: str
    content: dict[str, Any]


def upload_keys_txn(
    conn: sqlite3.Connection,
    *,
    user_id: UserId,
    device_id: DeviceId,
    device_keys: Mapping[str, Any] | None,
    one_time_keys: Mapping[tuple[str, str], Mapping[str, Any] | str],
    fallback_keys: Mapping[tuple[str, str], Mapping[str, Any] | str],
) -> dict[str, int]:
    """Store the keys of one ``/keys/upload``; return the unclaimed one-time key counts."""
    if device_keys is not None:
        text = _dumps(device_keys)
        row = conn.execute(
            "SELECT key_json FROM cs_device_keys WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        ).fetchone()
        if row is None or row[0] != text:
            conn.execute(
                "INSERT INTO cs_device_keys (user_id, device_id, key_json) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                (user_id, device_id, text),
            )
            mark_device_list_change_txn(conn, user_id)
    if one_time_keys:
        row = conn.execute(
            "SELECT COALESCE(MAX(upload_seq), 0) + 1 FROM cs_one_time_keys"
            " WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        ).fetchone()
        seq = int(row[0])
        for (algorithm, key_id), key in one_time_keys.items():
            # Re-uploading a key id keeps the first copy (clients retry uploads).
            conn.execute(
                "INSERT INTO cs_one_time_keys (user_id, device_id, algorithm, key_id, key_json,"
                " upload_seq) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (user_id, device_id, algorithm, key_id, _dumps(key), seq),
            )
    for (algorithm, key_id), key in fallback_keys.items():
        conn.execute(
            "INSERT INTO cs_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
            " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE"
            " SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0",
            (user_id, device_id, algorithm, key_id, _dumps(key)),
        )
    return one_time_key_counts_txn(conn, user_id, device_id)


def one_time_key_counts_txn(
    conn: sqlite3.Connection, user_id: UserId, device_id: DeviceId
) -> dict[str, int]:
    rows = conn.execute(
        "SELECT algorithm, COUNT(*) FROM cs_one_time_keys WHERE user_id = ? AND device_id = ?"
        " GROUP BY algorithm",
        (user_id, device_id),
    )
    return {r[0]: int(r[1]) for r in rows}


def unused_fallback_types_txn(
    conn: sqlite3.Connection, user_id: UserId, device_id: DeviceId
) -> list[str]:
    rows = conn.execute(
        "SELECT algorithm FROM cs_fallback_keys WHERE user_id = ? AND device_id = ? AND used = 0"
        " ORDER BY algorithm",
        (user_id, device_id),
    )
    return [r[0] for r in rows]


def query_device_keys_txn(
    conn: sqlite3.Connection, wanted: Mapping[UserId, Sequence[DeviceId]]
) -> dict[UserId, dict[DeviceId, dict[str, Any]]]:
    """Device keys of the listed devices (all of a user's for an empty list), with the
    device's display name in ``unsigned``."""
    out: dict[UserId, dict[DeviceId, dict[str, Any]]] = {}
    for user_id, devices in wanted.items():
        rows = conn.execute(
            "SELECT k.device_id, k.key_json, d.display_name FROM cs_device_keys k JOIN cs_devices"
            " d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id = ?",
            (user_id,),
        )
        found: dict[DeviceId, dict[str, Any]] = {}
        only = set(devices)
        for device_id, key_json, display_name in rows:
            if only and device_id not in only:
                continue
            keys = json.loads(key_json)
            if display_name is not None:
                keys.setdefault("unsigned", {})["device_display_name"] = display_name
            found[DeviceId(device_id)] = keys
        out[user_id] = found
    return out


def claim_keys_txn(
    conn: sqlite3.Connection, wanted: Mapping[UserId, Mapping[DeviceId, str]]
) -> dict[UserId, dict[DeviceId, dict[str, Any]]]:
    """For each (user, device, algorithm), take its oldest one-time key, else its fallback."""
    out: dict[UserId, dict[DeviceId, dict[str, Any]]] = {}
    for user_id, devices in wanted.items():
        for device_id, algorithm in devices.items():
            row = conn.execute(
                "DELETE FROM cs_one_time_keys WHERE user_id = ? AND device_id = ? AND"
                " algorithm = ? AND key_id = (SELECT key_id FROM cs_one_time_keys"
                " WHERE user_id = ? AND device_id = ? AND algorithm = ?"
                " ORDER BY upload_seq, key_id LIMIT 1) RETURNING key_id, key_json",
                (user_id, device_id, algorithm, user_id, device_id, algorithm),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "UPDATE cs_fallback_keys SET used = 1 WHERE user_id = ? AND device_id = ?"
                    " AND algorithm = ? RETURNING key_id, key_json",
                    (user_id, device_id, algorithm),
                ).fetchone()
            if row is None:
                continue
            key_id, key_json = row
            out.setdefault(user_id, {})[device_id] = {f"{algorithm}:{key_id}": json.loads(key_json)}
    return out


def mark_device_list_change_txn(conn: sqlite3.Connection, user_id: UserId) -> int:
    cur = conn.execute("INSERT INTO cs_device_list_changes (user_id) VALUES (?)", (user_id,))
    return int(cur.lastrowid or 0)


def device_list_position_txn(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(stream_id), 0) FROM cs_device_list_changes").fetchone()
    return int(row[0])


def device_list_changes_since_txn(conn: sqlite3.Connection, since: int, until: int) -> set[UserId]:
    rows = conn.execute(
        "SELECT DISTINCT user_id FROM cs_device_list_changes WHERE stream_id > ? AND"
        " stream_id <= ?",
        (since, until),
    )
    return {UserId(r[0]) for r in rows}


def queue_to_device_txn(
    conn: sqlite3.Connection,
    *,
    sender: UserId,
    event_type: str,
    messages: Iterable[tuple[UserId, DeviceId, Mapping[str, Any]]],
    max_per_device: int = MAX_TO_DEVICE_PER_DEVICE,
) -> int:
    """Queue one message per (user, device); return the last id used (0 if none)."""
    last = 0
    targets: set[tuple[UserId, DeviceId]] = set()
    for user_id, device_id, content in messages:
        cur = conn.execute(
            "INSERT INTO cs_to_device (user_id, device_id, sender, type, content)"
            " VALUES (?, ?, ?, ?, ?)",
            (user_id, device_id, sender, event_type, _dumps(content)),
        )
        last = int(cur.lastrowid or 0)
        targets.add((user_id, device_id))
    for user_id, device_id in targets:
        # Bound the queue of a device that never syncs: drop its oldest messages.
        conn.execute(
            "DELETE FROM cs_to_device WHERE user_id = ? AND device_id = ? AND stream_id <="
            " (SELECT stream_id FROM cs_to_device WHERE user_id = ? AND device_id = ?"
            " ORDER BY stream_id DESC LIMIT 1 OFFSET ?)",
            (user_id, device_id, user_id, device_id, max_per_device),
        )
    return last


def to_device_position_txn(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'cs_to_device'").fetchone()
    return 0 if row is None else int(row[0])


def to_device_since_txn(
    conn: sqlite3.Connection,
    *,
    user_id: UserId,
    device_id: DeviceId,
    since: int,
    until: int,
    limit: int,
) -> list[ToDeviceMessage]:
    rows = conn.execute(
        "SELECT stream_id, sender, type, content FROM cs_to_device WHERE user_id = ? AND"
        " device_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id LIMIT ?",
        (user_id, device_id, since, until, limit),
    )
    return [ToDeviceMessage(int(r[0]), UserId(r[1]), r[2], json.loads(r[3])) for r in rows]


def delete_to_device_txn(
    conn: sqlite3.Connection, user_id: UserId, device_id: DeviceId, up_to: int
) -> int:
    cur = conn.execute(
        "DELETE FROM cs_to_device WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
        (user_id, device_id, up_to),
    )
    return cur.rowcount


class E2eStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upload(
        self,
        user_id: UserId,
        device_id: DeviceId,
        device_keys: Mapping[str, Any] | None,
        one_time_keys: Mapping[tuple[str, str], Mapping[str, Any] | str],
        fallback_keys: Mapping[tuple[str, str], Mapping[str, Any] | str],
    ) -> dict[str, int]:
        return await self._db.run_interaction(
            "upload_keys",
            partial(
                upload_keys_txn,
                user_id=user_id,
                device_id=device_id,
                device_keys=device_keys,
                one_time_keys=one_time_keys,
                fallback_keys=fallback_keys,
            ),
        )

    async def one_time_key_counts(self, user_id: UserId, device_id: DeviceId) -> dict[str, int]:
        return await self._db.run_read(
            "one_time_key_counts",
            partial(one_time_key_counts_txn, user_id=user_id, device_id=device_id),
        )

    async def key_counts_and_fallbacks(
        self, user_id: UserId, device_id: DeviceId
    ) -> tuple[dict[str, int], list[str]]:
        def txn(conn: sqlite3.Connection) -> tuple[dict[str, int], list[str]]:
            return (
                one_time_key_counts_txn(conn, user_id, device_id),
                unused_fallback_types_txn(conn, user_id, device_id),
            )

        return await self._db.run_read("key_counts", txn)

    async def query(
        self, wanted: Mapping[UserId, Sequence[DeviceId]]
    ) -> dict[UserId, dict[DeviceId, dict[str, Any]]]:
        return await self._db.run_read("query_keys", partial(query_device_keys_txn, wanted=wanted))

    async def claim(
        self, wanted: Mapping[UserId, Mapping[DeviceId, str]]
    ) -> dict[UserId, dict[DeviceId, dict[str, Any]]]:
        return await self._db.run_interaction("claim_keys", partial(claim_keys_txn, wanted=wanted))

    async def mark_device_list_change(self, user_id: UserId) -> int:
        return await self._db.run_interaction(
            "device_list_change", partial(mark_device_list_change_txn, user_id=user_id)
        )

    async def device_list_position(self) -> int:
        return await self._db.run_read("device_list_position", device_list_position_txn)

    async def device_list_changes(self, since: int, until: int) -> set[UserId]:
        return await self._db.run_read(
            "device_list_changes",
            partial(device_list_changes_since_txn, since=since, until=until),
        )

    async def queue_to_device(
        self,
        sender: UserId,
        event_type: str,
        messages: Sequence[tuple[UserId, DeviceId, Mapping[str, Any]]],
    ) -> int:
        return await self._db.run_interaction(
            "queue_to_device",
            partial(queue_to_device_txn, sender=sender, event_type=event_type, messages=messages),
        )

    async def to_device_position(self) -> int:
        return await self._db.run_read("to_device_position", to_device_position_txn)

    async def to_device_since(
        self, user_id: UserId, device_id: DeviceId, since: int, until: int, limit: int
    ) -> list[ToDeviceMessage]:
        return await self._db.run_read(
            "to_device_since",
            partial(
                to_device_since_txn,
                user_id=user_id,
                device_id=device_id,
                since=since,
                until=until,
                limit=limit,
            ),
        )

    async def delete_to_device(self, user_id: UserId, device_id: DeviceId, up_to: int) -> int:
        return await self._db.run_interaction(
            "delete_to_device",
            partial(delete_to_device_txn, user_id=user_id, device_id=device_id, up_to=up_to),
        )

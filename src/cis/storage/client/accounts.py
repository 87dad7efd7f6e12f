"""Users, devices, hashed access tokens and profiles in ``node.db``.

Accounts are rows of the ``users`` table (created by ``cis-node init`` for the system user);
a user without a password hash, or with ``can_login = 0``, cannot log in (the node's system
user ``@cis:{server_name}``). Deleting a device
deletes its access tokens and its end-to-end keys (foreign keys with ``ON DELETE CASCADE``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import partial

from cis.ids import DeviceId, UserId
from cis.storage.database import Database


@dataclass(frozen=True, slots=True)
class UserRecord:
    user_id: UserId
    password_hash: str | None
    admin: bool
    displayname: str | None
    avatar_url: str | None
    created_ts: int
    deactivated: bool
    system: bool = False


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    user_id: UserId
    device_id: DeviceId
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """Who an access token belongs to."""

    user_id: UserId
    device_id: DeviceId


class UserExists(Exception):
    """The user id is taken."""


def create_user_txn(
    conn: sqlite3.Connection,
    *,
    user_id: UserId,
    password_hash: str | None,
    admin: bool,
    now_ms: int,
    displayname: str | None,
) -> None:
    localpart = user_id[1:].split(":", 1)[0]
    try:
        conn.execute(
            "INSERT INTO users (user_id, localpart, can_login, password_hash, admin, displayname,"
            " created_ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                user_id,
                localpart,
                int(password_hash is not None),
                password_hash,
                int(admin),
                displayname,
                now_ms,
            ),
        )
    except sqlite3.IntegrityError:
        raise UserExists(user_id) from None


def get_user_txn(conn: sqlite3.Connection, user_id: str) -> UserRecord | None:
    row = conn.execute(
        "SELECT user_id, password_hash, admin, displayname, avatar_url, created_ts, deactivated,"
        " can_login, is_system FROM users WHERE user_id = ?",
        (user_id,),
    ).fetchone()
    if row is None:
        return None
    can_login = bool(row[7]) and not row[8]
    return UserRecord(
        UserId(row[0]),
        row[1] if can_login else None,
        bool(row[2]),
        row[3],
        row[4],
        int(row[5]),
        bool(row[6]),
        bool(row[8]),
    )


def list_users_txn(conn: sqlite3.Connection) -> list[UserId]:
    return [UserId(r[0]) for r in conn.execute("SELECT user_id FROM users ORDER BY user_id")]


def upsert_device_txn(
    conn: sqlite3.Connection,
    *,
    user_id: UserId,
    device_id: DeviceId,
    display_name: str | None,
    now_ms: int,
    ip: str | None,
) -> bool:
    """Create the device (True) or, if it exists, just mark it seen (False)."""
    cur = conn.execute(
        "INSERT INTO cs_devices (user_id, device_id, display_name, created_ts, last_seen_ts,"
        " last_seen_ip) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, device_id) DO NOTHING",
        (user_id, device_id, display_name, now_ms, now_ms, ip),
    )
    if cur.rowcount:
        return True
    conn.execute(
        "UPDATE cs_devices SET last_seen_ts = ?, last_seen_ip = ? WHERE user_id = ? AND"
        " device_id = ?",
        (now_ms, ip, user_id, device_id),
    )
    return False


def add_token_txn(
    conn: sqlite3.Connection,
    *,
    token_hash: bytes,
    user_id: UserId,
    device_id: DeviceId,
    now_ms: int,
    replace_device_tokens: bool,
) -> None:
    """Store a token for the device; a re-used device id loses its older tokens (spec
    §"Relationship between access tokens and devices")."""
    if replace_device_tokens:
        conn.execute(
            "DELETE FROM cs_access_tokens WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
    conn.execute(
        "INSERT INTO cs_access_tokens (token_hash, user_id, device_id, created_ts)"
        " VALUES (?, ?, ?, ?)",
        (token_hash, user_id, device_id, now_ms),
    )


def token_owner_txn(conn: sqlite3.Connection, token_hash: bytes) -> TokenOwner | None:
    row = conn.execute(
        "SELECT t.user_id, t.device_id FROM cs_access_tokens t JOIN users u"
        " ON u.user_id = t.user_id WHERE t.token_hash = ? AND u.deactivated = 0",
        (token_hash,),
    ).fetchone()
    return None if row is None else TokenOwner(UserId(row[0]), DeviceId(row[1]))


def device_token_hashes_txn(
    conn: sqlite3.Connection, user_id: UserId, device_id: DeviceId | None
) -> list[bytes]:
    if device_id is None:
        rows = conn.execute("SELECT token_hash FROM cs_access_tokens WHERE user_id = ?", (user_id,))
    else:
        rows = conn.execute(
            "SELECT token_hash FROM cs_access_tokens WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
    return [bytes(r[0]) for r in rows]


def delete_devices_txn(
    conn: sqlite3.Connection, user_id: UserId, device_ids: list[DeviceId] | None
) -> list[DeviceId]:
    """Delete the devices (all of the user's with ``None``); return those that existed."""
    if device_ids is None:
        rows = conn.execute("SELECT device_id FROM cs_devices WHERE user_id = ?", (user_id,))
        device_ids = [DeviceId(r[0]) for r in rows]
    deleted: list[DeviceId] = []
    for device_id in device_ids:
        cur = conn.execute(
            "DELETE FROM cs_devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )
        if cur.rowcount:
            deleted.append(device_id)
    return deleted


def list_devices_txn(conn: sqlite3.Connection, user_id: UserId) -> list[DeviceRecord]:
    rows = conn.execute(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM cs_devices"
        " WHERE user_id = ? ORDER BY device_id",
        (user_id,),
    )
    return [DeviceRecord(user_id, DeviceId(r[0]), r[1], r[2], r[3]) for r in rows]


def get_device_txn(
    conn: sqlite3.Connection, user_id: UserId, device_id: DeviceId
) -> DeviceRecord | None:
    row = conn.execute(
        "SELECT display_name, last_seen_ts, last_seen_ip FROM cs_devices"
        " WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    ).fetchone()
    return None if row is None else DeviceRecord(user_id, device_id, row[0], row[1], row[2])


def rename_device_txn(
    conn: sqlite3.Connection, user_id: UserId, device_id: DeviceId, display_name: str
) -> bool:
    cur = conn.execute(
        "UPDATE cs_devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
        (display_name, user_id, device_id),
    )
    return cur.rowcount > 0


def set_profile_field_txn(
    conn: sqlite3.Connection, user_id: UserId, field: str, value: str | None
) -> None:
    if field not in ("displayname", "avatar_url"):
        raise ValueError("unknown profile field")
    conn.execute(f"UPDATE users SET {field} = ? WHERE user_id = ?", (value, user_id))


class AccountStore:
    """Async access to the account tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(
        self,
        user_id: UserId,
        password_hash: str | None,
        *,
        admin: bool,
        now_ms: int,
        displayname: str | None = None,
    ) -> None:
        await self._db.run_interaction(
            "create_user",
            partial(
                create_user_txn,
                user_id=user_id,
                password_hash=password_hash,
                admin=admin,
                now_ms=now_ms,
                displayname=displayname,
            ),
        )

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self._db.run_read("get_user", partial(get_user_txn, user_id=user_id))

    async def list_users(self) -> list[UserId]:
        return await self._db.run_read("list_users", list_users_txn)

    async def login_device(
        self,
        *,
        user_id: UserId,
        device_id: DeviceId,
        display_name: str | None,
        token_hash: bytes,
        now_ms: int,
        ip: str | None,
    ) -> bool:
        """Create (or reuse) the device and give it this token, in one transaction; True if
        the device is new."""

        def txn(conn: sqlite3.Connection) -> bool:
            created = upsert_device_txn(
                conn,
                user_id=user_id,
                device_id=device_id,
                display_name=display_name,
                now_ms=now_ms,
                ip=ip,
            )
            add_token_txn(
                conn,
                token_hash=token_hash,
                user_id=user_id,
                device_id=device_id,
                now_ms=now_ms,
                replace_device_tokens=not created,
            )
            return created

        return await self._db.run_interaction("login_device", txn)

    async def register(
        self,
        *,
        user_id: UserId,
        password_hash: str | None,
        device: tuple[DeviceId, str | None, bytes] | None,
        now_ms: int,
        ip: str | None,
    ) -> None:
        """Create the user and, unless ``device`` is ``None``, its first device and token."""

        def txn(conn: sqlite3.Connection) -> None:
            create_user_txn(
                conn,
                user_id=user_id,
                password_hash=password_hash,
                admin=False,
                now_ms=now_ms,
                displayname=None,
            )
            if device is not None:
                device_id, name, token_hash = device
                upsert_device_txn(
                    conn,
                    user_id=user_id,
                    device_id=device_id,
                    display_name=name,
                    now_ms=now_ms,
                    ip=ip,
                )
                add_token_txn(
                    conn,
                    token_hash=token_hash,
                    user_id=user_id,
                    device_id=device_id,
                    now_ms=now_ms,
                    replace_device_tokens=False,
                )

        await self._db.run_interaction("register", txn)

    async def token_owner(self, token_hash: bytes) -> TokenOwner | None:
        return await self._db.run_read(
            "token_owner", partial(token_owner_txn, token_hash=token_hash)
        )

    async def delete_devices(
        self, user_id: UserId, device_ids: list[DeviceId] | None
    ) -> tuple[list[DeviceId], list[bytes]]:
        """Delete devices (their tokens and keys go with them); return the deleted ids and
        the hashes of the tokens that stopped working."""

        def txn(conn: sqlite3.Connection) -> tuple[list[DeviceId], list[bytes]]:
            hashes: list[bytes] = []
            if device_ids is None:
                hashes = device_token_hashes_txn(conn, user_id, None)
            else:
                for device_id in device_ids:
                    hashes.extend(device_token_hashes_txn(conn, user_id, device_id))
            return delete_devices_txn(conn, user_id, device_ids), hashes

        return await self._db.run_interaction("delete_devices", txn)

    async def list_devices(self, user_id: UserId) -> list[DeviceRecord]:
        return await self._db.run_read("list_devices", partial(list_devices_txn, user_id=user_id))

    async def get_device(self, user_id: UserId, device_id: DeviceId) -> DeviceRecord | None:
        return await self._db.run_read(
            "get_device", partial(get_device_txn, user_id=user_id, device_id=device_id)
        )

    async def rename_device(self, user_id: UserId, device_id: DeviceId, name: str) -> bool:
        return await self._db.run_interaction(
            "rename_device",
            partial(rename_device_txn, user_id=user_id, device_id=device_id, display_name=name),
        )

    async def set_profile_field(self, user_id: UserId, field: str, value: str | None) -> None:
        await self._db.run_interaction(
            "set_profile_field",
            partial(set_profile_field_txn, user_id=user_id, field=field, value=value),
        )

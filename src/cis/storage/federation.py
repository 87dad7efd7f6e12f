"""The federation tables of ``node.db`` (its migration 3, in ``cis.storage.node_schema``).

- ``server_keys``: what this node believes about other servers: ``server_name → Ed25519 key``
  (with the DID pair naming it), learned on the first authenticated handshake, from a signed
  anchor record, or from a self-signed key document matching a DID already known. A different
  key later claiming the same server is not believed: it is recorded in ``key_conflicts`` and
  refused until ``cis-node trust rebind``.
- ``did_trust`` (migration 1, seed 000's columns): ``trustor`` is this node's DID, ``trustee``
  a peer's ``did:cis`` or ``did:key``, ``trust_level`` 0, 1 or 2.
- ``network_peers`` (migration 1) gains the peer's DID; ``status`` is 1 online, 0 offline,
  ``rtt_ms`` the last measured round trip.
- ``remote_invites``: invites for local users to rooms this node does not hold yet, with the
  stripped state the inviting server sent (what ``/sync`` shows under ``rooms.invite``).

Every statement on these tables lives here; transactions are the ``*_txn`` functions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from cis.ids import EventId, RoomId, UserId

FEDERATION_SCHEMA_V1: Final[tuple[str, ...]] = (
    """CREATE TABLE server_keys (
        server_name TEXT PRIMARY KEY,
        node_id TEXT NOT NULL,
        did TEXT NOT NULL,
        did_key TEXT NOT NULL,
        public_key BLOB NOT NULL CHECK (length(public_key) = 32),
        source TEXT NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE key_conflicts (
        server_name TEXT NOT NULL,
        did_key TEXT NOT NULL,
        did TEXT NOT NULL,
        public_key BLOB NOT NULL CHECK (length(public_key) = 32),
        source TEXT NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        seen INTEGER NOT NULL,
        PRIMARY KEY (server_name, did_key)
    )""",
    "ALTER TABLE network_peers ADD COLUMN did TEXT",
    """CREATE TABLE remote_invites (
        room_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        room_version TEXT NOT NULL,
        stripped_state TEXT NOT NULL,
        received_ts INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID""",
)


@dataclass(frozen=True, slots=True)
class ServerKeyRow:
    server_name: str
    node_id: str
    did: str
    did_key: str
    public_key: bytes
    source: str
    first_seen_ms: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class KeyConflictRow:
    server_name: str
    did: str
    did_key: str
    public_key: bytes
    source: str
    first_seen_ms: int
    last_seen_ms: int
    seen: int


@dataclass(frozen=True, slots=True)
class PeerRow:
    node_id: str
    did: str | None
    endpoint: str | None
    online: bool
    last_seen_ms: int | None
    rtt_ms: int | None


@dataclass(frozen=True, slots=True)
class RemoteInvite:
    room_id: RoomId
    user_id: UserId
    event_id: EventId
    sender: UserId
    room_version: str
    stripped_state: list[dict[str, Any]]
    received_ts: int


# ---------------------------------------------------------------------------- server keys

_KEY_COLUMNS: Final = (
    "server_name, node_id, did, did_key, public_key, source, first_seen_ms, last_seen_ms"
)


def server_keys(conn: sqlite3.Connection) -> list[ServerKeyRow]:
    rows = conn.execute(f"SELECT {_KEY_COLUMNS} FROM server_keys ORDER BY server_name")
    return [
        ServerKeyRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], int(r[6]), int(r[7])) for r in rows
    ]


def pin_server_key_txn(conn: sqlite3.Connection, row: ServerKeyRow) -> bool:
    """Pin ``row`` unless another key holds its server name; return whether it is pinned now
    (a refused key is recorded in ``key_conflicts``)."""
    current = conn.execute(
        "SELECT public_key FROM server_keys WHERE server_name = ?", (row.server_name,)
    ).fetchone()
    if current is None:
        conn.execute(
            f"INSERT INTO server_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row.server_name, row.node_id, row.did, row.did_key, row.public_key, row.source,
             row.first_seen_ms, row.last_seen_ms),
        )  # fmt: skip
        return True
    if bytes(current[0]) == row.public_key:
        conn.execute(
            "UPDATE server_keys SET last_seen_ms = max(last_seen_ms, ?) WHERE server_name = ?",
            (row.last_seen_ms, row.server_name),
        )
        return True
    conn.execute(
        "INSERT INTO key_conflicts (server_name, did_key, did, public_key, source,"
        " first_seen_ms, last_seen_ms, seen) VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
        " ON CONFLICT (server_name, did_key) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,"
        " seen = seen + 1",
        (row.server_name, row.did_key, row.did, row.public_key, row.source, row.first_seen_ms,
         row.last_seen_ms),
    )  # fmt: skip
    return False


def key_conflicts(conn: sqlite3.Connection) -> list[KeyConflictRow]:
    rows = conn.execute(
        "SELECT server_name, did, did_key, public_key, source, first_seen_ms, last_seen_ms, seen"
        " FROM key_conflicts ORDER BY server_name, last_seen_ms DESC"
    )
    return [
        KeyConflictRow(r[0], r[1], r[2], bytes(r[3]), r[4], int(r[5]), int(r[6]), int(r[7]))
        for r in rows
    ]


def rebind_txn(
    conn: sqlite3.Connection, server_name: str, new: ServerKeyRow | None
) -> ServerKeyRow | None:
    """Forget the key pinned for ``server_name`` (and its recorded conflicts); pin ``new`` if
    given. Return the row that was pinned before, if any."""
    before = conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM server_keys WHERE server_name = ?", (server_name,)
    ).fetchone()
    conn.execute("DELETE FROM server_keys WHERE server_name = ?", (server_name,))
    conn.execute("DELETE FROM key_conflicts WHERE server_name = ?", (server_name,))
    if new is not None:
        pin_server_key_txn(conn, new)
    if before is None:
        return None
    r = before
    return ServerKeyRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], int(r[6]), int(r[7]))


# ---------------------------------------------------------------------------- trust


def trust_levels(conn: sqlite3.Connection, trustor: str) -> dict[str, int]:
    return {
        row[0]: int(row[1])
        for row in conn.execute(
            "SELECT trustee, trust_level FROM did_trust WHERE trustor = ? ORDER BY trustee",
            (trustor,),
        )
    }


def set_trust_txn(conn: sqlite3.Connection, trustor: str, trustee: str, level: int) -> None:
    conn.execute(
        "INSERT INTO did_trust (trustor, trustee, trust_level) VALUES (?, ?, ?)"
        " ON CONFLICT (trustor, trustee) DO UPDATE SET trust_level = excluded.trust_level",
        (trustor, trustee, level),
    )


def delete_trust_txn(conn: sqlite3.Connection, trustor: str, trustees: Sequence[str]) -> None:
    conn.executemany(
        "DELETE FROM did_trust WHERE trustor = ? AND trustee = ?", [(trustor, t) for t in trustees]
    )


# ---------------------------------------------------------------------------- peers


def upsert_peer_txn(
    conn: sqlite3.Connection,
    *,
    node_id: str,
    did: str,
    endpoint: str | None,
    online: bool,
    last_seen_ms: int | None,
    rtt_ms: int | None,
) -> None:
    conn.execute(
        "INSERT INTO network_peers (node_id, did, endpoint_ws, status, last_seen, rtt_ms)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET did = excluded.did,"
        " endpoint_ws = coalesce(excluded.endpoint_ws, endpoint_ws), status = excluded.status,"
        " last_seen = coalesce(excluded.last_seen, last_seen),"
        " rtt_ms = coalesce(excluded.rtt_ms, rtt_ms)",
        (node_id, did, endpoint, 1 if online else 0, last_seen_ms, rtt_ms),
    )


def mark_all_peers_offline_txn(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE network_peers SET status = 0")


def peers(conn: sqlite3.Connection) -> list[PeerRow]:
    rows = conn.execute(
        "SELECT node_id, did, endpoint_ws, status, last_seen, rtt_ms FROM network_peers"
        " ORDER BY node_id"
    )
    return [
        PeerRow(
            r[0],
            r[1],
            r[2],
            bool(r[3]),
            int(r[4]) if r[4] is not None else None,
            int(r[5]) if r[5] is not None else None,
        )
        for r in rows
    ]


# ---------------------------------------------------------------------------- invites


def put_remote_invite_txn(conn: sqlite3.Connection, invite: RemoteInvite) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO remote_invites (room_id, user_id, event_id, sender, room_version,"
        " stripped_state, received_ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (invite.room_id, invite.user_id, invite.event_id, invite.sender, invite.room_version,
         json.dumps(invite.stripped_state, sort_keys=True), invite.received_ts),
    )  # fmt: skip


def remote_invite(
    conn: sqlite3.Connection, room_id: RoomId, user_id: UserId
) -> RemoteInvite | None:
    row = conn.execute(
        "SELECT event_id, sender, room_version, stripped_state, received_ts FROM remote_invites"
        " WHERE room_id = ? AND user_id = ?",
        (room_id, user_id),
    ).fetchone()
    if row is None:
        return None
    stripped = json.loads(row[3])
    return RemoteInvite(
        room_id, user_id, EventId(row[0]), UserId(row[1]), row[2],
        stripped if isinstance(stripped, list) else [], int(row[4]),
    )  # fmt: skip


def delete_remote_invite_txn(conn: sqlite3.Connection, room_id: RoomId, user_id: UserId) -> None:
    conn.execute("DELETE FROM remote_invites WHERE room_id = ? AND user_id = ?", (room_id, user_id))


# ---------------------------------------------------------------------------- memberships


def set_memberships_txn(
    conn: sqlite3.Connection,
    room_id: RoomId,
    rows: Sequence[tuple[UserId, str | None, EventId | None]],
    position: int,
) -> None:
    """Make the membership index say what the room's *resolved* state says.

    The foundation's index keeps, per user, the membership of the latest event by stream
    position; after state resolution the winner may be an older event. Each row is written at
    ``position`` (the room's newest position), unconditionally: an index row of the same batch
    arriving later carries no higher position, so it cannot undo this. ``None`` removes the row.
    """
    for user_id, membership, event_id in rows:
        if membership is None or event_id is None:
            conn.execute(
                "DELETE FROM memberships WHERE room_id = ? AND user_id = ?", (room_id, user_id)
            )
            continue
        conn.execute(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, user_id) DO UPDATE SET"
            " membership = excluded.membership, event_id = excluded.event_id,"
            " stream_ordering = max(memberships.stream_ordering, excluded.stream_ordering)",
            (room_id, user_id, membership, event_id, position),
        )


def room_member_servers(conn: sqlite3.Connection, room_id: RoomId) -> list[tuple[UserId, str]]:
    """``(user, membership)`` of the room's members in the index."""
    return [
        (UserId(r[0]), r[1])
        for r in conn.execute(
            "SELECT user_id, membership FROM memberships WHERE room_id = ?", (room_id,)
        )
    ]

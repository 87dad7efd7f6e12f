"""The schema of ``node.db`` (kind ``node``).

``node.db`` runs at ``synchronous=FULL`` and holds the node's secrets (its Ed25519 seed), so the
file is 0600. Its tables:

- ``node_identity``: the node's name and key seed (one row).
- ``node_status``: the clean-shutdown marker and the highest stream position handed out
  (one row). ``clean_shutdown`` is 0 while a node runs; a start that finds it 0 re-indexes.
- ``users``: local accounts (later issues add columns by migration); the system user
  ``@cis:{server_name}`` has ``can_login = 0``.
- ``did_trust``, ``network_peers``, ``pending_sync``: seed 000 §2.3's columns.
- ``rooms``: the registry, ``room_id → dir_name`` (the folder is a hash), status and how far its
  events are indexed here.
- ``server_keys``, ``key_conflicts``, ``remote_invites`` (migration 3): federation's, in
  ``cis.storage.federation``.
- ``stream`` and ``memberships``: derived indexes of the room files (every stored event by
  stream position; each room's current ``m.room.member`` state), rebuilt from the rooms after an
  unclean stop.

Later issues append migrations here (numbered, never edited once released).
"""

from __future__ import annotations

from typing import Final

from cis.storage.client.schema import CLIENT_SCHEMA_V1
from cis.storage.federation import FEDERATION_SCHEMA_V1
from cis.storage.sqlite import Migration

KIND: Final = "node"

MIGRATIONS: Final = (
    Migration(
        1,
        "node identity, registry and derived indexes",
        (
            """CREATE TABLE node_identity (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                node_id TEXT NOT NULL,
                signing_seed BLOB NOT NULL CHECK (length(signing_seed) = 32),
                created_ts INTEGER NOT NULL
            )""",
            """CREATE TABLE node_status (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                clean_shutdown INTEGER NOT NULL,
                stream_max INTEGER NOT NULL,
                last_start_ts INTEGER,
                last_stop_ts INTEGER
            )""",
            "INSERT INTO node_status (id, clean_shutdown, stream_max) VALUES (1, 1, 0)",
            """CREATE TABLE users (
                user_id TEXT PRIMARY KEY,
                localpart TEXT NOT NULL UNIQUE,
                is_system INTEGER NOT NULL DEFAULT 0,
                can_login INTEGER NOT NULL DEFAULT 1,
                password_hash TEXT,
                deactivated INTEGER NOT NULL DEFAULT 0,
                created_ts INTEGER NOT NULL
            )""",
            """CREATE TABLE did_trust (
                trustor TEXT NOT NULL,
                trustee TEXT NOT NULL,
                trust_level INTEGER NOT NULL CHECK (trust_level IN (0, 1, 2)),
                PRIMARY KEY (trustor, trustee)
            )""",
            """CREATE TABLE network_peers (
                node_id TEXT PRIMARY KEY,
                endpoint_ws TEXT,
                status INTEGER,
                last_seen INTEGER,
                rtt_ms INTEGER
            )""",
            """CREATE TABLE pending_sync (
                target_node TEXT NOT NULL,
                room_id TEXT NOT NULL,
                since_event_id TEXT,
                priority INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (target_node, room_id)
            )""",
            """CREATE TABLE rooms (
                room_id TEXT PRIMARY KEY,
                dir_name TEXT NOT NULL UNIQUE,
                status TEXT NOT NULL CHECK (status IN ('active', 'archived', 'missing')),
                created_ts INTEGER NOT NULL,
                indexed_upto INTEGER NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE stream (
                stream_ordering INTEGER PRIMARY KEY,
                room_id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                type TEXT NOT NULL,
                sender TEXT NOT NULL,
                state_key TEXT,
                status TEXT NOT NULL
            )""",
            "CREATE INDEX stream_room ON stream (room_id, stream_ordering)",
            """CREATE TABLE memberships (
                room_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                membership TEXT NOT NULL,
                event_id TEXT NOT NULL,
                stream_ordering INTEGER NOT NULL,
                PRIMARY KEY (room_id, user_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX memberships_user ON memberships (user_id, membership)",
        ),
    ),
    Migration(2, "client-server API: devices, tokens, account data, keys, media", CLIENT_SCHEMA_V1),
    Migration(3, "federation: server keys, key conflicts, remote invites", FEDERATION_SCHEMA_V1),
)

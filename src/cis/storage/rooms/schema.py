"""The schema of a room's ``events.db`` (kind ``room``).

One file per room, the source of truth for its events. Everything stored with an event commits
in the same transaction: the event row (with its node-wide stream position, received time and
status), its DAG edges and auth references, the room's forward extremities, its current state
entry and the ``(user, device, txn_id) → event_id`` row of a client send.

- ``events.pdu`` is the wire PDU as canonical JSON (``PersistableEvent.canonical_bytes``),
  kept verbatim; the other columns index it.
- ``events.strings`` joins every string value of the content with 0xFF (see
  ``cis.storage.events.content_strings``) so ``contains`` is one ``instr`` per row.
- ``room_state`` is keyed by ``(type, state_key)``: the latest timeline state event for each key.
- ``sync_positions``: per peer, the highest stream position of this room it acknowledged.
- ``state_groups``, ``event_state`` (migration 3): the state after each event, for federation
  (``cis.storage.rooms.state_groups``).

Add a schema change as the next ``Migration``; never edit a released one.
"""

from __future__ import annotations

from typing import Final

from cis.storage.rooms.state_groups import STATE_GROUPS_SCHEMA
from cis.storage.sqlite import Migration

KIND: Final = "room"

MIGRATIONS: Final = (
    Migration(
        1,
        "room store",
        (
            """CREATE TABLE room (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                room_id TEXT NOT NULL,
                created_ts INTEGER NOT NULL
            )""",
            """CREATE TABLE events (
                stream_ordering INTEGER PRIMARY KEY,
                event_id TEXT NOT NULL UNIQUE,
                sender TEXT NOT NULL,
                type TEXT NOT NULL,
                state_key TEXT,
                origin_server_ts INTEGER NOT NULL,
                received_ts INTEGER NOT NULL,
                depth INTEGER NOT NULL,
                redacts TEXT,
                room_version TEXT NOT NULL,
                status TEXT NOT NULL
                    CHECK (status IN ('timeline', 'outlier', 'rejected', 'soft_failed')),
                pdu BLOB NOT NULL,
                strings BLOB NOT NULL
            )""",
            "CREATE INDEX events_type ON events (type, stream_ordering)",
            "CREATE INDEX events_sender ON events (sender, stream_ordering)",
            "CREATE INDEX events_ts ON events (origin_server_ts)",
            """CREATE TABLE event_edges (
                event_id TEXT NOT NULL,
                prev_event_id TEXT NOT NULL,
                PRIMARY KEY (event_id, prev_event_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX event_edges_prev ON event_edges (prev_event_id)",
            """CREATE TABLE event_auth (
                event_id TEXT NOT NULL,
                auth_id TEXT NOT NULL,
                PRIMARY KEY (event_id, auth_id)
            ) WITHOUT ROWID""",
            "CREATE TABLE forward_extremities (event_id TEXT PRIMARY KEY) WITHOUT ROWID",
            """CREATE TABLE room_state (
                type TEXT NOT NULL,
                state_key TEXT NOT NULL,
                event_id TEXT NOT NULL,
                stream_ordering INTEGER NOT NULL,
                PRIMARY KEY (type, state_key)
            ) WITHOUT ROWID""",
            """CREATE TABLE event_txn_ids (
                user_id TEXT NOT NULL,
                device_id TEXT NOT NULL,
                txn_id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                inserted_ts INTEGER NOT NULL,
                PRIMARY KEY (user_id, device_id, txn_id)
            ) WITHOUT ROWID""",
            """CREATE TABLE sync_positions (
                peer TEXT PRIMARY KEY,
                stream_ordering INTEGER NOT NULL,
                updated_ts INTEGER NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        2,
        "index client txn ids by time (bounded retention, send cache)",
        ("CREATE INDEX event_txn_ids_ts ON event_txn_ids (inserted_ts)",),
    ),
    Migration(3, "federation: state groups (cis.storage.rooms.state_groups)", STATE_GROUPS_SCHEMA),
)

"""The Client-Server tables of ``node.db`` (its migration 2, in ``cis.storage.node_schema``).

Accounts live in the foundation's ``users`` table; this migration adds the server-admin flag and
the profile to it, and the tables below.

Stream positions: ``cs_streams`` holds one counter per stream that rows of several tables
share (``account_data``, ``receipts``); ``to_device`` and ``device_list_changes`` use
``AUTOINCREMENT`` ids, which SQLite never reuses. Since ``node.db`` has one writer, positions
commit in the order they are allocated, so "every row up to N" is a stable read.
"""

from __future__ import annotations

from typing import Final

CLIENT_SCHEMA_V1: Final[tuple[str, ...]] = (
    # The foundation's ``users`` table holds the accounts; server admin and profile join it.
    "ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN displayname TEXT",
    "ALTER TABLE users ADD COLUMN avatar_url TEXT",
    """CREATE TABLE cs_devices (
        user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
        device_id TEXT NOT NULL,
        display_name TEXT,
        created_ts INTEGER NOT NULL,
        last_seen_ts INTEGER,
        last_seen_ip TEXT,
        PRIMARY KEY (user_id, device_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE cs_access_tokens (
        token_hash BLOB PRIMARY KEY,
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        created_ts INTEGER NOT NULL,
        FOREIGN KEY (user_id, device_id) REFERENCES cs_devices (user_id, device_id)
            ON DELETE CASCADE
    ) WITHOUT ROWID""",
    "CREATE INDEX cs_access_tokens_device ON cs_access_tokens (user_id, device_id)",
    """CREATE TABLE cs_streams (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "INSERT INTO cs_streams (name, position) VALUES ('account_data', 0), ('receipts', 0)",
    """CREATE TABLE cs_filters (
        user_id TEXT NOT NULL,
        filter_id INTEGER NOT NULL,
        definition TEXT NOT NULL,
        PRIMARY KEY (user_id, filter_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE cs_account_data (
        user_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        type TEXT NOT NULL,
        content TEXT NOT NULL,
        stream_id INTEGER NOT NULL,
        PRIMARY KEY (user_id, room_id, type)
    ) WITHOUT ROWID""",
    "CREATE INDEX cs_account_data_stream ON cs_account_data (user_id, stream_id)",
    """CREATE TABLE cs_receipts (
        room_id TEXT NOT NULL,
        receipt_type TEXT NOT NULL,
        user_id TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        stream_id INTEGER NOT NULL,
        PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX cs_receipts_stream ON cs_receipts (stream_id)",
    """CREATE TABLE cs_device_keys (
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        key_json TEXT NOT NULL,
        PRIMARY KEY (user_id, device_id),
        FOREIGN KEY (user_id, device_id) REFERENCES cs_devices (user_id, device_id)
            ON DELETE CASCADE
    ) WITHOUT ROWID""",
    """CREATE TABLE cs_one_time_keys (
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        key_id TEXT NOT NULL,
        key_json TEXT NOT NULL,
        upload_seq INTEGER NOT NULL,
        PRIMARY KEY (user_id, device_id, algorithm, key_id),
        FOREIGN KEY (user_id, device_id) REFERENCES cs_devices (user_id, device_id)
            ON DELETE CASCADE
    ) WITHOUT ROWID""",
    """CREATE INDEX cs_one_time_keys_order
        ON cs_one_time_keys (user_id, device_id, algorithm, upload_seq)""",
    """CREATE TABLE cs_fallback_keys (
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        key_id TEXT NOT NULL,
        key_json TEXT NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, device_id, algorithm),
        FOREIGN KEY (user_id, device_id) REFERENCES cs_devices (user_id, device_id)
            ON DELETE CASCADE
    ) WITHOUT ROWID""",
    """CREATE TABLE cs_device_list_changes (
        stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL
    )""",
    "CREATE INDEX cs_device_list_changes_user ON cs_device_list_changes (user_id, stream_id)",
    """CREATE TABLE cs_to_device (
        stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        type TEXT NOT NULL,
        content TEXT NOT NULL
    )""",
    "CREATE INDEX cs_to_device_target ON cs_to_device (user_id, device_id, stream_id)",
    """CREATE TABLE cs_media (
        media_id TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        content_type TEXT,
        filename TEXT,
        size INTEGER NOT NULL,
        uploader TEXT NOT NULL,
        created_ts INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE cs_room_aliases (
        alias TEXT PRIMARY KEY,
        room_id TEXT NOT NULL,
        creator TEXT NOT NULL,
        created_ts INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX cs_room_aliases_room ON cs_room_aliases (room_id)",
    # Reads of the foundation's derived stream index by state key (room state over time,
    # membership and visibility histories) use this partial index of state events.
    """CREATE INDEX cs_stream_state ON stream (room_id, type, state_key, stream_ordering)
        WHERE state_key IS NOT NULL""",
    """CREATE TABLE cs_forgotten_rooms (
        user_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        PRIMARY KEY (user_id, room_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE cs_redactions (
        target_id TEXT PRIMARY KEY,
        room_id TEXT NOT NULL,
        redaction_id TEXT NOT NULL
    ) WITHOUT ROWID""",
)

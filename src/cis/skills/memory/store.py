"""The memory skill's database (``skills/memory.db``): memories and their full-text index.

- ``memories``: one row per memory, ``scope`` ``private`` (only in this file, never sent
  anywhere) or the room id of a memory room (a copy of that room's current
  ``io.cis.memory.entry`` state, refreshed from the room whenever an entry event is handled).
- ``memories_fts``: an FTS5 index over keys and values (external content, kept by triggers),
  with the ``trigram`` tokenizer so any substring of three characters or more matches, in any
  script (Chinese has no spaces between words).

Search ranks rows that contain the whole query as one phrase first (case-insensitive), then by
``bm25``: a row must contain every term of at least three characters (``AND``); shorter terms
are matched as substrings.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cis.skills.contract import Migration

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_VALUE_BYTES",
    "MIGRATIONS",
    "PRIVATE",
    "Memory",
    "delete_txn",
    "get",
    "list_all",
    "replace_scope_txn",
    "search",
    "set_txn",
]

PRIVATE: Final = "private"
MAX_KEY_CHARS: Final = 255
MAX_VALUE_BYTES: Final = 60_000
"""A value and its key fit in one Matrix event (65,536 bytes) with room to spare."""
MAX_RESULTS: Final = 1000

MIGRATIONS: Final = (
    Migration(
        1,
        "memories with a trigram full-text index",
        (
            """CREATE TABLE memories (
                id INTEGER PRIMARY KEY,
                scope TEXT NOT NULL,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                updated_ts INTEGER NOT NULL,
                event_id TEXT,
                UNIQUE (scope, key)
            )""",
            """CREATE VIRTUAL TABLE memories_fts USING fts5(
                key, value, content = 'memories', content_rowid = 'id', tokenize = 'trigram'
            )""",
            """CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
                INSERT INTO memories_fts (rowid, key, value) VALUES (new.id, new.key, new.value);
            END""",
            """CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
                INSERT INTO memories_fts (memories_fts, rowid, key, value)
                VALUES ('delete', old.id, old.key, old.value);
            END""",
            """CREATE TRIGGER memories_au AFTER UPDATE ON memories BEGIN
                INSERT INTO memories_fts (memories_fts, rowid, key, value)
                VALUES ('delete', old.id, old.key, old.value);
                INSERT INTO memories_fts (rowid, key, value) VALUES (new.id, new.key, new.value);
            END""",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Memory:
    scope: str
    key: str
    value: str
    updated_ts: int
    event_id: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "key": self.key,
            "value": self.value,
            "public": self.scope != PRIVATE,
            "updated_ts": self.updated_ts,
            "event_id": self.event_id,
        }


_COLUMNS: Final = "m.scope, m.key, m.value, m.updated_ts, m.event_id"


def _memory(row: Sequence[Any]) -> Memory:
    scope, key, value, updated_ts, event_id = row
    return Memory(str(scope), str(key), str(value), int(updated_ts), event_id)


def set_txn(
    conn: sqlite3.Connection,
    scope: str,
    key: str,
    value: str,
    *,
    now_ms: int,
    event_id: str | None,
) -> None:
    conn.execute(
        """INSERT INTO memories (scope, key, value, updated_ts, event_id) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value,
               updated_ts = excluded.updated_ts, event_id = excluded.event_id
           WHERE memories.value IS NOT excluded.value
              OR memories.event_id IS NOT excluded.event_id""",
        (scope, key, value, now_ms, event_id),
    )


def delete_txn(conn: sqlite3.Connection, scope: str, key: str) -> bool:
    cursor = conn.execute("DELETE FROM memories WHERE scope = ? AND key = ?", (scope, key))
    return cursor.rowcount > 0


def replace_scope_txn(
    conn: sqlite3.Connection,
    scope: str,
    entries: Mapping[str, tuple[str, str]],
    now_ms: int,
) -> int:
    """Make ``scope``'s rows equal ``entries`` (key → (value, event id)); return the changes."""
    held = {
        key: (value, event_id)
        for key, value, event_id in conn.execute(
            "SELECT key, value, event_id FROM memories WHERE scope = ?", (scope,)
        )
    }
    changes = 0
    for key in held.keys() - entries.keys():
        delete_txn(conn, scope, key)
        changes += 1
    for key, (value, event_id) in entries.items():
        if held.get(key) != (value, event_id):
            set_txn(conn, scope, key, value, now_ms=now_ms, event_id=event_id)
            changes += 1
    return changes


def get(conn: sqlite3.Connection, scope: str, key: str) -> Memory | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM memories AS m WHERE m.scope = ? AND m.key = ?", (scope, key)
    ).fetchone()
    return _memory(row) if row is not None else None


def list_all(conn: sqlite3.Connection) -> list[Memory]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM memories AS m ORDER BY m.key, m.scope")
    return [_memory(row) for row in rows]


def _fts_query(terms: Sequence[str]) -> str:
    return " AND ".join('"' + term.replace('"', '""') + '"' for term in terms)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search(conn: sqlite3.Connection, text: str, limit: int) -> list[Memory]:
    """Memories matching every term of ``text``; the whole phrase first, then by bm25."""
    phrase = " ".join(text.split())
    if not phrase:
        return []
    terms = phrase.split(" ")
    long_terms = [t for t in terms if len(t) >= 3]
    short = [t for t in terms if len(t) < 3]
    likes = " ".join("AND (m.key || ' ' || m.value) LIKE ? ESCAPE '\\'" for _ in short)
    exact = "instr(lower(m.key || ' ' || m.value), lower(?)) > 0"
    if long_terms:
        sql = f"""SELECT {_COLUMNS}
                  FROM memories_fts JOIN memories AS m ON m.id = memories_fts.rowid
                  WHERE memories_fts MATCH ? {likes}
                  ORDER BY {exact} DESC, bm25(memories_fts), m.key LIMIT ?"""
        params: list[object] = [_fts_query(long_terms), *map(_like, short), phrase, limit]
    else:
        sql = f"""SELECT {_COLUMNS} FROM memories AS m WHERE 1 {likes}
                  ORDER BY {exact} DESC, m.key LIMIT ?"""
        params = [*map(_like, short), phrase, limit]
    return [_memory(row) for row in conn.execute(sql, params)]

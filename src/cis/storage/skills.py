"""A skill's own database, ``skills/{skill}.db``, and read-only queries across files.

- Each skill's file is a ``Database`` of kind ``skill.{name}`` (its own numbered migrations,
  its own writer thread, ``synchronous=NORMAL`` like room files: a ``kill -9`` loses nothing
  committed, a power cut may lose what was committed since the last checkpoint).
- Beside the skill's tables, the host keeps ``cis_skill_delivery``: per room, the stream
  position of the last event the skill's handlers saw. A handler's writes and the advance of
  that position commit in one transaction (``advance_position_txn`` runs inside the handler's
  interaction), which is what makes delivery effectively once across a ``kill -9``. Tables whose
  names start with ``cis_`` belong to the host; a skill's migrations must not touch them.
- ``attached_query`` answers one read-only statement on a fresh ``mode=ro`` connection to a
  skill's file with other files ATTACHed read-only (another skill's database, a room's
  ``events.db``). A write across attached files is not atomic in WAL mode, so cross-file work is
  read-only by construction: the connection is read-only, ``query_only`` is on, and an
  authorizer refuses ATTACH, DETACH, PRAGMA and every write inside the skill's statement.
"""

from __future__ import annotations

import concurrent.futures
import re
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from cis.home import Home
from cis.storage.database import Database
from cis.storage.errors import InvalidQuery, StorageError
from cis.storage.sqlite import Migration, Synchronous, connect

__all__ = [
    "DELIVERY_TABLE",
    "MAX_QUERY_ROWS",
    "advance_position_txn",
    "attached_query",
    "delivery_positions",
    "open_skill_database",
    "skill_db_kind",
    "validate_alias",
]

DELIVERY_TABLE: Final = "cis_skill_delivery"
MAX_QUERY_ROWS: Final = 10_000
"""Rows one attached query returns at most (a skill pages with LIMIT/OFFSET or keys)."""
MAX_ATTACHED: Final = 8
ALIAS_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,31}\Z")
_RESERVED_ALIASES: Final = frozenset({"main", "temp"})

_CREATE_DELIVERY: Final = f"""CREATE TABLE IF NOT EXISTS {DELIVERY_TABLE} (
    room_id TEXT PRIMARY KEY,
    stream_ordering INTEGER NOT NULL,
    event_id TEXT NOT NULL
) WITHOUT ROWID"""


def skill_db_kind(skill: str) -> str:
    return f"skill.{skill}"


def open_skill_database(
    home: Home,
    skill: str,
    migrations: Sequence[Migration],
    *,
    read_executor: concurrent.futures.Executor | None = None,
    synchronous: Synchronous = Synchronous.NORMAL,
) -> Database:
    """Open (creating on first use) and migrate the skill's file. Blocking."""
    home.skills.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = Database.open(
        home.skill_db(skill),
        kind=skill_db_kind(skill),
        migrations=migrations,
        synchronous=synchronous,
        max_readers=2,
        read_executor=read_executor,
    )
    try:
        db.run_interaction_blocking("create_delivery_table", _create_delivery_txn)
    except BaseException:
        db.close(checkpoint=False)
        raise
    return db


def _create_delivery_txn(conn: sqlite3.Connection) -> None:
    conn.execute(_CREATE_DELIVERY)


def delivery_positions(conn: sqlite3.Connection) -> dict[str, int]:
    """Per room, the stream position of the last event the skill's handlers saw."""
    rows = conn.execute(f"SELECT room_id, stream_ordering FROM {DELIVERY_TABLE}").fetchall()
    return {str(room_id): int(position) for room_id, position in rows}


def advance_position_txn(
    conn: sqlite3.Connection, room_id: str, position: int, event_id: str
) -> None:
    """Record that events of ``room_id`` up to ``position`` were handled (never moves back)."""
    conn.execute(
        f"""INSERT INTO {DELIVERY_TABLE} (room_id, stream_ordering, event_id) VALUES (?, ?, ?)
            ON CONFLICT (room_id) DO UPDATE SET
                stream_ordering = excluded.stream_ordering, event_id = excluded.event_id
            WHERE excluded.stream_ordering > {DELIVERY_TABLE}.stream_ordering""",
        (room_id, position, event_id),
    )


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias) or alias in _RESERVED_ALIASES:
        raise InvalidQuery(f"invalid schema alias {alias!r} (expected [a-z_][a-z0-9_]{{0,31}})")
    return alias


# The authorizer's action codes that a read may use (sqlite3 module constants).
_READ_ACTIONS: Final = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


def _read_only_authorizer(
    action: int, _arg1: str | None, _arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def attached_query(
    main: Path,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any],
    attach: Mapping[str, Path],
    *,
    max_rows: int = MAX_QUERY_ROWS,
) -> list[tuple[Any, ...]]:
    """Run one read-only statement on ``main`` with ``attach`` (alias → file) ATTACHed
    read-only; return at most ``max_rows`` rows. Blocking."""
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidQuery("an attached query needs one SQL statement")
    if len(attach) > MAX_ATTACHED:
        raise InvalidQuery(f"at most {MAX_ATTACHED} files may be attached to one query")
    for alias, path in attach.items():
        validate_alias(alias)
        if not Path(path).is_file():
            raise InvalidQuery(f"nothing to attach as {alias}: {path.name} does not exist")
    conn = connect(main, readonly=True, cache_size_kib=1024)
    try:
        conn.execute("PRAGMA query_only = ON")
        for alias, path in attach.items():
            uri = f"{Path(path).resolve().as_uri()}?mode=ro"
            conn.execute(f"ATTACH DATABASE ? AS {alias}", (uri,))
        conn.execute("BEGIN")  # one snapshot of every attached file
        conn.set_authorizer(_read_only_authorizer)
        try:
            cursor = conn.execute(sql, params)
            rows = cursor.fetchmany(max_rows + 1)
        except sqlite3.DatabaseError as exc:
            raise InvalidQuery(f"attached query refused: {exc}") from None
        finally:
            conn.set_authorizer(None)
        if len(rows) > max_rows:
            raise InvalidQuery(f"attached query returned more than {max_rows} rows; page it")
        return [tuple(row) for row in rows]
    except sqlite3.Error as exc:
        raise StorageError(f"attached query on {main.name} failed: {exc}") from None
    finally:
        conn.close()

"""How every CIS database file is opened and migrated.

Connections (``connect``):
- ``isolation_level=None``: the ``sqlite3`` module never opens transactions behind our back;
  writers say ``BEGIN IMMEDIATE`` themselves, so a write lock is taken up front rather than
  upgraded half-way (which can fail with ``SQLITE_BUSY`` despite ``busy_timeout``).
- ``journal_mode=WAL``: readers never block the writer and a ``kill -9`` leaves a consistent
  file; ``busy_timeout=5000``; ``foreign_keys=ON``; ``wal_autocheckpoint=1000`` pages;
  ``journal_size_limit=104857600`` bytes (a bare integer: ``100MB`` is a syntax error and
  ``'100MB'`` would mean 100 bytes).
- ``synchronous``: ``FULL`` for ``node.db``; ``NORMAL`` by default for room databases. With WAL,
  ``NORMAL`` never corrupts a database on power loss but may lose the transactions committed
  since the last checkpoint; ``FULL`` syncs the WAL on every commit. On macOS ``fullfsync`` is
  turned on too, since plain ``fsync`` there does not reach the platter.
- ``cache_size`` is bounded per connection, so hundreds of open rooms fit in memory.

Schemas (``migrate``): each kind of database (``node``, ``room``, a skill's …) has numbered
migrations 1..N. Each migration runs in one transaction together with its ``user_version``
bump, statement by statement (never ``executescript``, which commits on its own). A file
whose ``user_version`` is above N was written by a newer cis-node and is refused; a file whose
``application_id`` says it is another kind is refused too.
"""

from __future__ import annotations

import sqlite3
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from cis.storage.errors import SchemaTooNew, StorageError, WrongDatabaseKind

BUSY_TIMEOUT_MS: Final = 5000
WAL_AUTOCHECKPOINT_PAGES: Final = 1000
JOURNAL_SIZE_LIMIT_BYTES: Final = 104_857_600
DEFAULT_CACHE_KIB: Final = 2048


class Synchronous(StrEnum):
    NORMAL = "NORMAL"
    FULL = "FULL"


def connect(
    path: Path | str,
    *,
    synchronous: Synchronous = Synchronous.FULL,
    readonly: bool = False,
    cache_size_kib: int = DEFAULT_CACHE_KIB,
    check_same_thread: bool = False,
) -> sqlite3.Connection:
    """Open ``path`` with the project's pragmas (see the module docstring).

    ``readonly`` opens with ``mode=ro`` (the file must exist); read-only connections do not set
    the journal mode, which only a writer may change. The connection is created with
    ``check_same_thread=False`` by default because each one is handed to exactly one thread
    (a writer thread or a reader pool slot), which may not be the thread that opened it.
    """
    target = Path(path)
    try:
        if readonly:
            conn = sqlite3.connect(
                f"{target.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=check_same_thread,
            )
        else:
            conn = sqlite3.connect(
                target, isolation_level=None, check_same_thread=check_same_thread
            )
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {target}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"cannot put {target} in WAL mode (got {mode})")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {Synchronous(synchronous).value}")
        if sys.platform == "darwin":
            conn.execute("PRAGMA fullfsync = ON")
        conn.execute(f"PRAGMA cache_size = {-int(cache_size_kib)}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StorageError(f"cannot use database {target}: {exc}") from exc
    except StorageError:
        conn.close()
        raise
    return conn


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema step: statements run in order inside one transaction."""

    version: int
    name: str
    statements: tuple[str, ...]


def application_id(kind: str) -> int:
    """A stable 31-bit id for a kind of database, stored in the file's header."""
    return zlib.crc32(f"cis:{kind}".encode()) & 0x7FFF_FFFF


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_schema(
    conn: sqlite3.Connection, kind: str, migrations: Sequence[Migration], path: Path | str
) -> int:
    """Refuse a file of another kind or a newer schema; return its schema version."""
    latest = _check_numbering(kind, migrations)
    version = schema_version(conn)
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if version > 0 and app_id != application_id(kind):
        raise WrongDatabaseKind(f"{path} is not a CIS {kind} database")
    if version > latest:
        raise SchemaTooNew(
            f"{path} has {kind} schema version {version}, newer than this cis-node "
            f"supports ({latest}); upgrade cis-node to open it"
        )
    return version


def migrate(
    conn: sqlite3.Connection, kind: str, migrations: Sequence[Migration], path: Path | str
) -> int:
    """Bring ``conn``'s schema up to the last migration; return the number applied.

    Each migration and its ``user_version`` bump commit together, so a crash leaves the file
    at one numbered version or the next, never between.
    """
    version = check_schema(conn, kind, migrations, path)
    applied = 0
    for migration in migrations:
        if migration.version <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if migration.version == 1:
                conn.execute(f"PRAGMA application_id = {application_id(kind)}")
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {migration.version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied += 1
    return applied


def _check_numbering(kind: str, migrations: Sequence[Migration]) -> int:
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(f"{kind} migrations must be numbered 1..N without gaps")
    return len(migrations)

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cis.storage.errors import SchemaTooNew, StorageError, WrongDatabaseKind
from cis.storage.sqlite import (
    JOURNAL_SIZE_LIMIT_BYTES,
    Migration,
    Synchronous,
    application_id,
    connect,
    migrate,
    schema_version,
)

MIGRATIONS = (
    Migration(1, "create t", ("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",)),
    Migration(2, "index v", ("CREATE INDEX t_v ON t (v)", "INSERT INTO t VALUES ('seed', 0)")),
)


def pragma(conn: sqlite3.Connection, name: str) -> object:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_connect_sets_the_pragmas(tmp_path: Path) -> None:
    conn = connect(tmp_path / "a.db", synchronous=Synchronous.NORMAL, cache_size_kib=512)
    assert pragma(conn, "journal_mode") == "wal"
    assert pragma(conn, "busy_timeout") == 5000
    assert pragma(conn, "foreign_keys") == 1
    assert pragma(conn, "wal_autocheckpoint") == 1000
    assert pragma(conn, "journal_size_limit") == JOURNAL_SIZE_LIMIT_BYTES == 104_857_600
    assert pragma(conn, "synchronous") == 1  # NORMAL
    assert pragma(conn, "cache_size") == -512
    assert conn.isolation_level is None
    full = connect(tmp_path / "b.db")
    assert pragma(full, "synchronous") == 2  # FULL is the default


def test_migrate_from_empty_then_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conn = connect(path)
    assert migrate(conn, "test", MIGRATIONS, path) == 2
    assert schema_version(conn) == 2
    assert pragma(conn, "application_id") == application_id("test")
    assert conn.execute("SELECT v FROM t WHERE k = 'seed'").fetchone() == (0,)
    assert migrate(conn, "test", MIGRATIONS, path) == 0
    # A second, later migration applies on its own.
    more = (*MIGRATIONS, Migration(3, "add", ("ALTER TABLE t ADD COLUMN w TEXT",)))
    assert migrate(conn, "test", more, path) == 1
    assert schema_version(conn) == 3


def test_failed_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conn = connect(path)
    migrate(conn, "test", MIGRATIONS[:1], path)
    broken = (MIGRATIONS[0], Migration(2, "broken", ("CREATE INDEX t_v ON t (v)", "NOT SQL")))
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, "test", broken, path)
    assert schema_version(conn) == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 't_v'").fetchone() is None


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conn = connect(path)
    migrate(conn, "test", MIGRATIONS, path)
    with pytest.raises(
        SchemaTooNew, match=r"schema version 2, newer than this cis-node supports \(1\)"
    ):
        migrate(conn, "test", MIGRATIONS[:1], path)


def test_other_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conn = connect(path)
    migrate(conn, "room", MIGRATIONS, path)
    with pytest.raises(WrongDatabaseKind, match=r"is not a CIS node database"):
        migrate(conn, "node", MIGRATIONS, path)


def test_migrations_must_be_numbered() -> None:
    conn = sqlite3.connect(":memory:")
    with pytest.raises(ValueError, match="numbered"):
        migrate(conn, "x", (Migration(2, "two", ()),), ":memory:")


def test_readonly_connection_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    migrate(connect(path), "test", MIGRATIONS, path)
    ro = connect(path, readonly=True)
    assert ro.execute("SELECT count(*) FROM t").fetchone() == (1,)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.execute("INSERT INTO t VALUES ('x', 1)")


def test_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=r"junk\.db"):
        connect(path)

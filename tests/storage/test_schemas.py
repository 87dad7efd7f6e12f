"""The node and room schemas migrate from an empty file and refuse a newer one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cis.storage import node_schema
from cis.storage.database import Database
from cis.storage.errors import SchemaTooNew, WrongDatabaseKind
from cis.storage.rooms import schema as room_schema
from cis.storage.sqlite import Migration, application_id, connect, migrate, schema_version

KINDS = [
    (node_schema.KIND, node_schema.MIGRATIONS, {"node_identity", "rooms", "stream", "did_trust"}),
    (room_schema.KIND, room_schema.MIGRATIONS, {"events", "room_state", "sync_positions"}),
]


@pytest.mark.parametrize(("kind", "migrations", "tables"), KINDS)
def test_from_empty_to_the_latest(
    tmp_path: Path, kind: str, migrations: tuple[Migration, ...], tables: set[str]
) -> None:
    path = tmp_path / f"{kind}.db"
    conn = connect(path)
    assert migrate(conn, kind, migrations, path) == len(migrations)
    assert schema_version(conn) == len(migrations)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == application_id(kind)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables <= names
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert migrate(conn, kind, migrations, path) == 0
    conn.close()


@pytest.mark.parametrize(("kind", "migrations", "tables"), KINDS)
def test_a_newer_file_refuses_to_open(
    tmp_path: Path, kind: str, migrations: tuple[Migration, ...], tables: set[str]
) -> None:
    path = tmp_path / f"{kind}.db"
    future = (*migrations, Migration(len(migrations) + 1, "future", ("CREATE TABLE f (x)",)))
    conn = connect(path)
    migrate(conn, kind, future, path)
    conn.close()
    with pytest.raises(SchemaTooNew, match=f"{kind} schema version {len(future)}, newer"):
        Database.open(path, kind=kind, migrations=migrations)


def test_a_room_file_is_not_a_node_file(tmp_path: Path) -> None:
    path = tmp_path / "room.db"
    Database.open(path, kind=room_schema.KIND, migrations=room_schema.MIGRATIONS).close()
    with pytest.raises(WrongDatabaseKind, match="not a CIS node database"):
        Database.open(path, kind=node_schema.KIND, migrations=node_schema.MIGRATIONS)
    conn = sqlite3.connect(path)
    try:
        # untouched
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(room_schema.MIGRATIONS)
    finally:
        conn.close()

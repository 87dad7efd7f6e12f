"""pyrqlite, an unmodified rqlite client, and the sql CLI against a 3-process cluster."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyrqlite.dbapi2 as dbapi2
import pytest

from tests.e2e.raftdb.harness import REPO, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def connect(node_port: int) -> dbapi2.Connection:
    return dbapi2.connect(host="127.0.0.1", port=node_port, timeout=10)


def test_pyrqlite_reads_writes_blobs_and_follower_writes(module_cluster: Cluster) -> None:
    cluster = module_cluster
    leader = cluster.leader()
    follower = next(n for n in cluster.members if n is not leader)
    conn = connect(leader.http_port)
    try:
        cur = conn.cursor()
        cur.execute(
            "CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT, data BLOB, score REAL)"
        )
        cur.execute(
            "INSERT INTO foo (name, data, score) VALUES (?, ?, ?)", ("fiona", b"\x00\xffhi", 1.5)
        )
        assert cur.lastrowid == 1
        cur.executemany("INSERT INTO foo (name) VALUES (?)", [("a",), ("b",), ("c",)])
        assert cur.rowcount == 3
        cur.execute("SELECT id, name, data, score FROM foo WHERE name = ?", ("fiona",))
        assert cur.fetchall() == [(1, "fiona", b"\x00\xffhi", 1.5)]
        assert [d[0] for d in cur.description] == ["id", "name", "data", "score"]
        cur.execute("SELECT * FROM foo WHERE name = 'nobody'")
        assert cur.fetchall() == []
        cur.execute("SELECT count(*) + 1, upper(name) FROM foo WHERE id = 1")
        assert cur.fetchone() == (2, "FIONA")
        cur.execute("UPDATE foo SET score = 2.5 WHERE id = 1")
        assert cur.rowcount == 1
    finally:
        conn.close()
    # A write sent to a follower reaches the leader; a read there (level weak) is forwarded.
    conn = connect(follower.http_port)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO foo (name) VALUES (?)", ("from follower",))
        cur.execute("SELECT name FROM foo WHERE name = ?", ("from follower",))
        assert cur.fetchall() == [("from follower",)]
        cur.execute("SELECT score FROM foo WHERE id = 1")
        assert cur.fetchone() == (2.5,)
        with pytest.raises(dbapi2.Error):
            cur.execute("INSERT INTO missing VALUES (1)")
    finally:
        conn.close()
    cluster.assert_identical()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cis", "sql", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_cli_status_and_backup(module_cluster: Cluster, tmp_path: Path) -> None:
    leader = module_cluster.leader()
    leader.execute("CREATE TABLE IF NOT EXISTS cli (v)", ["INSERT INTO cli VALUES (?)", "kept"])
    follower = next(n for n in module_cluster.members if n is not leader)
    status = cli("status", "--http", follower.http_addr, "--json")
    assert status.returncode == 0, status.stderr
    store = json.loads(status.stdout)["store"]
    assert store["leader"]["addr"] == leader.raft_addr
    human = cli("status", "--http", follower.http_addr)
    assert human.returncode == 0 and f"leader     {leader.node_id}" in human.stdout
    dest = tmp_path / "backup.db"
    backup = cli("backup", str(dest), "--http", follower.http_addr)
    assert backup.returncode == 0, backup.stderr
    assert "applied index" in backup.stdout
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    conn = sqlite3.connect(dest)
    assert conn.execute("SELECT v FROM cli").fetchall() == [("kept",)]
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    unreachable = cli("status", "--http", "127.0.0.1:1")
    assert unreachable.returncode == 1 and unreachable.stderr.startswith("error: cannot reach")

"""Faults on real processes: kill -9, full disk, compaction crashes, joins and removals."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.raftdb.harness import REPO, Cluster, Node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cis", "sql", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def counter(node: Node) -> int:
    value: int = node.query("SELECT n FROM c WHERE id = 1", level="none")[0]["values"][0][0]
    return value


def test_kill_9_of_a_follower_loses_nothing_and_applies_nothing_twice(cluster: Cluster) -> None:
    leader = cluster.leader()
    leader.execute(
        "CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER)", "INSERT INTO c VALUES (1, 0)"
    )
    victim = next(n for n in cluster.members if n is not leader)
    for i in range(60):
        leader.execute("UPDATE c SET n = n + 1 WHERE id = 1")
        if i == 30:
            victim.kill()
    cluster.wait_converged(nodes=[n for n in cluster.members if n.running])
    victim.start()
    cluster.wait_ready()
    cluster.assert_identical()
    assert {counter(n) for n in cluster.members} == {60}


def test_a_full_disk_stops_the_node_which_catches_up_after_a_restart(cluster: Cluster) -> None:
    leader = cluster.leader()
    victim = next(n for n in cluster.members if n is not leader)
    leader.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)")
    cluster.wait_converged()
    victim.stop()
    victim.start(env={"CIS_SQL_FAULT": "max_page_count:60"})
    cluster.wait_ready()
    for i in range(40):
        leader.execute(["INSERT INTO big (b) VALUES (zeroblob(?))", 8000 + i])

    def halted() -> bool:
        reply = victim.request("GET", "/readyz", timeout=3)
        return reply.status_code == 503 and "[-]node" in reply.text

    cluster.wait_for("the full node to report itself failed", halted, 30)
    assert "full" in victim.status()["store"]["failed"]
    # The others go on; the failed node applied nothing past the failure and skipped nothing.
    leader.execute(["INSERT INTO big (b) VALUES (?)", "after"])
    failed_at = victim.status()["store"]["db_applied_index"]
    assert failed_at < leader.status()["store"]["raft"]["applied_index"]
    victim.stop()
    victim.start()
    cluster.wait_ready()
    cluster.assert_identical()
    rows = victim.query("SELECT count(*) FROM big", level="none")[0]["values"]
    assert rows == [[41]]


def test_an_empty_node_joins_only_with_join_and_catches_up_from_a_snapshot(
    cluster: Cluster,
) -> None:
    leader = cluster.leader()
    leader.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
    for i in range(30):
        leader.execute(["INSERT INTO kv VALUES (?, ?)", f"k{i}", "v" * 100])
    for node in cluster.members:
        node.json("POST", "/_cis/compact")
    cluster.wait_for(
        "the leader to compact its log",
        lambda: leader.status()["store"]["raft"]["first_log_index"] > 1,
        30,
    )
    # A fifth member's address, started as `serve` with an empty directory: refused.
    newcomer = cluster.add_node(member=False)
    newcomer.start()
    code = newcomer.wait_exit(30)
    assert code == 70
    assert "sql join" in newcomer.log_path.read_text()
    # `join` adds it; it catches up through the snapshot (the log no longer starts at 1).
    cluster.members.append(newcomer)
    newcomer.start(join=True)
    cluster.wait_ready(timeout=60)
    assert newcomer.status()["store"]["raft"]["snapshot_index"] > 0
    assert sorted(n["id"] for n in newcomer.json("GET", "/nodes?ver=2")["nodes"]) == [
        "1",
        "2",
        "3",
        "4",
    ]
    leader.execute(["INSERT INTO kv VALUES (?, ?)", "after-join", "x"])
    cluster.assert_identical()
    # --peers is only the bootstrap list: a founding member restarted with its old list (which
    # does not name the newcomer) takes the membership from its log and snapshot.
    founder = next(n for n in cluster.members if n is not leader and n is not newcomer)
    founder.stop()
    founder.extra_args = [
        "--peers",
        ",".join(f"{n.node_id}@{n.raft_addr}" for n in cluster.members[:3] if n is not founder),
    ]
    founder.start()
    cluster.wait_ready(timeout=60)
    addrs = {m["addr"] for m in founder.status()["store"]["nodes"]}
    assert newcomer.raft_addr in addrs
    founder.extra_args = []
    # And it can be removed again.
    peers = ",".join(f"{n.node_id}@{n.raft_addr}" for n in cluster.members if n is not newcomer)
    result = cli(
        "remove",
        "--id",
        newcomer.node_id,
        "--peers",
        peers,
        "--secret-file",
        str(cluster.secret_file),
    )
    assert result.returncode == 0, result.stderr
    cluster.members.remove(newcomer)
    newcomer.stop()
    cluster.wait_for(
        "the member list to shrink",
        lambda: len(leader.json("GET", "/nodes?ver=2")["nodes"]) == 3,
        30,
    )
    leader.execute(["INSERT INTO kv VALUES (?, ?)", "after-remove", "y"])
    cluster.assert_identical()


@pytest.mark.parametrize("fault", ["exit_in_compaction", "exit_in_snapshot"])
def test_a_kill_during_log_compaction_loses_nothing(cluster: Cluster, fault: str) -> None:
    leader = cluster.leader()
    leader.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)")
    victim = next(n for n in cluster.members if n is not leader)
    for i in range(40):
        leader.execute(["INSERT INTO kv VALUES (?, ?)", i, "before"])
    cluster.wait_converged()
    victim.stop()
    victim.start(env={"CIS_SQL_FAULT": fault})
    cluster.wait_ready()
    for i in range(40, 60):
        leader.execute(["INSERT INTO kv VALUES (?, ?)", i, "acknowledged"])
    victim.json("POST", "/_cis/compact")
    assert victim.wait_exit(30) == 137
    for i in range(60, 70):
        leader.execute(["INSERT INTO kv VALUES (?, ?)", i, "while down"])
    victim.start()
    cluster.wait_ready()
    cluster.assert_identical()
    assert victim.query("SELECT count(*) FROM kv", level="none")[0]["values"] == [[70]]
    # The journal the crash left behind still opens: a second restart changes nothing.
    victim.stop()
    victim.start()
    cluster.wait_ready()
    assert cluster.assert_identical() > 0


def test_a_replica_with_another_sqlite_version_is_refused(cluster: Cluster) -> None:
    leader = cluster.leader()
    leader.execute("CREATE TABLE t (v)")
    victim = next(n for n in cluster.members if n is not leader)
    cluster.wait_converged()
    victim.stop()
    conn = sqlite3.connect(victim.db_path)
    conn.execute("UPDATE _cis_meta SET value = '3.0.0' WHERE key = 'sqlite_version'")
    conn.commit()
    conn.close()
    victim.start()
    assert victim.wait_exit(30) == 1
    assert "replicas must run the same version" in victim.log_path.read_text()


def test_the_cli_refuses_to_start_without_a_secret_or_with_an_open_api(tmp_path: Path) -> None:
    base = ["serve", "--id", "1", "--raft", "127.0.0.1:1", "--data", str(tmp_path / "d")]
    result = cli(*base, "--peers", "")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no cluster secret") and result.stderr.count("\n") == 1
    secret = tmp_path / "s"
    assert cli("init-secret", str(secret)).returncode == 0
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    result = cli(*base, "--secret-file", str(secret), "--http", "0.0.0.0:4999")
    assert result.returncode == 1 and "--auth" in result.stderr
    secret.chmod(0o640)
    result = cli(*base, "--secret-file", str(secret))
    assert result.returncode == 1 and "readable by others" in result.stderr

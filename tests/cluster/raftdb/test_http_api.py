"""The rqlite-compatible HTTP API, against a 3-node cluster in this process."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.raftdb.inproc import InProcCluster, InProcNode

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcCluster]:
    c = InProcCluster(tmp_path_factory.mktemp("api"))
    try:
        leader = c.wait_ready()
        reply = c.http.post(
            leader.url + "/db/execute",
            json=[
                "CREATE TABLE IF NOT EXISTS fiona (id INTEGER PRIMARY KEY, name TEXT, age INT,"
                " photo BLOB, score REAL)",
                ["INSERT INTO fiona (name, age) VALUES (?, ?)", "fiona", 20],
            ],
        )
        assert reply.status_code == 200, reply.text
        yield c
    finally:
        c.close()


def post(c: InProcCluster, node: InProcNode, path: str, body: Any, **kw: Any) -> httpx.Response:
    return c.http.post(node.url + path, content=json.dumps(body).encode(), **kw)


def test_execute_and_query_shapes(cluster: InProcCluster) -> None:
    leader = cluster.leader()
    reply = post(cluster, leader, "/db/execute", [["INSERT INTO fiona (name) VALUES (?)", "x"]])
    assert reply.status_code == 200
    (result,) = reply.json()["results"]
    assert set(result) == {"last_insert_id", "rows_affected"} and result["rows_affected"] == 1
    reply = post(
        cluster, leader, "/db/query?level=linearizable",
        [["SELECT id, name, age, 1 + 1 AS two FROM fiona WHERE name = ?", "fiona"],
         "SELECT name FROM fiona WHERE id < 0"],
    )  # fmt: skip
    first, empty = reply.json()["results"]
    assert first["columns"] == ["id", "name", "age", "two"]
    assert first["types"] == ["integer", "text", "int", "integer"]
    assert first["values"] == [[1, "fiona", 20, 2]]
    assert empty == {"columns": ["name"], "types": ["text"]}


def test_boolean_flags_count_when_present_with_or_without_value(cluster: InProcCluster) -> None:
    leader = cluster.leader()
    body = [["INSERT INTO fiona (id, name) VALUES (?, ?)", 500, "a"], "INSERT INTO nope VALUES (1)"]
    for flag in ("?transaction", "?transaction=", "?transaction=false", "?transaction=1"):
        reply = post(cluster, leader, "/db/execute" + flag, body)
        assert reply.status_code == 200
        assert "error" in reply.json()["results"][-1]
        check = post(
            cluster, leader, "/db/query?level=strong", ["SELECT id FROM fiona WHERE id = 500"]
        )
        assert "values" not in check.json()["results"][0], flag  # rolled back: the flag counted
    timed = post(cluster, leader, "/db/query?timings&pretty", ["SELECT 1"])
    assert "time" in timed.json() and "time" in timed.json()["results"][0]
    assert "\n    " in timed.text
    assoc = post(
        cluster, leader, "/db/query?associative", [["SELECT name, age FROM fiona WHERE id = 1"]]
    )
    assert assoc.json()["results"][0] == {
        "types": {"name": "text", "age": "int"},
        "rows": [{"name": "fiona", "age": 20}],
    }


@pytest.mark.parametrize("flag", ["queue", "wait", "queue&wait"])
def test_queue_and_wait_are_refused_not_ignored(cluster: InProcCluster, flag: str) -> None:
    reply = post(
        cluster, cluster.leader(), f"/db/execute?{flag}", ["INSERT INTO fiona (name) VALUES ('q')"]
    )
    assert reply.status_code == 400 and "queue" in reply.json()["error"]


def test_blobs_are_base64_and_statement_errors_are_results(cluster: InProcCluster) -> None:
    leader = cluster.leader()
    post(cluster, leader, "/db/execute", ["INSERT INTO fiona (id, photo) VALUES (900, x'00ff10')"])
    reply = post(
        cluster, leader, "/db/query?level=linearizable",
        ["SELECT photo, x'0102' FROM fiona WHERE id = 900", "SELECT * FROM missing"],
    )  # fmt: skip
    blob, error = reply.json()["results"]
    assert blob["types"] == ["blob", "blob"]
    assert [base64.b64decode(v) for v in blob["values"][0]] == [b"\x00\xff\x10", b"\x01\x02"]
    assert reply.status_code == 200 and "no such table" in error["error"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/db/execute", "not json", 400),
        ("/db/execute", {"statements": []}, 400),
        ("/db/execute", [["INSERT INTO fiona (age) VALUES (random())"]], 400),
        ("/db/execute", [["INSERT INTO fiona (name) VALUES (date(?))", "now"]], 400),
        ("/db/query?level=sometimes", ["SELECT 1"], 400),
        ("/db/query?timeout=forever", ["SELECT 1"], 400),
        ("/nowhere", [], 404),
    ],
)
def test_bad_requests(cluster: InProcCluster, path: str, body: Any, status: int) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    reply = cluster.http.post(cluster.leader().url + path, content=content)
    assert reply.status_code == status, reply.text
    assert "error" in reply.json()


def test_get_query_and_method_checks(cluster: InProcCluster) -> None:
    leader = cluster.leader()
    reply = cluster.http.get(
        leader.url + "/db/query",
        params={"q": "SELECT name FROM fiona WHERE id = 1", "level": "weak"},
    )
    assert reply.json()["results"][0]["values"] == [["fiona"]]
    assert cluster.http.get(leader.url + "/db/execute").status_code == 405


def test_a_follower_forwards_writes_and_reads(cluster: InProcCluster) -> None:
    follower = cluster.followers()[0]
    reply = post(
        cluster,
        follower,
        "/db/execute",
        [["INSERT INTO fiona (id, name) VALUES (?, ?)", 700, "via follower"]],
    )
    assert reply.status_code == 200 and reply.json()["results"][0]["rows_affected"] == 1
    for level in ("weak", "linearizable", "strong"):
        reply = post(
            cluster, follower, f"/db/query?level={level}", ["SELECT name FROM fiona WHERE id = 700"]
        )
        assert reply.json()["results"][0]["values"] == [["via follower"]], level
    redirect = post(cluster, follower, "/db/query?level=weak&redirect", ["SELECT 1"])
    assert redirect.status_code == 301
    assert redirect.headers["location"] == f"{cluster.leader().url}/db/query?level=weak&redirect"
    redirect = post(cluster, follower, "/db/execute?redirect", ["SELECT 1"])
    assert redirect.status_code == 301


def test_unified_endpoint_classifies_statements(cluster: InProcCluster) -> None:
    leader = cluster.leader()
    reads = post(cluster, leader, "/db/request?level=linearizable", ["SELECT count(*) FROM fiona"])
    assert "columns" in reads.json()["results"][0]
    insert_then_read = [
        ["INSERT INTO fiona (id, name) VALUES (?, ?)", 800, "r"],
        "SELECT name FROM fiona WHERE id = 800",
    ]
    mixed = post(cluster, leader, "/db/request", insert_then_read)
    insert, select = mixed.json()["results"]
    assert insert["rows_affected"] == 1 and select["values"] == [["r"]]


def test_an_idempotency_key_applies_a_retried_write_once(cluster: InProcCluster) -> None:
    leader = cluster.leader()
    body = [["INSERT INTO fiona (name) VALUES (?)", "once"]]
    headers = {"Idempotency-Key": "retry-me-1"}
    first = post(cluster, leader, "/db/execute", body, headers=headers)
    second = post(cluster, cluster.followers()[0], "/db/execute", body, headers=headers)
    assert first.json() == second.json()
    count = post(
        cluster,
        leader,
        "/db/query?level=linearizable",
        ["SELECT count(*) FROM fiona WHERE name = 'once'"],
    )
    assert count.json()["results"][0]["values"] == [[1]]


def test_status_readyz_and_nodes(cluster: InProcCluster) -> None:
    leader = cluster.leader()
    follower = cluster.followers()[0]
    status = cluster.http.get(follower.url + "/status").json()
    store = status["store"]
    assert store["node_id"] == follower.db.node_id
    assert store["leader"] == {"node_id": leader.db.node_id, "addr": leader.db.raft_addr}
    assert set(store["raft"]) >= {"state", "term", "commit_index", "applied_index"}
    assert store["raft"]["state"] == "Follower"
    assert store["sqlite_version"] == sqlite3.sqlite_version
    assert status["http"]["bind_addr"] == follower.http_addr
    ready = cluster.http.get(follower.url + "/readyz")
    assert ready.status_code == 200
    assert ready.text.splitlines() == ["[+]node ok", "[+]leader ok", "[+]store ok"]
    assert cluster.http.get(follower.url + "/readyz?noleader").status_code == 200
    legacy = cluster.http.get(follower.url + "/nodes").json()
    assert set(legacy) == {"1", "2", "3"}
    assert legacy[leader.db.node_id]["leader"] is True
    assert legacy[leader.db.node_id]["api_addr"] == leader.url
    v2 = cluster.http.get(follower.url + "/nodes?ver=2").json()["nodes"]
    assert sorted(n["id"] for n in v2) == ["1", "2", "3"]
    assert all(n["reachable"] and n["voter"] for n in v2)


def test_backup_is_a_consistent_sqlite_file(cluster: InProcCluster, tmp_path: Path) -> None:
    leader = cluster.leader()
    post(
        cluster,
        leader,
        "/db/execute",
        [["INSERT INTO fiona (id, name) VALUES (?, ?)", 950, "backed up"]],
    )
    reply = cluster.http.get(cluster.followers()[0].url + "/db/backup")
    assert reply.status_code == 200
    applied = int(reply.headers["x-cis-applied-index"])
    dest = tmp_path / "copy.db"
    dest.write_bytes(reply.content)
    conn = sqlite3.connect(dest)
    assert conn.execute("SELECT name FROM fiona WHERE id = 950").fetchone() == ("backed up",)
    assert conn.execute("SELECT value FROM _cis_meta WHERE key = 'applied_index'").fetchone() == (
        applied,
    )
    conn.close()


def test_table_versions_are_equal_on_every_replica_and_grow(cluster: InProcCluster) -> None:
    leader = cluster.leader()
    post(cluster, leader, "/db/execute", ["CREATE TABLE IF NOT EXISTS ver (x)"])
    versions = []
    for i in range(3):
        post(cluster, leader, "/db/execute", [["INSERT INTO ver VALUES (?)", i]])
        seen = {cluster.run(n.db.table_version("ver")) for n in cluster.nodes}
        assert len(seen) == 1
        versions.append(seen.pop())
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert cluster.run(leader.db.table_version("never_written")) == 0

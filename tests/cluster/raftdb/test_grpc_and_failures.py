"""gRPC DatabaseService, authentication, and behaviour without a quorum (in-process)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cis.cluster.raftdb.auth import Users
from cis.cluster.raftdb.errors import NoLeader, ReadUnavailable, UnknownOutcome
from cis.cluster.raftdb.proto import database_pb2 as pb
from cis.cluster.raftdb.proto import database_pb2_grpc as pb_grpc
from cis.cluster.raftdb.statements import ReadLevel, Statement
from tests.cluster.raftdb.inproc import InProcCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InProcCluster]:
    c = InProcCluster(tmp_path / "c")
    try:
        c.wait_ready()
        yield c
    finally:
        c.close()


def text(value: str) -> pb.Value:
    return pb.Value(text=value)


def test_grpc_execute_query_and_version_on_every_node(cluster: InProcCluster) -> None:
    stubs = []
    channels = []
    for node in cluster.nodes:
        channel = grpc.insecure_channel(node.grpc_addr)
        channels.append(channel)
        stubs.append(pb_grpc.DatabaseServiceStub(channel))
    try:
        follower_stub = stubs[cluster.nodes.index(cluster.followers()[0])]
        reply = follower_stub.Execute(
            pb.ExecuteRequest(
                statements=[
                    pb.Statement(
                        sql="CREATE TABLE pods (name TEXT PRIMARY KEY, owner TEXT, blob BLOB)"
                    ),
                    pb.Statement(
                        sql="INSERT INTO pods VALUES (?, ?, ?)",
                        parameters=[
                            pb.Parameter(value=text("p1")),
                            pb.Parameter(value=text("node-a")),
                            pb.Parameter(value=pb.Value(blob=b"\x00\x01")),
                        ],
                    ),
                    pb.Statement(sql="INSERT INTO pods VALUES ('p1', 'dup', NULL)"),
                ]
            ),
            timeout=10,
        )
        assert reply.results[1].rows_affected == 1
        assert "UNIQUE" in reply.results[2].error
        versions = set()
        for stub in stubs:
            got = stub.Query(
                pb.QueryRequest(
                    statement=pb.Statement(
                        sql="SELECT owner, blob FROM pods WHERE name = :n",
                        parameters=[pb.Parameter(name="n", value=text("p1"))],
                    ),
                    level=pb.LEVEL_LINEARIZABLE,
                ),
                timeout=10,
            )
            assert list(got.columns) == ["owner", "blob"] and list(got.types) == ["text", "blob"]
            assert got.rows[0].values[0].text == "node-a"
            assert got.rows[0].values[1].blob == b"\x00\x01"
            weak = stub.Query(
                pb.QueryRequest(statement=pb.Statement(sql="SELECT count(*) FROM pods")), timeout=10
            )
            assert weak.rows[0].values[0].integer == 1
            versions.add(stub.GetVersion(pb.GetVersionRequest(table="pods"), timeout=10).version)
        assert len(versions) == 1 and versions.pop() > 0
        with pytest.raises(grpc.RpcError) as refused:
            stubs[0].Execute(
                pb.ExecuteRequest(statements=[pb.Statement(sql="SELECT random()")]), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        for channel in channels:
            channel.close()


def test_without_a_quorum_writes_fail_clearly_and_reads_refuse(cluster: InProcCluster) -> None:
    leader = cluster.leader()
    cluster.run(leader.db.execute([Statement.of("CREATE TABLE q (v)")]))
    survivor = cluster.followers()[0]
    for node in cluster.nodes:
        if node is not survivor:
            cluster.stop_node(node)
    started = time.monotonic()
    with pytest.raises((NoLeader, UnknownOutcome)):
        cluster.run(survivor.db.execute([Statement.of("INSERT INTO q VALUES (1)")], timeout_s=2.0))
    assert time.monotonic() - started < 10
    with pytest.raises(ReadUnavailable):
        cluster.run(
            survivor.db.query(
                [Statement.of("SELECT * FROM q")], level=ReadLevel.LINEARIZABLE, timeout_s=2.0
            )
        )
    reply = cluster.http.post(
        survivor.url + "/db/query?level=linearizable&timeout=1s",
        content=json.dumps(["SELECT * FROM q"]).encode(),
    )
    assert reply.status_code == 503 and "error" in reply.json()
    reply = cluster.http.post(
        survivor.url + "/db/execute?timeout=1s",
        content=json.dumps([["INSERT INTO q VALUES (?)", 2]]).encode(),
    )
    assert reply.status_code == 503
    assert reply.json()["outcome"] in ("not_applied", "unknown")
    # A local read still works, and says what this node has.
    local = cluster.run(
        survivor.db.query([Statement.of("SELECT count(*) FROM q")], level=ReadLevel.NONE)
    )
    assert local[0].rows is not None and local[0].rows.values == ((0,),)
    assert cluster.http.get(survivor.url + "/readyz").status_code == 503


def test_authentication_guards_http_and_grpc(tmp_path: Path) -> None:
    users_file = tmp_path / "users.json"
    users_file.write_text(
        json.dumps(
            [
                {"username": "app", "password": "s3cret", "perms": ["execute", "query", "status"]},
                {"username": "*", "perms": ["ready"]},
            ]
        )
    )
    c = InProcCluster(tmp_path / "auth", users=Users.load(users_file))
    try:
        leader = c.wait_ready()
        body = json.dumps(["SELECT 1"]).encode()
        assert c.http.post(leader.url + "/db/query", content=body).status_code == 401
        assert c.http.get(leader.url + "/status").status_code == 401
        assert c.http.get(leader.url + "/readyz").status_code == 200
        ok = c.http.post(leader.url + "/db/query", content=body, auth=("app", "s3cret"))
        assert ok.status_code == 200
        assert (
            c.http.post(leader.url + "/db/query", content=body, auth=("app", "no")).status_code
            == 401
        )
        assert c.http.get(leader.url + "/db/backup", auth=("app", "s3cret")).status_code == 401
        with grpc.insecure_channel(leader.grpc_addr) as channel:
            stub = pb_grpc.DatabaseServiceStub(channel)
            request = pb.QueryRequest(statement=pb.Statement(sql="SELECT 1"))
            with pytest.raises(grpc.RpcError) as denied:
                stub.Query(request, timeout=10)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            token = "Basic " + base64.b64encode(b"app:s3cret").decode()
            reply = stub.Query(request, timeout=10, metadata=[("authorization", token)])
            assert reply.rows[0].values[0].integer == 1
    finally:
        c.close()

"""Replicated SQL: Raft (pysyncobj) with SQLite as the state machine (seed 004).

The embeddable part is ``RaftDB``; ``server`` runs one with the rqlite-compatible HTTP API and
the gRPC ``DatabaseService`` as ``cis-node sql serve``. User documentation: docs/raftdb.md.

    db = RaftDB(RaftDBConfig(node_id="1", raft_addr="10.0.0.1:4002", data_dir=Path("…"),
                             secret=load_secret(Path("cluster.secret")),
                             peers={"2": "10.0.0.2:4002", "3": "10.0.0.3:4002"}))
    db.start()
    await db.execute([Statement.of("INSERT INTO t(v) VALUES (?)", 1)])
    rows = await db.query([Statement.of("SELECT v FROM t")], level=ReadLevel.LINEARIZABLE)
    db.stop()
"""

from cis.cluster.raftdb.config import Faults, RaftDBConfig, load_secret, write_secret
from cis.cluster.raftdb.db import NodeInfo, RaftDB
from cis.cluster.raftdb.errors import (
    ConfigError,
    MembershipError,
    NodeFailed,
    NoLeader,
    NotLeader,
    RaftDBError,
    ReadUnavailable,
    RefusedStatement,
    StatementError,
    UnknownOutcome,
)
from cis.cluster.raftdb.raft import RaftTimings
from cis.cluster.raftdb.statements import ReadLevel, Rows, Statement, StatementResult

__all__ = [
    "ConfigError",
    "Faults",
    "MembershipError",
    "NoLeader",
    "NodeFailed",
    "NodeInfo",
    "NotLeader",
    "RaftDB",
    "RaftDBConfig",
    "RaftDBError",
    "RaftTimings",
    "ReadLevel",
    "ReadUnavailable",
    "RefusedStatement",
    "Rows",
    "Statement",
    "StatementError",
    "StatementResult",
    "UnknownOutcome",
    "load_secret",
    "write_secret",
]

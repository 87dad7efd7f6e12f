"""The gRPC ``DatabaseService`` (seed 004) over a ``RaftDB``, on ``grpc.aio``.

Errors map to status codes: a malformed or refused statement → INVALID_ARGUMENT; no leader, no
quorum, unknown outcome or a stopped node → UNAVAILABLE (the message says which); bad
credentials → UNAUTHENTICATED. A statement's own SQL error is a result (``error`` field), as in
the HTTP API. A ``weak`` read on a follower is served as ``linearizable`` (never staler).
"""

from __future__ import annotations

from typing import Any

import grpc

from cis.cluster.raftdb.auth import Users
from cis.cluster.raftdb.db import RaftDB
from cis.cluster.raftdb.errors import NotLeader, RaftDBError, StatementError
from cis.cluster.raftdb.proto import database_pb2 as pb
from cis.cluster.raftdb.statements import (
    ReadLevel,
    Rows,
    SqlValue,
    Statement,
    StatementResult,
    check_value,
)

__all__ = ["SERVICE_NAME", "DatabaseService", "start_grpc_server"]

SERVICE_NAME = "cis.raftdb.v1.DatabaseService"

_LEVELS = {
    pb.LEVEL_NONE: ReadLevel.NONE,
    pb.LEVEL_WEAK: ReadLevel.WEAK,
    pb.LEVEL_LINEARIZABLE: ReadLevel.LINEARIZABLE,
    pb.LEVEL_STRONG: ReadLevel.STRONG,
}


def value_from_pb(value: pb.Value) -> SqlValue:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null":
        return None
    if kind == "integer":
        return int(value.integer)
    if kind == "real":
        return check_value(float(value.real), "parameter")
    if kind == "text":
        return str(value.text)
    return bytes(value.blob)


def value_to_pb(value: SqlValue) -> pb.Value:
    if value is None:
        return pb.Value(null=True)
    if isinstance(value, int):  # bool is an int
        return pb.Value(integer=int(value))
    if isinstance(value, float):
        return pb.Value(real=value)
    if isinstance(value, bytes):
        return pb.Value(blob=value)
    return pb.Value(text=value)


def statement_from_pb(stmt: pb.Statement) -> Statement:
    named = [p for p in stmt.parameters if p.name]
    if named and len(named) != len(stmt.parameters):
        raise StatementError("parameters must be all positional or all named")
    if named:
        return Statement(stmt.sql, (), tuple((p.name, value_from_pb(p.value)) for p in named))
    return Statement(stmt.sql, tuple(value_from_pb(p.value) for p in stmt.parameters))


def _rows_to_pb(rows: Rows | None) -> tuple[list[str], list[str], list[pb.Row]]:
    if rows is None:
        return [], [], []
    return (
        list(rows.columns),
        list(rows.types),
        [pb.Row(values=[value_to_pb(v) for v in row]) for row in rows.values],
    )


def _execute_result(result: StatementResult) -> pb.ExecuteResult:
    if result.error is not None:
        return pb.ExecuteResult(error=result.error)
    columns, types, rows = _rows_to_pb(result.rows)
    return pb.ExecuteResult(
        last_insert_id=result.last_insert_id or 0,
        rows_affected=result.rows_affected or 0,
        columns=columns,
        types=types,
        rows=rows,
    )


class DatabaseService:
    """Serves one node's ``RaftDB`` (handlers registered by ``generic_handler``).

    The generated ``database_pb2_grpc.py`` (checked in for clients) has no types; the server
    registers its three methods itself, with the typed messages of ``database_pb2``.
    """

    def __init__(self, db: RaftDB, users: Users | None = None) -> None:
        self.db = db
        self.users = users

    async def _guard(self, context: Any, perm: str) -> None:
        if self.users is None:
            return
        metadata = dict(context.invocation_metadata() or ())
        if not self.users.allowed(metadata.get("authorization"), perm):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unauthorized")

    @staticmethod
    async def _fail(context: Any, exc: RaftDBError) -> None:
        code = (
            grpc.StatusCode.INVALID_ARGUMENT
            if isinstance(exc, StatementError)
            else grpc.StatusCode.UNAVAILABLE
        )
        await context.abort(code, str(exc))

    async def Execute(self, request: pb.ExecuteRequest, context: Any) -> pb.ExecuteResponse:
        await self._guard(context, "execute")
        try:
            statements = [statement_from_pb(s) for s in request.statements]
            results = await self.db.execute(
                statements,
                transaction=request.transaction,
                client_key=request.idempotency_key or None,
            )
        except RaftDBError as exc:
            await self._fail(context, exc)
            raise AssertionError("unreachable") from exc
        return pb.ExecuteResponse(results=[_execute_result(r) for r in results])

    async def Query(self, request: pb.QueryRequest, context: Any) -> pb.QueryResponse:
        await self._guard(context, "query")
        level = _LEVELS.get(request.level, ReadLevel.WEAK)
        try:
            statement = statement_from_pb(request.statement)
            try:
                results = await self.db.query([statement], level=level)
            except NotLeader:
                results = await self.db.query([statement], level=ReadLevel.LINEARIZABLE)
        except RaftDBError as exc:
            await self._fail(context, exc)
            raise AssertionError("unreachable") from exc
        result = results[0]
        if result.error is not None:
            return pb.QueryResponse(error=result.error)
        columns, types, rows = _rows_to_pb(result.rows)
        return pb.QueryResponse(columns=columns, types=types, rows=rows)

    def generic_handler(self) -> Any:
        def unary(fn: Any, request_type: Any, response_type: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Execute": unary(self.Execute, pb.ExecuteRequest, pb.ExecuteResponse),
                "Query": unary(self.Query, pb.QueryRequest, pb.QueryResponse),
                "GetVersion": unary(self.GetVersion, pb.GetVersionRequest, pb.GetVersionResponse),
            },
        )

    async def GetVersion(
        self, request: pb.GetVersionRequest, context: Any
    ) -> pb.GetVersionResponse:
        await self._guard(context, "query")
        level = _LEVELS.get(request.level, ReadLevel.LINEARIZABLE)
        try:
            if not request.table:
                raise StatementError("GetVersion needs a table name")
            try:
                version = await self.db.table_version(request.table, level=level)
            except NotLeader:
                version = await self.db.table_version(request.table, level=ReadLevel.LINEARIZABLE)
        except RaftDBError as exc:
            await self._fail(context, exc)
            raise AssertionError("unreachable") from exc
        return pb.GetVersionResponse(version=version)


async def start_grpc_server(
    db: RaftDB, host: str, port: int, users: Users | None = None
) -> tuple[Any, int]:
    """Start ``grpc.aio`` serving ``DatabaseService``; returns (server, bound port)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((DatabaseService(db, users).generic_handler(),))
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(target)
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {target}")
    await server.start()
    return server, bound

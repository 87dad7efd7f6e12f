"""The rqlite-compatible HTTP API over a ``RaftDB`` (https://rqlite.io/docs/api/).

Routes:

- ``POST /db/execute``; ``GET|POST /db/query?level=none|weak|linearizable|strong``;
  ``POST /db/request`` (statements classified by preparing them under the authorizer: all reads
  → a query, else everything through the log);
- ``GET /status``, ``GET /readyz[?noleader]``, ``GET /nodes[?ver=2]``, ``GET /db/backup``;
- ``POST /_cis/compact`` (force a snapshot and log compaction), and, only when the server runs
  with fault injection enabled, ``POST /_cis/partition`` (``{"drop": ["host:port", …]}``).

Query flags follow rqlite: ``transaction``, ``redirect``, ``timings``, ``associative``,
``pretty``, ``noleader`` are true when present, with or without a value. ``queue`` and ``wait``
are refused with 400 (writes are already group-committed; a queued write would be acknowledged
before it is durable). Durations (``timeout``, ``freshness``, ``db_timeout``) use Go's syntax
(``500ms``, ``2s``). An ``Idempotency-Key`` header makes a write safe to retry: the cluster
remembers the key (10 minutes) with the results, and a retry gets those results back instead of
applying the statements again.

A follower forwards ``weak``/``linearizable``/``strong`` reads to the leader's HTTP address, or
answers 301 with ``Location`` there when ``redirect`` is set (pyrqlite follows only 301);
writes reach the leader through Raft itself (pysyncobj forwards the entry), so a follower
answers them directly. A forwarded request that reaches a node which is no longer the leader is
served there through a read barrier, never forwarded twice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import httpx

from cis import __version__
from cis.cluster.raftdb.auth import Users
from cis.cluster.raftdb.db import RaftDB
from cis.cluster.raftdb.errors import (
    NodeFailed,
    NoLeader,
    NotLeader,
    RaftDBError,
    ReadUnavailable,
    StatementError,
    UnknownOutcome,
)
from cis.cluster.raftdb.http_server import HttpRequest, HttpResponse
from cis.cluster.raftdb.statements import (
    ReadLevel,
    Rows,
    Statement,
    StatementResult,
    parse_statements,
)
from cis.log import get_logger

__all__ = ["RqliteApi", "parse_duration"]

_Route = Callable[[HttpRequest], Awaitable[HttpResponse]]

log = get_logger(__name__)

FORWARDED_HEADER: Final = "x-cis-forwarded"
_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_WAIT_S: Final = 600.0


def parse_duration(text: str, name: str) -> float:
    """A Go duration (``1.5s``, ``250ms``, ``1m30s``) in seconds."""
    pos = 0
    total = 0.0
    text = text.strip()
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if match is None:
            raise StatementError(f"{name}: bad duration {text!r} (e.g. 500ms, 2s)")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or total <= 0 or total > _MAX_WAIT_S:
        raise StatementError(f"{name}: duration must be between 0 and {_MAX_WAIT_S:g}s")
    return total


_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))
_PRETTY: Final = json.JSONEncoder(indent=4)
_LEVELS: Final = {
    None: ReadLevel.WEAK,
    "": ReadLevel.WEAK,
    "weak": ReadLevel.WEAK,
    "none": ReadLevel.NONE,
    "linearizable": ReadLevel.LINEARIZABLE,
    "strong": ReadLevel.STRONG,
}


def _json(obj: object, pretty: bool) -> bytes:
    return (_PRETTY if pretty else _COMPACT).encode(obj).encode()


def _value(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _rows_json(rows: Rows, associative: bool, out: dict[str, Any]) -> None:
    if associative:
        out["types"] = dict(zip(rows.columns, rows.types, strict=True))
        out["rows"] = [
            {c: _value(v) for c, v in zip(rows.columns, row, strict=True)} for row in rows.values
        ]
        return
    out["columns"] = list(rows.columns)
    out["types"] = list(rows.types)
    if rows.values:
        out["values"] = [[_value(v) for v in row] for row in rows.values]


def result_json(result: StatementResult, *, associative: bool, timings: bool) -> dict[str, Any]:
    """One rqlite result object."""
    out: dict[str, Any] = {}
    if result.error is not None:
        out["error"] = result.error
        return out
    if result.last_insert_id is not None:
        out["last_insert_id"] = result.last_insert_id
    if result.rows_affected is not None:
        out["rows_affected"] = result.rows_affected
    if result.rows is not None:
        _rows_json(result.rows, associative, out)
    if timings and result.time_s is not None:
        out["time"] = result.time_s
    return out


class RqliteApi:
    """The HTTP handler; ``__call__`` is what ``HttpServer`` runs per request."""

    def __init__(
        self,
        db: RaftDB,
        *,
        bind_addr: str,
        users: Users | None = None,
        fault_injection: bool = False,
        grpc_addr: str | None = None,
    ) -> None:
        self.db = db
        self.bind_addr = bind_addr
        self.users = users
        self.fault_injection = fault_injection
        self.grpc_addr = grpc_addr
        self._client: httpx.AsyncClient | None = None
        self._routes: dict[tuple[str, str], tuple[str, _Route]] = {
            ("POST", "/db/execute"): ("execute", self._execute),
            ("GET", "/db/query"): ("query", self._query),
            ("POST", "/db/query"): ("query", self._query),
            ("POST", "/db/request"): ("", self._request),
            ("GET", "/status"): ("status", self._status),
            ("GET", "/readyz"): ("ready", self._readyz),
            ("GET", "/nodes"): ("status", self._nodes),
            ("GET", "/db/backup"): ("backup", self._backup),
            ("POST", "/_cis/compact"): ("snapshot", self._compact),
            ("POST", "/_cis/partition"): ("all", self._partition),
        }

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    # ------------------------------------------------------------------ dispatch

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        route = self._routes.get((request.method, request.path))
        if route is None:
            if any(path == request.path for _, path in self._routes):
                return HttpResponse(405, b'{"error": "method not allowed"}')
            return HttpResponse(404, b'{"error": "not found"}')
        perm, handler = route
        if perm and self.users is not None and not self._allowed(request, perm):
            return self._unauthorized()
        query = request.query
        pretty = "pretty" in query
        try:
            if "queue" in query or "wait" in query:
                raise StatementError(
                    "queue and wait are not supported: writes are group-committed already;"
                    " drop the flag"
                )
            return await handler(request)
        except StatementError as exc:
            return self._error(400, str(exc), pretty)
        except NotLeader as exc:
            return self._error(503, f"not the leader: {exc}", pretty)
        except NoLeader as exc:
            return self._error(503, str(exc), pretty, outcome="not_applied")
        except UnknownOutcome as exc:
            return self._error(503, str(exc), pretty, outcome="unknown")
        except (ReadUnavailable, NodeFailed) as exc:
            return self._error(503, str(exc), pretty)
        except RaftDBError as exc:
            return self._error(500, str(exc), pretty)

    def _allowed(self, request: HttpRequest, perm: str) -> bool:
        return self.users is None or self.users.allowed(request.headers.get("authorization"), perm)

    @staticmethod
    def _unauthorized() -> HttpResponse:
        return HttpResponse(
            401,
            b'{"error": "unauthorized"}',
            headers=[("WWW-Authenticate", 'Basic realm="cis-sql"')],
        )

    @staticmethod
    def _error(status: int, message: str, pretty: bool, outcome: str | None = None) -> HttpResponse:
        """``{"error": …}``; writes that failed say ``outcome``: ``not_applied`` or ``unknown``."""
        body: dict[str, str] = {"error": message}
        if outcome is not None:
            body["outcome"] = outcome
        return HttpResponse(status, _json(body, pretty))

    # ------------------------------------------------------------------ parameters

    @staticmethod
    def _wait(request: HttpRequest) -> float | None:
        text = request.query.get("timeout")
        return parse_duration(text, "timeout") if text else None

    @staticmethod
    def _level(request: HttpRequest) -> ReadLevel:
        text = request.query.get("level")
        level = _LEVELS.get(text)
        return level if level is not None else ReadLevel.parse(text, ReadLevel.WEAK)

    @staticmethod
    def _statements(request: HttpRequest) -> list[Statement]:
        if request.method == "GET":
            q = request.query.get("q")
            if q is None:
                raise StatementError("GET /db/query needs q=SQL")
            return parse_statements([q])
        try:
            body = json.loads(request.body)
        except ValueError:
            raise StatementError("the request body is not valid JSON") from None
        return parse_statements(body)

    def _respond(
        self, request: HttpRequest, results: Sequence[StatementResult], started: float
    ) -> HttpResponse:
        query = request.query
        associative = "associative" in query
        timings = "timings" in query
        out: dict[str, Any] = {
            "results": [result_json(r, associative=associative, timings=timings) for r in results]
        }
        if timings:
            out["time"] = time.perf_counter() - started
        return HttpResponse(200, _json(out, "pretty" in query))

    # ------------------------------------------------------------------ leader handling

    def _leader_url(self, request: HttpRequest) -> str | None:
        leader = self.db.leader()
        if leader is None or not leader.http_addr or leader.node_id == self.db.node_id:
            return None
        query = f"?{request.raw_query}" if request.raw_query else ""
        return f"http://{leader.http_addr}{request.path}{query}"

    def _redirect(self, request: HttpRequest) -> HttpResponse | None:
        """301 to the leader when ``redirect`` is set and this node is not the leader."""
        if not request.flag("redirect") or self.db.is_leader():
            return None
        url = self._leader_url(request)
        if url is None:
            raise NoLeader("leader not found")
        return HttpResponse(301, b"", headers=[("Location", url)])

    async def _forward(self, request: HttpRequest) -> HttpResponse | None:
        """Proxy a read to the leader; None when this node should serve it itself."""
        if self.db.is_leader() or request.headers.get(FORWARDED_HEADER):
            return None
        url = self._leader_url(request)
        if url is None:
            return None
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        headers = {FORWARDED_HEADER: self.db.node_id}
        for name in ("authorization", "content-type"):
            if name in request.headers:
                headers[name] = request.headers[name]
        wait = (self._wait(request) or self.db.config.request_timeout_s) + 2.0
        try:
            reply = await self._client.request(
                request.method, url, content=request.body or None, headers=headers, timeout=wait
            )
        except httpx.HTTPError as exc:
            log.warning("raftdb_forward_failed", url=url.split("?", 1)[0], error=str(exc))
            return None  # serve it here through a barrier instead
        return HttpResponse(
            reply.status_code,
            reply.content,
            content_type=reply.headers.get("content-type", "application/json"),
        )

    # ------------------------------------------------------------------ /db/*

    async def _execute(self, request: HttpRequest) -> HttpResponse:
        redirect = self._redirect(request)
        if redirect is not None:
            return redirect
        started = time.perf_counter()
        statements = self._statements(request)
        if not statements:
            return self._respond(request, [], started)
        results = await self.db.execute(
            statements,
            transaction=request.flag("transaction"),
            timeout_s=self._wait(request),
            client_key=request.headers.get("idempotency-key"),
        )
        return self._respond(request, results, started)

    async def _query(self, request: HttpRequest) -> HttpResponse:
        query = request.query
        level = self._level(request)
        if level is not ReadLevel.NONE and not self.db.is_leader():
            redirect = self._redirect(request)
            if redirect is not None:
                return redirect
            forwarded = await self._forward(request)
            if forwarded is not None:
                return forwarded
            if level is ReadLevel.WEAK:
                level = ReadLevel.LINEARIZABLE  # no leader to forward to: stronger, never staler
        started = time.perf_counter()
        statements = self._statements(request)
        freshness_text = query.get("freshness")
        freshness = parse_duration(freshness_text, "freshness") if freshness_text else None
        db_timeout_text = query.get("db_timeout")
        wait = self._wait(request)
        await self.db.read_fence(level, timeout_s=wait, freshness=freshness)
        db_timeout = parse_duration(db_timeout_text, "db_timeout") if db_timeout_text else wait
        results = self.db.reader().query(statements, timeout_s=db_timeout)
        return self._respond(request, results, started)

    async def _request(self, request: HttpRequest) -> HttpResponse:
        statements = self._statements(request)
        writes = self.db.check_statements(statements)
        if any(writes):
            if not self._allowed(request, "execute"):
                return self._unauthorized()
            return await self._execute(request)
        if not self._allowed(request, "query"):
            return self._unauthorized()
        return await self._query(request)

    async def _backup(self, request: HttpRequest) -> HttpResponse:
        level = ReadLevel.parse(request.query.get("level"), ReadLevel.LINEARIZABLE)
        with tempfile.TemporaryDirectory(dir=self.db.data_dir, prefix=".backup-") as tmp:
            dest = Path(tmp) / "backup.db"
            applied = await self.db.backup(dest, level=level)
            body = await asyncio.to_thread(dest.read_bytes)
        return HttpResponse(
            200,
            body,
            content_type="application/octet-stream",
            headers=[("X-Cis-Applied-Index", str(applied))],
        )

    # ------------------------------------------------------------------ status

    async def _status(self, request: HttpRequest) -> HttpResponse:
        status = self.db.status()
        status["http"] = {
            "bind_addr": self.bind_addr,
            "auth": "enabled" if self.users is not None else "disabled",
        }
        if self.grpc_addr:
            status["grpc"] = {"bind_addr": self.grpc_addr}
        status["build"] = {"version": f"cis {__version__}"}
        return HttpResponse(200, _json(status, request.flag("pretty")))

    async def _readyz(self, request: HttpRequest) -> HttpResponse:
        ok, lines = self.db.ready()
        if request.flag("noleader"):
            lines = [line for line in lines if "leader" not in line]
            ok = all(line.startswith("[+]") for line in lines)
        return HttpResponse(
            200 if ok else 503, ("\n".join(lines) + "\n").encode(), content_type="text/plain"
        )

    async def _nodes(self, request: HttpRequest) -> HttpResponse:
        leader = self.db.leader()
        nodes = []
        for info in self.db.nodes():
            nodes.append(
                {
                    "id": info.node_id,
                    "api_addr": f"http://{info.http_addr}" if info.http_addr else "",
                    "addr": info.raft_addr,
                    "voter": True,
                    "reachable": self.db.is_reachable(info.raft_addr),
                    "leader": leader is not None and leader.raft_addr == info.raft_addr,
                    "time": 0.0,
                }
            )
        body: object
        if request.query.get("ver") == "2":
            body = {"nodes": nodes}
        else:
            body = {n["id"]: {k: v for k, v in n.items() if k != "id"} for n in nodes}
        return HttpResponse(200, _json(body, request.flag("pretty")))

    # ------------------------------------------------------------------ admin

    async def _compact(self, request: HttpRequest) -> HttpResponse:
        self.db.force_compaction()
        return HttpResponse(202, b'{"compaction": "requested"}')

    async def _partition(self, request: HttpRequest) -> HttpResponse:
        if not self.fault_injection:
            return HttpResponse(404, b'{"error": "not found"}')
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise StatementError("the request body is not valid JSON") from None
        drop = body.get("drop", []) if isinstance(body, dict) else None
        if not isinstance(drop, list) or not all(isinstance(a, str) for a in drop):
            raise StatementError('expected {"drop": ["host:port", …]}')
        self.db.set_partition(drop)
        return HttpResponse(200, _json({"dropped": sorted(drop)}, False))

"""The SQLite state machine: applies committed log entries, serves reads, makes snapshots.

One writer connection applies entries (only the applier thread uses it, except while a
snapshot is installed, when the applier is paused); every reading thread has its own read-only
connection (``Reader``), so reads never wait for the writer (WAL).

Invariants, for every entry at index ``i`` applied here:

- **Idempotent.** ``_cis_meta.applied_index`` is updated in the same SQLite transaction as the
  entry's effects, and an entry at or below it is skipped: a restarted node re-reads its journal
  from the last snapshot and must not apply anything twice (an ``UPDATE v=v+1`` would double).
- **At most once per request.** Each entry carries a batch id, stored in ``_cis_requests`` in
  the same transaction; a batch proposed again (after a leader change, whose outcome was
  unknown) is recognised and skipped. A request may also carry a client key (rqlite clients
  retry POSTs blindly); its results are stored with it and returned to the retry.
- **One transaction per entry, one SAVEPOINT per request.** Requests grouped into one entry stay
  independent: a ``transaction`` request rolls back to its savepoint on the first error; without
  it, the statements that succeeded stay (rqlite's semantics).
- **Deterministic.** Every replica computes the same database and the same results: the
  authorizer and the overridden time functions refuse what could differ (``authorizer.py``),
  SQL errors are results, and a statement that aborts the whole transaction (``INSERT OR
  ROLLBACK``, ``RAISE(ROLLBACK)``) makes the entry start over with that statement recorded as
  failed, so the outcome does not depend on the order SQLite undid things.
- **Never skipped.** A failure that is not the SQL's fault (disk full, I/O error, corruption)
  raises ``ApplyHalted``; the node stops and the entry is applied again after a restart.
- Table versions: ``_cis_versions.version`` of table T is the index of the last applied entry
  whose statements wrote T (INSERT/UPDATE/DELETE reported by the authorizer, triggers
  included), written in the same transaction: equal on every replica and never decreasing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Final

from cis.cluster.raftdb.authorizer import (
    Authorizer,
    Facts,
    FunctionGuard,
    Mode,
    install_deterministic_functions,
)
from cis.cluster.raftdb.errors import RaftDBError, RefusedStatement, StatementError
from cis.cluster.raftdb.journal import fsync_dir
from cis.cluster.raftdb.sqltext import first_keyword, null_parameters, string_literals
from cis.cluster.raftdb.statements import (
    Rows,
    SqlValue,
    Statement,
    StatementResult,
    WireStatement,
    statements_from_wire,
    to_wire,
)
from cis.log import get_logger
from cis.storage.sqlite import Migration, Synchronous, connect, migrate

__all__ = [
    "ApplyHalted",
    "Batch",
    "BatchResult",
    "Classification",
    "Outcome",
    "Reader",
    "Request",
    "SharedCaches",
    "SnapshotHeader",
    "StateMachine",
    "read_snapshot_header",
]

log = get_logger(__name__)

SCHEMA_KIND: Final = "raftdb-state"
MIGRATIONS: Final = (
    Migration(
        1,
        "service tables",
        (
            "CREATE TABLE _cis_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
            "INSERT INTO _cis_meta (key, value) VALUES ('applied_index', 0)",
            "INSERT INTO _cis_meta (key, value) VALUES ('user_batches', 0)",
            "CREATE TABLE _cis_requests (id TEXT PRIMARY KEY, ts INTEGER NOT NULL, result TEXT)"
            " WITHOUT ROWID",
            "CREATE INDEX _cis_requests_ts ON _cis_requests (ts)",
            "CREATE TABLE _cis_versions (tbl TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            " WITHOUT ROWID",
            "CREATE TABLE _cis_nodes (node_id TEXT PRIMARY KEY, raft_addr TEXT NOT NULL UNIQUE,"
            " http_addr TEXT, grpc_addr TEXT, sqlite_version TEXT, since_index INTEGER NOT NULL)",
            # Written and emptied at the start of every entry, so that last_insert_rowid()
            # (and the last_insert_id results) start from 0 on every replica.
            "CREATE TABLE _cis_rowid (id INTEGER PRIMARY KEY)",
        ),
    ),
)

REQUEST_RETENTION_MS: Final = 600_000
"""How long batch ids and client keys are remembered (pyrqlite retries within seconds)."""
_GC_EVERY: Final = 1024
_FACTS_CACHE: Final = 1024  # must stay above sqlite3's statement cache (128 by default)

# Errors that are not the statement's fault: the node must stop, not record a result.
# https://www.sqlite.org/rescode.html (primary codes)
_ENVIRONMENT_CODES: Final = frozenset(
    {
        5,  # SQLITE_BUSY
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY
        9,  # SQLITE_INTERRUPT
        10,  # SQLITE_IOERR
        11,  # SQLITE_CORRUPT
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
        22,  # SQLITE_NOLFS
        26,  # SQLITE_NOTADB
    }
)

SNAPSHOT_MAGIC: Final = b"CIS-RAFTDB-SNAP1"
_U32: Final = struct.Struct("<I")


class ApplyHalted(RaftDBError):
    """Applying an entry failed for a reason outside the SQL (disk, I/O): stop the node."""


class Outcome(Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this batch id was applied before: nothing done
    SKIPPED = "skipped"  # at or below the applied index (replay after a restart)


@dataclass(frozen=True, slots=True)
class Request:
    """One client request inside a log entry."""

    statements: tuple[WireStatement, ...]
    transaction: bool = False
    client_key: str | None = None

    @classmethod
    def of(
        cls, statements: Sequence[Statement], transaction: bool = False, key: str | None = None
    ) -> Request:
        return cls(to_wire(statements), transaction, key)

    def to_wire(self) -> tuple[int, tuple[WireStatement, ...], str | None]:
        return (1 if self.transaction else 0, self.statements, self.client_key)

    @classmethod
    def from_wire(cls, value: object) -> Request:
        if not isinstance(value, tuple) or len(value) != 3:
            raise StatementError("malformed request in the log")
        flags, statements, key = value
        if not isinstance(flags, int) or not (key is None or isinstance(key, str)):
            raise StatementError("malformed request in the log")
        return cls(statements_from_wire(statements), bool(flags & 1), key)


@dataclass(frozen=True, slots=True)
class Batch:
    """The payload of one log entry: requests grouped by the proposer (group commit)."""

    batch_id: str
    ts_ms: int
    requests: tuple[Request, ...]

    def to_wire(self) -> tuple[str, int, tuple[object, ...]]:
        return (self.batch_id, self.ts_ms, tuple(r.to_wire() for r in self.requests))

    @classmethod
    def from_wire(cls, value: object) -> Batch:
        if not isinstance(value, tuple) or len(value) != 3:
            raise StatementError("malformed batch in the log")
        batch_id, ts_ms, requests = value
        if not isinstance(batch_id, str) or not isinstance(ts_ms, int):
            raise StatementError("malformed batch in the log")
        if not isinstance(requests, tuple):
            raise StatementError("malformed batch in the log")
        return cls(batch_id, ts_ms, tuple(Request.from_wire(r) for r in requests))


@dataclass(frozen=True, slots=True)
class BatchResult:
    outcome: Outcome
    results: tuple[tuple[StatementResult, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Classification:
    """What the boundary learnt about a statement before it enters the log."""

    writes: bool
    refused: str | None = None


class _TransactionLost(Exception):
    def __init__(self, request: int, statement: int, message: str) -> None:
        super().__init__(message)
        self.request = request
        self.statement = statement
        self.message = message


class SharedCaches:
    """Per-process caches keyed by SQL text, invalidated when the schema changes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.schema_generation = 0
        self.types: dict[str, tuple[str, ...] | None] = {}
        self.classes: dict[str, Classification] = {}

    def schema_changed(self) -> None:
        with self.lock:
            self.schema_generation += 1
            self.types = {}
            self.classes = {}


def _is_environment_error(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _ENVIRONMENT_CODES
    return isinstance(exc, sqlite3.InternalError)


def _error_text(exc: sqlite3.Error, facts: Facts | None, guard: FunctionGuard | None) -> str:
    if guard is not None and guard.reason is not None:
        return guard.reason
    message = str(exc)
    if facts is not None and facts.denied is not None and "not authorized" in message:
        return f"not authorized: {facts.denied}"
    return message


def value_type(value: SqlValue) -> str:
    """rqlite's type name for a value with no declared column type."""
    if value is None:
        return "null"
    if isinstance(value, int):  # bool is an int
        return "integer"
    if isinstance(value, float):
        return "real"
    if isinstance(value, bytes):
        return "blob"
    return "text"


class _Collector:
    """Runs user statements under an authorizer and remembers their facts per SQL text.

    sqlite3 caches prepared statements (an LRU of 128 texts) and the authorizer
    runs only on (re-)prepare. Every user statement goes through ``run``, which keeps an LRU of
    facts over the same sequence of texts and at least as large, so a text whose prepared
    statement is still cached always has its facts here.
    """

    def __init__(self, conn: sqlite3.Connection, auth: Authorizer) -> None:
        self.conn = conn
        self.auth = auth
        self.cache: OrderedDict[str, Facts] = OrderedDict()

    def facts_for(self, sql: str, collected: Facts) -> Facts:
        if collected.prepared:
            self.cache[sql] = collected
            self.cache.move_to_end(sql)
            if len(self.cache) > _FACTS_CACHE:
                self.cache.popitem(last=False)
            return collected
        cached = self.cache.get(sql)
        if cached is not None:
            self.cache.move_to_end(sql)
            return cached
        return collected


class StateMachine:
    """The replicated database of one node (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        caches: SharedCaches | None = None,
        max_page_count: int | None = None,
    ) -> None:
        self.path = path
        self.caches = caches or SharedCaches()
        self._lock = threading.RLock()  # held while applying or installing
        self.sqlite_version = sqlite3.sqlite_version
        self._auth = Authorizer(Mode.APPLY)
        self._guard = FunctionGuard()
        self._pure = sqlite3.connect(":memory:", check_same_thread=False)
        self._conn = self._open_writer(max_page_count)
        self._collector = _Collector(self._conn, self._auth)
        self.applied_index = 0
        self.user_batches = 0
        self.cluster_id: str | None = None
        self.cluster_sqlite_version: str | None = None
        self._load_meta()

    def _open_writer(self, max_page_count: int | None) -> sqlite3.Connection:
        # synchronous=NORMAL: the Raft journal, not this file, is what must survive a power
        # loss; a commit lost here is re-applied from the journal (or the snapshot) on restart.
        conn = connect(self.path, synchronous=Synchronous.NORMAL, cache_size_kib=8192)
        migrate(conn, SCHEMA_KIND, MIGRATIONS, self.path)
        if max_page_count is not None:
            # Fault injection: SQLite reports SQLITE_FULL once the file would outgrow this,
            # exactly as it does when the disk is full.
            conn.execute(f"PRAGMA max_page_count = {int(max_page_count)}")
        install_deterministic_functions(conn, self._pure, self._guard)
        conn.set_authorizer(self._auth)
        return conn

    def _load_meta(self) -> None:
        rows = dict(self._conn.execute("SELECT key, value FROM _cis_meta").fetchall())
        self.applied_index = int(rows.get("applied_index", 0))
        self.user_batches = int(rows.get("user_batches", 0))
        cid = rows.get("cluster_id")
        self.cluster_id = str(cid) if cid is not None else None
        ver = rows.get("sqlite_version")
        self.cluster_sqlite_version = str(ver) if ver is not None else None

    @property
    def has_data(self) -> bool:
        """True once any client request or membership change was applied here."""
        return self.user_batches > 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._pure.close()

    # ------------------------------------------------------------------ applying

    def apply_batch(
        self,
        index: int,
        batch: Batch,
        before_commit: Callable[[int], None] | None = None,
        *,
        results: bool = True,
    ) -> BatchResult:
        """Apply one entry; see the module docstring for the guarantees.

        ``results=False`` (a replica that did not propose the entry, so nobody waits for its
        results here) lets a ``transaction`` request whose statements share one SQL text run as
        one ``executemany``: the same statements in the same order in the same transaction,
        hence the same database, several times faster. Results stored for a client key are
        always computed statement by statement.
        """
        with self._lock:
            if index <= self.applied_index:
                return BatchResult(Outcome.SKIPPED)
            overrides: dict[tuple[int, int], str] = {}
            while True:
                try:
                    return self._apply_once(index, batch, overrides, before_commit, results)
                except _TransactionLost as lost:
                    overrides[(lost.request, lost.statement)] = lost.message

    def _begin(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise ApplyHalted(f"cannot begin a transaction: {exc}") from exc

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise ApplyHalted(f"cannot roll back: {exc}") from exc

    def _apply_once(
        self,
        index: int,
        batch: Batch,
        overrides: dict[tuple[int, int], str],
        before_commit: Callable[[int], None] | None,
        want_results: bool = True,
    ) -> BatchResult:
        conn = self._conn
        self._begin()
        try:
            row = conn.execute("SELECT 1 FROM _cis_requests WHERE id = ?", (batch.batch_id,))
            if row.fetchone() is not None:
                self._finish(index, batch.ts_ms, set(), user=False, before_commit=before_commit)
                return BatchResult(Outcome.DUPLICATE)
            conn.execute("INSERT INTO _cis_rowid (id) VALUES (0)")
            conn.execute("DELETE FROM _cis_rowid")
            all_results: list[tuple[StatementResult, ...]] = []
            written: set[str] = set()
            schema_changed = False
            for ri, request in enumerate(batch.requests):
                if not want_results and not overrides and _bulk_able(request):
                    results, tables, ddl = self._apply_bulk(ri, request)
                else:
                    results, tables, ddl = self._apply_request(ri, request, batch.ts_ms, overrides)
                all_results.append(results)
                written |= tables
                schema_changed = schema_changed or ddl
            conn.execute(
                "INSERT INTO _cis_requests (id, ts, result) VALUES (?, ?, NULL)",
                (batch.batch_id, batch.ts_ms),
            )
            self._finish(
                index, batch.ts_ms, written, user=bool(batch.requests), before_commit=before_commit
            )
        except _TransactionLost:
            raise
        except ApplyHalted:
            self._rollback()
            raise
        except sqlite3.Error as exc:
            self._rollback()
            raise ApplyHalted(f"applying entry {index} failed: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        if schema_changed:
            self.caches.schema_changed()
        return BatchResult(Outcome.APPLIED, tuple(all_results))

    def _apply_request(
        self,
        ri: int,
        request: Request,
        ts_ms: int,
        overrides: dict[tuple[int, int], str],
    ) -> tuple[tuple[StatementResult, ...], set[str], bool]:
        conn = self._conn
        if request.client_key is not None:
            row = conn.execute(
                "SELECT result FROM _cis_requests WHERE id = ?", (request.client_key,)
            ).fetchone()
            if row is not None and row[0] is not None:
                stored = json.loads(row[0])
                return tuple(StatementResult.from_json(r) for r in stored), set(), False
        # A savepoint only where a rollback may be needed: a request without ``transaction``
        # keeps the statements that succeeded, and SQLite undoes a failing statement by itself.
        savepoint = request.transaction and len(request.statements) > 1
        if savepoint:
            conn.execute("SAVEPOINT req")
        results: list[StatementResult] = []
        tables: set[str] = set()
        ddl = False
        failed = False
        cur = conn.cursor()
        for si, stmt in enumerate(request.statements):
            override = overrides.get((ri, si)) if overrides else None
            if override is not None:
                result, facts = StatementResult(error=override), None
            else:
                result, facts = self._execute(stmt, cur)
                if result.error is not None and not conn.in_transaction:
                    # The statement aborted the whole transaction (OR ROLLBACK, RAISE(ROLLBACK)):
                    # start the entry over with this statement recorded as failed.
                    raise _TransactionLost(ri, si, result.error)
            results.append(result)
            if result.error is not None:
                failed = True
                if request.transaction:
                    break
                continue
            if facts is not None:
                if facts.tables_written:
                    tables |= facts.tables_written
                ddl = ddl or facts.ddl
        if request.transaction and failed:
            if savepoint:
                conn.execute("ROLLBACK TO req")
            tables = set()
            ddl = False
        if savepoint:
            conn.execute("RELEASE req")
        if request.client_key is not None:
            stored_json = json.dumps([r.to_json() for r in results], separators=(",", ":"))
            conn.execute(
                "INSERT OR REPLACE INTO _cis_requests (id, ts, result) VALUES (?, ?, ?)",
                (request.client_key, ts_ms, stored_json),
            )
        return tuple(results), tables, ddl

    def _apply_bulk(
        self, ri: int, request: Request
    ) -> tuple[tuple[StatementResult, ...], set[str], bool]:
        """A ``transaction`` request of one repeated statement, without results (see
        ``apply_batch``): all of it under one SAVEPOINT, rolled back on the first error."""
        conn = self._conn
        sql = request.statements[0][0]
        conn.execute("SAVEPOINT req")
        facts = self._auth.begin()
        self._guard.reason = None
        message: str | None = None
        try:
            conn.executemany(sql, [params for _, params in request.statements])
        except sqlite3.Error as exc:
            if _is_environment_error(exc):
                raise ApplyHalted(f"SQLite failed: {exc}") from exc
            message = _error_text(exc, facts, self._guard)
        except OverflowError:
            message = "integer parameter out of the 64-bit range"
        finally:
            self._auth.end()
        if message is not None:
            if not conn.in_transaction:
                raise _TransactionLost(ri, 0, message)
            conn.execute("ROLLBACK TO req")
            conn.execute("RELEASE req")
            return (StatementResult(error=message),), set(), False
        conn.execute("RELEASE req")
        facts = self._collector.facts_for(sql, facts)
        return (), set(facts.tables_written), facts.ddl

    def _execute(
        self, stmt: WireStatement, cur: sqlite3.Cursor
    ) -> tuple[StatementResult, Facts | None]:
        """Run one user statement on the writer; SQL errors become results."""
        facts = self._auth.begin()
        self._guard.reason = None
        try:
            cur.execute(stmt[0], stmt[1])
            rows = cur.fetchall() if cur.description is not None else None
        except sqlite3.Error as exc:
            if _is_environment_error(exc):
                raise ApplyHalted(f"SQLite failed: {exc}") from exc
            return StatementResult(error=_error_text(exc, facts, self._guard)), None
        except OverflowError:
            return StatementResult(error="integer parameter out of the 64-bit range"), None
        finally:
            self._auth.end()
        facts = self._collector.facts_for(stmt[0], facts)
        # As rqlite: counts that are zero are left out.
        affected = cur.rowcount if cur.rowcount > 0 else None
        lastrowid = cur.lastrowid or None
        if rows is not None and cur.description is not None:
            columns = tuple(str(d[0]) for d in cur.description)
            types = tuple(value_type(v) for v in rows[0]) if rows else ("",) * len(columns)
            return (
                StatementResult(
                    last_insert_id=lastrowid,
                    rows_affected=affected,
                    rows=Rows(columns, types, tuple(tuple(r) for r in rows)),
                ),
                facts,
            )
        return StatementResult(last_insert_id=lastrowid, rows_affected=affected), facts

    def _finish(
        self,
        index: int,
        ts_ms: int,
        written: set[str],
        *,
        user: bool,
        before_commit: Callable[[int], None] | None,
    ) -> None:
        conn = self._conn
        for table in sorted(written):
            conn.execute(
                "INSERT INTO _cis_versions (tbl, version) VALUES (?, ?)"
                " ON CONFLICT (tbl) DO UPDATE SET version = excluded.version",
                (table, index),
            )
        conn.execute("UPDATE _cis_meta SET value = ? WHERE key = 'applied_index'", (index,))
        if user:
            conn.execute(
                "UPDATE _cis_meta SET value = value + 1 WHERE key = 'user_batches'",
            )
        if index % _GC_EVERY == 0:
            conn.execute("DELETE FROM _cis_requests WHERE ts < ?", (ts_ms - REQUEST_RETENTION_MS,))
        if before_commit is not None:
            before_commit(index)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ApplyHalted(f"cannot commit entry {index}: {exc}") from exc
        self.applied_index = index
        if user:
            self.user_batches += 1

    def apply_meta(
        self,
        index: int,
        op: str,
        args: tuple[object, ...],
        before_commit: Callable[[int], None] | None = None,
    ) -> str | None:
        """Apply a service entry (cluster init, node registry); returns a refusal, if any."""
        with self._lock:
            if index <= self.applied_index:
                return None
            refusal: str | None = None
            self._begin()
            try:
                conn = self._conn
                user = False
                if op == "init" and len(args) == 2:
                    cluster_id, version = (str(a) for a in args)
                    if self.cluster_id is None:
                        conn.execute(
                            "INSERT OR REPLACE INTO _cis_meta (key, value) VALUES"
                            " ('cluster_id', ?), ('sqlite_version', ?)",
                            (cluster_id, version),
                        )
                elif op == "register" and len(args) == 5:
                    node_id, raft, http, grpc_addr, node_version = (
                        None if a is None else str(a) for a in args
                    )
                    conn.execute(
                        "DELETE FROM _cis_nodes WHERE raft_addr = ? AND node_id != ?",
                        (raft, node_id),
                    )
                    conn.execute(
                        "INSERT INTO _cis_nodes (node_id, raft_addr, http_addr, grpc_addr,"
                        " sqlite_version, since_index) VALUES (?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (node_id) DO UPDATE SET raft_addr = excluded.raft_addr,"
                        " http_addr = excluded.http_addr, grpc_addr = excluded.grpc_addr,"
                        " sqlite_version = excluded.sqlite_version",
                        (node_id, raft, http, grpc_addr, node_version, index),
                    )
                elif op == "forget" and len(args) == 1:
                    conn.execute("DELETE FROM _cis_nodes WHERE node_id = ?", (str(args[0]),))
                    user = True
                elif op == "membership":
                    user = True
                else:
                    refusal = f"unknown service entry {op!r}"
                conn.execute("UPDATE _cis_meta SET value = ? WHERE key = 'applied_index'", (index,))
                if user:
                    conn.execute(
                        "UPDATE _cis_meta SET value = value + 1 WHERE key = 'user_batches'"
                    )
                if before_commit is not None:
                    before_commit(index)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise ApplyHalted(f"applying entry {index} failed: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
            self.applied_index = index
            if user:
                self.user_batches += 1
            self._load_meta()
            return refusal

    # ------------------------------------------------------------------ snapshots

    def write_snapshot(self, dest: Path, raft_data: dict[str, object]) -> int:
        """Write a snapshot file: a header (the Raft data, applied index) and the database.

        The database is copied through SQLite's backup API from a connection of its own, in
        one step: a consistent copy as of the moment it started, while the applier goes on.
        Returns the applied index in the copy. ``dest`` is fsynced.
        """
        tmp_db = dest.with_name(dest.name + ".db")
        _remove(tmp_db)
        src = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(tmp_db)
            try:
                src.backup(dst)
                row = dst.execute(
                    "SELECT value FROM _cis_meta WHERE key = 'applied_index'"
                ).fetchone()
                applied = int(row[0])
            finally:
                dst.close()
        finally:
            src.close()
        try:
            header = dict(raft_data)
            header["applied_index"] = applied
            header["sqlite_version"] = self.sqlite_version
            header_bytes = json.dumps(header, separators=(",", ":")).encode()
            with open(dest, "wb") as out, open(tmp_db, "rb") as body:
                out.write(SNAPSHOT_MAGIC)
                out.write(_U32.pack(len(header_bytes)))
                out.write(header_bytes)
                out.write(_U32.pack(zlib.crc32(header_bytes)))
                crc = 0
                while chunk := body.read(1 << 20):
                    crc = zlib.crc32(chunk, crc)
                    out.write(chunk)
                out.write(_U32.pack(crc))
                out.flush()
                os.fsync(out.fileno())
        finally:
            _remove(tmp_db)
        return applied

    def install_snapshot(self, path: Path) -> bool:
        """Replace the live database with the snapshot's if the snapshot is further ahead.

        Returns True if it replaced it. The copy goes through the backup API into the live
        writer connection, which SQLite does as one write transaction: a crash leaves the old
        database or the new one.
        """
        header = read_snapshot_header(path)
        with self._lock:
            if header.applied_index <= self.applied_index:
                return False
            tmp_db = path.with_name(path.name + ".install.db")
            _remove(tmp_db)
            try:
                with open(path, "rb") as f, open(tmp_db, "wb") as out:
                    f.seek(header.body_offset)
                    remaining = header.body_length
                    while remaining > 0:
                        chunk = f.read(min(remaining, 1 << 20))
                        if not chunk:
                            raise ApplyHalted("snapshot body is truncated")
                        out.write(chunk)
                        remaining -= len(chunk)
                src = sqlite3.connect(tmp_db)
                try:
                    self._conn.set_authorizer(None)
                    src.backup(self._conn)
                finally:
                    src.close()
                    self._conn.set_authorizer(self._auth)
            finally:
                _remove(tmp_db)
            self._load_meta()
            self._collector.cache.clear()
        self.caches.schema_changed()
        log.info(
            "raftdb_snapshot_installed",
            applied_index=self.applied_index,
            raft_index=header.raft_index,
        )
        return True

    def backup(self, dest: Path) -> int:
        """A consistent copy of the database at ``dest`` (fsynced); returns its applied index."""
        tmp = dest.with_name(f".{dest.name}.partial")
        _remove(tmp)
        src = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
                row = dst.execute(
                    "SELECT value FROM _cis_meta WHERE key = 'applied_index'"
                ).fetchone()
                applied = int(row[0])
                dst.execute("PRAGMA journal_mode = DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        return applied


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    raft_index: int
    applied_index: int
    data: dict[str, object]
    body_offset: int
    body_length: int


def read_snapshot_header(path: Path, *, verify: bool = True) -> SnapshotHeader:
    """Parse a snapshot file's header and (``verify``) check both CRCs."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if f.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
                raise ApplyHalted(f"{path} is not a snapshot")
            (length,) = _U32.unpack(_read_exact(f, 4))
            header_bytes = _read_exact(f, length)
            (crc,) = _U32.unpack(_read_exact(f, 4))
            if zlib.crc32(header_bytes) != crc:
                raise ApplyHalted(f"{path}: snapshot header checksum mismatch")
            body_offset = f.tell()
            body_length = size - body_offset - 4
            if body_length < 0:
                raise ApplyHalted(f"{path}: snapshot is truncated")
            if verify:
                body_crc = 0
                remaining = body_length
                while remaining > 0:
                    chunk = f.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise ApplyHalted(f"{path}: snapshot is truncated")
                    body_crc = zlib.crc32(chunk, body_crc)
                    remaining -= len(chunk)
                (expected,) = _U32.unpack(_read_exact(f, 4))
                if body_crc != expected:
                    raise ApplyHalted(f"{path}: snapshot body checksum mismatch")
    except OSError as exc:
        raise ApplyHalted(f"cannot read snapshot {path}: {exc}") from exc
    data = json.loads(header_bytes)
    if not isinstance(data, dict):
        raise ApplyHalted(f"{path}: bad snapshot header")
    raft_index = data.get("raft_index")
    applied = data.get("applied_index")
    if not isinstance(raft_index, int) or not isinstance(applied, int):
        raise ApplyHalted(f"{path}: bad snapshot header")
    return SnapshotHeader(raft_index, applied, data, body_offset, body_length)


def _bulk_able(request: Request) -> bool:
    """A ``transaction`` request, without a client key, of one SQL text repeated."""
    statements = request.statements
    if not request.transaction or request.client_key is not None or len(statements) < 2:
        return False
    sql = statements[0][0]
    kind = type(statements[0][1])
    return all(s[0] == sql and type(s[1]) is kind for s in statements)


def _refuse_time_literals(stmt: Statement) -> None:
    texts = [t.strip().lower() for t in string_literals(stmt.sql)]
    values: list[SqlValue] = (
        [v for _, v in stmt.named] if stmt.named is not None else list(stmt.params)
    )
    texts += [v.strip().lower() for v in values if isinstance(v, str)]
    for text in texts:
        if text == "now":
            raise RefusedStatement("'now' is not deterministic: pass the time as a value")
        if text in ("localtime", "utc"):
            raise RefusedStatement(f"the {text!r} modifier depends on the host's time zone")


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ApplyHalted("snapshot is truncated")
    return data


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


class Reader:
    """Read-only access for one thread: queries, the boundary check, table versions."""

    def __init__(self, path: Path, caches: SharedCaches) -> None:
        self.path = path
        self.caches = caches
        uri = f"{path.resolve().as_uri()}?mode=ro"
        self._conn = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        self._conn.execute("PRAGMA busy_timeout = 5000")
        self._conn.execute("PRAGMA query_only = 1")
        self._read_auth = Authorizer(Mode.READ)
        self._check_auth = Authorizer(Mode.CHECK)
        self._conn.set_authorizer(self._read_auth)
        self._collector = _Collector(self._conn, self._read_auth)
        # The boundary check prepares statements under the write policy on a second
        # connection, under EXPLAIN, so nothing runs.
        self._check = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        self._check.execute("PRAGMA query_only = 1")
        self._check.set_authorizer(self._check_auth)
        self._deadline: float | None = None
        self._conn.set_progress_handler(self._progress, 10_000)

    def close(self) -> None:
        self._conn.close()
        self._check.close()

    def _progress(self) -> int:
        if self._deadline is not None and time.monotonic() > self._deadline:
            return 1
        return 0

    # ------------------------------------------------------------------ queries

    def query(
        self, statements: Sequence[Statement], *, timeout_s: float | None = None
    ) -> list[StatementResult]:
        """Run read statements; SQL errors (a write, a syntax error) are results."""
        out: list[StatementResult] = []
        self._deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        conn = self._conn
        try:
            if len(statements) == 1:
                out.append(self._query_one(statements[0]))
            else:
                conn.execute("BEGIN")  # one read snapshot for all statements of the request
                try:
                    for stmt in statements:
                        out.append(self._query_one(stmt))
                finally:
                    conn.execute("COMMIT")
        finally:
            self._deadline = None
        return out

    def _query_one(self, stmt: Statement) -> StatementResult:
        started = time.perf_counter()
        auth = self._read_auth
        auth.facts.denied = None  # reads only need the reason of a refusal
        auth.user = True
        cur = self._conn.cursor()
        try:
            cur.execute(stmt.sql, stmt.params if stmt.named is None else dict(stmt.named))
            rows = cur.fetchall()
        except sqlite3.Error as exc:
            if str(exc) == "interrupted":
                return StatementResult(error="query timed out (db_timeout)")
            return StatementResult(error=_error_text(exc, auth.facts, None))
        finally:
            auth.user = False
        elapsed = time.perf_counter() - started
        if cur.description is None:
            return StatementResult(rows=Rows((), (), ()), time_s=elapsed)
        columns = tuple(str(d[0]) for d in cur.description)
        declared = self.declared_types(stmt.sql, len(columns))
        first = rows[0] if rows else None
        types = tuple(
            declared[i]
            if declared is not None and declared[i]
            else (value_type(first[i]) if first is not None else "")
            for i in range(len(columns))
        )
        return StatementResult(
            rows=Rows(columns, types, tuple(tuple(r) for r in rows)), time_s=elapsed
        )

    def declared_types(self, sql: str, count: int) -> tuple[str, ...] | None:
        """The lower-cased declared types of a SELECT's result columns ('' where none).

        Python's sqlite3 does not expose ``sqlite3_column_decltype``; a temporary view over
        the statement (parameters replaced by NULL) has the same column types, which
        ``PRAGMA table_info`` reports. Cached per SQL text until the schema changes.
        """
        caches = self.caches
        generation = caches.schema_generation
        if sql in caches.types:
            cached = caches.types[sql]
            return cached if cached is None or len(cached) == count else None
        types: tuple[str, ...] | None = None
        conn = self._conn
        try:
            conn.execute("PRAGMA query_only = 0")
            conn.execute(f"CREATE TEMP VIEW _cis_types AS {null_parameters(sql)}")
            try:
                info = conn.execute("PRAGMA temp.table_info(_cis_types)").fetchall()
                types = tuple(str(row[2] or "").lower() for row in info)
            finally:
                conn.execute("DROP VIEW temp._cis_types")
        except sqlite3.Error:
            types = None
        finally:
            conn.execute("PRAGMA query_only = 1")
        with caches.lock:
            if caches.schema_generation == generation:
                caches.types[sql] = types
        if types is not None and len(types) != count:
            return None
        return types

    # ------------------------------------------------------------------ the boundary check

    def classify(self, stmt: Statement) -> Classification:
        """Prepare ``stmt`` under the write policy (without running it) and classify it.

        ``refused`` is set for what must never enter the log; a statement that cannot be
        prepared here (a table created earlier in the same request) is classified as a write
        and left to the apply, where the same policy decides deterministically. Raises
        ``RefusedStatement`` when a date/time function is handed ``'now'`` (or a host-dependent
        modifier) as a literal or a parameter.
        """
        caches = self.caches
        cached = caches.classes.get(stmt.sql)
        if cached is not None:
            return cached
        keyword = first_keyword(stmt.sql)
        if keyword == "VACUUM":
            return Classification(writes=True, refused="VACUUM is not allowed")
        if keyword == "EXPLAIN":
            return Classification(writes=False)
        generation = caches.schema_generation
        facts = self._check_auth.begin()
        try:
            self._check.execute(f"EXPLAIN {stmt.sql}", stmt.bindings()).fetchall()
            result = Classification(writes=facts.writes)
        except sqlite3.ProgrammingError as exc:
            raise StatementError(str(exc)) from exc
        except sqlite3.Error as exc:
            if facts.denied is not None:
                result = Classification(writes=True, refused=facts.denied)
            else:
                # Not preparable here (no such table yet …): it goes through the log, where
                # the apply decides with the same policy.
                log.debug("raftdb_check_unprepared", error=str(exc))
                result = Classification(writes=True)
        finally:
            self._check_auth.end()
        if facts.date_functions:
            _refuse_time_literals(stmt)
            return result  # not cached: the next call may pass 'now' as a parameter
        with caches.lock:
            if caches.schema_generation == generation:
                caches.classes[stmt.sql] = result
        return result

    def table_version(self, table: str) -> int:
        self._read_auth.user = False
        row = self._conn.execute(
            "SELECT version FROM _cis_versions WHERE tbl = ?", (table,)
        ).fetchone()
        return int(row[0]) if row else 0

    def nodes(self) -> list[tuple[str, str, str | None, str | None, str | None]]:
        self._read_auth.user = False
        rows = self._conn.execute(
            "SELECT node_id, raft_addr, http_addr, grpc_addr, sqlite_version FROM _cis_nodes"
            " ORDER BY node_id"
        ).fetchall()
        return [(str(r[0]), str(r[1]), r[2], r[3], r[4]) for r in rows]

    def meta(self) -> dict[str, object]:
        self._read_auth.user = False
        return dict(self._conn.execute("SELECT key, value FROM _cis_meta").fetchall())

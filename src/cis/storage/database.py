"""``Database``: one SQLite file, one writer thread, a small pool of readers.

Invariants (the reasons are in docs/storage.md):

1. Exactly one connection writes to a file, and it lives on the file's writer thread. Callers
   hand it *interactions*: named functions ``fn(conn, *args)`` run through ``run_interaction``
   (or ``submit`` from any thread), so logs name every transaction.
2. Group commit. The writer takes every interaction queued at the moment (up to
   ``MAX_BATCH``), opens one ``BEGIN IMMEDIATE`` transaction, runs each interaction inside its
   own ``SAVEPOINT`` and commits once. An interaction that raises is rolled back to its
   savepoint and only its caller sees the error; the others commit. (A group of one needs no
   savepoint: its failure rolls the whole transaction back.)
3. Nothing is acknowledged before its COMMIT returned: every caller's future is resolved after
   the COMMIT (or fails with the COMMIT's error). A ``kill -9`` therefore never loses an
   acknowledged write. At ``synchronous=FULL`` the COMMIT also waits for the disk, except for
   a group made only of *derived* interactions (``submit_derived``: rows the node rebuilds
   from other files after an unclean stop), which commits at ``NORMAL``: a power cut may lose
   it, never corrupt it, and the next durable COMMIT makes it durable too (the WAL is synced
   as a whole).
4. Reads run on their own connections (read-only, ``mode=ro``), each inside one read
   transaction so a multi-statement read sees one snapshot; they never wait for the writer.
5. ``close`` drains: interactions queued before it still run and commit, then the file is
   checkpointed (``wal_checkpoint(TRUNCATE)``) when asked, and every connection is closed.
6. Inline writes (``inline_writes=True``): an interaction whose COMMIT does not wait for the
   disk (any on a file at ``synchronous=NORMAL`` through ``submit_inline``; a derived one,
   ``submit_derived``, on a file at ``FULL``) runs on the calling thread when the writer is
   idle (nothing queued or running), instead of being handed to the writer thread and back;
   a durable interaction on a ``FULL`` file always goes to the thread. A write of a single
   caller then costs what the transaction costs, not two thread wake-ups. The writer
   connection is used under ``_conn_lock`` by whichever thread runs it; an interaction queued
   before another always runs before it. Such a file checkpoints on its writer thread
   (``PASSIVE``, after every ``CHECKPOINT_EVERY_CHANGES`` row changes) rather than inside a
   COMMIT, so an inline COMMIT never waits for a checkpoint's ``fsync``.
7. Short reads (``run_read_short``: a few rows found through an index, which cost less than
   handing them to a reader thread and back) run on the calling thread when a reader
   connection is idle, and on a reader thread otherwise: never waiting for a connection.

Interactions must not open or end transactions themselves; ``run_exclusive`` runs a function
alone, outside any transaction (checkpoints, ``VACUUM INTO``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from cis.log import get_logger
from cis.storage.errors import DatabaseClosed, StorageError
from cis.storage.sqlite import (
    DEFAULT_CACHE_KIB,
    Migration,
    Synchronous,
    connect,
    migrate,
    schema_version,
)

__all__ = ["MAX_BATCH", "Database"]

P = ParamSpec("P")
T = TypeVar("T")

log = get_logger(__name__)

MAX_BATCH: Final = 512
"""Most interactions committed together; bounds the time one caller waits for the others."""

CHECKPOINT_EVERY_CHANGES: Final = 20_000
"""Row changes between two checkpoints of a file with inline writes (a few MiB of WAL)."""

SLOW_INTERACTION_S: Final = 1.0
_SAVEPOINT: Final = "cis_interaction"


@dataclass(slots=True)
class _Job:
    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    exclusive: bool = False
    durable: bool = True


class _Stop:
    """Queue sentinel: drain what is before it, then stop."""


class Database:
    """A SQLite file of one kind (``node``, ``room``, a skill's), opened for reading and writing.

    Use ``Database.open`` (blocking: run it in a thread from async code).
    """

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        *,
        kind: str,
        synchronous: Synchronous,
        cache_size_kib: int,
        max_readers: int,
        read_executor: concurrent.futures.Executor | None,
        inline_writes: bool = False,
    ) -> None:
        if max_readers < 1:
            raise ValueError("a database needs at least one reader connection")
        self.path = path
        self.kind = kind
        self.synchronous = Synchronous(synchronous)
        self._cache_size_kib = cache_size_kib
        self._writer_conn = writer
        self._writer_sync = self.synchronous  # the writer connection's current setting
        self._queue: queue.SimpleQueue[_Job | _Stop] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._conn_lock = threading.Lock()  # held by whichever thread uses the writer connection
        self._outstanding = 0  # jobs queued and not yet finished (under _close_lock)
        self.inline_writes = inline_writes
        self._checkpoint_queued = False
        if inline_writes:
            writer.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run on the thread
        self._changes_at_checkpoint = writer.total_changes
        self._read_executor = read_executor
        self._readers_idle: list[sqlite3.Connection] = []
        self._readers_open = 0
        self._readers_max = max_readers
        self._readers_cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._writer_loop, name=f"cis-writer-{kind}-{path.parent.name}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        kind: str,
        migrations: Sequence[Migration],
        synchronous: Synchronous = Synchronous.FULL,
        cache_size_kib: int = DEFAULT_CACHE_KIB,
        max_readers: int = 2,
        read_executor: concurrent.futures.Executor | None = None,
        inline_writes: bool = False,
    ) -> Database:
        """Open (creating if absent) and migrate ``path``, then start its writer thread
        (``inline_writes``: invariant 6)."""
        conn = connect(path, synchronous=synchronous, cache_size_kib=cache_size_kib)
        try:
            applied = migrate(conn, kind, migrations, path)
        except BaseException:
            conn.close()
            raise
        if applied:
            log.info(
                "schema_migrated", kind=kind, path=str(path), applied=applied,
                version=schema_version(conn),
            )  # fmt: skip
        return cls(
            path,
            conn,
            kind=kind,
            synchronous=synchronous,
            cache_size_kib=cache_size_kib,
            max_readers=max_readers,
            read_executor=read_executor,
            inline_writes=inline_writes,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ writes

    def submit(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(conn, *args)`` as one interaction; the future resolves after COMMIT.

        Safe from any thread. Raises ``DatabaseClosed`` once ``close`` has begun.
        """
        return self._enqueue(_Job(name, fn, args, kwargs))

    def submit_inline(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> concurrent.futures.Future[T]:
        """``submit``, but run at once on the calling thread when this file takes inline
        writes, commits without ``fsync`` (``NORMAL``) and its writer is idle (invariant 6);
        the future is then already resolved. The caller is blocked for the transaction."""
        return self._submit_inline(_Job(name, fn, args, kwargs))

    def _submit_inline(self, job: _Job) -> concurrent.futures.Future[Any]:
        if not self.inline_writes or (job.durable and self.synchronous is not Synchronous.NORMAL):
            return self._enqueue(job)
        with self._close_lock:
            if self._closed:
                raise DatabaseClosed(f"{self.path} is closed")
            idle = self._outstanding == 0 and self._conn_lock.acquire(blocking=False)
        if not idle:
            return self._enqueue(job)
        try:
            self._run_batch(self._writer_conn, [job])
            self._maybe_checkpoint(self._writer_conn)
        finally:
            self._conn_lock.release()
        return job.future

    def submit_derived(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> concurrent.futures.Future[T]:
        """``submit`` for derived rows that the node rebuilds after an unclean stop (the
        Room Store's index in ``node.db``): its COMMIT does not wait for the disk unless a
        durable interaction shares it (see invariant 3), so on a file that takes inline
        writes it runs on the calling thread when the writer is idle (invariant 6)."""
        return self._submit_inline(_Job(name, fn, args, kwargs, durable=False))

    async def run_interaction(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(conn, *args)`` on the writer inside its own savepoint; return after COMMIT."""
        return await asyncio.wrap_future(self._enqueue(_Job(name, fn, args, kwargs)))

    def run_interaction_blocking(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``run_interaction`` for code that is not in an event loop (CLI, start-up)."""
        future: concurrent.futures.Future[T] = self._enqueue(_Job(name, fn, args, kwargs))
        return future.result()

    def submit_exclusive(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> concurrent.futures.Future[T]:
        """Run ``fn`` alone on the writer connection, outside any transaction."""
        return self._enqueue(_Job(name, fn, args, kwargs, exclusive=True))

    def _enqueue(self, job: _Job) -> concurrent.futures.Future[Any]:
        # The lock orders this check against close()'s sentinel, so no job lands after it.
        with self._close_lock:
            if self._closed:
                raise DatabaseClosed(f"{self.path} is closed")
            self._outstanding += 1
            self._queue.put(job)
        return job.future

    # ------------------------------------------------------------------ reads

    async def run_read(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(conn, *args)`` on a reader connection, in one read transaction."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._read_executor, lambda: self.read_blocking(name, fn, *args, **kwargs)
        )

    async def run_read_short(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``run_read`` for a read of a few rows by key (invariant 7): on this thread when a
        reader connection is idle, since the event loop then waits less for it than for a
        reader thread's wake-up and answer."""
        with self._readers_cond:
            conn = self._readers_idle.pop() if self._readers_idle and not self._closed else None
        if conn is None:
            return await self.run_read(name, fn, *args, **kwargs)
        return self._read_on(conn, name, fn, *args, **kwargs)

    def read_blocking(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return self._read_on(self._acquire_reader(), name, fn, *args, **kwargs)

    def _read_on(
        self,
        conn: sqlite3.Connection,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn`` in one read transaction on ``conn`` (an acquired reader), then give
        the connection back."""
        started = time.monotonic()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn, *args, **kwargs)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        finally:
            self._release_reader(conn)
            _log_if_slow(self, name, started, "read")

    def _acquire_reader(self) -> sqlite3.Connection:
        with self._readers_cond:
            while True:
                if self._closed:
                    raise DatabaseClosed(f"{self.path} is closed")
                if self._readers_idle:
                    return self._readers_idle.pop()
                if self._readers_open < self._readers_max:
                    self._readers_open += 1  # reserve the slot, connect outside the lock
                    break
                self._readers_cond.wait()
        try:
            return connect(
                self.path,
                synchronous=self.synchronous,
                readonly=True,
                cache_size_kib=self._cache_size_kib,
            )
        except BaseException:
            with self._readers_cond:
                self._readers_open -= 1
                self._readers_cond.notify()
            raise

    def _release_reader(self, conn: sqlite3.Connection) -> None:
        with self._readers_cond:
            if self._closed:
                conn.close()
                self._readers_open -= 1
            else:
                self._readers_idle.append(conn)
            self._readers_cond.notify()

    # ------------------------------------------------------------------ closing

    def close(self, *, checkpoint: bool = True) -> None:
        """Drain the queue, checkpoint (TRUNCATE) if asked, close every connection. Blocking."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_Stop())
        self._thread.join()
        with self._conn_lock:  # an inline write on another thread finishes first
            try:
                if checkpoint:
                    _checkpoint_truncate(self._writer_conn, self.path)
            finally:
                self._writer_conn.close()
                with self._readers_cond:
                    for conn in self._readers_idle:
                        conn.close()
                    self._readers_open -= len(self._readers_idle)
                    self._readers_idle.clear()
                    self._readers_cond.notify_all()

    async def aclose(self, *, checkpoint: bool = True) -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.close(checkpoint=checkpoint)
        )

    def checkpoint(self) -> concurrent.futures.Future[tuple[int, int, int]]:
        """``wal_checkpoint(TRUNCATE)`` on the writer, between transactions."""
        return self.submit_exclusive("wal_checkpoint", _checkpoint_truncate, self.path)

    # ------------------------------------------------------------------ the writer thread

    def _writer_loop(self) -> None:
        conn = self._writer_conn
        carry: _Job | _Stop | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if isinstance(first, _Stop):
                return
            if first.exclusive:
                with self._conn_lock:
                    _run_exclusive(conn, first)
                self._finished(1)
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(nxt, _Stop) or nxt.exclusive:
                    carry = nxt
                    break
                batch.append(nxt)
            with self._conn_lock:
                self._run_batch(conn, batch)
                if self.inline_writes:
                    self._maybe_checkpoint(conn)
            self._finished(len(batch))

    def _finished(self, jobs: int) -> None:
        with self._close_lock:
            self._outstanding -= jobs

    def _maybe_checkpoint(self, conn: sqlite3.Connection) -> None:
        """Queue a ``PASSIVE`` checkpoint once enough rows changed (inline-write files, which
        turned SQLite's own checkpoint-at-COMMIT off). Called under ``_conn_lock``."""
        if self._checkpoint_queued:
            return
        if conn.total_changes - self._changes_at_checkpoint < CHECKPOINT_EVERY_CHANGES:
            return
        self._checkpoint_queued = True
        with contextlib.suppress(DatabaseClosed):  # closing checkpoints anyway
            self.submit_exclusive("wal_checkpoint_passive", self._checkpoint_passive)

    def _checkpoint_passive(self, conn: sqlite3.Connection) -> None:
        self._checkpoint_queued = False
        self._changes_at_checkpoint = conn.total_changes
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        jobs = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        started = time.monotonic()
        try:
            self._sync_for(conn, any(job.durable for job in jobs))
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            failure = StorageError(f"cannot start a transaction on {self.path}: {exc}")
            for job in jobs:
                job.future.set_exception(failure)
            return
        if len(jobs) == 1:
            self._run_alone(conn, jobs[0], started)
            return
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        aborted: BaseException | None = None
        for job in jobs:
            conn.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                result = job.fn(conn, *job.args, **job.kwargs)
            except Exception as exc:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (I/O error, disk full…):
                    # nothing of this batch is stored.
                    aborted = exc
                    outcomes.append((job, None, exc))
                    break
                conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
                conn.execute(f"RELEASE {_SAVEPOINT}")
                outcomes.append((job, None, exc))
            else:
                conn.execute(f"RELEASE {_SAVEPOINT}")
                outcomes.append((job, result, None))
        if aborted is None:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                aborted = exc
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        if aborted is not None:
            log.error(
                "transaction_failed", path=str(self.path), interactions=len(jobs),
                error=type(aborted).__name__,
            )  # fmt: skip
            own_errors = {id(job): exc for job, _, exc in outcomes if exc is not None}
            for job in jobs:
                job.future.set_exception(
                    own_errors.get(id(job))
                    or StorageError(f"transaction on {self.path} rolled back: {aborted}")
                )
            return
        # Acknowledge only now that COMMIT has returned.
        for job, result, error in outcomes:
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)
        elapsed = time.monotonic() - started
        if elapsed > SLOW_INTERACTION_S:
            log.warning(
                "transaction_slow", path=str(self.path), seconds=round(elapsed, 3),
                interactions=",".join(sorted({job.name for job in jobs})),
            )  # fmt: skip

    def _sync_for(self, conn: sqlite3.Connection, durable: bool) -> None:
        """Set the writer's ``synchronous`` for the next COMMIT: the file's own setting, or
        ``NORMAL`` for a group of derived interactions only."""
        wanted = self.synchronous if durable else Synchronous.NORMAL
        if wanted != self._writer_sync:
            conn.execute(f"PRAGMA synchronous = {wanted.value}")
            self._writer_sync = wanted

    def _run_alone(self, conn: sqlite3.Connection, job: _Job, started: float) -> None:
        """A group of one needs no savepoint: its failure rolls the transaction back."""
        try:
            result = job.fn(conn, *job.args, **job.kwargs)
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            job.future.set_exception(exc)
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error(
                "transaction_failed", path=str(self.path), interactions=1,
                error=type(exc).__name__,
            )  # fmt: skip
            job.future.set_exception(StorageError(f"transaction on {self.path} rolled back: {exc}"))
            return
        job.future.set_result(result)
        elapsed = time.monotonic() - started
        if elapsed > SLOW_INTERACTION_S:
            log.warning(
                "transaction_slow", path=str(self.path), seconds=round(elapsed, 3),
                interactions=job.name,
            )  # fmt: skip


def _run_exclusive(conn: sqlite3.Connection, job: _Job) -> None:
    if not job.future.set_running_or_notify_cancel():
        return
    try:
        result = job.fn(conn, *job.args, **job.kwargs)
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        job.future.set_exception(exc)
    else:
        job.future.set_result(result)


def _checkpoint_truncate(conn: sqlite3.Connection, path: Path) -> tuple[int, int, int]:
    row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    busy, log_frames, checkpointed = (int(v) for v in row)
    if busy:
        log.warning("checkpoint_incomplete", path=str(path), wal_frames=log_frames)
    return busy, log_frames, checkpointed


def _log_if_slow(db: Database, name: str, started: float, what: str) -> None:
    elapsed = time.monotonic() - started
    if elapsed > SLOW_INTERACTION_S:
        log.warning(f"{what}_slow", path=str(db.path), interaction=name, seconds=round(elapsed, 3))

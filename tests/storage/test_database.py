from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from cis.storage.database import Database
from cis.storage.errors import DatabaseClosed, SchemaTooNew
from cis.storage.sqlite import Migration, Synchronous, migrate

MIGRATIONS = (Migration(1, "kv", ("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",)),)


def put_txn(conn: sqlite3.Connection, key: str, value: int) -> int:
    conn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (key, value))
    return value


def get_all(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT k, v FROM kv ORDER BY k").fetchall())


@pytest.fixture
def db(tmp_path: Path) -> object:
    database = Database.open(tmp_path / "t.db", kind="test", migrations=MIGRATIONS)
    yield database
    database.close()


def test_interaction_commits_and_is_read_back(db: Database) -> None:
    assert db.run_interaction_blocking("put", put_txn, "a", 1) == 1
    assert db.read_blocking("get_all", get_all) == {"a": 1}


def test_a_lone_failing_interaction_rolls_back_and_the_writer_carries_on(db: Database) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO kv VALUES ('half', 1)")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        db.run_interaction_blocking("half", half_then_fail)
    assert db.read_blocking("get_all", get_all) == {}
    assert db.run_interaction_blocking("put", put_txn, "after", 2) == 2
    assert db.read_blocking("get_all", get_all) == {"after": 2}


def test_a_failing_interaction_rolls_back_alone_in_a_group(tmp_path: Path) -> None:
    """Interactions queued together share a transaction, each in its own savepoint."""
    db = Database.open(tmp_path / "t.db", kind="test", migrations=MIGRATIONS)
    gate = threading.Event()
    running = threading.Event()

    def block_txn(conn: sqlite3.Connection) -> None:
        running.set()
        gate.wait(10)

    try:
        blocker = db.submit("block", block_txn)
        assert running.wait(10)
        # While the writer is held, queue three: they form the next group.
        ok1 = db.submit("put", put_txn, "x", 1)
        bad = db.submit("put", put_txn, "x", 2)  # duplicate key: fails
        ok2 = db.submit("put", put_txn, "y", 3)
        gate.set()
        blocker.result(10)
        assert ok1.result(10) == 1
        with pytest.raises(sqlite3.IntegrityError):
            bad.result(10)
        assert ok2.result(10) == 3
        assert db.read_blocking("get_all", get_all) == {"x": 1, "y": 3}
    finally:
        gate.set()
        db.close()


def test_callers_are_answered_only_after_commit(tmp_path: Path) -> None:
    """When COMMIT fails, every interaction of the group fails: none was acknowledged."""
    db = Database.open(tmp_path / "t.db", kind="test", migrations=MIGRATIONS)
    gate = threading.Event()
    running = threading.Event()

    def block_txn(conn: sqlite3.Connection) -> None:
        running.set()
        gate.wait(10)

    def deferred_fk_violation_txn(conn: sqlite3.Connection) -> None:
        # A deferred constraint fails at COMMIT, after every savepoint was released.
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute("INSERT INTO child (parent) VALUES ('nobody')")

    try:
        db.run_interaction_blocking(
            "schema",
            lambda conn: (
                conn.execute("CREATE TABLE IF NOT EXISTS parent (id TEXT PRIMARY KEY)").fetchall()
                + conn.execute(
                    "CREATE TABLE IF NOT EXISTS child (parent TEXT REFERENCES parent (id))"
                ).fetchall()
            ),
        )
        blocker = db.submit("block", block_txn)
        assert running.wait(10)
        good = db.submit("put", put_txn, "a", 1)
        poison = db.submit("poison", deferred_fk_violation_txn)
        gate.set()
        blocker.result(10)
        with pytest.raises(Exception, match=r"rolled back|FOREIGN KEY"):
            good.result(10)
        with pytest.raises(Exception, match=r"rolled back|FOREIGN KEY"):
            poison.result(10)
        assert db.read_blocking("get_all", get_all) == {}
        # The writer carries on afterwards.
        assert db.run_interaction_blocking("put", put_txn, "b", 2) == 2
    finally:
        gate.set()
        db.close()


def test_group_commit_batches_concurrent_callers(tmp_path: Path) -> None:
    db = Database.open(
        tmp_path / "t.db", kind="test", migrations=MIGRATIONS, synchronous=Synchronous.FULL
    )
    commits = 0

    def count_commits(_conn: sqlite3.Connection) -> int:
        nonlocal commits
        commits += 1
        return 0

    db._writer_conn.set_trace_callback(
        lambda sql: count_commits(db._writer_conn) if sql == "COMMIT" else None
    )

    async def many() -> list[int]:
        return await asyncio.gather(
            *(db.run_interaction("put", put_txn, f"k{i}", i) for i in range(200))
        )

    try:
        assert asyncio.run(many()) == list(range(200))
        assert len(db.read_blocking("get_all", get_all)) == 200
        assert commits < 200  # several callers shared a COMMIT
    finally:
        db.close()


def test_close_drains_queued_writes_then_refuses(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "t.db", kind="test", migrations=MIGRATIONS)
    futures = [db.submit("put", put_txn, f"k{i}", i) for i in range(50)]
    db.close()
    assert [f.result(1) for f in futures] == list(range(50))
    with pytest.raises(DatabaseClosed):
        db.submit("put", put_txn, "late", 0)
    with pytest.raises(DatabaseClosed):
        db.read_blocking("get_all", get_all)
    # Checkpointed on close: the WAL is empty.
    wal = tmp_path / "t.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    reopened = Database.open(tmp_path / "t.db", kind="test", migrations=MIGRATIONS)
    try:
        assert len(reopened.read_blocking("get_all", get_all)) == 50
    finally:
        reopened.close()


def test_reads_do_not_wait_for_the_writer(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "t.db", kind="test", migrations=MIGRATIONS)
    gate = threading.Event()
    started = threading.Event()

    def slow_txn(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO kv VALUES ('slow', 1)")
        started.set()
        gate.wait(10)

    try:
        db.run_interaction_blocking("put", put_txn, "a", 1)
        slow = db.submit("slow", slow_txn)
        assert started.wait(10)
        # The writer holds an open transaction; a reader sees the last committed snapshot.
        assert db.read_blocking("get_all", get_all) == {"a": 1}
        gate.set()
        slow.result(10)
        assert db.read_blocking("get_all", get_all) == {"a": 1, "slow": 1}
    finally:
        gate.set()
        db.close()


def test_reader_connections_are_read_only(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.read_blocking("sneaky_write", put_txn, "a", 1)


def test_exclusive_runs_outside_a_transaction(db: Database, tmp_path: Path) -> None:
    db.run_interaction_blocking("put", put_txn, "a", 1)
    target = tmp_path / "copy.db"

    def vacuum_into(conn: sqlite3.Connection) -> None:
        assert not conn.in_transaction
        conn.execute("VACUUM INTO ?", (str(target),))

    db.submit_exclusive("vacuum_into", vacuum_into).result(10)
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("SELECT k, v FROM kv").fetchall() == [("a", 1)]
    finally:
        copy.close()


def test_newer_schema_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, "test", (*MIGRATIONS, Migration(2, "more", ("CREATE TABLE x (a)",))), path)
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer than this cis-node supports"):
        Database.open(path, kind="test", migrations=MIGRATIONS)


# ---------------------------------------------------------------------------- inline writes


def _inline_db(path: Path) -> Database:
    return Database.open(
        path, kind="test", migrations=MIGRATIONS, synchronous=Synchronous.NORMAL,
        inline_writes=True,
    )  # fmt: skip


def test_an_idle_writer_runs_an_inline_write_on_the_calling_thread(tmp_path: Path) -> None:
    db = _inline_db(tmp_path / "t.db")
    threads: list[str] = []

    def put_here(conn: sqlite3.Connection, key: str) -> int:
        threads.append(threading.current_thread().name)
        return put_txn(conn, key, 1)

    try:
        future = db.submit_inline("put", put_here, "a")
        assert future.done() and future.result() == 1
        assert threads == [threading.current_thread().name]
        assert db.read_blocking("get_all", get_all) == {"a": 1}
        # A failure is the caller's, and rolls back only that write.
        failed = db.submit_inline("put", put_here, "a")
        assert isinstance(failed.exception(), sqlite3.IntegrityError)
        assert db.submit_inline("put", put_here, "b").result() == 1
        assert db.read_blocking("get_all", get_all) == {"a": 1, "b": 1}
    finally:
        db.close()


def test_an_inline_write_waits_its_turn_behind_queued_ones(tmp_path: Path) -> None:
    db = _inline_db(tmp_path / "t.db")
    gate = threading.Event()
    running = threading.Event()
    order: list[str] = []

    def block_txn(conn: sqlite3.Connection) -> None:
        running.set()
        gate.wait(10)
        order.append("blocker")

    def record(conn: sqlite3.Connection, key: str) -> int:
        order.append(key)
        return put_txn(conn, key, 0)

    try:
        blocker = db.submit("block", block_txn)
        assert running.wait(10)
        queued = db.submit("put", record, "queued")
        inline = db.submit_inline("put", record, "inline")
        assert not inline.done()  # the writer is busy: it went to the queue, behind `queued`
        gate.set()
        blocker.result(10)
        queued.result(10)
        inline.result(10)
        assert order == ["blocker", "queued", "inline"]
        # Idle again: the next one runs inline.
        assert db.submit_inline("put", record, "later").done()
    finally:
        gate.set()
        db.close()


def test_on_a_full_file_only_derived_writes_run_inline(tmp_path: Path) -> None:
    full = Database.open(
        tmp_path / "f.db", kind="test", migrations=MIGRATIONS,
        synchronous=Synchronous.FULL, inline_writes=True,
    )  # fmt: skip
    threads: list[int] = []

    def put_where(conn: sqlite3.Connection, key: str) -> int:
        threads.append(threading.get_ident())
        return put_txn(conn, key, 1)

    try:
        # A durable write would fsync in its COMMIT: it goes to the writer thread.
        assert full.submit_inline("put", put_where, "durable").result(10) == 1
        assert threads[-1] != threading.get_ident()
        # A derived one commits without fsync: it runs here, already answered.
        future = full.submit_derived("put", put_where, "derived")
        assert future.done()
        assert future.result() == 1
        assert threads[-1] == threading.get_ident()
        assert full.read_blocking("get_all", get_all) == {"durable": 1, "derived": 1}
        # The next durable COMMIT is back at FULL.
        synchronous = full.submit("sync", lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert synchronous.result(10) == 2  # FULL
    finally:
        full.close()
    # Without inline writes, derived writes go to the writer thread too.
    plain = Database.open(tmp_path / "p.db", kind="test", migrations=MIGRATIONS)
    try:
        assert plain.submit_derived("put", put_where, "derived").result(10) == 1
        assert threads[-1] != threading.get_ident()
    finally:
        plain.close()


def test_an_inline_write_file_checkpoints_on_its_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's checkpoint-at-COMMIT is off; the writer thread checkpoints every N changes,
    copying the WAL's pages into the main file."""
    monkeypatch.setattr("cis.storage.database.CHECKPOINT_EVERY_CHANGES", 300)
    db = _inline_db(tmp_path / "t.db")
    main_file = tmp_path / "t.db"
    checkpoints: list[str] = []
    db._writer_conn.set_trace_callback(
        lambda sql: (
            checkpoints.append(threading.current_thread().name) if "wal_checkpoint" in sql else None
        )
    )

    def put_many(conn: sqlite3.Connection, start: int) -> None:
        conn.executemany(
            "INSERT INTO kv (k, v) VALUES (?, ?)",
            [(f"k{i:06d}", i) for i in range(start, start + 100)],
        )

    try:
        assert db._writer_conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        before = main_file.stat().st_size
        for batch in range(2):
            assert db.submit_inline("put", put_many, batch * 100).done()
        assert checkpoints == []  # 200 changes: under the threshold
        assert main_file.stat().st_size == before
        assert db.submit_inline("put", put_many, 200).done()
        db.run_interaction_blocking("sync", lambda conn: None)  # the writer ran its queue
        assert checkpoints and all(name.startswith("cis-writer-") for name in checkpoints)
        assert main_file.stat().st_size > before
        assert len(db.read_blocking("get_all", get_all)) == 300
    finally:
        db.close()


def test_derived_writes_alone_commit_without_waiting_for_the_disk(tmp_path: Path) -> None:
    """A group of derived interactions commits at NORMAL on a FULL file; a group that also
    holds a durable one commits at FULL."""
    db = Database.open(tmp_path / "t.db", kind="test", migrations=MIGRATIONS)
    gate = threading.Event()
    running = threading.Event()

    def setting(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    def block_txn(conn: sqlite3.Connection) -> None:
        running.set()
        gate.wait(10)

    normal, full = 1, 2
    try:
        assert db.submit_derived("derived", setting).result(10) == normal
        assert db.submit("durable", setting).result(10) == full
        blocker = db.submit("block", block_txn)
        assert running.wait(10)
        together = [db.submit_derived("derived", setting), db.submit("durable", setting)]
        gate.set()
        blocker.result(10)
        assert [f.result(10) for f in together] == [full, full]
        assert db.submit_derived("derived", setting).result(10) == normal
    finally:
        gate.set()
        db.close()


def test_a_short_read_runs_on_the_calling_thread_when_a_reader_is_idle(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "t.db", kind="test", migrations=MIGRATIONS, max_readers=1)
    db.run_interaction_blocking("put", put_txn, "a", 1)
    threads: list[int] = []

    def where(conn: sqlite3.Connection) -> dict[str, int]:
        threads.append(threading.get_ident())
        return get_all(conn)

    async def main() -> None:
        db.read_blocking("warm", get_all)  # the one reader connection is open and idle
        assert await db.run_read_short("where", where) == {"a": 1}
        assert threads == [threading.get_ident()]
        # With the only reader busy, it is handed to a reader thread and waits its turn.
        gate = threading.Event()
        busy = threading.Event()

        def hold(conn: sqlite3.Connection) -> None:
            busy.set()
            gate.wait(10)

        holder = asyncio.ensure_future(db.run_read("hold", hold))
        assert await asyncio.to_thread(busy.wait, 10)
        short = asyncio.ensure_future(db.run_read_short("where", where))
        await asyncio.sleep(0.05)
        assert not short.done()  # the loop was not blocked waiting for the connection
        gate.set()
        await holder
        assert await short == {"a": 1}
        assert threads[1] != threading.get_ident()

    try:
        asyncio.run(main())
    finally:
        db.close()

"""The SQLite state machine: idempotence, requests, policy, determinism, versions, snapshots."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cis.cluster.raftdb.errors import RefusedStatement, StatementError
from cis.cluster.raftdb.state import (
    ApplyHalted,
    Batch,
    Outcome,
    Reader,
    Request,
    StateMachine,
    read_snapshot_header,
)
from cis.cluster.raftdb.statements import Statement as S

_seq = iter(range(1, 10**6))


def batch(*requests: Request, batch_id: str | None = None, ts: int = 1_000) -> Batch:
    return Batch(batch_id or f"b{next(_seq)}", ts, requests)


def req(*sqls: str | S, transaction: bool = False, key: str | None = None) -> Request:
    stmts = [s if isinstance(s, S) else S.of(s) for s in sqls]
    return Request.of(stmts, transaction, key)


@pytest.fixture
def sm(tmp_path: Path) -> StateMachine:
    machine = StateMachine(tmp_path / "state.db")
    machine.apply_batch(1, batch(req("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")))
    return machine


def rows(machine: StateMachine, sql: str) -> list[tuple[object, ...]]:
    reader = Reader(machine.path, machine.caches)
    try:
        result = reader.query([S.of(sql)])[0]
        assert result.error is None, result.error
        assert result.rows is not None
        return list(result.rows.values)
    finally:
        reader.close()


def test_replayed_entries_are_skipped_so_a_counter_never_doubles(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    machine = StateMachine(path)
    machine.apply_batch(1, batch(req("CREATE TABLE c (n INTEGER)", "INSERT INTO c VALUES (0)")))
    entries = [(i, batch(req("UPDATE c SET n = n + 1"))) for i in range(2, 202)]
    for index, entry in entries:
        machine.apply_batch(index, entry)
    machine.close()
    # A restart re-reads the whole journal: every entry arrives again.
    again = StateMachine(path)
    outcomes = {again.apply_batch(index, entry).outcome for index, entry in entries}
    assert outcomes == {Outcome.SKIPPED}
    assert rows(again, "SELECT n FROM c") == [(200,)]
    assert again.applied_index == 201


def test_a_batch_proposed_twice_is_applied_once(sm: StateMachine) -> None:
    first = batch(req("INSERT INTO t (v) VALUES (1)"), batch_id="same")
    assert sm.apply_batch(2, first).outcome is Outcome.APPLIED
    assert sm.apply_batch(3, first).outcome is Outcome.DUPLICATE
    assert rows(sm, "SELECT count(*) FROM t") == [(1,)]
    assert sm.applied_index == 3


def test_a_client_key_returns_the_first_results_to_a_retry(sm: StateMachine) -> None:
    one = sm.apply_batch(2, batch(req("INSERT INTO t (v) VALUES (7)", key="c:k1")))
    two = sm.apply_batch(3, batch(req("INSERT INTO t (v) VALUES (7)", key="c:k1")))
    assert one.results == two.results
    assert one.results[0][0].last_insert_id == 1
    assert rows(sm, "SELECT count(*) FROM t") == [(1,)]


def test_requests_in_one_entry_stay_independent(sm: StateMachine) -> None:
    result = sm.apply_batch(
        2,
        batch(
            req("INSERT INTO t (id, v) VALUES (1, 1)", "INSERT INTO t (id, v) VALUES (1, 2)"),
            req(
                "INSERT INTO t (id, v) VALUES (2, 1)",
                "INSERT INTO nope VALUES (1)",
                transaction=True,
            ),
            req("INSERT INTO t (id, v) VALUES (3, 3)"),
        ),
    )
    plain, tx, last = result.results
    assert plain[0].error is None and "UNIQUE" in (plain[1].error or "")
    assert tx[0].error is None and "no such table" in (tx[1].error or "")
    assert last[0].error is None
    # Without ?transaction the statement that succeeded stays; with it, it is rolled back.
    assert rows(sm, "SELECT id, v FROM t ORDER BY id") == [(1, 1), (3, 3)]


def test_a_statement_that_aborts_the_transaction_does_not_undo_other_requests(
    sm: StateMachine,
) -> None:
    sm.apply_batch(2, batch(req("INSERT INTO t (id, v) VALUES (1, 1)")))
    result = sm.apply_batch(
        3,
        batch(
            req("INSERT INTO t (id, v) VALUES (2, 2)"),
            req("INSERT OR ROLLBACK INTO t (id, v) VALUES (1, 9)", "UPDATE t SET v = v + 10"),
            req("INSERT INTO t (id, v) VALUES (4, 4)"),
        ),
    )
    assert "UNIQUE" in (result.results[1][0].error or "")
    assert result.results[1][1].rows_affected == 2
    assert rows(sm, "SELECT id, v FROM t ORDER BY id") == [(1, 11), (2, 12), (4, 4)]
    assert sm.applied_index == 3


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("ATTACH ':memory:' AS x", "ATTACH"),
        ("BEGIN", "transaction control"),
        ("SAVEPOINT s", "transaction control"),
        ("VACUUM", "VACUUM"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode"),
        ("PRAGMA user_version = 3", "PRAGMA user_version"),
        ("PRAGMA page_count", "PRAGMA page_count"),
        ("INSERT INTO _cis_meta VALUES ('x', 1)", "_cis_"),
        ("DROP TABLE _cis_requests", "_cis_"),
        ("CREATE TABLE _cis_mine (x)", "_cis_"),
        ("UPDATE sqlite_sequence SET seq = 9", "sqlite_sequence"),
        ("CREATE TEMP TABLE tt (x)", "TEMP"),
        ("SELECT random()", "random()"),
        ("SELECT randomblob(4)", "randomblob()"),
        ("SELECT total_changes()", "total_changes()"),
        ("SELECT CURRENT_TIMESTAMP", "CURRENT_TIMESTAMP"),
        ("SELECT date('now')", "'now'"),
        ("SELECT datetime()", "'now'"),
        ("SELECT datetime('2020-01-01', 'localtime')", "time zone"),
        ("SELECT strftime('%s', 'now')", "'now'"),
        ("ANALYZE", "ANALYZE"),
    ],
)
def test_the_apply_policy_refuses_with_a_deterministic_error(
    sm: StateMachine, sql: str, needle: str
) -> None:
    result = sm.apply_batch(2, batch(req(sql)))
    error = result.results[0][0].error
    assert error is not None and needle.lower() in error.lower(), error
    assert sm.applied_index == 2


def test_time_from_a_column_default_or_a_row_is_refused_too(sm: StateMachine) -> None:
    result = sm.apply_batch(
        2,
        batch(
            req("CREATE TABLE d (id INTEGER PRIMARY KEY, at DEFAULT CURRENT_TIMESTAMP, s TEXT)"),
            req("INSERT INTO d (id, s) VALUES (1, 'x')"),
            req("INSERT INTO d (id, at, s) VALUES (2, 0, 'now')"),
            req("UPDATE d SET at = date(s) WHERE id = 2"),
            req("SELECT date('2020-01-31', '+1 day')"),
        ),
    )
    errors = [r[0].error for r in result.results]
    assert errors[0] is None
    assert "CURRENT_TIMESTAMP" in (errors[1] or "")
    assert errors[2] is None
    assert "'now'" in (errors[3] or "")
    assert result.results[4][0].rows is not None
    assert result.results[4][0].rows.values == (("2020-02-01",),)


def test_schema_changes_and_writes_that_are_allowed(sm: StateMachine) -> None:
    result = sm.apply_batch(
        2,
        batch(
            req(
                "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, v)",
                "CREATE INDEX a_v ON a (v)",
                "INSERT INTO a (v) VALUES (1)",
                "ALTER TABLE a RENAME TO b",
                "PRAGMA table_info(b)",
                "DROP TABLE b",
                "CREATE VIRTUAL TABLE f USING fts5(body)",
            )
        ),
    )
    errors = [r.error for r in result.results[0]]
    assert errors[:6] == [None] * 6
    assert "virtual tables" in (errors[6] or "")


def test_table_versions_follow_writes_including_triggers(sm: StateMachine) -> None:
    sm.apply_batch(
        2,
        batch(
            req(
                "CREATE TABLE log (v)",
                "CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.v); END",
            )
        ),
    )
    sm.apply_batch(5, batch(req("INSERT INTO t (v) VALUES (1)")))
    sm.apply_batch(6, batch(req("SELECT * FROM t")))
    sm.apply_batch(7, batch(req("UPDATE t SET v = 2 WHERE id = 99")))
    sm.apply_batch(8, batch(req("INSERT INTO t (v) VALUES (1)", transaction=True), req("BEGIN")))
    reader = Reader(sm.path, sm.caches)
    assert reader.table_version("log") == 8
    assert reader.table_version("t") == 8
    assert reader.table_version("nothing") == 0
    sm.apply_batch(9, batch(req("INSERT INTO t (v) VALUES (1)", "BAD SQL", transaction=True)))
    assert reader.table_version("t") == 8  # rolled back: not written
    reader.close()


def test_results_are_deterministic_after_a_restart(tmp_path: Path) -> None:
    entries = [
        (1, batch(req("CREATE TABLE u (id INTEGER PRIMARY KEY, v)"), ts=5)),
        (2, batch(req("INSERT INTO u (v) VALUES (1)", "INSERT INTO u (v) VALUES (2)"), ts=6)),
        (3, batch(req("UPDATE u SET v = 3", "INSERT OR IGNORE INTO u (id) VALUES (1)"), ts=7)),
    ]
    first = StateMachine(tmp_path / "a.db")
    fresh = StateMachine(tmp_path / "b.db")
    results_a = [first.apply_batch(i, b).results for i, b in entries]
    # b applies the same entries after other work on its connection
    fresh.apply_batch(0 + 1, entries[0][1])
    results_b = [results_a[0]] + [fresh.apply_batch(i, b).results for i, b in entries[1:]]
    assert results_a == results_b
    assert results_a[2][0][0].last_insert_id is None  # nothing inserted in that entry


def test_a_full_disk_halts_instead_of_skipping(tmp_path: Path) -> None:
    machine = StateMachine(tmp_path / "state.db", max_page_count=40)
    machine.apply_batch(1, batch(req("CREATE TABLE big (b BLOB)")))
    blob = req(S.of("INSERT INTO big VALUES (?)", b"x" * 8000))
    failure = ""
    index = 1
    while not failure and index < 200:
        index += 1
        try:
            machine.apply_batch(index, batch(blob))
        except ApplyHalted as exc:
            failure = str(exc)
    assert "full" in failure
    halted_at = machine.applied_index
    assert halted_at == index - 1
    # Nothing of the failed entry was kept, and it was not marked applied.
    assert halted_at < 199
    assert machine.apply_batch(halted_at, batch(req("SELECT 1"))).outcome is Outcome.SKIPPED


def test_snapshot_round_trip_and_install(tmp_path: Path) -> None:
    source = StateMachine(tmp_path / "a.db")
    source.apply_batch(1, batch(req("CREATE TABLE k (v)")))
    for index in range(2, 50):
        source.apply_batch(index, batch(req(S.of("INSERT INTO k VALUES (?)", index))))
    snap = tmp_path / "snap"
    applied = source.write_snapshot(snap, {"raft_index": 50, "cluster": ["x:1"]})
    header = read_snapshot_header(snap)
    assert (applied, header.applied_index, header.raft_index) == (49, 49, 50)
    target = StateMachine(tmp_path / "b.db")
    target.apply_batch(1, batch(req("CREATE TABLE other (v)")))
    assert target.install_snapshot(snap)
    assert target.applied_index == 49
    assert rows(target, "SELECT count(*) FROM k") == [(48,)]
    assert not target.install_snapshot(snap)  # not ahead any more


def test_a_corrupt_snapshot_is_refused(tmp_path: Path) -> None:
    source = StateMachine(tmp_path / "a.db")
    source.apply_batch(1, batch(req("CREATE TABLE k (v)")))
    snap = tmp_path / "snap"
    source.write_snapshot(snap, {"raft_index": 1})
    data = bytearray(snap.read_bytes())
    data[-100] ^= 0xFF
    snap.write_bytes(bytes(data))
    with pytest.raises(ApplyHalted, match="checksum"):
        read_snapshot_header(snap)


def test_reads_report_declared_types_then_value_types(sm: StateMachine) -> None:
    sm.apply_batch(
        2,
        batch(
            req(
                "CREATE TABLE typed (i INTEGER, r REAL, s VARCHAR(10), b BLOB, n, d DATETIME)",
                S.of(
                    "INSERT INTO typed VALUES (?, ?, ?, ?, ?, ?)", 1, 1.5, "x", b"\x00\xff", 2, "z"
                ),
            )
        ),
    )
    reader = Reader(sm.path, sm.caches)
    result = reader.query(
        [S.of("SELECT i, r, s, b, n, d, i + 1 AS e, x'01', NULL FROM typed WHERE i = ?", 1)]
    )[0]
    assert result.rows is not None
    assert result.rows.types == (
        "integer", "real", "varchar(10)", "blob", "integer", "datetime",
        "integer", "blob", "null",
    )  # fmt: skip
    assert result.rows.values == ((1, 1.5, "x", b"\x00\xff", 2, "z", 2, b"\x01", None),)
    empty = reader.query([S.of("SELECT i FROM typed WHERE i = 99")])[0]
    assert empty.rows is not None and empty.rows.values == () and empty.rows.types == ("integer",)
    writes = reader.query([S.of("DELETE FROM typed")])[0]
    assert writes.error is not None and "/db/execute" in writes.error
    reader.close()


def test_the_boundary_check_classifies_and_refuses(sm: StateMachine) -> None:
    reader = Reader(sm.path, sm.caches)
    assert reader.classify(S.of("SELECT * FROM t")).writes is False
    assert reader.classify(S.of("INSERT INTO t (v) VALUES (?)", 1)).writes is True
    assert reader.classify(S.of("CREATE TABLE z (a)")).writes is True
    assert reader.classify(S.of("INSERT INTO not_yet VALUES (1)")).writes is True
    assert reader.classify(S.of("SELECT random()")).refused is not None
    assert reader.classify(S.of("VACUUM")).refused is not None
    with pytest.raises(RefusedStatement, match="'now'"):
        reader.classify(S.of("INSERT INTO t (v) VALUES (julianday(?))", "now"))
    with pytest.raises(StatementError, match="bindings"):
        reader.classify(S.of("INSERT INTO t (id, v) VALUES (?, ?)", 1))
    reader.close()


def test_the_writer_uses_the_project_pragmas(sm: StateMachine) -> None:
    conn = sqlite3.connect(sm.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_replicas_without_results_reach_the_same_database(tmp_path: Path) -> None:
    """The origin applies statement by statement; the others may use executemany."""
    insert = "INSERT INTO t (id, v) VALUES (?, ?)"
    entries = [
        batch(req("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")),
        batch(req(*[S.of(insert, i, i) for i in range(100)], transaction=True)),
        # a duplicate key half-way: the whole request rolls back
        batch(req(*[S.of(insert, i, i) for i in (500, 501, 5, 502)], transaction=True)),
        # NULL into NOT NULL via a parameter
        batch(
            req(
                *[S.of(insert, i, None if i == 602 else i) for i in (600, 601, 602)],
                transaction=True,
            )
        ),
        # aborts the whole SQLite transaction, with another request in the same entry
        batch(
            req(S.of("INSERT INTO t (id, v) VALUES (700, 7)")),
            req(
                *[S.of("INSERT OR ROLLBACK INTO t (id, v) VALUES (?, 1)", i) for i in (800, 1)],
                transaction=True,
            ),
        ),
        batch(
            req(
                *[S.of("UPDATE t SET v = v + ? WHERE id < 10", 1) for _ in range(5)],
                transaction=True,
            )
        ),
    ]
    origin = StateMachine(tmp_path / "origin.db")
    replica = StateMachine(tmp_path / "replica.db")
    for index, entry in enumerate(entries, start=1):
        origin.apply_batch(index, entry, results=True)
        replica.apply_batch(index, entry, results=False)

    def dump(machine: StateMachine) -> list[str]:
        conn = sqlite3.connect(machine.path)
        try:
            return list(conn.iterdump())
        finally:
            conn.close()

    assert dump(origin) == dump(replica)
    assert rows(origin, "SELECT count(*) FROM t") == [(101,)]
    assert rows(origin, "SELECT v FROM t WHERE id = 0") == [(5,)]
    versions = Reader(replica.path, replica.caches)
    assert versions.table_version("t") == 6
    versions.close()

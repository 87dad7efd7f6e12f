"""What user SQL may do, decided by SQLite's authorizer while each statement is prepared.

https://www.sqlite.org/c3ref/set_authorizer.html: SQLite calls the authorizer once per action
it compiles (a table read, an INSERT into T, a function call, a PRAGMA, ATTACH …), including
the actions of every trigger the statement fires. That gives three things from one callback:

1. **Policy.** For every user statement:
   - ATTACH/DETACH, transaction control (BEGIN/COMMIT/ROLLBACK/SAVEPOINT), TEMP objects,
     virtual tables and ANALYZE are denied: the service owns the transaction (one per log
     entry, a SAVEPOINT per request) and every replica must hold the same database. VACUUM is
     refused through the ATTACH and BEGIN it compiles to.
   - PRAGMAs: only a read-only allow-list, and on the apply connection only the ones that
     describe the schema (``page_count`` and friends depend on the file's physical layout,
     which differs between a replica that replayed the log and one that installed a snapshot).
   - Writes to the service's own ``_cis_*`` tables and to ``sqlite_*`` tables are denied.
     SQLite reports its own bookkeeping writes to ``sqlite_master`` during DDL, which it guards
     itself, and to ``sqlite_sequence`` during DROP/ALTER, which we allow only inside DDL.
2. **Determinism** (writes only). ``random()``, ``randomblob()``, ``changes()``,
   ``total_changes()`` and ``last_insert_rowid()`` depend on state that is not replicated and are
   denied. Time is handled by ``install_deterministic_functions``: the CURRENT_TIME/DATE/
   TIMESTAMP keywords (which SQLite compiles to functions of those names) always fail, and the
   date/time functions fail when asked for ``'now'`` (or no time value, which means now) or for
   the host-dependent ``'localtime'``/``'utc'`` modifiers; any other call is evaluated by
   SQLite's own implementation. Overriding rather than only denying also catches the cases the
   authorizer never sees: a ``DEFAULT CURRENT_TIMESTAMP`` column, or ``'now'`` read from a row.
3. **Facts.** Which tables a statement writes (INSERT/UPDATE/DELETE, triggers included: the
   per-table versions of ``GetVersion``), whether it is DDL, and whether it writes at all (how
   ``/db/request`` tells reads from writes).

Prepared statements are cached by ``sqlite3``; the authorizer runs only when a statement is
(re-)prepared, so callers remember the facts per SQL text (``Collector``), and SQLite
re-prepares, calling us again, whenever the schema changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

__all__ = [
    "Authorizer",
    "Facts",
    "Mode",
    "NondeterministicCall",
    "install_deterministic_functions",
]

# Action codes, https://www.sqlite.org/c3ref/c_alter_table.html
_CREATE_INDEX: Final = 1
_CREATE_TABLE: Final = 2
_CREATE_TEMP_INDEX: Final = 3
_CREATE_TEMP_TABLE: Final = 4
_CREATE_TEMP_TRIGGER: Final = 5
_CREATE_TEMP_VIEW: Final = 6
_CREATE_TRIGGER: Final = 7
_CREATE_VIEW: Final = 8
_DELETE: Final = 9
_DROP_INDEX: Final = 10
_DROP_TABLE: Final = 11
_DROP_TEMP_INDEX: Final = 12
_DROP_TEMP_TABLE: Final = 13
_DROP_TEMP_TRIGGER: Final = 14
_DROP_TEMP_VIEW: Final = 15
_DROP_TRIGGER: Final = 16
_DROP_VIEW: Final = 17
_INSERT: Final = 18
_PRAGMA: Final = 19
_READ: Final = 20
_SELECT: Final = 21
_TRANSACTION: Final = 22
_UPDATE: Final = 23
_ATTACH: Final = 24
_DETACH: Final = 25
_ALTER_TABLE: Final = 26
_REINDEX: Final = 27
_ANALYZE: Final = 28
_CREATE_VTABLE: Final = 29
_DROP_VTABLE: Final = 30
_FUNCTION: Final = 31
_SAVEPOINT: Final = 32
_RECURSIVE: Final = 33

_DDL: Final = frozenset(
    {
        _CREATE_INDEX,
        _CREATE_TABLE,
        _CREATE_TRIGGER,
        _CREATE_VIEW,
        _DROP_INDEX,
        _DROP_TABLE,
        _DROP_TRIGGER,
        _DROP_VIEW,
        _ALTER_TABLE,
        _REINDEX,
        _CREATE_VTABLE,
        _DROP_VTABLE,
    }
)
_TEMP_DDL: Final = frozenset(
    {
        _CREATE_TEMP_INDEX,
        _CREATE_TEMP_TABLE,
        _CREATE_TEMP_TRIGGER,
        _CREATE_TEMP_VIEW,
        _DROP_TEMP_INDEX,
        _DROP_TEMP_TABLE,
        _DROP_TEMP_TRIGGER,
        _DROP_TEMP_VIEW,
    }
)
_DML: Final = frozenset({_INSERT, _UPDATE, _DELETE})

# PRAGMAs that only read. Those in _SCHEMA_PRAGMAS describe the logical schema, identical on
# every replica, and are the only ones allowed while applying the log.
_SCHEMA_PRAGMAS: Final = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "collation_list",
        "function_list",
        "module_list",
        "pragma_list",
    }
)
_READ_PRAGMAS: Final = _SCHEMA_PRAGMAS | frozenset(
    {
        "application_id",
        "compile_options",
        "database_list",
        "encoding",
        "foreign_key_check",
        "freelist_count",
        "integrity_check",
        "page_count",
        "page_size",
        "quick_check",
        "schema_version",
        "user_version",
        "data_version",
    }
)
# Pragmas whose argument names a table/index/limit rather than setting a value.
_ARG_IS_NAME: Final = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)

NONDETERMINISTIC_FUNCTIONS: Final = frozenset(
    {"random", "randomblob", "changes", "total_changes", "last_insert_rowid"}
)
_ALWAYS_DENIED_FUNCTIONS: Final = frozenset({"load_extension", "fts3_tokenizer"})
_TIME_KEYWORDS: Final = ("current_timestamp", "current_date", "current_time")
DATE_FUNCTIONS: Final = ("date", "time", "datetime", "julianday", "unixepoch", "strftime")


class Mode(Enum):
    """Which connection the authorizer guards."""

    APPLY = "apply"  # the writer that applies the log: writes allowed, determinism enforced
    CHECK = "check"  # the boundary check before a write enters the log: same policy as APPLY
    READ = "read"  # reads: no writes, any function


def _is_internal(name: str | None) -> bool:
    return name is not None and name.lower().startswith("_cis_")


def _is_sqlite_table(name: str | None) -> bool:
    return name is not None and name.lower().startswith("sqlite_")


@dataclass(slots=True)
class Facts:
    """What the authorizer learnt while one statement was prepared."""

    prepared: bool = False
    writes: bool = False
    ddl: bool = False
    tables_written: set[str] = field(default_factory=set)
    date_functions: bool = False
    denied: str | None = None


class Authorizer:
    """The callback for ``Connection.set_authorizer``; ``user`` is False for our own SQL."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.user = False
        self.facts = Facts()

    def begin(self) -> Facts:
        """Start collecting for the next user statement; returns the (fresh) facts."""
        self.facts = Facts()
        self.user = True
        return self.facts

    def end(self) -> None:
        self.user = False

    def _deny(self, reason: str) -> int:
        if self.facts.denied is None:
            self.facts.denied = reason
        return sqlite3.SQLITE_DENY

    def __call__(
        self,
        action: int,
        arg1: str | None,
        arg2: str | None,
        db: str | None,
        trigger: str | None,
    ) -> int:
        if not self.user:
            return sqlite3.SQLITE_OK
        facts = self.facts
        facts.prepared = True
        if action in (_READ, _SELECT, _RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == _FUNCTION:
            name = (arg2 or "").lower()
            if name in _ALWAYS_DENIED_FUNCTIONS:
                return self._deny(f"{name}() is not allowed")
            if self.mode is Mode.READ:
                return sqlite3.SQLITE_OK
            if name in NONDETERMINISTIC_FUNCTIONS or name in _TIME_KEYWORDS:
                return self._deny(
                    f"{name}() is not deterministic: replicas would compute different values"
                )
            if name in DATE_FUNCTIONS:
                facts.date_functions = True
            return sqlite3.SQLITE_OK
        if action == _PRAGMA:
            return self._pragma((arg1 or "").lower(), arg2)
        if action in (_TRANSACTION, _SAVEPOINT):
            return self._deny("transaction control is not allowed: use ?transaction")
        if action in (_ATTACH, _DETACH):
            return self._deny("ATTACH, DETACH and VACUUM are not allowed")
        if action in _TEMP_DDL:
            return self._deny("TEMP objects are not allowed: they are not replicated")
        if action == _ANALYZE:
            return self._deny("ANALYZE is not allowed")
        if db not in (None, "main") and not (action in _DML and _is_sqlite_table(arg1)):
            return self._deny(f"only the main database may be used (not {db})")
        if self.mode is Mode.READ:
            if action in _DML or action in _DDL:
                return self._deny("this statement writes: send it to /db/execute")
            return self._deny("not allowed in a query")
        if action in _DML:
            return self._dml(action, arg1, trigger)
        if action in _DDL:
            facts.ddl = True
            facts.writes = True
            names = (arg1, arg2) if action != _ALTER_TABLE else (arg2,)
            for target in names:
                if _is_internal(target):
                    return self._deny("the service's own _cis_* tables cannot be changed")
            if action in (_CREATE_VTABLE, _DROP_VTABLE):
                # Module code runs its own SQL (fts5 reads PRAGMA data_version, a per-connection
                # counter) that we cannot tell from the user's: no virtual tables in the log.
                return self._deny("virtual tables are not allowed")
            return sqlite3.SQLITE_OK
        return self._deny(f"SQLite action {action} is not allowed")

    def _pragma(self, name: str, arg: str | None) -> int:
        allowed = _SCHEMA_PRAGMAS if self.mode is not Mode.READ else _READ_PRAGMAS
        if name not in allowed:
            return self._deny(f"PRAGMA {name} is not allowed")
        if arg is not None and name not in _ARG_IS_NAME:
            return self._deny(f"PRAGMA {name} cannot be set")
        return sqlite3.SQLITE_OK

    def _dml(self, action: int, table: str | None, trigger: str | None) -> int:
        facts = self.facts
        if _is_internal(table):
            return self._deny("the service's own _cis_* tables cannot be written")
        lowered = (table or "").lower()
        if lowered in ("sqlite_master", "sqlite_schema", "sqlite_temp_master"):
            return sqlite3.SQLITE_OK  # SQLite's own DDL bookkeeping; it guards these itself
        if lowered == "sqlite_sequence" and facts.ddl:
            return sqlite3.SQLITE_OK  # DROP TABLE / ALTER TABLE RENAME maintain it
        if _is_sqlite_table(table):
            return self._deny(f"{table} cannot be written")
        facts.writes = True
        if table is not None:
            facts.tables_written.add(table)
        return sqlite3.SQLITE_OK


_SqlResult = str | bytes | int | float | None


class NondeterministicCall(sqlite3.DatabaseError):
    """Raised inside an overridden SQL function; the apply loop reports ``reason``."""


@dataclass(slots=True)
class FunctionGuard:
    """Where the overridden functions leave the reason of their last refusal."""

    reason: str | None = None


def install_deterministic_functions(
    conn: sqlite3.Connection, pure: sqlite3.Connection, guard: FunctionGuard
) -> None:
    """Shadow SQLite's time functions on ``conn`` (see the module docstring).

    ``pure`` is a second connection without the overrides on which a permitted call is
    evaluated, so the results are exactly SQLite's.
    """

    def refuse(reason: str) -> NondeterministicCall:
        guard.reason = reason
        return NondeterministicCall(reason)

    def keyword(name: str) -> Callable[[], _SqlResult]:
        def fn() -> _SqlResult:
            raise refuse(f"{name.upper()} is not deterministic: store the time as a value")

        return fn

    for name in _TIME_KEYWORDS:
        conn.create_function(name, 0, keyword(name), deterministic=True)

    def date_function(name: str) -> Callable[..., _SqlResult]:
        first_time_arg = 1 if name == "strftime" else 0
        query = f"SELECT {name}(" + "{}" + ")"

        def fn(*args: object) -> _SqlResult:
            if len(args) <= first_time_arg:
                raise refuse(f"{name}() without a time value means 'now': not deterministic")
            for i, arg in enumerate(args):
                if not isinstance(arg, str):
                    continue
                lowered = arg.strip().lower()
                if i == first_time_arg and lowered == "now":
                    raise refuse(f"{name}('now') is not deterministic: pass the time as a value")
                if i > first_time_arg and lowered in ("localtime", "utc"):
                    raise refuse(f"the {lowered!r} modifier depends on the host's time zone")
            sql = query.format(", ".join("?" for _ in args))
            row = pure.execute(sql, args).fetchone()
            value: _SqlResult = row[0] if row else None
            return value

        return fn

    for name in DATE_FUNCTIONS:
        conn.create_function(name, -1, date_function(name), deterministic=True)

"""Statements and results: parsed and checked at the boundary, frozen afterwards.

A statement arrives in one of rqlite's three shapes (https://rqlite.io/docs/api/api/):
``"SQL"``, ``["SQL", p1, p2, …]`` or ``["SQL", {"name": value, …}]``. Parameters are SQLite's
storage classes: NULL, INTEGER (64-bit), REAL, TEXT and BLOB (``bytes``; JSON has no bytes, so
BLOB parameters come only through gRPC or the Python API; JSON booleans become 0 and 1).

Inside the Raft log a statement travels as the plain tuple ``(sql, params)`` where ``params``
is a tuple or a dict; ``Statement.from_wire`` checks that shape again on every replica before
anything is executed, since the log is input too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, TypeAlias

from cis.cluster.raftdb.errors import StatementError

__all__ = [
    "MAX_SQL_CHARS",
    "MAX_STATEMENTS",
    "ReadLevel",
    "Rows",
    "SqlValue",
    "Statement",
    "StatementResult",
    "WireStatement",
    "parse_statements",
]

SqlValue: TypeAlias = int | float | str | bytes | None
WireParams: TypeAlias = tuple[SqlValue, ...] | dict[str, SqlValue]
WireStatement: TypeAlias = tuple[str, WireParams]

MAX_STATEMENTS: Final = 100_000
"""Statements per request (rqlite's bulk API has no fixed limit; this bounds memory)."""
MAX_SQL_CHARS: Final = 1_000_000
"""Characters per statement (SQLite's own default SQLITE_MAX_SQL_LENGTH is 1,000,000 bytes)."""
MAX_PARAMETERS: Final = 32_766
"""SQLite's default SQLITE_MAX_VARIABLE_NUMBER since 3.32."""
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class ReadLevel(StrEnum):
    """rqlite's read consistency levels; docs/raftdb.md states each one's staleness bound."""

    NONE = "none"
    WEAK = "weak"
    LINEARIZABLE = "linearizable"
    STRONG = "strong"

    @classmethod
    def parse(cls, text: str | None, default: ReadLevel) -> ReadLevel:
        if text is None or text == "":
            return default
        lowered = text.lower()
        if lowered == "auto":  # rqlite: "none" on read-only nodes, "weak" on voters
            return cls.WEAK
        try:
            return cls(lowered)
        except ValueError:
            raise StatementError(
                f"unknown read level {text!r} (none, weak, linearizable, strong)"
            ) from None


_TEXT_TYPES: Final = (str, bytes)
_PLAIN_TYPES: Final = frozenset({str, type(None), bytes})


def check_value(value: object, where: str) -> SqlValue:
    """``value`` as an SQLite value, or ``StatementError`` naming ``where``."""
    if value is None or isinstance(value, _TEXT_TYPES):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise StatementError(f"{where}: integer out of the 64-bit range")
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise StatementError(f"{where}: NaN is not an SQLite value")
        return value
    raise StatementError(f"{where}: unsupported parameter type {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement with its positional or named parameters (not both)."""

    sql: str
    params: tuple[SqlValue, ...] = ()
    named: tuple[tuple[str, SqlValue], ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sql, str):
            raise StatementError("a statement's SQL must be a string")
        if len(self.sql) > MAX_SQL_CHARS:
            raise StatementError(f"a statement is longer than {MAX_SQL_CHARS} characters")
        if "\x00" in self.sql:
            raise StatementError("a statement contains a NUL character")
        count = len(self.params) if self.named is None else len(self.named)
        if count > MAX_PARAMETERS:
            raise StatementError(f"a statement has more than {MAX_PARAMETERS} parameters")
        if self.named is not None and self.params:
            raise StatementError("a statement cannot mix positional and named parameters")

    @classmethod
    def of(cls, sql: str, *params: object, **named: object) -> Statement:
        """Build a statement from Python values (checked as at the boundary)."""
        if named:
            if params:
                raise StatementError("a statement cannot mix positional and named parameters")
            pairs = tuple((k, check_value(v, f"parameter {k}")) for k, v in named.items())
            return cls(sql, (), pairs)
        return cls(sql, tuple(check_value(v, f"parameter {i + 1}") for i, v in enumerate(params)))

    def bindings(self) -> WireParams:
        """What ``sqlite3`` takes: a tuple, or a dict for named parameters."""
        return dict(self.named) if self.named is not None else self.params

    def to_wire(self) -> WireStatement:
        return (self.sql, self.bindings())

    @classmethod
    def from_wire(cls, value: object) -> Statement:
        """Check a statement read back from the log (or a test) and rebuild it."""
        if not isinstance(value, tuple) or len(value) != 2 or not isinstance(value[0], str):
            raise StatementError("malformed statement in the log")
        sql, params = value
        if isinstance(params, dict):
            named = []
            for key, val in params.items():
                if not isinstance(key, str):
                    raise StatementError("malformed named parameter in the log")
                named.append((key, check_value(val, f"parameter {key}")))
            return cls(sql, (), tuple(named))
        if isinstance(params, tuple):
            return cls(sql, tuple(check_value(v, "parameter") for v in params))
        raise StatementError("malformed parameters in the log")


def parse_statement(value: object, position: int) -> Statement:
    """One element of an rqlite request body."""
    if type(value) is str:
        return Statement(value)
    if type(value) is list and value and type(value[0]) is str:
        sql, rest = value[0], value[1:]
        # The common case, checked cheaply: text, NULL, blobs and integers within 64 bits.
        for v in rest:
            kind = type(v)
            if kind not in _PLAIN_TYPES and not (kind is int and _INT64_MIN <= v <= _INT64_MAX):
                break
        else:
            return Statement(sql, tuple(rest))
    where = f"statement {position}"
    if isinstance(value, list) and value and isinstance(value[0], str):
        sql, rest = value[0], value[1:]
        if len(rest) == 1 and isinstance(rest[0], dict):
            named = []
            for key, val in rest[0].items():
                if not isinstance(key, str) or not key:
                    raise StatementError(f"{where}: a named parameter needs a name")
                named.append((key, check_value(val, f"{where}, parameter {key}")))
            return Statement(sql, (), tuple(named))
        params = tuple(check_value(v, f"{where}, parameter {i + 1}") for i, v in enumerate(rest))
        return Statement(sql, params)
    raise StatementError(f'{where}: expected "SQL", ["SQL", p1, …] or ["SQL", {{"name": value}}]')


def parse_statements(body: object) -> list[Statement]:
    """The statements of an rqlite request body (a JSON array), empty SQL strings dropped.

    rqlite skips statements whose SQL is empty, and so do we: they get no result.
    """
    if not isinstance(body, list):
        raise StatementError("the request body must be a JSON array of statements")
    if len(body) > MAX_STATEMENTS:
        raise StatementError(f"more than {MAX_STATEMENTS} statements in one request")
    out = [parse_statement(item, i + 1) for i, item in enumerate(body)]
    return [s for s in out if s.sql.strip()]


@dataclass(frozen=True, slots=True)
class Rows:
    """A result set: column names, their types and the rows (BLOBs as ``bytes``)."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    values: tuple[tuple[SqlValue, ...], ...]


@dataclass(frozen=True, slots=True)
class StatementResult:
    """The result of one statement: an error, or counts and rows.

    Results computed while applying the log are deterministic, so that every replica computes
    the same ones; ``time_s`` is filled only where a result is shown and never stored.
    """

    error: str | None = None
    last_insert_id: int | None = None
    rows_affected: int | None = None
    rows: Rows | None = None
    time_s: float | None = None

    def to_json(self) -> dict[str, object]:
        """The deterministic part as JSON (stored for requests that carry a client key)."""
        out: dict[str, object] = {}
        if self.error is not None:
            out["e"] = self.error
        if self.last_insert_id is not None:
            out["i"] = self.last_insert_id
        if self.rows_affected is not None:
            out["n"] = self.rows_affected
        if self.rows is not None:
            out["c"] = list(self.rows.columns)
            out["t"] = list(self.rows.types)
            out["v"] = [[_value_to_json(v) for v in row] for row in self.rows.values]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> StatementResult:
        rows = None
        if "c" in data:
            cols = data["c"]
            types = data["t"]
            vals = data["v"]
            if not (isinstance(cols, list) and isinstance(types, list)):
                raise ValueError("bad stored result")
            if not isinstance(vals, list):
                raise ValueError("bad stored result")
            rows = Rows(
                tuple(str(c) for c in cols),
                tuple(str(t) for t in types),
                tuple(tuple(_value_from_json(v) for v in row) for row in vals),
            )
        err = data.get("e")
        lid = data.get("i")
        n = data.get("n")
        return cls(
            error=err if isinstance(err, str) else None,
            last_insert_id=lid if isinstance(lid, int) else None,
            rows_affected=n if isinstance(n, int) else None,
            rows=rows,
        )


def _value_to_json(value: SqlValue) -> object:
    if isinstance(value, bytes):
        return {"b": value.hex()}
    return value


def _value_from_json(value: object) -> SqlValue:
    if isinstance(value, dict):
        return bytes.fromhex(str(value["b"]))
    if value is None or isinstance(value, (int, float, str)):
        return value
    raise ValueError("bad stored value")


_WIRE_TYPES: Final = frozenset({type(None), int, float, str, bytes})


def check_wire(value: object) -> WireStatement:
    """Check one ``(sql, params)`` read back from the log, cheaply (it runs per statement on
    every replica): exact types only, no NUL in the SQL. Integers beyond 64 bits are caught
    when executed (a statement error, the same on every replica)."""
    if type(value) is not tuple or len(value) != 2:
        raise StatementError("malformed statement in the log")
    sql, params = value
    if type(sql) is not str or "\x00" in sql:
        raise StatementError("malformed statement in the log")
    kind = type(params)
    if kind is tuple:
        for v in params:
            if type(v) not in _WIRE_TYPES:
                raise StatementError("malformed parameter in the log")
    elif kind is dict:
        for k, v in params.items():
            if type(k) is not str or type(v) not in _WIRE_TYPES:
                raise StatementError("malformed parameter in the log")
    else:
        raise StatementError("malformed parameters in the log")
    return (sql, params)


def statements_from_wire(value: object) -> tuple[WireStatement, ...]:
    if type(value) is not tuple:
        raise StatementError("malformed statement list in the log")
    return tuple(check_wire(v) for v in value)


def to_wire(statements: Sequence[Statement]) -> tuple[WireStatement, ...]:
    return tuple(s.to_wire() for s in statements)

"""The anchor's SQLite file (``anchor.db``): one row per node it knows.

Schema (migration 1)::

    nodes(node_id PK, did, did_key, last_ts, heartbeat_at_ms, last_seen_ms, record,
          last_poll_ts)

- ``last_ts`` is the ``ts`` of the last accepted heartbeat, on the *node's* clock: the next one
  must be greater (no replay). ``last_poll_ts`` is the same for signed peers requests.
- ``heartbeat_at_ms`` is the *anchor's* clock when that heartbeat arrived: ``GET /v1/peers``
  serves the rows younger than 90 s by it.
- ``last_seen_ms`` (anchor's clock, heartbeat or poll) keeps ``node_id`` bound to ``did_key``
  for 30 days; after that the row may be replaced or pruned.
- ``record`` is the heartbeat's canonical JSON exactly as verified, served unchanged.

One connection used from one thread (``AnchorStore.run`` hands each named transaction to it):
the anchor's load is a few requests a second, and a single writer is the project's rule for
every SQLite file. Transactions are ``BEGIN IMMEDIATE``, named for the logs.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from cis.storage.sqlite import Migration, Synchronous, connect, migrate

KIND: Final = "anchor"
MIGRATIONS: Final = (
    Migration(
        1,
        "nodes",
        (
            """CREATE TABLE nodes (
                node_id TEXT PRIMARY KEY,
                did TEXT NOT NULL,
                did_key TEXT NOT NULL,
                last_ts INTEGER NOT NULL,
                heartbeat_at_ms INTEGER NOT NULL,
                last_seen_ms INTEGER NOT NULL,
                record BLOB NOT NULL,
                last_poll_ts INTEGER NOT NULL DEFAULT 0
            ) STRICT""",
            "CREATE INDEX nodes_heartbeat_at ON nodes (heartbeat_at_ms)",
            "CREATE INDEX nodes_last_seen ON nodes (last_seen_ms)",
        ),
    ),
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NodeRow:
    node_id: str
    did: str
    did_key: str
    last_ts: int
    heartbeat_at_ms: int
    last_seen_ms: int
    record: bytes
    last_poll_ts: int


class AnchorTxn:
    """The statements of one transaction; only ``AnchorStore.run`` makes one."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, node_id: str) -> NodeRow | None:
        row = self._conn.execute(
            "SELECT node_id, did, did_key, last_ts, heartbeat_at_ms, last_seen_ms, record,"
            " last_poll_ts FROM nodes WHERE node_id = ?",
            (node_id,),
        ).fetchone()
        return NodeRow(*row) if row is not None else None

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM nodes").fetchone()[0])

    def put_heartbeat(
        self, node_id: str, did: str, did_key: str, *, ts: int, now_ms: int, record: bytes
    ) -> None:
        """Insert or replace the node's row with a newly accepted heartbeat."""
        self._conn.execute(
            "INSERT INTO nodes (node_id, did, did_key, last_ts, heartbeat_at_ms, last_seen_ms,"
            " record) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (node_id) DO UPDATE SET did = excluded.did,"
            " last_poll_ts = CASE WHEN nodes.did_key = excluded.did_key"
            "   THEN nodes.last_poll_ts ELSE 0 END,"
            " did_key = excluded.did_key, last_ts = excluded.last_ts,"
            " heartbeat_at_ms = excluded.heartbeat_at_ms, last_seen_ms = excluded.last_seen_ms,"
            " record = excluded.record",
            (node_id, did, did_key, ts, now_ms, now_ms, record),
        )

    def touch_poll(self, node_id: str, ts: int, now_ms: int) -> None:
        self._conn.execute(
            "UPDATE nodes SET last_poll_ts = ?, last_seen_ms = max(last_seen_ms, ?)"
            " WHERE node_id = ?",
            (ts, now_ms, node_id),
        )

    def live_records(self, since_ms: int, exclude_node: str | None = None) -> list[bytes]:
        rows = self._conn.execute(
            "SELECT record FROM nodes WHERE heartbeat_at_ms >= ? AND node_id IS NOT ?"
            " ORDER BY node_id",
            (since_ms, exclude_node),
        ).fetchall()
        return [bytes(row[0]) for row in rows]

    def prune(self, seen_before_ms: int) -> int:
        """Forget nodes not seen since ``seen_before_ms``; return how many."""
        cursor = self._conn.execute("DELETE FROM nodes WHERE last_seen_ms < ?", (seen_before_ms,))
        return cursor.rowcount


class AnchorStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="anchor-db")
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (creating and migrating) the file; call before ``run``."""
        self._conn = self._executor.submit(self._open).result()

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.path, synchronous=Synchronous.NORMAL)
        migrate(conn, KIND, MIGRATIONS, self.path)
        return conn

    def run_sync(self, name: str, fn: Callable[[AnchorTxn], T]) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction on the store's thread, waiting."""
        return self._executor.submit(self._transaction, name, fn).result()

    async def run(self, name: str, fn: Callable[[AnchorTxn], T]) -> T:
        """Run ``fn`` in one transaction on the store's thread without blocking the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, name, fn)

    def _transaction(self, name: str, fn: Callable[[AnchorTxn], T]) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"anchor store not open (transaction {name})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(AnchorTxn(conn))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)

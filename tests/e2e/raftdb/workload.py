"""Concurrent clients that record a history for the linearizability checker.

Each client loops over random operations on a few register keys, sent to random live nodes
through the HTTP API (so followers forward), and records every operation with call and return
times from one monotonic clock:

- ``write``: ``INSERT … ON CONFLICT DO UPDATE`` with a value unique to the client and step;
- ``read``: ``SELECT v FROM reg WHERE k = ?`` at ``level=linearizable`` (or the level given);
- ``cas``: ``UPDATE reg SET v = new WHERE k = ? AND v = expected``: one row changed is a
  successful CAS, none a completed ``False``.

Outcomes: a 200 is a completed operation; a 503 whose body says ``"outcome": "not_applied"``,
or a connection refused, is a definite failure (dropped from the history); anything else for a
write or CAS (timeout, lost connection, ``unknown``) is an operation of unknown outcome (``ret``
None); a read that does not complete is dropped. A ledger client also inserts unique rows
(``acks``) so that the end of a scenario can check that every acknowledged write survived.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.raftdb.checker import Op
from tests.e2e.raftdb.harness import Cluster

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS reg (k TEXT PRIMARY KEY, v INTEGER)",
    "CREATE TABLE IF NOT EXISTS acks (id INTEGER PRIMARY KEY, client INTEGER)",
    "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counter (id, n) VALUES (1, 0)",
]


@dataclass
class Stats:
    ok: int = 0
    failed: int = 0
    unknown: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class Workload:
    cluster: Cluster
    keys: int = 3
    clients: int = 5
    read_level: str = "linearizable"
    history: list[Op] = field(default_factory=list)
    acked_rows: set[int] = field(default_factory=set)
    unknown_rows: set[int] = field(default_factory=set)
    acked_increments: int = 0
    unknown_increments: int = 0
    stats: Stats = field(default_factory=Stats)
    stop: asyncio.Event | None = None
    errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def _post(self, client: httpx.AsyncClient, url: str, body: list[Any]) -> tuple[str, Any]:
        """("ok", result) | ("failed", reason) | ("unknown", reason)."""
        try:
            reply = await client.post(url, content=json.dumps(body).encode(), timeout=6.0)
        except httpx.ConnectError as exc:
            return "failed", f"connect: {exc}"
        except httpx.HTTPError as exc:
            return "unknown", f"{type(exc).__name__}: {exc}"
        try:
            data = reply.json()
        except ValueError:
            return "unknown", f"HTTP {reply.status_code}: {reply.text[:100]}"
        if reply.status_code == 200:
            result = data["results"][0]
            if "error" in result:
                self.errors.append(f"statement error: {result['error']}")
                return "unknown", result["error"]
            return "ok", result
        if reply.status_code == 503 and data.get("outcome") == "not_applied":
            return "failed", data.get("error")
        if reply.status_code == 503:
            return "unknown", data.get("error")
        self.errors.append(f"HTTP {reply.status_code}: {data}")
        return "unknown", str(data)

    def _node_url(self) -> str | None:
        nodes = [n for n in self.cluster.members if n.running]
        return random.choice(nodes).url if nodes else None

    async def _register_client(self, cid: int) -> None:
        assert self.stop is not None
        seq = 0
        async with httpx.AsyncClient(trust_env=False) as client:
            while not self.stop.is_set():
                base = self._node_url()
                if base is None:
                    await asyncio.sleep(0.05)
                    continue
                key = f"k{random.randrange(self.keys)}"
                roll = random.random()
                call = time.monotonic()
                if roll < 0.45:
                    seq += 1
                    value = cid * 1_000_000 + seq
                    sql = [
                        "INSERT INTO reg (k, v) VALUES (?, ?)"
                        " ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                        key,
                        value,
                    ]
                    outcome, _ = await self._post(client, base + "/db/execute", [sql])
                    self._record(Op(cid, key, "write", value, None, call, None), outcome)
                elif roll < 0.80:
                    url = f"{base}/db/query?level={self.read_level}"
                    outcome, result = await self._post(
                        client, url, [["SELECT v FROM reg WHERE k = ?", key]]
                    )
                    if outcome == "ok":
                        values = result.get("values") or []
                        seen = values[0][0] if values else None
                        self._record(Op(cid, key, "read", None, seen, call, None), outcome)
                    else:
                        self._count(outcome, "read")
                else:
                    expected = self._recent_value(key)
                    seq += 1
                    new = cid * 1_000_000 + seq
                    sql = ["UPDATE reg SET v = ? WHERE k = ? AND v IS ?", new, key, expected]
                    outcome, result = await self._post(client, base + "/db/execute", [sql])
                    matched = bool(result.get("rows_affected", 0)) if outcome == "ok" else None
                    self._record(Op(cid, key, "cas", (expected, new), matched, call, None), outcome)

    def _recent_value(self, key: str) -> int | None:
        for op in reversed(self.history[-50:]):
            if op.key == key and op.kind == "read":
                value: int | None = op.output
                return value
        return None

    def _count(self, outcome: str, kind: str) -> None:
        if outcome == "ok":
            self.stats.ok += 1
        elif outcome == "failed":
            self.stats.failed += 1
        else:
            self.stats.unknown += 1
        self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1

    def _record(self, op: Op, outcome: str) -> None:
        self._count(outcome, op.kind)
        if outcome == "failed":
            return
        ret = time.monotonic() if outcome == "ok" else None
        self.history.append(Op(op.client, op.key, op.kind, op.value, op.output, op.call, ret))

    async def _ledger_client(self, cid: int) -> None:
        assert self.stop is not None
        row = cid * 10_000_000
        async with httpx.AsyncClient(trust_env=False) as client:
            while not self.stop.is_set():
                base = self._node_url()
                if base is None:
                    await asyncio.sleep(0.05)
                    continue
                row += 1
                body = [
                    ["INSERT INTO acks (id, client) VALUES (?, ?)", row, cid],
                    "UPDATE counter SET n = n + 1 WHERE id = 1",
                ]
                outcome, reason = await self._post(client, base + "/db/execute?transaction", body)
                self._count(outcome, "ledger")
                if outcome != "ok":
                    self.failures.append(f"ledger row {row} at {base}: {outcome} {reason}")
                if outcome == "ok":
                    self.acked_rows.add(row)
                    self.acked_increments += 1
                elif outcome == "unknown":
                    self.unknown_rows.add(row)
                    self.unknown_increments += 1

    async def run(self, seconds: float, faults: Any = None) -> None:
        """Run the clients for at least ``seconds`` and until ``faults()`` (a coroutine
        function injecting faults meanwhile, if given) returns."""
        self.stop = asyncio.Event()
        tasks = [asyncio.create_task(self._register_client(c + 1)) for c in range(self.clients)]
        tasks.append(asyncio.create_task(self._ledger_client(99)))
        try:
            await asyncio.gather(asyncio.sleep(seconds), *([faults()] if faults else []))
        finally:
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def final_reads(self) -> None:
        """One linearizable read per key after the faults, to close the history."""
        async with httpx.AsyncClient(trust_env=False) as client:
            for k in range(self.keys):
                key = f"k{k}"
                for _ in range(20):
                    base = self._node_url()
                    assert base is not None
                    call = time.monotonic()
                    outcome, result = await self._post(
                        client,
                        f"{base}/db/query?level=linearizable",
                        [["SELECT v FROM reg WHERE k = ?", key]],
                    )
                    if outcome == "ok":
                        values = result.get("values") or []
                        seen = values[0][0] if values else None
                        self.history.append(Op(0, key, "read", None, seen, call, time.monotonic()))
                        break
                    await asyncio.sleep(0.2)

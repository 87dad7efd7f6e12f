"""Room Store benchmark (kept out of ``make test``).

Measures, in one run, against raw ``sqlite3`` doing the same rows and indexes with the same
pragmas (the ceiling):

1. ingest with ``RoomStore.store_events`` in batches of 1,000 events (~500-byte PDUs) vs raw
   ``executemany`` of the same rows (events, edges, auth, forward extremities, state) in one
   transaction per batch;
2. single events with ``RoomStore.store_event`` (one caller, and many concurrent callers that
   group-commit) vs raw one-event transactions;
3. ``query_events`` latency (type filter, limit 50, random cursors) on a room of 1,000,000
   events, built once and kept in ``--workdir`` for later runs.

Ingest runs at ``synchronous=NORMAL`` (the room default) and ``FULL``. Each measurement is
repeated (ours and raw alternate) and the median reported, since the machine may be shared.
The Room Store runs on the event loop ``cis-node run`` uses (``[node] event_loop``: uvloop
unless ``CIS_EVENT_LOOP=asyncio``).

    .venv/bin/python bench/roomstore.py [--workdir /tmp/cis-bench] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import string
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canonicaljson import encode_canonical_json

from cis.cli.run import loop_factory
from cis.clock import SystemClock
from cis.home import Home
from cis.ids import EventId, RoomId, UserId
from cis.log import configure_logging
from cis.storage.events import content_strings
from cis.storage.node_store import NodeStore
from cis.storage.rooms import schema
from cis.storage.rooms.manager import DEFAULT_ROOM_CACHE_KIB, RoomStoreManager
from cis.storage.rooms.store import RoomStore
from cis.storage.rooms.types import Direction, EventFilter, Pagination
from cis.storage.sqlite import Synchronous, connect, migrate
from cis.storage.stream import StreamPositions

ROOM = RoomId("!bench:n.cis.local")
TYPES = ("m.room.message",) * 16 + ("m.reaction", "m.reaction", "cis.dag.run", "m.room.member")
SENDERS = tuple(UserId(f"@u{i}:n.cis.local") for i in range(20))
SIGNATURE = bytes(range(64))
AUTH = tuple(EventId("$" + "a" * 42 + str(i)) for i in range(3))


@dataclass(frozen=True, slots=True)
class BenchEvent:
    event_id: EventId
    room_id: RoomId
    sender: UserId
    type: str
    state_key: str | None
    origin_server_ts: int
    depth: int
    prev_events: tuple[EventId, ...]
    auth_events: tuple[EventId, ...]
    content: dict[str, Any]
    redacts: EventId | None
    room_version: str
    canonical_bytes: bytes

    @property
    def is_state(self) -> bool:
        return self.state_key is not None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def make_events(count: int, rng: random.Random, start_depth: int = 1) -> list[BenchEvent]:
    """A chain of ``count`` events of about 500 bytes each."""
    events: list[BenchEvent] = []
    prev: tuple[EventId, ...] = ()
    for i in range(count):
        event_type = rng.choice(TYPES)
        sender = rng.choice(SENDERS)
        state_key = sender if event_type == "m.room.member" else None
        if event_type == "m.room.member":
            content: dict[str, Any] = {"membership": "join", "displayname": sender[1:9]}
        else:
            words = rng.choices(string.ascii_lowercase, k=24)
            content = {"msgtype": "m.text", "body": "".join(words)}
        pdu: dict[str, Any] = {
            "room_id": ROOM,
            "sender": sender,
            "type": event_type,
            "content": content,
            "origin_server_ts": 1_700_000_000_000 + start_depth + i,
            "depth": start_depth + i,
            "prev_events": list(prev),
            "auth_events": list(AUTH),
            "hashes": {"sha256": _b64(hashlib.sha256(repr(content).encode()).digest())},
            "signatures": {"n.cis.local": {"ed25519:0123456789abcdef": _b64(SIGNATURE)}},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        raw = encode_canonical_json(pdu)
        event_id = EventId("$" + _b64(hashlib.sha256(raw).digest()))
        events.append(
            BenchEvent(
                event_id, ROOM, sender, event_type, state_key, pdu["origin_server_ts"],
                pdu["depth"], prev, AUTH, content, None, "10", raw,
            )
        )  # fmt: skip
        prev = (event_id,)
    return events


# ---------------------------------------------------------------------------- raw ceiling

_INSERT_EVENT = (
    "INSERT INTO events (stream_ordering, event_id, sender, type, state_key, origin_server_ts,"
    " received_ts, depth, redacts, room_version, status, pdu, strings)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class RawRows:
    """Every row ``store_events`` writes for a batch: events, edges, auth, extremities, state."""

    events: list[tuple[Any, ...]]
    edges: list[tuple[str, str]]
    auths: list[tuple[str, str]]
    stale_extremities: list[tuple[str]]
    new_extremities: list[tuple[str]]
    state: list[tuple[str, str, str, int]]


def raw_rows(events: Sequence[BenchEvent], first: int) -> RawRows:
    rows = [
        (
            first + i, e.event_id, e.sender, e.type, e.state_key, e.origin_server_ts, 0, e.depth,
            None, e.room_version, "timeline", e.canonical_bytes, content_strings(e.content),
        )
        for i, e in enumerate(events)
    ]  # fmt: skip
    prevs = {p for e in events for p in e.prev_events}
    return RawRows(
        events=rows,
        edges=[(e.event_id, p) for e in events for p in e.prev_events],
        auths=[(e.event_id, a) for e in events for a in e.auth_events],
        stale_extremities=[(p,) for p in sorted(prevs)],
        new_extremities=[(e.event_id,) for e in events if e.event_id not in prevs],
        state=[
            (e.type, e.state_key, e.event_id, first + i)
            for i, e in enumerate(events)
            if e.state_key is not None
        ],
    )


def raw_write(conn: sqlite3.Connection, rows: RawRows) -> None:
    """One transaction writing ``rows``, as plainly as sqlite3 allows."""
    conn.execute("BEGIN IMMEDIATE")
    if len(rows.events) == 1:
        conn.execute(_INSERT_EVENT, rows.events[0])
    else:
        conn.executemany(_INSERT_EVENT, rows.events)
    conn.executemany("INSERT INTO event_edges VALUES (?, ?)", rows.edges)
    conn.executemany("INSERT INTO event_auth VALUES (?, ?)", rows.auths)
    conn.executemany("DELETE FROM forward_extremities WHERE event_id = ?", rows.stale_extremities)
    conn.executemany("INSERT INTO forward_extremities (event_id) VALUES (?)", rows.new_extremities)
    conn.executemany(
        "INSERT INTO room_state (type, state_key, event_id, stream_ordering) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (type, state_key) DO UPDATE SET event_id = excluded.event_id,"
        " stream_ordering = excluded.stream_ordering",
        rows.state,
    )
    conn.execute("COMMIT")


def raw_connection(path: Path, sync: Synchronous) -> sqlite3.Connection:
    conn = connect(path, synchronous=sync, cache_size_kib=DEFAULT_ROOM_CACHE_KIB)
    migrate(conn, schema.KIND, schema.MIGRATIONS, path)
    return conn


def raw_batches(path: Path, batches: list[list[BenchEvent]], sync: Synchronous) -> float:
    conn = raw_connection(path, sync)
    prepared = []
    position = 1
    for batch in batches:
        prepared.append(raw_rows(batch, position))
        position += len(batch)
    started = time.perf_counter()
    for rows in prepared:
        raw_write(conn, rows)
    elapsed = time.perf_counter() - started
    conn.close()
    return sum(len(b) for b in batches) / elapsed


def raw_single(path: Path, events: list[BenchEvent], sync: Synchronous) -> float:
    conn = raw_connection(path, sync)
    prepared = [raw_rows([e], i + 1) for i, e in enumerate(events)]
    started = time.perf_counter()
    for rows in prepared:
        raw_write(conn, rows)
    elapsed = time.perf_counter() - started
    conn.close()
    return len(events) / elapsed


# ---------------------------------------------------------------------------- ours


class Node:
    """A node's storage (node.db + Room Store), as ``cis-node run`` wires it."""

    def __init__(self, root: Path, sync: Synchronous) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.home = Home(root)
        self.node = NodeStore.open(self.home, create=True)
        self.manager = RoomStoreManager(
            self.home,
            self.node,
            StreamPositions(self.node.status().stream_max),
            clock=SystemClock(),
            max_open_rooms=8,
            synchronous=sync,
        )

    async def room(self) -> RoomStore:
        return await self.manager.get_or_create(ROOM)

    async def close(self) -> None:
        await self.manager.close()
        self.node.close()


async def ours_batches(root: Path, batches: list[list[BenchEvent]], sync: Synchronous) -> float:
    node = Node(root, sync)
    store = await node.room()
    started = time.perf_counter()
    for batch in batches:
        await store.store_events(batch)
    elapsed = time.perf_counter() - started
    await node.close()
    return sum(len(b) for b in batches) / elapsed


async def ours_single(
    root: Path, events: list[BenchEvent], sync: Synchronous, concurrency: int
) -> float:
    node = Node(root, sync)
    store = await node.room()
    queue = list(reversed(events))

    async def worker() -> None:
        while queue:
            await store.store_event(queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await node.close()
    return len(events) / elapsed


# ---------------------------------------------------------------------------- query


async def build_query_room(root: Path, total: int) -> None:
    marker = root / "built.json"
    if marker.exists() and json.loads(marker.read_text()).get("events") == total:
        return
    shutil.rmtree(root, ignore_errors=True)
    node = Node(root, Synchronous.NORMAL)
    store = await node.room()
    rng = random.Random(7)
    started = time.perf_counter()
    depth = 1
    while depth <= total:
        batch = make_events(min(1000, total - depth + 1), rng, depth)
        await store.store_events(batch)
        depth += len(batch)
        if depth % 100_000 < 1000:
            rate = (depth - 1) / (time.perf_counter() - started)
            print(f"  built {depth - 1:,} events ({rate:,.0f}/s)", file=sys.stderr)
    await node.close()
    marker.write_text(json.dumps({"events": total}))


async def query_latency(root: Path, queries: int) -> dict[str, float]:
    node = Node(root, Synchronous.NORMAL)
    store = await node.room()
    stats = await store.stats()
    rng = random.Random(11)
    # Cursors: ids of events spread over the room.
    sample = await store.query_events(EventFilter(types=("m.reaction",)), Pagination(limit=1000))
    cursors = [e.event_id for e in sample.events]
    latest = await store.get_latest_events(1000)
    cursors += [e.event_id for e in latest]
    timings: list[float] = []
    for i in range(queries):
        event_type = ("m.room.message", "m.reaction", "cis.dag.run", "m.room.member")[i % 4]
        cursor = rng.choice(cursors) if i % 3 else None
        page = (
            Pagination(limit=50, before=cursor, direction=Direction.BACKWARDS)
            if cursor
            else Pagination(limit=50)
        )
        started = time.perf_counter()
        result = await store.query_events(EventFilter(types=(event_type,)), page)
        timings.append((time.perf_counter() - started) * 1000)
        assert result.events or cursor is not None
    await node.close()
    timings.sort()
    return {
        "events_in_room": float(stats.total_events),
        "queries": float(queries),
        "median_ms": statistics.median(timings),
        "p95_ms": timings[int(len(timings) * 0.95)],
        "p99_ms": timings[int(len(timings) * 0.99)],
    }


# ---------------------------------------------------------------------------- main


def median_of(values: list[float]) -> float:
    return statistics.median(values)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cis-bench"))
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 per run")
    parser.add_argument("--single", type=int, default=3000, help="single-event writes per run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--query-events", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    args = parser.parse_args()
    configure_logging("warning")
    if args.quick:
        args.batches, args.single, args.repeat = 3, 300, 1
        args.query_events, args.queries = 20_000, 100
    work: Path = args.workdir
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    rng = random.Random(1)
    batches = [make_events(1000, rng, 1 + b * 1000) for b in range(args.batches)]
    singles = make_events(args.single, rng)
    size = statistics.mean(len(e.canonical_bytes) for b in batches for e in b)
    results: dict[str, Any] = {"event_bytes_mean": round(size)}
    print(f"events of {size:.0f} bytes on average; {args.repeat} repeats, medians", file=sys.stderr)

    for sync in (Synchronous.NORMAL, Synchronous.FULL):
        figures: dict[str, list[float]] = {
            "store_events": [], "raw_executemany": [], "store_event_1": [],
            f"store_event_{args.concurrency}": [], "raw_one_row_txn": [],
        }  # fmt: skip
        for rep in range(args.repeat):
            scratch = work / f"ingest-{sync.value}-{rep}"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            figures["raw_executemany"].append(raw_batches(scratch / "raw.db", batches, sync))
            figures["store_events"].append(await ours_batches(scratch / "a", batches, sync))
            figures["raw_one_row_txn"].append(raw_single(scratch / "raw1.db", singles, sync))
            figures["store_event_1"].append(await ours_single(scratch / "b", singles, sync, 1))
            figures[f"store_event_{args.concurrency}"].append(
                await ours_single(scratch / "c", singles, sync, args.concurrency)
            )
            shutil.rmtree(scratch, ignore_errors=True)
        medians = {k: round(median_of(v)) for k, v in figures.items()}
        medians["ratio_batches"] = round(medians["store_events"] / medians["raw_executemany"], 2)
        medians["ratio_single_1"] = round(medians["store_event_1"] / medians["raw_one_row_txn"], 2)
        medians[f"ratio_single_{args.concurrency}"] = round(
            medians[f"store_event_{args.concurrency}"] / medians["raw_one_row_txn"], 2
        )
        results[f"ingest_{sync.value}"] = medians
        print(f"{sync.value}: {json.dumps(medians)}", file=sys.stderr)

    query_root = work / f"query-{args.query_events}"
    print(f"query room of {args.query_events:,} events in {query_root}", file=sys.stderr)
    await build_query_room(query_root, args.query_events)
    latency = await query_latency(query_root, args.queries)
    results["query"] = {k: round(v, 3) for k, v in latency.items()}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    _loop = os.environ.get("CIS_EVENT_LOOP", "uvloop")
    print(f"event loop: {_loop}", file=sys.stderr)
    with asyncio.Runner(loop_factory=loop_factory(_loop)) as runner:
        runner.run(main())

"""Federation figures on loopback, in one run: propagation latency from a send on A to B's Room
Store and to B's ``/sync`` (p50, p99), sustained throughput A→B, and the catch-up rate after
B missed many events, with the CPU each side spent.

    .venv/bin/python bench/federation.py [--latency 1000] [--throughput 10000] [--catchup 100000]

A is a real ``cis-node run`` process (its own core). B is a ``Node`` in this process, so its
Room Store can be watched directly (a subscription, woken by the commit that stores the event);
the Matrix clients (alice on A, bob's long-polling ``/sync`` on B) run here too, so B's figures
include the clients' work. This process runs on the kind of event loop a node runs on (uvloop,
``cis-node run``'s default; ``--event-loop asyncio`` for asyncio's own). All times come from
this process's monotonic clock.

Targets (issue 4): p50 < 5 ms, p99 < 25 ms, catch-up >= 10,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from cis.cli.run import loop_factory
from cis.config import EVENT_LOOPS, load_config
from cis.handlers.room_cache import Draft
from cis.home import Home
from cis.identity import NodeIdentity
from cis.ids import RoomId, UserId
from cis.node import Node
from cis.storage.homes import initialise_home, write_admin_token

V3 = "/_matrix/client/v3"
FEDERATED = {"type": "io.cis.room.federation", "state_key": "", "content": {"federate": True}}
_txn = itertools.count(1)


@dataclass
class Cpu:
    """CPU seconds (user + system) of A's process and of this one (B and the clients) with
    its live worker processes (receipt's process pool; a worker that exits between two
    samples is missed)."""

    a: psutil.Process
    b: psutil.Process

    def sample(self) -> tuple[float, float, float]:
        ta = self.a.cpu_times()
        b = 0.0
        for process in [self.b, *self.b.children(recursive=True)]:  # B's receipt workers too
            if process.pid == self.a.pid:
                continue
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                b += times.user + times.system
        return ta.user + ta.system, b, time.monotonic()

    @staticmethod
    def split(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
        wall = after[2] - before[2]
        a, b = after[0] - before[0], after[1] - before[1]
        return (
            f"CPU: A {a:.2f} s ({100 * a / wall:.0f}% of a core), "
            f"B+clients {b:.2f} s ({100 * b / wall:.0f}%), wall {wall:.2f} s"
        )


class Client:
    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=120)
        self.token = ""
        self.user_id = ""

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.http.request(
            method, path, json=body, params=params or None, headers=headers
        )
        if response.status_code != 200:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    async def register(self, name: str) -> None:
        body = {"username": name, "password": f"{name}-pw", "auth": {"type": "m.login.dummy"}}
        answer = await self.call("POST", f"{V3}/register", body)
        self.token, self.user_id = answer["access_token"], answer["user_id"]

    async def send(self, room_id: str, body: str) -> None:
        path = f"{V3}/rooms/{room_id}/send/m.room.message/b{next(_txn)}"
        await self.call("PUT", path, {"msgtype": "m.text", "body": body})


CHILDREN: list[subprocess.Popen[bytes]] = []
"""A's processes, stopped by pid whatever way the bench ends (``stop_children``)."""


def stop_children() -> None:
    for process in CHILDREN:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    CHILDREN.clear()


def init_a(root: Path) -> str:
    """``cis-node init`` for A; returns its DID."""
    home = root / "a"
    cis = [sys.executable, "-m", "cis"]
    subprocess.run([*cis, "init", "--home", str(home), "--node-name", "a"], check=True,
                   capture_output=True)  # fmt: skip
    status = subprocess.run([*cis, "status", "--home", str(home), "--json"], check=True,
                            capture_output=True)  # fmt: skip
    return str(json.loads(status.stdout)["did"])


def start_a(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``cis-node run`` for A's home; returns the process and its URL."""
    home = root / "a"
    cis = [sys.executable, "-m", "cis"]
    log = (root / "a.log").open("ab")
    process = subprocess.Popen(
        [*cis, "run", "--home", str(home), "--listen", "127.0.0.1:0", "--open-registration",
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    CHILDREN.append(process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            runtime = json.loads((home / "run" / "node.json").read_text())
            if runtime.get("pid") == process.pid:
                return process, str(runtime["url"])
        if process.poll() is not None:
            raise RuntimeError(f"A exited: {(root / 'a.log').read_text()}")
        time.sleep(0.05)
    raise RuntimeError("A did not start")


async def start_b(home: Home, a_url: str) -> Node:
    endpoint = a_url.replace("http://", "ws://") + "/_cis/federation/v1"
    flags = {"--listen": "127.0.0.1:0", "--open-registration": True, "--peer": (endpoint,)}
    config = load_config(home, flags=flags, environ={"CIS_LOG_LEVEL": "warning"})
    node = Node(home, config)
    await node.start()
    return node


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Arrivals:
    """When each message body reached B's Room Store (a subscription) and bob's ``/sync``."""

    def __init__(self) -> None:
        self.store: dict[str, float] = {}
        self.store_after_origin: dict[str, float] = {}
        """Wall-clock ms from the event's ``origin_server_ts`` (stamped by A's event builder,
        after A received and authorised the PUT, before its commit) to its arrival in B's
        Room Store: the part of the latency after A's HTTP handling. Both are this machine's
        clock; ``origin_server_ts`` is truncated to the ms, so this reads up to 1 ms high."""
        self.sync: dict[str, float] = {}
        self.last_position = 0
        self.wanted: set[str] = set()
        self.all_stored = asyncio.Event()

    def expect(self, bodies: set[str]) -> None:
        self.wanted = set(bodies) - set(self.store)
        self.all_stored = asyncio.Event()
        if not self.wanted:
            self.all_stored.set()

    async def follow_store(self, node: Node, room_id: str) -> None:
        events: AsyncIterator[Any] = node.storage.rooms.follow(room_id, after=self.last_position)
        async for event in events:
            now, wall_ms = time.monotonic(), time.time() * 1000
            self.last_position = event.stream_ordering
            body = event.content.get("body") if event.type == "m.room.message" else None
            if isinstance(body, str):
                self.store.setdefault(body, now)
                self.store_after_origin.setdefault(body, wall_ms - event.origin_server_ts)
                self.wanted.discard(body)
                if not self.wanted:
                    self.all_stored.set()

    async def follow_sync(self, bob: Client, room_id: str) -> None:
        answer = await bob.call("GET", f"{V3}/sync", timeout="0")
        since = answer["next_batch"]
        while True:
            answer = await bob.call("GET", f"{V3}/sync", since=since, timeout="30000")
            now = time.monotonic()
            since = answer["next_batch"]
            room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
            for event in room.get("timeline", {}).get("events", []):
                body = event.get("content", {}).get("body")
                if isinstance(body, str):
                    self.sync.setdefault(body, now)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def send_many(senders: list[Client], room_id: str, bodies: list[str]) -> float:
    """Send every body, each sender one request at a time, all senders at once (one user per
    sender, so no user's message rate limit is the bottleneck); the seconds it took."""
    queue = iter(bodies)
    started = time.monotonic()

    async def sender(client: Client) -> None:
        for body in queue:
            await client.send(room_id, body)

    await asyncio.gather(*(sender(c) for c in senders))
    return time.monotonic() - started


async def grow_offline(home: Path, room_id: str, sender: str, count: int) -> tuple[int, float]:
    """``count`` messages added to A's room while A is stopped, built and stored by A's own
    ``EventCreator`` (the same path as a client's send, minus HTTP); returns how many and
    the seconds it took."""
    config = load_config(Home(home), flags={"--listen": "127.0.0.1:0"},
                         environ={"CIS_LOG_LEVEL": "warning"})  # fmt: skip
    node = Node(Home(home), config)
    await node.start()
    creator = node.client.creator
    assert creator is not None
    bodies = iter(range(count))
    started = time.monotonic()

    async def worker() -> None:
        for i in bodies:
            draft = Draft(
                UserId(sender), "m.room.message", {"msgtype": "m.text", "body": f"missed {i}"}
            )
            await creator.create(RoomId(room_id), draft)

    try:
        await asyncio.gather(*(worker() for _ in range(64)))
        return count, time.monotonic() - started
    finally:
        await node.stop()


async def bench(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # unwind through the finally below
        loop.add_signal_handler(signum, task.cancel)

    root = Path(tempfile.mkdtemp(prefix="cis-bench-fed-"))
    a_did = init_a(root)
    a_process, a_url = start_a(root)
    b_home = Home(root / "b")
    b_home.root.mkdir()
    initialise_home(b_home, NodeIdentity.generate("b"), 0)
    write_admin_token(b_home)
    node = await start_b(b_home, a_url)
    cpu = Cpu(psutil.Process(a_process.pid), psutil.Process(os.getpid()))
    alice, bob = Client(a_url), Client(str(node.url))
    tasks: list[asyncio.Task[None]] = []
    senders = [alice]
    try:
        print(f"A: cis-node run pid {a_process.pid} at {a_url}; B in-process at {node.url}")

        async def tunnel_up() -> bool:
            manager = node.federation.manager
            status = manager.status(a_did) if manager is not None else None
            return status is not None and status.online

        await until(tunnel_up, 30, "the tunnel B -> A")
        await alice.register("alice")
        await bob.register("bob")
        created = await alice.call(
            "POST", f"{V3}/createRoom", {"preset": "public_chat", "initial_state": [FEDERATED]}
        )
        room_id = str(created["room_id"])
        await bob.call("POST", f"{V3}/join/{room_id}", {})
        senders = [alice]
        for i in range(1, args.concurrency):
            sender = Client(a_url)
            await sender.register(f"sender{i}")
            await sender.call("POST", f"{V3}/join/{room_id}", {})
            senders.append(sender)
        arrivals = Arrivals()
        tasks.append(asyncio.create_task(arrivals.follow_store(node, room_id)))
        tasks.append(asyncio.create_task(arrivals.follow_sync(bob, room_id)))
        await asyncio.sleep(0.2)  # the long poll is waiting

        # 1. Latency: one message at a time, the next once the previous reached /sync.
        before = cpu.sample()
        sent: dict[str, float] = {}
        acked: dict[str, float] = {}
        for i in range(args.latency):
            body = f"latency {i}"
            sent[body] = time.monotonic()
            await alice.send(room_id, body)
            acked[body] = time.monotonic()

            async def synced(body: str = body) -> bool:
                return body in arrivals.sync

            await until(synced, 10, f"{body!r} in B's /sync")
        to_store = [1000 * (arrivals.store[b] - t) for b, t in sent.items()]
        to_sync = [1000 * (arrivals.sync[b] - t) for b, t in sent.items()]
        print(f"\nlatency, {args.latency} messages one at a time (ms from the PUT on A;")
        print("  the last line is the PUT's own round trip, the event committed on A):")
        put = [1000 * (acked[b] - t) for b, t in sent.items()]
        from_origin = [arrivals.store_after_origin[b] for b in sent]
        for name, values in (
            ("B's Room Store", to_store),
            ("B's /sync", to_sync),
            ("A's PUT", put),
        ):
            print(
                f"  {name:15} p50 {percentile(values, 50):6.2f}  p99 {percentile(values, 99):6.2f}"
                f"  max {max(values):6.2f}  mean {statistics.fmean(values):6.2f}"
            )
        print(
            f"  from A's event build (origin_server_ts, ms, so up to 1 ms high) to B's Room Store:"
            f" p50 {percentile(from_origin, 50):.2f}  p99 {percentile(from_origin, 99):.2f}"
        )
        print("  " + cpu.split(before, cpu.sample()))

        # 2. Sustained throughput: many senders on A; until the last one is in B's store.
        bodies = [f"throughput {i}" for i in range(args.throughput)]
        arrivals.expect(set(bodies))
        before = cpu.sample()
        started = time.monotonic()
        send_s = await send_many(senders, room_id, bodies)
        await asyncio.wait_for(arrivals.all_stored.wait(), 300)
        total = time.monotonic() - started
        print(f"\nthroughput, {args.throughput} messages from {args.concurrency} senders on A:")
        print(f"  A accepted {args.throughput / send_s:8.0f} events/s")
        print(
            f"  B stored   {args.throughput / total:8.0f} events/s (all stored after {total:.2f} s)"
        )
        print("  " + cpu.split(before, cpu.sample()))

        # 3. Catch-up: B stops; A stops too and its room grows offline by the node's own
        # event builder and Room Store (A's home opened in this process, many concurrent
        # creations sharing group commits); A restarts and B, restarted, fetches them all.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()
        await bob.http.aclose()
        await node.stop()
        stop_children()
        made, make_s = await grow_offline(root / "a", room_id, alice.user_id, args.catchup)
        print(
            f"\ncatch-up: B and A stopped; A's room grew by {made} events offline "
            f"({made / make_s:.0f}/s, the node's own builder and Room Store)"
        )
        a_process, a_url = start_a(root)
        cpu = Cpu(psutil.Process(a_process.pid), psutil.Process(os.getpid()))
        bodies = [f"missed {i}" for i in range(args.catchup)]
        arrivals.expect(set(bodies))
        before = cpu.sample()
        started = time.monotonic()
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        node = await start_b(b_home, a_url)
        tasks.append(asyncio.create_task(arrivals.follow_store(node, room_id)))
        await until(tunnel_up, 30, "the tunnel B -> A again")
        online = time.monotonic()
        await asyncio.wait_for(arrivals.all_stored.wait(), 1800)
        done = time.monotonic()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        first = min(arrivals.store[b] for b in bodies)
        print(f"  A and B restarted; tunnel up after {online - started:.2f} s")
        print(f"  first missed event stored {first - online:.2f} s after the tunnel came up")
        print(
            f"  all {args.catchup} stored {done - online:.2f} s after it: "
            f"{args.catchup / (done - online):.0f} events/s"
        )
        print("  " + cpu.split(before, cpu.sample()))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in senders:
            await client.http.aclose()
        with contextlib.suppress(Exception):
            await bob.http.aclose()
        with contextlib.suppress(Exception):
            await node.stop()
        stop_children()
        print(f"\n(files kept in {root})" if args.keep else "")
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=int, default=1000, help="messages sent one at a time")
    parser.add_argument("--throughput", type=int, default=10_000, help="messages for throughput")
    parser.add_argument("--catchup", type=int, default=100_000, help="messages B misses")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent senders on A")
    parser.add_argument(
        "--event-loop", choices=EVENT_LOOPS, default="uvloop",
        help="this process's loop (B and the clients); A runs on its configured one",
    )  # fmt: skip
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile of this process (B) during the catch-up"
    )
    parser.add_argument("--keep", action="store_true", help="keep the homes and A's log")
    args = parser.parse_args()
    for name in ("latency", "throughput", "catchup", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    try:
        # B runs on the event loop a node runs on (``cis-node run``: uvloop by default).
        with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
            runner.run(bench(args))
    except asyncio.CancelledError:
        print("bench: stopped by a signal", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        stop_children()  # also when the loop never reached the bench's own finally


if __name__ == "__main__":
    main()

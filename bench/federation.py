"""Federation figures on loopback, in one run: propagation latency from a send on A to B's Room
Store and to B's ``/sync`` (p50, p99), sustained throughput A→B, and the catch-up rate after
B missed many events, with the CPU each side spent.

    .venv/bin/python bench/federation.py [--latency 1000] [--throughput 10000] [--catchup 100000]

A is a real ``cis-node run`` process. B is a ``Node`` in this process, so its Room Store can
be watched directly (a subscription, woken by the commit that stores the event). The Matrix
clients that are measured (alice and the other senders on A, bob's long-polling ``/sync`` on
B) run in a third process, as a user's clients do: their HTTP work is not done on B's event
loop. This process runs on the kind of event loop a node runs on (uvloop, ``cis-node run``'s
default; ``--event-loop asyncio`` for asyncio's own). Times are ``time.monotonic()``, which on
Linux is ``CLOCK_MONOTONIC``, one clock for every process on the machine: the clients' process
reports when it sent each PUT and when each message reached bob's ``/sync``.

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
import urllib.parse
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


Sample = tuple[float, float, float, float]


@dataclass
class Cpu:
    """CPU seconds (user + system) of A's process, of this one (B) with its live worker
    processes (receipt's process pool; a worker that exits between two samples is missed),
    and of the clients' process."""

    a: psutil.Process
    b: psutil.Process
    clients: psutil.Process | None = None

    def sample(self) -> Sample:
        ta = self.a.cpu_times()
        b = clients = 0.0
        for process in [self.b, *self.b.children(recursive=True)]:  # B's receipt workers too
            if process.pid == self.a.pid:
                continue
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                if self.clients is not None and process.pid == self.clients.pid:
                    clients += times.user + times.system
                else:
                    b += times.user + times.system
        return ta.user + ta.system, b, clients, time.monotonic()

    @staticmethod
    def split(before: Sample, after: Sample) -> str:
        wall = after[3] - before[3]
        a, b, c = (after[i] - before[i] for i in range(3))
        return (
            f"CPU: A {a:.2f} s ({100 * a / wall:.0f}% of a core), B {b:.2f} s "
            f"({100 * b / wall:.0f}%), clients {c:.2f} s ({100 * c / wall:.0f}%), "
            f"wall {wall:.2f} s"
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


class LeanClient:
    """What the clients' process speaks: HTTP/1.1 over one kept-alive asyncio connection,
    one request at a time (a sender waits for each answer anyway). httpx spends about a
    millisecond of CPU on each request on this machine; that is a client library's cost, and
    the figures are the node's, so the measured requests do without it."""

    def __init__(self, url: str, token: str, user_id: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.token, self.user_id = token, user_id
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {urllib.parse.quote(target, safe='/?=&:@!$')} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        length: int | None = None
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            data = b""
            while size := int((await reader.readline()).split(b";")[0], 16):
                data += await reader.readexactly(size)
                await reader.readline()
            await reader.readline()
        else:
            data = await reader.readexactly(length or 0)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {data[:200]!r}")
        return json.loads(data)

    async def send(self, room_id: str, body: str) -> None:
        path = f"{V3}/rooms/{room_id}/send/m.room.message/c{next(_txn)}"
        await self.call("PUT", path, {"msgtype": "m.text", "body": body})

    async def aclose(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class Clients:
    """The measured Matrix clients, in a process of their own (``--clients``): one JSON
    command per line on its stdin, one JSON answer per line on its stdout (an ``id`` for a
    command's answer; ``synced`` lines whenever bob's ``/sync`` brings a message)."""

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals = arrivals
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self, event_loop: str) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--clients", "--event-loop", event_loop,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        while line := await self._process.stdout.readline():
            message = json.loads(line)
            if "synced" in message:
                self._arrivals.on_synced(message["synced"], message["t"])
                continue
            future = self._pending.pop(message["id"], None)
            if future is not None and not future.done():
                if "error" in message:
                    future.set_exception(RuntimeError(message["error"]))
                else:
                    future.set_result(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError("the clients' process exited"))

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdin is not None
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        self._process.stdin.write(json.dumps({"id": ident, "op": op, **fields}).encode() + b"\n")
        await self._process.stdin.drain()
        return await future

    async def stop(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("stop"), 30)
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        await self._process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._process = None


async def serve_clients() -> None:
    """The clients' process (``--clients``): alice and the senders on A, bob on B."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    clients: dict[str, LeanClient] = {}
    tasks: set[asyncio.Task[None]] = set()

    def say(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def follow_sync(bob: LeanClient, room_id: str) -> None:
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
                    say({"synced": body, "t": now})

    async def handle(command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "client":
            clients[command["name"]] = LeanClient(
                command["url"], command["token"], command["user_id"]
            )
            return {}
        if op == "send":
            started = time.monotonic()
            await clients[command["who"]].send(command["room"], command["body"])
            return {"t0": started, "t1": time.monotonic()}
        if op == "send_many":
            senders = [clients[name] for name in command["senders"]]
            return {"seconds": await send_many(senders, command["room"], command["bodies"])}
        if op == "follow_sync":
            task = asyncio.create_task(follow_sync(clients[command["who"]], command["room"]))
            tasks.add(task)
            return {}
        raise ValueError(f"unknown op {op!r}")

    while line := await reader.readline():
        command = json.loads(line)
        if command["op"] == "stop":
            break
        try:
            say({"id": command["id"], **(await handle(command))})
        except Exception as exc:
            say({"id": command["id"], "error": repr(exc)})
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients.values():
        await client.aclose()
    if line:
        say({"id": json.loads(line)["id"]})


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
        self._sync_waiters: dict[str, asyncio.Future[None]] = {}
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

    def on_synced(self, body: str, at: float) -> None:
        self.sync.setdefault(body, at)
        waiter = self._sync_waiters.pop(body, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def synced(self, body: str, within: float) -> None:
        if body in self.sync:
            return
        waiter = self._sync_waiters[body] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(waiter, within)
        except TimeoutError:
            raise RuntimeError(f"timed out waiting for {body!r} in B's /sync") from None


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def send_many(senders: list[LeanClient], room_id: str, bodies: list[str]) -> float:
    """Send every body, each sender one request at a time, all senders at once (one user per
    sender, so no user's message rate limit is the bottleneck); the seconds it took."""
    queue = iter(bodies)
    started = time.monotonic()

    async def sender(client: LeanClient) -> None:
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
    alice, bob = Client(a_url), Client(str(node.url))
    tasks: list[asyncio.Task[None]] = []
    senders = [alice]
    arrivals = Arrivals()
    clients = Clients(arrivals)
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
        await clients.start(args.event_loop)
        cpu = Cpu(
            psutil.Process(a_process.pid), psutil.Process(os.getpid()), psutil.Process(clients.pid)
        )
        names = [f"s{i}" for i in range(len(senders))]
        for name, client in [*zip(names, senders, strict=True), ("bob", bob)]:
            await clients.call("client", name=name, url=str(client.http.base_url),
                               token=client.token, user_id=client.user_id)  # fmt: skip
        tasks.append(asyncio.create_task(arrivals.follow_store(node, room_id)))
        await clients.call("follow_sync", who="bob", room=room_id)
        await asyncio.sleep(0.2)  # the long poll is waiting

        # 1. Latency: one message at a time, the next once the previous reached /sync.
        before = cpu.sample()
        sent: dict[str, float] = {}
        acked: dict[str, float] = {}
        for i in range(args.latency):
            body = f"latency {i}"
            answer = await clients.call("send", who=names[0], room=room_id, body=body)
            sent[body], acked[body] = answer["t0"], answer["t1"]
            await arrivals.synced(body, 10)
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
        answer = await clients.call("send_many", senders=names, room=room_id, bodies=bodies)
        send_s = answer["seconds"]
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
        await clients.stop()
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
        await clients.stop()
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
    parser.add_argument("--clients", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients:  # the clients' process (``Clients``)
        with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
            runner.run(serve_clients())
        return
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

"""Real ``cis-node sql`` processes on 127.0.0.1 for tests and scenario scripts.

Every process is started in its own session and remembered; ``Cluster.close()`` (and an
``atexit`` hook, for a script interrupted half-way) kills whatever is still running. Ports come
from the OS (bind to port 0, close) just before a cluster starts, since pysyncobj needs each
member's Raft port fixed and known to the others.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[3]
_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
    _LIVE.clear()


atexit.register(_kill_leftovers)


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_secret(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, (os.urandom(32).hex() + "\n").encode())
    os.close(fd)
    return path


class HttpError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class Node:
    node_id: str
    raft_port: int
    http_port: int
    grpc_port: int
    data_dir: Path
    log_path: Path
    cluster: Cluster
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)

    @property
    def raft_addr(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    @property
    def http_addr(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    def argv(self, join: bool = False) -> list[str]:
        peers = ",".join(
            f"{n.node_id}@{n.raft_addr}" for n in self.cluster.peers_of(self) if n is not self
        )
        args = [
            sys.executable,
            "-m",
            "cis",
            "sql",
            "join" if join else "serve",
            "--id",
            self.node_id,
            "--raft",
            self.raft_addr,
            "--peers",
            peers,
            "--http",
            self.http_addr,
            "--grpc",
            f"127.0.0.1:{self.grpc_port}",
            "--data",
            str(self.data_dir),
            "--secret-file",
            str(self.cluster.secret_file),
            "--request-timeout",
            str(self.cluster.request_timeout),
            "--fault-injection",
        ]
        return args + self.cluster.extra_args + self.extra_args

    def start(self, *, join: bool = False, env: dict[str, str] | None = None) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        full_env = dict(os.environ)
        full_env.pop("CIS_SQL_FAULT", None)
        full_env.update(self.env)
        full_env.update(env or {})
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"--- start {self.starts} {' '.join(self.argv(join))}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.argv(join),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=full_env,
            start_new_session=True,
        )
        log.close()
        _LIVE.add(self.proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """``kill -9`` and wait."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        _LIVE.discard(self.proc)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        _LIVE.discard(self.proc)
        return int(self.proc.returncode)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        _LIVE.discard(self.proc)
        return int(code)

    # ------------------------------------------------------------------ HTTP

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        content = json.dumps(body).encode() if body is not None else None
        return self.cluster.http.request(
            method, self.url + path, content=content, timeout=timeout, headers=headers
        )

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        reply = self.request(method, path, body, **kw)
        try:
            data = reply.json()
        except ValueError:
            data = reply.text
        if not 200 <= reply.status_code < 300:
            raise HttpError(reply.status_code, data)
        return data

    def execute(self, *statements: Any, transaction: bool = False, **kw: Any) -> list[Any]:
        path = "/db/execute" + ("?transaction" if transaction else "")
        data = self.json("POST", path, list(statements), **kw)
        return list(data["results"])

    def query(self, *statements: Any, level: str = "weak", **kw: Any) -> list[Any]:
        data = self.json("POST", f"/db/query?level={level}", list(statements), **kw)
        return list(data["results"])

    def status(self, timeout: float = 3.0) -> dict[str, Any]:
        data = self.json("GET", "/status", timeout=timeout)
        assert isinstance(data, dict)
        return data

    def ready(self) -> bool:
        try:
            return self.request("GET", "/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def partition(self, addresses: Sequence[str]) -> None:
        self.json("POST", "/_cis/partition", {"drop": list(addresses)})

    # ------------------------------------------------------------------ files

    @property
    def db_path(self) -> Path:
        return self.data_dir / "state.db"

    def dump(self) -> list[str]:
        """Schema and every row of every table, in a canonical order (for comparisons)."""
        uri = f"{self.db_path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True)
        try:
            out = []
            schema = conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            ).fetchall()
            out += [repr(row) for row in schema]
            for (table,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            ):
                rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
                out += [f"{table}: {row!r}" for row in sorted(rows, key=repr)]
            out.append(f"user_version: {conn.execute('PRAGMA user_version').fetchone()}")
            return out
        finally:
            conn.close()


class Cluster:
    """N nodes started with ``cis-node sql serve`` (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        extra_args: Sequence[str] = (),
        request_timeout: float = 3.0,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.secret_file = write_secret(root / "cluster.secret")
        self.extra_args = list(extra_args)
        self.request_timeout = request_timeout
        self.http = httpx.Client(trust_env=False)
        self.nodes: list[Node] = []
        self.members: list[Node] = []
        for _ in range(size):
            self.add_node(member=True)

    def add_node(self, *, member: bool) -> Node:
        raft, http, grpc = free_ports(3)
        node_id = str(len(self.nodes) + 1)
        node = Node(
            node_id,
            raft,
            http,
            grpc,
            self.root / f"n{node_id}",
            self.root / f"n{node_id}.log",
            self,
        )
        self.nodes.append(node)
        if member:
            self.members.append(node)
        return node

    def peers_of(self, node: Node) -> list[Node]:
        return [n for n in self.members if n is not node] if node in self.members else self.members

    def start(self) -> None:
        for node in self.members:
            node.start()

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.resume()
                node.kill()
        self.http.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def running(self) -> list[Node]:
        return [n for n in self.members if n.running]

    def logs(self, tail: int = 40) -> str:
        out = []
        for node in self.nodes:
            if node.log_path.exists():
                lines = node.log_path.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"==== node {node.node_id} ====\n" + "\n".join(lines))
        return "\n".join(out)

    # ------------------------------------------------------------------ waiting

    def wait_for(self, what: str, predicate: Any, timeout: float, every: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except (httpx.HTTPError, HttpError, OSError, KeyError):
                last = None
            if last:
                return last
            time.sleep(every)
        raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}\n{self.logs()}")

    def wait_ready(self, timeout: float = 60.0, nodes: Sequence[Node] | None = None) -> Node:
        """Every given (default: running) member is ready and they agree on one leader."""
        chosen = list(nodes) if nodes is not None else self.running()

        def check() -> Node | None:
            if not all(n.ready() for n in chosen):
                return None
            leaders = {n.status()["store"]["leader"]["addr"] for n in chosen}
            if len(leaders) != 1:
                return None
            addr = leaders.pop()
            return next((n for n in self.members if n.raft_addr == addr), None)

        leader: Node = self.wait_for("a ready cluster", check, timeout)
        return leader

    def leader(self, timeout: float = 30.0) -> Node:
        def check() -> Node | None:
            for node in self.running():
                store = node.status()["store"]
                if store["raft"]["state"] == "Leader":
                    return node
            return None

        node: Node = self.wait_for("a leader", check, timeout)
        return node

    def followers(self) -> list[Node]:
        leader = self.leader()
        return [n for n in self.running() if n is not leader]

    def wait_converged(self, timeout: float = 60.0, nodes: Sequence[Node] | None = None) -> int:
        """All given members report the same applied index, twice in a row; returns it."""
        chosen = list(nodes) if nodes is not None else self.running()
        previous: list[int | None] = [None]

        def check() -> int | None:
            indexes = {n.status()["store"]["raft"]["applied_index"] for n in chosen}
            commits = {n.status()["store"]["raft"]["commit_index"] for n in chosen}
            if len(indexes) == 1 and indexes == commits:
                value = indexes.pop()
                if previous[0] == value:
                    return int(value)
                previous[0] = value
            else:
                previous[0] = None
            return None

        index: int = self.wait_for("replicas to converge", check, timeout, every=0.3)
        return index

    def assert_identical(self, nodes: Sequence[Node] | None = None) -> int:
        """Converge, then compare every replica's database (schema included)."""
        chosen = list(nodes) if nodes is not None else self.running()
        index = self.wait_converged(nodes=chosen)
        dumps = {n.node_id: n.dump() for n in chosen}
        first = chosen[0].node_id
        for node_id, dump in dumps.items():
            if dump != dumps[first]:
                diff = sorted(set(dump) ^ set(dumps[first]))[:20]
                raise AssertionError(f"node {node_id} differs from node {first}: {diff}")
        return index


@contextlib.contextmanager
def running_cluster(root: Path, size: int = 3, **kw: Any) -> Iterator[Cluster]:
    cluster = Cluster(root, size, **kw)
    try:
        cluster.start()
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.close()

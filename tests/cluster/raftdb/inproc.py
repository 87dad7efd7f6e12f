"""A cluster of ``RaftDB`` nodes inside the test process, with their HTTP and gRPC servers.

Real pysyncobj, real sockets on 127.0.0.1, one event loop thread serving every node's APIs;
faster to start than processes, so the API details are tested here and the faults in
``tests/e2e/raftdb``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

from cis.cluster.raftdb.auth import Users
from cis.cluster.raftdb.config import RaftDBConfig
from cis.cluster.raftdb.db import RaftDB
from cis.cluster.raftdb.grpc_service import start_grpc_server
from cis.cluster.raftdb.http_api import RqliteApi
from cis.cluster.raftdb.http_server import HttpServer
from cis.cluster.raftdb.raft import RaftTimings

T = TypeVar("T")
SECRET = "5c" * 32


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclasses.dataclass
class InProcNode:
    db: RaftDB
    http_addr: str
    grpc_addr: str
    api: RqliteApi | None = None
    http_server: HttpServer | None = None
    grpc_server: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"


class InProcCluster:
    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        users: Users | None = None,
        request_timeout_s: float = 3.0,
        **config: Any,
    ) -> None:
        ports = free_ports(size * 3)
        raft = [f"127.0.0.1:{p}" for p in ports[:size]]
        self.fatal: list[str] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.nodes: list[InProcNode] = []
        for i in range(size):
            cfg = RaftDBConfig(
                node_id=str(i + 1),
                raft_addr=raft[i],
                data_dir=root / f"n{i + 1}",
                secret=SECRET,
                peers={str(j + 1): raft[j] for j in range(size) if j != i},
                http_addr=f"127.0.0.1:{ports[size + i]}",
                grpc_addr=f"127.0.0.1:{ports[2 * size + i]}",
                timings=RaftTimings(election_min=0.4, election_max=0.8),
                request_timeout_s=request_timeout_s,
                **config,
            )
            db = RaftDB(cfg, on_fatal=self.fatal.append)
            self.nodes.append(InProcNode(db, str(cfg.http_addr), str(cfg.grpc_addr)))
        for node in self.nodes:
            node.db.start()
            self.run(self._serve(node, users))
        self.http = httpx.Client(trust_env=False, timeout=15.0)

    async def _serve(self, node: InProcNode, users: Users | None) -> None:
        node.api = RqliteApi(
            node.db,
            bind_addr=node.http_addr,
            users=users,
            fault_injection=True,
            grpc_addr=node.grpc_addr,
        )
        node.http_server = HttpServer(node.api)
        host, port = node.http_addr.split(":")
        await node.http_server.start(host, int(port))
        ghost, gport = node.grpc_addr.split(":")
        node.grpc_server, _ = await start_grpc_server(node.db, ghost, int(gport), users)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_ready(self, timeout: float = 30.0) -> InProcNode:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [n for n in self.nodes if n.db.failed is None and n.api is not None]
            if all(n.db.ready()[0] for n in live):
                leaders = [n for n in live if n.db.is_leader()]
                if len(leaders) == 1 and all(n.db.leader() for n in live):
                    registered = all((n.db.leader() or n.db.nodes()[0]).http_addr for n in live)
                    if registered:
                        return leaders[0]
            time.sleep(0.05)
        raise TimeoutError("in-process cluster not ready")

    def leader(self) -> InProcNode:
        return self.wait_ready()

    def followers(self) -> list[InProcNode]:
        leader = self.leader()
        return [n for n in self.nodes if n is not leader]

    def wait_applied(self, index: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n.db.applied_index >= index for n in self.nodes if n.db.failed is None):
                return
            time.sleep(0.02)
        raise TimeoutError(f"not every node applied {index}")

    def stop_node(self, node: InProcNode) -> None:
        async def close() -> None:
            if node.http_server is not None:
                await node.http_server.close()
            if node.api is not None:
                await node.api.close()
            if node.grpc_server is not None:
                await node.grpc_server.stop(grace=0)

        self.run(close())
        node.api = None
        node.db.stop()

    def close(self) -> None:
        for node in self.nodes:
            if node.api is not None:
                self.stop_node(node)
        self.http.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

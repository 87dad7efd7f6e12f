"""Several real ``Node``s in one process on 127.0.0.1:0, tunnelled to each other through
static ``--peer`` endpoints, with a small Matrix client per user (httpx)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cis.config import load_config
from cis.handlers.federation import FederationService
from cis.home import Home
from cis.identity import NodeIdentity
from cis.node import Node
from cis.storage.homes import initialise_home, write_admin_token

V3 = "/_matrix/client/v3"
FAST = {
    "CIS_PING_INTERVAL": "0.5",
    "CIS_SILENCE_TIMEOUT": "3",
    "CIS_CATCHUP_INTERVAL": "2",
    "CIS_BACKOFF_CAP": "0.5",
}
FEDERATED = {"type": "io.cis.room.federation", "state_key": "", "content": {"federate": True}}
_txn = itertools.count(1)


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class User:
    node: LocalNode
    user_id: str
    token: str

    @property
    def http(self) -> httpx.AsyncClient:
        return self.node.http

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        return await self.http.request(
            method, path, json=body, params=params or None, headers=self._auth()
        )

    async def create_room(self, *, federated: bool = True, **body: Any) -> str:
        if federated:
            body.setdefault("initial_state", []).append(FEDERATED)
        response = await self.call("POST", f"{V3}/createRoom", body)
        assert response.status_code == 200, response.text
        return str(response.json()["room_id"])

    async def invite(self, room_id: str, user_id: str) -> httpx.Response:
        return await self.call("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": user_id})

    async def join(self, room_id: str) -> httpx.Response:
        return await self.call("POST", f"{V3}/join/{room_id}", {})

    async def send(self, room_id: str, body: str) -> str:
        response = await self.call(
            "PUT",
            f"{V3}/rooms/{room_id}/send/m.room.message/t{next(_txn)}",
            {"msgtype": "m.text", "body": body},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["event_id"])

    async def put_state(
        self, room_id: str, kind: str, content: Any, key: str = ""
    ) -> httpx.Response:
        return await self.call("PUT", f"{V3}/rooms/{room_id}/state/{kind}/{key}", content)

    async def state(self, room_id: str, kind: str, key: str = "") -> Any:
        response = await self.call("GET", f"{V3}/rooms/{room_id}/state/{kind}/{key}")
        return response.json() if response.status_code == 200 else None

    async def messages(self, room_id: str, limit: int = 100) -> list[str]:
        response = await self.call(
            "GET", f"{V3}/rooms/{room_id}/messages", dir="b", limit=str(limit)
        )
        if response.status_code != 200:
            return []
        return [
            e["content"].get("body")
            for e in response.json()["chunk"]
            if e["type"] == "m.room.message"
        ][::-1]


@dataclass
class LocalNode:
    name: str
    home: Home
    node: Node
    http: httpx.AsyncClient
    users: dict[str, User] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.node.url is not None
        return self.node.url

    @property
    def endpoint(self) -> str:
        assert self.node.listen is not None
        return f"ws://{self.node.listen}/_cis/federation/v1"

    @property
    def did(self) -> str:
        return self.node.storage.identity.did

    @property
    def server(self) -> str:
        return self.node.storage.identity.server_name

    @property
    def service(self) -> FederationService:
        """The node's federation service (federation is on in every cluster node)."""
        found = self.node.federation.service
        assert found is not None
        return found

    @property
    def admin_token(self) -> str:
        return self.home.admin_token.read_text().strip()

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(
            method, f"/_cis/admin/v1{path}", json=body,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()

    async def register(self, name: str) -> User:
        response = await self.http.post(
            f"{V3}/register",
            json={"username": name, "password": f"{name}-pw", "auth": {"type": "m.login.dummy"}},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        user = User(self, body["user_id"], body["access_token"])
        self.users[name] = user
        return user

    async def room_view(self, room_id: str) -> dict[str, Any] | None:
        response = await self.http.get(
            f"/_cis/admin/v1/federation/rooms/{room_id}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        return response.json() if response.status_code == 200 else None


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes: list[LocalNode] = []

    async def start_node(
        self, name: str, *, peers: tuple[str, ...] = (), env: dict[str, str] | None = None,
        home: Home | None = None,
    ) -> LocalNode:  # fmt: skip
        if home is None:
            home = Home(self.tmp / name)
            home.root.mkdir()
            initialise_home(home, NodeIdentity.generate(name), 0)
            write_admin_token(home)
        flags: dict[str, object | None] = {
            "--listen": "127.0.0.1:0",
            "--open-registration": True,
            "--peer": peers,
        }
        config = load_config(home, flags=flags, environ={**FAST, **(env or {})})
        node = Node(home, config)
        await node.start()
        http = httpx.AsyncClient(base_url=str(node.url), timeout=30)
        local = LocalNode(name, home, node, http)
        self.nodes.append(local)
        return local

    async def stop_node(self, local: LocalNode) -> None:
        await local.http.aclose()
        await local.node.stop()
        if local in self.nodes:
            self.nodes.remove(local)

    async def close(self) -> None:
        for local in list(self.nodes):
            with contextlib.suppress(Exception):
                await self.stop_node(local)


@contextlib.asynccontextmanager
async def cluster(tmp: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp)
    try:
        yield c
    finally:
        await c.close()


async def mesh(c: Cluster, *names: str, env: dict[str, str] | None = None) -> list[LocalNode]:
    """Nodes each dialling every node started before it (so every pair has a tunnel)."""
    nodes: list[LocalNode] = []
    for name in names:
        nodes.append(await c.start_node(name, peers=tuple(n.endpoint for n in nodes), env=env))
    for a in nodes:
        for b in nodes:
            if a is not b:
                await eventually(
                    lambda a=a, b=b: _online(a, b), 20, f"a tunnel {a.name} -> {b.name}"
                )
    return nodes


async def _online(a: LocalNode, b: LocalNode) -> bool:
    manager = a.node.federation.manager
    assert manager is not None
    status = manager.status(b.did)
    known = a.node.federation.service
    return (
        status is not None
        and status.online
        and known is not None
        and known.keys.server(b.server) is not None
    )

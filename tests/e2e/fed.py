"""Real federations on loopback: a ``cis-node anchor`` and ``cis-node run`` processes that find
each other through it, with matrix-nio users on each node. Every process is started through
``Processes`` (killed at teardown, even when a test fails)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from nio import (
    AsyncClient,
    ErrorResponse,
    JoinResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomMessagesResponse,
    RoomPreset,
    RoomSendResponse,
)

from tests.e2e.conftest import Processes, RunningNode, cis_node, wait_for

FAST = {
    "CIS_ANCHOR_INTERVAL": "6",  # 3 nodes on one IP stay under the anchor's 1 request/s
    "CIS_PING_INTERVAL": "0.5",
    "CIS_SILENCE_TIMEOUT": "3",
    "CIS_CATCHUP_INTERVAL": "2",
    "CIS_BACKOFF_CAP": "1",
}
FEDERATED = {"type": "io.cis.room.federation", "state_key": "", "content": {"federate": True}}


@dataclass
class Anchor:
    url: str
    log_path: Path


def start_anchor(processes: Processes) -> Anchor:
    db = processes.tmp / "anchor.db"
    process, log_path = processes.popen(
        [sys.executable, "-m", "cis", "anchor", "--listen", "127.0.0.1:0", "--db", str(db)],
        "anchor.log",
        stdout=subprocess.DEVNULL,
    )
    found: list[str] = []

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the anchor exited:\n{log_path.read_text()}")
        match = re.search(r"action=anchor_listening url=(\S+)", log_path.read_text())
        if match:
            found.append(match.group(1))
        return bool(found)

    wait_for(listening, 30, "the anchor to listen")
    return Anchor(found[0], log_path)


def init_home(processes: Processes, name: str) -> Path:
    home = processes.tmp / name
    result = cis_node("init", "--home", str(home), "--node-name", name)
    assert result.returncode == 0, result.stderr
    return home


@dataclass
class FedNode:
    name: str
    home: Path
    running: RunningNode

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def server(self) -> str:
        return f"{self.name}.cis.local"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(
            method, f"{self.url}/_cis/admin/v1{path}", json=body, timeout=30,
            headers={"Authorization": f"Bearer {self.running.admin_token}"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()

    @property
    def did(self) -> str:
        return str(self.admin("GET", "/status")["did"])

    def online_peers(self) -> set[str]:
        return {p["node_id"] for p in self.admin("GET", "/peers")["peers"] if p.get("online")}

    def room_view(self, room_id: str) -> dict[str, Any] | None:
        response = httpx.get(
            f"{self.url}/_cis/admin/v1/federation/rooms/{room_id}", timeout=30,
            headers={"Authorization": f"Bearer {self.running.admin_token}"},
        )  # fmt: skip
        return response.json() if response.status_code == 200 else None


def run_node(
    processes: Processes,
    home: Path,
    anchor: Anchor | None,
    *extra: str,
    env: dict[str, str] | None = None,
) -> FedNode:
    """``cis-node run`` on 127.0.0.1:0 with the short test intervals, advertising its port."""
    args = ["--open-registration", "--log-level", "info", "--advertise", "127.0.0.1:0", *extra]
    if anchor is not None:
        args += ["--anchor", anchor.url]
    running = processes.run_node(home, *args, name=home.name, env={**FAST, **(env or {})})
    return FedNode(home.name, home, running)


def wait_mesh(nodes: Iterable[FedNode], within: float = 40) -> None:
    """Until every node has a tunnel to every other."""
    group = list(nodes)
    for node in group:
        others = {n.name for n in group if n is not node}
        wait_for(lambda node=node, others=others: others <= node.online_peers(), within,
                 f"{node.name}'s tunnels to {sorted(others)}")  # fmt: skip


def kill9(node: FedNode) -> None:
    node.running.process.send_signal(signal.SIGKILL)
    node.running.process.wait(timeout=10)


async def user(node: FedNode, name: str) -> AsyncClient:
    client = AsyncClient(node.url, name)
    response = await client.register(name, f"{name}-password")
    assert isinstance(response, RegisterResponse), response
    return client


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 30, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def create_room(client: AsyncClient, *, federated: bool = True, **kwargs: Any) -> str:
    initial = list(kwargs.pop("initial_state", []))
    if federated:
        initial.append(FEDERATED)
    response = await client.room_create(initial_state=initial, **kwargs)
    assert isinstance(response, RoomCreateResponse), response
    return str(response.room_id)


async def join(client: AsyncClient, room_id: str) -> None:
    response = await client.join(room_id)
    assert isinstance(response, JoinResponse), response


async def say(client: AsyncClient, room_id: str, body: str) -> str:
    response = await client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": body}
    )
    assert isinstance(response, RoomSendResponse), response
    return str(response.event_id)


async def bodies(client: AsyncClient, room_id: str, limit: int = 200) -> list[str]:
    """The message bodies of the room as the client's node serves them, oldest first."""
    response = await client.room_messages(room_id, start="", limit=limit)
    if not isinstance(response, RoomMessagesResponse):
        return []
    return [getattr(e, "body", "") for e in response.chunk if hasattr(e, "body")][::-1]


async def state(client: AsyncClient, room_id: str, kind: str, key: str = "") -> Any:
    response = await client.room_get_state_event(room_id, kind, key)
    if isinstance(response, ErrorResponse) or not isinstance(response, RoomGetStateEventResponse):
        return None
    return response.content


@dataclass
class Trio:
    """An anchor, alpha, beta and gamma meshed through it, and a public federated room that
    alice@alpha created and bob@beta and carol@gamma joined."""

    anchor: Anchor
    homes: dict[str, Path]
    nodes: dict[str, FedNode]
    alice: AsyncClient
    bob: AsyncClient
    carol: AsyncClient
    room: str

    @property
    def clients(self) -> tuple[AsyncClient, AsyncClient, AsyncClient]:
        return self.alice, self.bob, self.carol

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


async def three_nodes_one_room(processes: Processes, name: str) -> Trio:
    anchor = start_anchor(processes)
    homes = {n: init_home(processes, n) for n in ("alpha", "beta", "gamma")}
    nodes = {n: run_node(processes, h, anchor) for n, h in homes.items()}
    wait_mesh(nodes.values())
    alice = await user(nodes["alpha"], "alice")
    bob = await user(nodes["beta"], "bob")
    carol = await user(nodes["gamma"], "carol")
    trio = Trio(anchor, homes, nodes, alice, bob, carol, "")
    try:
        trio.room = await create_room(alice, preset=RoomPreset.public_chat, name=name)
        await join(bob, trio.room)
        await join(carol, trio.room)
    except BaseException:
        await trio.close()
        raise
    return trio

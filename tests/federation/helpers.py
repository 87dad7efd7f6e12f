"""Shared helpers for the federation tests: identities, in-process connection pairs, a
uvicorn server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from cis.federation.chunking import NOISE_MAX_MESSAGE
from cis.federation.connection import Role, TunnelConnection
from cis.federation.handshake import Credentials
from cis.federation.trust import StaticTrust, TrustPolicy
from cis.identity.keys import NodeIdentity


def identities(*names: str) -> list[NodeIdentity]:
    return [NodeIdentity.generate(name) for name in names]


def ordered_pair() -> tuple[NodeIdentity, NodeIdentity]:
    """Two identities, the first with the lexicographically smaller public key."""
    a, b = identities("alpha", "beta")
    return (a, b) if a.public_key < b.public_key else (b, a)


@dataclass
class Pair:
    initiator: TunnelConnection
    responder: TunnelConnection


def make_pair(
    initiator: Credentials,
    responder: Credentials,
    *,
    initiator_trust: TrustPolicy | None = None,
    responder_trust: TrustPolicy | None = None,
    expected_did: str | None = None,
) -> Pair:
    return Pair(
        TunnelConnection(
            Role.INITIATOR,
            initiator,
            initiator_trust or StaticTrust(),
            expected_did=expected_did,
        ),
        TunnelConnection(Role.RESPONDER, responder, responder_trust or StaticTrust()),
    )


def pump(src: TunnelConnection, dst: TunnelConnection) -> int:
    """Move every queued message from ``src`` to ``dst``; return how many moved."""
    messages = src.data_to_send()
    for message in messages:
        dst.receive_message(message)
    return len(messages)


def complete_handshake(pair: Pair) -> None:
    while pump(pair.initiator, pair.responder) + pump(pair.responder, pair.initiator):
        pass


class Server:
    """A uvicorn server for ``app`` on 127.0.0.1, on a given port or one the kernel picks."""

    def __init__(self, app: ASGIApp, port: int = 0) -> None:
        self.app = app
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/_cis/federation/v1"

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            lifespan="off",
            ws="websockets-sansio",
            ws_max_size=NOISE_MAX_MESSAGE,
            ws_ping_interval=None,
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await self._task
        except TimeoutError:
            self._server.force_exit = True
            await self._task
        self._server = None
        self._task = None


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, port: int = 0) -> AsyncIterator[Server]:
    server = Server(app, port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def eventually(check: Callable[[], bool], within: float = 10.0, step: float = 0.01) -> None:
    """Poll ``check`` until true; fail the test after ``within`` seconds (generous: the
    machine may be loaded)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling state that has no event is the point
            await asyncio.sleep(step)


def logged(records: list[logging.LogRecord], action: str) -> list[dict[str, object]]:
    """The fields of every record logged with ``action`` (``cis.log`` keeps them apart)."""
    return [
        dict(getattr(r, "cis_fields", {}))
        for r in records
        if getattr(r, "cis_action", None) == action
    ]

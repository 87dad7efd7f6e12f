"""Serving the ASGI app with uvicorn on a socket the node bound itself.

The node binds the socket (so port 0 and the bound address are known before serving) and owns
SIGTERM/SIGINT; uvicorn's own signal handling is turned off. Its loggers go through
``cis.log`` (``log_config=None``), with access records reduced to method, path and status.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator, Mapping
from typing import Any, Final

import uvicorn
from starlette.types import ASGIApp

from cis.config import ListenAddress
from cis.errors import CisError
from cis.log import get_logger

__all__ = ["HttpServer", "ListenFailed", "bind"]

log = get_logger(__name__)

GRACEFUL_S: Final = 2
"""How long in-flight responses may take once a stop began (long-polls end at once)."""
STOP_S: Final = 3.0


class ListenFailed(CisError):
    """The address cannot be resolved or bound."""


def bind(address: ListenAddress) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenFailed(f"cannot resolve {address}: {exc.strerror}") from None
    family, kind, proto, _name, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenFailed(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the node owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """One uvicorn server on one bound socket."""

    def __init__(
        self, app: ASGIApp, sock: socket.socket, *, ws_options: Mapping[str, Any] | None = None
    ) -> None:
        name = sock.getsockname()
        self.bound = ListenAddress(str(name[0]), int(name[1]))
        self._sock = sock
        self._server = _Server(
            uvicorn.Config(
                app,
                log_config=None,
                access_log=True,
                lifespan="off",
                server_header=False,
                timeout_graceful_shutdown=GRACEFUL_S,
                timeout_keep_alive=5,
                **dict(ws_options or {}),
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ListenFailed(f"the HTTP server on {self.bound} stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let in-flight responses finish (bounded), close connections."""
        if self._task is None:
            self._sock.close()
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_S)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        except Exception:
            log.exception("http_server_failed")

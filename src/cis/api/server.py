"""Serving the ASGI app with uvicorn on a socket the node bound itself.

The node binds the socket (so port 0 and the bound address are known before serving) and owns
SIGTERM/SIGINT; uvicorn's own signal handling is turned off. Its loggers go through
``cis.log`` (``log_config=None``), with access records reduced to method, path and status, and
not built at all when the access logger is off.

One write per response: uvicorn's HTTP/1.1 protocol writes a response's head and its body in
two calls, so a client is woken twice per answer (once for a head it cannot use yet) and the
server makes two ``send`` calls; on a busy 2-core machine that cost about a tenth of a send.
``_CoalescingTransport`` holds a complete head until the next write (the body, normally in the
same step) and sends both at once; a head left alone goes out at the end of the loop's
iteration, and before a close. WebSocket upgrades get the socket's own transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator, Iterable, Mapping
from typing import Any, Final, cast

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


_HEAD_START: Final = b"HTTP/1.1 "
_HEAD_END: Final = b"\r\n\r\n"


class _CoalescingTransport(asyncio.Transport):
    """A transport that sends a response head together with what follows it (see above)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self.raw = transport
        self._held: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self.raw.writelines((held, data))
        elif data[:9] == _HEAD_START and data[-4:] == _HEAD_END:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self.raw.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.flush()
        self.raw.writelines(list_of_data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self.raw.is_closing():
            self.raw.write(held)

    def close(self) -> None:
        self.flush()
        self.raw.close()

    def abort(self) -> None:
        self._held = None
        self.raw.abort()

    def write_eof(self) -> None:
        self.flush()
        self.raw.write_eof()

    def can_write_eof(self) -> bool:
        return self.raw.can_write_eof()

    def is_closing(self) -> bool:
        return self.raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.raw.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.raw.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.raw.get_protocol()

    def is_reading(self) -> bool:
        return self.raw.is_reading()

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size() + len(self._held or b"")

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.raw.get_write_buffer_limits()


def _http_protocol() -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol writing through ``_CoalescingTransport`` (uvicorn's own
    choice when httptools is missing)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a dependency
        return "auto"

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's transports are not ``asyncio.Transport`` instances, but behave as one.
            super().connection_made(_CoalescingTransport(cast(asyncio.Transport, transport)))

        def handle_websocket_upgrade(self) -> None:
            coalescing = self.transport
            if isinstance(coalescing, _CoalescingTransport):
                coalescing.flush()
                self.transport = coalescing.raw
            super().handle_websocket_upgrade()

    return CoalescingHttpToolsProtocol


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
                access_log=logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO),
                http=_http_protocol(),
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

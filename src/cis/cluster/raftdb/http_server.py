"""A small HTTP/1.1 server on asyncio and ``httptools`` for the rqlite API.

Why not uvicorn + an ASGI app: measured on the 2-core VM with ``kv_bench.py`` against a trivial
handler, uvicorn with a bare ASGI callable (httptools, uvloop) spent ~90 µs of server CPU per
request; this protocol class spends ~40 µs. uvicorn also writes the status line and headers and
the body in two ``send`` calls (two TCP segments), which doubles the wake-ups of the client.
On this machine the server's per-request CPU is what bounds reads, so the framework's share
(more than half) is not affordable on ``/db/*``.

What it does: keep-alive, pipelined requests answered in order, ``Expect: 100-continue``, one
``write`` per response, limits on header and body size, an idle timeout, and ``400`` on a
request it cannot parse. What it does not: TLS, chunked *responses*, HTTP/2, upgrades.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final, cast
from urllib.parse import unquote_plus

import httptools

from cis.log import get_logger

__all__ = ["HttpRequest", "HttpResponse", "HttpServer"]

log = get_logger(__name__)

MAX_HEADER_BYTES: Final = 64 * 1024
_HEADER_NAMES: Final = {
    name.encode(): name.lower()
    for name in ("Host", "Content-Type", "Content-Length", "Accept", "User-Agent", "Connection")
} | {name.lower().encode(): name.lower() for name in ("host", "content-type", "content-length")}
IDLE_TIMEOUT_S: Final = 75.0
_REASONS: Final = {s.value: s.phrase for s in HTTPStatus}


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    raw_query: str
    headers: dict[str, str]
    body: bytes
    client: str
    _query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (the last value wins); a parameter without a value maps to ''."""
        if self._query is None:
            out: dict[str, str] = {}
            if self.raw_query:
                for part in self.raw_query.split("&"):
                    if not part:
                        continue
                    key, _, value = part.partition("=")
                    if "%" in key or "+" in key:
                        key = unquote_plus(key)
                    if "%" in value or "+" in value:
                        value = unquote_plus(value)
                    out[key] = value
            self._query = out
        return self._query

    def flag(self, name: str) -> bool:
        """rqlite's boolean flags: true when present, with or without a value."""
        return name in self.query


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


_JSON_200: Final = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "


def _serialize(response: HttpResponse, keep_alive: bool) -> bytes:
    if (
        response.status == 200
        and keep_alive
        and not response.headers
        and response.content_type == "application/json"
    ):  # the hot path: one allocation
        return b"%s%d\r\n\r\n%s" % (_JSON_200, len(response.body), response.body)
    head = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
    ]
    for name, value in response.headers:
        head.append(f"{name}: {value}\r\n")
    if not keep_alive:
        head.append("Connection: close\r\n")
    head.append("\r\n")
    return "".join(head).encode("latin-1") + response.body


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._queue: deque[tuple[HttpRequest, bool]] = deque()
        self._busy = False
        self._closing = False
        self.last_active = time.monotonic()

    # ------------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, b'{"error": "upgrades are not supported"}')
        except (httptools.HttpParserError, _TooLarge) as exc:
            # httptools wraps what a callback raises in its own error: look for ours.
            cause = exc if isinstance(exc, _TooLarge) else exc.__context__
            if isinstance(cause, _TooLarge):
                self._reject(cause.status, cause.body)
            else:
                self._reject(400, b'{"error": "malformed HTTP request"}')

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_HEADER_BYTES:
            raise _TooLarge(414, b'{"error": "URL too long"}')

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _TooLarge(431, b'{"error": "headers too large"}')
        key = _HEADER_NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
        self._headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.max_body_bytes:
            raise _TooLarge(413, b'{"error": "request body too large"}')
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._server.max_body_bytes:
            raise _TooLarge(413, b'{"error": "request body too large"}')
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self._url)
        path = url.path.decode("latin-1") if url.path else "/"
        if "%" in path:
            path = unquote_plus(path)
        request = HttpRequest(
            method=self._parser.get_method().decode("latin-1"),
            path=path,
            raw_query=url.query.decode("latin-1") if url.query else "",
            headers=self._headers,
            body=b"".join(self._body),
            client=self._client,
        )
        keep_alive = bool(self._parser.should_keep_alive())
        self._queue.append((request, keep_alive))
        if len(self._queue) > 32 and self._transport is not None:
            self._transport.pause_reading()
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._serve())

    # ------------------------------------------------------------------ serving

    async def _serve(self) -> None:
        handler = self._server.handler
        try:
            while self._queue and not self._closing:
                request, keep_alive = self._queue.popleft()
                try:
                    response = await handler(request)
                except Exception:
                    log.exception("http_handler_failed", path=request.path)
                    response = HttpResponse(500, b'{"error": "internal error"}')
                if self._closing or self._transport is None:
                    return
                self._transport.write(_serialize(response, keep_alive))
                self.last_active = time.monotonic()
                if not keep_alive:
                    self.close()
                    return
                if len(self._queue) <= 32:
                    self._transport.resume_reading()
        finally:
            self._busy = False

    def _reject(self, status: int, body: bytes) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(_serialize(HttpResponse(status, body), keep_alive=False))
        self.close()


class _TooLarge(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class HttpServer:
    """Serves ``handler`` on ``host:port`` until ``close()``."""

    def __init__(self, handler: Handler, *, max_body_bytes: int = 32 * 1024 * 1024) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=1024, reuse_address=True
        )
        self._sweeper = loop.create_task(self._sweep())
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(5)
            cutoff = time.monotonic() - IDLE_TIMEOUT_S
            for conn in list(self.connections):
                if not conn._busy and conn.last_active < cutoff:
                    conn.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.close()
            await self._server.wait_closed()

"""``MessageStream``: the seam between a tunnel and whatever carries its WebSocket messages.

A tunnel needs four things from its connection: send one binary message, receive one, close
with a code and reason, and say who is at the other end. Three implementations:

- ``WebsocketsStream``: the dialling side, over ``websockets``' asyncio client;
- ``StarletteStream``: the accepting side, an ASGI WebSocket (Starlette/FastAPI under uvicorn);
- ``memory_stream_pair()``: two in-process ends joined by queues, for tests of the shell
  without sockets.

``recv`` raises ``StreamClosed`` (with the peer's close code when it sent one) when the
connection ends, and ``ProtocolViolation`` (1002) for a text message: tunnels carry binary
messages only (docs/federation.md "Transport").
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, Final, Protocol

import websockets
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect

from cis.federation.chunking import NOISE_MAX_MESSAGE
from cis.federation.errors import (
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    FederationError,
    ProtocolViolation,
    clip_reason,
)

ABNORMAL_CLOSURE: Final = 1006
"""RFC 6455 §7.1.5: the code reported when the connection ended without a close frame."""


class StreamClosed(FederationError):
    """The connection ended; ``code`` is the peer's close code, or 1006."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed ({code} {reason})".strip())


class MessageStream(Protocol):
    @property
    def remote(self) -> str:
        """The peer's address as ``host:port``, for logs."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes: ...

    async def close(self, code: int, reason: str) -> None: ...


# ---------------------------------------------------------------- dialling side


class WebsocketsStream:
    def __init__(self, connection: ClientConnection) -> None:
        self._ws = connection
        address: Any = connection.remote_address
        self._remote = f"{address[0]}:{address[1]}" if address else "?"

    @property
    def remote(self) -> str:
        return self._remote

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send(data)
        except websockets.ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def recv(self) -> bytes:
        try:
            message = await self._ws.recv()
        except websockets.ConnectionClosed as exc:
            raise _closed(exc) from exc
        if isinstance(message, str):
            raise ProtocolViolation(CLOSE_PROTOCOL, "text messages are not allowed")
        return message

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, clip_reason(reason))


def _closed(exc: websockets.ConnectionClosed) -> StreamClosed:
    if exc.rcvd is not None:
        return StreamClosed(exc.rcvd.code, exc.rcvd.reason)
    return StreamClosed(ABNORMAL_CLOSURE)


async def open_websocket(
    url: str, *, open_timeout: float, ssl_context: ssl.SSLContext | None = None
) -> WebsocketsStream:
    """Dial ``url``; messages are capped at one Noise message, library keepalive is off (the
    tunnel pings itself) and so is compression (ciphertext does not compress)."""
    kwargs: dict[str, Any] = {}
    if url.startswith("wss:"):
        kwargs["ssl"] = ssl_context if ssl_context is not None else ssl.create_default_context()
    connection = await connect(
        url,
        max_size=NOISE_MAX_MESSAGE,
        ping_interval=None,
        compression=None,
        open_timeout=open_timeout,
        close_timeout=2,
        proxy=None,
        **kwargs,
    )
    return WebsocketsStream(connection)


# ---------------------------------------------------------------- accepting side


class StarletteStream:
    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        client = websocket.client
        self._remote = f"{client.host}:{client.port}" if client else "?"

    @property
    def remote(self) -> str:
        return self._remote

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise StreamClosed(getattr(exc, "code", ABNORMAL_CLOSURE)) from exc

    async def recv(self) -> bytes:
        try:
            message = await self._ws.receive()
        except RuntimeError as exc:  # receive after the disconnect was already seen
            raise StreamClosed(ABNORMAL_CLOSURE) from exc
        if message["type"] == "websocket.disconnect":
            raise StreamClosed(
                int(message.get("code", ABNORMAL_CLOSURE)), str(message.get("reason") or "")
            )
        data = message.get("bytes")
        if data is None:
            raise ProtocolViolation(CLOSE_PROTOCOL, "text messages are not allowed")
        if len(data) > NOISE_MAX_MESSAGE:
            # The server's own limit may be larger than one Noise message.
            raise ProtocolViolation(CLOSE_TOO_BIG, f"message over {NOISE_MAX_MESSAGE} bytes")
        return bytes(data)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, OSError):  # already closed by peer or server
            await self._ws.close(code, clip_reason(reason))


# ---------------------------------------------------------------- in memory (tests)


class MemoryStream:
    """One end of an in-process message pipe."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._inbox: asyncio.Queue[bytes | StreamClosed] = asyncio.Queue()
        self.peer: MemoryStream | None = None
        self.closed: StreamClosed | None = None
        self.sent: list[bytes] = []

    @property
    def remote(self) -> str:
        return self.peer._name if self.peer is not None else "?"

    async def send(self, data: bytes) -> None:
        if self.closed is not None or self.peer is None:
            raise StreamClosed(self.closed.code if self.closed else ABNORMAL_CLOSURE)
        self.sent.append(data)
        self.peer._inbox.put_nowait(bytes(data))

    async def recv(self) -> bytes:
        if self.closed is not None and self._inbox.empty():
            raise self.closed
        item = await self._inbox.get()
        if isinstance(item, StreamClosed):
            self.closed = item
            raise item
        return item

    async def close(self, code: int, reason: str) -> None:
        if self.closed is not None:
            return
        self.closed = StreamClosed(code, reason)
        self._inbox.put_nowait(self.closed)
        if self.peer is not None and self.peer.closed is None:
            self.peer._inbox.put_nowait(StreamClosed(code, clip_reason(reason)))


def memory_stream_pair(a: str = "a:1", b: str = "b:2") -> tuple[MemoryStream, MemoryStream]:
    """Two connected ends; what one sends the other receives, and a close reaches both."""
    left, right = MemoryStream(a), MemoryStream(b)
    left.peer, right.peer = right, left
    return left, right

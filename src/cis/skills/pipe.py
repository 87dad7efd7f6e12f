"""``PipeStream``: a ``DuplexStream`` between an async transport and blocking skill code, and
the wire format of the local stream endpoint.

The endpoint (``/_cis/admin/v1/skills/{skill}/streams/{name}``, a WebSocket authenticated with
the admin token) carries, after the upgrade:

- tool → node: first one **text** message, a JSON object of string parameters (at most
  ``MAX_PARAMS`` keys, values of at most ``MAX_PARAM_CHARS``); then **binary** messages, the
  tool's input bytes; an empty binary message ends the input.
- node → tool: **binary** messages whose first byte is the channel: ``1`` data for the tool's
  stdout, ``2`` a line of text for its stderr, ``3`` the end, a JSON object
  ``{"status": int, "error": str | null}``; then the node closes the WebSocket (1000).

Backpressure both ways: the node stops reading from the WebSocket while more than
``max_buffered`` input bytes wait for the skill, and the skill's ``write`` waits while
``OUTBOX`` messages wait for the WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from typing import Final

__all__ = [
    "CHANNEL_DATA",
    "CHANNEL_END",
    "CHANNEL_MESSAGE",
    "PipeClosed",
    "PipeStream",
    "end_message",
    "parse_params",
]

CHANNEL_DATA: Final = 1
CHANNEL_MESSAGE: Final = 2
CHANNEL_END: Final = 3
MAX_PARAMS: Final = 16
MAX_PARAM_CHARS: Final = 1024
MAX_CHUNK: Final = 256 * 1024
OUTBOX: Final = 64
DEFAULT_MAX_BUFFERED: Final = 4 * 1024 * 1024
IDLE_TIMEOUT_S: Final = 600.0


class PipeClosed(ConnectionError):
    """The tool went away (or the stream was closed) while the skill still used it."""


def parse_params(text: str) -> dict[str, str]:
    """The first message's parameters, validated (``ValueError`` names the problem)."""
    if len(text) > MAX_PARAMS * (MAX_PARAM_CHARS + 64):
        raise ValueError("parameters too large")
    try:
        params = json.loads(text)
    except ValueError:
        raise ValueError("parameters must be a JSON object") from None
    if not isinstance(params, dict) or len(params) > MAX_PARAMS:
        raise ValueError(f"parameters must be a JSON object of at most {MAX_PARAMS} keys")
    for key, value in params.items():
        if not isinstance(value, str) or len(key) > 64 or len(value) > MAX_PARAM_CHARS:
            raise ValueError("parameters must be short strings")
    return params


def end_message(status: int, error: str | None) -> bytes:
    return bytes([CHANNEL_END]) + json.dumps({"status": status, "error": error}).encode()


class PipeStream:
    """Created on the node's loop; ``recv``/``write``/``message`` from any other thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self._loop = loop
        self._max_buffered = max_buffered
        self._idle_timeout_s = idle_timeout_s
        self._cond = threading.Condition()
        self._buffer = bytearray()
        self._eof = False
        self._closed = False
        self._outbox: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(OUTBOX)
        self._room = asyncio.Event()
        self._room.set()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ the transport's side (loop)

    async def feed(self, data: bytes) -> None:
        """Input from the tool; waits while the skill is behind by ``max_buffered`` bytes."""
        await self._room.wait()
        with self._cond:
            if self._closed:
                return
            self._buffer += data
            if len(self._buffer) > self._max_buffered:
                self._room.clear()
            self._cond.notify_all()

    def feed_eof(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def close(self) -> None:
        """The transport is gone: ``recv`` returns ``b""``, ``write`` raises ``PipeClosed``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._room.set()
        while not self._outbox.empty():  # unblock a writer waiting for room
            self._outbox.get_nowait()

    async def next_out(self) -> tuple[int, bytes] | None:
        """The next message for the tool, or ``None`` once ``finish_output`` was called."""
        return await self._outbox.get()

    async def finish_output(self) -> None:
        await self._outbox.put(None)

    # ------------------------------------------------------------ the skill's side (threads)

    def recv(self, size: int) -> bytes:
        if size < 1:
            raise ValueError("recv needs a positive size")
        with self._cond:
            while not self._buffer and not self._eof and not self._closed:
                if not self._cond.wait(self._idle_timeout_s):
                    raise TimeoutError(f"no input for {self._idle_timeout_s:g} s")
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            if len(self._buffer) <= self._max_buffered and not self._room.is_set():
                self._loop.call_soon_threadsafe(self._room.set)
            return chunk

    def write(self, data: bytes) -> None:
        view = memoryview(bytes(data))
        for start in range(0, len(view), MAX_CHUNK):
            self._put(CHANNEL_DATA, bytes(view[start : start + MAX_CHUNK]))

    def message(self, text: str) -> None:
        line = text if text.endswith("\n") else text + "\n"
        self._put(CHANNEL_MESSAGE, line.encode("utf-8", "replace")[:MAX_CHUNK])

    def _put(self, channel: int, data: bytes) -> None:
        if self._closed:
            raise PipeClosed("the tool closed the stream")
        if _on_loop(self._loop):
            raise RuntimeError("PipeStream.write blocks: call it from a thread, not the node loop")
        future = asyncio.run_coroutine_threadsafe(self._outbox.put((channel, data)), self._loop)
        while True:
            try:
                future.result(timeout=1.0)
                return
            except TimeoutError:
                if self.closed:
                    future.cancel()
                    raise PipeClosed("the tool closed the stream") from None


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def params_json(params: Mapping[str, str]) -> str:
    return json.dumps(dict(params), sort_keys=True)

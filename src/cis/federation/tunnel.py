"""``Tunnel``: the asyncio shell around one ``TunnelConnection``.

It only moves bytes and keeps time; every protocol decision is the connection's. It owns:

- the handshake deadline (``handshake_timeout``, 10 s by default; then close 1008). The
  dialler also waits for the responder's first transport message before calling the tunnel
  established: the responder sends a Ping the moment it accepts, so a refusal (trust 0, a
  duplicate) reaches the dialler as a failed handshake with its reason, not as a tunnel that
  opens and dies;
- one writer task: the connection encrypts synchronously, in nonce order, into a queue the
  writer drains, so the reader never waits on a write (two peers both blocked writing and
  neither reading would deadlock) and pongs go out whatever the handlers do;
- pings every ``ping_interval`` (RTT from the matching pong, on the injected clock's monotonic
  reading), and the silence rule: nothing received for ``silence_timeout`` closes the tunnel;
- the close: flush what is queued (a ``Close`` frame for a local close), send the WebSocket
  close with the connection's code and reason, give up after ``close_timeout``.

Received frames other than ping/pong go to the owner's ``on_frame`` (the manager) in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from cis.clock import Clock
from cis.federation import frames
from cis.federation.config import TunnelConfig
from cis.federation.connection import (
    Authenticated,
    Closed,
    Event,
    FrameReceived,
    Role,
    State,
    TunnelConnection,
)
from cis.federation.errors import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    HandshakeFailed,
    TunnelClosed,
    TunnelError,
    is_valid_close_code,
)
from cis.federation.frames import Frame
from cis.federation.handshake import PeerIdentity
from cis.federation.transport import MessageStream, StreamClosed
from cis.log import get_logger

_MAX_OUTSTANDING_PINGS: Final = 16

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CloseInfo:
    code: int
    reason: str
    by_peer: bool


FrameCallback = Callable[["Tunnel", Frame], Awaitable[None]]


class Tunnel:
    """One WebSocket connection carrying one authenticated tunnel."""

    def __init__(
        self,
        stream: MessageStream,
        connection: TunnelConnection,
        *,
        config: TunnelConfig,
        clock: Clock,
        endpoint: str | None = None,
    ) -> None:
        self.stream = stream
        self.connection = connection
        self.endpoint = endpoint
        """The URL dialled, for a tunnel this node initiated."""
        self._config = config
        self._clock = clock
        self._outgoing: deque[bytes] = deque()
        self._outgoing_bytes = 0
        self._wake_writer = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = asyncio.Event()
        self._done = asyncio.Event()
        self._early: list[Event] = []
        self._pings: dict[int, float] = {}
        self._next_ping_id = 1
        self._on_frame: FrameCallback | None = None
        self.close_info: CloseInfo | None = None
        self.rtt_ms: float | None = None
        self.last_received = clock.monotonic()
        self.opened_at = clock.monotonic()
        self.ack_source: Callable[[], int] = lambda: 0
        """Called for every outgoing frame's ``ack`` (the manager wires the peer's stream)."""

    @property
    def peer(self) -> PeerIdentity:
        peer = self.connection.peer
        if peer is None:
            raise TunnelClosed("the handshake has not finished")
        return peer

    @property
    def is_open(self) -> bool:
        return self.close_info is None and self.connection.state is State.OPEN

    @property
    def remote(self) -> str:
        return self.stream.remote

    # ------------------------------------------------------------ handshake

    async def handshake(self) -> PeerIdentity:
        """Authenticate within ``handshake_timeout``; raise ``HandshakeFailed`` with the
        reason (the connection is then closed)."""
        try:
            async with asyncio.timeout(self._config.handshake_timeout):
                await self._handshake_steps()
        except TimeoutError:
            reason = f"handshake not finished within {self._config.handshake_timeout:g} s"
            await self._abort(CLOSE_POLICY, reason)
            raise HandshakeFailed(CLOSE_POLICY, reason) from None
        except StreamClosed as exc:
            await self._abort(CLOSE_PROTOCOL, "connection closed during the handshake")
            code = exc.code if is_valid_close_code(exc.code) else CLOSE_PROTOCOL
            raise HandshakeFailed(
                code, exc.reason or "connection closed during the handshake"
            ) from exc
        except HandshakeFailed as exc:
            await self._abort(exc.code, exc.reason)
            raise
        except TunnelError as exc:
            await self._abort(exc.code, exc.reason)
            raise HandshakeFailed(exc.code, exc.reason) from exc
        except OSError as exc:
            await self._abort(CLOSE_PROTOCOL, "connection failed during the handshake")
            raise HandshakeFailed(CLOSE_PROTOCOL, f"connection failed: {exc}") from exc
        return self.peer

    async def _handshake_steps(self) -> None:
        conn = self.connection
        await self._send_direct(conn.data_to_send())
        while conn.peer is None:
            conn.receive_message(await self.stream.recv())
            self._raise_if_closed(conn.events_received())
            await self._send_direct(conn.data_to_send())
        if conn.role is Role.INITIATOR:
            # The responder speaks first once it has accepted us (see the module docstring).
            conn.receive_message(await self.stream.recv())
            self.last_received = self._clock.monotonic()
            events = conn.events_received()
            self._raise_if_closed(events)
            self._early = events

    @staticmethod
    def _raise_if_closed(events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, Closed):
                raise HandshakeFailed(event.code, event.reason)

    async def _send_direct(self, messages: list[bytes]) -> None:
        for message in messages:
            await self.stream.send(message)

    async def _abort(self, code: int, reason: str) -> None:
        self.connection.fail(code, reason)
        self.connection.events_received()
        if self.close_info is None:
            self.close_info = CloseInfo(code, reason, by_peer=False)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._config.close_timeout):
                await self.stream.close(code, reason)
        self._closing.set()
        self._done.set()

    # ------------------------------------------------------------ running

    async def run(self, on_frame: FrameCallback) -> CloseInfo:
        """Pump the tunnel until it closes; return how it closed."""
        self._on_frame = on_frame
        if self._done.is_set():
            return self._close_info()
        reader = asyncio.create_task(self._read_loop(), name=f"tunnel-read {self.remote}")
        writer = asyncio.create_task(self._write_loop(), name=f"tunnel-write {self.remote}")
        pinger = asyncio.create_task(self._ping_loop(), name=f"tunnel-ping {self.remote}")
        try:
            await self._closing.wait()
            with contextlib.suppress(TimeoutError, Exception):
                async with asyncio.timeout(self._config.close_timeout):
                    await writer
        finally:
            for task in (reader, writer, pinger):
                task.cancel()
            await asyncio.gather(reader, writer, pinger, return_exceptions=True)
            info = self._close_info()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._config.close_timeout):
                    await self.stream.close(info.code, info.reason)
            self._drained.set()
            self._done.set()
        return self._close_info()

    async def wait_closed(self) -> CloseInfo:
        await self._done.wait()
        return self._close_info()

    def _close_info(self) -> CloseInfo:
        if self.close_info is None:
            return CloseInfo(CLOSE_NORMAL, "", by_peer=False)
        return self.close_info

    def send_frame(self, frame: Frame) -> None:
        """Encrypt ``frame`` now and queue it; raises ``TunnelClosed`` or ``FrameTooLarge``."""
        if not self.is_open:
            raise TunnelClosed("tunnel is closed")
        frame.ack = self.ack_source()
        self.connection.send_frame(frame)
        self._queue_outgoing()

    async def drain(self) -> None:
        """Wait until the queued bytes are under ``write_high_water`` (or the tunnel closed)."""
        await self._drained.wait()

    def close(self, code: int, reason: str) -> None:
        """Start closing: a ``Close`` frame, then the WebSocket close, from the writer."""
        if self.close_info is not None:
            return
        self.connection.close(code, reason)
        self.connection.events_received()
        self._queue_outgoing()
        self._finish(CloseInfo(code, self.connection.close_reason or reason, by_peer=False))

    @property
    def outgoing_bytes(self) -> int:
        return self._outgoing_bytes

    def _finish(self, info: CloseInfo) -> None:
        if self.close_info is None:
            self.close_info = info
        self._closing.set()
        self._drained.set()
        self._wake_writer.set()

    def _queue_outgoing(self) -> None:
        for message in self.connection.data_to_send():
            self._outgoing.append(message)
            self._outgoing_bytes += len(message)
        if self._outgoing_bytes > self._config.write_high_water and not self._closing.is_set():
            self._drained.clear()
        if self._outgoing:
            self._wake_writer.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            try:
                while self._outgoing:
                    message = self._outgoing.popleft()
                    self._outgoing_bytes -= len(message)
                    await self.stream.send(message)
                    if self._outgoing_bytes <= self._config.write_high_water:
                        self._drained.set()
            except StreamClosed as exc:
                self._finish(CloseInfo(exc.code, exc.reason, by_peer=True))
                return
            except Exception:  # the transport broke in a way it did not report as a close
                log.exception("tunnel_writer_failed", remote=self.remote)
                self._finish(CloseInfo(CLOSE_INTERNAL_ERROR, "write failed", by_peer=False))
                return
            if self._closing.is_set():
                info = self._close_info()
                await self.stream.close(info.code, info.reason)
                return

    async def _read_loop(self) -> None:
        conn = self.connection
        try:
            early, self._early = self._early, []
            await self._process(early)
            while not self._closing.is_set():
                data = await self.stream.recv()
                self.last_received = self._clock.monotonic()
                conn.receive_message(data)
                await self._process(conn.events_received())
        except StreamClosed as exc:
            self._finish(CloseInfo(exc.code, exc.reason, by_peer=True))
        except TunnelError as exc:  # a text message from the stream
            conn.fail(exc.code, exc.reason)
            await self._process(conn.events_received())
        except Exception:  # a bug: close this tunnel rather than leave it hanging half-alive
            log.exception("tunnel_reader_failed", remote=self.remote)
            conn.fail(CLOSE_INTERNAL_ERROR, "internal error")
            self._finish(CloseInfo(CLOSE_INTERNAL_ERROR, "internal error", by_peer=False))

    async def _process(self, events: list[Event]) -> None:
        pending = list(events)
        while pending:
            for event in pending:
                if isinstance(event, FrameReceived):
                    # After a failure the rest of the batch is dropped; its Closed event follows.
                    if self.is_open:
                        await self._handle_frame(event.frame)
                elif isinstance(event, Closed):
                    self._finish(CloseInfo(event.code, event.reason, event.by_peer))
                elif isinstance(event, Authenticated):  # pragma: no cover - handshake only
                    pass
            pending = self.connection.events_received()
        self._queue_outgoing()

    async def _handle_frame(self, frame: Frame) -> None:
        kind = frames.body_kind(frame)
        if kind == "ping":
            self.send_frame(frames.pong(frame.ping, self._clock.time_ms()))
        elif kind == "pong":
            sent = self._pings.pop(frame.pong.id, None)
            if sent is not None:
                self.rtt_ms = (self._clock.monotonic() - sent) * 1000.0
        if self._on_frame is None:
            return
        try:
            await self._on_frame(self, frame)
        except TunnelError as exc:
            self.connection.fail(exc.code, exc.reason)

    async def _ping_loop(self) -> None:
        interval = self._config.ping_interval
        silence = self._config.silence_timeout
        next_ping = self._clock.monotonic()
        while not self._closing.is_set():
            now = self._clock.monotonic()
            deadline = self.last_received + silence
            if now >= deadline:
                self.close(CLOSE_NORMAL, f"nothing received for {silence:g} s")
                return
            if now >= next_ping:
                self._send_ping()
                next_ping = now + interval
            await asyncio.sleep(max(0.001, min(next_ping, deadline) - now))

    def _send_ping(self) -> None:
        if not self.is_open:
            return
        ping_id = self._next_ping_id
        self._next_ping_id += 1
        self._pings[ping_id] = self._clock.monotonic()
        while len(self._pings) > _MAX_OUTSTANDING_PINGS:
            del self._pings[min(self._pings)]
        self.send_frame(frames.ping(ping_id, self._clock.time_ms()))

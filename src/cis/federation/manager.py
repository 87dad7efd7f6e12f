"""``TunnelManager``: every tunnel of a node, one per peer, and what the node wires to it.

The node constructs one manager with its identity, a ``TrustPolicy`` and an ``on_frame``
handler, mounts ``manager.route()`` on its ASGI app (``/_cis/federation/v1``), and tells it
whom to reach: ``add_peer(endpoint)`` for ``--peer`` and ``set_peer_endpoints(did, …)`` for
what the anchor reports. It then calls ``send``/``request``/``respond`` and reads
``status``/``peers``; ``add_listener`` reports peers going online/offline and outbox overflow.

Rules it keeps (docs/federation.md "Tunnels"):

- **One tunnel per peer.** When a second tunnel to the same peer process authenticates, keep
  the one whose *initiator* has the lexicographically smaller Ed25519 public key (both sides
  compute the same answer; for two tunnels with the same initiator the smaller handshake hash
  wins) and close the other with 1000 ``"duplicate"``. A tunnel from a *different* process of
  the peer (another X25519 static key) replaces a silent old one; while the old one is live,
  the newcomer is closed 1008 and ``identity_conflict`` logged (a restored copy still running).
- **Nothing reliable is lost to a tunnel switch.** Frames are numbered per peer
  (``reliability``); whenever a tunnel becomes the peer's tunnel, every unacknowledged frame is
  re-sent on it and the receiver drops the ones it already had.
- **Handlers never stall the tunnel.** Frames are queued per peer and handed to ``on_frame`` in
  order by one worker per peer; pings are answered by the reader meanwhile. A synchronous
  handler with ``handler_executor`` set runs in that executor, off the event loop, so CPU-heavy
  work (signature checks, state resolution) cannot delay a pong. Responses to ``request`` bypass
  the queue, so a handler may itself await a request to the same peer.
- **Reconnects** use jittered exponential backoff capped at ``backoff_cap`` (60 s), reset by
  an authenticated tunnel; a new endpoint (``set_peer_endpoints``) or a trust change is tried at
  once. At most ``max_handshakes`` (64) handshakes run at once; an incoming one beyond that is
  closed with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from cis.clock import Clock, SystemClock
from cis.federation import frames
from cis.federation.backoff import Backoff
from cis.federation.config import TunnelConfig
from cis.federation.connection import Role, TunnelConnection
from cis.federation.endpoints import FEDERATION_PATH, parse_endpoint
from cis.federation.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    FederationError,
    HandshakeFailed,
    PeerUnknown,
    RequestTimeout,
    TunnelClosed,
)
from cis.federation.frames import Frame, Request, Response
from cis.federation.handshake import Credentials, PeerIdentity, StaticKey
from cis.federation.reliability import ReliableStream
from cis.federation.transport import MessageStream, StarletteStream, open_websocket
from cis.federation.trust import Admission, TrustPolicy
from cis.federation.tunnel import CloseInfo, Tunnel
from cis.identity.keys import NodeIdentity
from cis.ids import Did, DidKey
from cis.log import get_logger

log = get_logger(__name__)

FrameHandler: TypeAlias = Callable[[PeerIdentity, Frame], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class PeerStatus:
    did: Did
    did_key: DidKey
    online: bool
    rtt_ms: float | None
    endpoint: str | None
    """The URL this node dialled, else the first endpoint the peer advertised."""
    remote: str | None
    """The address of the connection (``host:port``) while online."""
    last_seen_ms: int | None
    outbox: int
    """Reliable frames sent and not yet acknowledged."""
    we_initiated: bool | None
    """Whether this node dialled the open tunnel (None while offline)."""


@dataclass(frozen=True, slots=True)
class PeerOnline:
    status: PeerStatus


@dataclass(frozen=True, slots=True)
class PeerOffline:
    status: PeerStatus
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class OutboxOverflow:
    did: Did
    dropped: int
    """Frames dropped, oldest first; the node falls back to catch-up for what they carried."""


PeerEvent: TypeAlias = PeerOnline | PeerOffline | OutboxOverflow
PeerListener: TypeAlias = Callable[[PeerEvent], None]


@dataclass(eq=False, slots=True)
class _Session:
    """What the manager keeps about a peer for the life of this process."""

    did: Did
    did_key: DidKey | None
    public_key: bytes | None
    stream: ReliableStream
    queue: asyncio.Queue[tuple[PeerIdentity, Frame, int]]
    worker: asyncio.Task[None] | None = None
    tunnel: Tunnel | None = None
    last_peer: PeerIdentity | None = None
    endpoint: str | None = None
    last_seen_ms: int | None = None
    pending: dict[int, asyncio.Future[Response]] = field(default_factory=dict)
    next_request_id: int = 1
    ack_timer: asyncio.TimerHandle | None = None
    window_open: asyncio.Event = field(default_factory=asyncio.Event)
    overflowing: bool = False


@dataclass(eq=False, slots=True)
class _Dialer:
    endpoints: list[str]
    did: Did | None
    expected: str | None
    backoff: Backoff
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    index: int = 0


class TunnelManager:
    def __init__(
        self,
        identity: NodeIdentity,
        trust: TrustPolicy,
        *,
        on_frame: FrameHandler | None = None,
        config: TunnelConfig | None = None,
        clock: Clock | None = None,
        endpoints: Sequence[str] = (),
        handler_executor: Executor | None = None,
        ssl_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.identity = identity
        self._admission = admission
        self.config = config if config is not None else TunnelConfig()
        self._trust = trust
        self._on_frame = on_frame
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._executor = handler_executor
        self._ssl_context = ssl_context
        self._rng = rng if rng is not None else random.Random()
        self.credentials = Credentials.create(
            identity, StaticKey.generate(), [parse_endpoint(e) for e in endpoints]
        )
        self._sessions: dict[Did, _Session] = {}
        self._dialers: dict[str, _Dialer] = {}
        self._listeners: list[PeerListener] = []
        self._tunnel_tasks: set[asyncio.Task[Any]] = set()
        self._open_tunnels: set[Tunnel] = set()
        self._handshake_slots = asyncio.Semaphore(self.config.max_handshakes)
        self._handshakes = 0
        self._stopping = False

    # ------------------------------------------------------------ lifecycle

    async def stop(self) -> None:
        """Close every tunnel (1001), stop dialling and delivering; idempotent."""
        self._stopping = True
        for dialer in self._dialers.values():
            if dialer.task is not None:
                dialer.task.cancel()
        for tunnel in list(self._open_tunnels):
            tunnel.close(CLOSE_GOING_AWAY, "node shutting down")
        dialer_tasks = [d.task for d in self._dialers.values() if d.task is not None]
        await asyncio.gather(*dialer_tasks, return_exceptions=True)
        waits = [t.wait_closed() for t in list(self._open_tunnels)]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.close_timeout * 2):
                await asyncio.gather(*waits, return_exceptions=True)
        for task in list(self._tunnel_tasks):
            task.cancel()
        await asyncio.gather(*self._tunnel_tasks, return_exceptions=True)
        for session in self._sessions.values():
            if session.worker is not None:
                session.worker.cancel()
            if session.ack_timer is not None:
                session.ack_timer.cancel()
            for future in session.pending.values():
                if not future.done():
                    future.set_exception(TunnelClosed("node shutting down"))
        workers = [s.worker for s in self._sessions.values() if s.worker is not None]
        await asyncio.gather(*workers, return_exceptions=True)

    def set_advertised_endpoints(self, endpoints: Sequence[str]) -> None:
        """Change the endpoints this node's handshakes advertise (e.g. once its port is known);
        tunnels opened from now on carry them. The X25519 static key stays the same."""
        self.credentials = Credentials.create(
            self.identity, self.credentials.static_key, [parse_endpoint(e) for e in endpoints]
        )

    # ------------------------------------------------------------ whom to reach

    def add_peer(self, endpoint: str, expected_did: str | None = None) -> None:
        """Keep a tunnel to ``endpoint`` (a static ``--peer``), checking the DID when given."""
        url = parse_endpoint(endpoint)
        key = f"endpoint:{url}"
        dialer = self._dialers.get(key)
        if dialer is not None:
            dialer.expected = expected_did or dialer.expected
            dialer.wake.set()
            return
        did = Did(expected_did) if expected_did and expected_did.startswith("did:cis:") else None
        self._start_dialer(key, _Dialer([url], did, expected_did, self._new_backoff()))

    def set_peer_endpoints(self, did: str, endpoints: Iterable[str]) -> None:
        """Reach ``did`` at these endpoints (from the anchor); a new one is tried at once."""
        if did == self.identity.did:
            return
        urls = [parse_endpoint(e) for e in endpoints]
        key = f"did:{did}"
        dialer = self._dialers.get(key)
        if dialer is None:
            self._start_dialer(key, _Dialer(urls, Did(did), did, self._new_backoff()))
            return
        if urls != dialer.endpoints:
            fresh = [u for u in urls if u not in dialer.endpoints]
            dialer.endpoints = urls
            if fresh:
                dialer.index = urls.index(fresh[0])
                dialer.backoff.reset()
            dialer.wake.set()

    def remove_peer(self, endpoint_or_did: str) -> None:
        """Stop dialling (an open tunnel stays until closed by either side)."""
        for key in (f"endpoint:{endpoint_or_did}", f"did:{endpoint_or_did}"):
            dialer = self._dialers.pop(key, None)
            if dialer is not None and dialer.task is not None:
                dialer.task.cancel()

    def trust_changed(self, did: str) -> None:
        """Apply a trust change now: level 0 closes the tunnel; otherwise redial at once."""
        session = self._session_for(did)
        if session is not None and self._blocked(session.did, session):
            if session.tunnel is not None:
                session.tunnel.close(CLOSE_POLICY, f"trust level 0 for {session.did}")
            return
        for dialer in self._dialers.values():
            if dialer.did is None or dialer.did == did or (session and dialer.did == session.did):
                dialer.backoff.reset()
                dialer.wake.set()

    # ------------------------------------------------------------ sending

    async def send(self, did: str, frame: Frame) -> None:
        """Send a reliable frame to ``did`` (either DID form).

        The frame is numbered and kept until acknowledged, so it reaches the peer through
        whichever tunnel carries it next, even if none is open now. While the peer is online,
        waits as long as ``send_window`` frames are unacknowledged or the tunnel's write queue
        is over its high-water mark; while it is offline, never waits: the outbox drops its
        oldest frames past its bounds (``OutboxOverflow``). Raises ``PeerUnknown`` for a peer
        never seen nor configured, ``FrameTooLarge`` over 1 MiB.
        """
        session = self._session_for(did, create=True)
        if session is None:
            raise PeerUnknown(f"no session with {did}")
        copy = Frame()
        copy.CopyFrom(frame)
        stamped, dropped = session.stream.stamp(copy)
        if dropped:
            if not session.overflowing:
                log.warning("outbox_overflow", did=session.did, outbox=session.stream.outbox_len)
                session.overflowing = True
            self._emit(OutboxOverflow(session.did, dropped))
        tunnel = session.tunnel
        if tunnel is None or not tunnel.is_open:
            return
        tunnel.send_frame(stamped)
        await tunnel.drain()
        while session.stream.outbox_len > self.config.send_window:
            tunnel = session.tunnel
            if tunnel is None or not tunnel.is_open:
                return
            session.window_open.clear()
            await session.window_open.wait()

    async def request(self, did: str, request: Request) -> Response:
        """Send ``request`` and wait for its response (``Response.error`` included), at most
        ``config.request_timeout`` (wrap the call in ``asyncio.timeout`` for less)."""
        session = self._session_for(did, create=True)
        if session is None:
            raise PeerUnknown(f"no session with {did}")
        request_id = session.next_request_id
        session.next_request_id += 1
        copy = Request()
        copy.CopyFrom(request)
        copy.id = request_id
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        session.pending[request_id] = future
        try:
            await self.send(session.did, frames.request_frame(copy))
            async with asyncio.timeout(self.config.request_timeout):
                return await future
        except TimeoutError:
            raise RequestTimeout(f"{did} did not answer request {request_id}") from None
        finally:
            session.pending.pop(request_id, None)

    async def respond(self, did: str, request_id: int, response: Response) -> None:
        copy = Response()
        copy.CopyFrom(response)
        copy.id = request_id
        await self.send(did, frames.response_frame(copy))

    # ------------------------------------------------------------ status

    def status(self, did: str) -> PeerStatus | None:
        session = self._session_for(did)
        return self._status(session) if session is not None else None

    def peers(self) -> list[PeerStatus]:
        return [self._status(s) for s in self._sessions.values() if s.did_key is not None]

    def add_listener(self, listener: PeerListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: PeerListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def wait_online(self, did: str) -> PeerStatus:
        """Wait until ``did`` has an open tunnel (wrap in ``asyncio.timeout``)."""
        status = self.status(did)
        if status is not None and status.online:
            return status
        future: asyncio.Future[PeerStatus] = asyncio.get_running_loop().create_future()

        def listener(event: PeerEvent) -> None:
            if (
                isinstance(event, PeerOnline)
                and did in (event.status.did, event.status.did_key)
                and not future.done()
            ):
                future.set_result(event.status)

        self.add_listener(listener)
        try:
            return await future
        finally:
            self.remove_listener(listener)

    @property
    def handshakes_in_progress(self) -> int:
        return self._handshakes

    @property
    def open_tunnels(self) -> int:
        """Tunnels past their handshake and not yet closed (duplicates included)."""
        return sum(1 for tunnel in self._open_tunnels if tunnel.is_open)

    # ------------------------------------------------------------ accepting

    def route(self, path: str = FEDERATION_PATH) -> WebSocketRoute:
        """The Starlette route to mount on the node's app."""
        return WebSocketRoute(path, self.websocket_endpoint)

    async def websocket_endpoint(self, websocket: WebSocket) -> None:
        """ASGI WebSocket endpoint: accept, then run a tunnel as responder until it closes."""
        await websocket.accept()
        await self.accept_stream(StarletteStream(websocket))

    async def accept_stream(self, stream: MessageStream) -> None:
        """Run a tunnel as responder over an accepted connection until it closes."""
        if self._stopping:
            await stream.close(CLOSE_GOING_AWAY, "node shutting down")
            return
        if self._handshake_slots.locked():
            log.warning("handshake_refused", remote=stream.remote, reason="too many handshakes")
            await stream.close(CLOSE_TRY_AGAIN, "too many handshakes in progress")
            return
        connection = TunnelConnection(
            Role.RESPONDER, self.credentials, self._trust, admission=self._admission
        )
        tunnel = Tunnel(stream, connection, config=self.config, clock=self._clock)
        async with self._handshake_slots:
            self._handshakes += 1
            try:
                await tunnel.handshake()
            except HandshakeFailed as exc:
                conflict = "identity conflict" in exc.reason
                action = "identity_conflict" if conflict else "handshake_refused"
                log.warning(action, remote=stream.remote, code=exc.code, reason=exc.reason)
                return
            finally:
                self._handshakes -= 1
        self._register(tunnel)
        await self._run_tunnel(tunnel)

    # ------------------------------------------------------------ dialling

    async def connect(self, endpoint: str, expected_did: str | None = None) -> PeerIdentity:
        """Dial once and return the peer when the tunnel is up (it then runs in the
        background); raises ``HandshakeFailed`` or ``OSError``. Dialers use this."""
        tunnel = await self._dial(parse_endpoint(endpoint), expected_did)
        return tunnel.peer

    async def connect_stream(
        self, stream: MessageStream, expected_did: str | None = None
    ) -> PeerIdentity:
        """Run the initiator's side over an already open connection (tests, other carriers)."""
        tunnel = await self._handshake_out(stream, expected_did, endpoint=None)
        return tunnel.peer

    async def _dial(self, url: str, expected_did: str | None) -> Tunnel:
        async with self._handshake_slots:
            self._handshakes += 1
            try:
                async with asyncio.timeout(self.config.handshake_timeout):
                    stream = await open_websocket(
                        url,
                        open_timeout=self.config.handshake_timeout,
                        ssl_context=self._ssl_context,
                    )
            except TimeoutError as exc:
                raise HandshakeFailed(CLOSE_POLICY, f"connecting to {url} timed out") from exc
            finally:
                self._handshakes -= 1
        return await self._handshake_out(stream, expected_did, endpoint=url)

    async def _handshake_out(
        self, stream: MessageStream, expected_did: str | None, endpoint: str | None
    ) -> Tunnel:
        connection = TunnelConnection(
            Role.INITIATOR,
            self.credentials,
            self._trust,
            expected_did=expected_did,
            admission=self._admission,
        )
        tunnel = Tunnel(
            stream, connection, config=self.config, clock=self._clock, endpoint=endpoint
        )
        async with self._handshake_slots:
            self._handshakes += 1
            try:
                await tunnel.handshake()
            finally:
                self._handshakes -= 1
        self._register(tunnel)
        task = asyncio.create_task(self._run_tunnel(tunnel), name=f"tunnel {tunnel.peer.did}")
        self._tunnel_tasks.add(task)
        task.add_done_callback(self._tunnel_tasks.discard)
        return tunnel

    def _start_dialer(self, key: str, dialer: _Dialer) -> None:
        self._dialers[key] = dialer
        dialer.task = asyncio.create_task(self._dial_loop(dialer), name=f"dialer {key}")

    def _new_backoff(self) -> Backoff:
        return Backoff(self.config.backoff_base, self.config.backoff_cap, rng=self._rng)

    async def _dial_loop(self, dialer: _Dialer) -> None:
        while not self._stopping:
            did = dialer.did
            session = self._sessions.get(did) if did is not None else None
            if session is not None and session.tunnel is not None:
                await self._sleep_or_wake(dialer, None)
                continue
            if did is not None and self._blocked(did, session):
                await self._sleep_or_wake(dialer, None)
                continue
            if not dialer.endpoints:
                await self._sleep_or_wake(dialer, None)
                continue
            url = dialer.endpoints[dialer.index % len(dialer.endpoints)]
            dialer.index += 1
            try:
                tunnel = await self._dial(url, dialer.expected)
            except (FederationError, OSError, TimeoutError) as exc:
                delay = dialer.backoff.next_delay()
                log.info("dial_failed", endpoint=url, error=str(exc), retry_in=round(delay, 3))
                await self._sleep_or_wake(dialer, delay)
                continue
            except Exception as exc:  # websockets' InvalidURI/InvalidHandshake and the like
                delay = dialer.backoff.next_delay()
                log.info(
                    "dial_failed", endpoint=url, error=type(exc).__name__, retry_in=round(delay, 3)
                )
                await self._sleep_or_wake(dialer, delay)
                continue
            dialer.backoff.reset()
            dialer.did = tunnel.peer.did
            dialer.index -= 1  # stay on the endpoint that worked
            await tunnel.wait_closed()
            await self._sleep_or_wake(dialer, dialer.backoff.next_delay())

    @staticmethod
    async def _sleep_or_wake(dialer: _Dialer, delay: float | None) -> None:
        """Wait for ``delay`` seconds (forever if None) or until the dialer is woken."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await dialer.wake.wait()
        dialer.wake.clear()

    # ------------------------------------------------------------ tunnels

    async def _run_tunnel(self, tunnel: Tunnel) -> None:
        """Pump an authenticated tunnel (already through ``_register``) until it closes."""
        try:
            info = await tunnel.run(self._on_tunnel_frame)
        finally:
            self._open_tunnels.discard(tunnel)
        self._unregister(tunnel, info)

    def _register(self, tunnel: Tunnel) -> None:
        """Make ``tunnel`` the peer's tunnel, or close it (or the old one) by the rules above."""
        self._open_tunnels.add(tunnel)
        peer = tunnel.peer
        session = self._sessions.get(peer.did)
        if session is None:
            session = self._new_session(peer.did)
        if session.public_key is not None and session.public_key != peer.public_key:
            tunnel.close(CLOSE_POLICY, "a different key already holds this DID")
            log.warning("peer_key_mismatch", did=peer.did)
            return
        session.did_key, session.public_key = peer.did_key, peer.public_key
        existing = session.tunnel
        if existing is None or not existing.is_open:
            self._activate(session, tunnel, was_online=False)
            return
        if existing.peer.static_key != peer.static_key:
            live_for = min(2 * self.config.ping_interval, self.config.silence_timeout)
            if self._clock.monotonic() - existing.last_received < live_for:
                log.warning(
                    "identity_conflict", did=peer.did, live=existing.remote, refused=tunnel.remote
                )
                tunnel.close(CLOSE_POLICY, "identity conflict: another session of this DID is live")
                return
            existing.close(CLOSE_NORMAL, "replaced by a new session")
            self._activate(session, tunnel, was_online=True)
            return
        keep, lose = sorted((existing, tunnel), key=self._duplicate_rank)
        log.info("duplicate_tunnel_closed", did=peer.did, kept=keep.remote, closed=lose.remote)
        lose.close(CLOSE_NORMAL, "duplicate")
        if keep is tunnel:
            self._activate(session, tunnel, was_online=True)

    def _duplicate_rank(self, tunnel: Tunnel) -> tuple[bytes, bytes]:
        peer = tunnel.peer
        initiator = self.identity.public_key if peer.we_initiated else peer.public_key
        return initiator, peer.handshake_hash

    def _activate(self, session: _Session, tunnel: Tunnel, *, was_online: bool) -> None:
        peer = tunnel.peer
        if session.stream.peer_process_is(peer.static_key):
            log.info("peer_restarted", did=peer.did)
        session.tunnel = tunnel
        session.last_peer = peer
        session.endpoint = tunnel.endpoint or (peer.endpoints[0] if peer.endpoints else None)
        session.last_seen_ms = self._clock.time_ms()
        tunnel.ack_source = session.stream.take_ack
        for frame in session.stream.outbox():
            tunnel.send_frame(frame)
        log.info(
            "tunnel_open",
            did=peer.did,
            remote=tunnel.remote,
            initiator="self" if peer.we_initiated else "peer",
            resent=session.stream.outbox_len,
        )
        if not was_online:
            self._emit(PeerOnline(self._status(session)))

    def _unregister(self, tunnel: Tunnel, info: CloseInfo) -> None:
        peer = tunnel.peer
        session = self._sessions.get(peer.did)
        if session is None or session.tunnel is not tunnel:
            return
        session.tunnel = None
        session.window_open.set()
        log.info(
            "tunnel_closed", did=peer.did, code=info.code, reason=info.reason, by_peer=info.by_peer
        )
        self._emit(PeerOffline(self._status(session), info.code, info.reason))
        for dialer in self._dialers.values():
            if dialer.did == peer.did:
                dialer.wake.set()

    def _new_session(self, did: Did) -> _Session:
        session = _Session(
            did=did,
            did_key=None,
            public_key=None,
            stream=ReliableStream(self.config.max_unacked_frames, self.config.max_unacked_bytes),
            queue=asyncio.Queue(self.config.delivery_queue),
        )
        session.worker = asyncio.create_task(self._deliver(session), name=f"deliver {did}")
        self._sessions[did] = session
        return session

    def _session_for(self, did: str, *, create: bool = False) -> _Session | None:
        """The session for ``did`` (either form); with ``create``, also for a peer a dialler
        was told about but never met, so frames can wait in its outbox."""
        session = self._sessions.get(Did(did))
        if session is not None:
            return session
        if did.startswith("did:key:"):
            for candidate in self._sessions.values():
                if candidate.did_key == did:
                    return candidate
            return None
        if (
            create
            and did.startswith("did:cis:")
            and any(d.did == did for d in self._dialers.values())
        ):
            return self._new_session(Did(did))
        return None

    def _blocked(self, did: Did, session: _Session | None) -> bool:
        """Whether trust says level 0 for ``did`` (no tunnel either way)."""
        did_key = session.did_key if session is not None else None
        return int(self._trust.level(did, did_key)) <= 0

    def _status(self, session: _Session) -> PeerStatus:
        tunnel = session.tunnel
        online = tunnel is not None and tunnel.is_open
        if online and tunnel is not None:
            session.last_seen_ms = self._clock.time_ms() - int(
                (self._clock.monotonic() - tunnel.last_received) * 1000
            )
        return PeerStatus(
            did=session.did,
            did_key=session.did_key or DidKey(""),
            online=online,
            rtt_ms=tunnel.rtt_ms if online and tunnel is not None else None,
            endpoint=session.endpoint,
            remote=tunnel.remote if online and tunnel is not None else None,
            last_seen_ms=session.last_seen_ms,
            outbox=session.stream.outbox_len,
            we_initiated=tunnel.peer.we_initiated if online and tunnel is not None else None,
        )

    def _emit(self, event: PeerEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("peer_listener_failed")

    # ------------------------------------------------------------ receiving

    async def _on_tunnel_frame(self, tunnel: Tunnel, frame: Frame) -> None:
        """Called by a tunnel's reader for every frame, in order; raises ``TunnelError``
        (closing that tunnel) for a protocol violation."""
        peer = tunnel.peer
        session = self._sessions.get(peer.did)
        if session is None or (session.tunnel is not tunnel and not tunnel.is_open):
            return
        if frame.ack:
            session.stream.on_ack(frame.ack)
            if session.stream.outbox_len <= self.config.send_window:
                session.window_open.set()
                session.overflowing = False
        if not frames.is_reliable(frame):
            return
        if session.stream.peer_process != peer.static_key:
            return  # a closing duplicate from a process we no longer talk to
        if not session.stream.accept(frame.seq):
            return
        generation = session.stream.generation
        if frames.body_kind(frame) == "response":
            future = session.pending.get(frame.response.id)
            if future is not None and not future.done():
                future.set_result(frame.response)
            session.stream.mark_delivered(frame.seq, generation)
            self._ack_soon(session)
            return
        await session.queue.put((peer, frame, generation))

    async def _deliver(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        while True:
            peer, frame, generation = await session.queue.get()
            handler = self._on_frame
            try:
                if handler is not None:
                    if self._executor is not None and not inspect.iscoroutinefunction(handler):
                        result = await loop.run_in_executor(self._executor, handler, peer, frame)
                    else:
                        result = handler(peer, frame)
                    if inspect.isawaitable(result):
                        await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("frame_handler_failed", did=peer.did, seq=frame.seq)
            session.stream.mark_delivered(frame.seq, generation)
            self._ack_soon(session)

    def _ack_soon(self, session: _Session) -> None:
        if session.stream.ack_due >= self.config.ack_every:
            self._send_ack(session)
        elif session.stream.ack_due > 0 and session.ack_timer is None:
            loop = asyncio.get_running_loop()
            session.ack_timer = loop.call_later(self.config.ack_delay, self._send_ack, session)

    def _send_ack(self, session: _Session) -> None:
        if session.ack_timer is not None:
            session.ack_timer.cancel()
            session.ack_timer = None
        tunnel = session.tunnel
        if session.stream.ack_due > 0 and tunnel is not None and tunnel.is_open:
            tunnel.send_frame(frames.ack_only())

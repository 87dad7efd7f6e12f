"""Two tunnel endpoints on real sockets (127.0.0.1, ports the kernel picks): dialling, RTT,
duplicate dials, silence, reconnects, handshake limits, trust, garbage, busy handlers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection

from cis.federation import frames
from cis.federation import wire_pb2 as pb
from cis.federation.config import TunnelConfig
from cis.federation.connection import FrameReceived, Role, TunnelConnection
from cis.federation.errors import HandshakeFailed
from cis.federation.handshake import Credentials, PeerIdentity
from cis.federation.manager import PeerEvent, PeerOffline, PeerOnline, TunnelManager
from cis.federation.trust import StaticTrust
from cis.identity.keys import NodeIdentity

from .helpers import Server, eventually, identities, logged, ordered_pair

pytestmark = pytest.mark.timeout(60)

FAST = TunnelConfig(
    ping_interval=0.1,
    silence_timeout=1.5,
    handshake_timeout=5.0,
    backoff_base=0.05,
    backoff_cap=0.5,
)


@dataclass
class LivePeer:
    identity: NodeIdentity
    trust: StaticTrust
    manager: TunnelManager
    server: Server
    received: list[pb.Frame] = field(default_factory=list)
    events: list[PeerEvent] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def did(self) -> str:
        return self.identity.did

    def offline_events(self) -> list[PeerOffline]:
        return [e for e in self.events if isinstance(e, PeerOffline)]


StartPeer = Callable[..., Awaitable[LivePeer]]


@pytest.fixture
async def start_peer() -> AsyncIterator[StartPeer]:
    started: list[LivePeer] = []

    async def start(
        identity: NodeIdentity | None = None,
        config: TunnelConfig = FAST,
        on_frame: Any = None,
        **kwargs: Any,
    ) -> LivePeer:
        identity = identity or identities(f"node{len(started)}")[0]
        trust = StaticTrust()
        received: list[pb.Frame] = []
        manager = TunnelManager(
            identity,
            trust,
            config=config,
            on_frame=on_frame or (lambda peer, frame: received.append(frame)),
            **kwargs,
        )
        server = Server(Starlette(routes=[manager.route()]))
        await server.start()
        peer = LivePeer(identity, trust, manager, server, received)
        manager.add_listener(peer.events.append)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        await peer.manager.stop()
        await peer.server.stop()


async def raw_connect(url: str) -> ClientConnection:
    return await websockets.asyncio.client.connect(
        url, max_size=None, ping_interval=None, proxy=None, compression=None
    )


async def close_of(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Wait (10 s at most) for the server to close ``ws``; return its close code and reason."""
    async with asyncio.timeout(10):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason


async def rogue_handshake(url: str, identity: NodeIdentity) -> tuple[ClientConnection, Any]:
    """A hand-driven initiator that completes a valid handshake, then does what the test says."""
    conn = TunnelConnection(Role.INITIATOR, Credentials.create(identity), StaticTrust())
    ws = await raw_connect(url)
    await ws.send(conn.data_to_send()[0])
    conn.receive_message(await ws.recv())
    await ws.send(conn.data_to_send()[0])
    conn.receive_message(await ws.recv())  # the responder's first frame: it accepted us
    assert any(isinstance(e, FrameReceived) for e in conn.events_received())
    return ws, conn


def test_defaults_are_the_documented_ones() -> None:
    config = TunnelConfig()
    assert (config.handshake_timeout, config.max_handshakes) == (10.0, 64)
    assert (config.ping_interval, config.silence_timeout, config.backoff_cap) == (5.0, 15.0, 60.0)


async def test_dial_authenticates_measures_rtt_and_reports_status(start_peer: StartPeer) -> None:
    b = await start_peer()
    a = await start_peer(endpoints=["ws://127.0.0.1:1/_cis/federation/v1"])
    started = time.perf_counter()
    a.manager.add_peer(b.url, b.did)
    async with asyncio.timeout(10):
        status = await a.manager.wait_online(b.did)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert status.endpoint == b.url and status.we_initiated and status.did_key == b.identity.did_key
    await eventually(lambda: (a.manager.status(b.did) or status).rtt_ms is not None)
    rtt = a.manager.status(b.did).rtt_ms  # type: ignore[union-attr]
    assert rtt is not None and 0 < rtt < 1000
    seen_by_b = b.manager.status(a.did)
    assert seen_by_b is not None and seen_by_b.online
    assert seen_by_b.endpoint == "ws://127.0.0.1:1/_cis/federation/v1"  # what a advertised
    assert elapsed_ms < 5000
    await a.manager.send(b.did, frames.pdus([b'{"hello":"b"}']))
    await eventually(lambda: len(b.received) == 1)
    assert b.received[0].pdus.pdus[0] == b'{"hello":"b"}'


async def test_simultaneous_dials_leave_one_tunnel_by_the_key_rule(start_peer: StartPeer) -> None:
    small, large = ordered_pair()
    a, b = await start_peer(small), await start_peer(large)
    await asyncio.gather(
        a.manager.connect(b.url, b.did),
        b.manager.connect(a.url, a.did),
        return_exceptions=True,  # the loser's dialler may see "duplicate" during confirmation
    )
    await eventually(lambda: a.manager.open_tunnels == 1 and b.manager.open_tunnels == 1)
    status_a, status_b = a.manager.status(b.did), b.manager.status(a.did)
    assert status_a is not None and status_a.online and status_a.we_initiated is True
    assert status_b is not None and status_b.online and status_b.we_initiated is False
    for n in range(50):
        await b.manager.send(a.did, frames.pdus([b'{"n":%d}' % n]))
    await eventually(lambda: len(a.received) == 50)
    assert [f.pdus.pdus[0] for f in a.received] == [b'{"n":%d}' % n for n in range(50)]


async def test_a_silent_peer_is_closed_and_marked_offline(start_peer: StartPeer) -> None:
    b = await start_peer(config=TunnelConfig(ping_interval=0.1, silence_timeout=0.6))
    rogue = identities("quiet")[0]
    ws, _conn = await rogue_handshake(b.url, rogue)
    await eventually(
        lambda: bool(b.manager.status(rogue.did) and b.manager.status(rogue.did).online)
    )  # type: ignore[union-attr]
    started = time.monotonic()
    # Say nothing from now on (the server's pings go unanswered).
    await eventually(lambda: bool(b.offline_events()), within=10)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 5
    event = b.offline_events()[0]
    assert event.status.did == rogue.did and not event.status.online
    assert "nothing received for 0.6 s" in event.reason
    code, reason = await close_of(ws)
    assert code == 1000 and reason == "nothing received for 0.6 s"


async def test_reconnects_with_backoff_and_delivers_what_waited(start_peer: StartPeer) -> None:
    b = await start_peer()
    a = await start_peer()
    a.manager.add_peer(b.url, b.did)
    async with asyncio.timeout(10):
        await a.manager.wait_online(b.did)
    port = b.server.port
    await b.server.stop()
    await eventually(lambda: bool(a.offline_events()))
    await a.manager.send(b.did, frames.pdus([b'{"while":"offline"}']))
    await asyncio.sleep(0.3)  # a few failed attempts, backing off
    b.server = Server(b.server.app, port)
    await b.server.start()
    async with asyncio.timeout(10):
        await a.manager.wait_online(b.did)
    await eventually(lambda: any(f.pdus.pdus[:1] == [b'{"while":"offline"}'] for f in b.received))
    assert [type(e) for e in a.events] == [PeerOnline, PeerOffline, PeerOnline]


async def test_a_new_endpoint_is_dialled_at_once(start_peer: StartPeer) -> None:
    slow = TunnelConfig(ping_interval=0.1, silence_timeout=1.5, backoff_base=30, backoff_cap=60)
    b = await start_peer()
    a = await start_peer(config=slow)
    dead = Server(Starlette())
    await dead.start()
    dead_url = dead.url
    await dead.stop()  # nothing listens there any more
    a.manager.set_peer_endpoints(b.did, [dead_url])
    await asyncio.sleep(0.3)  # the first attempt fails; the next is 15-30 s away
    started = time.monotonic()
    a.manager.set_peer_endpoints(b.did, [b.url])
    async with asyncio.timeout(10):
        await a.manager.wait_online(b.did)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("sent", [0, 1])
async def test_a_stalled_handshake_is_closed_at_the_timeout(
    start_peer: StartPeer, sent: int
) -> None:
    b = await start_peer(config=TunnelConfig(handshake_timeout=0.5))
    ws = await raw_connect(b.url)
    if sent:
        conn = TunnelConnection(
            Role.INITIATOR, Credentials.create(identities("x")[0]), StaticTrust()
        )
        await ws.send(conn.data_to_send()[0])  # message 1, then nothing
    started = time.monotonic()
    code, reason = await close_of(ws)
    assert 0.3 <= time.monotonic() - started < 5
    assert (code, reason) == (1008, "handshake not finished within 0.5 s")
    assert b.manager.handshakes_in_progress == 0


async def test_handshakes_beyond_the_limit_are_refused(start_peer: StartPeer) -> None:
    b = await start_peer(config=TunnelConfig(max_handshakes=2, handshake_timeout=5))
    stalled = [await raw_connect(b.url) for _ in range(2)]
    await eventually(lambda: b.manager.handshakes_in_progress == 2)
    extra = await raw_connect(b.url)
    assert await close_of(extra) == (1013, "too many handshakes in progress")
    for ws in stalled:
        await ws.close()
    await eventually(lambda: b.manager.handshakes_in_progress == 0)
    a = await start_peer()
    await a.manager.connect(b.url, b.did)  # room again


async def test_trust_0_refuses_the_tunnel_both_ways(
    start_peer: StartPeer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    a, b = await start_peer(), await start_peer()
    b.trust.set(a.did, 0)
    with pytest.raises(HandshakeFailed) as refused_by_b:
        await a.manager.connect(b.url, b.did)
    assert (refused_by_b.value.code, refused_by_b.value.reason) == (
        1008,
        f"trust level 0 for {a.did}",
    )
    b.trust.set(a.did, 1)
    a.trust.set(b.identity.did_key, 0)
    with pytest.raises(HandshakeFailed) as refused_by_a:
        await a.manager.connect(b.url, b.did)
    assert refused_by_a.value.code == 1008 and b.did in refused_by_a.value.reason
    await eventually(
        lambda: (
            {"code": 1008, "reason": f"trust level 0 for {b.did}"}.items()
            <= (logged(caplog.records, "handshake_refused") or [{}])[-1].items()
        )
    )
    assert logged(caplog.records, "handshake_refused")[0]["reason"] == f"trust level 0 for {a.did}"
    assert a.manager.open_tunnels == 0 and b.manager.open_tunnels == 0


async def test_text_and_oversized_messages_are_refused(start_peer: StartPeer) -> None:
    b = await start_peer()
    ws = await raw_connect(b.url)
    await ws.send("hello")
    assert await close_of(ws) == (1002, "text messages are not allowed")
    ws = await raw_connect(b.url)
    await ws.send(bytes(70_000))
    code, _reason = await close_of(ws)
    assert code == 1009


@pytest.mark.parametrize("garbage", ["random", "encrypted", "bad-ack"])
async def test_garbage_closes_that_tunnel_and_leaves_the_node_healthy(
    start_peer: StartPeer, garbage: str
) -> None:
    b = await start_peer()
    c = await start_peer()
    c.manager.add_peer(b.url, b.did)
    async with asyncio.timeout(10):
        await c.manager.wait_online(b.did)
    ws, conn = await rogue_handshake(b.url, identities("rogue")[0])
    if garbage == "random":
        await ws.send(b"\x13\x37" * 40)
        expected = "transport message failed authentication"
    elif garbage == "encrypted":
        await ws.send(bytes(conn._noise.encrypt(b"\x00not a frame")))
        expected = "frame is not valid protobuf"
    else:  # a well-formed frame acknowledging something never sent
        frame = frames.ping(1, 0)
        frame.ack = 99
        conn.send_frame(frame)
        await ws.send(conn.data_to_send()[0])
        expected = "ack for a frame never sent"
    assert await close_of(ws) == (1002, expected)
    # The healthy peer noticed nothing: still online, still pinging, still delivering.
    before = c.manager.status(b.did)
    assert before is not None and before.online
    await c.manager.send(b.did, frames.pdus([b'{"still":"fine"}']))
    await eventually(lambda: len(b.received) == 1)
    await asyncio.sleep(FAST.ping_interval * 3)
    after = c.manager.status(b.did)
    assert after is not None and after.online and after.last_seen_ms >= before.last_seen_ms  # type: ignore[operator]
    assert [type(e) for e in c.events] == [PeerOnline]
    # And it still accepts newcomers.
    d = await start_peer()
    assert (await d.manager.connect(b.url, b.did)).did == b.did


def burn_cpu(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    data = b"x" * 1024
    while time.perf_counter() < deadline:
        data = hashlib.sha256(data).digest() * 32


async def test_cpu_heavy_handlers_off_the_loop_do_not_starve_pings(
    start_peer: StartPeer,
) -> None:
    config = TunnelConfig(ping_interval=0.1, silence_timeout=0.6)
    handled: list[int] = []

    def heavy(peer: PeerIdentity, frame: pb.Frame) -> None:
        burn_cpu(0.9)
        handled.append(frame.seq)

    with ThreadPoolExecutor(1) as executor:
        b = await start_peer(config=config, on_frame=heavy, handler_executor=executor)
        a = await start_peer(config=config)
        await a.manager.connect(b.url, b.did)
        for _ in range(2):
            await a.manager.send(b.did, frames.pdus([b"{}"]))
        await eventually(lambda: handled == [1, 2], within=20)
        assert a.offline_events() == [] and b.offline_events() == []
        assert a.manager.status(b.did).online  # type: ignore[union-attr]
        await eventually(lambda: a.manager.status(b.did).outbox == 0)  # type: ignore[union-attr]


async def test_the_same_handler_on_the_loop_would_starve_them(start_peer: StartPeer) -> None:
    """The counterpart of the test above: it shows that test measures something."""
    config = TunnelConfig(ping_interval=0.1, silence_timeout=0.6, backoff_base=5)

    def heavy(peer: PeerIdentity, frame: pb.Frame) -> None:
        burn_cpu(1.2)

    b = await start_peer(config=config, on_frame=heavy)
    a = await start_peer(config=config)
    await a.manager.connect(b.url, b.did)
    await a.manager.send(b.did, frames.pdus([b"{}"]))
    await eventually(lambda: bool(a.offline_events()), within=20)
    assert "nothing received" in a.offline_events()[0].reason


async def test_trust_0_stops_dialling_and_raising_it_reconnects_at_once(
    start_peer: StartPeer,
) -> None:
    slow = TunnelConfig(ping_interval=0.1, silence_timeout=1.5, backoff_base=30, backoff_cap=60)
    b = await start_peer()
    a = await start_peer(config=slow)
    a.trust.set(b.did, 0)
    a.manager.set_peer_endpoints(b.did, [b.url])
    await asyncio.sleep(0.3)
    assert b.manager.status(a.did) is None  # never even dialled
    a.trust.set(b.did, 1)
    started = time.monotonic()
    a.manager.trust_changed(b.did)
    async with asyncio.timeout(10):
        await a.manager.wait_online(b.did)
    assert time.monotonic() - started < 5
    a.trust.set(b.did, 0)
    a.manager.trust_changed(b.did)
    await eventually(lambda: bool(b.offline_events()))
    assert b.offline_events()[0].code == 1008
    await asyncio.sleep(0.3)
    assert not a.manager.status(b.did).online  # type: ignore[union-attr]

"""The asyncio shell and the manager over in-memory connections (no sockets): duplicate
resolution, re-sending after a switch, requests, handlers, trust changes, status events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from cis.federation import frames
from cis.federation import wire_pb2 as pb
from cis.federation.config import TunnelConfig
from cis.federation.errors import HandshakeFailed, PeerUnknown, RequestTimeout
from cis.federation.handshake import PeerIdentity
from cis.federation.manager import (
    OutboxOverflow,
    PeerEvent,
    PeerOffline,
    PeerOnline,
    TunnelManager,
)
from cis.federation.transport import MemoryStream, memory_stream_pair
from cis.federation.trust import StaticTrust
from cis.identity.keys import NodeIdentity

from .helpers import eventually, ordered_pair

FAST = TunnelConfig(ping_interval=0.05, silence_timeout=2.0, handshake_timeout=5.0)


@dataclass
class Node:
    identity: NodeIdentity
    manager: TunnelManager
    trust: StaticTrust
    received: list[tuple[str, pb.Frame]] = field(default_factory=list)
    events: list[PeerEvent] = field(default_factory=list)
    accepting: list[asyncio.Task[None]] = field(default_factory=list)

    def pdus(self) -> list[bytes]:
        return [p for _, f in self.received if f.HasField("pdus") for p in f.pdus.pdus]


def make_node(identity: NodeIdentity, config: TunnelConfig = FAST, **kwargs: object) -> Node:
    trust = StaticTrust()
    node = Node(identity, None, trust)  # type: ignore[arg-type]

    def on_frame(peer: PeerIdentity, frame: pb.Frame) -> None:
        node.received.append((peer.did, frame))

    kwargs.setdefault("on_frame", on_frame)
    node.manager = TunnelManager(identity, trust, config=config, **kwargs)  # type: ignore[arg-type]
    node.manager.add_listener(node.events.append)
    return node


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node]]:
    small, large = ordered_pair()
    a, b = make_node(small), make_node(large)
    yield a, b
    for node in (a, b):
        await node.manager.stop()
        for task in node.accepting:
            task.cancel()
        await asyncio.gather(*node.accepting, return_exceptions=True)


async def link(
    dialler: Node, listener: Node, pair: tuple[MemoryStream, MemoryStream] | None = None
) -> PeerIdentity:
    near, far = pair or memory_stream_pair(f"{dialler.identity.node_id}:1", "listener:2")
    listener.accepting.append(asyncio.create_task(listener.manager.accept_stream(far)))
    return await dialler.manager.connect_stream(near, listener.identity.did)


class Blackhole(MemoryStream):
    """A stream end whose sends vanish once ``drop`` is set (a link gone silent one way)."""

    drop = False

    async def send(self, data: bytes) -> None:
        if not self.drop:
            await super().send(data)


def blackhole_pair() -> tuple[Blackhole, MemoryStream]:
    near, far = Blackhole("bh:1"), MemoryStream("far:2")
    near.peer, far.peer = far, near
    return near, far


async def test_frames_flow_both_ways_and_status_reports_the_tunnel(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    peer = await link(a, b)
    assert peer.did == b.identity.did
    await a.manager.send(b.identity.did, frames.pdus([b'{"from":"a"}']))
    await b.manager.send(a.identity.did_key, frames.pdus([b'{"from":"b"}']))
    await eventually(lambda: bool(a.pdus()) and bool(b.pdus()))
    assert b.pdus() == [b'{"from":"a"}'] and a.pdus() == [b'{"from":"b"}']
    await eventually(lambda: (a.manager.status(b.identity.did) or _offline).rtt_ms is not None)
    status = a.manager.status(b.identity.did)
    assert status is not None and status.online and status.we_initiated
    assert status.did_key == b.identity.did_key and status.remote == "listener:2"
    await eventually(lambda: a.manager.status(b.identity.did).outbox == 0)  # type: ignore[union-attr]
    assert [type(e) for e in a.events] == [PeerOnline]


_offline = type("Offline", (), {"rtt_ms": None})()


async def test_simultaneous_tunnels_keep_the_one_the_smaller_key_initiated(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes  # a has the smaller public key
    await asyncio.gather(link(a, b), link(b, a))
    await eventually(lambda: a.manager.open_tunnels == 1 and b.manager.open_tunnels == 1)
    status_a = a.manager.status(b.identity.did)
    status_b = b.manager.status(a.identity.did)
    assert status_a is not None and status_b is not None
    assert status_a.online and status_b.online
    assert status_a.we_initiated is True and status_b.we_initiated is False
    assert status_a.remote == "listener:2"  # a's own dial, accepted by b
    assert [type(e) for e in a.events] == [PeerOnline]  # no offline blip
    await a.manager.send(b.identity.did, frames.pdus([b"{}"]))
    await eventually(lambda: len(b.pdus()) == 1)


async def test_unacknowledged_frames_are_resent_on_the_surviving_tunnel(
    nodes: tuple[Node, Node],
) -> None:
    small, large = nodes
    # The larger key's tunnel goes first, then its link silently loses everything.
    near, far = blackhole_pair()
    await link(large, small, (near, far))
    near.drop = True
    for n in range(5):
        await large.manager.send(small.identity.did, frames.pdus([b'{"n":%d}' % n]))
    assert large.manager.status(small.identity.did).outbox == 5  # type: ignore[union-attr]
    assert small.pdus() == []
    # The smaller key dials: its tunnel wins, the old one is closed as a duplicate.
    await link(small, large)
    await eventually(lambda: len(small.pdus()) == 5)
    assert small.pdus() == [b'{"n":%d}' % n for n in range(5)]
    await eventually(lambda: large.manager.status(small.identity.did).outbox == 0)  # type: ignore[union-attr]
    assert large.manager.open_tunnels == 1 and small.manager.open_tunnels == 1


async def test_a_restarted_peer_replaces_a_silent_old_tunnel_and_gets_the_outbox(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    near, far = blackhole_pair()
    await link(b, a, (near, far))
    await a.manager.send(b.identity.did, frames.pdus([b'{"lost":1}']))
    near.drop = True
    # b "restarts": a new process (new static key) with the same identity.
    b2 = make_node(b.identity)
    try:
        await asyncio.sleep(FAST.ping_interval * 2 + 0.15)  # the old tunnel falls silent
        await link(b2, a)
        # Whatever the old process got, it never acknowledged it: the new one gets it.
        await eventually(lambda: b2.pdus() == [b'{"lost":1}'])
        await eventually(lambda: a.manager.open_tunnels == 1)
        await eventually(lambda: a.manager.status(b.identity.did).outbox == 0)  # type: ignore[union-attr]
        assert a.manager.status(b.identity.did).online  # type: ignore[union-attr]
    finally:
        await b2.manager.stop()


async def test_a_second_live_process_with_the_same_identity_is_refused(
    nodes: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = nodes
    await link(b, a)
    b_copy = make_node(b.identity)
    caplog.set_level(logging.WARNING)
    try:
        with pytest.raises(HandshakeFailed) as info:
            await link(b_copy, a)
        assert info.value.code == 1008 and "identity conflict" in info.value.reason
        assert "identity_conflict" in caplog.text
        assert a.manager.status(b.identity.did).online  # type: ignore[union-attr]
    finally:
        await b_copy.manager.stop()


async def test_requests_get_their_responses_even_from_inside_a_handler() -> None:
    small, large = ordered_pair()
    answered: list[int] = []

    async def server(peer: PeerIdentity, frame: pb.Frame) -> None:
        if frame.HasField("request"):
            req = frame.request
            if req.HasField("get_events"):
                # Ask the requester something back before answering: must not deadlock.
                back = await mb.request(peer.did, pb.Request(user_devices=pb.UserDevices()))
                answered.append(back.id)
                events = pb.Events(pdus=[e.encode() for e in req.get_events.event_ids])
                await mb.respond(peer.did, req.id, pb.Response(events=events))

    async def client(peer: PeerIdentity, frame: pb.Frame) -> None:
        if frame.HasField("request"):
            await ma.respond(
                peer.did,
                frame.request.id,
                frames.error_response(0, "M_UNRECOGNIZED", "no devices here"),
            )

    ma = TunnelManager(small, StaticTrust(), config=FAST, on_frame=client)
    mb = TunnelManager(large, StaticTrust(), config=FAST, on_frame=server)
    near, far = memory_stream_pair()
    accepting = asyncio.create_task(mb.accept_stream(far))
    try:
        await ma.connect_stream(near)
        response = await ma.request(
            large.did, pb.Request(get_events=pb.GetEvents(room_id="!r", event_ids=["$1", "$2"]))
        )
        assert list(response.events.pdus) == [b"$1", b"$2"]
        assert response.id == 1 and answered == [1]
    finally:
        await ma.stop()
        await mb.stop()
        await accepting


async def test_a_request_without_answer_times_out(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.manager.config = TunnelConfig(ping_interval=0.05, silence_timeout=2.0, request_timeout=0.2)
    await link(a, b)
    with pytest.raises(RequestTimeout):
        await a.manager.request(b.identity.did, pb.Request(get_extremities=pb.GetExtremities()))


async def test_a_failing_handler_is_logged_and_delivery_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    small, large = ordered_pair()
    seen: list[bytes] = []

    def handler(peer: PeerIdentity, frame: pb.Frame) -> None:
        if frame.pdus.pdus[0] == b"boom":
            raise RuntimeError("handler bug")
        seen.append(frame.pdus.pdus[0])

    a = make_node(small)
    b = make_node(large, on_frame=handler)
    try:
        await link(a, b)
        for body in (b"1", b"boom", b"2"):
            await a.manager.send(large.did, frames.pdus([body]))
        await eventually(lambda: seen == [b"1", b"2"])
        await eventually(lambda: a.manager.status(large.did).outbox == 0)  # type: ignore[union-attr]
        assert "frame_handler_failed" in caplog.text
    finally:
        await a.manager.stop()
        await b.manager.stop()


async def test_outbox_overflow_is_reported(nodes: tuple[Node, Node]) -> None:
    a, _b = nodes
    small = TunnelConfig(
        ping_interval=0.05, silence_timeout=2.0, max_unacked_frames=2, send_window=2
    )
    m = TunnelManager(a.identity, StaticTrust(), config=small)
    events: list[PeerEvent] = []
    m.add_listener(events.append)
    m.set_peer_endpoints("did:cis:nobody:0123456789abcdef", ["ws://127.0.0.1:9/"])
    try:
        for _ in range(4):
            await m.send("did:cis:nobody:0123456789abcdef", frames.pdus([b"{}"]))
        overflows = [e for e in events if isinstance(e, OutboxOverflow)]
        assert [e.dropped for e in overflows] == [1, 1]
    finally:
        await m.stop()


async def test_sending_to_a_stranger_is_an_error(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    with pytest.raises(PeerUnknown):
        await a.manager.send(b.identity.did, frames.pdus([b"{}"]))


async def test_lowering_trust_to_0_closes_the_tunnel(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    await link(a, b)
    b.trust.set(a.identity.did, 0)
    b.manager.trust_changed(a.identity.did)
    await eventually(lambda: any(isinstance(e, PeerOffline) for e in a.events))
    offline = next(e for e in a.events if isinstance(e, PeerOffline))
    assert offline.code == 1008 and "trust level 0" in offline.reason
    assert not b.manager.status(a.identity.did).online  # type: ignore[union-attr]
    with pytest.raises(HandshakeFailed) as info:
        await link(a, b)
    assert info.value.code == 1008


async def test_silence_closes_the_tunnel_and_marks_the_peer_offline() -> None:
    small, large = ordered_pair()
    config = TunnelConfig(ping_interval=0.05, silence_timeout=0.3)
    a, b = make_node(small, config), make_node(large, config)
    near, far = blackhole_pair()
    try:
        await link(a, b, (near, far))
        near.drop = True  # a keeps hearing b, b hears nothing from a
        loop = asyncio.get_running_loop()
        start = loop.time()
        await eventually(lambda: any(isinstance(e, PeerOffline) for e in b.events), within=5)
        elapsed = loop.time() - start
        assert 0.25 <= elapsed < 3.0
        offline = next(e for e in b.events if isinstance(e, PeerOffline))
        assert "nothing received" in offline.reason and not offline.status.online
    finally:
        await a.manager.stop()
        await b.manager.stop()

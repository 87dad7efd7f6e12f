"""AnchorClient: heartbeat and poll against the in-process anchor, its own checks of every
record, skew logging, and its Clock-driven loop."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from cis.anchor.client import AnchorClient, PeersSnapshot, StaticDiscovery
from cis.anchor.errors import AnchorRefused, ClockSkew
from cis.anchor.records import build_heartbeat, parse_heartbeat
from cis.clock import FakeClock
from cis.identity.keys import NodeIdentity

from ..federation.helpers import logged
from .conftest import BASE, NAME, InProcessAnchor

ENDPOINT = "ws://198.51.100.1:8484/_cis/federation/v1"


def client_for(
    anchor: InProcessAnchor, identity: NodeIdentity, clock: FakeClock | None = None, **kw: Any
) -> AnchorClient:
    return AnchorClient(
        BASE,
        identity,
        endpoints=[ENDPOINT],
        clock=clock or anchor.clock,
        transport=anchor.transport,
        **kw,
    )


async def test_heartbeat_then_peers_sees_the_other_node(anchor: InProcessAnchor) -> None:
    alpha, beta = NodeIdentity.generate("alpha"), NodeIdentity.generate("beta")
    a, b = client_for(anchor, alpha), client_for(anchor, beta)
    try:
        await a.heartbeat()
        await b.heartbeat()
        snapshot = await a.peers()
        assert [p.did for p in snapshot.peers] == [beta.did]
        assert snapshot.peers[0].endpoints == (ENDPOINT,)
        assert snapshot.observed_ip == "192.0.2.10" and snapshot.anchor_ts == anchor.clock.time_ms()
        # Twice in the same millisecond is still not a replay: ts only ever grows.
        await a.heartbeat()
        await a.peers()
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_skew_refusal_is_raised_and_logged(
    anchor: InProcessAnchor, caplog: pytest.LogCaptureFixture
) -> None:
    ahead = FakeClock(anchor.clock.time() + 600)
    client = client_for(anchor, NodeIdentity.generate("alpha"), clock=ahead)
    caplog.set_level(logging.WARNING)
    try:
        with pytest.raises(ClockSkew) as info:
            await client.heartbeat()
        assert info.value.skew_ms == 600_000
        (fields,) = logged(caplog.records, "anchor_clock_skew")
        assert fields["skew_ms"] == 600_000 and fields["anchor_ts"] == anchor.clock.time_ms()
        assert await client.tick() is None  # the loop carries on
    finally:
        await client.aclose()


async def test_refusals_carry_status_and_errcode(anchor: InProcessAnchor) -> None:
    client = client_for(anchor, NodeIdentity.generate("alpha"))
    try:
        with pytest.raises(AnchorRefused) as info:
            await client.peers()  # never sent a heartbeat
        assert (info.value.status, info.value.errcode) == (403, "M_FORBIDDEN")
    finally:
        await client.aclose()


def lying_anchor(records: list[Any]) -> httpx.MockTransport:
    """An anchor that answers every poll with ``records``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/heartbeat":
            return httpx.Response(200, json={"ts": 0})
        body = {"observed_ip": "192.0.2.1", "observed_port": 1, "peers": records, "ts": 0}
        return httpx.Response(200, content=json.dumps(body).encode())

    return httpx.MockTransport(handler)


async def test_the_client_checks_every_record_itself(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    now = clock.time_ms()
    me, good, other = (NodeIdentity.generate(n) for n in ("me", "good", "other"))
    tampered = build_heartbeat(other, NAME, [ENDPOINT], now)
    tampered["endpoints"] = ["ws://203.0.113.66:1/_cis/federation/v1"]
    records = [
        build_heartbeat(good, NAME, [ENDPOINT], now),
        tampered,
        build_heartbeat(me, NAME, [ENDPOINT], now),  # our own: skipped
        build_heartbeat(NodeIdentity.generate("ancient"), NAME, [], now - 3_600_000),
        {"not": "a heartbeat"},
    ]
    client = AnchorClient(BASE, me, clock=clock, transport=lying_anchor(records))
    caplog.set_level(logging.WARNING)
    try:
        snapshot = await client.peers()
        assert [p.did for p in snapshot.peers] == [good.did]
        assert len(logged(caplog.records, "anchor_record_invalid")) == 2
        assert len(logged(caplog.records, "anchor_record_stale")) == 1
    finally:
        await client.aclose()


async def test_an_anchor_cannot_roll_a_peer_back_to_older_endpoints() -> None:
    clock = FakeClock()
    me, peer = NodeIdentity.generate("me"), NodeIdentity.generate("peer")
    newer = build_heartbeat(peer, NAME, [ENDPOINT], clock.time_ms())
    older = build_heartbeat(peer, NAME, [], clock.time_ms() - 10_000)
    served = [newer]
    transport = httpx.MockTransport(
        lambda r: httpx.Response(200, json={"observed_ip": "x", "peers": list(served), "ts": 0})
    )
    client = AnchorClient(BASE, me, clock=clock, transport=transport)
    try:
        assert len((await client.peers()).peers) == 1
        served[:] = [older]
        assert (await client.peers()).peers == ()
    finally:
        await client.aclose()


async def test_the_loop_ticks_every_interval_on_the_clock(anchor: InProcessAnchor) -> None:
    alpha, beta = NodeIdentity.generate("alpha"), NodeIdentity.generate("beta")
    await client_for(anchor, beta).heartbeat()
    seen: list[PeersSnapshot] = []
    ticks: list[int] = []

    async def fake_sleep(seconds: float) -> None:
        ticks.append(anchor.clock.time_ms())
        if len(ticks) == 3:
            raise StopAsyncIteration  # end the endless loop
        anchor.clock.advance(seconds)

    client = client_for(anchor, alpha, interval=30.0, on_peers=seen.append, sleep=fake_sleep)
    try:
        with pytest.raises(StopAsyncIteration):
            await client.run()
    finally:
        await client.aclose()
    assert [t - ticks[0] for t in ticks] == [0, 30_000, 60_000]
    # beta stopped heartbeating: listed at first, gone once older than 90 s.
    assert [len(s.peers) for s in seen] == [1, 1, 1]
    assert [s.peers[0].did for s in seen] == [beta.did] * 3
    anchor.clock.advance(31)
    assert (await client_for(anchor, alpha).peers()).peers == ()


async def test_https_anchors_verify_against_the_given_ca(tmp_path: Any) -> None:
    client = AnchorClient("https://anchor.test:8443", NodeIdentity.generate("a"), ca_file=None)
    try:
        assert client.name == "anchor.test:8443"
    finally:
        await client.aclose()
    with pytest.raises(FileNotFoundError):
        AnchorClient("https://a:1", NodeIdentity.generate("a"), ca_file=str(tmp_path / "none"))


async def test_static_discovery_is_a_discovery() -> None:
    peer = NodeIdentity.generate("peer")
    record = parse_heartbeat(build_heartbeat(peer, NAME, [ENDPOINT], 1))
    discovery = StaticDiscovery([record])
    await discovery.heartbeat()
    assert discovery.heartbeats == 1 and (await discovery.peers()).peers == (record,)

"""The asyncio shell of one tunnel, over in-memory streams: closes in both directions, and a
bug in the frame callback closes the tunnel instead of leaving it half-alive."""

from __future__ import annotations

import asyncio

from cis.clock import SystemClock
from cis.federation import frames
from cis.federation.config import TunnelConfig
from cis.federation.connection import Role, TunnelConnection
from cis.federation.frames import Frame
from cis.federation.handshake import Credentials
from cis.federation.transport import memory_stream_pair
from cis.federation.trust import StaticTrust
from cis.federation.tunnel import CloseInfo, FrameCallback, Tunnel

from .helpers import eventually, identities

CONFIG = TunnelConfig(ping_interval=0.05, silence_timeout=2.0, close_timeout=1.0)


async def nothing(_tunnel: Tunnel, _frame: Frame) -> None:
    return None


async def running_pair(
    listener_callback: FrameCallback,
) -> tuple[Tunnel, asyncio.Task[CloseInfo], asyncio.Task[CloseInfo]]:
    """A dialler and a listener, both running; the dialler is returned to act on."""
    a, b = identities("a", "b")
    near, far = memory_stream_pair()
    clock = SystemClock()
    dialler = Tunnel(
        near,
        TunnelConnection(Role.INITIATOR, Credentials.create(a), StaticTrust()),
        config=CONFIG,
        clock=clock,
    )
    listener = Tunnel(
        far,
        TunnelConnection(Role.RESPONDER, Credentials.create(b), StaticTrust()),
        config=CONFIG,
        clock=clock,
    )
    # The dialler's handshake ends only when the running listener has sent its first frame.
    dialler_handshake = asyncio.create_task(dialler.handshake())
    async with asyncio.timeout(5):
        await listener.handshake()
        listening = asyncio.create_task(listener.run(listener_callback))
        await dialler_handshake
    dialling = asyncio.create_task(dialler.run(nothing))
    return dialler, dialling, listening


async def test_a_local_close_reaches_the_peer_with_its_reason() -> None:
    got: list[Frame] = []

    async def collect(_tunnel: Tunnel, frame: Frame) -> None:
        got.append(frame)

    dialler, dialling, listening = await running_pair(collect)
    frame = frames.pdus([b"{}"])
    frame.seq = 1
    dialler.send_frame(frame)
    await eventually(lambda: any(f.HasField("pdus") for f in got))
    dialler.close(1000, "duplicate")
    async with asyncio.timeout(5):
        mine, theirs = await asyncio.gather(dialling, listening)
    assert mine == CloseInfo(1000, "duplicate", by_peer=False)
    assert theirs == CloseInfo(1000, "duplicate", by_peer=True)
    assert any(f.HasField("ping") for f in got)  # pings flowed meanwhile


async def test_a_bug_in_the_frame_callback_closes_the_tunnel() -> None:
    async def broken(_tunnel: Tunnel, frame: Frame) -> None:
        if frame.HasField("pdus"):
            raise RuntimeError("bug")

    dialler, dialling, listening = await running_pair(broken)
    frame = frames.pdus([b"{}"])
    frame.seq = 1
    dialler.send_frame(frame)
    async with asyncio.timeout(5):
        theirs, mine = await asyncio.gather(listening, dialling)
    assert theirs == CloseInfo(1011, "internal error", by_peer=False)
    assert mine.code == 1011 and mine.by_peer

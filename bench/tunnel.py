"""Tunnel figures on loopback: handshake cost, dial time, frame throughput, ping RTT.

    .venv/bin/python bench/tunnel.py [--frames 20000] [--size 1024]

Everything runs in one process on 127.0.0.1 (the sender and the receiver share one CPU
core's event loop), so the figures are a floor for two processes on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time

import uvicorn
from starlette.applications import Starlette

from cis.federation import frames
from cis.federation.config import TunnelConfig
from cis.federation.connection import Role, TunnelConnection
from cis.federation.handshake import Credentials
from cis.federation.manager import TunnelManager
from cis.federation.trust import StaticTrust
from cis.identity.keys import NodeIdentity


def sans_io_handshakes(count: int) -> float:
    """Milliseconds for one complete handshake, both sides, no I/O."""
    a, b = NodeIdentity.generate("a"), NodeIdentity.generate("b")
    ca, cb = Credentials.create(a), Credentials.create(b)
    trust = StaticTrust()
    started = time.perf_counter()
    for _ in range(count):
        i = TunnelConnection(Role.INITIATOR, ca, trust)
        r = TunnelConnection(Role.RESPONDER, cb, trust)
        r.receive_message(i.data_to_send()[0])
        i.receive_message(r.data_to_send()[0])
        r.receive_message(i.data_to_send()[0])
        if i.peer is None or r.peer is None:
            raise RuntimeError("handshake did not complete")
    return (time.perf_counter() - started) * 1000 / count


async def serve(app: Starlette) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan="off",
        ws="websockets-sansio",
        ws_max_size=65_535,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
        await asyncio.sleep(0.01)
    return server, task, sock.getsockname()[1]


async def loopback(frame_count: int, size: int) -> None:
    config = TunnelConfig(ping_interval=0.05, silence_timeout=5)
    b_id = NodeIdentity.generate("bench-b")
    received = 0
    done = asyncio.Event()

    def on_frame(_peer: object, _frame: object) -> None:
        nonlocal received
        received += 1
        if received == frame_count:
            done.set()

    mb = TunnelManager(b_id, StaticTrust(), config=config, on_frame=on_frame)
    server, task, port = await serve(Starlette(routes=[mb.route()]))
    url = f"ws://127.0.0.1:{port}/_cis/federation/v1"
    dial_ms = []
    for n in range(20):
        ma = TunnelManager(NodeIdentity.generate(f"dial{n}"), StaticTrust(), config=config)
        started = time.perf_counter()
        await ma.connect(url, b_id.did)
        dial_ms.append((time.perf_counter() - started) * 1000)
        await ma.stop()
    print(
        f"dial + handshake over loopback: p50 {statistics.median(dial_ms):.2f} ms, "
        f"max {max(dial_ms):.2f} ms (20 dials)"
    )

    ma = TunnelManager(NodeIdentity.generate("bench-a"), StaticTrust(), config=config)
    await ma.connect(url, b_id.did)
    body = b"x" * size
    started = time.perf_counter()
    for _ in range(frame_count):
        await ma.send(b_id.did, frames.pdus([body]))
    await done.wait()
    elapsed = time.perf_counter() - started
    print(
        f"throughput A->B: {frame_count / elapsed:,.0f} frames/s of {size} B "
        f"({frame_count * size / elapsed / 1e6:.1f} MB/s payload), {frame_count} frames"
    )

    samples = []
    for _ in range(40):
        await asyncio.sleep(0.05)
        status = ma.status(b_id.did)
        if status is not None and status.rtt_ms is not None:
            samples.append(status.rtt_ms)
    p50, top = statistics.median(samples), max(samples)
    print(f"ping RTT (idle tunnel): p50 {p50:.2f} ms, max {top:.2f} ms")
    await ma.stop()
    await mb.stop()
    server.should_exit = True
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    print(f"sans-I/O handshake (both sides): {sans_io_handshakes(500):.3f} ms")
    asyncio.run(loopback(args.frames, args.size))


if __name__ == "__main__":
    main()

"""``cis.api.server``: one write per response, and a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx

from cis.api.server import HttpServer, _CoalescingTransport, bind
from cis.config import ListenAddress

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    """What reaches the socket: one entry per ``write``/``writelines`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.calls.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(b"".join(bytes(d) for d in list_of_data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted


async def test_a_head_goes_out_with_the_body_in_one_call() -> None:
    raw = RecordingTransport()
    transport = _CoalescingTransport(raw)
    transport.write(HEAD)
    assert raw.calls == []
    transport.write(b"{}")
    assert raw.calls == [HEAD + b"{}"]
    transport.write(b"more")  # not a head: straight through
    assert raw.calls[-1] == b"more"


async def test_a_head_alone_goes_out_at_the_end_of_the_iteration() -> None:
    raw = RecordingTransport()
    transport = _CoalescingTransport(raw)
    transport.write(HEAD)
    assert raw.calls == []
    await asyncio.sleep(0)
    assert raw.calls == [HEAD]
    transport.write(b"{}")
    assert raw.calls == [HEAD, b"{}"]


async def test_close_flushes_a_held_head_and_abort_drops_it() -> None:
    raw = RecordingTransport()
    transport = _CoalescingTransport(raw)
    transport.write(HEAD)
    transport.close()
    assert raw.calls == [HEAD] and raw.closed
    other = RecordingTransport()
    aborted = _CoalescingTransport(other)
    aborted.write(HEAD)
    aborted.abort()
    await asyncio.sleep(0)
    assert other.calls == [] and other.aborted


async def app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    body = b"x" * int(scope["query_string"] or b"2")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def test_responses_over_a_real_socket_are_whole_and_in_order() -> None:
    server = HttpServer(app, bind(ListenAddress("127.0.0.1", 0)))
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.bound.port}"
        async with httpx.AsyncClient(base_url=base) as client:  # one kept-alive connection
            for size in (0, 2, 70_000, 5):
                response = await client.get(f"/?{size}")
                assert response.status_code == 200
                assert response.content == b"x" * size
        # A raw client sees the head and body in one segment for a small answer.
        with socket.create_connection(("127.0.0.1", server.bound.port), timeout=5) as sock:
            sock.sendall(b"GET /?3 HTTP/1.1\r\nhost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"xxx"):
                chunk = await asyncio.to_thread(sock.recv, 65536)
                assert chunk
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nxxx")
    finally:
        await server.stop()

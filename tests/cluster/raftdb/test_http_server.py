"""The small HTTP/1.1 server: keep-alive, pipelining, 100-continue, limits, bad requests."""

from __future__ import annotations

import asyncio

import pytest

from cis.cluster.raftdb.http_server import HttpRequest, HttpResponse, HttpServer


async def echo(request: HttpRequest) -> HttpResponse:
    if request.path == "/slow":
        await asyncio.sleep(0.05)
    body = f"{request.method} {request.path} {sorted(request.query.items())} {len(request.body)}"
    return HttpResponse(200, body.encode(), content_type="text/plain")


async def exchange(port: int, data: bytes, *, responses: int = 1) -> list[bytes]:
    """Send ``data``, read ``responses`` responses (head and body by Content-Length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out: list[bytes] = []
    async with asyncio.timeout(5):
        while len(out) < responses:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            out.append(head + await reader.readexactly(length))
    writer.close()
    return out


@pytest.fixture
async def server() -> HttpServer:
    srv = HttpServer(echo, max_body_bytes=1000)
    await srv.start("127.0.0.1", 0)
    yield srv  # type: ignore[misc]
    await srv.close()


def port_of(srv: HttpServer) -> int:
    assert srv._server is not None
    return int(srv._server.sockets[0].getsockname()[1])


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(server: HttpServer) -> None:
    port = port_of(server)
    data = (
        b"GET /slow?a=1&flag HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /b?x=%20y HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    )
    first, second = await exchange(port, data, responses=2)
    assert b"GET /slow [('a', '1'), ('flag', '')] 0" in first
    assert b"POST /b [('x', ' y')] 3" in second


async def test_expect_continue_and_body_limit(server: HttpServer) -> None:
    port = port_of(server)
    cont, ok = await exchange(
        port,
        b"POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
        responses=2,
    )
    assert cont == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert ok.startswith(b"HTTP/1.1 200 OK") and ok.endswith(b"POST /c [] 2")
    (big,) = await exchange(port, b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 413 ")


async def test_garbage_gets_400_and_the_connection_closes(server: HttpServer) -> None:
    (out,) = await exchange(port_of(server), b"NOT HTTP AT ALL\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in out


async def test_http_1_0_without_keep_alive_closes(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(b"GET /d HTTP/1.0\r\n\r\n")
    async with asyncio.timeout(5):
        data = await reader.read()  # until the server closes
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in data

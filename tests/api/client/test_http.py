"""The ASGI layer: raw-path routing, Matrix errors, body limits, CORS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from cis.api.client.http import (
    ClientApiApp,
    Request,
    Response,
    Router,
    json_response,
    split_raw_path,
)
from cis.handlers.errors import ApiError, Errcode


async def echo_params(request: Request) -> Response:
    return json_response({"params": dict(request.params)})


async def echo_body(request: Request) -> Response:
    return json_response({"keys": sorted(request.json(allow_empty=True))})


async def strict_body(request: Request) -> Response:
    return json_response({"keys": sorted(request.json())})


async def refuse(request: Request) -> Response:
    raise ApiError(Errcode.FORBIDDEN, "Not allowed")


async def crash(request: Request) -> Response:
    raise RuntimeError("secret detail that must not leak")


async def count_stream(request: Request) -> Response:
    total = 0
    async for chunk in request.stream(100):
        total += len(chunk)
    return json_response({"bytes": total})


async def token(request: Request) -> Response:
    return json_response({"token": request.access_token()})


def make_app() -> ClientApiApp:
    router = Router()
    base = "/_matrix/client/v3"
    router.add("GET", f"{base}/rooms/{{room_id}}/state/{{event_type}}", echo_params)
    router.add("GET", f"{base}/rooms/{{room_id}}/state/{{event_type}}/{{state_key}}", echo_params)
    router.add("GET", f"{base}/rooms/{{room_id}}/members", echo_params)
    router.add("PUT", f"{base}/rooms/{{room_id}}/members", echo_body)
    router.add("POST", f"{base}/join/{{room_id}}", echo_body)
    router.add("POST", f"{base}/strict", strict_body)
    router.add("POST", f"{base}/small", strict_body, body_limit=64)
    router.add("GET", f"{base}/refuse", refuse)
    router.add("GET", f"{base}/crash", crash)
    router.add("POST", f"{base}/upload", count_stream, stream=True)
    router.add("GET", f"{base}/token", token)
    return ClientApiApp(router)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), client=("10.0.0.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


BASE = "/_matrix/client/v3"


def test_split_raw_path_keeps_encoded_slashes_inside_a_segment() -> None:
    assert split_raw_path(b"/a/%21r%3Ax/b%2Fc/") == ["a", "!r:x", "b/c", ""]
    with pytest.raises(UnicodeError):
        split_raw_path(b"/a/%ff")


async def test_state_key_routing_on_the_raw_path(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{BASE}/rooms/%21r%3Ax/state/m.room.name")
    assert r.json() == {"params": {"room_id": "!r:x", "event_type": "m.room.name"}}
    r = await client.get(f"{BASE}/rooms/%21r%3Ax/state/m.room.name/")
    assert r.json()["params"]["state_key"] == ""
    r = await client.get(f"{BASE}/rooms/%21r%3Ax/state/m.custom/a%2Fb")
    assert r.json()["params"]["state_key"] == "a/b"
    r = await client.get(f"{BASE}/rooms/!r:x/members")
    assert r.json() == {"params": {"room_id": "!r:x"}}


async def test_unknown_endpoint_is_404_unrecognized(client: httpx.AsyncClient) -> None:
    for path in (f"{BASE}/nope", "/_matrix/other", f"{BASE}/rooms/x/state/a/b/c", "/"):
        r = await client.get(path)
        assert r.status_code == 404
        assert r.json()["errcode"] == "M_UNRECOGNIZED"
        assert r.headers["content-type"] == "application/json"


async def test_wrong_method_is_405_unrecognized(client: httpx.AsyncClient) -> None:
    r = await client.delete(f"{BASE}/rooms/x/members")
    assert r.status_code == 405
    assert r.json()["errcode"] == "M_UNRECOGNIZED"


async def test_options_and_cors_everywhere(client: httpx.AsyncClient) -> None:
    for path in (f"{BASE}/rooms/x/members", f"{BASE}/nope", "/_matrix/media/v3/upload"):
        r = await client.options(path)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "*"
        assert "Authorization" in r.headers["access-control-allow-headers"]
        assert "OPTIONS" in r.headers["access-control-allow-methods"]
    for r in (
        await client.get(f"{BASE}/rooms/x/members"),
        await client.get(f"{BASE}/nope"),
        await client.get(f"{BASE}/crash"),
    ):
        assert r.headers["access-control-allow-origin"] == "*"


async def test_bodiless_post_is_an_empty_object(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{BASE}/join/%21r%3Ax", headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json() == {"keys": []}


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b"", "M_NOT_JSON"),
        (b"{", "M_NOT_JSON"),
        (b"\xff\xfe", "M_NOT_JSON"),
        (b'{"a": NaN}', "M_NOT_JSON"),
        (b'{"a": 1e999}', "M_NOT_JSON"),
        (b"[1, 2]", "M_BAD_JSON"),
        (b'"str"', "M_BAD_JSON"),
        (b'{"a": "\\ud800"}', "M_BAD_JSON"),
        (b'{"\\udc00": 1}', "M_BAD_JSON"),
        (b'{"a":' + b"[" * 70 + b"]" * 70 + b"}", "M_BAD_JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "M_NOT_JSON"),
    ],
)
async def test_bad_json_bodies(client: httpx.AsyncClient, body: bytes, errcode: str) -> None:
    r = await client.post(f"{BASE}/strict", content=body)
    assert r.status_code == 400
    assert r.json()["errcode"] == errcode
    assert r.json()["error"]


async def test_depth_limit_admits_ordinary_nesting(client: httpx.AsyncClient) -> None:
    body = {"a": {"b": {"c": [[{"d": [1, 2, {"e": "f"}]}]]}}}
    r = await client.post(f"{BASE}/strict", json=body)
    assert r.status_code == 200 and r.json() == {"keys": ["a"]}


async def test_body_limit_from_content_length(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{BASE}/small", content=b'{"a": "' + b"x" * 100 + b'"}')
    assert r.status_code == 413
    assert r.json()["errcode"] == "M_TOO_LARGE"


async def test_body_limit_while_streaming(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": "'
        for _ in range(20):
            yield b"x" * 10
        yield b'"}'

    # No Content-Length: the chunks are counted as they arrive.
    r = await client.post(f"{BASE}/small", content=chunks())
    assert r.status_code == 413
    assert r.json()["errcode"] == "M_TOO_LARGE"


async def test_default_limit_is_one_mebibyte(client: httpx.AsyncClient) -> None:
    big = json.dumps({"a": "x" * (1024 * 1024)}).encode()
    r = await client.post(f"{BASE}/strict", content=big)
    assert r.status_code == 413
    ok = json.dumps({"a": "x" * (1024 * 1024 - 100)}).encode()
    assert (await client.post(f"{BASE}/strict", content=ok)).status_code == 200


async def test_streamed_route_limit(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{BASE}/upload", content=b"y" * 100)
    assert r.json() == {"bytes": 100}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"z" * 30

    r = await client.post(f"{BASE}/upload", content=chunks())
    assert r.status_code == 413
    r = await client.post(f"{BASE}/upload", content=b"y" * 101)
    assert r.status_code == 413


async def test_api_error_and_crash_never_echo(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{BASE}/refuse?password=hunter2")
    assert r.status_code == 403
    assert r.json() == {"errcode": "M_FORBIDDEN", "error": "Not allowed"}
    r = await client.get(f"{BASE}/crash")
    assert r.status_code == 500
    assert r.json()["errcode"] == "M_UNKNOWN"
    assert "secret" not in r.text


async def test_error_bodies_never_echo_the_request(client: httpx.AsyncClient) -> None:
    marker = "ECHO-MARKER"
    responses = [
        await client.post(f"{BASE}/strict", content=f'{{"{marker}": '.encode()),
        await client.get(f"{BASE}/{marker}"),
        await client.get(f"{BASE}/rooms/{marker}/state/a/b/c"),
        await client.post(f"{BASE}/small", content=("x" * 100 + marker).encode()),
    ]
    for r in responses:
        assert r.status_code in (400, 404, 413)
        assert marker not in r.text
        assert r.status_code != 422
        assert "<html" not in r.text.lower()


async def test_access_token_sources(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{BASE}/token", headers={"authorization": "Bearer abc"})
    assert r.json() == {"token": "abc"}
    r = await client.get(f"{BASE}/token?access_token=def")
    assert r.json() == {"token": "def"}
    r = await client.get(f"{BASE}/token", headers={"authorization": "Basic xyz"})
    assert r.json() == {"token": None}
    r = await client.get(f"{BASE}/token")
    assert r.json() == {"token": None}


async def test_head_is_get_without_a_body(client: httpx.AsyncClient) -> None:
    r = await client.head(f"{BASE}/rooms/x/members")
    assert r.status_code == 200 and r.content == b""


async def test_invalid_percent_encoding(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{BASE}/rooms/%ff/members")
    assert r.status_code == 404
    assert r.json()["errcode"] == "M_UNRECOGNIZED"


def test_routes_must_agree_on_parameter_names() -> None:
    router = Router()
    router.add("GET", "/a/{x}/b", echo_params)
    with pytest.raises(ValueError):
        router.add("GET", "/a/{y}/c", echo_params)
    with pytest.raises(ValueError):
        router.add("GET", "/a/{x}/b", echo_params)

"""A small ASGI layer for the Client-Server API: routing on the raw path, bodies, errors, CORS.

Why not the framework's router: Matrix path segments are percent-encoded ids (``%21room%3Ahost``)
and a state key may itself contain ``/`` sent as ``%2F``, so routing must split the *raw* path
and decode each segment afterwards (Client-Server API §"PUT /rooms/{roomId}/state/..."); and
every failure must be a Matrix error, never a 422 from a validation library or an HTML page.

Rules enforced here for every route:

- unknown path: 404 ``M_UNRECOGNIZED``; known path, wrong method: 405 ``M_UNRECOGNIZED``;
- ``OPTIONS`` on any path answers 204 with the CORS headers, and every response carries them
  (Client-Server API §"Web Browser Clients");
- bodies: ``Content-Length`` above the route's limit is refused before reading, and the
  stream is cut off once it passes the limit (413 ``M_TOO_LARGE``);
- an ``ApiError`` becomes its JSON body and status; anything else is logged (route template
  and exception type, never the request) and answered 500 ``M_UNKNOWN``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote

from cis.api.client.jsonbody import MAX_BODY_BYTES, JsonObject, parse_json_object
from cis.handlers.errors import ApiError, Errcode
from cis.log import get_logger

log = get_logger(__name__)

Scope = Mapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CORS_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"X-Requested-With, Content-Type, Authorization, Date"),
)
_JSON_TYPE: Final = b"application/json"


class ClientDisconnected(Exception):
    """The client went away while its body was being read."""


class Request:
    """One parsed request. ``params`` are the decoded path parameters of the route."""

    __slots__ = ("_receive", "body", "client_host", "headers", "method", "params", "query")

    def __init__(
        self,
        method: str,
        params: Mapping[str, str],
        *,
        query: Mapping[str, Sequence[str]],
        headers: Mapping[str, str],
        client_host: str,
        body: bytes,
        receive: Receive | None = None,
    ) -> None:
        self.method = method
        self.params = params
        self.query = query
        self.headers = headers
        self.client_host = client_host
        self.body = body
        self._receive = receive

    def json(self, *, allow_empty: bool = False) -> JsonObject:
        return parse_json_object(self.body, allow_empty=allow_empty)

    def access_token(self) -> str | None:
        """The token from ``Authorization: Bearer`` or, failing that, ``?access_token=``."""
        auth = self.headers.get("authorization")
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
            return None
        values = self.query.get("access_token")
        return values[0] if values else None

    async def stream(self, limit: int) -> AsyncIterator[bytes]:
        """The body in chunks (routes declared with ``stream=True``), cut off past ``limit``."""
        if self._receive is None:
            if len(self.body) > limit:
                raise _too_large()
            if self.body:
                yield self.body
            return
        declared = self.headers.get("content-length")
        if declared is not None and _declared_length(declared) > limit:
            raise _too_large()
        receive, self._receive = self._receive, None
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise _too_large()
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


class Response:
    """A status, headers and a body (bytes, or an async iterator of chunks)."""

    __slots__ = ("body", "chunks", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: Sequence[tuple[bytes, bytes]] = (),
        chunks: AsyncIterator[bytes] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.chunks = chunks


def json_bytes(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(value: object, status: int = 200) -> Response:
    return Response(status, json_bytes(value), ((b"content-type", _JSON_TYPE),))


def error_response(error: ApiError) -> Response:
    return json_response(error.to_json(), error.status)


def _too_large() -> ApiError:
    return ApiError(Errcode.TOO_LARGE, "Request body too large")


def _declared_length(value: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise ApiError(Errcode.BAD_JSON, "Invalid Content-Length")
    return int(text)


Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    """``template`` names parameters as ``{name}``; each matches one raw path segment."""

    method: str
    template: str
    endpoint: Endpoint
    param_names: tuple[str, ...]
    body_limit: int = MAX_BODY_BYTES
    stream: bool = False


class _Node:
    __slots__ = ("literals", "param", "param_name", "routes")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.param_name: str | None = None
        self.routes: dict[str, Route] = {}


class Router:
    """Routes keyed by method and path template, matched segment by segment on the raw path."""

    def __init__(self) -> None:
        self._root = _Node()

    def add(
        self,
        method: str,
        template: str,
        endpoint: Endpoint,
        *,
        body_limit: int = MAX_BODY_BYTES,
        stream: bool = False,
    ) -> None:
        node = self._root
        names: list[str] = []
        for segment in template.split("/")[1:]:
            if segment.startswith("{") and segment.endswith("}"):
                name = segment[1:-1]
                if node.param is None:
                    node.param = _Node()
                    node.param_name = name
                elif node.param_name != name:
                    raise ValueError(f"{template}: parameter {name} clashes with another route")
                names.append(name)
                node = node.param
            else:
                node = node.literals.setdefault(segment, _Node())
        if method in node.routes:
            raise ValueError(f"{method} {template} is already routed")
        node.routes[method] = Route(
            method, template, endpoint, tuple(names), body_limit=body_limit, stream=stream
        )

    def match(self, segments: Sequence[str]) -> tuple[Mapping[str, Route], list[str]] | None:
        """The routes (by method) of the path and its parameter values, or ``None``."""
        values: list[str] = []
        node = _walk(self._root, segments, 0, values)
        if node is None:
            return None
        return node.routes, values


def _walk(node: _Node, segments: Sequence[str], index: int, values: list[str]) -> _Node | None:
    if index == len(segments):
        return node if node.routes else None
    segment = segments[index]
    child = node.literals.get(segment)
    if child is not None:
        found = _walk(child, segments, index + 1, values)
        if found is not None:
            return found
    if node.param is not None:
        values.append(segment)
        found = _walk(node.param, segments, index + 1, values)
        if found is not None:
            return found
        values.pop()
    return None


def split_raw_path(raw_path: bytes) -> list[str]:
    """Split on ``/`` first, then percent-decode each segment (so ``%2F`` stays inside one)."""
    text = raw_path.decode("ascii", "strict")
    parts = text.split("/")[1:] if text.startswith("/") else text.split("/")
    return [unquote(part, encoding="utf-8", errors="strict") for part in parts]


async def _read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and _declared_length(declared) > limit:
        raise _too_large()
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise _too_large()
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ClientApiApp:
    """The ASGI application for ``/_matrix`` and ``/.well-known/matrix`` (HTTP scopes only)."""

    def __init__(self, router: Router) -> None:
        self._router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            response = await self._handle(scope, receive)
        except ClientDisconnected:
            return
        await _send_response(send, response, scope["method"] == "HEAD")

    async def _handle(self, scope: Scope, receive: Receive) -> Response:
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        raw_path = raw_path.split(b"?", 1)[0]
        route: Route | None = None
        try:
            try:
                segments = split_raw_path(raw_path)
            except UnicodeError:
                raise ApiError(Errcode.UNRECOGNIZED, "Unrecognized request") from None
            if method == "OPTIONS":
                return Response(204)
            found = self._router.match(segments)
            if found is None:
                raise ApiError(Errcode.UNRECOGNIZED, "Unrecognized request")
            routes, values = found
            route = routes.get("GET" if method == "HEAD" else method)
            if route is None:
                raise ApiError(Errcode.UNRECOGNIZED, "Unrecognized request method", status=405)
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in scope.get("headers", ())
            }
            try:
                query = parse_qs(
                    scope.get("query_string", b"").decode("ascii"),
                    keep_blank_values=True,
                    strict_parsing=False,
                    encoding="utf-8",
                    errors="strict",
                )
            except UnicodeError:
                raise ApiError(Errcode.INVALID_PARAM, "Query string is not valid") from None
            client = scope.get("client")
            host = str(client[0]) if client else ""
            if route.stream:
                body, stream_from = b"", receive
            else:
                body, stream_from = await _read_body(receive, headers, route.body_limit), None
            request = Request(
                method,
                dict(zip(route.param_names, values, strict=True)),
                query=query,
                headers=headers,
                client_host=host,
                body=body,
                receive=stream_from,
            )
            return await route.endpoint(request)
        except ApiError as exc:
            return error_response(exc)
        except ClientDisconnected:
            raise
        except Exception:
            log.exception("request_failed", method=method, route=route.template if route else "?")
            return error_response(ApiError(Errcode.UNKNOWN, "Internal server error", status=500))


async def _send_response(send: Send, response: Response, head_only: bool) -> None:
    headers = [*response.headers, *CORS_HEADERS]
    if response.chunks is None:
        headers.append((b"content-length", str(len(response.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if response.chunks is None or head_only:
        await send({"type": "http.response.body", "body": b"" if head_only else response.body})
        return
    async for chunk in response.chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


class ClientApiDispatch:
    """One ASGI app for the port: Client-Server paths to ``client``, the rest to ``other``.

    ``/_matrix/…`` and ``/.well-known/matrix/…`` never pass through the other app's middleware
    (its validation errors would not be Matrix errors, and it costs time on every send).
    """

    def __init__(self, client: ClientApiApp, other: Any) -> None:
        self._client = client
        self._other = other

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (
            path.startswith("/_matrix/") or path.startswith("/.well-known/matrix/")
        ):
            await self._client(scope, receive, send)
        else:
            await self._other(scope, receive, send)

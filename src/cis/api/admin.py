"""``/_cis/admin/v1``: node administration for local tools.

``GET status`` is public; every other route needs ``Authorization: Bearer <admin token>``
(the contents of ``$HOME/admin.token``), compared in constant time. The token is accepted only
in the header, never in a query string, so it cannot reach an access log.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cis.api.client.jsonbody import parse_json_object
from cis.api.errors import ApiError, Errcode, query_int
from cis.handlers.accounts import UserAdmin
from cis.handlers.admin import MAX_WAIT_S, AdminHandler
from cis.handlers.status import StatusHandler

PREFIX = "/_cis/admin/v1"

Endpoint = Callable[[Request], Awaitable[Response]]


class AdminAuth:
    """Checks the admin token of a request."""

    def __init__(self, token: str) -> None:
        if len(token) < 32:
            raise ValueError("an admin token has at least 32 characters")
        self._token = token.encode("utf-8")

    def __call__(self, request: Request) -> None:
        header = request.headers.get("authorization")
        if header is None:
            raise ApiError(Errcode.MISSING_TOKEN, "Missing admin token")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("utf-8", "surrogateescape"), self._token
        ):
            raise ApiError(Errcode.UNKNOWN_TOKEN, "Unknown admin token")

    def guard(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` behind the admin token."""

        async def guarded(request: Request) -> Response:
            self(request)
            return await endpoint(request)

        return guarded


def admin_routes(
    status: StatusHandler,
    admin: AdminHandler,
    auth: AdminAuth,
    users: UserAdmin | None = None,
) -> list[BaseRoute]:
    routes: list[BaseRoute] = []

    if users is not None:

        async def create_user(request: Request) -> Response:
            """Create a local user (``cis-node user add`` while the node runs)."""
            body = parse_json_object(await request.body())
            return JSONResponse(await users.create(body))

        async def get_user(request: Request) -> Response:
            """A local user, with the node's DID (the identity its events are signed with)."""
            return JSONResponse(await users.get(request.path_params["user_id"]))

        routes.append(Route(f"{PREFIX}/users", auth.guard(create_user), methods=["POST"]))
        routes.append(Route(f"{PREFIX}/users/{{user_id}}", auth.guard(get_user), methods=["GET"]))

    async def get_status(_request: Request) -> Response:
        return JSONResponse(dict(await status.status()))

    async def get_rooms(_request: Request) -> Response:
        return JSONResponse({"rooms": await admin.list_rooms()})

    async def wait_stream(request: Request) -> Response:
        """Long-poll: the stream position once it passes ``from`` (or after ``timeout`` ms)."""
        after = query_int(request.query_params, "from", 0, low=0)
        timeout_ms = query_int(
            request.query_params, "timeout", 0, low=0, high=int(MAX_WAIT_S * 1000)
        )
        return JSONResponse({"position": await admin.wait_stream(after, timeout_ms / 1000)})

    routes.append(Route(f"{PREFIX}/status", get_status, methods=["GET"]))
    routes.append(Route(f"{PREFIX}/rooms", auth.guard(get_rooms), methods=["GET"]))
    routes.append(Route(f"{PREFIX}/stream", auth.guard(wait_stream), methods=["GET"]))
    return routes

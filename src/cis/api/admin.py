"""``/_cis/admin/v1``: node administration for local tools.

``GET status`` is public; every other route needs ``Authorization: Bearer <admin token>``
(the contents of ``$HOME/admin.token``), compared in constant time. The token is accepted only
in the header, never in a query string, so it cannot reach an access log.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from cis.api.client.jsonbody import parse_json_object
from cis.api.errors import ApiError, Errcode
from cis.handlers.accounts import UserAdmin
from cis.handlers.admin import MAX_WAIT_S, AdminHandler
from cis.handlers.status import StatusHandler

PREFIX = "/_cis/admin/v1"


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


def admin_router(
    status: StatusHandler,
    admin: AdminHandler,
    auth: AdminAuth,
    users: UserAdmin | None = None,
) -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    authorised = [Depends(auth)]

    if users is not None:

        @router.post("/users", dependencies=authorised)
        async def create_user(request: Request) -> dict[str, Any]:
            """Create a local user (``cis-node user add`` while the node runs)."""
            body = parse_json_object(await request.body())
            return await users.create(body)

        @router.get("/users/{user_id}", dependencies=authorised)
        async def get_user(user_id: str) -> dict[str, Any]:
            """A local user, with the node's DID (the identity its events are signed with)."""
            return await users.get(user_id)

    @router.get("/status")
    async def get_status() -> dict[str, Any]:
        return dict(await status.status())

    @router.get("/rooms", dependencies=authorised)
    async def get_rooms() -> dict[str, Any]:
        return {"rooms": await admin.list_rooms()}

    @router.get("/stream", dependencies=authorised)
    async def wait_stream(
        after: Annotated[int, Query(alias="from", ge=0)] = 0,
        timeout_ms: Annotated[int, Query(alias="timeout", ge=0, le=int(MAX_WAIT_S * 1000))] = 0,
    ) -> dict[str, Any]:
        """Long-poll: the stream position once it passes ``from`` (or after ``timeout`` ms)."""
        return {"position": await admin.wait_stream(after, timeout_ms / 1000)}

    return router

"""What every route module shares: authentication and small request helpers."""

from __future__ import annotations

from typing import Any

from cis.api.client.http import Request
from cis.handlers.auth import Authenticator, Requester
from cis.handlers.errors import ApiError, Errcode
from cis.ids import ServerName, UserId

CLIENT_V3 = "/_matrix/client/v3"
CLIENT_V1 = "/_matrix/client/v1"
MEDIA_V3 = "/_matrix/media/v3"


class RouteContext:
    """Authentication and the node's names, passed to each ``register_*`` function."""

    def __init__(self, auth: Authenticator, server_name: ServerName) -> None:
        self.auth = auth
        self.server_name = server_name

    async def requester(self, request: Request) -> Requester:
        return await self.auth.authenticate(request.access_token())

    def own_user(self, request: Request, requester: Requester, key: str = "user_id") -> UserId:
        """The path's user id, which must be the requester's (403 otherwise)."""
        if request.params[key] != requester.user_id:
            raise ApiError(Errcode.FORBIDDEN, "Cannot access another user's data")
        return requester.user_id


def body_str(
    body: dict[str, Any], key: str, *, required: bool = True, max_len: int = 65_536
) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ApiError(Errcode.MISSING_PARAM, f"Missing {key}")
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise ApiError(Errcode.INVALID_PARAM, f"Invalid {key}")
    return value

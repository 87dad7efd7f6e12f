"""Profiles (Client-Server API §"Profiles"): display name and avatar.

A change is stored, then sent as a new ``m.room.member`` join to each room the user is in
(§"Events on Change of Profile Information"); changes are rate-limited per user.
"""

from __future__ import annotations

from typing import Any, Final

from cis.handlers.auth import Requester
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.ratelimit import RateLimiter
from cis.handlers.rooms import RoomHandler
from cis.ids import UserId
from cis.storage.client.accounts import AccountStore

MAX_PROFILE_FIELD: Final = 1024


class ProfileHandler:
    def __init__(self, accounts: AccountStore, rooms: RoomHandler, limiter: RateLimiter) -> None:
        self._accounts = accounts
        self._rooms = rooms
        self._limiter = limiter

    async def get(self, user_id: str) -> dict[str, Any]:
        user = await self._accounts.get_user(user_id)
        if user is None:
            raise ApiError(Errcode.NOT_FOUND, "Profile not found")
        out: dict[str, Any] = {}
        if user.displayname is not None:
            out["displayname"] = user.displayname
        if user.avatar_url is not None:
            out["avatar_url"] = user.avatar_url
        return out

    async def get_field(self, user_id: str, field: str) -> dict[str, Any]:
        profile = await self.get(user_id)
        return {field: profile.get(field)}

    async def set_field(
        self, requester: Requester, user_id: str, field: str, body: dict[str, Any]
    ) -> None:
        if user_id != requester.user_id:
            raise ApiError(Errcode.FORBIDDEN, "Cannot change another user's profile")
        value = body.get(field)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_PROFILE_FIELD):
            raise ApiError(Errcode.INVALID_PARAM, f"Invalid {field}")
        if field == "avatar_url" and value and not value.startswith("mxc://"):
            raise ApiError(Errcode.INVALID_PARAM, "avatar_url must be an mxc:// URI")
        self._limiter.acquire(requester.user_id)
        await self._accounts.set_profile_field(requester.user_id, field, value or None)
        await self._rooms.update_profile(UserId(requester.user_id), field, value or None)

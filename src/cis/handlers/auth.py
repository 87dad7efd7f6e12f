"""Who is calling: access token → ``Requester`` (Client-Server API §"Using access tokens").

The token arrives in ``Authorization: Bearer`` or ``?access_token=``; it is hashed (SHA-256)
and looked up. Answers are cached (bounded, least recently used first out) so a request costs
a dictionary lookup, not a database read; logout and device deletion evict the hashes they
revoke before they answer, so a revoked token never works again.

A missing token is 401 ``M_MISSING_TOKEN``; an unknown or revoked one is 401
``M_UNKNOWN_TOKEN`` (with ``soft_logout: false``, so clients drop the session).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cis.handlers.access_tokens import token_hash
from cis.handlers.errors import ApiError, Errcode
from cis.ids import DeviceId, UserId
from cis.storage.client.accounts import AccountStore

DEFAULT_CACHE_SIZE: Final = 10_000


@dataclass(frozen=True, slots=True)
class Requester:
    """The authenticated user and device of a request."""

    user_id: UserId
    device_id: DeviceId
    token_hash: bytes
    is_guest: bool = False


def missing_token() -> ApiError:
    return ApiError(Errcode.MISSING_TOKEN, "Missing access token")


def unknown_token() -> ApiError:
    return ApiError(Errcode.UNKNOWN_TOKEN, "Unknown access token", extra={"soft_logout": False})


class Authenticator:
    """Resolves access tokens with a bounded cache."""

    def __init__(self, accounts: AccountStore, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._accounts = accounts
        self._cache: OrderedDict[bytes, Requester] = OrderedDict()
        self._cache_size = cache_size

    async def authenticate(self, token: str | None) -> Requester:
        if token is None or token == "":
            raise missing_token()
        digest = token_hash(token)
        cached = self._cache.get(digest)
        if cached is not None:
            self._cache.move_to_end(digest)
            return cached
        owner = await self._accounts.token_owner(digest)
        if owner is None:
            raise unknown_token()
        requester = Requester(owner.user_id, owner.device_id, digest)
        self._cache[digest] = requester
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return requester

    def forget(self, hashes: Iterable[bytes]) -> None:
        """Evict revoked tokens (call before answering the request that revoked them)."""
        for digest in hashes:
            self._cache.pop(digest, None)

    def forget_user(self, user_id: UserId) -> None:
        for digest in [d for d, r in self._cache.items() if r.user_id == user_id]:
            del self._cache[digest]

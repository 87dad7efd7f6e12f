"""Password hashing: stdlib ``hashlib.scrypt`` off the event loop, in constant time.

A stored hash reads ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<key b64>``, so the cost can be
raised later and old hashes still verify. Hashing runs in a small thread pool (scrypt releases
the GIL), so a login never stalls the event loop; the number of hashes waiting for a thread is
bounded, and past that the caller is told to retry (429) instead of queueing without end.

``verify`` of an unknown user runs the same scrypt against a dummy hash made at start-up, so
the time a login takes does not tell whether the account exists; comparisons use
``hmac.compare_digest``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, TypeVar

from cis.handlers.errors import RateLimited

_T = TypeVar("_T")
_PREFIX: Final = "scrypt"
MAX_PASSWORD_BYTES: Final = 512


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost: ``n = 2**log_n``, memory about ``128 * r * n`` bytes per hash."""

    log_n: int = 14
    r: int = 8
    p: int = 1
    salt_bytes: int = 16
    key_bytes: int = 32

    @property
    def maxmem(self) -> int:
        return 128 * self.r * (1 << self.log_n) * 2 + 1024 * 1024


DEFAULT_PARAMS: Final = ScryptParams()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password_sync(password: str, params: ScryptParams = DEFAULT_PARAMS) -> str:
    """Hash ``password`` with a fresh salt (blocking; use ``PasswordHasher.hash``)."""
    salt = secrets.token_bytes(params.salt_bytes)
    key = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=1 << params.log_n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=params.key_bytes,
    )
    return f"{_PREFIX}${params.log_n}${params.r}${params.p}${_b64(salt)}${_b64(key)}"


def verify_password_sync(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored`` (blocking). A malformed hash never matches."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        return False
    try:
        log_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return False
    if not (1 <= log_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16 and expected):
        return False
    params = ScryptParams(log_n=log_n, r=r, p=p)
    key = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=1 << log_n,
        r=r,
        p=p,
        maxmem=params.maxmem,
        dklen=len(expected),
    )
    return hmac.compare_digest(key, expected)


class PasswordHasher:
    """Hashes and verifies passwords in a thread pool with a bounded backlog."""

    def __init__(
        self,
        params: ScryptParams = DEFAULT_PARAMS,
        *,
        threads: int = 2,
        max_pending: int = 64,
    ) -> None:
        self._params = params
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cis-scrypt")
        self._max_pending = max_pending
        self._pending = 0
        # Verified against when the user does not exist, so both paths cost one scrypt.
        self._dummy = hash_password_sync(secrets.token_urlsafe(16), params)

    async def _run(self, fn: Callable[[], _T]) -> _T:
        if self._pending >= self._max_pending:
            raise RateLimited(1000)
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        finally:
            self._pending -= 1

    async def hash(self, password: str) -> str:
        return await self._run(functools.partial(hash_password_sync, password, self._params))

    async def verify(self, password: str, stored: str | None) -> bool:
        """True only if ``stored`` is a hash of ``password``; ``None`` costs the same and fails."""
        target = self._dummy if stored is None else stored
        matched = await self._run(functools.partial(verify_password_sync, password, target))
        return matched and stored is not None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

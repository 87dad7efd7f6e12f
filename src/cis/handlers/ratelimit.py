"""Token-bucket rate limiters, keyed by user, IP or account, driven by an injected ``Clock``.

A bucket holds up to ``burst`` tokens and refills at ``per_second``; an action costs one token.
``acquire`` takes a token or raises ``RateLimited`` with the time until one is back. For
failed logins the check and the charge are separate: ``check`` before verifying a password
(refusing once the bucket is empty) and ``charge`` only when the password was wrong, so
successful logins never count.

Memory is bounded: a bucket that has refilled completely is the same as no bucket, so those are
dropped when the table grows past ``max_keys``; if it is still too big the least recently used
buckets go (they restart full, which only errs towards allowing).

Defaults (``RateLimits``): messages 100/s per user with a burst of 1,000 (loose enough for
benchmarks); failed logins 5 per minute per account and per IP; registrations 1 per 5 s per IP
with a burst of 20; profile changes 1/s per user with a burst of 10.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from cis.clock import Clock
from cis.handlers.errors import RateLimited

DEFAULT_MAX_KEYS: Final = 100_000


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``per_second`` refill rate and ``burst`` capacity of one bucket."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs per_second > 0 and burst >= 1")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The node's limiters; each can be overridden from configuration."""

    messages_per_user: RateLimit = field(default_factory=lambda: RateLimit(100.0, 1000))
    failed_logins_per_account: RateLimit = field(default_factory=lambda: RateLimit(5 / 60, 5))
    failed_logins_per_ip: RateLimit = field(default_factory=lambda: RateLimit(5 / 60, 5))
    registrations_per_ip: RateLimit = field(default_factory=lambda: RateLimit(0.2, 20))
    profile_changes_per_user: RateLimit = field(default_factory=lambda: RateLimit(1.0, 10))

    @classmethod
    def unlimited(cls) -> RateLimits:
        """Effectively no limits (for tests and benchmarks that must not be throttled)."""
        big = RateLimit(1e9, 10**9)
        return cls(big, big, big, big, big)


class RateLimiter:
    """One family of buckets sharing a ``RateLimit``."""

    def __init__(self, clock: Clock, limit: RateLimit, *, max_keys: int = DEFAULT_MAX_KEYS):
        self._clock = clock
        self._limit = limit
        self._max_keys = max_keys
        # key -> (tokens, monotonic time of that reading); most recently used last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def limit(self) -> RateLimit:
        return self._limit

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(self._limit.burst)
        tokens, then = entry
        return min(float(self._limit.burst), tokens + (now - then) * self._limit.per_second)

    def _retry_after_ms(self, tokens: float, cost: float) -> int:
        missing = cost - tokens
        return int(missing / self._limit.per_second * 1000) + 1

    def check(self, key: str, cost: float = 1.0) -> None:
        """Raise ``RateLimited`` if ``cost`` tokens are not available; take nothing."""
        tokens = self._tokens(key, self._clock.monotonic())
        if tokens < cost:
            raise RateLimited(self._retry_after_ms(tokens, cost))

    def charge(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens whatever is left (the bucket may go negative: a penalty)."""
        now = self._clock.monotonic()
        self._store(key, self._tokens(key, now) - cost, now)

    def acquire(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens, or raise ``RateLimited`` and take nothing."""
        now = self._clock.monotonic()
        tokens = self._tokens(key, now)
        if tokens < cost:
            raise RateLimited(self._retry_after_ms(tokens, cost))
        self._store(key, tokens - cost, now)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self._max_keys:
            self._prune(now)

    def _prune(self, now: float) -> None:
        full = float(self._limit.burst)
        for key in [k for k in self._buckets if self._tokens(k, now) >= full]:
            del self._buckets[key]
        # Down to nine tenths, so the scan above runs once per many inserts, not on each.
        while len(self._buckets) > self._max_keys * 9 // 10:
            self._buckets.popitem(last=False)

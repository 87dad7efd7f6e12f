"""Per-IP rate limiting for the anchor: a token bucket per address, on an injected clock.

Each address may make ``burst`` requests at once and ``rate`` per second after that. A node
sends two requests every 30 s (heartbeat and poll), so the defaults (burst 30, 1/s) let several
hundred nodes share one NAT address. At most ``max_addresses`` buckets are kept; the least
recently used one is forgotten first (a forgotten address starts again with a full bucket,
which is the generous direction to err in).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cis.clock import Clock


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self, clock: Clock, rate: float = 1.0, burst: float = 30.0, max_addresses: int = 10_000
    ) -> None:
        if rate <= 0 or burst < 1 or max_addresses < 1:
            raise ValueError("need rate > 0, burst >= 1, max_addresses >= 1")
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._max = max_addresses
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, address: str) -> float:
        """Take a token for ``address``: 0.0 when allowed, else seconds until one is free."""
        now = self._clock.monotonic()
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        self._buckets[address] = bucket
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

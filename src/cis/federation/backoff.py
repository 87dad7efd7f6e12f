"""Reconnect delays: jittered exponential backoff, capped, reset on success.

Attempt ``n`` (from 0) waits ``min(cap, base * 2**n)`` scaled by a random factor in
``[1 - jitter, 1]``, so peers that lost each other at the same moment do not redial in step
(the "equal jitter" of the AWS architecture blog's backoff study, with a tunable share).
The random source is injected so tests can pin it.
"""

from __future__ import annotations

import random
from typing import Final

DEFAULT_BASE: Final = 0.5
DEFAULT_CAP: Final = 60.0
DEFAULT_JITTER: Final = 0.5


class Backoff:
    def __init__(
        self,
        base: float = DEFAULT_BASE,
        cap: float = DEFAULT_CAP,
        jitter: float = DEFAULT_JITTER,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap < base or not 0 <= jitter <= 1:
            raise ValueError("need 0 < base <= cap and 0 <= jitter <= 1")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng if rng is not None else random.Random()

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one failed attempt."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempts, 64)))
        self.attempts += 1
        return float(ceiling * (1 - self.jitter * self._rng.random()))

    def reset(self) -> None:
        self.attempts = 0

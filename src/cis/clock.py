"""Time as an input.

Everything timed (heartbeats, TTLs, backoff, health, rate limits) takes a ``Clock`` instead of
calling ``time`` directly, so tests advance a ``FakeClock`` rather than sleep.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock and monotonic time."""

    def time(self) -> float:
        """Seconds since the Unix epoch (wall clock; may jump)."""
        ...

    def time_ms(self) -> int:
        """Milliseconds since the Unix epoch, as Matrix's ``origin_server_ts``."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences are meaningful."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def time_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; both readings advance together."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0

    def time(self) -> float:
        return self._wall

    def time_ms(self) -> int:
        return int(self._wall * 1000)

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot be moved backwards")
        self._wall += seconds
        self._mono += seconds

    def set_wall(self, wall: float) -> None:
        """Jump the wall clock (as NTP may); the monotonic clock is unaffected."""
        self._wall = wall

"""The watchdog's rules, as plain data driven by an injected ``Clock`` (no threads, no sleeps).

- ``Watchdog`` keeps one ``Ticket`` per call into a skill that is in flight, with its
  deadline. ``expire(now)`` returns (and marks) the tickets past their deadline; the host's
  ticker calls it a few times a second and disables the skills it names. A call that ends in
  time is ``end``-ed and forgotten.
- ``TokenBucket`` bounds how fast a skill may ask the node for work that produces events
  (sends, state changes, room creations): ``rate`` per second with bursts of ``burst``. A skill
  that empties its bucket is flooding and is disabled.

Invariants: a ticket is expired at most once; ``expire`` returns tickets in deadline order; a
bucket never holds more than ``burst`` tokens nor goes below zero.
"""

from __future__ import annotations

import concurrent.futures
import itertools
from dataclasses import dataclass, field
from typing import Any

from cis.clock import Clock

__all__ = ["Ticket", "TokenBucket", "Watchdog"]


@dataclass(eq=False, slots=True)
class Ticket:
    skill: str
    what: str
    """``init``, ``event io.cis.git.push``, ``command set`` …"""
    started: float
    deadline: float
    future: concurrent.futures.Future[Any] | None = None
    expired: bool = False
    number: int = 0


@dataclass(slots=True)
class Watchdog:
    clock: Clock
    _tickets: dict[int, Ticket] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    def begin(
        self,
        skill: str,
        what: str,
        timeout_s: float,
        future: concurrent.futures.Future[Any] | None = None,
    ) -> Ticket:
        now = self.clock.monotonic()
        ticket = Ticket(skill, what, now, now + timeout_s, future, number=next(self._numbers))
        self._tickets[ticket.number] = ticket
        return ticket

    def end(self, ticket: Ticket) -> None:
        self._tickets.pop(ticket.number, None)

    def in_flight(self, skill: str | None = None) -> list[Ticket]:
        return [t for t in self._tickets.values() if skill is None or t.skill == skill]

    def expire(self, now: float | None = None) -> list[Ticket]:
        """Mark and return the tickets whose deadline has passed (earliest first)."""
        now = self.clock.monotonic() if now is None else now
        late = sorted(
            (t for t in self._tickets.values() if not t.expired and t.deadline <= now),
            key=lambda t: t.deadline,
        )
        for ticket in late:
            ticket.expired = True
            del self._tickets[ticket.number]
        return late


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    clock: Clock
    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.tokens = self.burst
        self.stamp = self.clock.monotonic()

    def take(self, count: float = 1.0) -> bool:
        """Take ``count`` tokens if there are that many; return whether it could."""
        now = self.clock.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < count:
            return False
        self.tokens -= count
        return True

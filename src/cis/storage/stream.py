"""The node-wide stream: positions handed to events and the position readers may see.

Every stored event gets a stream position, unique across the node's rooms, allocated *before*
its room's transaction commits. Rooms commit independently, so positions complete out of
order: position 7 (room A) may be indexed while 6 (room B) is still being written. A reader
(``/sync``'s ``next_batch``, a long-poll) must never be handed 7 then, or it would skip 6 for
ever. So:

- ``allocate(n)`` hands out the next ``n`` positions as a range and marks them in flight;
- ``complete(r)`` marks a range done: its events are stored *and* indexed in ``node.db``, or
  were never stored (duplicates, a failed transaction: gaps are allowed);
- ``current`` is the highest position ``p`` such that no position ``<= p`` is in flight; it
  never decreases.

This is Synapse's "persisted up to" token (``MultiWriterIdGenerator.get_current_token``)
reduced to one process. All methods run on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import heapq


class StreamPositions:
    """Allocates stream positions and tracks how far readers may go."""

    def __init__(self, last_used: int) -> None:
        if last_used < 0:
            raise ValueError("stream positions start at 0")
        self._last_allocated = last_used
        self._current = last_used
        self._in_flight: dict[int, int] = {}  # start -> stop of each allocated range
        self._starts: list[int] = []  # min-heap of in-flight starts (lazily cleaned)
        self._closed = False
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def last_allocated(self) -> int:
        return self._last_allocated

    @property
    def current(self) -> int:
        """The highest position readers may be handed (see the module docstring)."""
        return self._current

    @property
    def in_flight(self) -> int:
        """How many ranges are allocated but not complete."""
        return len(self._in_flight)

    def allocate(self, count: int) -> range:
        if count < 0:
            raise ValueError("cannot allocate a negative number of positions")
        start = self._last_allocated + 1
        positions = range(start, start + count)
        if count:
            self._last_allocated = positions.stop - 1
            self._in_flight[start] = positions.stop
            heapq.heappush(self._starts, start)
        return positions

    def complete(self, positions: range) -> None:
        """Mark an allocated range as done (indexed, or never used)."""
        if not positions:
            return
        if self._in_flight.pop(positions.start, None) is None:
            raise ValueError(f"positions {positions.start}..{positions.stop - 1} are not in flight")
        while self._starts and self._starts[0] not in self._in_flight:
            heapq.heappop(self._starts)
        new = self._starts[0] - 1 if self._starts else self._last_allocated
        if new > self._current:
            self._current = new
            waiters, self._waiters = self._waiters, set()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_beyond(self, position: int) -> int:
        """Wait until ``current > position`` (or ``close``); return ``current``.

        Bound it with ``asyncio.timeout``: a long-poll that times out reads ``current``.
        """
        while self._current <= position and not self._closed:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
        return self._current

    def close(self) -> None:
        """End every ``wait_beyond`` now and from now on (shutdown): they return ``current``."""
        self._closed = True
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

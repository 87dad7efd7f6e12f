"""Outbound traffic: new events and EDUs from this node to the servers that need them.

Invariants:

1. The origin sends each new event of a federated room to the servers of the users joined in
   the room's current state, plus the target's server of a membership event (an invitee, a
   kicked user); never to itself, never to a server at trust level 0. Nodes never relay other
   servers' new events (a resident server hands on a join it received through ``send_join``,
   as Matrix does, since the joining server does not know the room's servers yet).
2. One queue per peer, bounded (``MAX_QUEUED``): PDUs queued together leave in one ``Pdus``
   frame (at most 1,000 and well under the frame limit). Past the bound the oldest are
   dropped and the peer marked for catch-up: overflow falls back to catch-up, never to loss.
   The tunnel layer's own outbox (frames kept until acknowledged, re-sent on reconnect) is
   bounded too and reports its overflow the same way (``OutboxOverflow``).
3. Sending never blocks the sender of the event: ``enqueue`` is synchronous; one task per peer
   drains its queue with the tunnel layer's flow control.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cis.federation import frames
from cis.federation import wire_pb2 as pb
from cis.federation.errors import FederationError
from cis.federation.manager import TunnelManager
from cis.ids import Did
from cis.log import get_logger

log = get_logger(__name__)

MAX_QUEUED: Final = 10_000
MAX_FRAME_PAYLOAD: Final = 900 * 1024
MAX_EDUS_PER_FRAME: Final = 100


@dataclass(slots=True)
class _PeerQueue:
    pdus: deque[bytes] = field(default_factory=deque)
    edus: deque[pb.Edu] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Outbound:
    def __init__(
        self,
        manager: TunnelManager,
        *,
        on_overflow: Callable[[Did], None],
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._manager = manager
        self._on_overflow = on_overflow
        self.max_queued = max_queued
        self._queues: dict[Did, _PeerQueue] = {}
        self._closed = False
        self.sent_pdus = 0
        self.sent_frames = 0
        self.overflows = 0

    def enqueue_pdu(self, did: Did, pdu: bytes) -> None:
        queue = self._queue(did)
        if queue is None:
            return
        queue.pdus.append(pdu)
        if len(queue.pdus) > self.max_queued:
            dropped = len(queue.pdus) - self.max_queued
            for _ in range(dropped):
                queue.pdus.popleft()
            log.warning("outbound_queue_overflow", did=did, dropped=dropped)
            self.overflows += 1
            self._on_overflow(did)
        queue.wake.set()

    def enqueue_edu(self, did: Did, edu: pb.Edu) -> None:
        queue = self._queue(did)
        if queue is None:
            return
        queue.edus.append(edu)
        while len(queue.edus) > self.max_queued:
            queue.edus.popleft()  # ephemeral: an old typing notice is worth nothing
        queue.wake.set()

    def queued(self, did: Did) -> int:
        queue = self._queues.get(did)
        return len(queue.pdus) + len(queue.edus) if queue is not None else 0

    def _queue(self, did: Did) -> _PeerQueue | None:
        if self._closed:
            return None
        queue = self._queues.get(did)
        if queue is None:
            queue = self._queues[did] = _PeerQueue()
            queue.task = asyncio.ensure_future(self._drain(did, queue))
        return queue

    async def _drain(self, did: Did, queue: _PeerQueue) -> None:
        while not self._closed:
            if not queue.pdus and not queue.edus:
                queue.wake.clear()
                await queue.wake.wait()
                continue
            if queue.pdus:
                batch: list[bytes] = []
                size = 0
                while queue.pdus and len(batch) < frames.MAX_BATCH:
                    pdu = queue.pdus[0]
                    if batch and size + len(pdu) + 8 > MAX_FRAME_PAYLOAD:
                        break
                    batch.append(queue.pdus.popleft())
                    size += len(pdu) + 8
                frame = frames.pdus(batch)
                count = len(batch)
            else:
                edus: list[pb.Edu] = []
                while queue.edus and len(edus) < MAX_EDUS_PER_FRAME:
                    edus.append(queue.edus.popleft())
                frame = pb.Frame(edus=pb.Edus(edus=edus))
                count = 0
            try:
                await self._manager.send(did, frame)
            except FederationError as exc:
                log.info("outbound_send_failed", did=did, error=str(exc))
                if count:
                    self._on_overflow(did)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbound_send_failed", did=did)
                continue
            self.sent_pdus += count
            self.sent_frames += 1

    async def close(self) -> None:
        self._closed = True
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

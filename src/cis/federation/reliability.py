"""Sequence numbers and acknowledgements across a peer's successive tunnels, sans I/O.

A node keeps one ``ReliableStream`` per peer for as long as its process lives; tunnels to that
peer come and go (a duplicate closed, a reconnect) and the stream outlives them
(docs/federation.md "Delivery").

Outbound: every reliable frame (``frames.is_reliable``) gets the next ``seq`` (from 1, never
reset) and stays in the outbox until the peer's cumulative ``ack`` covers it. Whenever a
tunnel becomes the peer's tunnel, the whole outbox is (re)sent on it, in order. The outbox is
bounded (frames and bytes); overflow drops the *oldest* frames and counts them, and the node
falls back to catch-up for what they carried: never loss of room history, only of a shortcut.

Inbound: frames are accepted when ``seq`` is above the last accepted one, so a frame re-sent
after a tunnel switch is delivered once; a gap (the sender's outbox overflowed) is accepted too.
That state belongs to one peer *process*, named by its X25519 static key: a new key means the
peer restarted, and numbering starts afresh. ``ack`` tells the peer the highest ``seq`` whose
handler has *finished* (delivered), not merely arrived.

Invariants:
- ``0 <= acked_by_peer < next_seq``; the outbox holds exactly the stamped frames with
  ``seq > acked_by_peer`` that overflow has not dropped, in ``seq`` order;
- ``ack_sent <= delivered <= accepted``: an ack never covers a frame whose handler has not
  finished (responses, which bypass the handler queue, finish on arrival).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Final

from cis.federation.errors import CLOSE_PROTOCOL, ProtocolViolation
from cis.federation.frames import Frame, encode_frame, is_reliable

DEFAULT_MAX_UNACKED_FRAMES: Final = 10_000
DEFAULT_MAX_UNACKED_BYTES: Final = 64 * 1024 * 1024


@dataclass(slots=True)
class _Pending:
    frame: Frame
    size: int


class ReliableStream:
    """One peer's numbering, outbox and duplicate filter."""

    def __init__(
        self,
        max_frames: int = DEFAULT_MAX_UNACKED_FRAMES,
        max_bytes: int = DEFAULT_MAX_UNACKED_BYTES,
    ) -> None:
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._outbox: deque[_Pending] = deque()
        self._outbox_bytes = 0
        self.next_seq = 1
        self.acked_by_peer = 0
        self.dropped = 0
        self.peer_process: bytes | None = None
        self.generation = 0
        self.accepted = 0
        self.ack_sent = 0
        self._undelivered: list[int] = []
        self._done: set[int] = set()

    # ------------------------------------------------------------ outbound

    def stamp(self, frame: Frame) -> tuple[Frame, int]:
        """Number a reliable ``frame`` and keep it until acked; return it and how many old
        frames overflow dropped to make room."""
        if not is_reliable(frame):
            raise ValueError("only reliable frames are numbered")
        frame.seq = self.next_seq
        size = len(encode_frame(frame))  # raises FrameTooLarge before anything is kept
        self.next_seq += 1
        self._outbox.append(_Pending(frame, size))
        self._outbox_bytes += size
        dropped = 0
        while len(self._outbox) > self._max_frames or (
            self._outbox_bytes > self._max_bytes and len(self._outbox) > 1
        ):
            old = self._outbox.popleft()
            self._outbox_bytes -= old.size
            dropped += 1
        self.dropped += dropped
        return frame, dropped

    def on_ack(self, ack: int) -> None:
        """The peer has delivered every frame with ``seq <= ack``."""
        if ack >= self.next_seq:
            raise ProtocolViolation(CLOSE_PROTOCOL, "ack for a frame never sent")
        if ack <= self.acked_by_peer:
            return
        self.acked_by_peer = ack
        while self._outbox and self._outbox[0].frame.seq <= ack:
            self._outbox_bytes -= self._outbox.popleft().size

    def outbox(self) -> list[Frame]:
        """The unacknowledged frames, oldest first: what a new tunnel must (re)send."""
        return [pending.frame for pending in self._outbox]

    @property
    def outbox_len(self) -> int:
        return len(self._outbox)

    @property
    def outbox_bytes(self) -> int:
        return self._outbox_bytes

    # ------------------------------------------------------------ inbound

    def peer_process_is(self, static_key: bytes) -> bool:
        """Note which peer process we talk to; True when it replaces another one (the peer
        restarted), which starts the inbound numbering afresh."""
        if self.peer_process == static_key:
            return False
        fresh = self.peer_process is not None
        self.peer_process = static_key
        self.generation += 1
        self.accepted = self.ack_sent = 0
        self._undelivered = []
        self._done = set()
        return fresh

    def accept(self, seq: int) -> bool:
        """Whether an incoming reliable frame is new (deliver it) or a re-sent duplicate."""
        if seq <= self.accepted:
            return False
        self.accepted = seq
        heapq.heappush(self._undelivered, seq)
        return True

    def mark_delivered(self, seq: int, generation: int) -> None:
        """The handler finished with ``seq`` (accepted under ``generation``)."""
        if generation != self.generation:
            return
        self._done.add(seq)
        while self._undelivered and self._undelivered[0] in self._done:
            self._done.discard(heapq.heappop(self._undelivered))

    @property
    def delivered(self) -> int:
        """The highest ``seq`` such that every accepted frame up to it has been delivered
        (frames never received, a gap, count as delivered: they are not coming)."""
        if self._undelivered:
            return self._undelivered[0] - 1
        return self.accepted

    @property
    def ack_due(self) -> int:
        """Delivered frames the peer has not yet been told about."""
        return self.delivered - self.ack_sent

    def take_ack(self) -> int:
        """The ``ack`` value to put on an outgoing frame now."""
        self.ack_sent = max(self.ack_sent, self.delivered)
        return self.ack_sent

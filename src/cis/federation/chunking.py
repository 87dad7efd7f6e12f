"""Chunks: how an encoded ``Frame`` is cut into Noise transport messages and put back.

Each transport message's plaintext is one flag byte and a piece of the frame (docs/federation.md
"Framing"): ``0x01`` means more chunks of the same frame follow, ``0x00`` that this chunk ends
it. A Noise message is at most 65,535 bytes including its 16-byte tag (Noise spec §3), so a
plaintext holds at most 65,519 bytes: the flag and 65,518 bytes of frame. Chunks of one frame
are consecutive. A non-final chunk is never empty; senders fill it to 65,518 bytes.

Invariants of ``Reassembler``:
- it never holds more than ``max_frame`` bytes; the chunk that would exceed it is refused with
  1009 and the buffer is dropped;
- it returns a frame's bytes exactly once, on the final chunk, and then starts empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from cis.federation.errors import CLOSE_PROTOCOL, CLOSE_TOO_BIG, ProtocolViolation

NOISE_MAX_MESSAGE: Final = 65_535
NOISE_TAG_BYTES: Final = 16
MAX_CHUNK_DATA: Final = NOISE_MAX_MESSAGE - NOISE_TAG_BYTES - 1  # 65,518
MAX_FRAME_BYTES: Final = 1024 * 1024
FLAG_FINAL: Final = 0x00
FLAG_MORE: Final = 0x01


def split_frame(data: bytes, chunk_size: int = MAX_CHUNK_DATA) -> Iterator[bytes]:
    """The plaintexts (flag + piece) that carry ``data``; an empty frame is one final chunk."""
    if not 0 < chunk_size <= MAX_CHUNK_DATA:
        raise ValueError(f"chunk size must be 1..{MAX_CHUNK_DATA}")
    view = memoryview(data)
    total = len(view)
    start = 0
    while total - start > chunk_size:
        yield bytes((FLAG_MORE,)) + view[start : start + chunk_size]
        start += chunk_size
    yield bytes((FLAG_FINAL,)) + view[start:]


class Reassembler:
    """Collects chunk plaintexts back into frames of at most ``max_frame`` bytes."""

    __slots__ = ("_buffer", "_max_frame")

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._max_frame = max_frame
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held."""
        return len(self._buffer)

    def feed(self, plaintext: bytes) -> bytes | None:
        """Take one chunk; return the whole frame when it is the last one, else ``None``.

        Raises ``ProtocolViolation`` (1002 for a bad flag or an empty non-final chunk, 1009 for
        a frame over the limit).
        """
        if not plaintext:
            raise ProtocolViolation(CLOSE_PROTOCOL, "empty transport message")
        flag = plaintext[0]
        if flag not in (FLAG_FINAL, FLAG_MORE):
            raise ProtocolViolation(CLOSE_PROTOCOL, f"bad chunk flag 0x{flag:02x}")
        if flag == FLAG_MORE and len(plaintext) == 1:
            raise ProtocolViolation(CLOSE_PROTOCOL, "empty non-final chunk")
        if len(self._buffer) + len(plaintext) - 1 > self._max_frame:
            self._buffer = bytearray()
            raise ProtocolViolation(CLOSE_TOO_BIG, f"frame exceeds {self._max_frame} bytes")
        self._buffer += memoryview(plaintext)[1:]
        if flag == FLAG_MORE:
            return None
        frame = bytes(self._buffer)
        self._buffer = bytearray()
        return frame

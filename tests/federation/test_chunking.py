"""Chunking: any frame survives the cut into Noise-sized pieces, and bad chunks are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cis.federation.chunking import (
    MAX_CHUNK_DATA,
    MAX_FRAME_BYTES,
    NOISE_MAX_MESSAGE,
    NOISE_TAG_BYTES,
    Reassembler,
    split_frame,
)
from cis.federation.errors import ProtocolViolation


def test_chunk_size_leaves_room_for_flag_and_tag() -> None:
    assert MAX_CHUNK_DATA == 65_518
    assert 1 + MAX_CHUNK_DATA + NOISE_TAG_BYTES == NOISE_MAX_MESSAGE


@given(data=st.binary(max_size=5000), chunk_size=st.integers(1, 700))
def test_split_and_reassemble_round_trip(data: bytes, chunk_size: int) -> None:
    chunks = list(split_frame(data, chunk_size))
    assert all(c[0] == 1 for c in chunks[:-1]) and chunks[-1][0] == 0
    assert all(len(c) == chunk_size + 1 for c in chunks[:-1])
    reassembler = Reassembler()
    results = [reassembler.feed(c) for c in chunks]
    assert results[:-1] == [None] * (len(chunks) - 1)
    assert results[-1] == data
    assert reassembler.pending == 0


@given(sizes=st.lists(st.integers(0, 3 * MAX_CHUNK_DATA), min_size=1, max_size=3))
def test_consecutive_frames_at_full_chunk_size(sizes: list[int]) -> None:
    reassembler = Reassembler()
    for index, size in enumerate(sizes):
        data = bytes([index % 256]) * size
        out = [reassembler.feed(c) for c in split_frame(data)]
        assert len(out) == max(1, -(-size // MAX_CHUNK_DATA))
        assert out[-1] == data


def test_frame_of_exactly_the_limit_is_accepted_and_one_more_byte_refused() -> None:
    reassembler = Reassembler()
    *_, last = [reassembler.feed(c) for c in split_frame(bytes(MAX_FRAME_BYTES))]
    assert last is not None and len(last) == MAX_FRAME_BYTES
    *head, tail = split_frame(bytes(MAX_FRAME_BYTES + 1))
    for chunk in head:
        assert reassembler.feed(chunk) is None
    with pytest.raises(ProtocolViolation) as info:
        reassembler.feed(tail)
    assert info.value.code == 1009
    assert reassembler.pending == 0


@pytest.mark.parametrize(
    ("chunk", "reason"),
    [(b"", "empty transport message"), (b"\x02abc", "bad chunk flag"), (b"\x01", "empty non")],
)
def test_bad_chunks_are_protocol_errors(chunk: bytes, reason: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        Reassembler().feed(chunk)
    assert info.value.code == 1002 and reason in info.value.reason

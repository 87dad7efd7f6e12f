"""Sequence numbers and acknowledgements across tunnels, sans I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cis.federation import frames
from cis.federation.errors import ProtocolViolation
from cis.federation.reliability import ReliableStream


def pdu(n: int) -> frames.Frame:
    return frames.pdus([b'{"n":%d}' % n])


def test_frames_are_numbered_from_1_and_kept_until_acked() -> None:
    stream = ReliableStream()
    stamped = [stream.stamp(pdu(i))[0].seq for i in range(5)]
    assert stamped == [1, 2, 3, 4, 5]
    stream.on_ack(3)
    assert [f.seq for f in stream.outbox()] == [4, 5]
    stream.on_ack(2)  # stale acks change nothing
    assert stream.outbox_len == 2
    stream.on_ack(5)
    assert stream.outbox() == [] and stream.outbox_bytes == 0


def test_control_frames_are_not_numbered() -> None:
    with pytest.raises(ValueError):
        ReliableStream().stamp(frames.ping(1, 0))


def test_an_ack_beyond_what_was_sent_is_a_protocol_violation() -> None:
    stream = ReliableStream()
    stream.stamp(pdu(1))
    with pytest.raises(ProtocolViolation) as info:
        stream.on_ack(2)
    assert info.value.code == 1002


def test_overflow_drops_the_oldest_and_counts_them() -> None:
    stream = ReliableStream(max_frames=3)
    drops = [stream.stamp(pdu(i))[1] for i in range(5)]
    assert drops == [0, 0, 0, 1, 1] and stream.dropped == 2
    assert [f.seq for f in stream.outbox()] == [3, 4, 5]


def test_overflow_by_bytes_keeps_at_least_the_newest_frame() -> None:
    stream = ReliableStream(max_bytes=10)
    stream.stamp(frames.pdus([bytes(50)]))
    stream.stamp(frames.pdus([bytes(50)]))
    assert [f.seq for f in stream.outbox()] == [2]


def test_duplicates_are_refused_and_gaps_accepted() -> None:
    stream = ReliableStream()
    stream.peer_process_is(b"k1")
    assert [stream.accept(s) for s in (1, 2, 2, 1, 5, 4, 6)] == [
        True,
        True,
        False,
        False,
        True,
        False,
        True,
    ]


def test_ack_covers_only_frames_whose_handler_finished() -> None:
    stream = ReliableStream()
    stream.peer_process_is(b"k1")
    gen = stream.generation
    for seq in (1, 2, 3):
        stream.accept(seq)
    stream.mark_delivered(2, gen)  # a response, handled out of order
    assert stream.delivered == 0 and stream.ack_due == 0
    stream.mark_delivered(1, gen)
    assert stream.delivered == 2
    assert stream.take_ack() == 2 and stream.ack_due == 0
    stream.mark_delivered(3, gen)
    assert stream.ack_due == 1 and stream.take_ack() == 3


def test_a_new_peer_process_restarts_inbound_numbering() -> None:
    stream = ReliableStream()
    assert stream.peer_process_is(b"k1") is False
    old = stream.generation
    stream.accept(7)
    assert stream.peer_process_is(b"k1") is False
    assert stream.peer_process_is(b"k2") is True
    stream.mark_delivered(7, old)  # a late handler from the old process changes nothing
    assert stream.accepted == 0 and stream.delivered == 0
    assert stream.accept(1)


@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["send", "ack", "resend"]), st.integers(0, 5)), max_size=60
    )
)
def test_every_frame_is_delivered_exactly_once_across_switches(
    ops: list[tuple[str, int]],
) -> None:
    """A sender and a receiver; the sender re-sends its outbox at arbitrary 'tunnel switches'
    and acks arrive late: the receiver's deliveries are exactly 1..n in order."""
    sender, receiver = ReliableStream(), ReliableStream()
    receiver.peer_process_is(b"sender")
    delivered: list[int] = []
    in_flight: list[frames.Frame] = []
    sent = 0
    for op, n in ops:
        if op == "send":
            for _ in range(n):
                frame, _dropped = sender.stamp(pdu(sent))
                sent += 1
                in_flight.append(frame)
        elif op == "resend":
            in_flight = sender.outbox()  # the old tunnel's queue is lost
        for frame in in_flight[:n]:
            if receiver.accept(frame.seq):
                delivered.append(frame.seq)
                receiver.mark_delivered(frame.seq, receiver.generation)
        in_flight = in_flight[n:]
        if op == "ack":
            sender.on_ack(receiver.take_ack())
    for frame in sender.outbox():
        if receiver.accept(frame.seq):
            delivered.append(frame.seq)
    assert delivered == list(range(1, sent + 1))

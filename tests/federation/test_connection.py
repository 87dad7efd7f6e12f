"""The open tunnel, sans I/O: garbage, replays and truncation close it with a reason."""

from __future__ import annotations

import pytest

from cis.federation import frames
from cis.federation.connection import Closed, FrameReceived, State
from cis.federation.errors import TunnelClosed
from cis.federation.handshake import Credentials

from .helpers import Pair, complete_handshake, identities, make_pair


@pytest.fixture
def pair() -> Pair:
    a, b = identities("a", "b")
    pair = make_pair(Credentials.create(a), Credentials.create(b))
    complete_handshake(pair)
    pair.initiator.events_received()
    pair.responder.events_received()
    return pair


def pdu_frame(seq: int, body: bytes = b"{}") -> frames.Frame:
    frame = frames.pdus([body])
    frame.seq = seq
    return frame


def only_close(pair: Pair) -> Closed:
    (event,) = pair.responder.events_received()
    assert isinstance(event, Closed)
    assert pair.responder.state is State.CLOSED
    return event


def test_sending_before_the_handshake_is_refused() -> None:
    a, b = identities("a", "b")
    pair = make_pair(Credentials.create(a), Credentials.create(b))
    with pytest.raises(TunnelClosed):
        pair.initiator.send_frame(pdu_frame(1))


def test_random_bytes_close_the_tunnel(pair: Pair) -> None:
    pair.responder.receive_message(b"\x00" * 100)
    event = only_close(pair)
    assert (event.code, event.reason) == (1002, "transport message failed authentication")


def test_encrypted_garbage_closes_the_tunnel(pair: Pair) -> None:
    # Correctly encrypted, well chunked, but not a Frame.
    noise = pair.initiator._noise
    pair.responder.receive_message(bytes(noise.encrypt(b"\x00\xff\xfe\xfd")))
    event = only_close(pair)
    assert event.code == 1002 and "not valid protobuf" in event.reason


def test_a_replayed_transport_message_closes_the_tunnel(pair: Pair) -> None:
    pair.initiator.send_frame(pdu_frame(1))
    (message,) = pair.initiator.data_to_send()
    pair.responder.receive_message(message)
    (first,) = pair.responder.events_received()
    assert isinstance(first, FrameReceived)
    pair.responder.receive_message(message)
    event = only_close(pair)
    assert event.code == 1002


def test_a_truncated_transport_message_closes_the_tunnel(pair: Pair) -> None:
    pair.initiator.send_frame(pdu_frame(1))
    (message,) = pair.initiator.data_to_send()
    pair.responder.receive_message(message[:-1])
    assert only_close(pair).code == 1002


def test_a_dropped_chunk_closes_the_tunnel(pair: Pair) -> None:
    pair.initiator.send_frame(pdu_frame(1, bytes(200_000)))
    messages = pair.initiator.data_to_send()
    assert len(messages) == 4
    del messages[1]
    for message in messages:
        pair.responder.receive_message(message)
    assert only_close(pair).code == 1002


def test_local_close_sends_a_close_frame_the_peer_reports(pair: Pair) -> None:
    pair.initiator.close(1000, "duplicate")
    (event,) = pair.initiator.events_received()
    assert event == Closed(1000, "duplicate", by_peer=False)
    for message in pair.initiator.data_to_send():
        pair.responder.receive_message(message)
    assert pair.responder.events_received() == [Closed(1000, "duplicate", by_peer=True)]
    with pytest.raises(TunnelClosed):
        pair.initiator.send_frame(pdu_frame(2))


def test_an_invalid_close_code_from_the_peer_becomes_1002(pair: Pair) -> None:
    frame = frames.close(1000, "bye")
    frame.close.code = 7
    pair.initiator.send_frame(frame)
    for message in pair.initiator.data_to_send():
        pair.responder.receive_message(message)
    assert only_close(pair) == Closed(1002, "bye", by_peer=True)


def test_frames_after_a_failure_are_ignored(pair: Pair) -> None:
    pair.initiator.send_frame(pdu_frame(1))
    (good,) = pair.initiator.data_to_send()
    pair.responder.receive_message(b"junk" * 10)
    pair.responder.receive_message(good)
    only_close(pair)
    assert pair.responder.data_to_send() == []

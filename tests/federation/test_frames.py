"""Frames: Hypothesis round trips through encoding, chunking and encryption; validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cis.federation import frames
from cis.federation import wire_pb2 as pb
from cis.federation.chunking import MAX_FRAME_BYTES
from cis.federation.connection import FrameReceived
from cis.federation.errors import FrameTooLarge, ProtocolViolation
from cis.federation.handshake import Credentials

from .helpers import complete_handshake, identities, make_pair

SRC = Path(__file__).resolve().parents[2] / "src"

ids = st.text(min_size=1, max_size=40)
pdu = st.binary(max_size=2000)
u64 = st.integers(0, 2**64 - 1)


def _edu() -> st.SearchStrategy[pb.Edu]:
    return st.one_of(
        st.builds(
            lambda r, u, t: pb.Edu(typing=pb.Typing(room_id=r, user_id=u, typing=t)),
            ids,
            ids,
            st.booleans(),
        ),
        st.builds(
            lambda r, u, e, ts: pb.Edu(
                receipt=pb.Receipt(room_id=r, receipt_type="m.read", user_id=u, event_ids=e, ts=ts)
            ),
            ids,
            ids,
            st.lists(ids, max_size=3),
            u64,
        ),
        st.builds(
            lambda u, d, s, k: pb.Edu(
                device_list_update=pb.DeviceListUpdate(
                    user_id=u, device_id=d, stream_id=s, prev_id=[s], keys_json=k
                )
            ),
            ids,
            ids,
            u64,
            pdu,
        ),
        st.builds(
            lambda s, m: pb.Edu(
                direct_to_device=pb.DirectToDevice(sender=s, type="m.room_key", messages_json=m)
            ),
            ids,
            pdu,
        ),
        st.builds(lambda t, c: pb.Edu(raw=pb.RawEdu(edu_type=t, content_json=c)), ids, pdu),
    )


def _request() -> st.SearchStrategy[pb.Request]:
    return st.one_of(
        st.builds(
            lambda i, r, e: pb.Request(id=i, get_events=pb.GetEvents(room_id=r, event_ids=e)),
            u64,
            ids,
            st.lists(ids, max_size=20),
        ),
        st.builds(
            lambda i, r, f, n: pb.Request(
                id=i, backfill=pb.Backfill(room_id=r, from_event_ids=f, limit=n)
            ),
            u64,
            ids,
            st.lists(ids, max_size=5),
            st.integers(0, 1000),
        ),
        st.builds(
            lambda i, r, a, b: pb.Request(
                id=i,
                get_missing_events=pb.GetMissingEvents(
                    room_id=r, earliest_events=a, latest_events=b, limit=10
                ),
            ),
            u64,
            ids,
            st.lists(ids, max_size=5),
            st.lists(ids, max_size=5),
        ),
        st.builds(
            lambda i, r, u: pb.Request(id=i, make_join=pb.MakeJoin(room_id=r, user_id=u)),
            u64,
            ids,
            ids,
        ),
        st.builds(
            lambda i, r, e, s: pb.Request(
                id=i,
                invite=pb.Invite(room_id=r, event_json=e, room_version="11", invite_room_state=s),
            ),
            u64,
            ids,
            pdu,
            st.lists(pdu, max_size=3),
        ),
        st.builds(lambda i, b: pb.Request(id=i, key_query=pb.JsonBody(json=b)), u64, pdu),
        st.builds(
            lambda i, s: pb.Request(id=i, server_keys=pb.ServerKeysQuery(server_name=s)), u64, ids
        ),
    )


def _response() -> st.SearchStrategy[pb.Response]:
    return st.one_of(
        st.builds(
            lambda i, p, t: pb.Response(id=i, events=pb.Events(pdus=p, truncated=t)),
            u64,
            st.lists(pdu, max_size=10),
            st.booleans(),
        ),
        st.builds(
            lambda i, c, e: pb.Response(id=i, error=pb.Error(errcode=c, error=e)),
            u64,
            ids,
            st.text(max_size=100),
        ),
        st.builds(
            lambda i, s, a, e: pb.Response(
                id=i,
                send_join=pb.SendJoinResponse(state_ids=s, auth_chain_ids=a, events=e),
            ),
            u64,
            st.lists(ids, max_size=10),
            st.lists(ids, max_size=10),
            st.lists(pdu, max_size=5),
        ),
        st.builds(
            lambda i, k: pb.Response(id=i, server_keys=pb.ServerKeysResponse(server_keys=k)),
            u64,
            st.lists(pdu, max_size=3),
        ),
    )


def _stamped(frame: pb.Frame, seq: int, ack: int) -> pb.Frame:
    frame.seq, frame.ack = seq, ack
    return frame


seq = st.integers(1, 2**64 - 1)

reliable_frames = st.one_of(
    st.builds(lambda p: pb.Frame(pdus=pb.Pdus(pdus=p)), st.lists(pdu, max_size=20)),
    st.builds(lambda e: pb.Frame(edus=pb.Edus(edus=e)), st.lists(_edu(), max_size=5)),
    st.builds(
        lambda r: pb.Frame(
            extremities=pb.ForwardExtremities(
                rooms=[pb.RoomExtremities(room_id=x, event_ids=[x]) for x in r]
            )
        ),
        st.lists(ids, max_size=5),
    ),
    st.builds(frames.request_frame, _request()),
    st.builds(frames.response_frame, _response()),
)
control_frames = st.one_of(
    st.builds(frames.ping, u64, u64),
    st.builds(lambda i, t: frames.pong(pb.Ping(id=i, sent_ms=t), t), u64, u64),
    st.just(frames.ack_only()),
    st.builds(frames.close, st.sampled_from([1000, 1002, 1008]), st.text(max_size=200)),
)
any_frame = st.one_of(
    st.builds(_stamped, reliable_frames, seq, u64),
    st.builds(_stamped, control_frames, st.just(0), u64),
)


@given(frame=any_frame)
def test_encode_decode_round_trip(frame: pb.Frame) -> None:
    assert frames.decode_frame(frames.encode_frame(frame)) == frame


@settings(max_examples=50, deadline=None)
@given(
    frame=st.builds(_stamped, reliable_frames, seq, u64),
    padding=st.integers(0, 200_000),
)
def test_frames_cross_an_encrypted_tunnel_unchanged(frame: pb.Frame, padding: int) -> None:
    if padding:
        frame.edus.edus.append(pb.Edu(raw=pb.RawEdu(edu_type="pad", content_json=bytes(padding))))
    a, b = identities("a", "b")
    pair = make_pair(Credentials.create(a), Credentials.create(b))
    complete_handshake(pair)
    pair.initiator.events_received()
    pair.responder.events_received()
    pair.initiator.send_frame(frame)
    for message in pair.initiator.data_to_send():
        assert len(message) <= 65_535
        pair.responder.receive_message(message)
    (event,) = pair.responder.events_received()
    assert isinstance(event, FrameReceived) and event.frame == frame


def test_pdus_travel_as_the_exact_bytes_given() -> None:
    canonical = b'{"content":{"body":"caf\xc3\xa9"},"type":"m.room.message"}'
    frame = frames.pdus([canonical])
    frame.seq = 1
    assert frames.decode_frame(frames.encode_frame(frame)).pdus.pdus[0] == canonical


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (pb.Frame(seq=1), "no body"),
        (pb.Frame(seq=3, ping=pb.Ping(id=1)), "seq 0"),
        (pb.Frame(pdus=pb.Pdus(pdus=[b"{}"])), "seq >= 1"),
        (pb.Frame(close=pb.Close(code=1000, reason="x" * 124)), "123 bytes"),
        (pb.Frame(seq=1, pdus=pb.Pdus(pdus=[b"{}"] * 1001)), "max 1000"),
        (
            pb.Frame(
                seq=1,
                request=pb.Request(id=1, get_events=pb.GetEvents(event_ids=["$x"] * 1001)),
            ),
            "max 1000",
        ),
        (
            pb.Frame(seq=1, request=pb.Request(id=1, backfill=pb.Backfill(limit=5000))),
            "max 1000",
        ),
        (
            pb.Frame(seq=1, response=pb.Response(id=1, events=pb.Events(pdus=[b"{}"] * 1001))),
            "max 1000",
        ),
    ],
)
def test_invalid_frames_are_protocol_violations(frame: pb.Frame, reason: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        frames.decode_frame(frame.SerializeToString())
    assert info.value.code == 1002 and reason in info.value.reason


def test_garbage_is_a_protocol_violation() -> None:
    with pytest.raises(ProtocolViolation, match="not valid protobuf"):
        frames.decode_frame(b"\xff\xff\xff\xff")


def test_a_frame_over_1_mib_is_refused_before_sending() -> None:
    frame = frames.pdus([bytes(MAX_FRAME_BYTES)])
    frame.seq = 1
    with pytest.raises(FrameTooLarge):
        frames.encode_frame(frame)


def test_close_reason_is_clipped_on_a_character_boundary() -> None:
    frame = frames.close(1008, "é" * 100)
    assert len(frame.close.reason.encode()) <= 123
    assert frame.close.reason == "é" * 61


def test_checked_in_generated_code_matches_the_proto(tmp_path: Path) -> None:
    proto = "cis/federation/wire.proto"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{SRC}",
            f"--python_out={tmp_path}",
            str(SRC / proto),
        ],
        check=True,
        timeout=120,
    )
    generated = (tmp_path / "cis/federation/wire_pb2.py").read_text()
    assert generated == (SRC / "cis/federation/wire_pb2.py").read_text()

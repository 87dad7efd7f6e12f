"""``Frame``: the typed face of ``wire.proto``.

The generated classes (``wire_pb2``, typed by the checked-in ``wire_pb2.pyi``) are the frame
objects; this module is the boundary where bytes become a *valid* ``Frame`` and back:

- ``decode_frame`` parses and checks the rules Protobuf cannot express (docs/federation.md
  "Frames"): exactly one body; reliable bodies carry ``seq >= 1`` and control bodies ``seq = 0``;
  a close reason of at most 123 bytes; lists of events at most ``MAX_BATCH`` long. A violation
  is a ``ProtocolViolation`` (1002), which closes the tunnel.
- ``encode_frame`` refuses a frame over 1 MiB (``FrameTooLarge``) before anything is sent.
- small constructors for the frames the tunnel itself makes (ping, pong, ack, close) and for the
  ones callers build most (PDUs, requests, responses, errors).

PDUs stay the canonical-JSON bytes they were signed as; nothing here parses them.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

from google.protobuf.message import DecodeError

from cis.federation import wire_pb2 as pb
from cis.federation.chunking import MAX_FRAME_BYTES
from cis.federation.errors import (
    CLOSE_PROTOCOL,
    MAX_REASON_BYTES,
    FrameTooLarge,
    ProtocolViolation,
    clip_reason,
)

Frame: TypeAlias = pb.Frame
Request: TypeAlias = pb.Request
Response: TypeAlias = pb.Response

MAX_BATCH: Final = 1000
"""The most events one frame lists, and the most a request may ask for."""

BodyKind: TypeAlias = Literal[
    "ping", "pong", "ack_only", "close", "pdus", "edus", "extremities", "request", "response"
]
CONTROL_BODIES: Final[frozenset[str]] = frozenset({"ping", "pong", "ack_only", "close"})
RELIABLE_BODIES: Final[frozenset[str]] = frozenset(
    {"pdus", "edus", "extremities", "request", "response"}
)


def body_kind(frame: Frame) -> BodyKind | None:
    return frame.WhichOneof("body")


def is_reliable(frame: Frame) -> bool:
    """Whether the frame is numbered, acknowledged and re-sent (see ``reliability``)."""
    return body_kind(frame) in RELIABLE_BODIES


def encode_frame(frame: Frame) -> bytes:
    data = frame.SerializeToString()
    if len(data) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES} limit")
    return data


def decode_frame(data: bytes) -> Frame:
    """Parse and validate one reassembled frame; raises ``ProtocolViolation``."""
    frame = pb.Frame()
    try:
        frame.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolViolation(CLOSE_PROTOCOL, "frame is not valid protobuf") from exc
    validate_frame(frame)
    return frame


def validate_frame(frame: Frame) -> None:
    kind = body_kind(frame)
    if kind is None:
        raise ProtocolViolation(CLOSE_PROTOCOL, "frame has no body")
    if kind in CONTROL_BODIES and frame.seq != 0:
        raise ProtocolViolation(CLOSE_PROTOCOL, f"{kind} frame must have seq 0")
    if kind in RELIABLE_BODIES and frame.seq == 0:
        raise ProtocolViolation(CLOSE_PROTOCOL, f"{kind} frame must have seq >= 1")
    if kind == "close" and len(frame.close.reason.encode("utf-8")) > MAX_REASON_BYTES:
        raise ProtocolViolation(CLOSE_PROTOCOL, "close reason over 123 bytes")
    if kind == "pdus":
        _check_batch("pdus", len(frame.pdus.pdus))
    elif kind == "request":
        _validate_request(frame.request)
    elif kind == "response":
        _validate_response(frame.response)


def _check_batch(what: str, count: int) -> None:
    if count > MAX_BATCH:
        raise ProtocolViolation(CLOSE_PROTOCOL, f"{what} lists {count} entries (max {MAX_BATCH})")


def _validate_request(request: Request) -> None:
    kind = request.WhichOneof("kind")
    if kind == "get_events":
        _check_batch("get_events", len(request.get_events.event_ids))
    elif kind == "backfill":
        _check_batch("backfill limit", request.backfill.limit)
    elif kind == "get_missing_events":
        _check_batch("get_missing_events limit", request.get_missing_events.limit)
    elif kind == "get_history":
        _check_batch("get_history limit", request.get_history.limit)
        _check_batch("get_history earliest_events", len(request.get_history.earliest_events))


def _validate_response(response: Response) -> None:
    kind = response.WhichOneof("kind")
    if kind == "events":
        _check_batch("events", len(response.events.pdus))
    elif kind == "send_join":
        _check_batch("send_join events", len(response.send_join.events))


# ---------------------------------------------------------------- constructors


def ping(ping_id: int, sent_ms: int) -> Frame:
    return pb.Frame(ping=pb.Ping(id=ping_id, sent_ms=sent_ms))


def pong(of: pb.Ping, sent_ms: int) -> Frame:
    return pb.Frame(pong=pb.Pong(id=of.id, ping_sent_ms=of.sent_ms, sent_ms=sent_ms))


def ack_only() -> Frame:
    return pb.Frame(ack_only=pb.Ack())


def close(code: int, reason: str) -> Frame:
    return pb.Frame(close=pb.Close(code=code, reason=clip_reason(reason)))


def pdus(events: list[bytes]) -> Frame:
    """A frame pushing new PDUs, each the canonical JSON it was signed as."""
    _check_batch("pdus", len(events))
    return pb.Frame(pdus=pb.Pdus(pdus=events))


def request_frame(request: Request) -> Frame:
    return pb.Frame(request=request)


def response_frame(response: Response) -> Frame:
    return pb.Frame(response=response)


def error_response(request_id: int, errcode: str, error: str) -> Response:
    """A Matrix-shaped error answering ``request_id`` (``M_NOT_FOUND``, ``M_FORBIDDEN`` …)."""
    return pb.Response(id=request_id, error=pb.Error(errcode=errcode, error=error))

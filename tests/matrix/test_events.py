"""Parsing PDUs into frozen events: the validation of the event format and size limits."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from types import MappingProxyType
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cis.matrix import (
    Event,
    InvalidPdu,
    SignatureError,
    UnsupportedRoomVersion,
    build_event,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    hash_and_sign_event,
    parse_pdu,
    parse_pdu_json,
    redact,
    verify_event_signature,
)
from cis.matrix.canonical_json import encode
from cis.matrix.events import ReceivedPdu, parse_received_pdu
from cis.matrix.signing import verify_signed_bytes

KEY = nacl.signing.SigningKey(bytes(range(32)))


def good_pdu(**overrides: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "room_id": "!r:a.test",
        "sender": "@u:a.test",
        "origin_server_ts": 1700000000000,
        "depth": 5,
        "prev_events": ["$" + "p" * 43],
        "auth_events": ["$" + "a" * 43],
        "content": {"body": "hello", "nested": {"list": [1, 2, {"x": None}]}},
    }
    pdu.update(overrides)
    return hash_and_sign_event("11", pdu, "a.test", "ed25519:k", KEY)


def test_parse_exposes_the_fields_and_keeps_canonical_bytes() -> None:
    pdu = {**good_pdu(), "unsigned": {"age": 3}, "event_id": "$ignored"}
    event = parse_pdu("11", pdu)
    assert event.event_id == compute_event_id("11", pdu)
    assert event.room_id == "!r:a.test"
    assert event.sender == "@u:a.test"
    assert event.type == "m.room.message"
    assert event.state_key is None
    assert not event.is_state
    assert event.depth == 5
    assert event.prev_events == ("$" + "p" * 43,)
    assert event.redacts is None
    assert event.room_version == "11"
    wire = {k: v for k, v in pdu.items() if k not in ("unsigned", "event_id")}
    assert event.canonical_bytes == encode(wire)
    assert event.to_pdu() == wire
    assert event.content["nested"]["list"][2]["x"] is None


def test_events_cannot_be_changed_after_parsing() -> None:
    pdu = good_pdu()
    event = parse_pdu("11", pdu)
    before = event.canonical_bytes
    pdu["content"]["body"] = "changed"  # the caller's dict is not shared
    assert event.content["body"] == "hello"
    with pytest.raises(TypeError):
        event.content["body"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        event.content["nested"]["list"][0] = 9  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.depth = 6  # type: ignore[misc]
    copy_ = event.to_pdu()
    copy_["content"]["body"] = "again"
    assert event.to_pdu()["content"]["body"] == "hello"
    assert event.canonical_bytes == before


def test_equality_and_hashing() -> None:
    a = parse_pdu("11", good_pdu())
    b = parse_pdu("11", good_pdu())
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != parse_pdu("11", good_pdu(depth=6))
    assert a.event_id in repr(a)


def test_state_events_and_redacts_by_room_version() -> None:
    state = parse_pdu("11", good_pdu(type="m.room.topic", state_key="", content={"topic": "t"}))
    assert state.is_state
    assert state.state_key == ""
    target = "$" + "t" * 43
    v11 = parse_pdu("11", good_pdu(type="m.room.redaction", content={"redacts": target}))
    assert v11.redacts == target
    v11_top = parse_pdu("11", good_pdu(type="m.room.redaction", redacts=target, content={}))
    assert v11_top.redacts is None  # v11 reads content.redacts only
    v10 = parse_pdu("10", {**good_pdu(type="m.room.redaction", content={}), "redacts": target})
    assert v10.redacts == target


def test_build_event_hashes_and_signs() -> None:
    partial = {k: v for k, v in good_pdu().items() if k not in ("hashes", "signatures")}
    event = build_event("11", partial, "a.test", "ed25519:k", KEY)
    assert event == parse_pdu("11", good_pdu())
    assert set(event.signatures["a.test"]) == {"ed25519:k"}


def _nest(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function, not a lambda: Hypothesis reads a lambda's source to check that it
    # uses its argument, and misreads this one when it spans several lines.
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    _nest,
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(
    room_version=st.sampled_from(["10", "11"]),
    event_type=st.sampled_from(
        ["m.room.message", "m.room.member", "m.room.power_levels", "m.room.create", "x.custom"]
    ),
    state_key=st.one_of(st.none(), st.just(""), st.just("@u:a.test")),
    content=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
def test_build_event_is_parse_of_hash_and_sign(
    room_version: str, event_type: str, state_key: str | None, content: dict[str, Any]
) -> None:
    """The fast path equals the definition: hash, sign, then parse."""
    partial = {k: v for k, v in good_pdu(type=event_type, content=content).items()}
    del partial["hashes"], partial["signatures"]
    if state_key is not None:
        partial["state_key"] = state_key
    built = build_event(room_version, partial, "a.test", "ed25519:k", KEY)
    slow = parse_pdu(
        room_version, hash_and_sign_event(room_version, partial, "a.test", "ed25519:k", KEY)
    )
    assert built == slow
    assert built.event_id == slow.event_id == compute_event_id(room_version, slow.to_pdu())
    assert built.signatures == slow.signatures and built.hashes == slow.hashes


def test_build_event_refuses_what_parse_refuses() -> None:
    partial = {k: v for k, v in good_pdu().items() if k not in ("hashes", "signatures")}
    with pytest.raises(InvalidPdu):
        build_event("11", {**partial, "depth": -1}, "a.test", "ed25519:k", KEY)
    with pytest.raises(InvalidPdu):
        build_event("11", {**partial, "content": {"f": 1.5}}, "a.test", "ed25519:k", KEY)
    with pytest.raises(InvalidPdu):
        build_event("11", {**partial, "content": {"big": "x" * 70_000}}, "a.test", "ed25519:k", KEY)


def test_parse_pdu_json_is_strict() -> None:
    event = parse_pdu("11", good_pdu())
    assert parse_pdu_json("11", event.canonical_bytes) == event
    with pytest.raises(InvalidPdu):
        parse_pdu_json("11", event.canonical_bytes.replace(b'"depth":5', b'"depth":5.0'))
    with pytest.raises(InvalidPdu):
        parse_pdu_json("11", b"{not json")


def test_unsupported_room_versions() -> None:
    for version in ["1", "9", "12", "", None, 11]:
        with pytest.raises(UnsupportedRoomVersion):
            parse_pdu(version, good_pdu())  # type: ignore[arg-type]


def _drop(key: str) -> Any:
    return lambda p: p.pop(key)


def _set(key: str, value: Any) -> Any:
    return lambda p: p.__setitem__(key, value)


LONG = "x" * 256
BAD_PDUS = {
    "not an object": lambda p: ["list"],
    "no type": _drop("type"),
    "no room_id": _drop("room_id"),
    "no sender": _drop("sender"),
    "no content": _drop("content"),
    "no depth": _drop("depth"),
    "no prev_events": _drop("prev_events"),
    "no auth_events": _drop("auth_events"),
    "no origin_server_ts": _drop("origin_server_ts"),
    "no hashes": _drop("hashes"),
    "no signatures": _drop("signatures"),
    "hashes without sha256": _set("hashes", {"sha512": "x"}),
    "signatures not nested": _set("signatures", {"a.test": "sig"}),
    "signature not a string": _set("signatures", {"a.test": {"ed25519:k": 1}}),
    "type not a string": _set("type", 5),
    "content a list": _set("content", []),
    "state_key null": _set("state_key", None),
    "state_key a number": _set("state_key", 1),
    "depth negative": _set("depth", -1),
    "depth a bool": _set("depth", True),
    "depth a float": _set("depth", 5.0),
    "depth too big": _set("depth", 2**53),
    "ts a string": _set("origin_server_ts", "1"),
    "float in content": _set("content", {"x": 0.5}),
    "lone surrogate": _set("content", {"x": "\ud800"}),
    "sender no sigil": _set("sender", "u:a.test"),
    "sender no server": _set("sender", "@u"),
    "room_id no sigil": _set("room_id", "r:a.test"),
    "sender too long": _set("sender", "@" + LONG + ":a.test"),
    "room_id too long": _set("room_id", "!" + LONG + ":a.test"),
    "type too long": _set("type", LONG),
    "state_key too long": _set("state_key", LONG),
    "state_key too long in UTF-8": _set("state_key", "é" * 128),
    "prev event not an id": _set("prev_events", ["nope"]),
    "prev event too long": _set("prev_events", ["$" + LONG]),
    "prev event not a string": _set("prev_events", [["$a", {}]]),
    "21 prev_events": _set("prev_events", [f"$p{i}" for i in range(21)]),
    "11 auth_events": _set("auth_events", [f"$a{i}" for i in range(11)]),
    "over 64 KiB": _set("content", {"body": "x" * 65_536}),
}


@pytest.mark.parametrize("change", list(BAD_PDUS.values()), ids=list(BAD_PDUS))
def test_malformed_pdus_raise_invalid_pdu(change: Any) -> None:
    pdu = good_pdu()
    changed = change(pdu)
    target = changed if isinstance(changed, list) else pdu
    for version in ("10", "11"):
        with pytest.raises(InvalidPdu):
            parse_pdu(version, copy.deepcopy(target))


def test_size_limits_are_inclusive() -> None:
    assert parse_pdu("11", good_pdu(state_key="x" * 255, type="t" * 255))
    assert parse_pdu("11", good_pdu(prev_events=[f"$p{i}" for i in range(20)]))
    assert parse_pdu("11", good_pdu(auth_events=[f"$a{i}" for i in range(10)]))
    # Grow the body until the signed PDU is exactly 65,536 bytes.
    base = len(parse_pdu("11", good_pdu(content={"body": ""})).canonical_bytes)
    exact = parse_pdu("11", good_pdu(content={"body": "x" * (65_536 - base)}))
    assert len(exact.canonical_bytes) == 65_536
    with pytest.raises(InvalidPdu):
        parse_pdu("11", good_pdu(content={"body": "x" * (65_537 - base)}))


def test_top_level_redacts_is_checked_in_v10_only() -> None:
    # v10's format has a top-level `redacts` event id; in v11 the key is no longer part of
    # the format, so it is just an extra (unprotected) key.
    with pytest.raises(InvalidPdu):
        parse_pdu("10", good_pdu(redacts=5))
    assert parse_pdu("11", good_pdu(redacts=5)).redacts is None


# ------------------------------------------------------------------ fuzzing the boundary

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.integers()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.dictionaries(st.integers(), st.integers(), max_size=1, min_size=1),
)
PDU_KEYS = [
    *("type", "room_id", "sender", "state_key", "content", "depth", "prev_events"),
    *("auth_events", "origin_server_ts", "hashes", "signatures", "redacts", "unsigned"),
]


def outcome(fn: Any, *args: Any) -> Any:
    """The result, or the ``InvalidPdu`` raised; any other exception fails the test."""
    try:
        return fn(*args)
    except InvalidPdu as e:
        return e


@settings(max_examples=300)
@given(
    st.sampled_from(["10", "11"]),
    st.dictionaries(st.sampled_from(PDU_KEYS), odd_values, max_size=6),
    st.lists(st.sampled_from(PDU_KEYS), max_size=3),
)
def test_any_malformed_input_raises_only_invalid_pdu(
    rv: str, overrides: dict[str, Any], dropped: list[str]
) -> None:
    pdu: Any = {**good_pdu(), **overrides}
    for key in dropped:
        pdu.pop(key, None)
    event = outcome(parse_pdu, rv, pdu)
    event_id = outcome(compute_event_id, rv, pdu)
    if isinstance(event, Event):
        assert event_id == event.event_id
        assert isinstance(outcome(redact, rv, pdu), dict)
    else:
        assert isinstance(event, InvalidPdu)
        assert isinstance(event_id, str | InvalidPdu)
        assert isinstance(outcome(redact, rv, pdu), dict | InvalidPdu)
    assert isinstance(outcome(compute_content_hash, pdu), str | InvalidPdu)
    assert isinstance(outcome(check_content_hash, pdu), bool | InvalidPdu)


def received_outcome(rv: str, pdu: Any) -> Any:
    """``parse_received_pdu`` over ``pdu``'s JSON text, or the ``InvalidPdu`` it raised."""
    try:
        data = json.dumps(pdu).encode()
    except (TypeError, ValueError):
        return None  # not JSON text at all: nothing a peer could send
    return outcome(parse_received_pdu, rv, data)


@settings(max_examples=300)
@given(
    st.sampled_from(["10", "11"]),
    st.dictionaries(st.sampled_from(PDU_KEYS), odd_values, max_size=6),
    st.lists(st.sampled_from(PDU_KEYS), max_size=3),
    st.booleans(),
)
def test_receipt_fast_path_agrees_with_the_definitions(
    rv: str, overrides: dict[str, Any], dropped: list[str], tamper: bool
) -> None:
    """``parse_received_pdu`` = ``parse_pdu_json`` + ``verify_event_signature`` +
    ``check_content_hash``, for good, tampered and malformed PDUs alike."""
    pdu: Any = {**good_pdu(), **overrides}
    if tamper:
        pdu["content"] = {"body": "changed"}
    for key in dropped:
        pdu.pop(key, None)
    received = received_outcome(rv, pdu)
    if received is None:
        return
    pdu = json.loads(json.dumps(pdu))  # what a peer sent is JSON: the keys are strings
    expected = outcome(parse_pdu_json, rv, json.dumps(pdu).encode())
    if isinstance(expected, InvalidPdu):
        assert isinstance(received, InvalidPdu)
        return
    assert isinstance(received, ReceivedPdu)
    assert received.event == expected
    assert received.content_hash_ok == check_content_hash(pdu)
    wire = received.event.to_pdu()
    try:
        verify_event_signature(rv, wire, "a.test", "ed25519:k", KEY.verify_key)
        by_definition = True
    except SignatureError:
        by_definition = False
    signature = pdu.get("signatures", {}).get("a.test", {}).get("ed25519:k", "")
    try:
        verify_signed_bytes(received.signed_bytes, signature, KEY.verify_key)
        fast = True
    except SignatureError:
        fast = False
    assert fast == by_definition


def test_receipt_fast_path_on_a_tampered_and_a_forged_event() -> None:
    pdu = good_pdu()
    tampered = parse_received_pdu("11", encode({**pdu, "content": {"body": "other"}}))
    assert not tampered.content_hash_ok
    assert tampered.event.event_id == parse_pdu("11", pdu).event_id  # content is not in the id
    signature = pdu["signatures"]["a.test"]["ed25519:k"]
    verify_signed_bytes(tampered.signed_bytes, signature, KEY.verify_key)  # still validly signed
    other = nacl.signing.SigningKey(bytes(range(1, 33))).verify_key
    with pytest.raises(SignatureError):
        verify_signed_bytes(tampered.signed_bytes, signature, other)
    with pytest.raises(SignatureError):
        verify_signed_bytes(tampered.signed_bytes, "not base64!", KEY.verify_key)


def test_events_pickle_to_equal_frozen_events() -> None:
    """Receipt's worker processes hand events back pickled."""
    event = parse_pdu("11", good_pdu(state_key="", type="m.room.topic", content={"a": [{"b": 1}]}))
    back = pickle.loads(pickle.dumps(event))
    assert back == event
    for f in dataclasses.fields(Event):
        assert getattr(back, f.name) == getattr(event, f.name), f.name
    assert isinstance(back.content, MappingProxyType)
    assert isinstance(back.content["a"], tuple)
    assert isinstance(back.signatures["a.test"], MappingProxyType)

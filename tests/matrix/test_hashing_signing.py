"""Content hashes, redaction, event ids and signatures: spec vectors, redaction tables per room
version, and Hypothesis properties over generated events."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import nacl.signing
import pytest
from canonicaljson import encode_canonical_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64

from cis.matrix import (
    InvalidPdu,
    SignatureError,
    UnsupportedRoomVersion,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    hash_and_sign_event,
    parse_pdu,
    redact,
    sign_event,
    verify_event_signature,
)
from tests.matrix.test_canonical_json import matrix_values

# ------------------------------------------------------------------ spec vectors

# appendices, "Cryptographic Test Vectors": seed, server name and key id.
SPEC_SEED = decode_base64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
SPEC_KEY = nacl.signing.SigningKey(SPEC_SEED)
SPEC_VERIFY_KEY = SPEC_KEY.verify_key

MINIMAL_EVENT = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
MINIMAL_EVENT_SIGNED = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAY"
            "qfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {"age_ts": 1000000},
}
REDACTABLE_EVENT_SIGNED = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78Fu"
            "noD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}


def test_spec_minimal_event_signing_vector() -> None:
    # The appendix's events keep `origin` in their signed form, as the v10 redaction does.
    assert compute_content_hash(MINIMAL_EVENT) == MINIMAL_EVENT_SIGNED["hashes"]["sha256"]
    signed = hash_and_sign_event("10", MINIMAL_EVENT, "domain", "ed25519:1", SPEC_KEY)
    assert signed == MINIMAL_EVENT_SIGNED
    verify_event_signature("10", signed, "domain", "ed25519:1", SPEC_VERIFY_KEY)
    assert check_content_hash(signed)


def test_v11_no_longer_signs_origin() -> None:
    # v11 drops `origin` from the redacted form, so the v10 signature of the vector no longer
    # verifies, while the content hash (over the whole event) is the same.
    with pytest.raises(SignatureError):
        verify_event_signature("11", MINIMAL_EVENT_SIGNED, "domain", "ed25519:1", SPEC_VERIFY_KEY)
    assert check_content_hash(MINIMAL_EVENT_SIGNED)
    resigned = hash_and_sign_event("11", MINIMAL_EVENT, "domain", "ed25519:1", SPEC_KEY)
    assert resigned["hashes"] == MINIMAL_EVENT_SIGNED["hashes"]
    verify_event_signature("11", resigned, "domain", "ed25519:1", SPEC_VERIFY_KEY)
    origin_changed = {**resigned, "origin": "elsewhere"}
    verify_event_signature("11", origin_changed, "domain", "ed25519:1", SPEC_VERIFY_KEY)


def test_spec_redactable_event_vector_verifies_over_our_v10_redaction() -> None:
    # This vector is a room-v1-style event: it carries `event_id: "$0:domain"`, which its
    # hash and signature cover. v10/v11 PDUs have no event_id (our public functions ignore
    # one), so check the signature as the appendix made it: over our v10 redaction, which
    # keeps event_id (it is on the spec's list), empties the message content and keeps origin.
    redacted = redact("10", REDACTABLE_EVENT_SIGNED)
    assert redacted["content"] == {}
    assert "unsigned" not in redacted
    assert redacted["event_id"] == "$0:domain"
    key = nacl.signing.VerifyKey(bytes(SPEC_VERIFY_KEY))
    key.alg, key.version = "ed25519", "1"  # type: ignore[attr-defined]
    verify_signed_json(redacted, "domain", key)


# A real event from a room-version-5 room (jki.re), with the id gomatrixserverlib's
# eventversion_test.go expects in the v4+ format. Its redaction under v10 (create keeps
# `creator`; origin and prev_state kept) is the v4/v5 one, so the id must match.
JKI_CREATE = json.loads(
    '{"auth_events": [], "prev_events": [], "type": "m.room.create", "room_id":'
    ' "!uXDCzlYgCTHtiWCkEx:jki.re", "sender": "@erikj:jki.re", "content": {"room_version": "5",'
    ' "predecessor": {"room_id": "!gdRMqOrTFdOCYHNwOo:half-shot.uk", "event_id":'
    ' "$LP7ROBc4b+cMc1UE9haIz8q5AK2AIW4eJ90FfKLvyZI"}, "creator": "@erikj:jki.re"}, "depth": 1,'
    ' "prev_state": [], "state_key": "", "origin": "jki.re", "origin_server_ts": 1560284621137,'
    ' "hashes": {"sha256": "IX6zuNiJpJPNf70BLleL3HSCpjKeq9Uhu7uUpyDjBmc"}, "signatures":'
    ' {"jki.re": {"ed25519:auto": "O4IyFfF2PPtGp5uaDm8t57dZbdh8vc8Q64LgCwvzYRVItAMI0uisfiAFaxkV'
    'T7MRpzh6N2QNN5NMRXZKmgPYDA"}}, "unsigned": {"age": 1321650}}'
)


def test_real_event_id_and_content_hash() -> None:
    assert compute_event_id("10", JKI_CREATE) == "$RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438"
    assert parse_pdu("10", JKI_CREATE).event_id == "$RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438"
    assert check_content_hash(JKI_CREATE)
    # An event_id key in the input is ignored.
    assert compute_event_id("10", {**JKI_CREATE, "event_id": "$x"}) == compute_event_id(
        "10", JKI_CREATE
    )


def test_v11_event_id_follows_the_v11_redaction() -> None:
    # Worked from the v11 rules: keep the v11 top-level keys (no origin, no prev_state), all
    # of a create event's content; drop signatures and unsigned; sha256; URL-safe base64.
    kept = (
        "auth_events",
        "content",
        "depth",
        "hashes",
        "origin_server_ts",
        "prev_events",
        "room_id",
        "sender",
        "state_key",
        "type",
    )
    reduced = {k: JKI_CREATE[k] for k in kept}
    digest = hashlib.sha256(encode_canonical_json(reduced)).digest()
    expected = "$" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert compute_event_id("11", JKI_CREATE) == expected
    assert expected != compute_event_id("10", JKI_CREATE)


# ------------------------------------------------------------------ redaction tables


def _full(event_type: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": event_type,
        "room_id": "!r:s",
        "sender": "@u:s",
        "state_key": "",
        "content": content,
        "hashes": {"sha256": "h"},
        "signatures": {"s": {"ed25519:k": "sig"}},
        "depth": 4,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "origin_server_ts": 7,
        "origin": "s",
        "membership": "join",
        "prev_state": [],
        "unsigned": {"age": 1},
        "extra_key": True,
        **extra,
    }


ALWAYS_KEPT = {
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
}


@pytest.mark.parametrize(
    ("room_version", "kept"),
    [("10", ALWAYS_KEPT | {"origin", "membership", "prev_state"}), ("11", ALWAYS_KEPT)],
)
def test_top_level_keys_kept(room_version: str, kept: set[str]) -> None:
    pdu = _full("m.room.message", {"body": "hi"}, event_id="$e")
    assert set(redact(room_version, pdu)) == kept | {"event_id"}
    assert "event_id" not in redact(room_version, _full("m.room.message", {}))


PL_CONTENT = {
    "ban": 1,
    "events": {"a": 2},
    "events_default": 3,
    "kick": 4,
    "redact": 5,
    "state_default": 6,
    "users": {"@u:s": 7},
    "users_default": 8,
    "invite": 9,
    "notifications": {"room": 10},
    "historical": 11,
}
PL_V10 = {k: v for k, v in PL_CONTENT.items() if k not in ("invite", "notifications", "historical")}
MEMBER_CONTENT = {
    "membership": "invite",
    "join_authorised_via_users_server": "@v:s",
    "displayname": "U",
    "third_party_invite": {"display_name": "x", "signed": {"mxid": "@u:s", "token": "t"}},
}
CREATE_CONTENT = {"creator": "@u:s", "room_version": "11", "m.federate": False, "predecessor": {}}

CONTENT_CASES = [
    # (event type, content, v10 keeps, v11 keeps)
    (
        "m.room.member",
        MEMBER_CONTENT,
        {"membership": "invite", "join_authorised_via_users_server": "@v:s"},
        {
            "membership": "invite",
            "join_authorised_via_users_server": "@v:s",
            "third_party_invite": {"signed": {"mxid": "@u:s", "token": "t"}},
        },
    ),
    (
        "m.room.member",
        {"membership": "join", "third_party_invite": {"display_name": "x"}},
        {"membership": "join"},
        {"membership": "join", "third_party_invite": {}},
    ),
    (
        "m.room.member",
        {"membership": "join", "third_party_invite": "odd"},
        {"membership": "join"},
        {"membership": "join"},
    ),
    ("m.room.create", CREATE_CONTENT, {"creator": "@u:s"}, CREATE_CONTENT),
    (
        "m.room.join_rules",
        {"join_rule": "restricted", "allow": [], "other": 1},
        {"join_rule": "restricted", "allow": []},
        {"join_rule": "restricted", "allow": []},
    ),
    ("m.room.power_levels", PL_CONTENT, PL_V10, {**PL_V10, "invite": 9}),
    (
        "m.room.history_visibility",
        {"history_visibility": "shared", "x": 1},
        {"history_visibility": "shared"},
        {"history_visibility": "shared"},
    ),
    ("m.room.redaction", {"redacts": "$e", "reason": "spam"}, {}, {"redacts": "$e"}),
    ("m.room.message", {"body": "hi", "msgtype": "m.text"}, {}, {}),
    ("m.room.topic", {"topic": "t"}, {}, {}),
    ("m.room.aliases", {"aliases": ["#a:s"]}, {}, {}),
]


@pytest.mark.parametrize(("event_type", "content", "v10", "v11"), CONTENT_CASES)
def test_content_kept(
    event_type: str, content: dict[str, Any], v10: dict[str, Any], v11: dict[str, Any]
) -> None:
    pdu = _full(event_type, content)
    before = copy.deepcopy(pdu)
    assert redact("10", pdu)["content"] == v10
    assert redact("11", pdu)["content"] == v11
    assert pdu == before  # the input is not touched


def test_redact_refuses_unknown_versions_and_non_objects() -> None:
    with pytest.raises(UnsupportedRoomVersion):
        redact("12", _full("m.room.message", {}))
    with pytest.raises(UnsupportedRoomVersion):
        redact("9", _full("m.room.message", {}))
    with pytest.raises(InvalidPdu):
        redact("11", ["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(InvalidPdu):
        redact("11", {"type": "m.room.message", "content": "text"})


# ------------------------------------------------------------------ signatures, by hand


def test_sign_merges_into_existing_signatures() -> None:
    key = nacl.signing.SigningKey(bytes(range(32)))
    other = nacl.signing.SigningKey(bytes(32))
    first = hash_and_sign_event("11", MINIMAL_EVENT, "domain", "ed25519:1", SPEC_KEY)
    both = sign_event("11", first, "other.test", "ed25519:x", other)
    again = sign_event("11", both, "domain", "ed25519:2", key)
    assert set(again["signatures"]) == {"domain", "other.test"}
    assert set(again["signatures"]["domain"]) == {"ed25519:1", "ed25519:2"}
    for server, key_id, k in [
        ("domain", "ed25519:1", SPEC_KEY),
        ("other.test", "ed25519:x", other),
        ("domain", "ed25519:2", key),
    ]:
        verify_event_signature("11", again, server, key_id, k.verify_key)
    assert compute_event_id("11", again) == compute_event_id("11", first)


def test_verify_refuses_missing_wrong_and_malformed_signatures() -> None:
    signed = hash_and_sign_event("11", MINIMAL_EVENT, "domain", "ed25519:1", SPEC_KEY)
    wrong_key = nacl.signing.SigningKey(bytes(32)).verify_key
    with pytest.raises(SignatureError):
        verify_event_signature("11", signed, "domain", "ed25519:1", wrong_key)
    with pytest.raises(SignatureError):
        verify_event_signature("11", signed, "elsewhere", "ed25519:1", SPEC_VERIFY_KEY)
    with pytest.raises(SignatureError):
        verify_event_signature("11", signed, "domain", "ed25519:2", SPEC_VERIFY_KEY)
    garbled = copy.deepcopy(signed)
    garbled["signatures"]["domain"]["ed25519:1"] = "!!not base64!!"
    with pytest.raises(SignatureError):
        verify_event_signature("11", garbled, "domain", "ed25519:1", SPEC_VERIFY_KEY)
    with pytest.raises(SignatureError):
        verify_event_signature(
            "11", {**signed, "signatures": "x"}, "domain", "ed25519:1", SPEC_VERIFY_KEY
        )
    with pytest.raises(SignatureError):
        sign_event("11", MINIMAL_EVENT, "domain", "rsa:1", SPEC_KEY)
    with pytest.raises(InvalidPdu):
        sign_event("11", {**MINIMAL_EVENT, "depth": 1.5}, "domain", "ed25519:1", SPEC_KEY)


def test_content_hash_ignores_signatures_unsigned_and_hashes() -> None:
    base = compute_content_hash(MINIMAL_EVENT)
    assert compute_content_hash({**MINIMAL_EVENT, "signatures": {"x": {}}}) == base
    assert compute_content_hash({**MINIMAL_EVENT, "unsigned": {"age": 5}}) == base
    assert compute_content_hash({**MINIMAL_EVENT, "hashes": {"sha256": "zz"}}) == base
    assert compute_content_hash({**MINIMAL_EVENT, "event_id": "$x"}) == base
    assert compute_content_hash({**MINIMAL_EVENT, "depth": 4}) != base
    assert not check_content_hash({**MINIMAL_EVENT_SIGNED, "hashes": {}})
    assert not check_content_hash({**MINIMAL_EVENT_SIGNED, "hashes": {"sha256": "%%"}})
    assert not check_content_hash({**MINIMAL_EVENT_SIGNED, "hashes": "x"})
    with pytest.raises(InvalidPdu):
        compute_content_hash({**MINIMAL_EVENT, "depth": 2**60})


# ------------------------------------------------------------------ properties

EVENT_TYPES = [
    "m.room.message",
    "m.room.member",
    "m.room.power_levels",
    "m.room.create",
    "m.room.join_rules",
    "m.room.topic",
    "m.room.redaction",
    "m.room.history_visibility",
    "org.example.custom",
]
small_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8)
event_ids = st.builds(
    lambda b: "$" + base64.urlsafe_b64encode(b).decode().rstrip("="),
    st.binary(min_size=32, max_size=32),
)


@st.composite
def pdus(draw: st.DrawFn) -> dict[str, Any]:
    event_type = draw(st.sampled_from(EVENT_TYPES))
    content: dict[str, Any] = draw(st.dictionaries(small_text, matrix_values, max_size=4))
    if event_type == "m.room.member":
        content["membership"] = draw(st.sampled_from(["join", "leave", "invite", "ban"]))
    content["body"] = draw(small_text)  # a key no redaction keeps
    pdu: dict[str, Any] = {
        "type": event_type,
        "room_id": "!" + draw(small_text).replace(":", "") + ":a.test",
        "sender": "@" + draw(small_text).replace(":", "") + ":b.test",
        "origin_server_ts": draw(st.integers(0, 2**53 - 1)),
        "depth": draw(st.integers(1, 2**53 - 1)),
        "prev_events": draw(st.lists(event_ids, max_size=3)),
        "auth_events": draw(st.lists(event_ids, max_size=3)),
        "content": content,
    }
    if event_type != "m.room.message" and draw(st.booleans()):
        pdu["state_key"] = draw(st.text(max_size=5))
    return pdu


signing_keys = st.builds(nacl.signing.SigningKey, st.binary(min_size=32, max_size=32))
room_versions = st.sampled_from(["10", "11"])

PROPERTY_SETTINGS = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])


def _sign(rv: str, pdu: dict[str, Any], key: nacl.signing.SigningKey) -> dict[str, Any]:
    return hash_and_sign_event(rv, pdu, "b.test", "ed25519:k", key)


@PROPERTY_SETTINGS
@given(room_versions, pdus(), signing_keys, st.dictionaries(small_text, matrix_values, max_size=3))
def test_event_id_unchanged_by_redaction_signatures_and_unsigned(
    rv: str, pdu: dict[str, Any], key: nacl.signing.SigningKey, unsigned: dict[str, Any]
) -> None:
    signed = _sign(rv, pdu, key)
    event_id = compute_event_id(rv, signed)
    assert compute_event_id(rv, redact(rv, signed)) == event_id
    assert parse_pdu(rv, signed).event_id == event_id
    assert parse_pdu(rv, redact(rv, signed)).event_id == event_id
    assert parse_pdu(rv, signed).redacted().event_id == event_id
    cosigned = sign_event(rv, signed, "c.test", "ed25519:z", nacl.signing.SigningKey(bytes(32)))
    assert compute_event_id(rv, cosigned) == event_id
    assert compute_event_id(rv, {**signed, "unsigned": unsigned}) == event_id


@PROPERTY_SETTINGS
@given(room_versions, pdus(), signing_keys)
def test_sign_then_verify(rv: str, pdu: dict[str, Any], key: nacl.signing.SigningKey) -> None:
    signed = _sign(rv, pdu, key)
    verify_event_signature(rv, signed, "b.test", "ed25519:k", key.verify_key)
    verify_event_signature(rv, redact(rv, signed), "b.test", "ed25519:k", key.verify_key)
    assert check_content_hash(signed)
    event = parse_pdu(rv, signed)
    verify_event_signature(rv, event.to_pdu(), "b.test", "ed25519:k", key.verify_key)


def _kept_field_changes(pdu: dict[str, Any]) -> list[Callable[[dict[str, Any]], None]]:
    """Changes to fields every redaction keeps."""

    def bump(key: str) -> Callable[[dict[str, Any]], None]:
        return lambda p: p.__setitem__(key, p[key] + 1 if p[key] < 2**53 - 1 else p[key] - 1)

    changes = [
        bump("origin_server_ts"),
        bump("depth"),
        lambda p: p.__setitem__("sender", p["sender"] + "x"),
        lambda p: p.__setitem__("room_id", p["room_id"] + "x"),
        lambda p: p["prev_events"].append("$another"),
        lambda p: p["auth_events"].insert(0, "$another"),
        lambda p: p.__setitem__("type", p["type"] + ".x"),
        lambda p: p.__setitem__("state_key", p.get("state_key", "") + "x"),
        lambda p: p["hashes"].__setitem__(
            "sha256",
            "A" + p["hashes"]["sha256"][1:]
            if p["hashes"]["sha256"][0] != "A"
            else "B" + p["hashes"]["sha256"][1:],
        ),
    ]
    if pdu["type"] == "m.room.member":
        changes.append(lambda p: p["content"].__setitem__("membership", "knock"))
    return changes


@PROPERTY_SETTINGS
@given(room_versions, pdus(), signing_keys, st.data())
def test_changing_a_kept_field_breaks_the_signature(
    rv: str, pdu: dict[str, Any], key: nacl.signing.SigningKey, data: st.DataObject
) -> None:
    signed = _sign(rv, pdu, key)
    change = data.draw(st.sampled_from(_kept_field_changes(signed)))
    tampered = copy.deepcopy(signed)
    change(tampered)
    with pytest.raises(SignatureError):
        verify_event_signature(rv, tampered, "b.test", "ed25519:k", key.verify_key)


@PROPERTY_SETTINGS
@given(room_versions, pdus(), signing_keys, small_text)
def test_changing_a_removed_field_keeps_the_signature_but_breaks_the_hash(
    rv: str, pdu: dict[str, Any], key: nacl.signing.SigningKey, new_body: str
) -> None:
    signed = _sign(rv, pdu, key)
    tampered = copy.deepcopy(signed)
    tampered["content"]["body"] = signed["content"]["body"] + new_body
    assert not check_content_hash(tampered)
    if "body" in redact(rv, signed)["content"]:
        # v11 keeps all of m.room.create's content: there `body` is a kept field.
        assert rv == "11" and pdu["type"] == "m.room.create"
        with pytest.raises(SignatureError):
            verify_event_signature(rv, tampered, "b.test", "ed25519:k", key.verify_key)
        return
    verify_event_signature(rv, tampered, "b.test", "ed25519:k", key.verify_key)
    # The id covers the *claimed* hash, not the content itself: it does not move either. That
    # is why receipt checks the content hash (and redacts the event when it fails).
    assert compute_event_id(rv, tampered) == compute_event_id(rv, signed)

"""The authorisation rules of room versions 10 and 11, rule by rule (``rooms/v11.md``,
"Authorisation rules"; v10 differs only where a test says so). Each test names the rule it
expects to decide, or ``None`` for "allowed"."""

from __future__ import annotations

import base64
from typing import Any

import nacl.signing
import pytest
from signedjson.sign import sign_json

from cis.matrix import (
    AuthError,
    Event,
    MissingEvents,
    UnsupportedRoomVersion,
    build_event,
    check_auth,
    check_auth_events_selection,
    redaction_allowed,
)
from cis.matrix.auth import auth_types_for_event
from tests.matrix.roomkit import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    KEY_ID,
    ROOM_ID,
    ZARA,
    Branch,
    Room,
    new_room,
    signing_key,
    standard_room,
)


@pytest.fixture(params=["10", "11"])
def rv(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version


def verdict(branch: Branch, event: Event, **kw: Any) -> str | None:
    """The rule that rejects ``event`` against the branch's state, or None if allowed."""
    try:
        check_auth(branch.room.room_version, event, branch.auth_state(), **kw)
    except AuthError as e:
        return e.rule
    return None


def verdict_cited(
    branch: Branch, event: Event, rejected: frozenset[str] = frozenset()
) -> str | None:
    """The same against the auth events the event cites (receipt step 4)."""
    try:
        cited = [branch.room.events[e] for e in event.auth_events]
        selected = check_auth_events_selection(event, cited, rejected=rejected)
        check_auth(branch.room.room_version, event, selected)
    except AuthError as e:
        return e.rule
    return None


# ------------------------------------------------------------------ 1. m.room.create


def test_create_allowed_and_rule_1(rv: str) -> None:
    room = new_room(rv)
    creator_content = {"creator": ALICE} if rv == "10" else {}
    assert verdict(room, room.make(ALICE, "m.room.create", creator_content, "")) is None
    with_prev = room.make(ALICE, "m.room.create", creator_content, "", prev_events=["$x"])
    assert verdict(room, with_prev) == "1.1"
    other_server = room.make(CHARLIE, "m.room.create", {"creator": CHARLIE}, "")
    assert verdict(room, other_server) == "1.2"  # room id on a.test, sender on b.test
    for unknown in ("9", "12", 11, {"v": 11}, ["11"], None):
        event = room.make(ALICE, "m.room.create", {**creator_content, "room_version": unknown}, "")
        assert verdict(room, event) == "1.3"


def test_create_creator_property_by_version() -> None:
    v10, v11 = new_room("10"), new_room("11")
    assert v10.make(ALICE, "m.room.create", {}, "").content["creator"] == ALICE  # prepare_pdu
    partial = {
        "type": "m.room.create",
        "state_key": "",
        "room_id": ROOM_ID,
        "sender": ALICE,
        "content": {"room_version": "10"},
        "origin_server_ts": 1,
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
    }
    key = signing_key("a.test")
    assert verdict(v10, build_event("10", partial, "a.test", KEY_ID, key)) == "1.4"
    assert verdict(v11, build_event("11", partial, "a.test", KEY_ID, key)) is None  # the sender


# ------------------------------------------------------------------ 2. auth events cited


def test_auth_events_selection_rules(rv: str) -> None:
    room = standard_room(rv, levels={BOB: 50})
    events = room.room.events
    topic = room.make(BOB, "m.room.topic", {"topic": "t"}, "")
    assert verdict_cited(room, topic) is None
    assert set(check_auth_events_selection(topic, [events[e] for e in topic.auth_events])) == {
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.member", BOB),
    }

    old_bob = room.event(("m.room.member", BOB))
    room.send(BOB, "m.room.member", {"membership": "join", "displayname": "B"}, BOB)
    new_bob = room.event(("m.room.member", BOB))
    create = room.event(("m.room.create", ""))
    pl = room.event(("m.room.power_levels", ""))
    jr = room.event(("m.room.join_rules", ""))

    def citing(*cited: Event) -> Event:
        return room.make(
            BOB, "m.room.topic", {"topic": "t"}, "", auth_events=[e.event_id for e in cited]
        )

    assert verdict_cited(room, citing(create, pl, old_bob, new_bob)) == "2.1"
    assert verdict_cited(room, citing(create, pl, new_bob, jr)) == "2.2"  # join rules: not selected
    message = room.send(BOB, "m.room.message", {"body": "x"})
    assert verdict_cited(room, citing(create, pl, new_bob, message)) == "2.2"  # not state
    assert verdict_cited(room, citing(create, pl, new_bob), frozenset({pl.event_id})) == "2.3"
    assert verdict_cited(room, citing(pl, new_bob)) == "2.4"
    with pytest.raises(MissingEvents) as missing:
        check_auth_events_selection(citing(create, pl, new_bob), [create, pl])
    assert missing.value.event_ids == {new_bob.event_id}


def test_auth_events_from_another_room(rv: str) -> None:
    room = standard_room(rv)
    elsewhere = room.make(
        ALICE, "m.room.power_levels", {"users": {ALICE: 100}}, "", room_id="!other:a.test"
    )
    create = room.event(("m.room.create", ""))
    alice = room.event(("m.room.member", ALICE))
    topic = room.make(
        ALICE,
        "m.room.topic",
        {"topic": "t"},
        "",
        auth_events=[create.event_id, elsewhere.event_id, alice.event_id],
    )
    assert verdict_cited(room, topic) == "2.5"
    state = {**room.auth_state(), ("m.room.power_levels", ""): elsewhere}
    with pytest.raises(AuthError) as e:
        check_auth(rv, topic, state)
    assert e.value.rule == "2.5"


def test_no_create_in_state_and_unknown_versions(rv: str) -> None:
    room = standard_room(rv)
    topic = room.make(ALICE, "m.room.topic", {"topic": "t"}, "")
    state = {k: v for k, v in room.auth_state().items() if k != ("m.room.create", "")}
    with pytest.raises(AuthError) as e:
        check_auth(rv, topic, state)
    assert e.value.rule == "2.4"
    with pytest.raises(UnsupportedRoomVersion):
        check_auth("12", topic, room.auth_state())


# ------------------------------------------------------------------ 3. m.federate


def test_m_federate_false_refuses_other_servers(rv: str) -> None:
    room = new_room(rv, create_content={"m.federate": False})
    room.join_rule(ALICE, "public")
    assert verdict(room, room.make(BOB, "m.room.member", {"membership": "join"}, BOB)) is None
    charlie_join = room.make(CHARLIE, "m.room.member", {"membership": "join"}, CHARLIE)
    assert verdict(room, charlie_join) == "3"
    federating = new_room(rv, create_content={"m.federate": True})
    federating.join_rule(ALICE, "public")
    assert (
        verdict(
            federating, federating.make(CHARLIE, "m.room.member", {"membership": "join"}, CHARLIE)
        )
        is None
    )


# ------------------------------------------------------------------ 4. m.room.member


def test_member_needs_state_key_and_membership(rv: str) -> None:
    room = standard_room(rv)
    assert verdict(room, room.make(BOB, "m.room.member", {}, BOB)) == "4.1"
    assert verdict(room, room.make(BOB, "m.room.member", {"membership": "join"})) == "4.1"
    assert verdict(room, room.make(BOB, "m.room.member", {"membership": "dance"}, BOB)) == "4.8"
    assert verdict(room, room.make(BOB, "m.room.member", {"membership": 5}, BOB)) == "4.8"


def test_authorising_user_signature_rule_4_2(rv: str) -> None:
    room = standard_room(rv)
    join = room.make(
        EVELYN,
        "m.room.member",
        {"membership": "join", "join_authorised_via_users_server": ALICE},
        EVELYN,
    )
    assert verdict(room, join) == "4.2"  # no signature check supplied: fail closed
    assert verdict(room, join, is_signed_by=lambda server: False) == "4.2"
    asked: list[str] = []
    assert verdict(room, join, is_signed_by=lambda s: asked.append(s) or True) is None
    assert asked == ["a.test"]
    odd = room.make(
        EVELYN,
        "m.room.member",
        {"membership": "join", "join_authorised_via_users_server": "alice"},
        EVELYN,
    )
    assert verdict(room, odd, is_signed_by=lambda server: True) == "4.2"


def test_creator_first_join_rule_4_3_1() -> None:
    # v11: the creator is the create event's sender, whatever content.creator says.
    v11 = Branch(Room("11"))
    v11.send(ALICE, "m.room.create", {"creator": BOB}, "")
    assert verdict(v11, v11.make(ALICE, "m.room.member", {"membership": "join"}, ALICE)) is None
    assert verdict(v11, v11.make(BOB, "m.room.member", {"membership": "join"}, BOB)) == "4.3.4"
    # v10: the creator is content.creator.
    v10 = Branch(Room("10"))
    v10.send(ALICE, "m.room.create", {"creator": BOB}, "")
    assert verdict(v10, v10.make(BOB, "m.room.member", {"membership": "join"}, BOB)) is None
    assert verdict(v10, v10.make(ALICE, "m.room.member", {"membership": "join"}, ALICE)) == "4.3.4"
    # Only while the create event is the only prev event.
    later = v11.fork()
    later.send(ALICE, "m.room.member", {"membership": "join"}, ALICE)
    rejoin = later.make(ALICE, "m.room.member", {"membership": "join", "displayname": "A"}, ALICE)
    assert verdict(later, rejoin) is None  # allowed, but by 4.3.4 (already joined), not 4.3.1


def test_join_rules(rv: str) -> None:
    room = standard_room(rv, members=[BOB])
    assert (
        verdict(room, room.make(BOB, "m.room.member", {"membership": "join"}, CHARLIE)) == "4.3.2"
    )
    assert (
        verdict(room, room.make(CHARLIE, "m.room.member", {"membership": "join"}, CHARLIE)) is None
    )

    banned = room.fork()
    banned.member(ALICE, CHARLIE, "ban")
    assert (
        verdict(banned, banned.make(CHARLIE, "m.room.member", {"membership": "join"}, CHARLIE))
        == "4.3.3"
    )

    for rule in ("invite", "knock"):
        closed = room.fork()
        closed.join_rule(ALICE, rule)
        join = closed.make(CHARLIE, "m.room.member", {"membership": "join"}, CHARLIE)
        assert verdict(closed, join) == "4.3.4"
        closed.member(ALICE, CHARLIE, "invite")
        assert (
            verdict(closed, closed.make(CHARLIE, "m.room.member", {"membership": "join"}, CHARLIE))
            is None
        )

    for rule, expected in (("private", "4.3.7"), ("secret", "4.3.7"), ("public", None)):
        other = room.fork()
        other.join_rule(ALICE, rule)
        join = other.make(CHARLIE, "m.room.member", {"membership": "join"}, CHARLIE)
        assert verdict(other, join) == expected


def test_no_join_rules_event_means_invite(rv: str) -> None:
    room = new_room(rv)
    join = room.make(BOB, "m.room.member", {"membership": "join"}, BOB)
    assert verdict(room, join) == "4.3.4"
    room.member(ALICE, BOB, "invite")
    assert verdict(room, room.make(BOB, "m.room.member", {"membership": "join"}, BOB)) is None


def test_restricted_joins(rv: str) -> None:
    for rule in ("restricted", "knock_restricted"):
        room = standard_room(rv, levels={BOB: 0}, pl_content={"invite": 10}, members=[BOB])
        room.join_rule(ALICE, rule)
        signed = {"is_signed_by": lambda server: True}

        def join(via: str | None, who: str = EVELYN, r: Branch = room) -> Event:
            content: dict[str, Any] = {"membership": "join"}
            if via is not None:
                content["join_authorised_via_users_server"] = via
            return r.make(who, "m.room.member", content, who)

        assert verdict(room, join(None)) == "4.3.5"
        assert verdict(room, join(ALICE), **signed) is None
        assert verdict(room, join(BOB), **signed) == "4.3.5"  # Bob is below the invite level
        assert verdict(room, join(ZARA), **signed) == "4.3.5"  # Zara is not joined
        invited = room.fork()
        invited.member(ALICE, EVELYN, "invite")
        assert verdict(invited, join(None, r=invited)) is None


def test_invites(rv: str) -> None:
    room = standard_room(rv, levels={BOB: 0}, pl_content={"invite": 10}, members=[BOB, CHARLIE])
    assert (
        verdict(room, room.make(ALICE, "m.room.member", {"membership": "invite"}, EVELYN)) is None
    )
    assert (
        verdict(room, room.make(BOB, "m.room.member", {"membership": "invite"}, EVELYN)) == "4.4.5"
    )
    assert (
        verdict(room, room.make(ZARA, "m.room.member", {"membership": "invite"}, EVELYN)) == "4.4.2"
    )
    assert (
        verdict(room, room.make(ALICE, "m.room.member", {"membership": "invite"}, BOB)) == "4.4.3"
    )
    room.member(ALICE, CHARLIE, "ban")
    assert (
        verdict(room, room.make(ALICE, "m.room.member", {"membership": "invite"}, CHARLIE))
        == "4.4.3"
    )


def test_leaving_and_kicking(rv: str) -> None:
    room = standard_room(
        rv, levels={BOB: 60}, pl_content={"ban": 75, "kick": 50}, members=[BOB, CHARLIE]
    )

    def change(sender: str, target: str, membership: str, r: Branch = room) -> str | None:
        return verdict(r, r.make(sender, "m.room.member", {"membership": membership}, target))

    assert change(CHARLIE, CHARLIE, "leave") is None
    assert change(EVELYN, EVELYN, "leave") == "4.5.1"  # never joined
    assert change(BOB, CHARLIE, "leave") is None  # kick: 60 ≥ 50 and 0 < 60
    assert change(CHARLIE, BOB, "leave") == "4.5.5"
    assert change(BOB, ALICE, "leave") == "4.5.5"
    assert change(ZARA, CHARLIE, "leave") == "4.5.2"
    invited = room.fork()
    invited.member(ALICE, EVELYN, "invite")
    assert change(EVELYN, EVELYN, "leave", invited) is None  # rejecting an invite
    banned = room.fork()
    banned.member(ALICE, CHARLIE, "ban")
    assert change(CHARLIE, CHARLIE, "leave", banned) == "4.5.1"
    assert change(BOB, CHARLIE, "leave", banned) == "4.5.3"  # unban needs the ban level
    assert change(ALICE, CHARLIE, "leave", banned) is None
    equal = standard_room(rv, levels={BOB: 60, CHARLIE: 60}, members=[BOB, CHARLIE])
    assert change(BOB, CHARLIE, "leave", equal) == "4.5.5"


def test_bans(rv: str) -> None:
    room = standard_room(rv, levels={BOB: 50, CHARLIE: 50}, members=[BOB, CHARLIE, EVELYN])

    def ban(sender: str, target: str) -> str | None:
        return verdict(room, room.make(sender, "m.room.member", {"membership": "ban"}, target))

    assert ban(BOB, EVELYN) is None
    assert ban(BOB, ZARA) is None  # never joined: still bannable
    assert ban(BOB, CHARLIE) == "4.6.3"  # equal power
    assert ban(EVELYN, BOB) == "4.6.3"
    assert ban(ZARA, EVELYN) == "4.6.1"


def test_knocks(rv: str) -> None:
    room = standard_room(rv, members=[BOB])
    knock = room.make(EVELYN, "m.room.member", {"membership": "knock"}, EVELYN)
    assert verdict(room, knock) == "4.7.1"  # public room
    for rule in ("knock", "knock_restricted"):
        knocking = room.fork()
        knocking.join_rule(ALICE, rule)

        def knock_by(sender: str, target: str, r: Branch = knocking) -> str | None:
            return verdict(r, r.make(sender, "m.room.member", {"membership": "knock"}, target))

        assert knock_by(EVELYN, EVELYN) is None
        assert knock_by(ALICE, EVELYN) == "4.7.2"
        assert knock_by(BOB, BOB) == "4.7.4"  # already joined
        knocking.member(ALICE, ZARA, "ban")
        assert knock_by(ZARA, ZARA) == "4.7.4"
        knocked = knocking.fork()
        knocked.member(EVELYN, EVELYN, "knock")
        leave = knocked.make(EVELYN, "m.room.member", {"membership": "leave"}, EVELYN)
        assert verdict(knocked, leave) is None  # withdrawing a knock


# ------------------------------------------------------------------ third-party invites


IDENTITY_KEY = nacl.signing.SigningKey(bytes([7]) * 32)


def _signed_block(mxid: str, token: str, key: nacl.signing.SigningKey = IDENTITY_KEY) -> Any:
    key.alg, key.version = "ed25519", "0"  # type: ignore[attr-defined]
    return sign_json({"mxid": mxid, "token": token, "sender": ALICE}, "id.test", key)


def _public_key(key: nacl.signing.SigningKey = IDENTITY_KEY) -> str:
    return base64.b64encode(bytes(key.verify_key)).decode().rstrip("=")


def test_third_party_invites(rv: str) -> None:
    room = standard_room(rv, levels={BOB: 50}, members=[BOB])
    room.send(
        ALICE,
        "m.room.third_party_invite",
        {"display_name": "e…", "public_key": _public_key()},
        "tok",
    )

    def invite(sender: str, tpi: Any, target: str = EVELYN, r: Branch = room) -> str | None:
        content = {"membership": "invite", "third_party_invite": tpi}
        return verdict(r, r.make(sender, "m.room.member", content, target))

    good = {"display_name": "e…", "signed": _signed_block(EVELYN, "tok")}
    assert invite(ALICE, good) is None
    assert invite(ALICE, {"display_name": "e…"}) == "4.4.1.2"
    no_token = {"signed": {k: v for k, v in good["signed"].items() if k != "token"}}
    assert invite(ALICE, no_token) == "4.4.1.3"
    assert invite(ALICE, good, target=ZARA) == "4.4.1.4"
    assert invite(ALICE, {"signed": _signed_block(EVELYN, "other")}) == "4.4.1.5"
    assert invite(BOB, good) == "4.4.1.6"  # the third-party invite was Alice's
    forged = {"signed": _signed_block(EVELYN, "tok", nacl.signing.SigningKey(bytes(32)))}
    assert invite(ALICE, forged) == "4.4.1.8"
    tampered = {"signed": {**good["signed"], "sender": BOB}}
    assert invite(ALICE, tampered) == "4.4.1.8"
    banned = room.fork()
    banned.member(ALICE, EVELYN, "ban")
    assert invite(ALICE, good, r=banned) == "4.4.1.1"

    listed = room.fork()
    listed.send(
        ALICE,
        "m.room.third_party_invite",
        {"public_keys": [{"public_key": "!!"}, {"public_key": _public_key()}]},
        "tok",
    )
    assert invite(ALICE, good, r=listed) is None
    # The selection names the third-party invite by token.
    event = room.make(
        ALICE, "m.room.member", {"membership": "invite", "third_party_invite": good}, EVELYN
    )
    assert ("m.room.third_party_invite", "tok") in auth_types_for_event(event)
    assert verdict_cited(room, event) is None


def test_sending_a_third_party_invite_needs_the_invite_level(rv: str) -> None:
    room = standard_room(rv, pl_content={"invite": 20}, levels={BOB: 10}, members=[BOB])
    make = room.make
    assert verdict(room, make(ALICE, "m.room.third_party_invite", {}, "t")) is None
    assert verdict(room, make(BOB, "m.room.third_party_invite", {}, "t")) == "6"


# ------------------------------------------------------------------ 5, 7, 8: everything else


def test_sender_must_be_joined(rv: str) -> None:
    room = standard_room(rv, members=[BOB])
    assert verdict(room, room.make(ZARA, "m.room.message", {"body": "hi"})) == "5"
    room.member(BOB, BOB, "leave")
    assert verdict(room, room.make(BOB, "m.room.message", {"body": "hi"})) == "5"
    invited = room.fork()
    invited.member(ALICE, EVELYN, "invite")
    assert verdict(invited, invited.make(EVELYN, "m.room.message", {"body": "hi"})) == "5"


def test_required_power_levels(rv: str) -> None:
    room = standard_room(rv, levels={BOB: 10}, members=[BOB])
    assert verdict(room, room.make(BOB, "m.room.message", {"body": "hi"})) is None
    assert verdict(room, room.make(BOB, "m.room.topic", {"topic": "t"}, "")) == "7"  # 50
    assert verdict(room, room.make(ALICE, "m.room.topic", {"topic": "t"}, "")) is None
    strict = standard_room(
        rv,
        levels={BOB: 10},
        members=[BOB],
        pl_content={
            "events_default": 20,
            "state_default": 5,
            "events": {"m.room.topic": 10, "m.room.name": 90},
        },
    )
    assert verdict(strict, strict.make(BOB, "m.room.message", {"body": "hi"})) == "7"
    assert verdict(strict, strict.make(BOB, "m.room.topic", {"topic": "t"}, "")) is None
    assert verdict(strict, strict.make(BOB, "m.room.name", {"name": "n"}, "")) == "7"
    assert verdict(strict, strict.make(BOB, "org.example.state", {}, "x")) is None


def test_defaults_without_power_levels_event(rv: str) -> None:
    room = new_room(rv)
    room.join_rule(ALICE, "public")  # the creator has 100
    room.join(BOB)
    assert verdict(room, room.make(BOB, "m.room.message", {"body": "hi"})) is None
    assert verdict(room, room.make(BOB, "m.room.topic", {"topic": "t"}, "")) == "7"
    assert verdict(room, room.make(ALICE, "m.room.topic", {"topic": "t"}, "")) is None
    assert verdict(room, room.make(BOB, "m.room.member", {"membership": "ban"}, ALICE)) == "4.6.3"


def test_user_id_state_keys(rv: str) -> None:
    room = standard_room(rv, pl_content={"state_default": 0}, members=[BOB])
    assert verdict(room, room.make(ALICE, "org.example.profile", {}, BOB)) == "8"
    assert verdict(room, room.make(BOB, "org.example.profile", {}, BOB)) is None
    assert verdict(room, room.make(BOB, "org.example.profile", {}, "bob")) is None


# ------------------------------------------------------------------ 9. m.room.power_levels


def _pl(room: Branch, sender: str, content: dict[str, Any]) -> str | None:
    return verdict(room, room.make(sender, "m.room.power_levels", content, ""))


BASE_PL = {
    "users": {ALICE: 100, BOB: 50, CHARLIE: 50},
    "kick": 75,
    "events": {"m.room.name": 75, "m.room.topic": 10},
}


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"ban": "50"}, "9.1"),
        ({"ban": True}, "9.1"),
        ({"users_default": [1]}, "9.1"),
        ({"events": {"m.room.topic": "10"}}, "9.2"),
        ({"events": []}, "9.2"),
        ({"notifications": {"room": "1"}}, "9.2"),
        ({"users": {ALICE: 100, "bob": 0}}, "9.3"),
        ({"users": {ALICE: 100, BOB: "50"}}, "9.3"),
        ({"users": [ALICE]}, "9.3"),
        ({"ban": 40}, None),  # added: new 40 ≤ 50
        ({"redact": 60}, "9.5.2"),  # added above Bob's level
        ({"kick": 40}, "9.5.1"),  # changed from 75, above Bob's level
        ({"kick": None}, "9.5.1"),  # removed (None = delete the key)
        ({"events": {"m.room.name": 75, "m.room.topic": 50}}, None),
        ({"events": {"m.room.name": 50, "m.room.topic": 10}}, "9.6"),
        ({"events": {"m.room.topic": 10}}, "9.6"),  # removed
        ({"events": {**BASE_PL["events"], "x": 60}}, "9.7"),
        ({"notifications": {"room": 60}}, "9.7"),
        ({"users": {ALICE: 100, BOB: 50, CHARLIE: 0}}, "9.8"),  # equal to Bob's own level
        ({"users": {ALICE: 100, BOB: 50}}, "9.8"),  # removes Charlie (50)
        ({"users": {ALICE: 0, BOB: 50, CHARLIE: 50}}, "9.8"),
        ({"users": {ALICE: 100, BOB: 0, CHARLIE: 50}}, None),  # his own entry
        ({"users": {ALICE: 100, BOB: 60, CHARLIE: 50}}, "9.9"),
        ({"users": {ALICE: 100, BOB: 50, CHARLIE: 50, EVELYN: 50}}, None),
        ({"users": {ALICE: 100, BOB: 50, CHARLIE: 50, EVELYN: 51}}, "9.9"),
        ({}, None),  # no change at all
    ],
)
def test_power_level_changes_by_a_moderator(rv: str, change: dict[str, Any], rule: str) -> None:
    room = standard_room(
        rv,
        levels={BOB: 50, CHARLIE: 50},
        members=[BOB, CHARLIE],
        pl_content={k: v for k, v in BASE_PL.items() if k != "users"},
    )
    content = {**BASE_PL, **change}
    content = {k: v for k, v in content.items() if v is not None}
    assert _pl(room, BOB, content) == rule


def test_the_first_power_levels_event_needs_only_valid_types(rv: str) -> None:
    room = new_room(rv)
    assert _pl(room, ALICE, {"users": {ALICE: 100, BOB: 9000}, "ban": 1}) is None
    assert _pl(room, ALICE, {"users": {ALICE: "100"}}) == "9.3"


# ------------------------------------------------------------------ redactions


def test_redactions_pass_auth_but_are_applied_by_power_or_server(rv: str) -> None:
    room = standard_room(rv, levels={BOB: 0, CHARLIE: 0}, members=[BOB, CHARLIE, ZARA])
    bobs = room.send(BOB, "m.room.message", {"body": "mine"})
    zaras = room.send(ZARA, "m.room.message", {"body": "zara's"})  # b.test, like Charlie

    def redaction(sender: str, target: Event) -> Event:
        return room.make(sender, "m.room.redaction", {}, redacts=target.event_id)

    for sender, target, applied in [
        (BOB, bobs, True),  # own event
        (ALICE, bobs, True),  # 100 ≥ redact 50
        (CHARLIE, bobs, False),  # other server, power 0
        (CHARLIE, zaras, True),  # same server as the original's sender (b.test)
        (BOB, zaras, False),
    ]:
        event = redaction(sender, target)
        assert event.redacts == target.event_id
        assert verdict(room, event) is None  # the auth rules never check the redact level
        assert redaction_allowed(rv, event, target, room.auth_state()) is applied
    assert not redaction_allowed(rv, redaction(ALICE, bobs), zaras, room.auth_state())
    assert not redaction_allowed(rv, bobs, bobs, room.auth_state())


def test_redaction_events_can_need_power(rv: str) -> None:
    room = standard_room(
        rv, levels={BOB: 0}, members=[BOB], pl_content={"events": {"m.room.redaction": 10}}
    )
    message = room.send(BOB, "m.room.message", {"body": "x"})
    event = room.make(BOB, "m.room.redaction", {}, redacts=message.event_id)
    assert verdict(room, event) == "7"


# ------------------------------------------------------------------ the three checks on receipt


def test_soft_failure_against_current_state(rv: str) -> None:
    # server-server API, "Soft failure": B bans X; C, X's topic change from before the ban,
    # passes against its auth events and the state before it, fails against current state.
    base = standard_room(rv, levels={BOB: 50}, members=[BOB])
    banned = base.fork()
    banned.member(ALICE, BOB, "ban")
    evading = base.fork()
    topic = evading.make(BOB, "m.room.topic", {"topic": "evading"}, "")
    assert verdict_cited(evading, topic) is None  # step 4: auth events
    assert verdict(evading, topic) is None  # step 5: state before the event
    assert verdict(banned, topic) == "5"  # step 6: current state → soft-fail

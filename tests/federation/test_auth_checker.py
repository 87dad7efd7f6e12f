"""``AuthChecker`` (receipt's auth rules with remembered outcomes) gives what ``check_auth``
gives, on hits as on misses, across the inputs its key holds: the create event (and its
``m.federate``), the power levels, the sender's membership, the type and the sender."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from cis.handlers.federation_auth import AuthChecker
from cis.matrix import DEFAULT_ROOM_VERSION, AuthError, Event, check_auth
from cis.matrix.events import EventLike, StateKey
from tests.factories import DEFAULT_SENDER, make_event

ROOM = "!auth:alpha.cis.local"
ALICE = DEFAULT_SENDER
BOB = "@bob:alpha.cis.local"
EVE = "@eve:beta.cis.local"


def outcome(check: object, event: Event, state: Mapping[StateKey, EventLike]) -> str | None:
    try:
        check(DEFAULT_ROOM_VERSION, event, state)  # type: ignore[operator]
    except AuthError as exc:
        return exc.rule
    return None


def member(user: str, membership: str, create: Event) -> Event:
    return make_event(
        ROOM, type="m.room.member", state_key=user, sender=user,
        content={"membership": membership}, auth_events=[create.event_id], depth=2,
    )  # fmt: skip


def test_remembered_outcomes_are_check_auths() -> None:
    create = make_event(ROOM, type="m.room.create", state_key="", content={})
    private = make_event(ROOM, type="m.room.create", state_key="", content={"m.federate": False})
    open_levels = make_event(
        ROOM, type="m.room.power_levels", state_key="", depth=3,
        content={"users": {ALICE: 100}, "events": {"m.room.special": 50}},
    )  # fmt: skip
    strict_levels = make_event(
        ROOM, type="m.room.power_levels", state_key="", depth=4,
        content={"users": {ALICE: 100}, "events_default": 60},
    )  # fmt: skip
    messages = [
        make_event(ROOM, type=kind, sender=sender, content={"body": f"{kind} {sender}"})
        for kind in ("m.room.message", "m.room.special", "m.reaction")
        for sender in (ALICE, BOB, EVE)
    ]
    checker = AuthChecker()
    expected_refusals: set[str] = set()
    for _round in range(2):  # misses first, then the same inputs as hits
        for room_create, levels, membership in itertools.product(
            (create, private), (None, open_levels, strict_levels), ("join", "leave", None)
        ):
            for message in messages:
                state: dict[StateKey, EventLike] = {("m.room.create", ""): room_create}
                if levels is not None:
                    state[("m.room.power_levels", "")] = levels
                if membership is not None:
                    state[("m.room.member", message.sender)] = member(
                        message.sender, membership, room_create
                    )
                want = outcome(check_auth, message, state)
                assert outcome(checker.check, message, state) == want, (message.type, state)
                if want is not None:
                    expected_refusals.add(want)
    assert {"3", "5", "7"} <= expected_refusals  # federate, not joined, power level
    assert checker.hits > 0
    assert checker.misses == checker.hits  # every input seen twice: once each way


def test_state_and_membership_events_are_always_checked_afresh() -> None:
    create = make_event(ROOM, type="m.room.create", state_key="", content={})
    joined = member(ALICE, "join", create)
    state: dict[StateKey, EventLike] = {
        ("m.room.create", ""): create,
        ("m.room.member", ALICE): joined,
    }
    topic = make_event(ROOM, type="m.room.topic", state_key="", content={"topic": "t"})
    someone_elses = make_event(ROOM, type="m.room.topic", state_key=BOB, content={"topic": "t"})
    join = member(BOB, "join", create)
    checker = AuthChecker()
    for _round in range(2):
        for event in (topic, someone_elses, join):
            assert outcome(checker.check, event, state) == outcome(check_auth, event, state)
    assert outcome(check_auth, someone_elses, state) == "8"
    assert checker.hits == checker.misses == 0


def test_the_remembered_outcomes_are_bounded() -> None:
    create = make_event(ROOM, type="m.room.create", state_key="", content={})
    checker = AuthChecker(max_remembered=3)
    senders = [f"@u{i}:alpha.cis.local" for i in range(5)]
    for sender in senders:
        event = make_event(ROOM, sender=sender, content={"body": sender})
        state: dict[StateKey, EventLike] = {
            ("m.room.create", ""): create,
            ("m.room.member", sender): member(sender, "join", create),
        }
        assert outcome(checker.check, event, state) is None
    assert len(checker._outcomes) == 3

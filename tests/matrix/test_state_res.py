"""State resolution v2 (``rooms/fragments/v2-state-res.md``).

Each scenario below writes down, before running the code, the expected outcome and how the
spec's algorithm reaches it. Names: U is the unconflicted state map, "full" the full conflicted
set; the numbers of the steps are those of the spec's "Algorithm" section. Every scenario
starts from ``standard_room``: CREATE, Alice's join (IMA), power levels PL0 (Alice 100 and the
levels given), join rules ``public`` (IJR), then the members' joins, with timestamps 1, 2, 3…
Auth events are chosen by the auth events selection from each branch's state, and every
event is checked against the auth rules on its own branch before it is used.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cis.ids import EventId
from cis.matrix import AuthError, Event, InvalidPdu, MissingEvents, StateKey, resolve_state
from tests.matrix.roomkit import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    ZARA,
    Branch,
    as_pdu_dicts,
    standard_room,
)

PL: StateKey = ("m.room.power_levels", "")
JR: StateKey = ("m.room.join_rules", "")
TOPIC: StateKey = ("m.room.topic", "")


def member(user: str) -> StateKey:
    return ("m.room.member", user)


def resolve(branch: Branch, *states: Mapping[StateKey, str], rejected: Any = ()) -> dict[Any, Any]:
    """Resolve with Event objects and with PDU dicts; both must agree."""
    events = branch.room.events
    rv = branch.room.room_version
    as_events = resolve_state(rv, list(states), events, rejected)
    as_dicts = resolve_state(rv, list(states), as_pdu_dicts(events), rejected)
    assert as_events == as_dicts
    return as_events


@pytest.fixture(params=["10", "11"])
def rv(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version


def test_concurrent_power_level_change_against_a_ban(rv: str) -> None:
    """Fork A: Alice (100) bans Bob (50) at ts 11. Fork B: Bob changes the power levels
    (gives Charlie 50) at ts 10.

    Conflicted: Bob's membership (IMB / MB) and the power levels (PL0 / PB). Auth difference
    {MB, PB}; full = {PL0, PB, IMB, MB}. Power events: PL0, PB, and MB (a ban by another
    user); IMB joins step 1 as an auth event of MB and PB inside the full set.

    Reverse topological power ordering: PL0 (no parents in the set), then IMB, then MB before
    PB: MB's sender has 100 and PB's 50 by their own auth events (PL0) — the power level
    decides before the timestamp, which would have put PB first.

    Iterative auth checks from U: PL0 passes (no earlier PL), IMB passes (public room), MB
    passes (100 ≥ ban 50, Bob 50 < 100), PB fails rule 5: Bob is banned in the partial state.
    No other events remain. Result: power levels PL0, Bob banned (MB).
    """
    base = standard_room(rv, levels={BOB: 50}, members=[BOB, CHARLIE])
    a, b = base.fork(), base.fork()
    mb = a.member(ALICE, BOB, "ban", ts=11)
    pb = b.power_levels(BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}, ts=10)
    pl0 = base.event(PL)

    resolved = resolve(base, a.state, b.state)
    assert resolved[PL] == pl0.event_id
    assert resolved[member(BOB)] == mb.event_id
    assert pb.event_id not in resolved.values()
    assert resolved == {**base.state, member(BOB): mb.event_id}


def test_join_rule_change_racing_a_join(rv: str) -> None:
    """Fork A: Alice makes the room invite-only (JR_I, ts 10). Fork B: Evelyn joins while it
    is still public (ME, ts 9).

    Conflicted: the join rules (IJR / JR_I) and Evelyn's membership (only in B). Auth
    difference {JR_I, ME}; full = {IJR, JR_I, ME}. Power events: IJR and JR_I; ME (a join) is
    not one. Both are Alice's (100), so the timestamp orders them: IJR (4), JR_I (10).

    Step 2 applies IJR then JR_I: join rules ``invite``. Step 3: ME, the only other event.
    Step 4: ME fails rule 4.3.4 (join rule ``invite``, Evelyn neither invited nor joined).
    Step 5 changes nothing (Evelyn's key is conflicted). Result: invite-only, no Evelyn —
    although her join came first in time.
    """
    base = standard_room(rv, levels={}, members=[BOB])
    a, b = base.fork(), base.fork()
    jr_invite = a.join_rule(ALICE, "invite", ts=10)
    b.join(EVELYN, ts=9)

    resolved = resolve(base, a.state, b.state)
    assert resolved[JR] == jr_invite.event_id
    assert member(EVELYN) not in resolved
    assert resolved == {**base.state, JR: jr_invite.event_id}


def test_topic_by_a_user_demoted_concurrently(rv: str) -> None:
    """Base adds a topic T0 by Alice (ts 6). Fork A: Alice demotes Bob from 50 to 0 (PA,
    ts 10). Fork B: Bob, still at 50, sets the topic (TB, ts 11).

    Conflicted: power levels (PA / PL0) and topic (T0 / TB). Auth difference {PA, T0, TB}; full
    = {PL0, PA, T0, TB}. Power events PL0 and PA, with PA → PL0 as auth edge: order PL0, PA.
    Step 2: both pass (Alice at 100 changes Bob's 50, below her), power levels PA.

    Step 3: mainline of PA is [PA, PL0]. T0 and TB both cite PL0, so they share a mainline
    position; the timestamp orders T0 (6) before TB (11). Step 4: T0 passes (Alice 100 ≥ 50);
    TB fails rule 7: under PA Bob has 0 and topics need ``state_default`` 50. Result: PA and
    the old topic T0, although TB is newer.
    """
    base = standard_room(rv, levels={BOB: 50}, members=[BOB])
    t0 = base.topic(ALICE, "before", ts=6)
    a, b = base.fork(), base.fork()
    pa = a.power_levels(ALICE, {ALICE: 100, BOB: 0}, ts=10)
    tb = b.topic(BOB, "mine", ts=11)

    resolved = resolve(base, a.state, b.state)
    assert resolved[PL] == pa.event_id
    assert resolved[TOPIC] == t0.event_id
    assert tb.event_id not in resolved.values()


def test_mainline_ordering_decides_between_two_topics(rv: str) -> None:
    """Fork A: Alice changes the power levels (PA1, ts 10; Bob stays at 50), then sets a topic
    TA (ts 11), which cites PA1. Fork B: Bob sets a topic TB (ts 20), citing PL0.

    Full = {PL0, PA1, TA, TB}. Power events PL0 → PA1 resolve to PA1. Mainline of PA1 is
    [PA1, PL0]: TA's power levels auth event is PA1 (position 0), TB's is PL0 (position 1).
    The larger position sorts first, so TB is applied before TA; both pass (Bob keeps 50 under
    PA1). TA, applied last, wins — although TB has the later timestamp.
    """
    base = standard_room(rv, levels={BOB: 50}, members=[BOB])
    a, b = base.fork(), base.fork()
    pa1 = a.power_levels(ALICE, {ALICE: 100, BOB: 50, CHARLIE: 10}, ts=10)
    ta = a.topic(ALICE, "from A", ts=11)
    tb = b.topic(BOB, "from B", ts=20)
    assert pa1.event_id in ta.auth_events
    assert base.event(PL).event_id in tb.auth_events

    resolved = resolve(base, a.state, b.state)
    assert resolved[PL] == pa1.event_id
    assert resolved[TOPIC] == ta.event_id
    # And the other way round, the result is the same: order of state sets is irrelevant.
    assert resolve(base, b.state, a.state) == resolved


def test_ban_is_prioritised_over_a_banned_users_topic(rv: str) -> None:
    """The server-server API's soft-failure example: B bans X (Bob); C is X's topic change
    from before the ban. "Latter versions [of the algorithm] prioritise the ban."

    Full = {MB, IMB, TC}. Power event MB (with IMB, its auth event in the set): order IMB, MB;
    both pass, Bob is banned. Step 3: TC. Step 4: TC fails rule 5 (Bob is banned).
    """
    base = standard_room(rv, levels={BOB: 50}, members=[BOB])
    banned, evading = base.fork(), base.fork()
    mb = banned.member(ALICE, BOB, "ban", ts=10)
    evading.topic(BOB, "evading", ts=11)

    resolved = resolve(base, banned.state, evading.state)
    assert resolved[member(BOB)] == mb.event_id
    assert TOPIC not in resolved


def test_rejected_auth_events_are_not_used(rv: str) -> None:
    """Bob joins (R) and sets two topics T1 (ts 10) and T2 (ts 11) on two branches after R.
    The state sets hold the base state plus one topic each, without Bob's membership.

    Full = {T1, T2} (R is in both auth chains). No power events; mainline positions tie, so
    T1 then T2. Bob's membership is not in the partial state, so each check falls back to the
    event's own auth events. If R is known to be rejected it is not used ("Rejected auth events
    are deliberately excluded"): Bob is not joined, both fail rule 5, there is no topic. If it is
    not, both pass and T2, applied last, is the topic.
    """
    base = standard_room(rv, levels={BOB: 50}, members=[])
    joined = base.fork()
    r = joined.join(BOB)
    one, two = joined.fork(), joined.fork()
    t1 = one.topic(BOB, "one", ts=10)
    t2 = two.topic(BOB, "two", ts=11)
    s1 = {**base.state, TOPIC: t1.event_id}
    s2 = {**base.state, TOPIC: t2.event_id}

    assert resolve(base, s1, s2)[TOPIC] == t2.event_id
    assert TOPIC not in resolve(base, s1, s2, rejected={r.event_id})


def test_rejected_events_are_rechecked_as_usual(rv: str) -> None:
    """A rejected event in the conflicted set is handled "as usual" (spec, "Rejected events"):
    it is re-checked against the resolved state. Evelyn's join, rejected where it was
    received, passes in a public room and so enters the resolved state."""
    base = standard_room(rv, members=[BOB])
    a, b = base.fork(), base.fork()
    me = b.join(EVELYN)
    a.topic(ALICE, "t")
    resolved = resolve(base, a.state, b.state, rejected={me.event_id})
    assert resolved[member(EVELYN)] == me.event_id


def test_unconflicted_state_is_reapplied_at_the_end(rv: str) -> None:
    """Step 5: an unconflicted entry is kept even if it would fail against the resolved state.
    Zara's join is in both sets; the join rules conflict and resolve to ``invite``, under
    which her join would fail 4.3.4 — but it is unconflicted, so it stays."""
    base = standard_room(rv, members=[BOB])
    base.join(ZARA)
    a, b = base.fork(), base.fork()
    jr = a.join_rule(ALICE, "invite")
    b.topic(ALICE, "t")
    resolved = resolve(base, a.state, b.state)
    assert resolved[JR] == jr.event_id
    assert resolved[member(ZARA)] == base.state[member(ZARA)]


def test_trivial_inputs() -> None:
    base = standard_room("11")
    events = base.room.events
    assert resolve_state("11", [], events) == {}
    assert resolve_state("11", [base.state], {}) == base.state  # no conflict: no lookups
    assert resolve_state("11", [base.state, dict(base.state)], {}) == base.state


def test_incomplete_auth_chains_raise_missing_events() -> None:
    base = standard_room("11", levels={BOB: 50}, members=[BOB])
    a, b = base.fork(), base.fork()
    a.topic(ALICE, "a")
    b.topic(BOB, "b")
    ijr = base.state[JR]
    partial = {k: v for k, v in base.room.events.items() if k != ijr}
    with pytest.raises(MissingEvents) as e:
        resolve_state("11", [a.state, b.state], partial)
    assert e.value.event_ids == {ijr}
    with pytest.raises(MissingEvents):
        resolve_state("11", [a.state, b.state], as_pdu_dicts(partial))


def test_malformed_event_map_entries() -> None:
    base = standard_room("11", members=[BOB])
    a, b = base.fork(), base.fork()
    ta, tb = a.topic(ALICE, "a"), b.topic(ALICE, "b")
    dicts = as_pdu_dicts(base.room.events)
    wrong_id = {**dicts, tb.event_id: {**dicts[tb.event_id], "event_id": ta.event_id}}
    with pytest.raises(InvalidPdu):
        resolve_state("11", [a.state, b.state], wrong_id)
    no_type = {**dicts, tb.event_id: {k: v for k, v in dicts[tb.event_id].items() if k != "type"}}
    with pytest.raises(InvalidPdu):
        resolve_state("11", [a.state, b.state], no_type)
    bad_auth = {**dicts, tb.event_id: {**dicts[tb.event_id], "auth_events": "x"}}
    with pytest.raises(InvalidPdu):
        resolve_state("11", [a.state, b.state], bad_auth)


# ------------------------------------------------------------------ properties

USERS = [ALICE, BOB, CHARLIE, EVELYN, ZARA]
OPS = ["topic", "power", "ban", "kick", "join", "leave", "join_rule", "message", "merge"]


def _apply(branches: list[Branch], i: int, op: str, actor: str, n: int) -> None:
    """One operation on branch ``i``; skipped if the auth rules refuse it there."""
    branch = branches[i]
    target = USERS[n % len(USERS)]
    try:
        if op == "topic":
            branch.topic(actor, f"topic {n}")
        elif op == "power":
            branch.power_levels(actor, {ALICE: 100, BOB: n % 101, target: (n * 7) % 60})
        elif op == "ban":
            branch.member(actor, target, "ban")
        elif op == "kick":
            branch.member(actor, target, "leave")
        elif op == "join":
            branch.join(actor)
        elif op == "leave":
            branch.member(actor, actor, "leave")
        elif op == "join_rule":
            branch.join_rule(actor, ["public", "invite"][n % 2])
        elif op == "message":
            branch.send(actor, "m.room.message", {"body": str(n)})
        else:  # merge another branch in: its state is resolved with ours
            other = branches[n % len(branches)]
            if other is not branch:
                room = branch.room
                branch.state = resolve_state(
                    room.room_version, [branch.state, other.state], room.events
                )
                branch.extremities |= other.extremities
    except AuthError:
        pass


room_scripts = st.tuples(
    st.sampled_from(["10", "11"]),
    st.integers(2, 3),
    st.lists(
        st.tuples(
            st.integers(0, 2), st.sampled_from(OPS), st.sampled_from(USERS), st.integers(0, 999)
        ),
        min_size=4,
        max_size=16,
    ),
)


def _build(script: tuple[str, int, list[tuple[int, str, str, int]]]) -> list[Branch]:
    rv, forks, steps = script
    base = standard_room(rv, levels={BOB: 50, CHARLIE: 20}, members=[BOB, CHARLIE])
    branches = [base.fork() for _ in range(forks)]
    for i, op, actor, n in steps:
        _apply(branches, i % forks, op, actor, n)
    return branches


STATE_RES_SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@STATE_RES_SETTINGS
@given(room_scripts)
def test_resolving_one_state_or_the_same_twice_gives_it_back(script: Any) -> None:
    branches = _build(script)
    room = branches[0].room
    for branch in branches:
        assert resolve_state(room.room_version, [branch.state], room.events) == branch.state
        twice = [branch.state, dict(branch.state)]
        assert resolve_state(room.room_version, twice, room.events) == branch.state


@STATE_RES_SETTINGS
@given(room_scripts)
def test_unconflicted_entries_survive_and_order_does_not_matter(script: Any) -> None:
    branches = _build(script)
    room = branches[0].room
    states = [b.state for b in branches]
    resolved = resolve_state(room.room_version, states, room.events)
    for key, value in states[0].items():
        if all(s.get(key) == value for s in states[1:]):
            assert resolved[key] == value
    assert set(resolved) <= set().union(*states)
    assert set(resolved.values()) <= set(room.events)
    for perm in itertools.permutations(states):
        assert resolve_state(room.room_version, list(perm), room.events) == resolved
    dicts = as_pdu_dicts(room.events)
    assert resolve_state(room.room_version, states, dicts) == resolved


def _key_of(events: Mapping[EventId, Event], event_id: str) -> StateKey:
    e = events[EventId(event_id)]
    assert e.state_key is not None
    return (e.type, e.state_key)


@STATE_RES_SETTINGS
@given(room_scripts)
def test_every_resolved_entry_is_an_event_of_its_key(script: Any) -> None:
    branches = _build(script)
    room = branches[0].room
    resolved = resolve_state(room.room_version, [b.state for b in branches], room.events)
    for key, event_id in resolved.items():
        assert _key_of(room.events, event_id) == key

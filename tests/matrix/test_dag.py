"""Room DAG helpers: laying out new events on the forward extremities, the state after an
event, the extremities after it."""

from __future__ import annotations

from dataclasses import dataclass

from cis.ids import EventId
from cis.matrix import next_forward_extremities, prepare_pdu, state_after
from cis.matrix.canonical_json import MAX_SAFE_INTEGER
from cis.matrix.dag import MAX_PREV_EVENTS_BUILT, choose_prev_events
from tests.matrix.roomkit import ALICE, BOB, EVELYN, ROOM_ID, standard_room


@dataclass(frozen=True)
class Tip:
    event_id: EventId
    depth: int


def test_prev_events_are_the_ten_deepest_extremities() -> None:
    tips = [Tip(EventId(f"$e{i:02d}"), depth=i % 7) for i in range(25)]
    prev, depth = choose_prev_events(tips)
    assert len(prev) == MAX_PREV_EVENTS_BUILT == 10
    chosen_depths = sorted((t.depth for t in tips if t.event_id in prev), reverse=True)
    assert chosen_depths == sorted((t.depth for t in tips), reverse=True)[:10]
    assert depth == 7  # deepest is 6
    assert prev[0] == "$e06"  # deepest first, ties by id
    assert choose_prev_events([]) == ([], 1)
    assert choose_prev_events([Tip(EventId("$x"), MAX_SAFE_INTEGER)]) == (["$x"], MAX_SAFE_INTEGER)


def test_create_events_by_room_version() -> None:
    for rv, creator in (("10", {"creator": ALICE}), ("11", {})):
        pdu = prepare_pdu(
            rv,
            room_id=ROOM_ID,
            sender=ALICE,
            event_type="m.room.create",
            content={},
            origin_server_ts=5,
            forward_extremities=[Tip(EventId("$x"), 3)],
            current_state={},
            state_key="",
        )
        assert pdu["content"] == {"room_version": rv, **creator}
        assert pdu["prev_events"] == [] and pdu["auth_events"] == [] and pdu["depth"] == 1


def test_auth_events_come_from_the_current_state_by_selection() -> None:
    room = standard_room("11", levels={BOB: 50}, members=[BOB])
    state = room.state
    extremities = [room.room.events[e] for e in room.extremities]
    join = prepare_pdu(
        "11",
        room_id=ROOM_ID,
        sender=EVELYN,
        event_type="m.room.member",
        content={"membership": "join"},
        origin_server_ts=99,
        forward_extremities=extremities,
        current_state=state,
        state_key=EVELYN,
    )
    expected = {
        state[("m.room.create", "")],
        state[("m.room.power_levels", "")],
        state[("m.room.join_rules", "")],
    }
    assert set(join["auth_events"]) == expected  # Evelyn has no membership yet
    assert join["prev_events"] == [e.event_id for e in extremities]
    assert join["depth"] == max(e.depth for e in extremities) + 1
    topic = prepare_pdu(
        "11",
        room_id=ROOM_ID,
        sender=BOB,
        event_type="m.room.topic",
        content={"topic": "t"},
        origin_server_ts=99,
        forward_extremities=extremities,
        current_state=state,
        state_key="",
    )
    assert set(topic["auth_events"]) == {
        state[("m.room.create", "")],
        state[("m.room.power_levels", "")],
        state[("m.room.member", BOB)],
    }


def test_redacts_goes_where_the_room_version_puts_it() -> None:
    common = dict(
        room_id=ROOM_ID,
        sender=ALICE,
        event_type="m.room.redaction",
        content={},
        origin_server_ts=1,
        forward_extremities=[],
        current_state={},
        redacts="$t",
    )
    v10 = prepare_pdu("10", **common)  # type: ignore[arg-type]
    v11 = prepare_pdu("11", **common)  # type: ignore[arg-type]
    assert v10["redacts"] == "$t" and "redacts" not in v10["content"]
    assert v11["content"] == {"redacts": "$t"} and "redacts" not in v11


def test_state_after_and_forward_extremities() -> None:
    room = standard_room("11", members=[BOB])
    before = dict(room.state)
    tips_before = set(room.extremities)
    topic = room.make(ALICE, "m.room.topic", {"topic": "t"}, "")
    after = state_after(before, topic)
    assert after == {**before, ("m.room.topic", ""): topic.event_id}
    assert before == room.state  # not modified
    message = room.make(ALICE, "m.room.message", {"body": "x"})
    assert state_after(before, message) == before
    assert next_forward_extremities(tips_before, topic) == {topic.event_id}
    assert next_forward_extremities({"$other", *tips_before}, topic) == {"$other", topic.event_id}

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cis.clock import FakeClock
from cis.home import Home
from cis.ids import DeviceId, EventId, UserId
from cis.matrix import parse_pdu
from cis.storage.errors import ImportFailed, InvalidEvent, InvalidQuery, UnknownEvent
from cis.storage.events import EventStatus, StoredEvent
from cis.storage.node_store import NodeStore
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.rooms.types import Direction, EventFilter, Pagination, TxnKey
from cis.storage.stream import StreamPositions
from tests.factories import chain, make_event
from tests.storage.conftest import ROOM, MakeManager

OTHER_ROOM = "!other:alpha.cis.local"


async def test_store_event_returns_its_id_and_reads_back(manager: RoomStoreManager) -> None:
    room = await manager.get_or_create(ROOM)
    event = make_event(ROOM, content={"body": "hi", "msgtype": "m.text"})
    assert await room.store_event(event) == event.event_id
    stored = await room.get_event(event.event_id)
    assert isinstance(stored, StoredEvent)
    assert stored.canonical_bytes == event.canonical_bytes
    assert stored.content == {"body": "hi", "msgtype": "m.text"}
    assert stored.status is EventStatus.TIMELINE
    assert stored.stream_ordering >= 1
    assert stored.received_ts == manager.clock.time_ms()
    assert not stored.is_state
    assert stored.pdu()["sender"] == event.sender


async def test_storing_an_id_twice_stores_it_once_and_keeps_the_first(
    manager: RoomStoreManager,
) -> None:
    room = await manager.get_or_create(ROOM)
    event = make_event(ROOM)
    await room.store_event(event)
    first = await room.get_event(event.event_id)
    await room.store_event(event, status=EventStatus.REJECTED)
    await room.store_events([event, event])
    again = await room.get_event(event.event_id)
    assert again == first
    assert (await room.stats()).total_events == 1


async def test_store_events_is_one_transaction_and_validates_first(
    manager: RoomStoreManager,
) -> None:
    room = await manager.get_or_create(ROOM)
    good = chain(ROOM, 3)
    foreign = make_event(OTHER_ROOM)
    with pytest.raises(InvalidEvent, match="another room"):
        await room.store_events([*good, foreign])
    assert (await room.stats()).total_events == 0
    ids = await room.store_events(good)
    assert ids == [e.event_id for e in good]
    positions = [e.stream_ordering for e in await room.get_events_since(None, 10)]
    assert positions == sorted(positions) and len(positions) == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_id": "no-sigil"}, "event_id must start with"),
        ({"sender": ""}, "sender must be a non-empty string"),
        ({"depth": -1}, "depth must be a non-negative integer"),
        ({"origin_server_ts": True}, "origin_server_ts must be"),
        ({"prev_events": ["$a"]}, "prev_events must be a tuple"),
        ({"canonical_bytes": b"[]"}, "canonical_bytes must be a JSON object"),
        ({"type": "x" * 300}, "longer than 255 bytes"),
    ],
)
async def test_malformed_events_are_refused(
    manager: RoomStoreManager, change: dict[str, object], message: str
) -> None:
    room = await manager.get_or_create(ROOM)
    bad = dataclasses.replace(make_event(ROOM), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match=message):
        await room.store_event(bad)
    with pytest.raises(InvalidEvent, match="not an event"):
        await room.store_event(object())  # type: ignore[arg-type]
    assert (await room.stats()).total_events == 0


async def test_forward_extremities_follow_the_dag(manager: RoomStoreManager) -> None:
    room = await manager.get_or_create(ROOM)
    a = make_event(ROOM, content={"body": "a"})
    b = make_event(ROOM, content={"body": "b"}, prev_events=[a.event_id])
    c = make_event(ROOM, content={"body": "c"}, prev_events=[b.event_id])
    d = make_event(ROOM, content={"body": "d"}, prev_events=[b.event_id])
    # c arrives before b: c is an extremity, and b will not become one.
    await room.store_event(a)
    await room.store_event(c)
    assert set(await room.forward_extremities()) == {a.event_id, c.event_id}
    await room.store_event(b)
    assert set(await room.forward_extremities()) == {c.event_id}
    await room.store_event(d)  # a fork
    assert set(await room.forward_extremities()) == {c.event_id, d.event_id}
    # An outlier never touches the extremities.
    e = make_event(ROOM, content={"body": "e"}, prev_events=[c.event_id, d.event_id])
    await room.store_event(e, status=EventStatus.OUTLIER)
    assert set(await room.forward_extremities()) == {c.event_id, d.event_id}
    merge = make_event(ROOM, content={"body": "m"}, prev_events=[c.event_id, d.event_id])
    await room.store_event(merge)
    assert await room.forward_extremities() == [merge.event_id]


async def test_room_state_is_keyed_by_type_and_state_key(manager: RoomStoreManager) -> None:
    room = await manager.get_or_create(ROOM)
    name1 = make_event(ROOM, type="m.room.name", state_key="", content={"name": "one"})
    name2 = make_event(ROOM, type="m.room.name", state_key="", content={"name": "two"})
    member = make_event(
        ROOM, type="m.room.member", state_key="@bob:alpha.cis.local", content={"membership": "join"}
    )
    rejected = make_event(ROOM, type="m.room.name", state_key="", content={"name": "evil"})
    await room.store_events([name1, member])
    await room.store_event(name2)
    await room.store_event(rejected, status=EventStatus.REJECTED)
    state = await room.current_state()
    assert state == {
        ("m.room.name", ""): name2.event_id,
        ("m.room.member", "@bob:alpha.cis.local"): member.event_id,
    }
    current = await room.state_event("m.room.name", "")
    assert current is not None and current.content == {"name": "two"}
    assert await room.state_event("m.room.topic", "") is None


async def test_txn_ids_commit_with_the_event_and_survive_a_restart(
    make_manager: MakeManager,
) -> None:
    key = TxnKey(UserId("@alice:alpha.cis.local"), DeviceId("DEV"), "txn-1")
    first = make_manager()
    room = await first.get_or_create(ROOM)
    event = make_event(ROOM)
    await room.store_event(event, txn=key)
    assert await room.event_id_for_txn(key) == event.event_id
    assert await room.event_id_for_txn(dataclasses.replace(key, txn_id="other")) is None
    await first.close()
    second = make_manager()
    reopened = await second.get(ROOM)
    assert reopened is not None
    assert await reopened.event_id_for_txn(key) == event.event_id


async def test_sync_positions_per_peer_never_move_back(manager: RoomStoreManager) -> None:
    room = await manager.get_or_create(ROOM)
    assert await room.sync_positions() == {}
    assert await room.set_sync_position("beta", 5) == 5
    assert await room.set_sync_position("beta", 3) == 5
    assert await room.set_sync_position("gamma", 7) == 7
    assert await room.sync_positions() == {"beta": 5, "gamma": 7}
    with pytest.raises(InvalidQuery):
        await room.set_sync_position("", 1)
    with pytest.raises(InvalidQuery):
        await room.set_sync_position("beta", -1)


async def test_stats(manager: RoomStoreManager) -> None:
    room = await manager.get_or_create(ROOM)
    empty = await room.stats()
    assert empty.total_events == 0 and empty.earliest_ts is None and empty.db_size_bytes > 0
    events = chain(ROOM, 4, start_ts=1000)
    topic = make_event(ROOM, type="m.room.topic", state_key="", content={"topic": "t"}, ts=5000)
    await room.store_events([*events, topic])
    await room.store_event(make_event(ROOM, content={"body": "x"}, ts=10), status="outlier")  # type: ignore[arg-type]
    stats = await room.stats()
    assert stats.total_events == 6
    assert stats.earliest_ts == 10 and stats.latest_ts == 5000
    assert stats.event_type_counts == {"m.room.message": 5, "m.room.topic": 1}
    assert stats.status_counts == {"timeline": 5, "outlier": 1}
    assert stats.forward_extremities == 2  # the chain's head and the topic
    assert stats.max_stream_ordering is not None


async def test_get_events_since_and_latest(manager: RoomStoreManager) -> None:
    room = await manager.get_or_create(ROOM)
    events = chain(ROOM, 10)
    await room.store_events(events)
    since_start = await room.get_events_since(None, 4)
    assert [e.event_id for e in since_start] == [e.event_id for e in events[:4]]
    after_third = await room.get_events_since(events[2].event_id, 100)
    assert [e.event_id for e in after_third] == [e.event_id for e in events[3:]]
    assert await room.get_events_since(events[-1].event_id, 5) == []
    with pytest.raises(UnknownEvent):
        await room.get_events_since(EventId("$never-stored"), 5)
    latest = await room.get_latest_events(3)
    assert [e.event_id for e in latest] == [e.event_id for e in events[-3:]]


async def test_query_filters(manager: RoomStoreManager) -> None:
    room = await manager.get_or_create(ROOM)
    alice, bob = "@alice:alpha.cis.local", "@bob:alpha.cis.local"
    e1 = make_event(ROOM, sender=alice, ts=100, content={"body": "Hello World"})
    e2 = make_event(ROOM, sender=bob, ts=200, content={"body": "hello there", "x": {"y": ["deep"]}})
    e3 = make_event(ROOM, sender=alice, ts=300, type="m.reaction", content={"key": "world"})
    e4 = make_event(ROOM, sender=bob, ts=400, type="cis.dag.run", content={"body": "World"})
    hidden = make_event(ROOM, sender=alice, ts=250, content={"body": "Hello outlier"})
    await room.store_events([e1, e2, e3, e4])
    await room.store_event(hidden, status=EventStatus.OUTLIER)

    async def ids(flt: EventFilter) -> list[str]:
        page = await room.query_events(flt, Pagination(limit=100))
        return [e.event_id for e in page.events]

    assert await ids(EventFilter()) == [e1.event_id, e2.event_id, e3.event_id, e4.event_id]
    assert await ids(EventFilter(types=("m.room.message",))) == [e1.event_id, e2.event_id]
    assert await ids(EventFilter(types=("m.reaction", "cis.dag.run"))) == [e3.event_id, e4.event_id]
    assert await ids(EventFilter(senders=(bob,))) == [e2.event_id, e4.event_id]
    assert await ids(EventFilter(types=("m.room.message",), senders=(bob,))) == [e2.event_id]
    assert await ids(EventFilter(since=200, until=300)) == [e2.event_id, e3.event_id]
    # contains: case-sensitive, literal, string values only (at any depth), never keys.
    assert await ids(EventFilter(contains="World")) == [e1.event_id, e4.event_id]
    assert await ids(EventFilter(contains="world")) == [e3.event_id]
    assert await ids(EventFilter(contains="deep")) == [e2.event_id]
    assert await ids(EventFilter(contains="body")) == []
    assert await ids(EventFilter(contains="%")) == []
    assert await ids(EventFilter(contains="Hello", statuses=(EventStatus.OUTLIER,))) == [
        hidden.event_id
    ]
    both = EventFilter(contains="Hello", statuses=(EventStatus.TIMELINE, EventStatus.OUTLIER))
    assert await ids(both) == [e1.event_id, hidden.event_id]


async def test_pagination_edges(manager: RoomStoreManager) -> None:
    room = await manager.get_or_create(ROOM)
    events = chain(ROOM, 7)
    await room.store_events(events)
    ids = [e.event_id for e in events]
    page = await room.query_events(EventFilter(), Pagination(limit=3))
    assert [e.event_id for e in page.events] == ids[:3] and page.has_more
    assert page.first_event_id == ids[0] and page.last_event_id == ids[2]
    page = await room.query_events(EventFilter(), Pagination(limit=3, after=ids[2]))
    assert [e.event_id for e in page.events] == ids[3:6] and page.has_more
    page = await room.query_events(EventFilter(), Pagination(limit=3, after=ids[5]))
    assert [e.event_id for e in page.events] == ids[6:] and not page.has_more
    # Backwards from the newest, in the direction of travel.
    back = await room.query_events(
        EventFilter(), Pagination(limit=2, direction=Direction.BACKWARDS)
    )
    assert [e.event_id for e in back.events] == [ids[6], ids[5]] and back.has_more
    back = await room.query_events(
        EventFilter(), Pagination(limit=10, before=ids[2], direction=Direction.BACKWARDS)
    )
    assert [e.event_id for e in back.events] == [ids[1], ids[0]] and not back.has_more
    # Both bounds are exclusive.
    bounded = Pagination(limit=10, after=ids[1], before=ids[4])
    window = await room.query_events(EventFilter(), bounded)
    assert [e.event_id for e in window.events] == ids[2:4] and not window.has_more
    empty = await room.query_events(EventFilter(), Pagination(limit=10, after=ids[6]))
    assert empty.events == () and not empty.has_more and empty.first_event_id is None
    with pytest.raises(UnknownEvent):
        await room.query_events(EventFilter(), Pagination(after=EventId("$unknown")))
    with pytest.raises(UnknownEvent):
        await room.query_events(EventFilter(), Pagination(before=EventId("$unknown")))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Pagination(limit=0),
        lambda: Pagination(limit=1001),
        lambda: Pagination(limit=True),
        lambda: Pagination(after="not-an-id"),  # type: ignore[arg-type]
        lambda: Pagination(direction="sideways"),  # type: ignore[arg-type]
        lambda: EventFilter(types=()),
        lambda: EventFilter(types="m.room.message"),  # type: ignore[arg-type]
        lambda: EventFilter(senders=tuple(f"@u{i}:x" for i in range(101))),
        lambda: EventFilter(contains=""),
        lambda: EventFilter(since=-1),
        lambda: EventFilter(statuses=("deleted",)),  # type: ignore[arg-type]
        lambda: EventFilter(statuses=()),
    ],
)
def test_queries_out_of_bounds_are_refused(build: object) -> None:
    with pytest.raises(InvalidQuery):
        build()  # type: ignore[operator]


def test_limit_bounds_are_inclusive() -> None:
    assert Pagination(limit=1).limit == 1
    assert Pagination(limit=1000).limit == 1000


async def test_export_import_round_trip(manager: RoomStoreManager, tmp_path: Path) -> None:
    room = await manager.get_or_create(ROOM)
    await room.store_events(chain(ROOM, 5))
    odd = make_event(ROOM, content={"body": "é 😀 \u2028", "n": [1, {"s": "deep"}]})
    await room.store_event(odd, status=EventStatus.OUTLIER)
    target = tmp_path / "room.jsonl"
    assert await room.export_to_jsonl(target) == 6
    lines = target.read_bytes().splitlines()
    first = json.loads(lines[0])
    assert first["_cis"]["status"] == "timeline"
    assert {"stream_ordering", "received_ts", "room_version"} <= first["_cis"].keys()
    assert "event_id" not in first
    assert lines[5].decode("utf-8").count("😀") == 1  # UTF-8, not \u escapes

    other_room = await manager.get_or_create(OTHER_ROOM)
    with pytest.raises(ImportFailed, match=r"room\.jsonl:1: event of room"):
        await other_room.import_from_jsonl(target)
    assert (await other_room.stats()).total_events == 0

    # Into the same room on another node (a move): same events, statuses and times.
    other_home = Home(tmp_path / "other")
    other_home.root.mkdir()
    other_node = NodeStore.open(other_home, create=True)
    elsewhere = RoomStoreManager(
        other_home, other_node, StreamPositions(0), clock=FakeClock(), max_open_rooms=2
    )
    try:
        copy = await elsewhere.get_or_create(ROOM)
        assert await copy.import_from_jsonl(target, parse=parse_pdu) == 6
        assert await copy.import_from_jsonl(target) == 0  # each once (the default parser)
        originals = await room.query_events(
            EventFilter(statuses=tuple(EventStatus)), Pagination(limit=10)
        )
        copies = await copy.query_events(
            EventFilter(statuses=tuple(EventStatus)), Pagination(limit=10)
        )
        keep = ("event_id", "canonical_bytes", "status", "received_ts", "content")
        assert [[getattr(e, k) for k in keep] for e in copies.events] == [
            [getattr(e, k) for k in keep] for e in originals.events
        ]
        await copy.export_to_jsonl(tmp_path / "again.jsonl")
        again = (tmp_path / "again.jsonl").read_bytes().splitlines()
        strip = [json.loads(line) for line in lines]
        for line in strip:
            del line["_cis"]["stream_ordering"]
        for line in (json.loads(line) for line in again):
            del line["_cis"]["stream_ordering"]
            assert line in strip
    finally:
        await elsewhere.close()
        other_node.close()


async def test_import_of_a_malformed_line_names_it_and_stores_nothing(
    manager: RoomStoreManager, tmp_path: Path
) -> None:
    room = await manager.get_or_create(ROOM)
    source = await manager.get_or_create("!source:alpha.cis.local")
    await source.store_events(chain("!source:alpha.cis.local", 3))
    exported = tmp_path / "source.jsonl"
    await source.export_to_jsonl(exported)
    lines = exported.read_bytes().replace(b"!source:", b"!room:").splitlines()
    cases = {
        b"{not json": "not a JSON line",
        b"[1, 2]": "not a JSON object",
        b'{"type": "m.room.message"}': "missing the _cis object",
        lines[1].replace(b'"status":"timeline"', b'"status":"gone"'): "not a known status",
        lines[1].replace(b'"depth":', b'"depth":"x","old":'): "invalid PDU",
    }
    for bad, message in cases.items():
        broken = tmp_path / "broken.jsonl"
        broken.write_bytes(b"\n".join([lines[0], bad, lines[2]]) + b"\n")
        with pytest.raises(ImportFailed, match=rf"broken\.jsonl:2: .*{message}"):
            await room.import_from_jsonl(broken)
        assert (await room.stats()).total_events == 0
    with pytest.raises(ImportFailed, match="cannot read"):
        await room.import_from_jsonl(tmp_path / "absent.jsonl")

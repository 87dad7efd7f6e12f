from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest

from cis.home import Home, room_dir_name
from cis.ids import RoomId
from cis.storage.errors import InvalidQuery, RoomArchived, UnknownRoom
from cis.storage.events import EventStatus
from cis.storage.node_store import NodeStore
from cis.storage.rooms.manager import RoomStoreManager, default_max_open_rooms
from cis.storage.rooms.subscriptions import SubscriptionClosed, SubscriptionLagged
from cis.storage.rooms.types import RoomStatus
from tests.factories import chain, make_event
from tests.storage.conftest import ROOM, MakeManager, settle


def room(i: int) -> str:
    return f"!room{i}:alpha.cis.local"


async def test_get_or_create_lays_out_the_folder_and_registers(
    manager: RoomStoreManager, home: Home
) -> None:
    store = await manager.get_or_create(ROOM)
    folder = home.rooms / room_dir_name(ROOM)
    assert store.path == folder
    assert (folder / "events.db").is_file()
    assert json.loads((folder / "meta.json").read_text())["room_id"] == ROOM
    rooms = await manager.list_rooms()
    assert [(r.room_id, r.status, r.dir_name) for r in rooms] == [
        (ROOM, RoomStatus.ACTIVE, folder.name)
    ]
    assert (await manager.get_or_create(ROOM)).room_id == ROOM  # idempotent
    assert await manager.get("!unknown:alpha.cis.local") is None
    assert not (home.rooms / room_dir_name("!unknown:alpha.cis.local")).exists()


@pytest.mark.parametrize("bad", ["room", "!nocolon", "!a:" + "x" * 300, "!a:b\x00", ""])
async def test_invalid_room_ids_are_refused(manager: RoomStoreManager, bad: str) -> None:
    with pytest.raises(InvalidQuery, match="invalid room id"):
        await manager.get_or_create(bad)


async def test_room_ids_differing_in_case_or_with_slashes_get_distinct_folders(
    manager: RoomStoreManager, home: Home
) -> None:
    ids = ["!Room:alpha.cis.local", "!room:alpha.cis.local", "!a/../b:alpha.cis.local"]
    for rid in ids:
        store = await manager.get_or_create(rid)
        await store.store_event(make_event(rid))
    folders = {p.name for p in home.rooms.iterdir()}
    assert folders == {room_dir_name(r) for r in ids}


async def test_lru_bounds_open_rooms_and_evicted_rooms_keep_their_data(
    make_manager: MakeManager,
) -> None:
    manager = make_manager(max_open_rooms=2)
    stores = [await manager.get_or_create(room(i)) for i in range(6)]
    assert manager.open_rooms <= 2
    for i, store in enumerate(stores):
        await store.store_events(chain(room(i), 3))
        assert manager.open_rooms <= 2
    assert manager.counters.evicted >= 4
    for i, store in enumerate(stores):  # every evicted room reopens with its data
        assert (await store.stats()).total_events == 3, room(i)
    # Many concurrent writers over more rooms than slots: all land, the bound holds.
    peak = 0

    async def write(i: int) -> None:
        nonlocal peak
        for j in range(5):
            await stores[i % 6].store_event(make_event(room(i % 6), content={"n": f"{i}-{j}"}))
            peak = max(peak, manager.open_rooms)

    await asyncio.gather(*(write(i) for i in range(12)))
    assert peak <= 2
    totals = [(await s.stats()).total_events for s in stores]
    assert sum(totals) == 18 + 60


async def test_subscriptions_survive_eviction(make_manager: MakeManager) -> None:
    manager = make_manager(max_open_rooms=1)
    first = await manager.get_or_create(room(0))
    sub = await manager.subscribe(room(0))
    for i in range(1, 4):  # evicts room 0 again and again
        await manager.get_or_create(room(i))
    assert manager.open_rooms == 1
    event = make_event(room(0), content={"body": "still heard"})
    await first.store_event(event)
    async with asyncio.timeout(5):
        got = await sub.get()
    assert got.event_id == event.event_id
    assert sub.last_delivered == got.stream_ordering
    assert manager.subscriptions.count(RoomId(room(0))) == 1
    sub.close()
    assert manager.subscriptions.count() == 0


async def test_a_lagging_subscriber_is_told_and_rereads_without_loss(
    make_manager: MakeManager,
) -> None:
    manager = make_manager(max_open_rooms=1)
    store = await manager.get_or_create(ROOM)
    sub = await manager.subscribe(ROOM, max_pending=3)
    events = chain(ROOM, 10)
    await store.store_events(events[:2])
    first = await sub.get()
    assert first.event_id == events[0].event_id
    for event in events[2:]:  # 8 more, one at a time: the buffer (3) overflows
        await store.store_event(event)
    assert sub.lagging and sub.pending == 0  # memory bounded: the buffer was dropped
    with pytest.raises(SubscriptionLagged) as lag:
        await sub.get()
    assert lag.value.last_delivered == first.stream_ordering
    # Re-read from the position it was told, while new events keep arriving.
    reread = await store.events_after(lag.value.last_delivered, 4)
    late = make_event(ROOM, content={"body": "during the re-read"})
    await store.store_event(late)
    reread += await store.events_after(reread[-1].stream_ordering, 100)
    sub.advance(reread[-1].stream_ordering)
    received = [e.event_id for e in reread]
    assert received == [e.event_id for e in events[1:]] + [late.event_id]
    # Nothing left to deliver twice; the next event arrives normally.
    newer = make_event(ROOM, content={"body": "after"})
    await store.store_event(newer)
    async with asyncio.timeout(5):
        assert (await sub.get()).event_id == newer.event_id
    sub.close()


async def test_subscribing_from_an_old_position_starts_lagging(
    manager: RoomStoreManager,
) -> None:
    store = await manager.get_or_create(ROOM)
    events = chain(ROOM, 3)
    await store.store_events(events)
    sub = await manager.subscribe(ROOM, after=0)
    with pytest.raises(SubscriptionLagged) as lag:
        await sub.get()
    assert lag.value.last_delivered == 0
    sub.close()
    with pytest.raises(UnknownRoom):
        await manager.subscribe("!nothere:alpha.cis.local")


async def test_follow_yields_every_event_once_across_lag_and_eviction(
    make_manager: MakeManager,
) -> None:
    manager = make_manager(max_open_rooms=1, max_pending_per_subscription=2)
    store = await manager.get_or_create(ROOM)
    other = await manager.get_or_create(room(1))
    events = chain(ROOM, 30)
    await store.store_events(events[:5])
    received: list[str] = []
    follower = manager.follow(ROOM, after=0)

    async def consume() -> None:
        async for event in follower:
            received.append(event.event_id)
            if len(received) == len(events):
                return

    task = asyncio.create_task(consume())
    for event in events[5:]:
        await store.store_event(event)
        await other.store_event(make_event(room(1), content={"n": event.event_id}))
    async with asyncio.timeout(10):
        await task
    await follower.aclose()
    assert received == [e.event_id for e in events]


async def test_outliers_are_not_delivered_unless_asked(manager: RoomStoreManager) -> None:
    store = await manager.get_or_create(ROOM)
    timeline_only = await manager.subscribe(ROOM)
    everything = await manager.subscribe(ROOM, statuses=tuple(EventStatus))
    outlier = make_event(ROOM, content={"body": "outlier"})
    normal = make_event(ROOM, content={"body": "normal"})
    await store.store_event(outlier, status=EventStatus.OUTLIER)
    await store.store_event(normal)
    async with asyncio.timeout(5):
        assert (await timeline_only.get()).event_id == normal.event_id
        assert (await everything.get()).event_id == outlier.event_id
        assert (await everything.get()).event_id == normal.event_id


async def test_archive_moves_the_folder_and_ends_subscriptions(
    manager: RoomStoreManager, home: Home, node_store: NodeStore
) -> None:
    store = await manager.get_or_create(ROOM)
    await store.store_events(chain(ROOM, 5))
    sub = await manager.subscribe(ROOM)
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    await manager.archive_room(ROOM)
    folder_name = room_dir_name(ROOM)
    assert not (home.rooms / folder_name).exists()
    archived = home.archived_rooms / folder_name
    assert (archived / "events.db").is_file() and (archived / "meta.json").is_file()
    assert not list(archived.glob("*-wal")) or (archived / "events.db-wal").stat().st_size == 0
    with pytest.raises(SubscriptionClosed):
        await waiting
    assert await manager.get(ROOM) is None
    with pytest.raises(RoomArchived):
        await manager.get_or_create(ROOM)
    with pytest.raises(RoomArchived):
        await store.stats()
    info = await node_store.get_room(RoomId(ROOM))
    assert info is not None and info.status is RoomStatus.ARCHIVED
    await manager.archive_room(ROOM)  # idempotent
    with pytest.raises(UnknownRoom):
        await manager.archive_room("!nothere:alpha.cis.local")


async def test_close_room_drains_and_reopens(manager: RoomStoreManager) -> None:
    store = await manager.get_or_create(ROOM)
    writes = [store.store_event(e) for e in chain(ROOM, 20)]
    pending = asyncio.gather(*writes)
    await asyncio.sleep(0)
    await manager.close_room(ROOM)
    await pending
    assert (await store.stats()).total_events == 20


async def test_derived_indexes_follow_the_room_files(
    manager: RoomStoreManager, node_store: NodeStore
) -> None:
    a, b = await manager.get_or_create(room(1)), await manager.get_or_create(room(2))
    bob = "@bob:alpha.cis.local"
    join = make_event(room(1), type="m.room.member", state_key=bob, content={"membership": "join"})
    leave = make_event(
        room(1), type="m.room.member", state_key=bob, content={"membership": "leave"}, ts=2
    )
    await asyncio.gather(
        a.store_events([join, *chain(room(1), 3)]), b.store_events(chain(room(2), 4))
    )
    await a.store_event(leave)
    await settle(manager)

    def read(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
        stream = conn.execute("SELECT room_id, event_id FROM stream ORDER BY stream_ordering")
        members = conn.execute("SELECT room_id, user_id, membership FROM memberships")
        return stream.fetchall(), members.fetchall()

    stream, members = node_store.db.read_blocking("read", read)
    assert len(stream) == 9
    assert {e.event_id for e in await a.get_events_since(None, 100)} == {
        eid for rid, eid in stream if rid == room(1)
    }
    assert members == [(room(1), bob, "leave")]
    assert manager.positions.current == manager.positions.last_allocated
    assert node_store.status().stream_max == manager.positions.current


def test_default_max_open_rooms() -> None:
    assert default_max_open_rooms(1024) == 160
    assert default_max_open_rooms(1_048_576) == 256
    assert default_max_open_rooms(10) == 1


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_cancelled_writer_still_stores_and_leaves_no_position_in_flight(
    make_manager: MakeManager, synchronous: str
) -> None:
    """The batch is written whatever happens to its callers (inline at NORMAL, on the
    writer thread at FULL), and its positions complete."""
    manager = make_manager(synchronous=synchronous)
    store = await manager.get_or_create(ROOM)
    events = chain(ROOM, 3)
    first = asyncio.ensure_future(store.store_event(events[0]))
    rest = asyncio.ensure_future(store.store_events(events[1:]))
    await asyncio.sleep(0)  # both joined this turn's batch
    first.cancel()
    assert await rest == [e.event_id for e in events[1:]]
    with pytest.raises(asyncio.CancelledError):
        await first
    await settle(manager)
    assert manager.positions.in_flight == 0
    stored = await store.get_events([e.event_id for e in events])
    assert set(stored) == {e.event_id for e in events}
    assert sorted(s.stream_ordering for s in stored.values()) == [
        s.stream_ordering for s in (stored[e.event_id] for e in events)
    ]


@pytest.mark.parametrize("room_open", [True, False])
async def test_close_writes_what_it_accepted_and_refuses_the_rest(
    manager: RoomStoreManager, room_open: bool
) -> None:
    store = await manager.get_or_create(ROOM)
    first, second = chain(ROOM, 2)
    await store.store_event(first)
    if not room_open:
        await manager.close_room(ROOM)  # the write must open it again
    pending = asyncio.ensure_future(store.store_event(second))
    await asyncio.sleep(0)  # queued for the next turn
    await manager.close()  # drains it: written before the rooms close
    assert await pending == second.event_id
    with pytest.raises(Exception, match="closed"):
        await store.store_event(make_event(ROOM))
    assert manager.positions.in_flight == 0

"""The state groups of locally created events: recorded from memory on the send path
(``StateGroups.remember_local``), the same states the graph gives, written in one delayed
write, and written at once when the node stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from cis.handlers import federation_state
from cis.handlers.federation_state import EventCache, StateGroups
from cis.ids import EventId, RoomId
from cis.storage.rooms import state_groups as sg
from cis.storage.rooms.store import RoomStore
from tests.federation.cluster import cluster, eventually

pytestmark = pytest.mark.timeout(60)


async def test_local_events_get_the_groups_the_graph_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(federation_state, "FLUSH_DELAY_S", 60.0)  # only the stop writes
    async with cluster(tmp_path) as c:
        alpha = await c.start_node("alpha")
        service = alpha.service
        alice = await alpha.register("alice")
        room = RoomId(await alice.create_room(name="Groups"))
        first = EventId(await alice.send(room, "before"))

        async def grouped() -> bool:  # the room's first groups come from the graph (ensure)
            return bool(await service.groups.groups_of(room, [first]))

        await eventually(grouped, 10, "the first message's group")
        topic = await alice.put_state(room, "m.room.topic", {"topic": "fast path"})
        assert topic.status_code == 200, topic.text
        topic_id = EventId(topic.json()["event_id"])
        after = EventId(await alice.send(room, "after"))
        known = await service.groups.groups_of(room, [first, topic_id, after])
        assert set(known) == {first, topic_id, after}
        assert known[topic_id] != known[first]  # the topic made a new group
        assert known[after] == known[topic_id]  # a message keeps its prev event's group

        # A fresh StateGroups over the same files works the states out from the graph.
        manager = alpha.node.storage.rooms
        fresh = StateGroups(manager, EventCache(manager))
        snapshot = await service.cache.get(room)
        assert snapshot is not None
        graph = await fresh.ensure(room, snapshot.room_version, [first, topic_id, after])
        for event_id in (first, topic_id, after):
            assert await service.groups.state(room, known[event_id]) == await fresh.state(
                room, graph[event_id]
            )
        state = await service.groups.state(room, known[after])
        assert state[("m.room.topic", "")] == topic_id

        # Not yet written (the write waits to take more), then written at stop.
        store = RoomStore(manager, room)
        stored = await store.run_read("groups_of", sg.groups_of, [first, topic_id, after])
        assert stored == {}
        await service.groups.flush_all()
        stored = await store.run_read("groups_of", sg.groups_of, [topic_id, after])
        assert stored == {topic_id: known[topic_id], after: known[after]}


async def test_the_delayed_write_happens_without_a_stop(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha = await c.start_node("alpha")
        alice = await alpha.register("alice")
        room = RoomId(await alice.create_room(name="Later"))
        sent = [EventId(await alice.send(room, f"m{i}")) for i in range(5)]
        store = RoomStore(alpha.node.storage.rooms, room)

        async def written() -> bool:
            stored = await store.run_read("groups_of", sg.groups_of, sent)
            return set(stored) == set(sent)

        await eventually(written, 10, "the groups to be written")

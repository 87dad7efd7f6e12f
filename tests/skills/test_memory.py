"""The memory skill on a real node's storage: private and public memories, search."""

from __future__ import annotations

import sqlite3

import pytest

from cis.ids import RoomId
from cis.node import NodeStorage
from cis.skills.contract import CommandError
from cis.skills.gateway import CreatorGateway, EventDraft
from cis.skills.host import SkillHost
from tests.skills.conftest import MakeHost
from tests.skills.helpers import eventually

ENTRY = "io.cis.memory.entry"


async def memory(host: SkillHost, command: str, **args: object) -> dict[str, object]:
    return dict(await host.call_command("memory", command, args))


async def test_private_memories_and_search(make_host: MakeHost) -> None:
    host = await make_host(("memory",))
    notes = {
        "fox-1": "the brown fox is quick",
        "fox-2": "a quick brown fox jumps over",
        "fox-3": "brown, quick: a fox",
        "dog": "a slow dog",
        "seed": "公域记忆是联邦的节点记忆",
        "Quick Brown Fox": "title case key",
    }
    for key, value in notes.items():
        assert await memory(host, "set", key=key, value=value) == {"key": key, "scope": "private"}
    assert (await memory(host, "get", key="dog"))["value"] == "a slow dog"
    found = await memory(host, "search", text="quick brown fox")
    keys = [m["key"] for m in found["memories"]]  # type: ignore[union-attr]
    assert set(keys[:2]) == {"Quick Brown Fox", "fox-2"}  # the exact phrase (key or value) first
    assert set(keys[2:]) == {"fox-1", "fox-3"}  # then every other row holding all the terms
    assert [m["key"] for m in (await memory(host, "search", text="记忆"))["memories"]] == ["seed"]  # type: ignore[union-attr]
    assert (await memory(host, "search", text="cat"))["memories"] == []
    await memory(host, "set", key="dog", value="a fast dog")
    assert (await memory(host, "get", key="dog"))["value"] == "a fast dog"
    await memory(host, "delete", key="dog")
    with pytest.raises(CommandError, match="no memory"):
        await memory(host, "get", key="dog")
    listed = (await memory(host, "list"))["memories"]
    assert {m["key"] for m in listed} == set(notes) - {"dog"}  # type: ignore[union-attr]
    for bad in ({"key": "", "value": "x"}, {"key": "a\nb", "value": "x"}, {"key": "k"}):
        with pytest.raises(CommandError):
            await memory(host, "set", **bad)
    with pytest.raises(CommandError, match="at most 60000 bytes"):
        await memory(host, "set", key="big", value="x" * 60_001)
    with pytest.raises(CommandError, match="node beta unreachable"):  # no tunnels here
        await memory(host, "set", key="k", value="v", public=True, node="beta")
    status = {s.name: s for s in host.statuses()}["memory"]
    assert status.state == "running"  # refused input never counts against the skill


async def test_public_memories_are_state_of_the_memory_room(
    make_host: MakeHost, storage: NodeStorage, gateway: CreatorGateway
) -> None:
    host = await make_host(("memory",))
    await memory(host, "set", key="secret", value="private-value-XYZ")
    result = await memory(host, "set", key="motto", value="sovereign nodes", public=True)
    room = RoomId("!memory:alpha.cis.local")
    assert result["scope"] == room
    store = await storage.rooms.get(room)
    assert store is not None
    create = await store.state_event("m.room.create", "")
    federation = await store.state_event("io.cis.room.federation", "")
    entry = await store.state_event(ENTRY, "motto")
    assert create is not None and create.content["io.cis.skill"] == "memory"
    assert federation is not None and federation.content == {"federate": True}
    assert entry is not None and entry.content == {"value": "sovereign nodes"}
    assert entry.event_id == result["event_id"]
    got = await memory(host, "get", key="motto")
    assert got["value"] == "sovereign nodes" and got["public"] is True

    # An entry that arrives in the room (as from another node) reaches the skill's table.
    me = storage.identity.system_user_id
    await gateway.send(room, EventDraft(me, ENTRY, {"value": "arrived"}, "incoming"))

    async def arrived() -> bool:
        found = await memory(host, "search", text="arrived")
        return [m["key"] for m in found["memories"]] == ["incoming"]  # type: ignore[union-attr]

    await eventually(arrived, what="the arrived entry")
    await memory(host, "delete", key="motto", public=True)
    assert (await store.state_event(ENTRY, "motto")).content == {}  # type: ignore[union-attr]
    with pytest.raises(CommandError):
        await memory(host, "get", key="motto", public=True)

    # The private memory is in no room's file: only in the skill's own database.
    for folder in storage.home.rooms.iterdir():
        database = folder / "events.db"
        if database.exists():
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
                pdus = b"".join(row[0] for row in conn.execute("SELECT pdu FROM events"))
            assert b"private-value-XYZ" not in pdus
    assert b"private-value-XYZ" in storage.home.skill_db("memory").read_bytes() + (
        storage.home.skill_db("memory").with_name("memory.db-wal").read_bytes()
    )


async def test_a_joined_memory_room_of_another_node_is_delivered(
    make_host: MakeHost, storage: NodeStorage, gateway: CreatorGateway
) -> None:
    """A room whose create event names the skill (here one of node beta, as if joined) is
    found by the host and its entries appear in the skill's table."""
    host = await make_host(("memory",))
    room = RoomId("!memory:beta.cis.local")
    beta = "@cis:beta.cis.local"
    await gateway.create_room(
        room,
        "11",
        [
            EventDraft(beta, "m.room.create", {"io.cis.skill": "memory"}, ""),
            EventDraft(beta, "m.room.member", {"membership": "join"}, beta),
            EventDraft(beta, "m.room.power_levels", {"users": {beta: 100}}, ""),
            EventDraft(beta, ENTRY, {"value": "from beta"}, "beta-note"),
        ],
    )
    await host.scan_rooms()  # the host's own periodic scan may find it first
    assert await host.scan_rooms() == 0  # a room is delivered once, however it was found

    async def delivered() -> bool:
        listed = (await memory(host, "list"))["memories"]
        return [(m["key"], m["scope"]) for m in listed] == [("beta-note", room)]  # type: ignore[union-attr]

    await eventually(delivered, what="beta's entry")
    got = await memory(host, "get", key="beta-note", node="beta")
    assert got["value"] == "from beta"

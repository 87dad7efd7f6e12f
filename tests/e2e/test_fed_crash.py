"""``kill -9`` of one node of three while the others talk; restarted (on a new port, found
again through the anchor), it receives everything it missed, and its users see it."""

from __future__ import annotations

import asyncio

import pytest
from nio import SyncResponse

from tests.e2e.conftest import Processes
from tests.e2e.fed import (
    bodies,
    eventually,
    kill9,
    run_node,
    say,
    three_nodes_one_room,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_a_killed_node_catches_up_on_what_it_missed(processes: Processes) -> None:
    trio = await three_nodes_one_room(processes, "Crash")
    homes, nodes, room = trio.homes, trio.nodes, trio.room
    alice, bob, carol = trio.clients
    try:
        await say(carol, room, "carol was here")

        async def everyone_joined() -> bool:
            return "carol was here" in await bodies(alice, room) and "carol was here" in (
                await bodies(bob, room)
            )

        await eventually(everyone_joined, 30, "carol's message everywhere")
        # gamma dies mid-conversation: alpha and beta keep talking.
        talk = [f"while gamma was down {i}" for i in range(30)]

        async def chatter() -> None:
            for i, body in enumerate(talk):
                await say(alice if i % 2 == 0 else bob, room, body)
                await asyncio.sleep(0.02)

        talking = asyncio.create_task(chatter())
        await asyncio.sleep(0.1)
        kill9(nodes["gamma"])
        await talking
        await carol.close()
        nodes["gamma"] = run_node(processes, homes["gamma"], trio.anchor)
        carol.homeserver = nodes["gamma"].url

        async def gamma_has_everything() -> bool:
            return set(talk) <= set(await bodies(carol, room, limit=100))

        await eventually(gamma_has_everything, 45, "gamma to catch up")
        synced = await carol.sync(timeout=0, full_state=True)
        assert isinstance(synced, SyncResponse)
        assert room in synced.rooms.join
        views = [n.room_view(room) for n in nodes.values()]
        assert all(v is not None for v in views)
        assert all(v["state"] == views[0]["state"] for v in views)  # type: ignore[index]
        assert all(set(v["events"]) == set(views[0]["events"]) for v in views)  # type: ignore[index]
    finally:
        await trio.close()

"""An anchor and three ``cis-node run`` processes that find each other through it; users on
each node through matrix-nio. A federated room where everyone sees everyone's messages; a
private room whose events are found in no other node's files."""

from __future__ import annotations

import pytest
from nio import ErrorResponse, RoomPutStateResponse, SyncResponse

from tests.e2e.conftest import Processes
from tests.e2e.fed import (
    bodies,
    create_room,
    eventually,
    init_home,
    join,
    run_node,
    say,
    start_anchor,
    user,
    wait_mesh,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_three_nodes_one_room_everyone_sees_everything_private_stays_home(
    processes: Processes,
) -> None:
    anchor = start_anchor(processes)
    nodes = [
        run_node(processes, init_home(processes, n), anchor) for n in ("alpha", "beta", "gamma")
    ]
    alpha, beta, gamma = nodes
    wait_mesh(nodes)
    alice, bob, carol = (
        await user(alpha, "alice"),
        await user(beta, "bob"),
        await user(gamma, "carol"),
    )
    clients = (alice, bob, carol)
    try:
        room = await create_room(alice, name="Across", invite=[bob.user_id, carol.user_id])
        # The remote invites show in the invitees' /sync (stripped state from their nodes).
        for invitee in (bob, carol):

            async def invited(client=invitee) -> bool:  # type: ignore[no-untyped-def]
                response = await client.sync(timeout=1000)
                return isinstance(response, SyncResponse) and room in response.rooms.invite

            await eventually(invited, 30, f"{invitee.user_id}'s invite")
            await join(invitee, room)
        sent = {}
        for client in clients:
            body = f"hello from {client.user_id}"
            await say(client, room, body)
            sent[client.user_id] = body

        async def everyone_sees_everything() -> bool:
            for client in clients:
                seen = await bodies(client, room)
                if not set(sent.values()) <= set(seen):
                    return False
            return True

        await eventually(everyone_sees_everything, 30, "every message on every node")
        views = [n.room_view(room) for n in nodes]
        assert all(v is not None and v["state"] == views[0]["state"] for v in views)  # type: ignore[index]

        # A private room: remote users cannot be invited, and its events never leave alpha.
        private = await create_room(alice, federated=False, name="Private")
        refused = await alice.room_invite(private, bob.user_id)
        assert isinstance(refused, ErrorResponse)
        assert refused.status_code == "M_FORBIDDEN"
        assert "io.cis.room.federation" in refused.message
        secret = "the private room's secret 7f3a9c"
        await say(alice, private, secret)
        # Turning federation off while remote users are joined is refused.
        off = await alice.room_put_state(room, "io.cis.room.federation", {"federate": False})
        assert isinstance(off, ErrorResponse) and off.status_code == "M_FORBIDDEN"
        on = await alice.room_put_state(room, "io.cis.room.federation", {"federate": True})
        assert isinstance(on, RoomPutStateResponse)
        await say(alice, room, "after the private one")

        async def delivered() -> bool:
            return "after the private one" in await bodies(carol, room)

        await eventually(delivered, 30, "the later federated message")
        for node in (beta, gamma):
            for path in node.home.rglob("*"):
                if path.is_file():
                    assert secret.encode() not in path.read_bytes(), path
                    assert private.encode() not in path.read_bytes(), path
    finally:
        for client in clients:
            await client.close()
    for node in nodes:
        assert node.running.stop() == 0

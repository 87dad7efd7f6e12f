"""A partition made with the trust switch (``cis-node trust set … 0`` on running nodes),
conflicting changes on both sides, heal: the three nodes end with the same events and the
same current state, and that state is the one state resolution v2 predicts.

The room, before the partition: power levels PL1 = {alice@alpha: 100, carol@gamma: 90},
``m.room.power_levels`` needs 90, state events 50, bans 50; bob@beta and dave@gamma at 0.

Apart, first on gamma's side (earlier timestamps), then on alpha's:

- gamma: carol sets PL_G (PL1 plus dave: 10); dave changes his own member event (a new
  display name); carol sets the topic "gamma".
- alpha: alice sets PL_A (PL1 with carol lowered to 50); alice bans dave; alice sets the topic
  "alpha".

Worked out by hand with the rules (room version 11, state resolution v2):

- Conflicted: the power levels (PL_A / PL_G), dave's membership (ban / his rename), the topic.
- Power events, in reverse topological power order (key: -sender's level, ts, id): PL_A
  (alice, 100), then the ban (alice, 100, its auth events cite PL_A), then PL_G (carol, 90).
  Iterative auth checks from the unconflicted state: PL_A passes; the ban passes (dave 0 <
  alice 100, ban level 50); PL_G fails: carol has 50 in PL_A, below the 90 that
  ``m.room.power_levels`` needs. **Power levels: PL_A. Dave: banned.**
- The rest in mainline order of PL_A ([PL_A, PL1, PL0]): dave's rename and topic "gamma" cite
  PL_G or PL1 (depth 2), topic "alpha" cites PL_A (depth 3), so "alpha" comes last. Dave's
  rename fails (rule 4: a banned user cannot join); topic "gamma" passes (carol 50 >= 50),
  topic "alpha" passes and, applied last, wins. **Topic: "alpha".**
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nio import ErrorResponse, RoomPreset, RoomPutStateResponse

from tests.e2e.conftest import Processes, cis_node
from tests.e2e.fed import (
    FedNode,
    bodies,
    create_room,
    eventually,
    init_home,
    join,
    run_node,
    say,
    start_anchor,
    state,
    user,
    wait_mesh,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def levels(users: dict[str, int]) -> dict[str, Any]:
    return {
        "users": users, "users_default": 0,
        "events": {"m.room.power_levels": 90, "m.room.history_visibility": 100},
        "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50,
        "invite": 0,
    }  # fmt: skip


def trust(node: FedNode, did: str, level: int) -> None:
    """The operator's switch, on a running node (through its admin API)."""
    result = cis_node("trust", "set", did, str(level), "--home", str(node.home))
    assert result.returncode == 0, result.stderr
    assert "applied by the running node" in result.stdout


async def put(client: Any, room: str, kind: str, content: Any, key: str = "") -> None:
    response = await client.room_put_state(room, kind, content, key)
    assert isinstance(response, RoomPutStateResponse), response
    await asyncio.sleep(0.01)  # distinct origin_server_ts for each change


async def test_partition_and_heal_converge_on_the_predicted_state(processes: Processes) -> None:
    anchor = start_anchor(processes)
    nodes = [
        run_node(processes, init_home(processes, n), anchor) for n in ("alpha", "beta", "gamma")
    ]
    alpha, beta, gamma = nodes
    wait_mesh(nodes)
    dids = {n.name: n.did for n in nodes}
    alice, bob = await user(alpha, "alice"), await user(beta, "bob")
    carol, dave = await user(gamma, "carol"), await user(gamma, "dave")
    clients = (alice, bob, carol, dave)
    try:
        room = await create_room(alice, preset=RoomPreset.public_chat, topic="before")
        for client in (bob, carol, dave):
            await join(client, room)
        pl1 = levels({alice.user_id: 100, carol.user_id: 90})
        # At the default trust (level 1) gamma's users get power level 0 in alpha's rooms.
        refused = await alice.room_put_state(room, "m.room.power_levels", pl1)
        assert isinstance(refused, ErrorResponse) and refused.status_code == "M_FORBIDDEN"
        assert "trust level 1" in refused.message
        for node in nodes:  # full participation (level 2): power above 0 for each other's users
            for other in nodes:
                if other is not node:
                    trust(node, dids[other.name], 2)
        await put(alice, room, "m.room.power_levels", pl1)

        async def pl1_everywhere() -> bool:
            return all([await state(c, room, "m.room.power_levels") == pl1 for c in clients])

        await eventually(pl1_everywhere, 30, "PL1 on every node")
        # Partition {alpha, beta} | {gamma}.
        for node, other in ((alpha, "gamma"), (beta, "gamma"), (gamma, "alpha"), (gamma, "beta")):
            trust(node, dids[other], 0)
        await eventually(
            _async(lambda: not gamma.online_peers() and "gamma" not in alpha.online_peers()),
            10, "the partition",
        )  # fmt: skip
        pl_g = levels({alice.user_id: 100, carol.user_id: 90, dave.user_id: 10})
        await put(carol, room, "m.room.power_levels", pl_g)
        renamed = {"membership": "join", "displayname": "dave renamed"}
        await put(dave, room, "m.room.member", renamed, dave.user_id)
        await put(carol, room, "m.room.topic", {"topic": "gamma"})
        await say(carol, room, "carol during the partition")
        # Dave speaks last on his side, so his message is a forward extremity there: the event
        # alpha and beta check against their current state on receipt (soft failure). An event
        # that a later accepted event already builds on is history, not a new extremity.
        await say(dave, room, "dave during the partition")
        pl_a = levels({alice.user_id: 100, carol.user_id: 50})
        await put(alice, room, "m.room.power_levels", pl_a)
        banned = await alice.room_ban(room, dave.user_id, "racing")
        assert not hasattr(banned, "status_code"), banned
        await put(alice, room, "m.room.topic", {"topic": "alpha"})
        await say(bob, room, "bob during the partition")
        # Each side holds its own view.
        assert await state(carol, room, "m.room.topic") == {"topic": "gamma"}
        assert await state(carol, room, "m.room.power_levels") == pl_g

        async def beta_has_alphas_topic() -> bool:  # beta hears alpha over a tunnel: not at once
            return await state(bob, room, "m.room.topic") == {"topic": "alpha"}

        await eventually(beta_has_alphas_topic, 30, "alpha's topic on beta")
        # Heal.
        for node, other in ((alpha, "gamma"), (beta, "gamma"), (gamma, "alpha"), (gamma, "beta")):
            trust(node, dids[other], 2)

        last: list[Any] = []

        async def converged() -> bool:
            # The same events (ids) and the same current state. Statuses may differ: dave's
            # message is timeline on gamma (he was not banned there when it was made) and
            # soft-failed where the ban came first, which is receipt's local judgement.
            views = [n.room_view(room) for n in nodes]
            last[:] = views
            return all(
                v is not None
                and v["state"] == views[0]["state"]  # type: ignore[index]
                and set(v["events"]) == set(views[0]["events"])  # type: ignore[index]
                for v in views
            )

        try:
            await eventually(converged, 45, "the three nodes to hold the same events and state")
        except AssertionError:
            raise AssertionError(_difference(last)) from None
        for client in (alice, bob, carol):
            assert await state(client, room, "m.room.power_levels") == pl_a
            assert await state(client, room, "m.room.topic") == {"topic": "alpha"}
            member = await state(client, room, "m.room.member", dave.user_id)
            assert member is not None and member["membership"] == "ban"
        # Both sides' messages are on every node; dave's, which every node holds, is shown
        # where it was accepted before the ban was known (gamma) and soft-failed where the
        # ban came first (alpha, beta): it fails against their current state.
        for client in (alice, bob, carol):
            seen = await bodies(client, room)
            assert "carol during the partition" in seen and "bob during the partition" in seen
        assert "dave during the partition" in await bodies(carol, room)
        assert "dave during the partition" not in await bodies(alice, room)
    finally:
        for client in clients:
            await client.close()


def _async(check: Any) -> Any:
    async def wrapped() -> bool:
        return bool(await asyncio.to_thread(check))

    return wrapped


def _difference(views: list[Any]) -> str:
    """What differs between the nodes' views of the room (for a failure message)."""
    lines = []
    first = views[0] or {}
    for index, maybe in enumerate(views[1:], start=1):
        view = maybe or {}
        for key in ("state", "events"):
            a, b = first.get(key), view.get(key)
            if a != b:
                if isinstance(a, dict) and isinstance(b, dict):
                    diff = {
                        k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)
                    }
                    lines.append(f"node 0 vs {index} {key}: {diff}")
                else:
                    lines.append(f"node 0 vs {index} {key}: {a} != {b}")
    return "not converged: " + "; ".join(lines)

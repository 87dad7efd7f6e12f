"""Rooms across real nodes in one process (real sockets on 127.0.0.1, real tunnels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.federation.cluster import cluster, eventually, mesh

pytestmark = pytest.mark.timeout(120)


async def test_invite_join_and_messages_both_ways(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha, beta = await mesh(c, "alpha", "beta")
        alice = await alpha.register("alice")
        bob = await beta.register("bob")
        room = await alice.create_room(name="Across")
        invited = await alice.invite(room, bob.user_id)
        assert invited.status_code == 200, invited.text
        joined = await bob.join(room)
        assert joined.status_code == 200, joined.text
        await alice.send(room, "hello from alpha")

        async def bob_sees() -> bool:
            return "hello from alpha" in await bob.messages(room)

        await eventually(bob_sees, 20, "bob to see alice's message")
        await bob.send(room, "hello from beta")

        async def alice_sees() -> bool:
            return "hello from beta" in await alice.messages(room)

        await eventually(alice_sees, 20, "alice to see bob's message")
        a = await alpha.room_view(room)
        b = await beta.room_view(room)
        assert a is not None and b is not None
        assert a["state"] == b["state"]
        assert set(a["events"]) == set(b["events"])


def power_levels(users: dict[str, int]) -> dict[str, object]:
    return {
        "users": users,
        "users_default": 0,
        "events": {"m.room.power_levels": 90, "m.room.history_visibility": 100},
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
    }


async def test_partition_heals_to_the_state_the_rules_predict(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha, beta, gamma = await mesh(c, "alpha", "beta", "gamma")
        nodes = (alpha, beta, gamma)
        for node in nodes:  # full participation: power above 0 for each other's users
            for other in nodes:
                if other is not node:
                    await node.admin("PUT", "/trust", {"did": other.did, "level": 2})
        alice = await alpha.register("alice")
        bob = await beta.register("bob")
        carol = await gamma.register("carol")
        dave = await gamma.register("dave")
        room = await alice.create_room(preset="public_chat", topic="before")
        for user in (bob, carol, dave):
            assert (await user.join(room)).status_code == 200
        pl1 = power_levels({alice.user_id: 100, carol.user_id: 90})
        assert (await alice.put_state(room, "m.room.power_levels", pl1)).status_code == 200

        async def everyone_has_pl1() -> bool:
            for user in (alice, bob, carol):
                if (await user.state(room, "m.room.power_levels")) != pl1:
                    return False
            return True

        await eventually(everyone_has_pl1, 20, "PL1 everywhere")
        # Partition {alpha, beta} | {gamma} with the trust switch, both ways.
        for node, others in ((alpha, [gamma]), (beta, [gamma]), (gamma, [alpha, beta])):
            for other in others:
                await node.admin("PUT", "/trust", {"did": other.did, "level": 0})

        async def cut() -> bool:
            ga = gamma.node.federation.manager
            assert ga is not None
            return all(not (ga.status(n.did) and ga.status(n.did).online) for n in (alpha, beta))  # type: ignore[union-attr]

        await eventually(cut, 10, "gamma cut off")
        # Gamma's side first (earlier timestamps), then alpha's.
        pl_g = power_levels({alice.user_id: 100, carol.user_id: 90, dave.user_id: 10})
        assert (await carol.put_state(room, "m.room.power_levels", pl_g)).status_code == 200
        renamed = {"membership": "join", "displayname": "dave-renamed"}
        assert (
            await dave.put_state(room, "m.room.member", renamed, dave.user_id)
        ).status_code == 200
        assert (await carol.put_state(room, "m.room.topic", {"topic": "gamma"})).status_code == 200
        pl_a = power_levels({alice.user_id: 100, carol.user_id: 50})
        assert (await alice.put_state(room, "m.room.power_levels", pl_a)).status_code == 200
        ban = await alice.call(
            "POST", f"/_matrix/client/v3/rooms/{room}/ban", {"user_id": dave.user_id}
        )
        assert ban.status_code == 200, ban.text
        assert (await alice.put_state(room, "m.room.topic", {"topic": "alpha"})).status_code == 200
        # Each side sees its own changes while apart.
        assert (await carol.state(room, "m.room.topic"))["topic"] == "gamma"
        assert (await carol.state(room, "m.room.power_levels")) == pl_g
        assert (await alice.state(room, "m.room.topic"))["topic"] == "alpha"
        # Heal.
        for node, others in ((alpha, [gamma]), (beta, [gamma]), (gamma, [alpha, beta])):
            for other in others:
                await node.admin("PUT", "/trust", {"did": other.did, "level": 2})

        async def converged() -> bool:
            views = [await n.room_view(room) for n in (alpha, beta, gamma)]
            if any(v is None for v in views):
                return False
            first = views[0]
            assert first is not None
            return all(
                v is not None
                and v["state"] == first["state"]
                and set(v["events"]) == set(first["events"])
                for v in views[1:]
            )

        await eventually(converged, 30, "the three nodes to converge")
        view = await alpha.room_view(room)
        assert view is not None
        # The winners, by the rules of state resolution v2 (worked out by hand):
        assert (await alice.state(room, "m.room.power_levels")) == pl_a
        assert (await carol.state(room, "m.room.power_levels")) == pl_a
        member = await carol.state(room, "m.room.member", dave.user_id)
        assert member is not None and member["membership"] == "ban"
        assert (await carol.state(room, "m.room.topic"))["topic"] == "alpha"

"""A node backed up while it runs (``cis-node backup``), lost, and restored into a new home
(``cis-node restore``) that runs on a new port: the anchor tells the others where it is now,
it catches up on what was said after the backup, and its users talk again."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Processes, cis_node
from tests.e2e.fed import (
    bodies,
    eventually,
    kill9,
    run_node,
    say,
    three_nodes_one_room,
    wait_mesh,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_a_node_restored_from_a_backup_on_a_new_port_rejoins(processes: Processes) -> None:
    trio = await three_nodes_one_room(processes, "Restore")
    homes, nodes, room = trio.homes, trio.nodes, trio.room
    alice, bob, carol = trio.clients
    try:
        await say(carol, room, "before the backup")

        async def everywhere() -> bool:
            return "before the backup" in await bodies(alice, room)

        await eventually(everywhere, 30, "carol's message on alpha")
        backup = processes.tmp / "gamma-backup"
        result = cis_node("backup", "--home", str(homes["gamma"]), str(backup), timeout=60)
        assert result.returncode == 0, result.stderr
        old_url = nodes["gamma"].url
        kill9(nodes["gamma"])  # the machine is lost
        missed = [f"after the backup {i}" for i in range(10)]
        for i, body in enumerate(missed):
            await say(alice if i % 2 == 0 else bob, room, body)

        restored_home = processes.tmp / "new-machine" / "gamma"
        result = cis_node("restore", "--home", str(restored_home), str(backup), timeout=60)
        assert result.returncode == 0, result.stderr
        nodes["gamma"] = run_node(processes, restored_home, trio.anchor)
        assert nodes["gamma"].url != old_url
        wait_mesh(nodes.values())
        await carol.close()
        carol.homeserver = nodes["gamma"].url  # the restored accounts keep their tokens

        async def caught_up() -> bool:
            return set(missed) <= set(await bodies(carol, room))

        await eventually(caught_up, 45, "the restored gamma to receive what it missed")
        await say(carol, room, "from the restored gamma")

        async def heard() -> bool:
            seen = [await bodies(c, room) for c in (alice, bob)]
            return all("from the restored gamma" in s for s in seen)

        await eventually(heard, 30, "the restored gamma's message on alpha and beta")
        views = [n.room_view(room) for n in nodes.values()]
        assert all(v is not None for v in views)
        assert all(v["state"] == views[0]["state"] for v in views)  # type: ignore[index]
        assert all(set(v["events"]) == set(views[0]["events"]) for v in views)  # type: ignore[index]
    finally:
        await trio.close()

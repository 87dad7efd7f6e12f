"""Small helpers shared by the skill tests."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cis.identity import NodeIdentity
from cis.ids import RoomId
from cis.skills.gateway import CreatorGateway, EventDraft


async def eventually(
    condition: Callable[[], Awaitable[bool] | bool], within: float = 20.0, what: str = ""
) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds (a loaded machine)."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.02)


async def plain_room(gateway: CreatorGateway, identity: NodeIdentity, localpart: str) -> RoomId:
    """A room of this node made by its sovereign user, where members may send anything."""
    room_id = RoomId(f"!{localpart}:{identity.server_name}")
    me = identity.system_user_id
    await gateway.create_room(
        room_id,
        "11",
        [
            EventDraft(me, "m.room.create", {}, ""),
            EventDraft(me, "m.room.member", {"membership": "join"}, me),
            EventDraft(me, "m.room.power_levels", {"users": {me: 100}}, ""),
        ],
    )
    return room_id


async def send_items(
    gateway: CreatorGateway, identity: NodeIdentity, room_id: RoomId, numbers: range, kind: str
) -> None:
    me = identity.system_user_id
    for n in numbers:
        await gateway.send(room_id, EventDraft(me, kind, {"n": n}))


def start_node(processes: Any, home: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``cis-node run`` on 127.0.0.1:0 with ``env`` (started through the e2e ``Processes``, so
    it is killed at teardown); returns once ``run/node.json`` names it."""
    process, log_path = processes.popen(
        [sys.executable, "-m", "cis", "run", "--home", str(home), "--listen", "127.0.0.1:0"],
        f"node-{len(processes.started)}.log",
        stdout=subprocess.DEVNULL,
        env=env,
    )
    runtime = home / "run" / "node.json"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"cis-node run exited:\n{log_path.read_text()}")
        try:
            if json.loads(runtime.read_text()).get("pid") == process.pid:
                return process  # type: ignore[no-any-return]
        except (FileNotFoundError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the node did not start")
        time.sleep(0.02)

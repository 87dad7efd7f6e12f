"""Small helpers shared by the skill tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from cis.identity import NodeIdentity
from cis.ids import RoomId
from cis.skills.gateway import EventDraft
from tests.skills.gateway import CoreGateway


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


async def plain_room(gateway: CoreGateway, identity: NodeIdentity, localpart: str) -> RoomId:
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
    gateway: CoreGateway, identity: NodeIdentity, room_id: RoomId, numbers: range, kind: str
) -> None:
    me = identity.system_user_id
    for n in numbers:
        await gateway.send(room_id, EventDraft(me, kind, {"n": n}))

"""Skills used by the contract tests, installed through a real dist-info (see conftest).

Each reads its configuration (``[skills.NAME]``): ``watch`` lists rooms to deliver, and the
recorder's ``delay_s`` spreads its work around its write so a ``kill -9`` lands inside it.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from typing import Any, ClassVar

from cis.skills import Event, Migration, RoomSpec, SkillApi


class _Base:
    name = "base"
    rooms: tuple[RoomSpec, ...] = ()
    event_types: ClassVar[dict[str, int]] = {}
    migrations: tuple[Migration, ...] = ()

    async def init(self, api: SkillApi) -> None:
        self.api = api
        for room in api.config.get("watch", []):
            await api.watch_room(room)

    async def on_event(self, event: Event) -> None:
        raise NotImplementedError


def _record_txn(conn: sqlite3.Connection, room_id: str, event_id: str, n: int) -> None:
    conn.execute(
        "INSERT INTO items (room_id, event_id, n) VALUES (?, ?, ?)", (room_id, event_id, n)
    )


class Recorder(_Base):
    """Records every ``io.cis.recorder.item`` (its ``n``) in its own table, once."""

    name = "recorder"
    event_types: ClassVar[dict[str, int]] = {"io.cis.recorder.item": 0}
    migrations = (
        Migration(
            1,
            "items",
            (
                """CREATE TABLE items (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    room_id TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    n INTEGER NOT NULL
                )""",
            ),
        ),
    )

    async def init(self, api: SkillApi) -> None:
        await super().init(api)
        self.delay = float(api.config.get("delay_s", 0.0))

        async def count(_args: Any) -> dict[str, Any]:
            rows = await api.database.run_read(
                "count", lambda c: c.execute("SELECT count(*) FROM items").fetchone()
            )
            return {"count": rows[0]}

        api.register_command("count", count)

    async def on_event(self, event: Event) -> None:
        if self.delay:
            await asyncio.sleep(random.uniform(0, self.delay))
        await self.api.database.run_interaction(
            "record", _record_txn, event.room_id, event.event_id, int(event.content["n"])
        )
        if self.delay:
            await asyncio.sleep(random.uniform(0, self.delay))


class Raiser(_Base):
    name = "raiser"
    event_types: ClassVar[dict[str, int]] = {"io.cis.raiser.boom": 0}

    async def on_event(self, event: Event) -> None:
        raise RuntimeError(f"cannot handle {event.event_id}")


class Sleeper(_Base):
    """Blocks its thread: ``time.sleep`` inside a coroutine."""

    name = "sleeper"
    event_types: ClassVar[dict[str, int]] = {"io.cis.sleeper.nap": 0}

    async def on_event(self, event: Event) -> None:
        time.sleep(float(self.api.config.get("seconds", 30)))  # noqa: ASYNC251 (the point)


class Awaiter(_Base):
    """Awaits far longer than its deadline."""

    name = "awaiter"
    event_types: ClassVar[dict[str, int]] = {"io.cis.awaiter.wait": 0}

    async def on_event(self, event: Event) -> None:
        await asyncio.sleep(float(self.api.config.get("seconds", 30)))


class Flooder(_Base):
    """Answers one event with an endless stream of sends."""

    name = "flooder"
    event_types: ClassVar[dict[str, int]] = {"io.cis.flooder.go": 0, "io.cis.flooder.spam": 0}

    async def on_event(self, event: Event) -> None:
        if event.type != "io.cis.flooder.go":
            return
        number = 0
        while True:
            number += 1
            await self.api.send_event(event.room_id, "io.cis.flooder.spam", {"n": number})


class Broken:
    """Not a skill: its on_event is not a coroutine function."""

    name = "broken"
    rooms = ()
    event_types: ClassVar[dict[str, int]] = {}
    migrations = ()

    async def init(self, api: SkillApi) -> None:
        return None

    def on_event(self, event: Event) -> None:
        return None

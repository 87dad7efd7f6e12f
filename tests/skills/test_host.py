"""The skill host: discovery through the entry point, delivery, isolation of failing skills."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cis.node import NodeStorage
from cis.skills.contract import RoomSpec, SkillError
from cis.skills.discovery import installed_skills, load_skill
from cis.skills.gateway import CreatorGateway
from cis.skills.host import SkillHost, SkillState
from cis.storage.rooms.types import EventFilter, Pagination
from tests.skills.conftest import MakeHost
from tests.skills.helpers import eventually, plain_room, send_items

ITEM = "io.cis.recorder.item"


def items(host: SkillHost) -> list[tuple[int, str]]:
    path = host.home.skill_db("recorder")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [
            (int(n), str(e)) for n, e in conn.execute("SELECT n, event_id FROM items ORDER BY seq")
        ]


def test_skills_are_discovered_through_the_entry_point(sample_installed: Path) -> None:
    found = installed_skills()
    assert {"recorder", "raiser", "sleeper", "awaiter", "flooder", "broken"} <= set(found)
    recorder = found["recorder"]
    assert (recorder.distribution, recorder.version) == ("cis-sample-skills", "1.0")
    assert recorder.value == "cis_sample_skills:Recorder"
    skill = load_skill(recorder)
    assert skill.name == "recorder" and skill.event_types == {ITEM: 0}
    with pytest.raises(SkillError, match="on_event must be an async method"):
        load_skill(found["broken"])


def test_a_skill_not_installed_is_not_discovered() -> None:
    assert "recorder" not in installed_skills()


async def test_events_are_delivered_once_in_order_across_restarts(
    make_host: MakeHost, storage: NodeStorage, gateway: CreatorGateway
) -> None:
    identity = storage.identity
    room = await plain_room(gateway, identity, "items")
    await send_items(gateway, identity, room, range(1, 31), ITEM)
    settings = {"per_skill": {"recorder": {"watch": [room]}}}
    host = await make_host(("recorder",), **settings)
    await send_items(gateway, identity, room, range(31, 61), ITEM)
    await send_items(gateway, identity, room, range(1, 4), "m.room.message")  # not handled
    await eventually(lambda: len(items(host)) == 60, what="60 items")
    await host.stop()
    again = await make_host(("recorder",), **settings)
    await send_items(gateway, identity, room, range(61, 71), ITEM)
    await eventually(lambda: len(items(again)) == 70, what="70 items")
    await asyncio.sleep(0.2)
    recorded = items(again)
    assert [n for n, _ in recorded] == list(range(1, 71))
    assert len({e for _, e in recorded}) == 70
    status = {s.name: s for s in again.statuses()}["recorder"]
    assert status.state == "running" and status.rooms == (room,) and status.counters["events"] == 10


async def test_a_raising_skill_is_disabled_and_the_others_go_on(
    make_host: MakeHost, storage: NodeStorage, gateway: CreatorGateway
) -> None:
    identity = storage.identity
    room = await plain_room(gateway, identity, "mixed")
    per_skill = {"recorder": {"watch": [room]}, "raiser": {"watch": [room]}}
    host = await make_host(("recorder", "raiser"), per_skill=per_skill)
    await send_items(gateway, identity, room, range(1, 3), "io.cis.raiser.boom")
    await send_items(gateway, identity, room, range(1, 21), ITEM)
    raiser = host.runtime("raiser")
    assert raiser is not None
    await eventually(lambda: raiser.state is SkillState.DISABLED, what="the raiser disabled")
    await eventually(lambda: len(items(host)) == 20, what="the recorder's 20 items")
    assert raiser.counters.errors == 1 and "RuntimeError" in str(raiser.reason)
    with pytest.raises(SkillError):
        await host.call_command("raiser", "anything", {})


class LoopWatch:
    """Measures the longest gap between wake-ups of a task on the node's loop."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.mark.parametrize("blocker", ["sleeper", "awaiter"])
async def test_a_blocking_skill_is_disabled_without_stalling_the_node(
    make_host: MakeHost, storage: NodeStorage, gateway: CreatorGateway, blocker: str
) -> None:
    identity = storage.identity
    room = await plain_room(gateway, identity, f"block-{blocker}")
    per_skill = {"recorder": {"watch": [room]}, blocker: {"watch": [room], "seconds": 20}}
    kind = {"sleeper": "io.cis.sleeper.nap", "awaiter": "io.cis.awaiter.wait"}[blocker]
    threads_before = {t.name for t in threading.enumerate()}
    with LoopWatch() as watch:
        host = await make_host(("recorder", blocker), per_skill=per_skill, handler_timeout_s=0.5)
        started = time.monotonic()
        await send_items(gateway, identity, room, range(1, 2), kind)
        await send_items(gateway, identity, room, range(1, 11), ITEM)
        runtime = host.runtime(blocker)
        assert runtime is not None
        await eventually(lambda: runtime.state is SkillState.DISABLED, what="disabled")
        assert time.monotonic() - started < 10
        await eventually(lambda: len(items(host)) == 10, what="the recorder's items")
        stopping = time.monotonic()
        await host.stop()
        assert time.monotonic() - stopping < 8
    assert watch.longest < 0.5, f"the node's loop stalled for {watch.longest:.2f} s"
    assert runtime.counters.timeouts == 1 and "ran over" in str(runtime.reason)
    assert "cis-skill-recorder" not in {t.name for t in threading.enumerate()} - threads_before
    if blocker == "awaiter":  # a cancellable skill's thread ends; a blocked one is abandoned
        await eventually(
            lambda: f"cis-skill-{blocker}" not in {t.name for t in threading.enumerate()},
            what="the awaiter's thread to end",
        )


async def test_a_flooding_skill_is_disabled(
    make_host: MakeHost, storage: NodeStorage, gateway: CreatorGateway
) -> None:
    identity = storage.identity
    room = await plain_room(gateway, identity, "flood")
    per_skill = {"recorder": {"watch": [room]}, "flooder": {"watch": [room]}}
    with LoopWatch() as watch:
        host = await make_host(
            ("recorder", "flooder"), per_skill=per_skill, events_per_s=5, events_burst=20
        )
        await send_items(gateway, identity, room, range(1, 2), "io.cis.flooder.go")
        runtime = host.runtime("flooder")
        assert runtime is not None
        await eventually(lambda: runtime.state is SkillState.DISABLED, what="disabled")
        await send_items(gateway, identity, room, range(1, 6), ITEM)
        await eventually(lambda: len(items(host)) == 5, what="the recorder's items")
    assert runtime.counters.floods == 1 and "flooding" in str(runtime.reason)
    store = await storage.rooms.get(room)
    assert store is not None
    spam = await store.query_events(
        EventFilter(types=("io.cis.flooder.spam",)), Pagination(limit=100)
    )
    assert 20 <= len(spam.events) <= 25  # the burst and a few refilled tokens, nothing more
    assert watch.longest < 0.5


async def test_a_skill_that_is_not_installed_fails_alone(
    make_host: MakeHost, storage: NodeStorage, gateway: CreatorGateway
) -> None:
    room = await plain_room(gateway, storage.identity, "alone")
    host = await make_host(("nosuchskill", "recorder"), per_skill={"recorder": {"watch": [room]}})
    states = {s.name: (s.state, s.reason) for s in host.statuses()}
    assert states["nosuchskill"][0] == "failed" and "not installed" in str(states["nosuchskill"][1])
    assert states["recorder"][0] == "running"
    assert states["raiser"][0] == "not enabled"
    assert (await host.call_command("recorder", "count", {})) == {"count": 0}


async def test_skill_rooms_and_sandbox_rooms(make_host: MakeHost, storage: NodeStorage) -> None:
    host = await make_host(("recorder",))
    runtime = host.runtime("recorder")
    assert runtime is not None and runtime.api is not None
    api = runtime.api
    room = await api.create_room(RoomSpec("notes", federate=True, name="notes"))
    assert room == "!notes:alpha.cis.local"
    assert await api.create_room(RoomSpec("notes", federate=True)) == room  # returned, not redone
    create = await api.get_state(room, "m.room.create")
    levels = await api.get_state(room, "m.room.power_levels")
    assert create is not None and create.content["io.cis.skill"] == "recorder"
    assert levels is not None and levels.content["events"][ITEM] == 0
    assert levels.content["users"] == {storage.identity.system_user_id: 100}
    sent = await api.send_event(room, ITEM, {"n": 1}, txn_id="once")
    assert await api.send_event(room, ITEM, {"n": 1}, txn_id="once") == sent  # idempotent
    assert [e.event_id for e in await api.room_events(room, types=[ITEM])] == [sent]
    await eventually(lambda: len(items(host)) == 1, what="the recorder's own event")

    sandbox = await api.create_room(RoomSpec("try-protocol", sandbox=True))
    create = await api.get_state(sandbox, "m.room.create")
    assert create is not None and create.content["m.federate"] is False
    assert await api.get_state(sandbox, "io.cis.room.federation") is None
    await api.archive_sandbox_room(sandbox)
    assert await storage.rooms.get(sandbox) is None
    with pytest.raises(SkillError, match="not a sandbox room"):
        await api.archive_sandbox_room(room)
    other = await make_host(("raiser",))
    raiser = other.runtime("raiser")
    assert raiser is not None and raiser.api is not None
    with pytest.raises(SkillError, match="does not belong to skill raiser"):
        await raiser.api.create_room(RoomSpec("notes"))

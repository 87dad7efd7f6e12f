"""kill -9 at random points inside a skill's handlers: every event's effect happens exactly once,
in order (the skill's position commits with its writes)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from cis.clock import SystemClock
from cis.config import load_config
from cis.home import Home
from cis.node import NodeStorage
from tests.e2e.conftest import Processes, wait_for
from tests.skills.conftest import install_sample
from tests.skills.gateway import creator_gateway
from tests.skills.helpers import plain_room, send_items, start_node

pytestmark = pytest.mark.e2e

EVENTS = 150
KILLS = 6
BUDGET_S = 100.0
ROOM = "!items:alpha.cis.local"


async def _populate(home: Home) -> None:
    storage = NodeStorage(home, load_config(home, environ={}))
    await storage.open()
    try:
        gateway = creator_gateway(storage.rooms, storage.identity, SystemClock())
        room = await plain_room(gateway, storage.identity, "items")
        assert room == ROOM
        await send_items(
            gateway, storage.identity, room, range(1, EVENTS + 1), "io.cis.recorder.item"
        )
    finally:
        await storage.close()


def _recorded(home: Path) -> list[tuple[int, str]]:
    path = home / "skills" / "recorder.db"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute("SELECT n, event_id FROM items ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # the table is not created yet
        return []
    return [(int(n), str(e)) for n, e in rows]


def test_kill_9_inside_handlers_neither_loses_nor_repeats_an_effect(
    processes: Processes, node_home: Path, tmp_path: Path
) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    asyncio.run(_populate(Home(node_home)))
    (node_home / "config.toml").write_text(
        f'[skills]\nenabled = ["recorder"]\n\n[skills.recorder]\nwatch = ["{ROOM}"]\n'
        "delay_s = 0.03\n",
        encoding="utf-8",
    )
    site = install_sample(tmp_path / "site")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    deadline = time.monotonic() + BUDGET_S
    progress = []
    for _ in range(KILLS):
        assert time.monotonic() < deadline, f"seed {seed}: out of time after {progress}"
        process = start_node(processes, node_home, env)
        time.sleep(rng.uniform(0.3, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        progress.append(len(_recorded(node_home)))
        if progress[-1] == EVENTS:
            break
    assert sum(0 < p < EVENTS for p in progress) >= 3, f"seed {seed}: kills at {progress}"
    process = start_node(processes, node_home, env)
    wait_for(lambda: len(_recorded(node_home)) >= EVENTS, 60, "every event handled")
    time.sleep(0.3)  # nothing more arrives
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    recorded = _recorded(node_home)
    numbers = [n for n, _ in recorded]
    assert numbers == list(range(1, EVENTS + 1)), f"seed {seed}: kills at {progress}"
    assert len({e for _, e in recorded}) == EVENTS

"""kill -9 at random moments loses no acknowledged event and leaves every database sound."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.consistency import check_home
from tests.e2e.conftest import Processes

pytestmark = pytest.mark.e2e

KILLS = 20
BUDGET_S = 90.0


def _read_acks(stream: object, acked: set[str], ready: threading.Event) -> None:
    for line in stream:  # type: ignore[attr-defined]
        if line.startswith("ack "):
            acked.add(line[4:].strip())
        elif line.strip() == "ready":
            ready.set()


def test_sigkill_loses_no_acknowledged_event(processes: Processes, node_home: Path) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    acked: set[str] = set()
    deadline = time.monotonic() + BUDGET_S
    kills = 0
    kills_while_writing = 0
    while kills < KILLS:
        assert time.monotonic() < deadline, f"only {kills} kills within {BUDGET_S} s (seed {seed})"
        writer = processes.writer(node_home)
        ready = threading.Event()
        mine: set[str] = set()
        reader = threading.Thread(target=_read_acks, args=(writer.stdout, mine, ready))
        reader.start()
        # Kill at a random moment: sometimes during start-up and recovery, mostly mid-write.
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            assert ready.wait(30), "the writer did not start"
            time.sleep(rng.uniform(0.05, 0.6))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        reader.join(timeout=10)  # the pipe still holds acks written before the kill
        kills += 1
        kills_while_writing += bool(mine)
        acked |= mine
    assert kills_while_writing >= KILLS // 2, f"seed {seed}"
    assert len(acked) > 1000, f"seed {seed}: only {len(acked)} events acknowledged"

    # The real node starts on the killed home, re-indexes, serves and stops cleanly.
    node = processes.run_node(node_home)
    log = node.log()
    assert "action=unclean_stop_detected" in log and "action=reindexed" in log
    status = node.get("/_cis/admin/v1/status").json()
    assert status["rooms"] == 3
    assert node.stop() == 0, node.log()

    check = check_home(node_home)  # integrity_check on every file; indexes match the rooms
    lost = acked - check.all_events
    assert not lost, f"seed {seed}: {len(lost)} acknowledged events lost, e.g. {sorted(lost)[:3]}"

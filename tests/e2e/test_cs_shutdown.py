"""SIGTERM ends open /sync long-polls and the node exits within 5 s."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Processes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

V3 = "/_matrix/client/v3"


async def test_sigterm_with_long_polls_open(processes: Processes, node_home: Path) -> None:
    node = processes.run_node(node_home, "--open-registration", "--log-level", "warning")
    async with httpx.AsyncClient(base_url=node.url, timeout=70) as http:
        r = await http.post(
            f"{V3}/register",
            json={"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}},
        )
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        since = (await http.get(f"{V3}/sync", headers=auth)).json()["next_batch"]
        polls = [
            asyncio.create_task(
                http.get(f"{V3}/sync", headers=auth, params={"since": since, "timeout": "60000"})
            )
            for _ in range(3)
        ]
        await asyncio.sleep(0.5)
        assert not any(p.done() for p in polls)
        started = time.monotonic()
        node.process.send_signal(signal.SIGTERM)
        answers = await asyncio.wait_for(asyncio.gather(*polls, return_exceptions=True), 10)
    assert node.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    for answer in answers:
        # Answered (empty, same positions) or cut off by the stopping server: never hung.
        assert isinstance(answer, httpx.HTTPError) or answer.status_code == 200

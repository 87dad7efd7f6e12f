"""``kill -9`` a node while clients send: after a restart the clients carry on with their old
access token and ``since`` token, every acknowledged event is there, a retried txn id returns
the same event, and nothing appears twice."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Processes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

V3 = "/_matrix/client/v3"
SENDERS = 4


async def send(http: httpx.AsyncClient, token: str, room: str, txn: str) -> str:
    r = await http.put(
        f"{V3}/rooms/{room}/send/m.room.message/{txn}",
        headers={"Authorization": f"Bearer {token}"},
        json={"msgtype": "m.text", "body": txn},
    )
    r.raise_for_status()
    event_id: str = r.json()["event_id"]
    return event_id


async def all_bodies(http: httpx.AsyncClient, token: str, room: str) -> list[str]:
    bodies: list[str] = []
    params: dict[str, str] = {"dir": "b", "limit": "500"}
    for _ in range(100):
        r = await http.get(
            f"{V3}/rooms/{room}/messages",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        )
        r.raise_for_status()
        page = r.json()
        bodies += [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]
        if "end" not in page:
            return bodies
        params["from"] = page["end"]
    raise AssertionError("pagination did not end")


async def test_kill_9_while_clients_send(processes: Processes, node_home: Path) -> None:
    node = processes.run_node(node_home, "--open-registration", "--log-level", "warning")
    acked: dict[str, str] = {}
    attempted: list[str] = []
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as http:
        r = await http.post(
            f"{V3}/register",
            json={"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}},
        )
        token = r.json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        r = await http.post(f"{V3}/createRoom", headers=auth, json={"name": "crash"})
        room = r.json()["room_id"]
        since = (await http.get(f"{V3}/sync", headers=auth)).json()["next_batch"]

        async def sender(k: int) -> None:
            for i in range(10_000):
                txn = f"w{k}-{i}"
                attempted.append(txn)
                try:
                    acked[txn] = await send(http, token, room, txn)
                except (httpx.HTTPError, KeyError):
                    return

        tasks = [asyncio.create_task(sender(k)) for k in range(SENDERS)]
        for _ in range(400):
            if len(acked) >= 150:
                break
            await asyncio.sleep(0.02)
        node.process.send_signal(signal.SIGKILL)  # while the senders are mid-request
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert node.process.wait(timeout=10) == -signal.SIGKILL
    assert len(acked) >= 50

    restarted = processes.run_node(node_home, "--open-registration", "--log-level", "warning")
    async with httpx.AsyncClient(base_url=restarted.url, timeout=30) as http:
        # The old access token and the old since token still work.
        r = await http.get(f"{V3}/account/whoami", headers=auth)
        assert r.status_code == 200 and r.json()["user_id"] == "@alice:alpha.cis.local"
        r = await http.get(f"{V3}/sync", headers=auth, params={"since": since, "timeout": "1000"})
        assert r.status_code == 200
        synced = r.json()["rooms"]["join"][room]["timeline"]
        assert synced["events"] and synced["limited"] is True
        # Every acknowledged event is there, with the body it was sent with.
        for txn, event_id in list(acked.items())[:: max(1, len(acked) // 40)]:
            r = await http.get(f"{V3}/rooms/{room}/event/{event_id}", headers=auth)
            assert r.status_code == 200 and r.json()["content"]["body"] == txn
        # Retrying an acknowledged txn id returns the same event; retrying the ones in flight
        # at the kill stores each at most once.
        for txn, event_id in acked.items():
            assert await send(http, token, room, txn) == event_id
        in_flight = [t for t in attempted if t not in acked]
        for txn in in_flight:
            await send(http, token, room, txn)
            assert await send(http, token, room, txn)  # and again: still one event
        counts = Counter(await all_bodies(http, token, room))
        assert all(n == 1 for n in counts.values()), [b for b, n in counts.items() if n > 1]
        assert set(acked) <= set(counts)
        assert set(in_flight) <= set(counts)
        # The client carries on: a new send appears in its next sync.
        nxt = (await http.get(f"{V3}/sync", headers=auth)).json()["next_batch"]
        await send(http, token, room, "after-restart")
        r = await http.get(f"{V3}/sync", headers=auth, params={"since": nxt, "timeout": "10000"})
        bodies: list[Any] = [
            e["content"].get("body") for e in r.json()["rooms"]["join"][room]["timeline"]["events"]
        ]
        assert bodies == ["after-restart"]
    assert restarted.stop() == 0

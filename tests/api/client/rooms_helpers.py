"""Helpers for room tests: two users, a room, sends and syncs."""

from __future__ import annotations

from typing import Any

from tests.api.client.harness import V3, Harness, auth


async def create_room(h: Harness, token: str, **body: Any) -> str:
    r = await h.client.post(f"{V3}/createRoom", headers=auth(token), json=body)
    assert r.status_code == 200, r.text
    room_id: str = r.json()["room_id"]
    return room_id


async def send(h: Harness, token: str, room: str, body: str, txn: str | None = None) -> str:
    txn = txn or f"t{body}"
    r = await h.client.put(
        f"{V3}/rooms/{room}/send/m.room.message/{txn}",
        headers=auth(token),
        json={"msgtype": "m.text", "body": body},
    )
    assert r.status_code == 200, r.text
    event_id: str = r.json()["event_id"]
    return event_id


async def sync(h: Harness, token: str, since: str | None = None, **params: str) -> dict[str, Any]:
    query = dict(params)
    if since is not None:
        query["since"] = since
    r = await h.client.get(f"{V3}/sync", headers=auth(token), params=query)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def settle(h: Harness) -> None:
    """Wait until every stored event is indexed and the watcher has processed it."""
    import asyncio

    async with asyncio.timeout(10):
        while h.positions.current < h.positions.last_allocated:
            await h.positions.wait_beyond(h.positions.current)
        for _ in range(5000):  # the watcher reads node.db right after the position moved
            if h.watcher.position >= h.positions.current:
                return
            await asyncio.sleep(0.002)


def bodies(section: dict[str, Any]) -> list[str]:
    return [
        e["content"]["body"] for e in section["timeline"]["events"] if e["type"] == "m.room.message"
    ]

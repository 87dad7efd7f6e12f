"""The admin API in-process, through an ASGI client, on real storage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cis.api.app import create_app
from cis.clock import FakeClock
from cis.handlers.admin import AdminHandler
from cis.handlers.status import StatusHandler
from cis.home import Home
from cis.identity import NodeIdentity
from cis.storage.homes import initialise_home
from cis.storage.node_store import NodeStore
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.stream import StreamPositions
from tests.factories import make_event

TOKEN = "t" * 43
STATUS_KEYS = {
    "node_id", "did", "did_key", "server_name", "version", "running", "listen", "uptime_s",
    "rooms", "storage",
}  # fmt: skip


@dataclass
class Api:
    client: httpx.AsyncClient
    rooms: RoomStoreManager
    clock: FakeClock
    identity: NodeIdentity


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    home = Home(tmp_path / "home")
    home.root.mkdir()
    identity = NodeIdentity.generate("alpha")
    initialise_home(home, identity, 0)
    node = NodeStore.open(home)
    clock = FakeClock()
    positions = StreamPositions(0)
    rooms = RoomStoreManager(home, node, positions, clock=clock, max_open_rooms=4)
    status = StatusHandler(home, identity, node, clock, lambda: "127.0.0.1:8484")
    app = create_app(status=status, admin=AdminHandler(rooms, positions), admin_token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        yield Api(client, rooms, clock, identity)
    await rooms.close()
    node.close()


async def test_status_is_public_with_exactly_its_keys(api: Api) -> None:
    api.clock.advance(42)
    await api.rooms.get_or_create("!r:alpha.cis.local")
    response = await api.client.get("/_cis/admin/v1/status")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == STATUS_KEYS
    assert body["did"] == api.identity.did and body["did_key"] == api.identity.did_key
    assert body["running"] is True and body["listen"] == "127.0.0.1:8484"
    assert body["uptime_s"] == 42 and body["rooms"] == 1
    storage = body["storage"]
    assert storage["total_bytes"] >= storage["node_db_bytes"] + storage["rooms_bytes"] > 0


@pytest.mark.parametrize(
    ("headers", "errcode"),
    [
        ({}, "M_MISSING_TOKEN"),
        ({"Authorization": "Bearer nope"}, "M_UNKNOWN_TOKEN"),
        ({"Authorization": f"Basic {TOKEN}"}, "M_UNKNOWN_TOKEN"),
        ({"Authorization": "Bearer " + "t" * 42}, "M_UNKNOWN_TOKEN"),
    ],
)
async def test_other_routes_need_the_admin_token(
    api: Api, headers: dict[str, str], errcode: str
) -> None:
    response = await api.client.get("/_cis/admin/v1/rooms", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"errcode": errcode, "error": response.json()["error"]}
    assert TOKEN not in response.text


async def test_rooms_listing(api: Api) -> None:
    await api.rooms.get_or_create("!r:alpha.cis.local")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = (await api.client.get("/_cis/admin/v1/rooms", headers=auth)).json()
    assert [r["room_id"] for r in body["rooms"]] == ["!r:alpha.cis.local"]
    assert body["rooms"][0]["status"] == "active"


async def test_stream_long_poll_wakes_on_a_new_event_and_times_out(api: Api) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    timed_out = await api.client.get("/_cis/admin/v1/stream?from=0&timeout=50", headers=auth)
    assert timed_out.json() == {"position": 0}
    store = await api.rooms.get_or_create("!r:alpha.cis.local")
    poll = asyncio.create_task(
        api.client.get("/_cis/admin/v1/stream?from=0&timeout=30000", headers=auth)
    )
    await asyncio.sleep(0.05)
    assert not poll.done()
    await store.store_event(make_event("!r:alpha.cis.local"))
    async with asyncio.timeout(10):
        response = await poll
    assert response.json()["position"] >= 1


@pytest.mark.parametrize("query", ["from=-1", "from=x", "timeout=60001", "timeout=-5"])
async def test_bad_parameters_are_m_invalid_param(api: Api, query: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = await api.client.get(f"/_cis/admin/v1/stream?{query}", headers=auth)
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_INVALID_PARAM"
    assert "x" not in response.json()["error"].replace("Invalid parameter", "")


async def test_unknown_routes_are_matrix_shaped(api: Api) -> None:
    missing = await api.client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["errcode"] == "M_UNRECOGNIZED"
    wrong_method = await api.client.post("/_cis/admin/v1/status")
    assert wrong_method.status_code == 405 and wrong_method.json()["errcode"] == "M_UNRECOGNIZED"

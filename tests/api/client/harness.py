"""An in-process Client-Server API over the real stores (no network): for ASGI tests.

It constructs the components the way ``cis.node`` does: ``node.db``, the Room Store, the
Matrix core's signing identity, every handler, and the router.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cis.api.client.app import build_client_api
from cis.clock import FakeClock
from cis.handlers.accounts import AccountHandler
from cis.handlers.notifier import Notifier
from cis.handlers.passwords import PasswordHasher, ScryptParams
from cis.handlers.ratelimit import RateLimits
from cis.handlers.room_cache import EventCreator
from cis.handlers.stream_watch import IndexTap, StreamWatcher
from cis.home import Home
from cis.identity import NodeIdentity
from cis.matrix import parse_pdu
from cis.node import wire_client_api
from cis.storage.database import Database
from cis.storage.node_store import NodeStore
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.stream import StreamPositions

NODE = "test"
SERVER = "test.cis.local"
V3 = "/_matrix/client/v3"


@dataclass
class Harness:
    client: httpx.AsyncClient
    clock: FakeClock
    db: Database
    notifier: Notifier
    accounts: AccountHandler
    limits: RateLimits
    manager: RoomStoreManager
    positions: StreamPositions
    watcher: StreamWatcher
    identity: NodeIdentity
    creator: EventCreator

    async def register(self, name: str, password: str = "pw") -> dict[str, Any]:
        r = await self.client.post(
            f"{V3}/register",
            json={"username": name, "password": password, "auth": {"type": "m.login.dummy"}},
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_harness(
    tmp_path: Path,
    *,
    open_registration: bool = True,
    limits: RateLimits | None = None,
    max_upload: int = 1024 * 1024,
) -> AsyncIterator[Harness]:
    clock = FakeClock()
    root = tmp_path / "home"
    root.mkdir(mode=0o700, exist_ok=True)
    home = Home(root)
    node_store = NodeStore.open(home, create=True)
    identity = NodeIdentity.generate(NODE)
    node_store.initialise(identity, clock.time_ms())
    db = node_store.db
    positions = StreamPositions(node_store.status().stream_max)
    tap = IndexTap(node_store)
    manager = RoomStoreManager(
        home, tap, positions, clock=clock, max_open_rooms=16, pdu_parser=parse_pdu
    )
    limits = limits or RateLimits()
    hasher = PasswordHasher(ScryptParams(log_n=8))
    wired = await wire_client_api(
        identity=identity,
        db=db,
        rooms=manager,
        positions=positions,
        index_tap=tap,
        blobs=root / "blobs",
        clock=clock,
        limits=limits,
        hasher=hasher,
        open_registration=open_registration,
        max_upload_bytes=max_upload,
    )
    notifier, watcher, typing = wired.stores.notifier, wired.stores.watcher, wired.stores.typing
    handlers = wired.handlers
    app = build_client_api(handlers)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Harness(
                client,
                clock,
                db,
                notifier,
                wired.accounts,
                limits,
                manager,
                positions,
                watcher,
                identity,
                wired.creator,
            )
    finally:
        notifier.close()
        typing.close()
        await watcher.close()
        positions.close()
        await manager.close()
        hasher.close()
        node_store.close()

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from cis.clock import FakeClock
from cis.home import Home
from cis.storage.node_store import NodeStore
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.stream import StreamPositions

ROOM = "!room:alpha.cis.local"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    root = tmp_path / "home"
    root.mkdir(mode=0o700)
    return Home(root)


@pytest.fixture
def node_store(home: Home) -> Iterator[NodeStore]:
    store = NodeStore.open(home, create=True)
    yield store
    store.close()


MakeManager = Callable[..., RoomStoreManager]


@pytest.fixture
async def make_manager(home: Home, node_store: NodeStore) -> AsyncIterator[MakeManager]:
    made: list[RoomStoreManager] = []

    def make(**options: object) -> RoomStoreManager:
        options.setdefault("max_open_rooms", 8)
        manager = RoomStoreManager(
            home,
            node_store,
            StreamPositions(node_store.status().stream_max),
            clock=FakeClock(),
            **options,  # type: ignore[arg-type]
        )
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.close()


@pytest.fixture
async def manager(make_manager: MakeManager) -> RoomStoreManager:
    return make_manager()


async def settle(manager: RoomStoreManager) -> None:
    """Wait until every allocated position is indexed in node.db."""
    async with asyncio.timeout(10):
        while manager.positions.current < manager.positions.last_allocated:
            await manager.positions.wait_beyond(manager.positions.current)

"""An anchor in process: the real app over a real SQLite file, a fake clock, and an httpx
client speaking ASGI to it (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cis.anchor.app import AnchorConfig, AnchorService, create_app
from cis.clock import FakeClock
from cis.storage.anchor import AnchorStore

BASE = "http://anchor.test:8600"
NAME = "anchor.test:8600"


@dataclass
class InProcessAnchor:
    service: AnchorService
    clock: FakeClock
    transport: httpx.ASGITransport
    http: httpx.AsyncClient


@pytest.fixture
def anchor_store(tmp_path: Path) -> Iterator[AnchorStore]:
    store = AnchorStore(tmp_path / "anchor.db")
    store.open()
    yield store
    store.close()


@pytest.fixture
def anchor_config() -> AnchorConfig:
    return AnchorConfig()


@pytest.fixture
async def anchor(
    anchor_store: AnchorStore, anchor_config: AnchorConfig
) -> AsyncIterator[InProcessAnchor]:
    clock = FakeClock()
    service = AnchorService(anchor_store, clock, anchor_config)
    transport = httpx.ASGITransport(app=create_app(service), client=("192.0.2.10", 40_000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield InProcessAnchor(service, clock, transport, http)

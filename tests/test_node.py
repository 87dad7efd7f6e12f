"""``Node`` in-process on a real socket: start, serve, stop with a long-poll open."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from cis.config import load_config
from cis.home import Home
from cis.identity import NodeIdentity
from cis.node import Node
from cis.storage.errors import HomeInUse, NoNode
from cis.storage.homes import initialise_home, write_admin_token


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.root.mkdir()
    initialise_home(home, NodeIdentity.generate("alpha"), 0)
    write_admin_token(home)
    return home


async def test_start_serve_and_stop_with_a_long_poll_open(home: Home) -> None:
    config = load_config(home, flags={"--listen": "127.0.0.1:0"}, environ={})
    node = Node(home, config)
    try:
        await node.start()
        runtime = json.loads(home.runtime_file.read_text())
        assert runtime["url"] == node.url and node.listen is not None and node.listen.port > 0
        token = home.admin_token.read_text().strip()
        async with httpx.AsyncClient(base_url=str(node.url), timeout=30) as client:
            status = (await client.get("/_cis/admin/v1/status")).json()
            assert status["listen"] == str(node.listen)
            poll = asyncio.create_task(
                client.get(
                    "/_cis/admin/v1/stream?from=99&timeout=60000",
                    headers={"Authorization": f"Bearer {token}"},
                )
            )
            await asyncio.sleep(0.2)
            assert not poll.done()
            started = time.monotonic()
            await node.stop()
            assert time.monotonic() - started < 5
            assert (await poll).status_code == 200
    finally:
        await node.stop()
    assert not home.runtime_file.exists()
    second = Node(home, config)  # the lock was released
    try:
        await second.start()
    finally:
        await second.stop()


async def test_a_second_node_on_the_same_home_is_refused(home: Home) -> None:
    config = load_config(home, flags={"--listen": "127.0.0.1:0"}, environ={})
    first, second = Node(home, config), Node(home, config)
    try:
        await first.start()
        with pytest.raises(HomeInUse):
            await second.start()
        await second.stop()
        assert home.runtime_file.exists()  # the refused node leaves the runner's file alone
    finally:
        await first.stop()


async def test_a_home_without_a_node_is_refused(tmp_path: Path) -> None:
    home = Home(tmp_path / "empty")
    node = Node(home, load_config(home, environ={}))
    try:
        with pytest.raises(NoNode, match="cis-node init"):
            await node.start()
    finally:
        await node.stop()

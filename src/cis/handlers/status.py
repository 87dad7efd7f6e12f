"""The node's status, as ``cis-node status --json`` and ``GET /_cis/admin/v1/status`` show it.

Both return exactly the keys of ``NodeStatus``; the CLI builds it from ``node.db`` read-only
when no node runs (``running: false``, ``listen`` and ``uptime_s`` null).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypedDict

from cis import __version__
from cis.clock import Clock
from cis.home import Home
from cis.identity import NodeIdentity
from cis.storage.node_store import NodeStore
from cis.storage.usage import StorageUsage, measure_storage

__all__ = ["NodeStatus", "StatusHandler", "StorageStatus", "build_status"]


class StorageStatus(TypedDict):
    node_db_bytes: int
    rooms_bytes: int
    blobs_bytes: int
    total_bytes: int


class NodeStatus(TypedDict):
    node_id: str
    did: str
    did_key: str
    server_name: str
    version: str
    running: bool
    listen: str | None
    uptime_s: int | None
    rooms: int
    storage: StorageStatus


def build_status(
    identity: NodeIdentity,
    *,
    running: bool,
    listen: str | None,
    uptime_s: int | None,
    rooms: int,
    usage: StorageUsage,
) -> NodeStatus:
    return {
        "node_id": identity.node_id,
        "did": identity.did,
        "did_key": identity.did_key,
        "server_name": identity.server_name,
        "version": __version__,
        "running": running,
        "listen": listen,
        "uptime_s": uptime_s,
        "rooms": rooms,
        "storage": {
            "node_db_bytes": usage.node_db_bytes,
            "rooms_bytes": usage.rooms_bytes,
            "blobs_bytes": usage.blobs_bytes,
            "total_bytes": usage.total_bytes,
        },
    }


class StatusHandler:
    """The running node's status."""

    def __init__(
        self,
        home: Home,
        identity: NodeIdentity,
        node_store: NodeStore,
        clock: Clock,
        listen: Callable[[], str | None],
    ) -> None:
        self._home = home
        self._identity = identity
        self._node_store = node_store
        self._clock = clock
        self._listen = listen
        self._started = clock.monotonic()

    async def status(self) -> NodeStatus:
        rooms, _missing = await self._node_store.count_rooms()
        usage = await asyncio.to_thread(measure_storage, self._home)
        return build_status(
            self._identity,
            running=True,
            listen=self._listen(),
            uptime_s=int(self._clock.monotonic() - self._started),
            rooms=rooms,
            usage=usage,
        )

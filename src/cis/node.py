"""The composition root: the only place that constructs the node's components.

``NodeStorage`` is the node's data: the home's lock, ``node.db``, crash recovery, the stream
positions and the Room Store. ``Node`` is a running node: its storage plus the handlers and the
HTTP server. Each ``start``/``open`` has a ``stop``/``close`` that owns every thread, task, file
and socket it made, and is safe after a partial start.

Start: take the home's lock; open ``node.db``; read the identity; clear the clean-shutdown
marker, re-indexing the rooms first if it was already clear (an unclean stop); build the Room
Store, handlers and HTTP app; bind the listening socket; serve; write ``run/node.json``.

Stop (SIGTERM/SIGINT, within 5 s even with long-polls open): stop accepting connections and end
the long-polls (the stream positions close), let uvicorn finish in-flight responses (bounded),
drain every room's writer and the derived-index writes, close the readers, set the
clean-shutdown marker, ``wal_checkpoint(TRUNCATE)`` and close ``node.db``, remove
``run/node.json``, release the lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
from typing import TYPE_CHECKING, Final

from cis.clock import Clock, SystemClock
from cis.config import Config, ListenAddress
from cis.errors import CisError
from cis.home import Home
from cis.identity import NodeIdentity
from cis.log import get_logger
from cis.storage.homes import write_admin_token
from cis.storage.lock import HomeLock
from cis.storage.node_store import NodeStore
from cis.storage.recovery import reindex
from cis.storage.rooms.manager import (
    PduParser,
    RoomStoreManager,
    default_max_open_rooms,
    raise_nofile_limit,
)
from cis.storage.stream import StreamPositions

if TYPE_CHECKING:
    from cis.api.server import HttpServer
    from cis.skills.host import SkillHost

__all__ = ["Node", "NodeStartFailed", "NodeStorage", "read_runtime_file"]

log = get_logger(__name__)

READ_THREADS: Final = 8


class NodeStartFailed(CisError):
    """The node could not start (the message says why)."""


def read_admin_token(home: Home) -> str:
    try:
        token = home.admin_token.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        write_admin_token(home)
        log.warning("admin_token_created", path=str(home.admin_token))
        token = home.admin_token.read_text(encoding="ascii").strip()
    if len(token) < 32:
        raise NodeStartFailed(f"{home.admin_token} is too short; delete it to get a new one")
    return token


def read_runtime_file(home: Home) -> dict[str, object] | None:
    """``run/node.json`` (``{"pid", "url"}``) of the running node, if present and readable."""
    try:
        data = json.loads(home.runtime_file.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def local_url(bound: ListenAddress) -> str:
    """An URL local tools can reach: a wildcard address is reached through loopback."""
    wildcard_to_loopback = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (a mapping, not a bind)
    host = wildcard_to_loopback.get(bound.host, bound.host)
    return f"http://{ListenAddress(host, bound.port)}"


class NodeStorage:
    """The node's data on one home, held exclusively. ``open``, then ``close`` (always)."""

    def __init__(
        self,
        home: Home,
        config: Config,
        *,
        clock: Clock | None = None,
        pdu_parser: PduParser | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._pdu_parser = pdu_parser
        self._lock = HomeLock(home, "run")
        self._read_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._node_store: NodeStore | None = None
        self._identity: NodeIdentity | None = None
        self._positions: StreamPositions | None = None
        self._rooms: RoomStoreManager | None = None
        self._closed = False

    @property
    def identity(self) -> NodeIdentity:
        if self._identity is None:
            raise RuntimeError("the node's storage is not open")
        return self._identity

    @property
    def node_store(self) -> NodeStore:
        if self._node_store is None:
            raise RuntimeError("the node's storage is not open")
        return self._node_store

    @property
    def positions(self) -> StreamPositions:
        if self._positions is None:
            raise RuntimeError("the node's storage is not open")
        return self._positions

    @property
    def rooms(self) -> RoomStoreManager:
        if self._rooms is None:
            raise RuntimeError("the node's storage is not open")
        return self._rooms

    @property
    def locked(self) -> bool:
        return self._lock.held

    def end_long_polls(self) -> None:
        """Make every wait on the stream return now and from now on (a stop began)."""
        if self._positions is not None:
            self._positions.close()

    async def open(self) -> None:
        await asyncio.to_thread(self._lock.acquire)
        self._read_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=READ_THREADS, thread_name_prefix="cis-read"
        )
        node_store = await asyncio.to_thread(
            NodeStore.open, self.home, read_executor=self._read_executor
        )
        self._node_store = node_store
        self._identity = await asyncio.to_thread(node_store.load_identity)
        previous = await asyncio.to_thread(node_store.begin_run, self.clock.time_ms())
        if not previous.clean_shutdown:
            log.warning("unclean_stop_detected", home=str(self.home.root))
            await asyncio.to_thread(
                reindex, self.home, node_store, full=False, now_ms=self.clock.time_ms()
            )
        status_row = await asyncio.to_thread(node_store.status)
        nofile = raise_nofile_limit()
        max_open = self.config.max_open_rooms or default_max_open_rooms(nofile)
        self._positions = StreamPositions(status_row.stream_max)
        self._rooms = RoomStoreManager(
            self.home,
            node_store,
            self._positions,
            clock=self.clock,
            max_open_rooms=max_open,
            synchronous=self.config.room_synchronous,
            cache_size_kib=self.config.room_cache_kib,
            read_executor=self._read_executor,
            pdu_parser=self._pdu_parser,
        )

    async def close(self) -> bool:
        """Drain and close everything; return whether the stop was clean (marker written)."""
        if self._closed:
            return False
        self._closed = True
        self.end_long_polls()
        clean = True
        if self._rooms is not None:
            await self._rooms.close()
            clean = self._rooms.counters.index_failures == 0
        if self._node_store is not None:
            store = self._node_store
            if clean and self._positions is not None:
                await asyncio.to_thread(
                    store.end_run, self.clock.time_ms(), self._positions.last_allocated
                )
            await asyncio.to_thread(store.close)
        if self._read_executor is not None:
            self._read_executor.shutdown(wait=True)
        if self._lock.held:  # only the lock holder's runtime file is ours to remove
            with contextlib.suppress(FileNotFoundError):
                self.home.runtime_file.unlink()
            self._lock.release()
        return clean


class Node:
    """A running node: its storage, handlers and HTTP server. ``start``, then ``stop``."""

    def __init__(
        self,
        home: Home,
        config: Config,
        *,
        clock: Clock | None = None,
        pdu_parser: PduParser | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.storage = NodeStorage(home, config, clock=clock, pdu_parser=pdu_parser)
        self._http: HttpServer | None = None
        self.skills: SkillHost | None = None
        self._started = False
        self._stopped = False

    @property
    def listen(self) -> ListenAddress | None:
        return self._http.bound if self._http is not None else None

    @property
    def url(self) -> str | None:
        return local_url(self._http.bound) if self._http is not None else None

    async def start(self) -> None:
        from cis.api.app import create_app
        from cis.api.server import HttpServer, bind
        from cis.handlers.admin import AdminHandler
        from cis.handlers.status import StatusHandler

        storage = self.storage
        await storage.open()
        admin_token = await asyncio.to_thread(read_admin_token, self.home)
        status = StatusHandler(
            self.home, storage.identity, storage.node_store, storage.clock,
            lambda: str(self.listen) if self.listen else None,
        )  # fmt: skip
        admin = AdminHandler(storage.rooms, storage.positions)
        self.skills = self._skill_host()
        app = create_app(status=status, admin=admin, admin_token=admin_token, skills=self.skills)
        self._http = HttpServer(app, bind(self.config.listen))
        await self._http.start()
        await self.skills.start()  # before run/node.json: local tools find skills running
        await asyncio.to_thread(self._write_runtime_file)
        self._started = True
        identity = storage.identity
        log.info(
            "node_started", node_id=identity.node_id, did=identity.did, listen=str(self.listen),
            url=self.url, max_open_rooms=storage.rooms.max_open_rooms,
            room_synchronous=self.config.room_synchronous,
            stream_position=storage.positions.current, pid=os.getpid(),
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop everything ``start`` started (safe after a partial start; runs once)."""
        if self._stopped:
            return
        self._stopped = True
        started = self._started
        if started:
            log.info("node_stopping")
        self.storage.end_long_polls()  # before the HTTP server waits for their responses
        if self._http is not None:
            await self._http.stop()
        if self.skills is not None:
            await self.skills.stop()
        clean = await self.storage.close()
        if started:
            log.info("node_stopped", clean=clean)

    def _skill_host(self) -> SkillHost:
        from cis.skills.host import SkillHost, SkillSettings

        config = self.config
        settings = SkillSettings(
            enabled=config.skills_enabled,
            handler_timeout_s=config.skill_handler_timeout_s,
            events_per_s=config.skill_events_per_s,
            events_burst=config.skill_events_burst,
            per_skill=config.skill_settings,
        )
        storage = self.storage
        return SkillHost(
            home=self.home, identity=storage.identity, rooms=storage.rooms, settings=settings,
            clock=storage.clock,
        )  # fmt: skip

    def _write_runtime_file(self) -> None:
        target = self.home.runtime_file
        partial = target.with_name(".node.json.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"pid": os.getpid(), "url": self.url}, handle)
            handle.write("\n")
        os.replace(partial, target)

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
import ctypes
import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING, Final

from cis.api.client.app import ClientApiHandlers, build_client_api
from cis.api.client.http import ClientApiApp, ClientApiDispatch
from cis.clock import Clock, SystemClock
from cis.config import Config, ListenAddress
from cis.errors import CisError
from cis.federation.endpoints import FEDERATION_PATH
from cis.handlers.account_data import AccountDataHandler
from cis.handlers.accounts import AccountHandler, AccountLimits, UserAdmin
from cis.handlers.auth import Authenticator
from cis.handlers.e2e_keys import E2eKeysHandler, KeyCounts
from cis.handlers.event_loader import EventLoader
from cis.handlers.media import MediaHandler
from cis.handlers.notifier import Notifier
from cis.handlers.passwords import PasswordHasher
from cis.handlers.profile import ProfileHandler
from cis.handlers.ratelimit import RateLimiter, RateLimits
from cis.handlers.receipts import ReceiptHandler
from cis.handlers.room_cache import EventCreator, RoomCache, Signer
from cis.handlers.room_reads import RoomReader
from cis.handlers.rooms import RoomHandler
from cis.handlers.stream_counters import StreamCounters
from cis.handlers.stream_watch import IndexTap, Redactions, StreamWatcher
from cis.handlers.sync import SyncHandler
from cis.handlers.typing import TypingChecks, TypingHandler
from cis.handlers.uia import UiaSessions
from cis.home import Home
from cis.identity import NodeIdentity
from cis.log import get_logger
from cis.storage.client.account_data import AccountDataStore
from cis.storage.client.accounts import AccountStore
from cis.storage.client.e2e import E2eStore
from cis.storage.client.media import BlobDir, MediaStore
from cis.storage.client.receipts import ReceiptStore
from cis.storage.client.timeline import sharing_rooms
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
    from pathlib import Path

    from starlette.routing import WebSocketRoute

    from cis.anchor.client import AnchorClient, PeersSnapshot
    from cis.api.server import HttpServer
    from cis.federation import TunnelManager
    from cis.handlers.federation import FederationService
    from cis.handlers.federation_admin import FederationAdmin
    from cis.handlers.federation_rooms import RemoteRooms
    from cis.skills.host import SkillHost
    from cis.storage.database import Database

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
        self.index_tap: IndexTap | None = None
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
        self.index_tap = IndexTap(node_store)
        self._rooms = RoomStoreManager(
            self.home,
            self.index_tap,
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


def limit_malloc_retention() -> None:
    """Have glibc return large freed blocks (>= 1 MiB) to the system at once.

    scrypt needs 16 MiB per password hash; glibc's dynamic mmap threshold would otherwise grow
    to that size after the first hash and keep every later one in the heap, adding 16 MiB of
    resident memory per hashing thread for the life of the process. (Other platforms: no-op.)
    """
    if not sys.platform.startswith("linux"):
        return
    m_mmap_threshold = -3  # glibc malloc.h
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, 1024 * 1024)


@dataclasses.dataclass(frozen=True, slots=True)
class ClientStores:
    """The Client-Server API's stores and streams other components build on."""

    accounts: AccountStore
    e2e: E2eStore
    receipts: ReceiptStore
    counters: StreamCounters
    notifier: Notifier
    watcher: StreamWatcher
    typing: TypingHandler


@dataclasses.dataclass(frozen=True, slots=True)
class ClientWiring:
    """What ``wire_client_api`` built."""

    handlers: ClientApiHandlers
    stores: ClientStores
    accounts: AccountHandler
    creator: EventCreator


async def wire_client_api(
    *,
    identity: NodeIdentity,
    db: Database,
    rooms: RoomStoreManager,
    positions: StreamPositions,
    index_tap: IndexTap,
    blobs: Path,
    clock: Clock,
    limits: RateLimits,
    hasher: PasswordHasher,
    open_registration: bool,
    max_upload_bytes: int,
) -> ClientWiring:
    """Build the Client-Server API's stores and handlers on a node's storage and start its
    stream watcher (the node and the in-process API tests wire it the same way)."""
    notifier = Notifier()
    counters = await StreamCounters.load(db)
    account_store = AccountStore(db)
    e2e_store = E2eStore(db)
    key_counts = KeyCounts(e2e_store)
    account_data_store = AccountDataStore(db)
    receipt_store = ReceiptStore(db)
    auth = Authenticator(account_store)
    accounts = AccountHandler(
        server_name=identity.server_name,
        accounts=account_store,
        e2e=e2e_store,
        hasher=hasher,
        auth=auth,
        uia=UiaSessions(clock),
        limits=AccountLimits(
            RateLimiter(clock, limits.registrations_per_ip),
            RateLimiter(clock, limits.failed_logins_per_account),
            RateLimiter(clock, limits.failed_logins_per_ip),
        ),
        clock=clock,
        open_registration=open_registration,
        counters=counters,
    )
    account_data = AccountDataHandler(account_data_store, notifier, counters)
    cache = RoomCache(rooms, clock)
    creator = EventCreator(
        cache, Signer(identity.server_name, identity.key_id, identity.signing_key), clock
    )
    room_handler = RoomHandler(
        server_name=identity.server_name,
        creator=creator,
        accounts=account_store,
        aliases=account_data_store,
        node_db=db,
        notifier=notifier,
        message_limiter=RateLimiter(clock, limits.messages_per_user),
        clock=clock,
    )
    redactions = Redactions(db)
    loader = EventLoader(creator, redactions, clock)
    watcher = StreamWatcher(positions, db, notifier, creator, redactions)
    index_tap.listener = watcher
    await watcher.start()
    typing = TypingHandler(clock, notifier)
    stores = ClientStores(
        accounts=account_store,
        e2e=e2e_store,
        receipts=receipt_store,
        counters=counters,
        notifier=notifier,
        watcher=watcher,
        typing=typing,
    )
    handlers = ClientApiHandlers(
        server_name=identity.server_name,
        auth=auth,
        accounts=accounts,
        account_data=account_data,
        keys=E2eKeysHandler(
            e2e_store,
            accounts=account_store,
            notifier=notifier,
            server_name=identity.server_name,
            counters=counters,
            key_counts=key_counts,
            sharing=sharing_rooms(db),
        ),
        media=MediaHandler(
            store=MediaStore(db),
            blobs=BlobDir(blobs),
            server_name=identity.server_name,
            clock=clock,
            max_upload_bytes=max_upload_bytes,
        ),
        rooms=room_handler,
        reader=RoomReader(cache=cache, loader=loader, node_db=db, positions=positions),
        receipts=ReceiptHandler(
            store=receipt_store,
            account_data=account_data,
            cache=cache,
            counters=counters,
            notifier=notifier,
            clock=clock,
        ),
        typing=TypingChecks(typing, cache),
        profiles=ProfileHandler(
            account_store, room_handler, RateLimiter(clock, limits.profile_changes_per_user)
        ),
        sync=SyncHandler(
            cache=cache,
            loader=loader,
            node_db=db,
            positions=positions,
            watcher=watcher,
            counters=counters,
            notifier=notifier,
            typing=typing,
            receipts=receipt_store,
            account_data=account_data_store,
            account_data_handler=account_data,
            e2e=e2e_store,
            key_counts=key_counts,
            clock=clock,
        ),
    )
    return ClientWiring(handlers, stores, accounts, creator)


class ClientServer:
    """The Matrix Client-Server API's components (issue 3), built on the node's storage.

    ``start`` constructs the stores, handlers and router and starts the stream watcher;
    ``end_long_polls`` wakes every waiting ``/sync`` (a stop began); ``close`` stops the
    watcher, typing timers and the password pool.
    """

    def __init__(self, storage: NodeStorage, config: Config) -> None:
        self._storage = storage
        self._config = config
        self.app: ClientApiApp | None = None
        self.users: UserAdmin | None = None
        self.handlers: ClientApiHandlers | None = None
        """Every handler, for the components that extend them (federation)."""
        self.creator: EventCreator | None = None
        self.stores: ClientStores | None = None
        self._hasher: PasswordHasher | None = None

    async def start(self) -> None:
        limit_malloc_retention()
        storage = self._storage
        assert storage.index_tap is not None
        hasher = self._hasher = PasswordHasher()
        wired = await wire_client_api(
            identity=storage.identity,
            db=storage.node_store.db,
            rooms=storage.rooms,
            positions=storage.positions,
            index_tap=storage.index_tap,
            blobs=storage.home.blobs,
            clock=storage.clock,
            limits=RateLimits(),
            hasher=hasher,
            open_registration=self._config.open_registration,
            max_upload_bytes=self._config.max_upload_bytes,
        )
        self.users = UserAdmin(wired.accounts, wired.stores.accounts, storage.identity.did)
        self.creator = wired.creator
        self.stores = wired.stores
        self.handlers = wired.handlers
        self.app = build_client_api(wired.handlers)

    def end_long_polls(self) -> None:
        if self.stores is not None:
            self.stores.notifier.close()

    async def close(self) -> None:
        self.end_long_polls()
        if self.stores is not None:
            self.stores.typing.close()
            await self.stores.watcher.close()
        if self._hasher is not None:
            self._hasher.close()


class NodeFederation:
    """Tunnels, anchors and rooms across nodes (issue 4), on the node's storage and its
    Client-Server handlers. ``start`` (once the HTTP socket is bound, so the advertised
    endpoint names the real port), then ``stop`` before the HTTP server stops."""

    def __init__(self, storage: NodeStorage, client: ClientServer, config: Config) -> None:
        self._storage = storage
        self._client = client
        self._config = config
        self.service: FederationService | None = None
        self.manager: TunnelManager | None = None
        self.admin: FederationAdmin | None = None
        self.rooms: RemoteRooms | None = None
        self._anchors: list[AnchorClient] = []
        self._anchor_tasks: list[asyncio.Task[None]] = []

    async def start(self, bound: ListenAddress) -> None:
        from cis.federation import TunnelConfig, TunnelManager
        from cis.handlers.federation import FederationService
        from cis.handlers.federation_admin import FederationAdmin
        from cis.handlers.federation_edus import EduRelay
        from cis.handlers.federation_keys import KeyRing
        from cis.handlers.federation_rooms import RemoteRooms
        from cis.handlers.federation_trust import NodeTrust

        storage, client, config = self._storage, self._client, self._config
        identity, clock, db = storage.identity, storage.clock, storage.node_store.db
        assert client.handlers is not None
        assert client.stores is not None
        assert client.creator is not None
        handlers, stores = client.handlers, client.stores
        keys = KeyRing(identity, db, clock)
        await keys.load()
        trust = NodeTrust(identity, db, config.default_trust)
        await trust.load()
        watcher = stores.watcher
        service = self.service = FederationService(
            identity=identity,
            cache=client.creator.cache,
            creator=client.creator,
            node_db=db,
            keys=keys,
            trust=trust,
            clock=clock,
            on_memberships=lambda _room, users: watcher.memberships_changed(users),
            catchup_interval=config.catchup_interval,
        )
        rooms = self.rooms = RemoteRooms(
            service, identity=identity, accounts=stores.accounts, node_db=db,
            positions=storage.positions, clock=clock,
        )  # fmt: skip
        edus = EduRelay(
            service, typing=stores.typing, receipts=stores.receipts, e2e=stores.e2e,
            accounts=stores.accounts, counters=stores.counters, notifier=stores.notifier,
            node_db=db,
        )  # fmt: skip
        handlers.rooms.federation = rooms
        handlers.sync.remote_invite_state = rooms.invite_state
        handlers.keys.federation = edus
        handlers.typing.on_local = edus.typing_changed
        handlers.receipts.on_local = edus.receipt_sent
        endpoints = advertised_endpoints(config, bound)
        federating = bool(config.anchors or config.peers)
        if federating and config.advertise is None:
            log.warning(
                "federation_no_advertise",
                advertised=",".join(endpoints) or "none",
                hint="set --advertise HOST:PORT to a reachable address, or peers only reach"
                " this node through tunnels it dials out",
            )
        tunnel_config = TunnelConfig(
            ping_interval=config.ping_interval,
            silence_timeout=config.silence_timeout,
            backoff_cap=config.backoff_cap,
        )
        manager = self.manager = TunnelManager(
            identity, trust, on_frame=service.on_frame, config=tunnel_config, clock=clock,
            endpoints=endpoints, admission=keys.admission,
        )  # fmt: skip
        service.attach(manager)
        self.admin = FederationAdmin(service, trust, keys, manager)
        await service.start()
        for peer in config.peers:
            manager.add_peer(peer)
        if config.anchors:  # the anchor client's HTTP stack is imported only when it is used
            from cis.anchor.client import AnchorClient, dial_peers

            dial = dial_peers(manager)

            def on_peers(snapshot: PeersSnapshot) -> None:
                dial(snapshot)
                for record in snapshot.peers:
                    service.spawn(keys.learn(record.did, record.did_key, "anchor"), "anchor key")

            for url in config.anchors:
                anchor = AnchorClient(
                    url, identity, endpoints=endpoints, clock=clock,
                    interval=config.anchor_interval, ca_file=config.anchor_ca, on_peers=on_peers,
                )  # fmt: skip
                self._anchors.append(anchor)
                self._anchor_tasks.append(asyncio.create_task(anchor.run(), name=f"anchor {url}"))
        log.info(
            "federation_started", endpoints=",".join(endpoints), peers=len(config.peers),
            anchors=len(config.anchors), default_trust=config.default_trust,
        )  # fmt: skip

    def route(self) -> WebSocketRoute | None:
        return self.manager.route() if self.manager is not None else None

    async def stop(self) -> None:
        for task in self._anchor_tasks:
            task.cancel()
        for task in self._anchor_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for anchor in self._anchors:
            with contextlib.suppress(Exception):
                await anchor.aclose()
        if self.manager is not None:
            await self.manager.stop()
        if self.service is not None:
            await self.service.close()


def advertised_endpoints(config: Config, bound: ListenAddress) -> list[str]:
    """The tunnel endpoint other nodes are told: ``--advertise`` (port 0: the bound port),
    else the listening address unless it is a wildcard."""
    if config.advertise is not None:
        port = config.advertise.port or bound.port
        return [f"ws://{ListenAddress(config.advertise.host, port)}{FEDERATION_PATH}"]
    if bound.host in ("0.0.0.0", "::"):  # noqa: S104 (a comparison, not a bind)
        return []
    return [f"ws://{bound}{FEDERATION_PATH}"]


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
        self.client = ClientServer(self.storage, config)
        self.federation = NodeFederation(self.storage, self.client, config)
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
        await self.client.start()
        assert self.client.app is not None
        self.skills = self._skill_host()
        sock = bind(self.config.listen)
        try:
            name = sock.getsockname()
            await self.federation.start(ListenAddress(str(name[0]), int(name[1])))
        except BaseException:
            sock.close()
            raise
        if self.federation.service is not None:
            from cis.skills.transport import TunnelPeerTransport

            peers = TunnelPeerTransport(self.federation.service)
            peers.attach(self.skills)  # skills on other nodes call this node's skills
            self.skills.set_peer_transport(peers)
        app = create_app(
            status=status, admin=admin, admin_token=admin_token, users=self.client.users,
            federation=self.federation.admin, skills=self.skills,
        )  # fmt: skip
        from cis.federation import UVICORN_WS_OPTIONS

        route = self.federation.route()
        if route is not None:
            app.router.routes.append(route)
        self._http = HttpServer(
            ClientApiDispatch(self.client.app, app), sock, ws_options=UVICORN_WS_OPTIONS
        )
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
        self.client.end_long_polls()
        await self.federation.stop()  # tunnels close (1001) before the server goes
        if self._http is not None:
            await self._http.stop()
        if self.skills is not None:
            await self.skills.stop()
        await self.client.close()
        clean = await self.storage.close()
        if started:
            log.info("node_stopped", clean=clean)

    def _skill_host(self) -> SkillHost:
        from cis.skills.gateway import CreatorGateway
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
        creator = self.client.creator
        return SkillHost(
            home=self.home, identity=storage.identity, rooms=storage.rooms, settings=settings,
            clock=storage.clock,
            gateway=CreatorGateway(creator, lambda: self.federation.rooms)
            if creator is not None else None,
        )  # fmt: skip

    def _write_runtime_file(self) -> None:
        target = self.home.runtime_file
        partial = target.with_name(".node.json.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"pid": os.getpid(), "url": self.url}, handle)
            handle.write("\n")
        os.replace(partial, target)

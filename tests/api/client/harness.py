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

from cis.api.client.app import ClientApiHandlers, build_client_api
from cis.clock import FakeClock
from cis.handlers.account_data import AccountDataHandler
from cis.handlers.accounts import AccountHandler, AccountLimits
from cis.handlers.auth import Authenticator
from cis.handlers.e2e_keys import E2eKeysHandler, KeyCounts
from cis.handlers.event_loader import EventLoader
from cis.handlers.media import MediaHandler
from cis.handlers.notifier import Notifier
from cis.handlers.passwords import PasswordHasher, ScryptParams
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
from cis.matrix import parse_pdu
from cis.storage.client.account_data import AccountDataStore
from cis.storage.client.accounts import AccountStore
from cis.storage.client.e2e import E2eStore
from cis.storage.client.media import BlobDir, MediaStore
from cis.storage.client.receipts import ReceiptStore
from cis.storage.client.timeline import sharing_rooms
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
    notifier = Notifier()
    limits = limits or RateLimits()
    counters = await StreamCounters.load(db)
    account_store = AccountStore(db)
    e2e_store = E2eStore(db)
    key_counts = KeyCounts(e2e_store)
    account_data_store = AccountDataStore(db)
    auth_ = Authenticator(account_store)
    hasher = PasswordHasher(ScryptParams(log_n=8))
    accounts = AccountHandler(
        server_name=identity.server_name,
        accounts=account_store,
        e2e=e2e_store,
        hasher=hasher,
        auth=auth_,
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
    cache = RoomCache(manager, clock)
    creator = EventCreator(
        cache, Signer(identity.server_name, identity.key_id, identity.signing_key), clock
    )
    rooms = RoomHandler(
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
    tap.listener = watcher
    await watcher.start()
    typing = TypingHandler(clock, notifier)
    receipt_store = ReceiptStore(db)
    handlers = ClientApiHandlers(
        server_name=identity.server_name,
        auth=auth_,
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
            blobs=BlobDir(root / "blobs"),
            server_name=identity.server_name,
            clock=clock,
            max_upload_bytes=max_upload,
        ),
        rooms=rooms,
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
            account_store, rooms, RateLimiter(clock, limits.profile_changes_per_user)
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
    app = build_client_api(handlers)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Harness(
                client,
                clock,
                db,
                notifier,
                accounts,
                limits,
                manager,
                positions,
                watcher,
                identity,
                creator,
            )
    finally:
        notifier.close()
        typing.close()
        await watcher.close()
        positions.close()
        await manager.close()
        hasher.close()
        node_store.close()

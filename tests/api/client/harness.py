"""An in-process Client-Server API over real stores (no network): for ASGI tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cis.api.client.context import RouteContext
from cis.api.client.http import ClientApiApp, Router
from cis.api.client.routes_account import register_account_routes
from cis.api.client.routes_keys import register_key_routes
from cis.api.client.routes_media import register_media_routes
from cis.api.client.routes_misc import register_misc_routes
from cis.clock import FakeClock
from cis.handlers.account_data import AccountDataHandler
from cis.handlers.accounts import AccountHandler, AccountLimits
from cis.handlers.auth import Authenticator
from cis.handlers.e2e_keys import E2eKeysHandler
from cis.handlers.media import MediaHandler
from cis.handlers.notifier import Notifier
from cis.handlers.passwords import PasswordHasher, ScryptParams
from cis.handlers.ratelimit import RateLimiter, RateLimits
from cis.handlers.uia import UiaSessions
from cis.ids import ServerName
from cis.storage.client.account_data import AccountDataStore
from cis.storage.client.accounts import AccountStore
from cis.storage.client.e2e import E2eStore
from cis.storage.client.media import BlobDir, MediaStore
from tests.storage.client.conftest import SerialDb

SERVER = ServerName("test.cis.local")
V3 = "/_matrix/client/v3"


@dataclass
class Harness:
    client: httpx.AsyncClient
    clock: FakeClock
    db: SerialDb
    notifier: Notifier
    accounts: AccountHandler
    limits: RateLimits

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
    db = SerialDb(tmp_path / "node.db")
    notifier = Notifier()
    limits = limits or RateLimits()
    account_store = AccountStore(db)
    e2e_store = E2eStore(db)
    auth_ = Authenticator(account_store)
    hasher = PasswordHasher(ScryptParams(log_n=8))
    accounts = AccountHandler(
        server_name=SERVER,
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
    )
    router = Router()
    ctx = RouteContext(auth_, SERVER)
    register_account_routes(router, ctx, accounts)
    register_misc_routes(router, ctx, AccountDataHandler(AccountDataStore(db), notifier), None)
    register_key_routes(router, ctx, E2eKeysHandler(e2e_store, account_store, notifier, SERVER))
    register_media_routes(
        router,
        ctx,
        MediaHandler(
            store=MediaStore(db),
            blobs=BlobDir(tmp_path / "blobs"),
            server_name=SERVER,
            clock=clock,
            max_upload_bytes=max_upload,
        ),
    )
    transport = httpx.ASGITransport(app=ClientApiApp(router), client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Harness(client, clock, db, notifier, accounts, limits)
    hasher.close()
    db.close()

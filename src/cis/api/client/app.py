"""The Client-Server API's routes, assembled from the handlers ``cis.node`` constructs."""

from __future__ import annotations

from dataclasses import dataclass

from cis.api.client.context import RouteContext
from cis.api.client.http import ClientApiApp, Router
from cis.api.client.routes_account import register_account_routes
from cis.api.client.routes_keys import register_key_routes
from cis.api.client.routes_media import register_media_routes
from cis.api.client.routes_misc import register_misc_routes
from cis.api.client.routes_rooms import register_room_routes
from cis.api.client.routes_sync import register_sync_routes
from cis.handlers.account_data import AccountDataHandler
from cis.handlers.accounts import AccountHandler
from cis.handlers.auth import Authenticator
from cis.handlers.e2e_keys import E2eKeysHandler
from cis.handlers.media import MediaHandler
from cis.handlers.profile import ProfileHandler
from cis.handlers.receipts import ReceiptHandler
from cis.handlers.room_reads import RoomReader
from cis.handlers.rooms import RoomHandler
from cis.handlers.sync import SyncHandler
from cis.handlers.typing import TypingChecks
from cis.ids import ServerName


@dataclass(frozen=True, slots=True)
class ClientApiHandlers:
    server_name: ServerName
    auth: Authenticator
    accounts: AccountHandler
    account_data: AccountDataHandler
    keys: E2eKeysHandler
    media: MediaHandler
    rooms: RoomHandler
    reader: RoomReader
    receipts: ReceiptHandler
    typing: TypingChecks
    profiles: ProfileHandler
    sync: SyncHandler
    base_url: str | None = None


def build_client_api(handlers: ClientApiHandlers) -> ClientApiApp:
    """Every Client-Server route on one router (``/_matrix``, ``/.well-known/matrix``)."""
    router = Router()
    ctx = RouteContext(handlers.auth, handlers.server_name)
    register_account_routes(router, ctx, handlers.accounts)
    register_misc_routes(router, ctx, handlers.account_data, handlers.base_url)
    register_key_routes(router, ctx, handlers.keys)
    register_media_routes(router, ctx, handlers.media)
    register_room_routes(
        router,
        ctx,
        rooms=handlers.rooms,
        reader=handlers.reader,
        receipts=handlers.receipts,
        typing=handlers.typing,
        profiles=handlers.profiles,
    )
    register_sync_routes(router, ctx, handlers.sync, handlers.account_data)
    return ClientApiApp(router)

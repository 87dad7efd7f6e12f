"""Account data and stored filters (Client-Server API §"Client Config", §"Filtering").

Account data is any JSON object a client keeps per user (and per room); each change takes a
new ``account_data`` stream position and wakes the user's long-polls. ``m.fully_read`` and
``m.push_rules`` are the server's to write (read markers, push rules), so clients may not set
them here. Filters are validated before they are stored, so a stored filter always parses.
"""

from __future__ import annotations

from typing import Any, Final

from cis.handlers.errors import ApiError, Errcode
from cis.handlers.filters import Filter, parse_filter
from cis.handlers.notifier import Notifier
from cis.handlers.push_rules import PUSH_RULES_ACCOUNT_DATA_TYPE, push_rules_response
from cis.handlers.stream_counters import StreamCounters
from cis.ids import RoomId, UserId
from cis.storage.client.account_data import AccountDataStore

SERVER_OWNED_TYPES: Final = frozenset({"m.fully_read", PUSH_RULES_ACCOUNT_DATA_TYPE})
MAX_TYPE_LENGTH: Final = 255


class AccountDataHandler:
    def __init__(
        self, store: AccountDataStore, notifier: Notifier, counters: StreamCounters
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._counters = counters

    async def put(
        self,
        user_id: UserId,
        room_id: RoomId | None,
        data_type: str,
        content: dict[str, Any],
        *,
        server: bool = False,
    ) -> int:
        if not data_type or len(data_type) > MAX_TYPE_LENGTH:
            raise ApiError(Errcode.INVALID_PARAM, "Invalid account data type")
        if data_type in SERVER_OWNED_TYPES and not server:
            raise ApiError(
                Errcode.BAD_JSON, "This account data type is managed by the server", status=405
            )
        position = await self._store.put(user_id, room_id, data_type, content)
        self._counters.advance("account_data", position)
        self._notifier.notify_user(user_id)
        return position

    async def get(self, user_id: UserId, room_id: RoomId | None, data_type: str) -> dict[str, Any]:
        content = await self._store.get(user_id, room_id, data_type)
        if content is None and room_id is None and data_type == PUSH_RULES_ACCOUNT_DATA_TYPE:
            return push_rules_response(user_id)
        if content is None:
            raise ApiError(Errcode.NOT_FOUND, "Account data not found")
        return content

    async def add_filter(self, user_id: UserId, definition: object) -> str:
        parse_filter(definition)
        return str(await self._store.add_filter(user_id, definition))

    async def get_filter_definition(self, user_id: UserId, filter_id: str) -> Any:
        if not filter_id.isascii() or not filter_id.isdigit() or len(filter_id) > 18:
            raise ApiError(Errcode.NOT_FOUND, "Unknown filter")
        definition = await self._store.get_filter(user_id, int(filter_id))
        if definition is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown filter")
        return definition

    async def get_filter(self, user_id: UserId, filter_id: str) -> Filter:
        return parse_filter(await self.get_filter_definition(user_id, filter_id))

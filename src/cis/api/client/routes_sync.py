"""Route: ``GET /sync`` (Client-Server API §"Syncing")."""

from __future__ import annotations

from cis.api.client.context import CLIENT_V3, RouteContext
from cis.api.client.http import Request, Response, Router, json_response
from cis.api.client.jsonbody import parse_query_json
from cis.api.client.params import get_bool, get_int, get_str
from cis.handlers.account_data import AccountDataHandler
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.filters import DEFAULT_FILTER, Filter, parse_filter
from cis.handlers.sync import MAX_TIMEOUT_MS, SyncHandler, SyncRequest
from cis.handlers.sync_tokens import StreamToken
from cis.ids import UserId


async def _filter(request: Request, user_id: UserId, account_data: AccountDataHandler) -> Filter:
    raw = get_str(request.query, "filter")
    if raw is None or raw == "":
        return DEFAULT_FILTER
    if raw.lstrip().startswith("{"):
        # An inline filter (matrix-nio sends json.dumps of it); malformed is 400.
        return parse_filter(parse_query_json(raw, "filter"))
    try:
        return await account_data.get_filter(user_id, raw)
    except ApiError as exc:
        if exc.errcode == Errcode.NOT_FOUND:
            raise ApiError(Errcode.INVALID_PARAM, "Unknown filter id") from None
        raise


def register_sync_routes(
    router: Router, ctx: RouteContext, sync: SyncHandler, account_data: AccountDataHandler
) -> None:
    async def get_sync(request: Request) -> Response:
        requester = await ctx.requester(request)
        since_text = get_str(request.query, "since")
        since = StreamToken.parse(since_text) if since_text else None
        body = await sync.sync(
            requester,
            SyncRequest(
                since=since,
                # Absent means 0 (matrix-nio sends no timeout for a zero one); capped at 60 s.
                timeout_ms=get_int(request.query, "timeout", default=0, maximum=MAX_TIMEOUT_MS),
                full_state=get_bool(request.query, "full_state", default=False),
                filter=await _filter(request, requester.user_id, account_data),
            ),
        )
        return json_response(body)

    router.add("GET", f"{CLIENT_V3}/sync", get_sync)

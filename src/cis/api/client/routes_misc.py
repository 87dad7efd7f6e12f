"""Routes clients call at start or fail without: versions, well-known, capabilities, push
rules, account data, filters, presence (a stub: presence is off), third-party ids (none)."""

from __future__ import annotations

from typing import Final

from cis.api.client.context import CLIENT_V3, RouteContext
from cis.api.client.http import Request, Response, Router, json_response
from cis.handlers.account_data import AccountDataHandler
from cis.handlers.capabilities import capabilities
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.push_rules import push_rules_response
from cis.ids import RoomId

SPEC_VERSIONS: Final = (
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11",
)  # fmt: skip


def register_misc_routes(
    router: Router, ctx: RouteContext, account_data: AccountDataHandler, base_url: str | None
) -> None:
    async def versions(request: Request) -> Response:
        return json_response({"versions": list(SPEC_VERSIONS), "unstable_features": {}})

    async def well_known(request: Request) -> Response:
        url = base_url
        if url is None:
            host = request.headers.get("host", "")
            url = f"http://{host}" if host else ""
        return json_response({"m.homeserver": {"base_url": url}})

    async def get_capabilities(request: Request) -> Response:
        await ctx.requester(request)
        return json_response(capabilities())

    async def push_rules(request: Request) -> Response:
        requester = await ctx.requester(request)
        return json_response(push_rules_response(requester.user_id))

    async def push_rules_global(request: Request) -> Response:
        requester = await ctx.requester(request)
        return json_response(push_rules_response(requester.user_id)["global"])

    async def get_account_data(request: Request) -> Response:
        requester = await ctx.requester(request)
        user_id = ctx.own_user(request, requester)
        room_id = request.params.get("room_id")
        content = await account_data.get(
            user_id, RoomId(room_id) if room_id else None, request.params["type"]
        )
        return json_response(content)

    async def put_account_data(request: Request) -> Response:
        requester = await ctx.requester(request)
        user_id = ctx.own_user(request, requester)
        room_id = request.params.get("room_id")
        await account_data.put(
            user_id, RoomId(room_id) if room_id else None, request.params["type"], request.json()
        )
        return json_response({})

    async def post_filter(request: Request) -> Response:
        requester = await ctx.requester(request)
        user_id = ctx.own_user(request, requester)
        filter_id = await account_data.add_filter(user_id, request.json())
        return json_response({"filter_id": filter_id})

    async def get_filter(request: Request) -> Response:
        requester = await ctx.requester(request)
        user_id = ctx.own_user(request, requester)
        definition = await account_data.get_filter_definition(user_id, request.params["filter_id"])
        return json_response(definition)

    async def get_presence(request: Request) -> Response:
        await ctx.requester(request)
        return json_response({"presence": "offline"})

    async def put_presence(request: Request) -> Response:
        requester = await ctx.requester(request)
        ctx.own_user(request, requester)
        body = request.json()
        if body.get("presence") not in ("online", "offline", "unavailable"):
            raise ApiError(Errcode.INVALID_PARAM, "Invalid presence")
        return json_response({})

    async def threepids(request: Request) -> Response:
        await ctx.requester(request)
        return json_response({"threepids": []})

    router.add("GET", "/_matrix/client/versions", versions)
    router.add("GET", "/.well-known/matrix/client", well_known)
    router.add("GET", f"{CLIENT_V3}/capabilities", get_capabilities)
    router.add("GET", f"{CLIENT_V3}/pushrules/", push_rules)
    router.add("GET", f"{CLIENT_V3}/pushrules", push_rules)
    router.add("GET", f"{CLIENT_V3}/pushrules/global/", push_rules_global)
    user = f"{CLIENT_V3}/user/{{user_id}}"
    router.add("GET", f"{user}/account_data/{{type}}", get_account_data)
    router.add("PUT", f"{user}/account_data/{{type}}", put_account_data)
    router.add("GET", f"{user}/rooms/{{room_id}}/account_data/{{type}}", get_account_data)
    router.add("PUT", f"{user}/rooms/{{room_id}}/account_data/{{type}}", put_account_data)
    router.add("POST", f"{user}/filter", post_filter)
    router.add("GET", f"{user}/filter/{{filter_id}}", get_filter)
    router.add("GET", f"{CLIENT_V3}/presence/{{user_id}}/status", get_presence)
    router.add("PUT", f"{CLIENT_V3}/presence/{{user_id}}/status", put_presence)
    router.add("GET", f"{CLIENT_V3}/account/3pid", threepids)

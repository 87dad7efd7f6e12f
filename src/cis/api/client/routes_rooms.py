"""Routes: rooms, membership, events, state, history, receipts, typing, aliases, profiles."""

from __future__ import annotations

from cis.api.client.context import CLIENT_V3, RouteContext
from cis.api.client.http import Endpoint, Request, Response, Router, json_response
from cis.api.client.jsonbody import parse_query_json
from cis.api.client.params import get_int, get_limit, get_str
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.filters import RoomEventFilter, parse_room_event_filter
from cis.handlers.profile import ProfileHandler
from cis.handlers.receipts import ReceiptHandler
from cis.handlers.room_creation import parse_create_room
from cis.handlers.room_reads import RoomReader
from cis.handlers.rooms import RoomHandler
from cis.handlers.typing import TypingChecks

MAX_MESSAGES_LIMIT = 500
MAX_CONTEXT_LIMIT = 100


def _room_filter(request: Request) -> RoomEventFilter | None:
    raw = get_str(request.query, "filter")
    if raw is None or raw == "":
        return None
    value = parse_query_json(raw, "filter")
    if not isinstance(value, dict):
        raise ApiError(Errcode.BAD_JSON, "Invalid filter: a filter must be a JSON object")
    return parse_room_event_filter(value)


def register_room_routes(
    router: Router,
    ctx: RouteContext,
    *,
    rooms: RoomHandler,
    reader: RoomReader,
    receipts: ReceiptHandler,
    typing: TypingChecks,
    profiles: ProfileHandler,
) -> None:
    room = f"{CLIENT_V3}/rooms/{{room_id}}"

    async def create_room(request: Request) -> Response:
        requester = await ctx.requester(request)
        room_id = await rooms.create_room(requester, parse_create_room(request.json()))
        return json_response({"room_id": room_id})

    async def join(request: Request) -> Response:
        requester = await ctx.requester(request)
        request.json(allow_empty=True)
        room_id = await rooms.join(requester, request.params["room_id"])
        return json_response({"room_id": room_id})

    async def invite(request: Request) -> Response:
        requester = await ctx.requester(request)
        await rooms.invite(requester, request.params["room_id"], request.json())
        return json_response({})

    async def leave(request: Request) -> Response:
        requester = await ctx.requester(request)
        await rooms.leave(requester, request.params["room_id"], request.json(allow_empty=True))
        return json_response({})

    def membership(kind: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            requester = await ctx.requester(request)
            await rooms.set_membership(requester, request.params["room_id"], kind, request.json())
            return json_response({})

        return endpoint

    async def forget(request: Request) -> Response:
        requester = await ctx.requester(request)
        request.json(allow_empty=True)
        await rooms.forget(requester, request.params["room_id"])
        return json_response({})

    async def joined_rooms(request: Request) -> Response:
        requester = await ctx.requester(request)
        return json_response({"joined_rooms": await reader.joined_rooms(requester)})

    async def joined_members(request: Request) -> Response:
        requester = await ctx.requester(request)
        joined = await reader.joined_members(requester, request.params["room_id"])
        return json_response({"joined": joined})

    async def members(request: Request) -> Response:
        requester = await ctx.requester(request)
        chunk = await reader.members(
            requester,
            request.params["room_id"],
            get_str(request.query, "membership"),
            get_str(request.query, "not_membership"),
        )
        return json_response({"chunk": chunk})

    async def send(request: Request) -> Response:
        requester = await ctx.requester(request)
        event_id = await rooms.send_event(
            requester,
            request.params["room_id"],
            request.params["event_type"],
            request.params["txn_id"],
            request.json(),
        )
        return json_response({"event_id": event_id})

    async def get_state_all(request: Request) -> Response:
        requester = await ctx.requester(request)
        return json_response(await reader.state(requester, request.params["room_id"]))

    async def get_state(request: Request) -> Response:
        requester = await ctx.requester(request)
        content = await reader.state_event(
            requester,
            request.params["room_id"],
            request.params["event_type"],
            request.params.get("state_key", ""),
        )
        return json_response(content)

    async def put_state(request: Request) -> Response:
        requester = await ctx.requester(request)
        event_id = await rooms.put_state(
            requester,
            request.params["room_id"],
            request.params["event_type"],
            request.params.get("state_key", ""),
            request.json(),
        )
        return json_response({"event_id": event_id})

    async def messages(request: Request) -> Response:
        requester = await ctx.requester(request)
        body = await reader.messages(
            requester,
            request.params["room_id"],
            from_token=get_str(request.query, "from"),
            to_token=get_str(request.query, "to"),
            direction=get_str(request.query, "dir") or "b",
            limit=get_limit(request.query, default=10, maximum=MAX_MESSAGES_LIMIT),
            flt=_room_filter(request),
        )
        return json_response(body)

    async def get_event(request: Request) -> Response:
        requester = await ctx.requester(request)
        event = await reader.event(requester, request.params["room_id"], request.params["event_id"])
        return json_response(event)

    async def context(request: Request) -> Response:
        requester = await ctx.requester(request)
        body = await reader.context(
            requester,
            request.params["room_id"],
            request.params["event_id"],
            get_int(request.query, "limit", default=10, maximum=MAX_CONTEXT_LIMIT),
            _room_filter(request),
        )
        return json_response(body)

    async def redact(request: Request) -> Response:
        requester = await ctx.requester(request)
        event_id = await rooms.redact(
            requester,
            request.params["room_id"],
            request.params["event_id"],
            request.params["txn_id"],
            request.json(allow_empty=True),
        )
        return json_response({"event_id": event_id})

    async def receipt(request: Request) -> Response:
        requester = await ctx.requester(request)
        await receipts.receipt(
            requester,
            request.params["room_id"],
            request.params["receipt_type"],
            request.params["event_id"],
            request.json(allow_empty=True),
        )
        return json_response({})

    async def read_markers(request: Request) -> Response:
        requester = await ctx.requester(request)
        await receipts.read_markers(requester, request.params["room_id"], request.json())
        return json_response({})

    async def set_typing(request: Request) -> Response:
        requester = await ctx.requester(request)
        await typing.set_typing(
            requester, request.params["room_id"], request.params["user_id"], request.json()
        )
        return json_response({})

    async def get_alias(request: Request) -> Response:
        return json_response(await rooms.get_alias(request.params["alias"]))

    async def put_alias(request: Request) -> Response:
        requester = await ctx.requester(request)
        await rooms.put_alias(requester, request.params["alias"], request.json())
        return json_response({})

    async def delete_alias(request: Request) -> Response:
        requester = await ctx.requester(request)
        await rooms.delete_alias(requester, request.params["alias"])
        return json_response({})

    async def get_profile(request: Request) -> Response:
        return json_response(await profiles.get(request.params["user_id"]))

    def profile_field(field: str) -> tuple[Endpoint, Endpoint]:
        async def get_field(request: Request) -> Response:
            return json_response(await profiles.get_field(request.params["user_id"], field))

        async def put_field(request: Request) -> Response:
            requester = await ctx.requester(request)
            await profiles.set_field(requester, request.params["user_id"], field, request.json())
            return json_response({})

        return get_field, put_field

    router.add("POST", f"{CLIENT_V3}/createRoom", create_room)
    router.add("POST", f"{CLIENT_V3}/join/{{room_id}}", join)
    router.add("POST", f"{room}/join", join)
    router.add("POST", f"{room}/invite", invite)
    router.add("POST", f"{room}/leave", leave)
    for kind in ("kick", "ban", "unban"):
        router.add("POST", f"{room}/{kind}", membership(kind))
    router.add("POST", f"{room}/forget", forget)
    router.add("GET", f"{CLIENT_V3}/joined_rooms", joined_rooms)
    router.add("GET", f"{room}/joined_members", joined_members)
    router.add("GET", f"{room}/members", members)
    router.add("PUT", f"{room}/send/{{event_type}}/{{txn_id}}", send)
    router.add("GET", f"{room}/state", get_state_all)
    router.add("GET", f"{room}/state/{{event_type}}", get_state)
    router.add("GET", f"{room}/state/{{event_type}}/{{state_key}}", get_state)
    router.add("PUT", f"{room}/state/{{event_type}}", put_state)
    router.add("PUT", f"{room}/state/{{event_type}}/{{state_key}}", put_state)
    router.add("GET", f"{room}/messages", messages)
    router.add("GET", f"{room}/event/{{event_id}}", get_event)
    router.add("GET", f"{room}/context/{{event_id}}", context)
    router.add("PUT", f"{room}/redact/{{event_id}}/{{txn_id}}", redact)
    router.add("POST", f"{room}/receipt/{{receipt_type}}/{{event_id}}", receipt)
    router.add("POST", f"{room}/read_markers", read_markers)
    router.add("PUT", f"{room}/typing/{{user_id}}", set_typing)
    router.add("GET", f"{CLIENT_V3}/directory/room/{{alias}}", get_alias)
    router.add("PUT", f"{CLIENT_V3}/directory/room/{{alias}}", put_alias)
    router.add("DELETE", f"{CLIENT_V3}/directory/room/{{alias}}", delete_alias)
    router.add("GET", f"{CLIENT_V3}/profile/{{user_id}}", get_profile)
    for field in ("displayname", "avatar_url"):
        getter, putter = profile_field(field)
        router.add("GET", f"{CLIENT_V3}/profile/{{user_id}}/{field}", getter)
        router.add("PUT", f"{CLIENT_V3}/profile/{{user_id}}/{field}", putter)

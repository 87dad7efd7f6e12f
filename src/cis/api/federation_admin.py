"""``/_cis/admin/v1`` routes of federation: peers, trust, a room's federated view.

All need the admin token (``cis.api.admin.AdminAuth``). What ``cis-node peers`` and
``cis-node trust`` use while the node runs.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cis.api.admin import PREFIX, AdminAuth
from cis.api.client.jsonbody import parse_json_object
from cis.handlers.federation_admin import FederationAdmin


def federation_routes(admin: FederationAdmin, auth: AdminAuth) -> list[BaseRoute]:
    async def peers(_request: Request) -> Response:
        return JSONResponse({"peers": await admin.peers()})

    async def trust_list(_request: Request) -> Response:
        return JSONResponse(admin.trust_list())

    async def trust_set(request: Request) -> Response:
        return JSONResponse(await admin.trust_set(parse_json_object(await request.body())))

    async def rebind(request: Request) -> Response:
        return JSONResponse(await admin.rebind(parse_json_object(await request.body())))

    async def room(request: Request) -> Response:
        return JSONResponse(await admin.room(request.path_params["room_id"]))

    return [
        Route(f"{PREFIX}/peers", auth.guard(peers), methods=["GET"]),
        Route(f"{PREFIX}/trust", auth.guard(trust_list), methods=["GET"]),
        Route(f"{PREFIX}/trust", auth.guard(trust_set), methods=["PUT"]),
        Route(f"{PREFIX}/trust/rebind", auth.guard(rebind), methods=["POST"]),
        Route(f"{PREFIX}/federation/rooms/{{room_id}}", auth.guard(room), methods=["GET"]),
    ]

"""``/_cis/admin/v1`` routes of federation: peers, trust, a room's federated view.

All need the admin token (``cis.api.admin.AdminAuth``). What ``cis-node peers`` and
``cis-node trust`` use while the node runs.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from cis.api.admin import PREFIX, AdminAuth
from cis.api.client.jsonbody import parse_json_object
from cis.handlers.federation_admin import FederationAdmin


def federation_router(admin: FederationAdmin, auth: AdminAuth) -> APIRouter:
    router = APIRouter(prefix=PREFIX, dependencies=[Depends(auth)])

    @router.get("/peers")
    async def peers() -> dict[str, Any]:
        return {"peers": await admin.peers()}

    @router.get("/trust")
    async def trust_list() -> dict[str, Any]:
        return admin.trust_list()

    @router.put("/trust")
    async def trust_set(request: Request) -> dict[str, Any]:
        return await admin.trust_set(parse_json_object(await request.body()))

    @router.post("/trust/rebind")
    async def rebind(request: Request) -> dict[str, Any]:
        return await admin.rebind(parse_json_object(await request.body()))

    @router.get("/federation/rooms/{room_id}")
    async def room(room_id: str) -> dict[str, Any]:
        return await admin.room(room_id)

    return router

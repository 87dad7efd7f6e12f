"""Routes: registration, login, logout, whoami, devices (Client-Server API §5, §14.10)."""

from __future__ import annotations

from typing import Any

from cis.api.client.context import CLIENT_V3, RouteContext, body_str
from cis.api.client.http import Request, Response, Router, json_response
from cis.api.client.params import require_str
from cis.handlers.accounts import AccountHandler
from cis.handlers.auth_requests import parse_login, parse_register
from cis.handlers.errors import ApiError, Errcode
from cis.ids import DeviceId
from cis.storage.client.accounts import DeviceRecord


def device_json(record: DeviceRecord) -> dict[str, Any]:
    """A device; unknown fields are ``null`` (matrix-nio's schema requires the keys)."""
    return {
        "device_id": record.device_id,
        "display_name": record.display_name,
        "last_seen_ip": record.last_seen_ip,
        "last_seen_ts": record.last_seen_ts,
    }


def register_account_routes(router: Router, ctx: RouteContext, accounts: AccountHandler) -> None:
    async def register(request: Request) -> Response:
        kind = request.query.get("kind", ["user"])[0]
        body = parse_register(request.json())
        return json_response(await accounts.register(body, kind=kind, ip=request.client_host))

    async def available(request: Request) -> Response:
        await accounts.check_available(require_str(request.query, "username"))
        return json_response({"available": True})

    async def login_flows(request: Request) -> Response:
        return json_response({"flows": [{"type": "m.login.password"}]})

    async def login(request: Request) -> Response:
        body = parse_login(request.json())
        return json_response(await accounts.login(body, ip=request.client_host))

    async def logout(request: Request) -> Response:
        await accounts.logout(await ctx.requester(request))
        return json_response({})

    async def logout_all(request: Request) -> Response:
        await accounts.logout_all(await ctx.requester(request))
        return json_response({})

    async def whoami(request: Request) -> Response:
        requester = await ctx.requester(request)
        return json_response(
            {"user_id": requester.user_id, "device_id": requester.device_id, "is_guest": False}
        )

    async def list_devices(request: Request) -> Response:
        records = await accounts.devices(await ctx.requester(request))
        return json_response({"devices": [device_json(r) for r in records]})

    async def get_device(request: Request) -> Response:
        requester = await ctx.requester(request)
        record = await accounts.device(requester, DeviceId(request.params["device_id"]))
        return json_response(device_json(record))

    async def put_device(request: Request) -> Response:
        requester = await ctx.requester(request)
        body = request.json(allow_empty=True)
        name = body_str(body, "display_name", required=False, max_len=256)
        device_id = DeviceId(request.params["device_id"])
        if name is None:
            await accounts.device(requester, device_id)  # 404 for an unknown device
        else:
            await accounts.rename_device(requester, device_id, name)
        return json_response({})

    async def delete_device(request: Request) -> Response:
        requester = await ctx.requester(request)
        body = request.json(allow_empty=True)
        device_id = DeviceId(request.params["device_id"])
        await accounts.device(requester, device_id)
        await accounts.delete_devices(requester, [device_id], body.get("auth"), request.client_host)
        return json_response({})

    async def delete_devices(request: Request) -> Response:
        requester = await ctx.requester(request)
        body = request.json()
        devices = body.get("devices")
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise ApiError(Errcode.BAD_JSON, "devices must be a list of device ids")
        if len(devices) > 1000:
            raise ApiError(Errcode.INVALID_PARAM, "Too many devices")
        await accounts.delete_devices(
            requester, [DeviceId(d) for d in devices], body.get("auth"), request.client_host
        )
        return json_response({})

    router.add("POST", f"{CLIENT_V3}/register", register)
    router.add("GET", f"{CLIENT_V3}/register/available", available)
    router.add("GET", f"{CLIENT_V3}/login", login_flows)
    router.add("POST", f"{CLIENT_V3}/login", login)
    router.add("POST", f"{CLIENT_V3}/logout", logout)
    router.add("POST", f"{CLIENT_V3}/logout/all", logout_all)
    router.add("GET", f"{CLIENT_V3}/account/whoami", whoami)
    router.add("GET", f"{CLIENT_V3}/devices", list_devices)
    router.add("GET", f"{CLIENT_V3}/devices/{{device_id}}", get_device)
    router.add("PUT", f"{CLIENT_V3}/devices/{{device_id}}", put_device)
    router.add("DELETE", f"{CLIENT_V3}/devices/{{device_id}}", delete_device)
    router.add("POST", f"{CLIENT_V3}/delete_devices", delete_devices)

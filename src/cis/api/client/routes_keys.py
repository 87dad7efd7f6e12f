"""Routes: ``/keys/upload``, ``/keys/query``, ``/keys/claim``, ``/keys/changes`` and
``/sendToDevice`` (Client-Server API §"End-to-End Encryption")."""

from __future__ import annotations

from cis.api.client.context import CLIENT_V3, RouteContext
from cis.api.client.http import Request, Response, Router, json_response
from cis.api.client.params import require_str
from cis.handlers.e2e_keys import E2eKeysHandler
from cis.handlers.sync_tokens import StreamToken


def register_key_routes(
    router: Router,
    ctx: RouteContext,
    keys: E2eKeysHandler,
) -> None:
    async def upload(request: Request) -> Response:
        requester = await ctx.requester(request)
        return json_response(await keys.upload(requester, request.json()))

    async def query(request: Request) -> Response:
        await ctx.requester(request)
        return json_response(await keys.query(request.json()))

    async def claim(request: Request) -> Response:
        await ctx.requester(request)
        return json_response(await keys.claim(request.json()))

    async def changes(request: Request) -> Response:
        requester = await ctx.requester(request)
        since = StreamToken.parse(require_str(request.query, "from"))
        until = StreamToken.parse(require_str(request.query, "to"))
        changed = await keys.changes(requester, since.device_lists, until.device_lists)
        return json_response({"changed": changed, "left": []})

    async def send_to_device(request: Request) -> Response:
        requester = await ctx.requester(request)
        await keys.send_to_device(
            requester, request.params["event_type"], request.params["txn_id"], request.json()
        )
        return json_response({})

    router.add("POST", f"{CLIENT_V3}/keys/upload", upload)
    router.add("POST", f"{CLIENT_V3}/keys/query", query)
    router.add("POST", f"{CLIENT_V3}/keys/claim", claim)
    router.add("GET", f"{CLIENT_V3}/keys/changes", changes)
    router.add("PUT", f"{CLIENT_V3}/sendToDevice/{{event_type}}/{{txn_id}}", send_to_device)

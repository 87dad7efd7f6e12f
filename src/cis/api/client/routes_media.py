"""Routes: media upload (``/_matrix/media/v3/upload``) and the authenticated download,
thumbnail and config routes (``/_matrix/client/v1/media/...``)."""

from __future__ import annotations

from urllib.parse import quote

from cis.api.client.context import CLIENT_V1, MEDIA_V3, RouteContext
from cis.api.client.http import Request, Response, Router, json_response
from cis.api.client.params import get_str
from cis.handlers.media import Download, MediaHandler

# Served files never run as a page of this origin (Client-Server API §"Content repository",
# security considerations).
_SAFE_HEADERS = (
    (b"content-security-policy", b"sandbox; default-src 'none'; script-src 'none'; "
     b"plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; "
     b"object-src 'self';"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"cross-origin"),
)  # fmt: skip


def _download_response(download: Download, filename: str | None) -> Response:
    record = download.record
    content_type = (record.content_type or "application/octet-stream").encode("latin-1")
    name = filename or record.filename
    disposition = b"inline" if download.inline else b"attachment"
    if name:
        disposition += b"; filename*=utf-8''" + quote(name, safe="").encode("ascii")
    return Response(
        200,
        headers=(
            (b"content-type", content_type),
            (b"content-length", str(record.size).encode("ascii")),
            (b"content-disposition", disposition),
            *_SAFE_HEADERS,
        ),
        chunks=download.chunks,
    )


def register_media_routes(router: Router, ctx: RouteContext, media: MediaHandler) -> None:
    async def upload(request: Request) -> Response:
        requester = await ctx.requester(request)
        uri = await media.upload(
            requester.user_id,
            request.stream(media.max_upload_bytes),
            request.headers.get("content-type"),
            get_str(request.query, "filename"),
        )
        return json_response({"content_uri": uri})

    async def download(request: Request) -> Response:
        await ctx.requester(request)
        result = await media.download(request.params["server_name"], request.params["media_id"])
        return _download_response(result, request.params.get("file_name"))

    async def thumbnail(request: Request) -> Response:
        await ctx.requester(request)
        result = await media.thumbnail(request.params["server_name"], request.params["media_id"])
        return _download_response(result, None)

    async def config(request: Request) -> Response:
        await ctx.requester(request)
        return json_response({"m.upload.size": media.max_upload_bytes})

    router.add("POST", f"{MEDIA_V3}/upload", upload, body_limit=media.max_upload_bytes, stream=True)
    router.add("GET", f"{MEDIA_V3}/config", config)
    base = f"{CLIENT_V1}/media"
    router.add("GET", f"{base}/download/{{server_name}}/{{media_id}}", download)
    router.add("GET", f"{base}/download/{{server_name}}/{{media_id}}/{{file_name}}", download)
    router.add("GET", f"{base}/thumbnail/{{server_name}}/{{media_id}}", thumbnail)
    router.add("GET", f"{base}/config", config)

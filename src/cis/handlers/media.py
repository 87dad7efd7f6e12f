"""The content repository (Client-Server API §"Content repository").

Uploads stream into the blob store (content-addressed by sha256) up to the configured size
limit (413 ``M_TOO_LARGE`` past it); each upload gets a fresh media id, so ``mxc://`` URIs are
not guessable from the content. Downloads need an access token (the authenticated
``/_matrix/client/v1/media`` routes). Thumbnails: this server does not scale images (no image
library), and the spec lets a server answer with a larger image than asked, so an image is
served as its own thumbnail and anything else has none (404).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from cis.clock import Clock
from cis.handlers.errors import ApiError, Errcode
from cis.ids import ServerName, UserId
from cis.storage.client.media import BlobDir, BlobTooLarge, MediaRecord, MediaStore, new_media_id

DEFAULT_MAX_UPLOAD_BYTES: Final = 50 * 1024 * 1024
MEDIA_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")
CONTENT_TYPE_RE: Final = re.compile(r"[\w.+-]+/[\w.+-]+(?:\s*;[\x20-\x7e]*)?")
# Served inline only when a browser cannot run them; everything else is an attachment.
INLINE_TYPES: Final = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "text/plain",
     "audio/ogg", "audio/mpeg", "video/mp4", "video/webm", "application/octet-stream"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Download:
    record: MediaRecord
    chunks: AsyncIterator[bytes]
    inline: bool


class MediaHandler:
    def __init__(
        self,
        *,
        store: MediaStore,
        blobs: BlobDir,
        server_name: ServerName,
        clock: Clock,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._server_name = server_name
        self._clock = clock
        self.max_upload_bytes = max_upload_bytes

    async def upload(
        self,
        uploader: UserId,
        chunks: AsyncIterator[bytes],
        content_type: str | None,
        filename: str | None,
    ) -> str:
        """Store the bytes and return the ``mxc://`` URI."""
        if content_type is not None and not CONTENT_TYPE_RE.fullmatch(content_type):
            content_type = "application/octet-stream"
        if filename is not None and (len(filename) > 255 or any(c in filename for c in "/\\\0")):
            raise ApiError(Errcode.INVALID_PARAM, "Invalid filename")
        try:
            sha, size = await self._blobs.store_stream(chunks, self.max_upload_bytes)
        except BlobTooLarge:
            raise ApiError(Errcode.TOO_LARGE, "Upload is too large") from None
        media_id = new_media_id()
        await self._store.add(
            MediaRecord(
                media_id, sha, content_type, filename, size, uploader, self._clock.time_ms()
            )
        )
        return f"mxc://{self._server_name}/{media_id}"

    async def download(self, server_name: str, media_id: str) -> Download:
        if server_name != self._server_name:
            # Remote media comes with federation.
            raise ApiError(Errcode.NOT_FOUND, "Media not found")
        if not MEDIA_ID_RE.fullmatch(media_id):
            raise ApiError(Errcode.NOT_FOUND, "Media not found")
        record = await self._store.get(media_id)
        if record is None or not self._blobs.exists(record.sha256):
            raise ApiError(Errcode.NOT_FOUND, "Media not found")
        base_type = (record.content_type or "").split(";", 1)[0].strip().lower()
        return Download(record, self._blobs.read_chunks(record.sha256), base_type in INLINE_TYPES)

    async def thumbnail(self, server_name: str, media_id: str) -> Download:
        download = await self.download(server_name, media_id)
        if not (download.record.content_type or "").startswith("image/"):
            await download.chunks.aclose()  # type: ignore[attr-defined]
            raise ApiError(Errcode.NOT_FOUND, "No thumbnail for this media")
        return download

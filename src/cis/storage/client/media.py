"""Uploaded media: bytes in the home's content-addressed blob store, metadata in ``node.db``.

Blobs live at ``blobs/<first 2 hex digits>/<sha256 hex>``: the same bytes uploaded twice are
stored once. An upload streams into a temporary file beside the blobs (never all in memory),
is hashed on the way, fsynced, and renamed into place, so a crash never leaves a partial blob
under a hash name. The metadata row (media id, content type, file name, size, uploader) is
written after the blob, so a row never points at a missing blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

from cis.ids import UserId
from cis.storage.database import Database

CHUNK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class MediaRecord:
    media_id: str
    sha256: str
    content_type: str | None
    filename: str | None
    size: int
    uploader: UserId
    created_ts: int


class BlobTooLarge(Exception):
    """The stream passed the size limit; nothing was stored."""


class BlobDir:
    """The content-addressed blob folder."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def path_for(self, sha256_hex: str) -> Path:
        if len(sha256_hex) != 64 or not all(c in "0123456789abcdef" for c in sha256_hex):
            raise ValueError("not a sha256 hex digest")
        return self._root / sha256_hex[:2] / sha256_hex

    async def store_stream(self, chunks: AsyncIterator[bytes], limit: int) -> tuple[str, int]:
        """Write ``chunks`` to a blob; return its sha256 hex and size."""
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=self._root)
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise BlobTooLarge
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
            sha = digest.hexdigest()
            final = self.path_for(sha)
            final.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(tmp, final)
            return sha, size
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)  # a few microseconds; must run even when cancelled
            raise

    async def read_chunks(self, sha256_hex: str) -> AsyncIterator[bytes]:
        path = self.path_for(sha256_hex)
        with path.open("rb") as handle:
            while True:
                chunk = await asyncio.to_thread(handle.read, CHUNK)
                if not chunk:
                    return
                yield chunk

    def exists(self, sha256_hex: str) -> bool:
        return self.path_for(sha256_hex).is_file()


def new_media_id() -> str:
    return secrets.token_urlsafe(18)


def add_media_txn(conn: sqlite3.Connection, record: MediaRecord) -> None:
    conn.execute(
        "INSERT INTO cs_media (media_id, sha256, content_type, filename, size, uploader,"
        " created_ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            record.media_id,
            record.sha256,
            record.content_type,
            record.filename,
            record.size,
            record.uploader,
            record.created_ts,
        ),
    )


def get_media_txn(conn: sqlite3.Connection, media_id: str) -> MediaRecord | None:
    row = conn.execute(
        "SELECT media_id, sha256, content_type, filename, size, uploader, created_ts"
        " FROM cs_media WHERE media_id = ?",
        (media_id,),
    ).fetchone()
    if row is None:
        return None
    return MediaRecord(row[0], row[1], row[2], row[3], int(row[4]), UserId(row[5]), int(row[6]))


class MediaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, record: MediaRecord) -> None:
        await self._db.run_interaction("add_media", partial(add_media_txn, record=record))

    async def get(self, media_id: str) -> MediaRecord | None:
        return await self._db.run_read("get_media", partial(get_media_txn, media_id=media_id))

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cis.ids import UserId
from cis.storage.client.media import BlobDir, BlobTooLarge, MediaRecord, MediaStore, new_media_id
from cis.storage.database import Database


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_blob_round_trip_and_dedupe(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path / "blobs")
    sha, size = await blobs.store_stream(chunks(b"hello ", b"world"), limit=100)
    assert sha == hashlib.sha256(b"hello world").hexdigest() and size == 11
    assert blobs.exists(sha)
    again, _ = await blobs.store_stream(chunks(b"hello world"), limit=100)
    assert again == sha
    assert b"".join([c async for c in blobs.read_chunks(sha)]) == b"hello world"
    leftovers = [p for p in (tmp_path / "blobs").iterdir() if p.name.startswith(".upload-")]
    assert leftovers == []


async def test_blob_limit_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path / "blobs")
    with pytest.raises(BlobTooLarge):
        await blobs.store_stream(chunks(b"x" * 60, b"y" * 60), limit=100)
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []
    with pytest.raises(ValueError):
        blobs.path_for("../../etc/passwd")


async def test_media_rows(db: Database) -> None:
    store = MediaStore(db)
    media_id = new_media_id()
    record = MediaRecord(media_id, "a" * 64, "image/png", "cat.png", 3, UserId("@a:x"), 5)
    await store.add(record)
    assert await store.get(media_id) == record
    assert await store.get("nope") is None

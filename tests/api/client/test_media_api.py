"""In-process tests: media upload, download, thumbnail, config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.client.harness import Harness, auth, make_harness

MEDIA = "/_matrix/client/v1/media"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path, max_upload=1000):
        yield harness


async def test_upload_and_download(h: Harness) -> None:
    token = (await h.register("alice"))["access_token"]
    png = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    r = await h.client.post(
        "/_matrix/media/v3/upload?filename=cat.png",
        content=png,
        headers={**auth(token), "content-type": "image/png"},
    )
    assert r.status_code == 200
    uri = r.json()["content_uri"]
    assert uri.startswith("mxc://test.cis.local/")
    media_id = uri.rsplit("/", 1)[1]
    r = await h.client.get(f"{MEDIA}/download/test.cis.local/{media_id}", headers=auth(token))
    assert r.status_code == 200 and r.content == png
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"].startswith("inline; filename*=utf-8''cat.png")
    assert "sandbox" in r.headers["content-security-policy"]
    r = await h.client.get(
        f"{MEDIA}/download/test.cis.local/{media_id}/other.png", headers=auth(token)
    )
    assert "other.png" in r.headers["content-disposition"]
    r = await h.client.get(
        f"{MEDIA}/thumbnail/test.cis.local/{media_id}?width=32&height=32", headers=auth(token)
    )
    assert r.status_code == 200 and r.content == png


async def test_html_is_an_attachment_and_has_no_thumbnail(h: Harness) -> None:
    token = (await h.register("alice"))["access_token"]
    r = await h.client.post(
        "/_matrix/media/v3/upload",
        content=b"<script>x</script>",
        headers={**auth(token), "content-type": "text/html"},
    )
    media_id = r.json()["content_uri"].rsplit("/", 1)[1]
    r = await h.client.get(f"{MEDIA}/download/test.cis.local/{media_id}", headers=auth(token))
    assert r.headers["content-disposition"] == "attachment"
    r = await h.client.get(f"{MEDIA}/thumbnail/test.cis.local/{media_id}", headers=auth(token))
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


async def test_errors(h: Harness) -> None:
    token = (await h.register("alice"))["access_token"]
    r = await h.client.post("/_matrix/media/v3/upload", content=b"x")
    assert r.status_code == 401
    r = await h.client.post("/_matrix/media/v3/upload", content=b"x" * 1001, headers=auth(token))
    assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
    r = await h.client.get(f"{MEDIA}/download/test.cis.local/nope")
    assert r.status_code == 401
    for path in ("test.cis.local/nope", "elsewhere/abc", "test.cis.local/..%2F..%2Fetc"):
        r = await h.client.get(f"{MEDIA}/download/{path}", headers=auth(token))
        assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await h.client.post(
        "/_matrix/media/v3/upload?filename=a%2Fb", content=b"x", headers=auth(token)
    )
    assert r.json()["errcode"] == "M_INVALID_PARAM"


async def test_config(h: Harness) -> None:
    token = (await h.register("alice"))["access_token"]
    for path in (f"{MEDIA}/config", "/_matrix/media/v3/config"):
        r = await h.client.get(path, headers=auth(token))
        assert r.json() == {"m.upload.size": 1000}

"""In-process tests: versions, well-known, capabilities, push rules, account data, filters,
presence, 3pid."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.client.harness import V3, Harness, auth, make_harness


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path):
        yield harness


async def test_versions_and_well_known(h: Harness) -> None:
    r = await h.client.get("/_matrix/client/versions")
    assert "v1.11" in r.json()["versions"]
    r = await h.client.get("/.well-known/matrix/client")
    assert r.json() == {"m.homeserver": {"base_url": "http://test"}}
    assert r.headers["access-control-allow-origin"] == "*"


async def test_capabilities_and_push_rules_need_a_token(h: Harness) -> None:
    for path in ("/capabilities", "/pushrules/", "/account/3pid"):
        r = await h.client.get(f"{V3}{path}")
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    token = (await h.register("alice"))["access_token"]
    caps = (await h.client.get(f"{V3}/capabilities", headers=auth(token))).json()
    assert caps["capabilities"]["m.room_versions"]["default"] == "11"
    rules = (await h.client.get(f"{V3}/pushrules/", headers=auth(token))).json()
    assert rules["global"]["override"][0]["rule_id"] == ".m.rule.master"
    glob = (await h.client.get(f"{V3}/pushrules/global/", headers=auth(token))).json()
    assert glob == rules["global"]
    r = await h.client.get(f"{V3}/account/3pid", headers=auth(token))
    assert r.json() == {"threepids": []}


async def test_account_data(h: Harness) -> None:
    alice = await h.register("alice")
    bob = await h.register("bob")
    token, me = alice["access_token"], alice["user_id"]
    base = f"{V3}/user/{me}/account_data"
    r = await h.client.get(f"{base}/m.direct", headers=auth(token))
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await h.client.put(f"{base}/m.direct", headers=auth(token), json={"@b:x": ["!r:x"]})
    assert r.json() == {}
    r = await h.client.get(f"{base}/m.direct", headers=auth(token))
    assert r.json() == {"@b:x": ["!r:x"]}
    # m.push_rules reads as the defaults until set; clients may not write it here.
    r = await h.client.get(f"{base}/m.push_rules", headers=auth(token))
    assert "global" in r.json()
    r = await h.client.put(f"{base}/m.push_rules", headers=auth(token), json={})
    assert r.status_code == 405
    room = f"{V3}/user/{me}/rooms/%21r%3Ax/account_data/m.tag"
    assert (await h.client.put(room, headers=auth(token), json={"tags": {}})).json() == {}
    assert (await h.client.get(room, headers=auth(token))).json() == {"tags": {}}
    # Another user's data is off limits.
    r = await h.client.get(f"{base}/m.direct", headers=auth(bob["access_token"]))
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await h.client.put(f"{base}/m.direct", headers=auth(token), content=b"[1]")
    assert r.json()["errcode"] == "M_BAD_JSON"


async def test_account_data_wakes_the_user(h: Harness) -> None:
    alice = await h.register("alice")
    with h.notifier.listen(alice["user_id"], []) as listener:
        await h.client.put(
            f"{V3}/user/{alice['user_id']}/account_data/x.y",
            headers=auth(alice["access_token"]),
            json={"a": 1},
        )
        assert listener.woken


async def test_filters(h: Harness) -> None:
    alice = await h.register("alice")
    token, me = alice["access_token"], alice["user_id"]
    definition = {"room": {"timeline": {"limit": 5, "types": ["m.room.message"]}}}
    r = await h.client.post(f"{V3}/user/{me}/filter", headers=auth(token), json=definition)
    filter_id = r.json()["filter_id"]
    assert isinstance(filter_id, str)
    r = await h.client.get(f"{V3}/user/{me}/filter/{filter_id}", headers=auth(token))
    assert r.json() == definition
    for missing in ("999", "abc", "-1"):
        r = await h.client.get(f"{V3}/user/{me}/filter/{missing}", headers=auth(token))
        assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await h.client.post(
        f"{V3}/user/{me}/filter", headers=auth(token), json={"room": {"timeline": {"limit": "ten"}}}
    )
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = await h.client.post(f"{V3}/user/@other:x/filter", headers=auth(token), json={})
    assert r.status_code == 403


async def test_presence_stub(h: Harness) -> None:
    alice = await h.register("alice")
    token, me = alice["access_token"], alice["user_id"]
    r = await h.client.get(f"{V3}/presence/{me}/status", headers=auth(token))
    assert r.json() == {"presence": "offline"}
    r = await h.client.put(
        f"{V3}/presence/{me}/status", headers=auth(token), json={"presence": "online"}
    )
    assert r.json() == {}
    r = await h.client.put(
        f"{V3}/presence/{me}/status", headers=auth(token), json={"presence": "dancing"}
    )
    assert r.json()["errcode"] == "M_INVALID_PARAM"

"""In-process tests: key upload, query, claim, changes, to-device."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.client.harness import V3, Harness, auth, make_harness


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path):
        yield harness


def device_keys(user: dict[str, Any]) -> dict[str, Any]:
    device = user["device_id"]
    return {
        "user_id": user["user_id"],
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device}": "c" * 43, f"ed25519:{device}": "e" * 43},
        "signatures": {user["user_id"]: {f"ed25519:{device}": "s" * 86}},
    }


async def test_upload_query_claim_between_two_devices(h: Harness) -> None:
    alice = await h.register("alice")
    bob = await h.register("bob")
    otks = {f"signed_curve25519:K{i}": {"key": f"k{i}", "signatures": {}} for i in range(2)}
    r = await h.client.post(
        f"{V3}/keys/upload",
        headers=auth(bob["access_token"]),
        json={
            "device_keys": device_keys(bob),
            "one_time_keys": otks,
            "fallback_keys": {"signed_curve25519:FB": {"key": "fb", "fallback": True}},
        },
    )
    assert r.json() == {"one_time_key_counts": {"signed_curve25519": 2}}

    r = await h.client.post(
        f"{V3}/keys/query",
        headers=auth(alice["access_token"]),
        json={"device_keys": {bob["user_id"]: [], "@x:elsewhere": []}},
    )
    body = r.json()
    got = body["device_keys"][bob["user_id"]][bob["device_id"]]
    assert got["keys"] == device_keys(bob)["keys"]
    assert body["failures"] == {"elsewhere": {}}

    claims = []
    for _ in range(3):
        r = await h.client.post(
            f"{V3}/keys/claim",
            headers=auth(alice["access_token"]),
            json={"one_time_keys": {bob["user_id"]: {bob["device_id"]: "signed_curve25519"}}},
        )
        claims.append(next(iter(r.json()["one_time_keys"][bob["user_id"]][bob["device_id"]])))
    assert claims == ["signed_curve25519:K0", "signed_curve25519:K1", "signed_curve25519:FB"]


async def test_upload_refuses_another_devices_keys(h: Harness) -> None:
    alice = await h.register("alice")
    bob = await h.register("bob")
    r = await h.client.post(
        f"{V3}/keys/upload",
        headers=auth(alice["access_token"]),
        json={"device_keys": device_keys(bob)},
    )
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    for bad in (
        {"one_time_keys": {"nocolon": {}}},
        {"one_time_keys": []},
        {"one_time_keys": {"a:b": 5}},
        {"device_keys": "x"},
    ):
        r = await h.client.post(f"{V3}/keys/upload", headers=auth(alice["access_token"]), json=bad)
        assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    for path, bad in (
        ("query", {}),
        ("query", {"device_keys": {"nouser": []}}),
        ("claim", {"one_time_keys": {"@a:x": {"D": 5}}}),
    ):
        r = await h.client.post(f"{V3}/keys/{path}", headers=auth(alice["access_token"]), json=bad)
        assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"


async def test_keys_changes(h: Harness) -> None:
    alice = await h.register("alice")
    r = await h.client.get(
        f"{V3}/keys/changes?from=s0_0_0_0_0_0&to=s0_0_0_0_0_99", headers=auth(alice["access_token"])
    )
    assert alice["user_id"] in r.json()["changed"] and r.json()["left"] == []
    r = await h.client.get(
        f"{V3}/keys/changes?from=bad&to=s0_0_0_0_0_0", headers=auth(alice["access_token"])
    )
    assert r.json()["errcode"] == "M_INVALID_PARAM"
    r = await h.client.get(
        f"{V3}/keys/changes?from=s0_0_0_0_0_0", headers=auth(alice["access_token"])
    )
    assert r.json()["errcode"] == "M_MISSING_PARAM"


async def test_send_to_device_is_idempotent_and_wakes(h: Harness) -> None:
    alice = await h.register("alice")
    bob = await h.register("bob")
    body = {"messages": {bob["user_id"]: {"*": {"hello": 1}}}}
    with h.notifier.listen(bob["user_id"], []) as listener:
        for _ in range(2):  # a retried txn id queues once
            r = await h.client.put(
                f"{V3}/sendToDevice/m.test/txn1", headers=auth(alice["access_token"]), json=body
            )
            assert r.json() == {}
        assert listener.woken

    def count(conn: Any) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM cs_to_device").fetchone()[0])

    assert await h.db.run_read("count", count) == 1
    r = await h.client.put(
        f"{V3}/sendToDevice/m.test/txn2", headers=auth(alice["access_token"]), json={"messages": []}
    )
    assert r.json()["errcode"] == "M_BAD_JSON"


async def test_keys_changes_only_for_users_sharing_a_room(h: Harness) -> None:
    alice = await h.register("alice")
    bob = await h.register("bob")
    query = f"{V3}/keys/changes?from=s0_0_0_0_0_0&to=s0_0_0_0_0_999"
    changed = (await h.client.get(query, headers=auth(alice["access_token"]))).json()["changed"]
    assert bob["user_id"] not in changed  # no room in common
    r = await h.client.post(
        f"{V3}/createRoom", headers=auth(alice["access_token"]), json={"preset": "public_chat"}
    )
    await h.client.post(f"{V3}/join/{r.json()['room_id']}", headers=auth(bob["access_token"]))
    from tests.api.client.rooms_helpers import settle

    await settle(h)
    changed = (await h.client.get(query, headers=auth(alice["access_token"]))).json()["changed"]
    assert bob["user_id"] in changed and alice["user_id"] in changed

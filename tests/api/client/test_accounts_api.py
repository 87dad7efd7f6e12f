"""In-process tests: registration, login, logout, whoami, devices."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cis.handlers.ratelimit import RateLimit, RateLimits
from tests.api.client.harness import V3, Harness, auth, make_harness


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path):
        yield harness


async def test_register_as_matrix_nio_does(h: Harness) -> None:
    r = await h.client.post(
        f"{V3}/register",
        json={
            "username": "alice",
            "password": "secret",
            "auth": {"type": "m.login.dummy"},
            "initial_device_display_name": "nio",
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == "@alice:test.cis.local"
    assert body["device_id"] and body["access_token"]
    who = await h.client.get(f"{V3}/account/whoami", headers=auth(body["access_token"]))
    assert who.json() == {
        "user_id": "@alice:test.cis.local",
        "device_id": body["device_id"],
        "is_guest": False,
    }


async def test_register_uia_flow(h: Harness) -> None:
    first = await h.client.post(f"{V3}/register", json={"username": "bob", "password": "pw"})
    assert first.status_code == 401
    challenge = first.json()
    assert challenge["flows"] == [{"stages": ["m.login.dummy"]}]
    assert "errcode" not in challenge and challenge["session"]
    second = await h.client.post(
        f"{V3}/register",
        json={
            "username": "bob",
            "password": "pw",
            "auth": {"type": "m.login.dummy", "session": challenge["session"]},
        },
    )
    assert second.status_code == 200 and second.json()["user_id"] == "@bob:test.cis.local"
    # An unknown session is fine too: the dummy stage needs none.
    third = await h.client.post(
        f"{V3}/register",
        json={
            "username": "carol",
            "password": "pw",
            "auth": {"type": "m.login.dummy", "session": "made-up"},
        },
    )
    assert third.status_code == 200
    unknown_type = await h.client.post(
        f"{V3}/register",
        json={"username": "dave", "password": "pw", "auth": {"type": "m.login.email.identity"}},
    )
    assert unknown_type.status_code == 401 and unknown_type.json()["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        (
            {"username": "Alice", "password": "pw", "auth": {"type": "m.login.dummy"}},
            400,
            "M_INVALID_USERNAME",
        ),
        (
            {"username": "cis", "password": "pw", "auth": {"type": "m.login.dummy"}},
            400,
            "M_USER_IN_USE",
        ),
        ({"username": "eve", "auth": {"type": "m.login.dummy"}}, 400, "M_MISSING_PARAM"),
        ({"username": 12, "password": "pw"}, 400, "M_INVALID_PARAM"),
    ],
)
async def test_register_refusals(
    h: Harness, body: dict[str, object], status: int, errcode: str
) -> None:
    r = await h.client.post(f"{V3}/register", json=body)
    assert r.status_code == status
    assert r.json()["errcode"] == errcode


async def test_register_taken_and_guest(h: Harness) -> None:
    await h.register("alice")
    again = await h.client.post(
        f"{V3}/register",
        json={"username": "alice", "password": "x", "auth": {"type": "m.login.dummy"}},
    )
    assert again.status_code == 400 and again.json()["errcode"] == "M_USER_IN_USE"
    guest = await h.client.post(f"{V3}/register?kind=guest", json={})
    assert guest.status_code == 403 and guest.json()["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


async def test_register_without_username_picks_one(h: Harness) -> None:
    r = await h.client.post(
        f"{V3}/register", json={"password": "pw", "auth": {"type": "m.login.dummy"}}
    )
    assert r.status_code == 200 and r.json()["user_id"].startswith("@u")


async def test_inhibit_login(h: Harness) -> None:
    r = await h.client.post(
        f"{V3}/register",
        json={
            "username": "quiet",
            "password": "pw",
            "auth": {"type": "m.login.dummy"},
            "inhibit_login": True,
        },
    )
    assert r.json() == {"user_id": "@quiet:test.cis.local"}


async def test_availability(h: Harness) -> None:
    await h.register("alice")
    r = await h.client.get(f"{V3}/register/available?username=free")
    assert r.json() == {"available": True}
    r = await h.client.get(f"{V3}/register/available?username=alice")
    assert r.status_code == 400 and r.json()["errcode"] == "M_USER_IN_USE"
    r = await h.client.get(f"{V3}/register/available?username=BAD")
    assert r.json()["errcode"] == "M_INVALID_USERNAME"
    r = await h.client.get(f"{V3}/register/available")
    assert r.json()["errcode"] == "M_MISSING_PARAM"


async def test_closed_registration(tmp_path: Path) -> None:
    async for h in make_harness(tmp_path, open_registration=False):
        r = await h.client.post(
            f"{V3}/register",
            json={"username": "a", "password": "p", "auth": {"type": "m.login.dummy"}},
        )
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
        # Accounts come from `cis-node user add` instead, and can log in.
        await h.accounts.create_user("admin", "pw", admin=True)
        login = await h.client.post(
            f"{V3}/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "admin"},
                "password": "pw",
            },
        )
        assert login.status_code == 200


async def test_registration_rate_limit_per_ip(tmp_path: Path) -> None:
    limits = RateLimits(registrations_per_ip=RateLimit(0.001, 2))
    async for h in make_harness(tmp_path, limits=limits):
        await h.register("a1")
        await h.register("a2")
        r = await h.client.post(
            f"{V3}/register",
            json={"username": "a3", "password": "p", "auth": {"type": "m.login.dummy"}},
        )
        assert r.status_code == 429
        assert r.json()["errcode"] == "M_LIMIT_EXCEEDED" and r.json()["retry_after_ms"] > 0


async def test_login_flows_and_login(h: Harness) -> None:
    assert (await h.client.get(f"{V3}/login")).json() == {"flows": [{"type": "m.login.password"}]}
    await h.register("alice", "pw1")
    for user in ("alice", "@alice:test.cis.local", "ALICE"):
        r = await h.client.post(
            f"{V3}/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": "pw1",
                "device_id": "MYDEVICE",
            },
        )
        assert r.status_code == 200, user
        assert r.json()["user_id"] == "@alice:test.cis.local"
        assert r.json()["device_id"] == "MYDEVICE"


async def test_login_failures_look_the_same(h: Harness) -> None:
    await h.register("alice", "pw1")
    bodies = [
        {"type": "m.login.password", "user": "alice", "password": "wrong"},
        {"type": "m.login.password", "user": "nobody", "password": "pw1"},
        {"type": "m.login.password", "user": "cis", "password": "pw1"},
        {"type": "m.login.password", "user": "@alice:other.server", "password": "pw1"},
    ]
    answers = []
    for body in bodies:
        r = await h.client.post(f"{V3}/login", json=body)
        answers.append((r.status_code, r.json()))
    assert all(
        a == (403, {"errcode": "M_FORBIDDEN", "error": "Invalid username or password"})
        for a in answers
    )


async def test_failed_logins_are_limited_per_account(h: Harness) -> None:
    await h.register("alice", "right")
    for _ in range(5):
        r = await h.client.post(
            f"{V3}/login", json={"type": "m.login.password", "user": "alice", "password": "x"}
        )
        assert r.status_code == 403
    r = await h.client.post(
        f"{V3}/login", json={"type": "m.login.password", "user": "alice", "password": "right"}
    )
    assert r.status_code == 429 and r.json()["retry_after_ms"] > 0
    h.clock.advance(60)
    r = await h.client.post(
        f"{V3}/login", json={"type": "m.login.password", "user": "alice", "password": "right"}
    )
    assert r.status_code == 200


async def test_missing_and_unknown_tokens(h: Harness) -> None:
    r = await h.client.get(f"{V3}/account/whoami")
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await h.client.get(f"{V3}/account/whoami", headers=auth("nope"))
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"
    r = await h.client.get(f"{V3}/account/whoami?access_token=nope")
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"


async def test_logout_deletes_the_device(h: Harness) -> None:
    alice = await h.register("alice")
    token = alice["access_token"]
    r = await h.client.post(
        f"{V3}/logout", headers={**auth(token), "content-type": "application/json"}
    )
    assert r.status_code == 200 and r.json() == {}
    r = await h.client.get(f"{V3}/account/whoami", headers=auth(token))
    assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"


async def test_logout_all(h: Harness) -> None:
    await h.register("alice", "pw")
    tokens = []
    for _ in range(2):
        r = await h.client.post(
            f"{V3}/login", json={"type": "m.login.password", "user": "alice", "password": "pw"}
        )
        tokens.append(r.json()["access_token"])
    r = await h.client.post(f"{V3}/logout/all", headers=auth(tokens[0]))
    assert r.json() == {}
    for token in tokens:
        r = await h.client.get(f"{V3}/account/whoami", headers=auth(token))
        assert r.status_code == 401


async def test_devices(h: Harness) -> None:
    alice = await h.register("alice", "pw")
    token, device = alice["access_token"], alice["device_id"]
    second = await h.client.post(
        f"{V3}/login",
        json={
            "type": "m.login.password",
            "user": "alice",
            "password": "pw",
            "device_id": "SECOND",
            "initial_device_display_name": "laptop",
        },
    )
    second_token = second.json()["access_token"]
    listed = (await h.client.get(f"{V3}/devices", headers=auth(token))).json()["devices"]
    assert {d["device_id"] for d in listed} == {device, "SECOND"}
    assert all(
        set(d) == {"device_id", "display_name", "last_seen_ip", "last_seen_ts"} for d in listed
    )
    one = await h.client.get(f"{V3}/devices/SECOND", headers=auth(token))
    assert one.json()["display_name"] == "laptop"
    assert (await h.client.get(f"{V3}/devices/NOPE", headers=auth(token))).status_code == 404
    r = await h.client.put(
        f"{V3}/devices/SECOND", headers=auth(token), json={"display_name": "work laptop"}
    )
    assert r.json() == {}
    one = await h.client.get(f"{V3}/devices/SECOND", headers=auth(token))
    assert one.json()["display_name"] == "work laptop"
    r = await h.client.put(f"{V3}/devices/NOPE", headers=auth(token), json={"display_name": "x"})
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await h.client.put(f"{V3}/devices/SECOND", headers=auth(token), json={"display_name": 5})
    assert r.json()["errcode"] == "M_INVALID_PARAM"

    # Deleting needs the password again.
    r = await h.client.request("DELETE", f"{V3}/devices/SECOND", headers=auth(token), json={})
    assert r.status_code == 401 and r.json()["flows"] == [{"stages": ["m.login.password"]}]
    session = r.json()["session"]
    wrong = await h.client.request(
        "DELETE",
        f"{V3}/devices/SECOND",
        headers=auth(token),
        json={
            "auth": {
                "type": "m.login.password",
                "session": session,
                "password": "bad",
                "identifier": {"type": "m.id.user", "user": "alice"},
            }
        },
    )
    assert wrong.status_code == 401 and wrong.json()["errcode"] == "M_FORBIDDEN"
    ok = await h.client.request(
        "DELETE",
        f"{V3}/devices/SECOND",
        headers=auth(token),
        json={
            "auth": {
                "type": "m.login.password",
                "session": session,
                "password": "pw",
                "identifier": {"type": "m.id.user", "user": "alice"},
            }
        },
    )
    assert ok.status_code == 200
    assert (
        await h.client.get(f"{V3}/account/whoami", headers=auth(second_token))
    ).status_code == 401
    r = await h.client.request("DELETE", f"{V3}/devices/SECOND", headers=auth(token), json={})
    assert r.status_code == 404


async def test_delete_devices_in_bulk(h: Harness) -> None:
    alice = await h.register("alice", "pw")
    token = alice["access_token"]
    r = await h.client.post(
        f"{V3}/delete_devices", headers=auth(token), json={"devices": [alice["device_id"]]}
    )
    assert r.status_code == 401
    r = await h.client.post(f"{V3}/delete_devices", headers=auth(token), json={"devices": "x"})
    assert r.json()["errcode"] == "M_BAD_JSON"
    r = await h.client.post(
        f"{V3}/delete_devices",
        headers=auth(token),
        json={
            "devices": [alice["device_id"]],
            "auth": {"type": "m.login.password", "user": "alice", "password": "pw"},
        },
    )
    assert r.status_code == 200
    assert (await h.client.get(f"{V3}/account/whoami", headers=auth(token))).status_code == 401

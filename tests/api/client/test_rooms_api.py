"""In-process tests: createRoom, membership, send, state, redaction, aliases, profile."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cis.handlers.ratelimit import RateLimit, RateLimits
from tests.api.client.harness import V3, Harness, auth, make_harness
from tests.api.client.rooms_helpers import create_room, send, settle


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path):
        yield harness


@pytest.fixture
async def users(h: Harness) -> tuple[dict[str, Any], dict[str, Any]]:
    return await h.register("alice"), await h.register("bob")


async def test_create_room_and_its_state(h: Harness, users: Any) -> None:
    alice, _ = users
    room = await create_room(
        h,
        alice["access_token"],
        name="Pub",
        topic="Beer",
        preset="public_chat",
        room_alias_name="pub",
    )
    state = await h.client.get(f"{V3}/rooms/{room}/state", headers=auth(alice["access_token"]))
    kinds = {(e["type"], e["state_key"]) for e in state.json()}
    assert ("m.room.create", "") in kinds and ("m.room.canonical_alias", "") in kinds
    assert all(
        {"event_id", "sender", "type", "state_key", "origin_server_ts"} <= set(e)
        for e in state.json()
    )
    for path in ("m.room.name", "m.room.name/"):
        r = await h.client.get(
            f"{V3}/rooms/{room}/state/{path}", headers=auth(alice["access_token"])
        )
        assert r.json() == {"name": "Pub"}
    r = await h.client.get(f"{V3}/directory/room/%23pub%3Atest.cis.local")
    assert r.json() == {"room_id": room, "servers": ["test.cis.local"]}


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        ({"room_version": "9"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"preset": "nope"}, 400, "M_BAD_JSON"),
        (
            {"power_level_content_override": {"users": {}, "events_default": 200}},
            400,
            "M_INVALID_ROOM_STATE",
        ),
    ],
)
async def test_create_room_refusals(
    h: Harness, users: Any, body: dict[str, Any], status: int, errcode: str
) -> None:
    alice, _ = users
    r = await h.client.post(f"{V3}/createRoom", headers=auth(alice["access_token"]), json=body)
    assert r.status_code == status and r.json()["errcode"] == errcode


async def test_alias_in_use(h: Harness, users: Any) -> None:
    alice, _ = users
    await create_room(h, alice["access_token"], room_alias_name="taken")
    r = await h.client.post(
        f"{V3}/createRoom", headers=auth(alice["access_token"]), json={"room_alias_name": "taken"}
    )
    assert r.status_code == 400 and r.json()["errcode"] == "M_ROOM_IN_USE"


async def test_membership_lifecycle(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = alice["access_token"], bob["access_token"]
    room = await create_room(h, ta, preset="private_chat")
    # Bob may not join an invite-only room uninvited: the rule is named.
    r = await h.client.post(f"{V3}/join/{room}", headers=auth(tb))
    assert r.status_code == 403 and "rule" in r.json()["error"]
    r = await h.client.post(
        f"{V3}/rooms/{room}/invite", headers=auth(ta), json={"user_id": bob["user_id"]}
    )
    assert r.json() == {}
    r = await h.client.post(f"{V3}/rooms/{room}/join", headers=auth(tb))
    assert r.json() == {"room_id": room}
    joined = (await h.client.get(f"{V3}/rooms/{room}/joined_members", headers=auth(ta))).json()
    assert set(joined["joined"]) == {alice["user_id"], bob["user_id"]}
    assert joined["joined"][bob["user_id"]] == {"display_name": "bob"}
    r = await h.client.get(f"{V3}/joined_rooms", headers=auth(tb))
    await settle(h)
    r = await h.client.get(f"{V3}/joined_rooms", headers=auth(tb))
    assert r.json() == {"joined_rooms": [room]}
    # Kick, then ban: a banned user's send is refused.
    r = await h.client.post(
        f"{V3}/rooms/{room}/kick",
        headers=auth(ta),
        json={"user_id": bob["user_id"], "reason": "bye"},
    )
    assert r.json() == {}
    r = await h.client.post(
        f"{V3}/rooms/{room}/ban", headers=auth(ta), json={"user_id": bob["user_id"]}
    )
    assert r.json() == {}
    r = await h.client.put(
        f"{V3}/rooms/{room}/send/m.room.message/x",
        headers=auth(tb),
        json={"msgtype": "m.text", "body": "let me in"},
    )
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await h.client.post(f"{V3}/rooms/{room}/join", headers=auth(tb))
    assert r.status_code == 403
    r = await h.client.post(
        f"{V3}/rooms/{room}/unban", headers=auth(ta), json={"user_id": bob["user_id"]}
    )
    assert r.json() == {}
    r = await h.client.post(
        f"{V3}/rooms/{room}/unban", headers=auth(ta), json={"user_id": bob["user_id"]}
    )
    assert r.status_code == 403
    members = (
        await h.client.get(f"{V3}/rooms/{room}/members?membership=leave", headers=auth(ta))
    ).json()["chunk"]
    assert [m["state_key"] for m in members] == [bob["user_id"]]
    await settle(h)
    r = await h.client.post(f"{V3}/rooms/{room}/forget", headers=auth(tb))
    assert r.json() == {}
    r = await h.client.post(f"{V3}/rooms/{room}/forget", headers=auth(ta))
    assert r.status_code == 400  # still joined


async def test_bob_cannot_kick_alice(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await create_room(h, alice["access_token"], preset="public_chat")
    await h.client.post(f"{V3}/join/{room}", headers=auth(bob["access_token"]))
    r = await h.client.post(
        f"{V3}/rooms/{room}/kick",
        headers=auth(bob["access_token"]),
        json={"user_id": alice["user_id"]},
    )
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await h.client.post(
        f"{V3}/rooms/{room}/kick",
        headers=auth(alice["access_token"]),
        json={"user_id": "not-a-user"},
    )
    assert r.json()["errcode"] == "M_INVALID_PARAM"


async def test_leave(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await create_room(h, alice["access_token"], preset="public_chat")
    r = await h.client.post(f"{V3}/rooms/{room}/leave", headers=auth(bob["access_token"]))
    assert r.status_code == 403
    await h.client.post(f"{V3}/join/{room}", headers=auth(bob["access_token"]))
    r = await h.client.post(f"{V3}/rooms/{room}/leave", headers=auth(bob["access_token"]), json={})
    assert r.json() == {}


async def test_unknown_rooms(h: Harness, users: Any) -> None:
    alice, _ = users
    t = auth(alice["access_token"])
    for method, path in (
        ("POST", f"{V3}/join/!nope:test.cis.local"),
        ("POST", f"{V3}/join/%23nope:test.cis.local"),
        ("GET", f"{V3}/rooms/!nope:test.cis.local/state"),
        ("GET", f"{V3}/rooms/!nope:test.cis.local/messages?dir=b"),
        ("PUT", f"{V3}/rooms/!nope:test.cis.local/send/m.room.message/1"),
    ):
        r = await h.client.request(method, path, headers=t, json={} if method != "GET" else None)
        assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND", path


async def test_send_is_idempotent_per_device_txn(h: Harness, users: Any) -> None:
    alice, _ = users
    room = await create_room(h, alice["access_token"])
    first = await send(h, alice["access_token"], room, "hello", txn="same")
    again = await send(h, alice["access_token"], room, "different body", txn="same")
    assert again == first
    # Concurrent retries of one txn id give one event.
    results = await asyncio.gather(
        *(send(h, alice["access_token"], room, "race", txn="race") for _ in range(5))
    )
    assert len(set(results)) == 1
    # Another device of the same user, same txn id: a different event.
    r = await h.client.post(
        f"{V3}/login", json={"type": "m.login.password", "user": "alice", "password": "pw"}
    )
    other = await send(h, r.json()["access_token"], room, "hello", txn="same")
    assert other != first


async def test_concurrent_sends_never_fork(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await create_room(h, alice["access_token"], preset="public_chat")
    await h.client.post(f"{V3}/join/{room}", headers=auth(bob["access_token"]))
    await asyncio.gather(
        *(
            send(h, u["access_token"], room, f"{u['user_id']}{i}", txn=f"c{i}")
            for i in range(20)
            for u in (alice, bob)
        )
    )
    store = await h.manager.get(room)
    assert store is not None
    assert len(await store.forward_extremities()) == 1
    # A single chain: every event cites exactly the one stored before it.
    events = await store.get_latest_events(1000)
    for before, after in itertools.pairwise(events):
        assert after.prev_events == (before.event_id,)
        assert after.depth == before.depth + 1


async def test_state_put_get_and_errors(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = auth(alice["access_token"]), auth(bob["access_token"])
    room = await create_room(h, alice["access_token"], preset="public_chat")
    r = await h.client.put(
        f"{V3}/rooms/{room}/state/m.room.topic", headers=ta, json={"topic": "t1"}
    )
    assert "event_id" in r.json()
    r = await h.client.put(f"{V3}/rooms/{room}/state/org.example/a%2Fb", headers=ta, json={"k": 1})
    assert "event_id" in r.json()
    r = await h.client.get(f"{V3}/rooms/{room}/state/org.example/a%2Fb", headers=ta)
    assert r.json() == {"k": 1}
    r = await h.client.get(f"{V3}/rooms/{room}/state/org.example/a", headers=ta)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    # Bob is not in the room: state is forbidden; once joined he may read but not set the
    # power levels.
    r = await h.client.get(f"{V3}/rooms/{room}/state/m.room.topic", headers=tb)
    assert r.status_code == 403
    await h.client.post(f"{V3}/join/{room}", headers=tb)
    assert (await h.client.get(f"{V3}/rooms/{room}/state/m.room.topic", headers=tb)).json() == {
        "topic": "t1"
    }
    r = await h.client.put(
        f"{V3}/rooms/{room}/state/m.room.power_levels",
        headers=tb,
        json={"users": {bob["user_id"]: 100}},
    )
    assert r.status_code == 403 and "rule" in r.json()["error"]
    r = await h.client.put(f"{V3}/rooms/{room}/state/m.room.create", headers=ta, json={})
    assert r.status_code == 403
    r = await h.client.put(f"{V3}/rooms/{room}/state/m.room.topic", headers=ta, content=b"[]")
    assert r.json()["errcode"] == "M_BAD_JSON"


async def test_power_levels_change(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = auth(alice["access_token"]), auth(bob["access_token"])
    room = await create_room(h, alice["access_token"], preset="public_chat")
    await h.client.post(f"{V3}/join/{room}", headers=tb)
    power = (await h.client.get(f"{V3}/rooms/{room}/state/m.room.power_levels", headers=ta)).json()
    power["users"][bob["user_id"]] = 50
    r = await h.client.put(f"{V3}/rooms/{room}/state/m.room.power_levels", headers=ta, json=power)
    assert r.status_code == 200
    r = await h.client.put(
        f"{V3}/rooms/{room}/state/m.room.name", headers=tb, json={"name": "by bob"}
    )
    assert r.status_code == 200


async def test_event_too_large(h: Harness, users: Any) -> None:
    alice, _ = users
    room = await create_room(h, alice["access_token"])
    r = await h.client.put(
        f"{V3}/rooms/{room}/send/m.room.message/big",
        headers=auth(alice["access_token"]),
        json={"msgtype": "m.text", "body": "x" * 70_000},
    )
    assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
    r = await h.client.put(
        f"{V3}/rooms/{room}/send/m.room.message/float",
        headers=auth(alice["access_token"]),
        json={"msgtype": "m.text", "body": "x", "n": 1.5},
    )
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"


async def test_redaction(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = auth(alice["access_token"]), auth(bob["access_token"])
    room = await create_room(h, alice["access_token"], preset="public_chat")
    await h.client.post(f"{V3}/join/{room}", headers=tb)
    mine = await send(h, bob["access_token"], room, "oops")
    theirs = await send(h, alice["access_token"], room, "alice's")
    r = await h.client.put(
        f"{V3}/rooms/{room}/redact/{theirs}/r1", headers=tb, json={"reason": "no"}
    )
    assert r.status_code == 403
    r = await h.client.put(f"{V3}/rooms/{room}/redact/{mine}/r2", headers=tb, json={})
    redaction = r.json()["event_id"]
    await settle(h)
    event = (await h.client.get(f"{V3}/rooms/{room}/event/{mine}", headers=ta)).json()
    assert event["content"] == {}
    assert event["unsigned"]["redacted_because"]["event_id"] == redaction
    r = await h.client.get(f"{V3}/rooms/{room}/event/{redaction}", headers=ta)
    assert r.json()["redacts"] == mine and r.json()["content"]["redacts"] == mine
    # Alice (power 100) may redact Bob's event.
    other = await send(h, bob["access_token"], room, "again")
    r = await h.client.put(f"{V3}/rooms/{room}/redact/{other}/r3", headers=ta, json={})
    assert r.status_code == 200
    r = await h.client.put(f"{V3}/rooms/{room}/redact/$unknown/r4", headers=ta, json={})
    assert r.status_code == 404
    r = await h.client.put(f"{V3}/rooms/{room}/send/m.room.redaction/r5", headers=ta, json={})
    assert r.status_code == 400


async def test_message_rate_limit(tmp_path: Path) -> None:
    limits = RateLimits(messages_per_user=RateLimit(1, 3))
    async for h in make_harness(tmp_path, limits=limits):
        alice = await h.register("alice")
        room = await create_room(h, alice["access_token"])
        for i in range(3):
            await send(h, alice["access_token"], room, f"m{i}")
        r = await h.client.put(
            f"{V3}/rooms/{room}/send/m.room.message/over",
            headers=auth(alice["access_token"]),
            json={"msgtype": "m.text", "body": "x"},
        )
        assert r.status_code == 429 and r.json()["retry_after_ms"] > 0


async def test_aliases(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = auth(alice["access_token"]), auth(bob["access_token"])
    room = await create_room(h, alice["access_token"])
    alias = "%23room%3Atest.cis.local"
    r = await h.client.put(f"{V3}/directory/room/{alias}", headers=tb, json={"room_id": room})
    assert r.status_code == 403
    r = await h.client.put(f"{V3}/directory/room/{alias}", headers=ta, json={"room_id": room})
    assert r.json() == {}
    r = await h.client.put(f"{V3}/directory/room/{alias}", headers=ta, json={"room_id": room})
    assert r.status_code == 409 and r.json()["errcode"] == "M_ROOM_IN_USE"
    r = await h.client.get(f"{V3}/directory/room/%23other%3Aelsewhere")
    assert r.status_code == 404
    r = await h.client.get(f"{V3}/directory/room/noalias")
    assert r.json()["errcode"] == "M_INVALID_PARAM"
    r = await h.client.request("DELETE", f"{V3}/directory/room/{alias}", headers=tb)
    assert r.status_code == 403
    r = await h.client.request("DELETE", f"{V3}/directory/room/{alias}", headers=ta)
    assert r.json() == {}
    assert (await h.client.get(f"{V3}/directory/room/{alias}")).status_code == 404


async def test_profile_propagates_to_rooms(h: Harness, users: Any) -> None:
    alice, _ = users
    ta = auth(alice["access_token"])
    room = await create_room(h, alice["access_token"])
    await settle(h)
    me = alice["user_id"]
    r = await h.client.put(
        f"{V3}/profile/{me}/displayname", headers=ta, json={"displayname": "Alice A."}
    )
    assert r.json() == {}
    assert (await h.client.get(f"{V3}/profile/{me}/displayname")).json() == {
        "displayname": "Alice A."
    }
    assert (await h.client.get(f"{V3}/profile/{me}")).json() == {"displayname": "Alice A."}
    member = (await h.client.get(f"{V3}/rooms/{room}/state/m.room.member/{me}", headers=ta)).json()
    assert member == {"membership": "join", "displayname": "Alice A."}
    r = await h.client.put(
        f"{V3}/profile/{me}/avatar_url", headers=ta, json={"avatar_url": "http://x"}
    )
    assert r.json()["errcode"] == "M_INVALID_PARAM"
    r = await h.client.put(
        f"{V3}/profile/@bob:test.cis.local/displayname", headers=ta, json={"displayname": "x"}
    )
    assert r.status_code == 403
    r = await h.client.get(f"{V3}/profile/@nobody:test.cis.local")
    assert r.status_code == 404
    assert (await h.client.get(f"{V3}/profile/{me}/avatar_url")).json() == {"avatar_url": None}


async def test_receipts_typing_read_markers(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = auth(alice["access_token"]), auth(bob["access_token"])
    room = await create_room(h, alice["access_token"])
    event = await send(h, alice["access_token"], room, "read me")
    r = await h.client.post(f"{V3}/rooms/{room}/receipt/m.read/{event}", headers=ta)
    assert r.json() == {}
    r = await h.client.post(f"{V3}/rooms/{room}/receipt/m.bogus/{event}", headers=ta)
    assert r.json()["errcode"] == "M_INVALID_PARAM"
    r = await h.client.post(f"{V3}/rooms/{room}/receipt/m.read/{event}", headers=tb)
    assert r.status_code == 403
    r = await h.client.post(
        f"{V3}/rooms/{room}/read_markers", headers=ta, json={"m.fully_read": event, "m.read": event}
    )
    assert r.json() == {}
    r = await h.client.get(
        f"{V3}/user/{alice['user_id']}/rooms/{room}/account_data/m.fully_read", headers=ta
    )
    assert r.json() == {"event_id": event}
    r = await h.client.put(
        f"{V3}/rooms/{room}/typing/{alice['user_id']}",
        headers=ta,
        json={"typing": True, "timeout": 30000},
    )
    assert r.json() == {}
    r = await h.client.put(
        f"{V3}/rooms/{room}/typing/{bob['user_id']}", headers=ta, json={"typing": True}
    )
    assert r.status_code == 403
    r = await h.client.put(
        f"{V3}/rooms/{room}/typing/{alice['user_id']}", headers=ta, json={"typing": "yes"}
    )
    assert r.json()["errcode"] == "M_BAD_JSON"

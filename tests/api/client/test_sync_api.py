"""In-process tests: /sync (initial, incremental, long-poll, filters, tokens, sections)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.client.harness import V3, Harness, auth, make_harness
from tests.api.client.rooms_helpers import bodies, create_room, send, settle, sync


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path):
        yield harness


@pytest.fixture
async def users(h: Harness) -> tuple[dict[str, Any], dict[str, Any]]:
    return await h.register("alice"), await h.register("bob")


async def shared_room(h: Harness, alice: dict[str, Any], bob: dict[str, Any]) -> str:
    room = await create_room(h, alice["access_token"], preset="public_chat")
    r = await h.client.post(f"{V3}/join/{room}", headers=auth(bob["access_token"]))
    assert r.status_code == 200
    await settle(h)
    return room


async def test_initial_sync_shape(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await shared_room(h, alice, bob)
    for i in range(15):
        await send(h, alice["access_token"], room, f"m{i}")
    await settle(h)
    body = await sync(h, bob["access_token"])
    joined = body["rooms"]["join"][room]
    timeline = joined["timeline"]
    assert len(timeline["events"]) == 10 and timeline["limited"] is True
    assert bodies(joined) == [f"m{i}" for i in range(5, 15)]
    state_keys = {(e["type"], e["state_key"]) for e in joined["state"]["events"]}
    assert ("m.room.create", "") in state_keys and ("m.room.member", bob["user_id"]) in state_keys
    timeline_ids = {e["event_id"] for e in timeline["events"]}
    assert not timeline_ids & {e["event_id"] for e in joined["state"]["events"]}
    assert all("room_id" not in e for e in timeline["events"])
    # prev_batch continues exactly where the timeline starts.
    r = await h.client.get(
        f"{V3}/rooms/{room}/messages",
        headers=auth(bob["access_token"]),
        params={"from": timeline["prev_batch"], "dir": "b", "limit": "5"},
    )
    older = [e["content"].get("body") for e in r.json()["chunk"]]
    assert older == ["m4", "m3", "m2", "m1", "m0"]
    assert body["next_batch"].startswith("s")
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert any(e["type"] == "m.push_rules" for e in body["account_data"]["events"])


async def test_incremental_sync_and_transaction_id(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await shared_room(h, alice, bob)
    first = await sync(h, alice["access_token"])
    await send(h, alice["access_token"], room, "hello", txn="tx-1")
    await settle(h)
    mine = await sync(h, alice["access_token"], first["next_batch"])
    events = mine["rooms"]["join"][room]["timeline"]["events"]
    assert [e["content"]["body"] for e in events] == ["hello"]
    assert events[0]["unsigned"]["transaction_id"] == "tx-1"
    assert mine["rooms"]["join"][room]["timeline"]["limited"] is False
    assert mine["rooms"]["join"][room]["state"]["events"] == []
    theirs = await sync(h, bob["access_token"])
    for e in theirs["rooms"]["join"][room]["timeline"]["events"]:
        assert "transaction_id" not in e["unsigned"]
    # Nothing new: an empty answer with the same events position.
    again = await sync(h, alice["access_token"], mine["next_batch"])
    assert again["rooms"]["join"] == {}


async def test_long_poll_wakes_on_a_new_event(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await shared_room(h, alice, bob)
    since = (await sync(h, bob["access_token"]))["next_batch"]
    started = time.monotonic()
    poll = asyncio.create_task(sync(h, bob["access_token"], since, timeout="20000"))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await send(h, alice["access_token"], room, "wake up")
    body = await asyncio.wait_for(poll, 10)
    assert time.monotonic() - started < 5
    assert bodies(body["rooms"]["join"][room]) == ["wake up"]


async def test_long_poll_times_out_empty_and_initial_never_waits(h: Harness, users: Any) -> None:
    alice, _ = users
    started = time.monotonic()
    first = await sync(h, alice["access_token"], timeout="5000")  # initial: no wait
    assert time.monotonic() - started < 2
    started = time.monotonic()
    body = await sync(h, alice["access_token"], first["next_batch"], timeout="300")
    assert 0.25 <= time.monotonic() - started < 3
    assert body["rooms"]["join"] == {} and body["next_batch"]
    # A missing timeout means 0: no wait.
    started = time.monotonic()
    await sync(h, alice["access_token"], first["next_batch"])
    assert time.monotonic() - started < 1


async def test_timeout_is_capped(h: Harness, users: Any) -> None:
    alice, _ = users
    first = await sync(h, alice["access_token"])
    task = asyncio.create_task(
        sync(h, alice["access_token"], first["next_batch"], timeout="999999999")
    )
    await asyncio.sleep(0.1)
    assert not task.done()
    # A wake-up with nothing new keeps it waiting; new account data ends it.
    h.notifier.notify_user(alice["user_id"])
    await asyncio.sleep(0.1)
    assert not task.done()
    await h.client.put(
        f"{V3}/user/{alice['user_id']}/account_data/x.y",
        headers=auth(alice["access_token"]),
        json={"z": 1},
    )
    body = await asyncio.wait_for(task, 5)
    assert body["account_data"]["events"] == [{"type": "x.y", "content": {"z": 1}}]
    from cis.handlers.sync import MAX_TIMEOUT_MS

    assert MAX_TIMEOUT_MS == 60_000


async def test_bad_tokens_and_filters(h: Harness, users: Any) -> None:
    alice, _ = users
    t = auth(alice["access_token"])
    for params, errcode in (
        ({"since": "garbage"}, "M_INVALID_PARAM"),
        ({"filter": "{not json"}, "M_INVALID_PARAM"),
        ({"filter": '{"room": {"timeline": {"limit": "x"}}}'}, "M_BAD_JSON"),
        ({"filter": "12345"}, "M_INVALID_PARAM"),
        ({"timeout": "soon"}, "M_INVALID_PARAM"),
        ({"full_state": "yes"}, "M_INVALID_PARAM"),
    ):
        r = await h.client.get(f"{V3}/sync", headers=t, params=params)
        assert r.status_code == 400 and r.json()["errcode"] == errcode, params


async def test_future_token_is_clamped(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await shared_room(h, alice, bob)
    future = "s999999_999_999_99999999999999_999_999"
    started = time.monotonic()
    body = await sync(h, alice["access_token"], future, timeout="200")
    assert time.monotonic() - started < 3
    # The answer's positions are the current ones, so the client carries on from there.
    await send(h, alice["access_token"], room, "after restore")
    await settle(h)
    nxt = await sync(h, alice["access_token"], body["next_batch"])
    assert bodies(nxt["rooms"]["join"][room]) == ["after restore"]


async def test_inline_and_stored_filters(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await shared_room(h, alice, bob)
    for i in range(5):
        await send(h, alice["access_token"], room, f"m{i}")
    await settle(h)
    inline = json.dumps({"room": {"timeline": {"limit": 2}}}, separators=(",", ":"))
    body = await sync(h, bob["access_token"], filter=inline)
    assert bodies(body["rooms"]["join"][room]) == ["m3", "m4"]
    r = await h.client.post(
        f"{V3}/user/{bob['user_id']}/filter",
        headers=auth(bob["access_token"]),
        json={"room": {"timeline": {"types": ["m.room.member"]}}, "account_data": {"types": []}},
    )
    stored = await sync(h, bob["access_token"], filter=r.json()["filter_id"])
    events = stored["rooms"]["join"][room]["timeline"]["events"]
    assert events and all(e["type"] == "m.room.member" for e in events)
    assert stored["account_data"]["events"] == []
    excluded = json.dumps({"room": {"not_rooms": [room]}})
    assert (await sync(h, bob["access_token"], filter=excluded))["rooms"]["join"] == {}


async def test_limited_incremental_sync_has_the_gap_state(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await shared_room(h, alice, bob)
    since = (await sync(h, bob["access_token"]))["next_batch"]
    await h.client.put(
        f"{V3}/rooms/{room}/state/m.room.topic",
        headers=auth(alice["access_token"]),
        json={"topic": "in the gap"},
    )
    for i in range(12):
        await send(h, alice["access_token"], room, f"m{i}")
    await settle(h)
    body = await sync(h, bob["access_token"], since)
    section = body["rooms"]["join"][room]
    assert section["timeline"]["limited"] is True
    assert bodies(section) == [f"m{i}" for i in range(2, 12)]
    state = {(e["type"], e["state_key"]): e["content"] for e in section["state"]["events"]}
    assert state == {("m.room.topic", ""): {"topic": "in the gap"}}


async def test_full_state(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await shared_room(h, alice, bob)
    first = await sync(h, bob["access_token"])
    body = await sync(h, bob["access_token"], first["next_batch"], full_state="true")
    types = {e["type"] for e in body["rooms"]["join"][room]["state"]["events"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.member"} <= types


async def test_invite_then_join_then_leave_sections(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = auth(alice["access_token"]), auth(bob["access_token"])
    room = await create_room(h, alice["access_token"], preset="private_chat", name="Secret")
    await h.client.put(
        f"{V3}/rooms/{room}/state/m.room.encryption",
        headers=ta,
        json={"algorithm": "m.megolm.v1.aes-sha2"},
    )
    since = (await sync(h, bob["access_token"]))["next_batch"]
    await h.client.post(f"{V3}/rooms/{room}/invite", headers=ta, json={"user_id": bob["user_id"]})
    body = await sync(h, bob["access_token"], since, timeout="5000")
    invite = body["rooms"]["invite"][room]["invite_state"]["events"]
    types = [e["type"] for e in invite]
    assert {"m.room.create", "m.room.join_rules", "m.room.name", "m.room.encryption"} <= set(types)
    assert invite[-1]["type"] == "m.room.member" and invite[-1]["state_key"] == bob["user_id"]
    await h.client.post(f"{V3}/rooms/{room}/join", headers=tb)
    await settle(h)
    body2 = await sync(h, bob["access_token"], body["next_batch"])
    section = body2["rooms"]["join"][room]
    assert any(
        e["type"] == "m.room.name"
        for e in section["timeline"]["events"] + section["state"]["events"]
    )
    assert room not in body2["rooms"]["invite"]
    # Kicked: the room shows under leave, with the kick and nothing after it.
    await h.client.post(f"{V3}/rooms/{room}/kick", headers=ta, json={"user_id": bob["user_id"]})
    await send(h, alice["access_token"], room, "after the kick")
    await settle(h)
    body3 = await sync(h, bob["access_token"], body2["next_batch"])
    assert room not in body3["rooms"]["join"]
    left = body3["rooms"]["leave"][room]
    assert "after the kick" not in bodies(left)
    last = left["timeline"]["events"][-1]
    assert last["type"] == "m.room.member" and last["content"]["membership"] == "leave"
    assert "events" in left["state"]
    body4 = await sync(h, bob["access_token"], body3["next_batch"])
    assert room not in body4["rooms"]["leave"]


async def test_rejected_invite_and_ban_show_as_leave(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = auth(alice["access_token"]), auth(bob["access_token"])
    room = await create_room(h, alice["access_token"], preset="private_chat")
    since = (await sync(h, bob["access_token"]))["next_batch"]
    await h.client.post(f"{V3}/rooms/{room}/invite", headers=ta, json={"user_id": bob["user_id"]})
    await h.client.post(f"{V3}/rooms/{room}/leave", headers=tb)
    await settle(h)
    body = await sync(h, bob["access_token"], since)
    assert room in body["rooms"]["leave"] and room not in body["rooms"]["invite"]
    room2 = await shared_room(h, alice, bob)
    since = (await sync(h, bob["access_token"]))["next_batch"]
    await h.client.post(f"{V3}/rooms/{room2}/ban", headers=ta, json={"user_id": bob["user_id"]})
    await settle(h)
    body = await sync(h, bob["access_token"], since)
    events = body["rooms"]["leave"][room2]["timeline"]["events"]
    assert events[-1]["content"]["membership"] == "ban"


async def test_forgotten_rooms_stay_out_of_initial_sync(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await shared_room(h, alice, bob)
    await h.client.post(f"{V3}/rooms/{room}/leave", headers=auth(bob["access_token"]))
    await settle(h)
    leave_filter = json.dumps({"room": {"include_leave": True}})
    body = await sync(h, bob["access_token"], filter=leave_filter)
    assert room in body["rooms"]["leave"]
    await h.client.post(f"{V3}/rooms/{room}/forget", headers=auth(bob["access_token"]))
    body = await sync(h, bob["access_token"], filter=leave_filter)
    assert room not in body["rooms"]["leave"]


async def test_ephemeral_and_account_data(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await shared_room(h, alice, bob)
    event = await send(h, alice["access_token"], room, "x")
    await settle(h)
    since = (await sync(h, bob["access_token"]))["next_batch"]
    await h.client.put(
        f"{V3}/rooms/{room}/typing/{alice['user_id']}",
        headers=auth(alice["access_token"]),
        json={"typing": True, "timeout": 5000},
    )
    await h.client.post(
        f"{V3}/rooms/{room}/receipt/m.read/{event}", headers=auth(alice["access_token"])
    )
    await h.client.post(
        f"{V3}/rooms/{room}/receipt/m.read.private/{event}", headers=auth(alice["access_token"])
    )
    await h.client.put(
        f"{V3}/user/{bob['user_id']}/account_data/org.example",
        headers=auth(bob["access_token"]),
        json={"a": 1},
    )
    await h.client.put(
        f"{V3}/user/{bob['user_id']}/rooms/{room}/account_data/m.tag",
        headers=auth(bob["access_token"]),
        json={"tags": {}},
    )
    body = await sync(h, bob["access_token"], since)
    section = body["rooms"]["join"][room]
    by_type = {e["type"]: e for e in section["ephemeral"]["events"]}
    assert by_type["m.typing"]["content"] == {"user_ids": [alice["user_id"]]}
    receipt = by_type["m.receipt"]["content"][event]
    assert alice["user_id"] in receipt["m.read"]
    assert "m.read.private" not in receipt  # someone else's private receipt
    assert section["account_data"]["events"] == [{"type": "m.tag", "content": {"tags": {}}}]
    assert {"type": "org.example", "content": {"a": 1}} in body["account_data"]["events"]
    again = await sync(h, bob["access_token"], body["next_batch"])
    assert again["rooms"]["join"] == {} and again["account_data"]["events"] == []


async def test_to_device_and_device_lists(h: Harness, users: Any) -> None:
    alice, bob = users
    await shared_room(h, alice, bob)
    since = (await sync(h, bob["access_token"]))["next_batch"]
    await h.client.put(
        f"{V3}/sendToDevice/m.test/t1",
        headers=auth(alice["access_token"]),
        json={"messages": {bob["user_id"]: {bob["device_id"]: {"n": 1}}}},
    )
    device_keys = {
        "user_id": alice["user_id"],
        "device_id": alice["device_id"],
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {},
        "signatures": {},
    }
    await h.client.post(
        f"{V3}/keys/upload",
        headers=auth(alice["access_token"]),
        json={"device_keys": device_keys, "one_time_keys": {"signed_curve25519:A": {"key": "k"}}},
    )
    body = await sync(h, bob["access_token"], since, timeout="2000")
    assert body["to_device"]["events"] == [
        {"sender": alice["user_id"], "type": "m.test", "content": {"n": 1}}
    ]
    assert alice["user_id"] in body["device_lists"]["changed"]
    # Syncing from the token acknowledges (and deletes) the delivered messages.
    again = await sync(h, bob["access_token"], body["next_batch"])
    assert again["to_device"]["events"] == []
    # A client that retries with the old token still gets them: they were not acknowledged.
    mine = await sync(h, alice["access_token"])
    assert mine["device_one_time_keys_count"]["signed_curve25519"] == 1


async def test_concurrent_long_polls_per_user_are_bounded(h: Harness, users: Any) -> None:
    alice, _ = users
    since = (await sync(h, alice["access_token"]))["next_batch"]
    polls = [
        asyncio.create_task(sync(h, alice["access_token"], since, timeout="20000"))
        for _ in range(12)
    ]
    await asyncio.sleep(0.3)
    done = [p for p in polls if p.done()]
    assert len(done) >= 4  # the oldest were answered early (empty) to make room
    assert h.notifier.waiting(alice["user_id"]) <= 8
    await h.client.put(
        f"{V3}/user/{alice['user_id']}/account_data/x.y",
        headers=auth(alice["access_token"]),
        json={"z": 1},
    )
    await asyncio.wait_for(asyncio.gather(*polls), 10)


async def test_event_fields_and_state_filter(h: Harness, users: Any) -> None:
    alice, bob = users
    room = await shared_room(h, alice, bob)
    await send(h, alice["access_token"], room, "projected")
    await settle(h)
    flt = json.dumps(
        {
            "event_fields": ["type", "content.body"],
            "room": {
                "timeline": {"limit": 1},
                "state": {"types": ["m.room.member"], "senders": [bob["user_id"]]},
            },
        }
    )
    body = await sync(h, bob["access_token"], filter=flt)
    section = body["rooms"]["join"][room]
    assert {"type": "m.room.message", "content": {"body": "projected"}} in section["timeline"][
        "events"
    ]
    assert all(set(e) <= {"type", "content"} for e in section["timeline"]["events"])
    # Only bob's own member event passes the state filter (alice's is sent by alice).
    assert section["state"]["events"] == [{"type": "m.room.member"}]

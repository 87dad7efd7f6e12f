"""In-process tests: /messages, /context, /event, and history-visibility gating."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.client.harness import V3, Harness, auth, make_harness
from tests.api.client.rooms_helpers import create_room, send, settle


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path):
        yield harness


@pytest.fixture
async def users(h: Harness) -> tuple[dict[str, Any], dict[str, Any]]:
    return await h.register("alice"), await h.register("bob")


async def messages(h: Harness, token: str, room: str, **params: str) -> dict[str, Any]:
    r = await h.client.get(f"{V3}/rooms/{room}/messages", headers=auth(token), params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def texts(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"]


async def test_paginate_backwards_and_forwards(h: Harness, users: Any) -> None:
    alice, _ = users
    ta = alice["access_token"]
    room = await create_room(h, ta)
    for i in range(7):
        await send(h, ta, room, f"m{i}")
    await settle(h)
    page1 = await messages(h, ta, room, dir="b", limit="3")
    assert texts(page1["chunk"]) == ["m6", "m5", "m4"] and "end" in page1
    page2 = await messages(h, ta, room, dir="b", limit="3", **{"from": page1["end"]})
    assert texts(page2["chunk"]) == ["m3", "m2", "m1"]
    assert page2["start"] == page1["end"]
    rest = await messages(h, ta, room, dir="b", limit="50", **{"from": page2["end"]})
    assert "end" not in rest  # nothing more
    assert rest["chunk"][-1]["type"] == "m.room.create"
    forward = await messages(h, ta, room, dir="f", limit="100")
    assert texts(forward["chunk"]) == [f"m{i}" for i in range(7)]
    assert forward["chunk"][0]["type"] == "m.room.create" and "end" not in forward
    # "to" bounds a page; from a later token forwards, nothing.
    bounded = await messages(h, ta, room, dir="b", limit="50", to=page1["end"])
    assert texts(bounded["chunk"]) == ["m6", "m5", "m4"]
    empty = await messages(h, ta, room, dir="f", **{"from": page1["start"]})
    assert empty["chunk"] == [] and "end" not in empty and empty["start"]


async def test_messages_filter_and_errors(h: Harness, users: Any) -> None:
    alice, bob = users
    ta = alice["access_token"]
    room = await create_room(h, ta)
    await send(h, ta, room, "text")
    await settle(h)
    only_members = json.dumps({"types": ["m.room.member"], "lazy_load_members": True})
    body = await messages(h, ta, room, dir="b", filter=only_members)
    assert body["chunk"] and all(e["type"] == "m.room.member" for e in body["chunk"])
    assert body["state"][0]["state_key"] == alice["user_id"]
    for params, errcode in (
        ({"dir": "x"}, "M_INVALID_PARAM"),
        ({"dir": "b", "from": "bogus"}, "M_INVALID_PARAM"),
        ({"dir": "b", "limit": "-2"}, "M_INVALID_PARAM"),
        ({"dir": "b", "filter": "{oops"}, "M_INVALID_PARAM"),
        ({"dir": "b", "filter": '{"limit": 0}'}, "M_BAD_JSON"),
    ):
        r = await h.client.get(f"{V3}/rooms/{room}/messages", headers=auth(ta), params=params)
        assert r.status_code == 400 and r.json()["errcode"] == errcode, params
    r = await h.client.get(
        f"{V3}/rooms/{room}/messages", headers=auth(bob["access_token"]), params={"dir": "b"}
    )
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    big = await messages(h, ta, room, dir="b", limit="99999")
    assert big["chunk"]


async def test_joined_visibility_hides_history_before_the_join(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = alice["access_token"], bob["access_token"]
    room = await create_room(
        h,
        ta,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    before = await send(h, ta, room, "before bob")
    await h.client.post(f"{V3}/join/{room}", headers=auth(tb))
    after = await send(h, ta, room, "after bob")
    await settle(h)
    seen = await messages(h, tb, room, dir="b", limit="50")
    assert texts(seen["chunk"]) == ["after bob"]
    r = await h.client.get(f"{V3}/rooms/{room}/event/{before}", headers=auth(tb))
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await h.client.get(f"{V3}/rooms/{room}/event/{after}", headers=auth(tb))
    assert r.json()["content"]["body"] == "after bob"
    # Alice sees both.
    assert texts((await messages(h, ta, room, dir="b"))["chunk"]) == ["after bob", "before bob"]


async def test_shared_visibility_shows_history_to_a_later_joiner(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = alice["access_token"], bob["access_token"]
    room = await create_room(h, ta, preset="public_chat")  # shared by default
    await send(h, ta, room, "early")
    await h.client.post(f"{V3}/join/{room}", headers=auth(tb))
    await settle(h)
    assert "early" in texts((await messages(h, tb, room, dir="b"))["chunk"])


async def test_after_leaving_nothing_new_is_visible(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = alice["access_token"], bob["access_token"]
    room = await create_room(h, ta, preset="public_chat")
    await h.client.post(f"{V3}/join/{room}", headers=auth(tb))
    await send(h, ta, room, "while bob was here")
    await h.client.post(f"{V3}/rooms/{room}/leave", headers=auth(tb))
    secret = await send(h, ta, room, "after bob left")
    await h.client.put(
        f"{V3}/rooms/{room}/state/m.room.topic", headers=auth(ta), json={"topic": "new"}
    )
    await settle(h)
    seen = texts((await messages(h, tb, room, dir="b", limit="50"))["chunk"])
    assert "while bob was here" in seen and "after bob left" not in seen
    r = await h.client.get(f"{V3}/rooms/{room}/event/{secret}", headers=auth(tb))
    assert r.status_code == 404
    # State as it was when bob left: no new topic.
    r = await h.client.get(f"{V3}/rooms/{room}/state/m.room.topic", headers=auth(tb))
    assert r.status_code == 404
    state = (await h.client.get(f"{V3}/rooms/{room}/state", headers=auth(tb))).json()
    assert not any(e["type"] == "m.room.topic" for e in state)
    members = (await h.client.get(f"{V3}/rooms/{room}/members", headers=auth(tb))).json()
    assert {m["state_key"] for m in members["chunk"]} == {alice["user_id"], bob["user_id"]}


async def test_strangers_are_refused(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = alice["access_token"], bob["access_token"]
    room = await create_room(h, ta)
    event = await send(h, ta, room, "private")
    await settle(h)
    for path in ("state", "members", "joined_members", f"context/{event}"):
        r = await h.client.get(f"{V3}/rooms/{room}/{path}", headers=auth(tb))
        assert r.status_code in (403, 404), path
        assert r.json()["errcode"] in ("M_FORBIDDEN", "M_NOT_FOUND")
    r = await h.client.get(f"{V3}/rooms/{room}/event/{event}", headers=auth(tb))
    assert r.status_code == 404


async def test_world_readable_room(h: Harness, users: Any) -> None:
    alice, bob = users
    ta, tb = alice["access_token"], bob["access_token"]
    room = await create_room(
        h,
        ta,
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "content": {"history_visibility": "world_readable"},
            }
        ],
    )
    await send(h, ta, room, "public record")
    await settle(h)
    assert texts((await messages(h, tb, room, dir="b"))["chunk"]) == ["public record"]
    r = await h.client.get(f"{V3}/rooms/{room}/state/m.room.create", headers=auth(tb))
    assert r.status_code == 200


async def test_context(h: Harness, users: Any) -> None:
    alice, _ = users
    ta = alice["access_token"]
    room = await create_room(h, ta)
    ids = [await send(h, ta, room, f"m{i}") for i in range(6)]
    await settle(h)
    r = await h.client.get(
        f"{V3}/rooms/{room}/context/{ids[3]}", headers=auth(ta), params={"limit": "4"}
    )
    body = r.json()
    assert body["event"]["event_id"] == ids[3]
    assert texts(body["events_before"]) == ["m2", "m1"]
    assert texts(body["events_after"]) == ["m4", "m5"]
    assert body["start"] and body["end"] and body["state"]
    more = await messages(h, ta, room, dir="f", **{"from": body["end"]})
    assert more["chunk"] == []
    earlier = await messages(h, ta, room, dir="b", limit="1", **{"from": body["start"]})
    assert texts(earlier["chunk"]) == ["m0"]
    r = await h.client.get(f"{V3}/rooms/{room}/context/$nope", headers=auth(ta))
    assert r.status_code == 404

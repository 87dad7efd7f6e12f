"""Ordinary Matrix clients against a real ``cis-node run``: matrix-nio's ``AsyncClient``
(no encryption store) over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nio import (
    AsyncClient,
    DownloadResponse,
    ErrorResponse,
    InviteMemberEvent,
    JoinResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPutStateResponse,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)
from nio.event_builders import ToDeviceMessage

from tests.e2e.conftest import Processes, RunningNode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SERVER = "alpha.cis.local"


@pytest.fixture
def node(processes: Processes, node_home: Path) -> Iterator[RunningNode]:
    running = processes.run_node(node_home, "--open-registration", "--log-level", "warning")
    yield running
    assert running.stop() == 0


async def registered(url: str, name: str) -> AsyncClient:
    client = AsyncClient(url, name)
    response = await client.register(name, f"{name}-password")
    assert isinstance(response, RegisterResponse), response
    assert client.user_id == f"@{name}:{SERVER}"
    return client


def texts(response: SyncResponse, room_id: str) -> list[str]:
    room = response.rooms.join.get(room_id)
    if room is None:
        return []
    return [e.body for e in room.timeline.events if isinstance(e, RoomMessageText)]


async def sync_until(
    client: AsyncClient, since: str, predicate: Any, *, rounds: int = 20
) -> tuple[SyncResponse, str]:
    """Long-poll until ``predicate(response)``; return it and the next token."""
    for _ in range(rounds):
        response = await client.sync(timeout=5000, since=since)
        assert isinstance(response, SyncResponse), response
        since = response.next_batch
        if predicate(response):
            return response, since
    raise AssertionError("the expected sync response never came")


async def test_two_users_chat_through_a_real_node(node: RunningNode) -> None:
    alice = await registered(node.url, "alice")
    bob = await registered(node.url, "bob")
    try:
        first = await bob.sync(timeout=0)
        assert isinstance(first, SyncResponse)
        created = await alice.room_create(name="Chat", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room = created.room_id

        # The invite shows in bob's next sync.
        invited = await bob.sync(timeout=5000, since=first.next_batch)
        assert isinstance(invited, SyncResponse)
        assert room in invited.rooms.invite
        invite_events = invited.rooms.invite[room].invite_state
        assert any(isinstance(e, InviteMemberEvent) for e in invite_events)

        joined = await bob.join(room)
        assert isinstance(joined, JoinResponse) and joined.room_id == room
        _, since = await sync_until(bob, invited.next_batch, lambda r: room in r.rooms.join)

        # A long-poll that is already waiting receives the message.
        waiting = asyncio.create_task(bob.sync(timeout=20000, since=since))
        await asyncio.sleep(0.3)
        sent = await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "hi"})
        assert isinstance(sent, RoomSendResponse), sent
        delivered = await asyncio.wait_for(waiting, 15)
        assert isinstance(delivered, SyncResponse)
        if texts(delivered, room) != ["hi"]:
            delivered, _ = await sync_until(
                bob, delivered.next_batch, lambda r: texts(r, room) == ["hi"]
            )
        since = delivered.next_batch

        for i in range(5):
            await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"m{i}"})
        history = await bob.room_messages(room, start="", limit=4)
        assert isinstance(history, RoomMessagesResponse), history
        assert [e.body for e in history.chunk] == ["m4", "m3", "m2", "m1"]
        older = await bob.room_messages(room, start=history.end, limit=10)
        assert isinstance(older, RoomMessagesResponse)
        assert "m0" in [getattr(e, "body", None) for e in older.chunk]

        # State: name, topic, power levels.
        for event_type, content in (
            ("m.room.name", {"name": "Renamed"}),
            ("m.room.topic", {"topic": "Matters"}),
        ):
            put = await alice.room_put_state(room, event_type, content)
            assert isinstance(put, RoomPutStateResponse), put
            got = await bob.room_get_state_event(room, event_type)
            assert isinstance(got, RoomGetStateEventResponse) and got.content == content
        power = await alice.room_get_state_event(room, "m.room.power_levels")
        assert isinstance(power, RoomGetStateEventResponse)
        levels = dict(power.content)
        levels["users"] = {**levels["users"], bob.user_id: 50}
        assert isinstance(
            await alice.room_put_state(room, "m.room.power_levels", levels), RoomPutStateResponse
        )
        not_allowed = await bob.room_put_state(room, "m.room.power_levels", {"users": {}})
        assert isinstance(not_allowed, ErrorResponse)

        # Kick, invite again, ban: a banned user's send is refused.
        assert not isinstance(await alice.room_kick(room, bob.user_id, "bye"), ErrorResponse)
        assert not isinstance(await alice.room_invite(room, bob.user_id), ErrorResponse)
        assert isinstance(await bob.join(room), JoinResponse)
        assert not isinstance(await alice.room_ban(room, bob.user_id, "gone"), ErrorResponse)
        refused = await bob.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "x"})
        assert isinstance(refused, ErrorResponse) and refused.status_code == "M_FORBIDDEN"

        # Media.
        data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
        uploaded, _keys = await alice.upload(
            io.BytesIO(data), content_type="image/png", filename="pic.png", filesize=len(data)
        )
        assert isinstance(uploaded, UploadResponse), uploaded
        downloaded = await bob.download(mxc=uploaded.content_uri)
        assert isinstance(downloaded, DownloadResponse), downloaded
        assert downloaded.body == data and downloaded.content_type == "image/png"
    finally:
        await alice.close()
        await bob.close()


async def test_sync_forever_runs_without_errors(node: RunningNode) -> None:
    alice = await registered(node.url, "carol")
    watcher = await registered(node.url, "dave")
    errors: list[Any] = []
    seen: list[str] = []

    async def on_sync(response: Any) -> None:
        if isinstance(response, ErrorResponse):
            errors.append(response)

    async def on_message(_room: Any, event: RoomMessageText) -> None:
        seen.append(event.body)

    watcher.add_response_callback(on_sync)
    watcher.add_event_callback(on_message, RoomMessageText)
    try:
        created = await alice.room_create(name="Forever", invite=[watcher.user_id])
        assert isinstance(created, RoomCreateResponse)
        _invited, _ = await sync_until(watcher, "", lambda r: created.room_id in r.rooms.invite)
        assert isinstance(await watcher.join(created.room_id), JoinResponse)

        async def chatter() -> None:
            for i in range(10):
                await asyncio.sleep(0.8)
                await alice.room_send(
                    created.room_id, "m.room.message", {"msgtype": "m.text", "body": f"tick {i}"}
                )

        talk = asyncio.create_task(chatter())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(watcher.sync_forever(timeout=3000, full_state=True), 10)
        await talk
        assert errors == []
        assert [f"tick {i}" for i in range(8)] == [t for t in seen if t.startswith("tick")][:8]
    finally:
        await alice.close()
        await watcher.close()


async def test_keys_and_to_device_between_two_devices(node: RunningNode) -> None:
    alice = await registered(node.url, "erin")
    bob = await registered(node.url, "frank")
    try:
        async with httpx.AsyncClient(base_url=node.url, timeout=30) as http:

            def headers(client: AsyncClient) -> dict[str, str]:
                return {"Authorization": f"Bearer {client.access_token}"}

            keys = {
                "user_id": bob.user_id,
                "device_id": bob.device_id,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": {
                    f"curve25519:{bob.device_id}": "C" * 43,
                    f"ed25519:{bob.device_id}": "E" * 43,
                },
                "signatures": {bob.user_id: {f"ed25519:{bob.device_id}": "S" * 86}},
            }
            r = await http.post(
                "/_matrix/client/v3/keys/upload",
                headers=headers(bob),
                json={
                    "device_keys": keys,
                    "one_time_keys": {"signed_curve25519:AAAA": {"key": "K1", "signatures": {}}},
                },
            )
            assert r.json() == {"one_time_key_counts": {"signed_curve25519": 1}}
            r = await http.post(
                "/_matrix/client/v3/keys/query",
                headers=headers(alice),
                json={"device_keys": {bob.user_id: []}},
            )
            assert r.json()["device_keys"][bob.user_id][bob.device_id]["keys"] == keys["keys"]
            r = await http.post(
                "/_matrix/client/v3/keys/claim",
                headers=headers(alice),
                json={"one_time_keys": {bob.user_id: {bob.device_id: "signed_curve25519"}}},
            )
            claimed = r.json()["one_time_keys"][bob.user_id][bob.device_id]
            assert claimed == {"signed_curve25519:AAAA": {"key": "K1", "signatures": {}}}

        first = await bob.sync(timeout=0)
        assert isinstance(first, SyncResponse)
        sent = await alice.to_device(
            ToDeviceMessage("org.example.ping", bob.user_id, bob.device_id, {"n": 1}), "tx1"
        )
        assert not isinstance(sent, ErrorResponse), sent
        got, _ = await sync_until(bob, first.next_batch, lambda r: bool(r.to_device_events))
        event = got.to_device_events[0]
        assert event.source == {
            "sender": alice.user_id,
            "type": "org.example.ping",
            "content": {"n": 1},
        }
    finally:
        await alice.close()
        await bob.close()

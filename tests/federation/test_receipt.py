"""Receipt of PDUs from another server, in the spec's order (docs/federation.md, "Receipt"),
bounded waiting for unknown origin keys, outbound overflow falling back to catch-up, and
history visibility of what is served to another server. Real nodes, real tunnels; the
forged events are signed with the origin's real key (or a wrong one) by the node's own
event builder."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from cis.federation import wire_pb2 as pb
from cis.handlers.federation_ingest import POOL_BATCH
from cis.identity import NodeIdentity
from cis.ids import EventId, RoomId
from cis.matrix import build_event, prepare_pdu
from cis.matrix.canonical_json import encode_canonical_json
from cis.matrix.dag import Extremity
from cis.matrix.events import StateKey
from cis.storage.events import EventStatus
from cis.storage.rooms.store import RoomStore
from tests.federation.cluster import LocalNode, User, cluster, eventually, mesh

pytestmark = pytest.mark.timeout(120)

QUIET = {"CIS_CATCHUP_INTERVAL": "600"}
"""No periodic catch-up: what arrives, arrives by the path under test."""


def forge(
    room_version: str,
    room_id: str,
    *,
    server: str,
    key_id: str,
    key: nacl.signing.SigningKey,
    sender: str,
    kind: str,
    content: Mapping[str, Any],
    extremities: Iterable[Extremity],
    state: Mapping[StateKey, str],
    state_key: str | None = None,
    ts: int | None = None,
) -> dict[str, Any]:
    """A PDU as ``server``'s builder makes it, laid on ``extremities`` over ``state``."""
    pdu = prepare_pdu(
        room_version, room_id=room_id, sender=sender, event_type=kind, content=content,
        origin_server_ts=ts or int(time.time() * 1000), forward_extremities=extremities,
        current_state=state, state_key=state_key,
    )  # fmt: skip
    event = build_event(room_version, pdu, server, key_id, key)
    return {**event.to_pdu(), "event_id": event.event_id}


async def view(node: LocalNode, room: str) -> tuple[list[Any], dict[StateKey, str]]:
    snapshot = await node.service.cache.get(RoomId(room))
    assert snapshot is not None
    return (
        list(snapshot.extremity_list()),
        {k: e.event_id for k, e in snapshot.state.items()},
    )


async def two_nodes_one_room(
    c: Any, env: dict[str, str] | None = None
) -> tuple[LocalNode, LocalNode, User, User, str]:
    alpha, beta = await mesh(c, "alpha", "beta", env=env)
    alice = await alpha.register("alice")
    bob = await beta.register("bob")
    room = await alice.create_room(preset="public_chat")
    assert (await bob.join(room)).status_code == 200
    return alpha, beta, alice, bob, room


async def statuses(node: LocalNode, room: str, ids: list[str]) -> dict[str, EventStatus]:
    store = RoomStore(node.service.cache.manager, RoomId(room))
    found = await store.get_events([EventId(e) for e in ids])
    return {e: s.status for e, s in found.items()}


async def test_receipt_follows_the_spec_order(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha, beta, alice, bob, room = await two_nodes_one_room(c, QUIET)
        charlie = await alpha.register("charlie")
        assert (await charlie.join(room)).status_code == 200
        await alice.put_state(room, "m.room.topic", {"topic": "kept"})

        async def beta_has_charlie_and_topic() -> bool:
            return (await bob.state(room, "m.room.topic") or {}).get("topic") == "kept" and (
                await bob.state(room, "m.room.member", charlie.user_id) is not None
            )

        await eventually(beta_has_charlie_and_topic, 20, "beta to see charlie and the topic")
        before_ban = await view(alpha, room)
        banned = await alice.call(
            "POST", f"/_matrix/client/v3/rooms/{room}/ban", {"user_id": charlie.user_id}
        )
        assert banned.status_code == 200, banned.text

        async def beta_has_ban() -> bool:
            member = await bob.state(room, "m.room.member", charlie.user_id)
            return member is not None and member.get("membership") == "ban"

        await eventually(beta_has_ban, 20, "beta to see the ban")
        now = await view(alpha, room)
        identity = alpha.node.storage.identity
        version = (await alpha.service.cache.get(RoomId(room))).room_version  # type: ignore[union-attr]
        signer = {"server": identity.server_name, "key_id": identity.key_id}
        real = identity.signing_key
        mallory = f"@mallory:{identity.server_name}"

        def make(**kw: Any) -> dict[str, Any]:
            kw.setdefault("key", real)
            kw.setdefault("extremities", now[0])
            kw.setdefault("state", now[1])
            return forge(version, room, **signer, **kw)

        msg = {"msgtype": "m.text", "body": "x"}
        bad_sig = make(key=nacl.signing.SigningKey.generate(), sender=alice.user_id,
                       kind="m.room.message", content={**msg, "body": "forged"})  # fmt: skip
        tampered = make(sender=alice.user_id, kind="m.room.message",
                        content={**msg, "body": "original"})  # fmt: skip
        tampered_wire = {**tampered, "content": {**msg, "body": "tampered"}}
        outsider = make(sender=mallory, kind="m.room.message", content={**msg, "body": "outsider"})
        outsider_topic = make(sender=mallory, kind="m.room.topic", content={"topic": "hijacked"},
                              state_key="")  # fmt: skip
        late = make(sender=charlie.user_id, kind="m.room.message", content={**msg, "body": "late"},
                    extremities=before_ban[0], state=before_ban[1])  # fmt: skip
        # Valid against the auth events it cites (charlie's join), built after the ban: the
        # state before it refuses it (step 5, checked even though step 4 passed).
        stale_auth = make(sender=charlie.user_id, kind="m.room.message",
                          content={**msg, "body": "stale auth"}, state=before_ban[1])  # fmt: skip
        wires = [bad_sig, tampered_wire, outsider, outsider_topic, late, stale_auth]
        raws = [b"{not json", *(encode_canonical_json(_wire(w)) for w in wires)]
        await beta.service.receive(RoomId(room), alpha.did, raws)

        got = await statuses(beta, room, [w["event_id"] for w in wires])
        assert bad_sig["event_id"] not in got  # badly signed: dropped, nothing stored
        assert got[tampered["event_id"]] is EventStatus.TIMELINE
        assert got[outsider["event_id"]] is EventStatus.REJECTED
        assert got[outsider_topic["event_id"]] is EventStatus.REJECTED
        assert got[late["event_id"]] is EventStatus.SOFT_FAILED
        assert got[stale_auth["event_id"]] is EventStatus.REJECTED
        store = RoomStore(beta.service.cache.manager, RoomId(room))
        stored = await store.get_event(EventId(tampered["event_id"]))
        assert stored is not None and "body" not in stored.content  # hash mismatch: redacted
        # Rejected: never changes state, never shown; neither it nor the soft-failed event
        # becomes a forward extremity or a prev_event of what beta builds next.
        assert (await bob.state(room, "m.room.topic"))["topic"] == "kept"
        assert "outsider" not in await bob.messages(room)
        extremities = set(await store.forward_extremities())
        assert tampered["event_id"] in extremities
        refused = {outsider["event_id"], outsider_topic["event_id"], late["event_id"],
                   stale_auth["event_id"]}  # fmt: skip
        assert not extremities & refused
        next_id = await bob.send(room, "after")
        following = await store.get_event(EventId(next_id))
        assert following is not None
        assert following.prev_events == (tampered["event_id"],)
        counters = beta.service.ingest.counters
        assert counters["dropped"] >= 2 and counters["redacted"] >= 1
        assert counters["rejected"] >= 3 and counters["soft_failed"] >= 1


async def test_a_state_event_losing_resolution_does_not_become_the_stored_state(
    tmp_path: Path,
) -> None:
    """Two concurrent topics on the same extremities: state resolution v2 orders them by
    origin_server_ts (same power, same mainline position) and the later one wins, whichever
    arrives last. The loser arriving last must not become the room's stored state."""
    async with cluster(tmp_path) as c:
        alpha, beta, alice, bob, room = await two_nodes_one_room(c, QUIET)
        base = await view(alpha, room)

        async def beta_caught_up() -> bool:
            return set((await view(beta, room))[0]) == set(base[0])

        await eventually(beta_caught_up, 20, "beta to hold alpha's extremities")
        identity = alpha.node.storage.identity
        version = (await alpha.service.cache.get(RoomId(room))).room_version  # type: ignore[union-attr]
        now = int(time.time() * 1000)

        def topic(text: str, ts: int) -> dict[str, Any]:
            return forge(
                version, room, server=identity.server_name, key_id=identity.key_id,
                key=identity.signing_key, sender=alice.user_id, kind="m.room.topic",
                content={"topic": text}, extremities=base[0], state=base[1], state_key="",
                ts=ts,
            )  # fmt: skip

        winner, loser = topic("later", now), topic("earlier", now - 60_000)
        for pdu in (winner, loser):  # the loser arrives last
            await beta.service.receive(RoomId(room), alpha.did, [encode_canonical_json(_wire(pdu))])
        store = RoomStore(beta.service.cache.manager, RoomId(room))
        assert (await store.current_state())[("m.room.topic", "")] == winner["event_id"]
        assert (await view(beta, room))[1][("m.room.topic", "")] == winner["event_id"]
        assert (await bob.state(room, "m.room.topic"))["topic"] == "later"


def _wire(pdu: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pdu.items() if k != "event_id"}


async def test_unknown_origin_keys_wait_bounded_in_time_and_number(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha, beta, _alice, _bob, room = await two_nodes_one_room(c, QUIET)
        ghost = NodeIdentity.generate("ghost")
        extremities, state = await view(alpha, room)
        version = (await alpha.service.cache.get(RoomId(room))).room_version  # type: ignore[union-attr]

        def ghost_pdu(body: str) -> bytes:
            pdu = forge(
                version, room, server=ghost.server_name, key_id=ghost.key_id,
                key=ghost.signing_key, sender=f"@g:{ghost.server_name}", kind="m.room.message",
                content={"msgtype": "m.text", "body": body}, extremities=extremities, state=state,
            )  # fmt: skip
            return encode_canonical_json(_wire(pdu))

        ingest = beta.service.ingest
        ingest.key_wait = 0.5
        ingest.max_waiting = 1
        started = time.monotonic()
        first, second = await asyncio.gather(
            ingest.check(version, [ghost_pdu("one")]),
            _after(0.05, ingest.check(version, [ghost_pdu("two")])),
        )
        elapsed = time.monotonic() - started
        assert first == [] and second == []
        assert ingest.counters["key_waits"] == 1  # the second did not wait: max_waiting
        assert 0.45 <= elapsed < 1.5  # bounded by key_wait (the peers do not know the key)
        # A key learned while an event waits lets it through.
        ingest.key_wait = 10.0
        learned = _after(0.2, beta.service.keys.learn(ghost.did, ghost.did_key, "test"))
        kept, _ = await asyncio.gather(ingest.check(version, [ghost_pdu("three")]), learned)
        assert [e.content["body"] for e in kept] == ["three"]
        assert ingest.counters["key_waits"] == 2


async def _after(delay: float, awaitable: Any) -> Any:
    await asyncio.sleep(delay)
    return await awaitable


async def test_outbound_overflow_falls_back_to_catch_up(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha, _beta, alice, bob, room = await two_nodes_one_room(c, QUIET)
        outbound = alpha.service.outbound
        assert outbound is not None
        outbound.max_queued = 0  # every pushed PDU overflows: only catch-up can deliver
        sent_before = outbound.sent_pdus
        bodies = [f"m{i}" for i in range(5)]
        for body in bodies:
            await alice.send(room, body)

        async def bob_has_all() -> bool:
            return (await bob.messages(room))[-5:] == bodies

        await eventually(bob_has_all, 20, "bob to get every message through catch-up")
        assert outbound.sent_pdus == sent_before
        assert outbound.overflows >= 5


async def test_history_served_to_another_server_respects_visibility(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha, beta = await mesh(c, "alpha", "beta", env=QUIET)
        alice = await alpha.register("alice")
        bob = await beta.register("bob")
        joined_only = await alice.create_room(
            preset="public_chat",
            initial_state=[
                {"type": "m.room.history_visibility", "state_key": "",
                 "content": {"history_visibility": "joined"}},
            ],
        )  # fmt: skip
        shared = await alice.create_room(preset="public_chat")
        secret = {joined_only: await alice.send(joined_only, "secret"),
                  shared: await alice.send(shared, "open")}  # fmt: skip
        for room in (joined_only, shared):
            joined = await bob.join(room)
            assert joined.status_code == 200, joined.text
        after = await alice.send(joined_only, "after-join")

        async def served(room: str, ids: list[str]) -> dict[str, dict[str, Any]]:
            request = pb.Request(get_events=pb.GetEvents(room_id=room, event_ids=ids))
            response = await beta.service.request(alpha.did, request)
            return {
                e: json.loads(p)["content"] for e, p in zip(ids, response.events.pdus, strict=True)
            }

        hidden = await served(joined_only, [secret[joined_only], after])
        assert "body" not in hidden[secret[joined_only]]  # before bob's server joined
        assert hidden[after]["body"] == "after-join"
        opened = await served(shared, [secret[shared]])
        assert opened[secret[shared]]["body"] == "open"


async def test_big_batches_are_checked_in_worker_processes_alike(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha, beta, alice, _bob, room = await two_nodes_one_room(c, QUIET)
        identity = alpha.node.storage.identity
        extremities, state = await view(alpha, room)
        version = (await alpha.service.cache.get(RoomId(room))).room_version  # type: ignore[union-attr]
        wrong = nacl.signing.SigningKey.generate()
        raws: list[bytes] = []
        for i in range(POOL_BATCH + 50):
            pdu = forge(
                version, room, server=identity.server_name, key_id=identity.key_id,
                key=wrong if i % 7 == 3 else identity.signing_key, sender=alice.user_id,
                kind="m.room.message", content={"msgtype": "m.text", "body": f"b{i}"},
                extremities=extremities, state=state,
            )  # fmt: skip
            if i % 5 == 1:
                pdu["content"] = {"msgtype": "m.text", "body": "tampered"}
            raws.append(encode_canonical_json(_wire(pdu)))
        raws.append(b"[]")
        ingest = beta.service.ingest
        ingest.workers = 2
        pooled = await ingest.check(version, raws)
        assert ingest._pool is not None  # the batch went to worker processes
        ingest.workers = 1
        threaded = await ingest.check(version, raws)
        assert pooled == threaded
        for a, b in zip(pooled, threaded, strict=True):  # every field, not only the bytes
            assert all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a))
        assert len(pooled) == len(raws) - 1 - sum(1 for i in range(len(raws) - 1) if i % 7 == 3)
        redacted = [e for e in pooled if "body" not in e.content]
        assert len(redacted) == sum(1 for i in range(len(raws) - 1) if i % 5 == 1 and i % 7 != 3)

"""Catch-up by ``GetHistory`` pages (docs/federation.md §4): a node that missed events gets
them page by page from a peer, oldest first, and a peer that does not serve ``GetHistory``
still gets it there through the ``GetMissingEvents`` walk. Real nodes, real tunnels."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cis.federation import wire_pb2 as pb
from cis.federation.handshake import PeerIdentity
from tests.federation.cluster import Cluster, LocalNode, User, cluster, eventually, mesh

pytestmark = pytest.mark.timeout(120)

QUIET = {"CIS_CATCHUP_INTERVAL": "600"}


def count_requests(node: LocalNode, kind: str) -> list[pb.Request]:
    """Every ``kind`` request ``node`` serves from now on, in order."""
    seen: list[pb.Request] = []
    handlers = node.service._handlers
    serve = handlers[kind]

    async def counted(peer: PeerIdentity, request: pb.Request) -> pb.Response:
        seen.append(request)
        return await serve(peer, request)

    handlers[kind] = counted
    return seen


async def missed_while_away(
    c: Cluster, sent: int
) -> tuple[LocalNode, LocalNode, User, str, list[str]]:
    """alpha and beta share a room; beta stops, alice sends ``sent`` messages (none queued
    for beta), beta starts again from its home with no tunnel yet (it dials nobody, and alpha
    knows only its old port). Returns alpha, the restarted beta, bob on it, the room and the
    bodies."""
    alpha, beta = await mesh(c, "alpha", "beta", env=QUIET)
    alice = await alpha.register("alice")
    bob = await beta.register("bob")
    room = await alice.create_room(preset="public_chat")
    assert (await bob.join(room)).status_code == 200
    await alice.send(room, "before")

    async def bob_has_before() -> bool:
        return (await bob.messages(room))[-1:] == ["before"]

    await eventually(bob_has_before, 20, "bob to get the first message")
    await c.stop_node(beta)
    outbound = alpha.service.outbound
    assert outbound is not None
    outbound.max_queued = 0  # no push waits for beta's return: only catch-up brings these
    bodies = [f"missed {i}" for i in range(sent)]
    for body in bodies:
        await alice.send(room, body)
    beta = await c.start_node("beta", home=beta.home, env=QUIET)
    return alpha, beta, User(beta, bob.user_id, bob.token), room, bodies


async def test_catch_up_fetches_history_pages_oldest_first(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha, beta, bob, room, bodies = await missed_while_away(c, 30)
        served = count_requests(alpha, "get_history")
        walked = count_requests(alpha, "get_missing_events")
        beta.service.history_page = 7
        stored_order: list[str] = []
        seen_positions: list[int] = []

        async def follow() -> None:
            async for event in beta.node.storage.rooms.follow(room, after=0):
                seen_positions.append(event.stream_ordering)
                body = event.content.get("body") if event.type == "m.room.message" else None
                if isinstance(body, str) and body.startswith("missed"):
                    stored_order.append(body)

        follower = asyncio.ensure_future(follow())
        try:
            await reconnect_until_delivered(alpha, beta, bob, room, bodies)
            await eventually(lambda: _true(len(stored_order) == len(bodies)), 10, "the store")
        finally:
            follower.cancel()
        assert stored_order == bodies  # oldest first, one page after another
        pages = [r.get_history for r in served]
        assert len(pages) >= len(bodies) // 7  # 30 messages in pages of 7
        assert all(p.limit == 7 for p in pages)
        assert pages[0].after == 0 and list(pages[0].earliest_events)
        assert all(p.after > 0 for p in pages[1:])
        assert [p.after for p in pages[1:]] == sorted(p.after for p in pages[1:])
        assert walked == []  # nothing left for the walk


async def test_a_peer_without_history_pages_is_walked(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha, beta, bob, room, bodies = await missed_while_away(c, 12)
        del alpha.service._handlers["get_history"]  # answers M_UNRECOGNIZED, as an older node
        walked = count_requests(alpha, "get_missing_events")
        await reconnect_until_delivered(alpha, beta, bob, room, bodies)
        assert walked


async def reconnect_until_delivered(
    alpha: LocalNode, beta: LocalNode, bob: User, room: str, bodies: list[str]
) -> None:
    """Beta dials alpha again; wait until bob on beta has every message he missed."""
    manager = beta.node.federation.manager
    assert manager is not None
    manager.add_peer(alpha.endpoint)

    async def bob_has_all() -> bool:
        return (await bob.messages(room))[-len(bodies) :] == bodies

    await eventually(bob_has_all, 60, "bob to get every missed message")


async def _true(value: bool) -> bool:
    return value

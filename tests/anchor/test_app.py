"""The anchor's HTTP API in process: every refusal of issue 4's Proof, and the peers list."""

from __future__ import annotations

import json
from typing import Any

import pytest
from canonicaljson import encode_canonical_json
from starlette.routing import Route

from cis.anchor.app import AnchorConfig, create_app
from cis.anchor.records import build_heartbeat, sign_peers_request
from cis.identity.keys import NodeIdentity

from .conftest import NAME, InProcessAnchor

ENDPOINT = "ws://198.51.100.{}:8484/_cis/federation/v1"
DAY_S = 86_400


def beat(identity: NodeIdentity, ts: int, endpoint: int = 1, **changes: Any) -> bytes:
    record = build_heartbeat(identity, NAME, [ENDPOINT.format(endpoint)], ts)
    record.update(changes)
    return bytes(encode_canonical_json(record))


async def post(anchor: InProcessAnchor, body: bytes) -> tuple[int, dict[str, Any]]:
    response = await anchor.http.post("/v1/heartbeat", content=body)
    return response.status_code, response.json()


async def get_peers(
    anchor: InProcessAnchor, identity: NodeIdentity, ts: int | None = None
) -> tuple[int, bytes]:
    ts = anchor.clock.time_ms() if ts is None else ts
    response = await anchor.http.get(
        "/v1/peers", headers={"authorization": sign_peers_request(identity, NAME, ts)}
    )
    return response.status_code, response.content


async def test_heartbeats_and_peers(anchor: InProcessAnchor) -> None:
    alpha, beta = NodeIdentity.generate("alpha"), NodeIdentity.generate("beta")
    now = anchor.clock.time_ms()
    alpha_record, beta_record = beat(alpha, now), beat(beta, now, 2)
    assert await post(anchor, alpha_record) == (200, {"ts": now})
    assert (await post(anchor, beta_record))[0] == 200
    status, body = await get_peers(anchor, alpha, now + 1)
    assert status == 200
    # Served unchanged: the very bytes beta signed, inside the list.
    assert beta_record in body and alpha_record not in body
    parsed = json.loads(body)
    assert parsed["observed_ip"] == "192.0.2.10" and parsed["observed_port"] == 40_000
    assert parsed["ts"] == now and len(parsed["peers"]) == 1


async def test_only_nodes_heard_in_the_last_90_s_are_listed(anchor: InProcessAnchor) -> None:
    alpha, beta = NodeIdentity.generate("alpha"), NodeIdentity.generate("beta")
    await post(anchor, beat(beta, anchor.clock.time_ms()))
    anchor.clock.advance(60)
    await post(anchor, beat(alpha, anchor.clock.time_ms()))
    assert len(json.loads((await get_peers(anchor, alpha))[1])["peers"]) == 1
    anchor.clock.advance(31)
    assert json.loads((await get_peers(anchor, alpha))[1])["peers"] == []


async def test_a_replayed_heartbeat_is_refused(anchor: InProcessAnchor) -> None:
    alpha = NodeIdentity.generate("alpha")
    now = anchor.clock.time_ms()
    body = beat(alpha, now)
    assert (await post(anchor, body))[0] == 200
    status, error = await post(anchor, body)
    assert status == 409 and error["errcode"] == "IO.CIS.REPLAY"
    status, error = await post(anchor, beat(alpha, now - 1000))  # older, freshly signed
    assert status == 409 and error["errcode"] == "IO.CIS.REPLAY"
    assert (await post(anchor, beat(alpha, now + 1)))[0] == 200


@pytest.mark.parametrize("offset_s", [-301, 301, 3600])
async def test_a_skewed_heartbeat_is_refused_with_the_anchors_time(
    anchor: InProcessAnchor, offset_s: int
) -> None:
    alpha = NodeIdentity.generate("alpha")
    now = anchor.clock.time_ms()
    status, error = await post(anchor, beat(alpha, now + offset_s * 1000))
    assert status == 400 and error["errcode"] == "IO.CIS.CLOCK_SKEW"
    assert error["anchor_ts"] == now


@pytest.mark.parametrize("offset_s", [-300, 300])
async def test_skew_of_exactly_300_s_is_accepted(anchor: InProcessAnchor, offset_s: int) -> None:
    alpha = NodeIdentity.generate("alpha")
    assert (await post(anchor, beat(alpha, anchor.clock.time_ms() + offset_s * 1000)))[0] == 200


async def test_forged_heartbeats_are_refused(anchor: InProcessAnchor) -> None:
    alpha, mallory = NodeIdentity.generate("alpha"), NodeIdentity.generate("alpha")
    now = anchor.clock.time_ms()
    tampered = json.loads(beat(alpha, now))
    tampered["endpoints"] = [ENDPOINT.format(66)]
    resigned = mallory.sign_json({k: v for k, v in tampered.items() if k != "signatures"})
    resigned["did"], resigned["did_key"] = alpha.did, alpha.did_key
    bad_sig = json.loads(beat(alpha, now))
    bad_sig["signatures"]["alpha.cis.local"][alpha.key_id] = "A" * 86
    for forged in (tampered, resigned, bad_sig):
        status, error = await post(anchor, bytes(encode_canonical_json(forged)))
        assert status == 401 and error["errcode"] == "M_UNAUTHORIZED", error
    assert (await get_peers(anchor, alpha))[0] == 403  # nothing was registered


async def test_oversized_heartbeats_are_refused(anchor: InProcessAnchor) -> None:
    alpha = NodeIdentity.generate("alpha")
    padded = beat(alpha, anchor.clock.time_ms()).replace(b"{", b"{" + b" " * 4096, 1)
    status, error = await post(anchor, padded)
    assert status == 413 and error["errcode"] == "M_TOO_LARGE"

    async def chunks() -> Any:  # no Content-Length: the limit holds on what is read
        for _ in range(10):
            yield b" " * 1000

    response = await anchor.http.post("/v1/heartbeat", content=chunks())
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "errcode"),
    [(b"not json", "M_NOT_JSON"), (b"[]", "M_BAD_JSON"), (b'{"did":"x"}', "M_BAD_JSON")],
)
async def test_malformed_heartbeats_are_refused(
    anchor: InProcessAnchor, body: bytes, errcode: str
) -> None:
    status, error = await post(anchor, body)
    assert status == 400 and error["errcode"] == errcode


async def test_a_heartbeat_carrying_anything_else_is_refused(anchor: InProcessAnchor) -> None:
    alpha = NodeIdentity.generate("alpha")
    record = build_heartbeat(alpha, NAME, [], anchor.clock.time_ms())
    record.pop("signatures")
    record["note"] = "a message for another node"
    status, error = await post(anchor, bytes(encode_canonical_json(alpha.sign_json(record))))
    assert status == 400 and error["errcode"] == "M_BAD_JSON"


async def test_a_heartbeat_for_another_anchor_is_refused(anchor: InProcessAnchor) -> None:
    alpha = NodeIdentity.generate("alpha")
    record = build_heartbeat(alpha, "other-anchor:8600", [], anchor.clock.time_ms())
    status, error = await post(anchor, bytes(encode_canonical_json(record)))
    assert status == 400 and error["errcode"] == "IO.CIS.WRONG_ANCHOR"


async def test_a_node_id_stays_bound_to_its_key_for_30_days(anchor: InProcessAnchor) -> None:
    alpha, usurper = NodeIdentity.generate("alpha"), NodeIdentity.generate("alpha")
    assert (await post(anchor, beat(alpha, anchor.clock.time_ms())))[0] == 200
    anchor.clock.advance(29 * DAY_S)
    status, error = await post(anchor, beat(usurper, anchor.clock.time_ms()))
    assert status == 409 and error["errcode"] == "IO.CIS.KEY_BOUND"
    assert (await get_peers(anchor, alpha))[0] == 200  # a poll is contact too
    anchor.clock.advance(29 * DAY_S)
    assert (await post(anchor, beat(usurper, anchor.clock.time_ms())))[0] == 409
    anchor.clock.advance(30 * DAY_S + 1)
    assert (await post(anchor, beat(usurper, anchor.clock.time_ms())))[0] == 200
    assert (await get_peers(anchor, alpha))[0] == 403


@pytest.mark.parametrize("anchor_config", [AnchorConfig(max_entries=3)])
async def test_at_most_max_entries_are_kept(anchor: InProcessAnchor) -> None:
    nodes = [NodeIdentity.generate(f"n{i}") for i in range(4)]
    for node in nodes[:3]:
        assert (await post(anchor, beat(node, anchor.clock.time_ms())))[0] == 200
    status, error = await post(anchor, beat(nodes[3], anchor.clock.time_ms()))
    assert status == 503 and error["errcode"] == "IO.CIS.ANCHOR_FULL"
    # Known nodes still renew; an expired binding makes room.
    assert (await post(anchor, beat(nodes[0], anchor.clock.time_ms() + 1)))[0] == 200
    anchor.clock.advance(30 * DAY_S + 1)
    assert (await post(anchor, beat(nodes[3], anchor.clock.time_ms())))[0] == 200


@pytest.mark.parametrize("anchor_config", [AnchorConfig(burst=3, rate_per_s=0.5)])
async def test_requests_are_rate_limited_per_address(anchor: InProcessAnchor) -> None:
    alpha = NodeIdentity.generate("alpha")
    statuses = [(await post(anchor, beat(alpha, anchor.clock.time_ms() + i)))[0] for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = await anchor.http.get("/v1/peers")
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert response.json()["errcode"] == "M_LIMIT_EXCEEDED"
    anchor.clock.advance(2)
    assert (await get_peers(anchor, alpha))[0] == 200


async def test_peers_needs_a_valid_signed_request_from_a_registered_node(
    anchor: InProcessAnchor,
) -> None:
    alpha, stranger = NodeIdentity.generate("alpha"), NodeIdentity.generate("beta")
    now = anchor.clock.time_ms()
    await post(anchor, beat(alpha, now))
    assert (await anchor.http.get("/v1/peers")).status_code == 401
    assert (await get_peers(anchor, stranger))[0] == 403
    impostor = NodeIdentity("alpha", stranger.signing_key)
    assert (await get_peers(anchor, impostor))[0] == 403  # did names another key
    header = sign_peers_request(alpha, "another-anchor:1", now)
    response = await anchor.http.get("/v1/peers", headers={"authorization": header})
    assert response.status_code == 401
    assert (await get_peers(anchor, alpha, now + 5))[0] == 200
    status, body = await get_peers(anchor, alpha, now + 5)
    assert status == 409 and json.loads(body)["errcode"] == "IO.CIS.REPLAY"
    status, body = await get_peers(anchor, alpha, now + 400_000)
    assert status == 400 and json.loads(body)["anchor_ts"] == now


async def test_there_is_no_other_endpoint(anchor: InProcessAnchor) -> None:
    app = create_app(anchor.service)
    routes = {(r.path, tuple(sorted(r.methods or ()))) for r in app.routes if isinstance(r, Route)}
    assert routes == {("/v1/heartbeat", ("POST",)), ("/v1/peers", ("GET", "HEAD"))}
    assert len(app.routes) == 2
    for method, path in [("GET", "/"), ("PUT", "/v1/peers"), ("GET", "/v1/heartbeat")]:
        response = await anchor.http.request(method, path)
        assert response.status_code in (404, 405)
        assert response.json()["errcode"] == "M_UNRECOGNIZED"

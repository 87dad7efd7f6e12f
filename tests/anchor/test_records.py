"""Heartbeats and signed peers requests, as every party checks them."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from cis.anchor.errors import InvalidRecord
from cis.anchor.records import (
    anchor_name,
    build_heartbeat,
    parse_heartbeat,
    parse_peers_auth,
    sign_peers_request,
    verify_peers_auth,
)
from cis.identity.keys import NodeIdentity

ANCHOR = "anchor.example:8600"
ENDPOINT = "ws://203.0.113.7:8484/_cis/federation/v1"
TS = 1_700_000_000_000


@pytest.fixture
def alpha() -> NodeIdentity:
    return NodeIdentity.generate("alpha")


def signed(identity: NodeIdentity, **changes: Any) -> dict[str, Any]:
    record = build_heartbeat(identity, ANCHOR, [ENDPOINT], TS)
    record.update(changes)
    return record


def test_a_heartbeat_round_trips(alpha: NodeIdentity) -> None:
    record = signed(alpha)
    assert set(record) == {"anchor", "did", "did_key", "node_id", "endpoints", "ts", "signatures"}
    beat = parse_heartbeat(record)
    assert (beat.did, beat.did_key, beat.node_id) == (alpha.did, alpha.did_key, "alpha")
    assert beat.endpoints == (ENDPOINT,) and beat.ts == TS and beat.anchor == ANCHOR
    assert beat.public_key == alpha.public_key
    assert parse_heartbeat(json.loads(beat.canonical)) == beat


@pytest.mark.parametrize(
    ("change", "forged"),
    [
        ({"ts": TS + 1}, True),  # altered after signing
        ({"endpoints": ["ws://198.51.100.1:1/_cis/federation/v1"]}, True),
        ({"anchor": "elsewhere:1"}, True),
    ],
)
def test_a_record_altered_after_signing_is_forged(
    alpha: NodeIdentity, change: dict[str, Any], forged: bool
) -> None:
    with pytest.raises(InvalidRecord, match="signature") as info:
        parse_heartbeat(signed(alpha, **change))
    assert info.value.forged is forged


def test_a_record_claiming_another_did_is_forged(alpha: NodeIdentity) -> None:
    other = NodeIdentity.generate("alpha")  # same name, another key
    record = signed(alpha, did=other.did)
    with pytest.raises(InvalidRecord, match="different keys") as info:
        parse_heartbeat(record)
    assert info.value.forged


def test_a_record_signed_by_another_key_is_forged(alpha: NodeIdentity) -> None:
    mallory = NodeIdentity.generate("alpha")
    record = signed(alpha)
    forged = mallory.sign_json({k: v for k, v in record.items() if k != "signatures"})
    with pytest.raises(InvalidRecord) as info:
        parse_heartbeat(forged)
    assert info.value.forged


def test_node_id_must_be_the_dids(alpha: NodeIdentity) -> None:
    with pytest.raises(InvalidRecord, match="node name") as info:
        parse_heartbeat(signed(alpha, node_id="beta"))
    assert info.value.forged


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(extra="data the anchor must not keep"),
        lambda r: r.pop("endpoints"),
        lambda r: r.update(ts="1700000000000"),
        lambda r: r.update(ts=-1),
        lambda r: r.update(ts=True),
        lambda r: r.update(endpoints=[ENDPOINT] * 9),
        lambda r: r.update(endpoints=["http://x:1/"]),
        lambda r: r.update(endpoints="ws://x:1/"),
        lambda r: r.update(did="did:key:z6Mk"),
        lambda r: r.update(anchor=""),
        lambda r: r.update(node_id=5),
    ],
)
def test_malformed_records_are_refused(alpha: NodeIdentity, mutate: Any) -> None:
    record = copy.deepcopy(signed(alpha))
    mutate(record)
    with pytest.raises(InvalidRecord):
        parse_heartbeat(record)


def test_extra_signatures_are_refused(alpha: NodeIdentity) -> None:
    record = signed(alpha)
    record["signatures"]["other.cis.local"] = {"ed25519:x": "AAAA"}
    with pytest.raises(InvalidRecord, match="signed by"):
        parse_heartbeat(record)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidRecord):
        parse_heartbeat([1, 2])


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://Anchor.Example:8600/", "anchor.example:8600"),
        ("https://anchor.example:443", "anchor.example"),
        ("http://127.0.0.1:80", "127.0.0.1"),
        ("https://[::1]:8443/", "[::1]:8443"),
    ],
)
def test_anchor_names(url: str, name: str) -> None:
    assert anchor_name(url) == name


def test_anchor_name_refuses_other_schemes() -> None:
    with pytest.raises(ValueError):
        anchor_name("ws://anchor:1/")


def test_peers_request_signature(alpha: NodeIdentity) -> None:
    header = sign_peers_request(alpha, ANCHOR, TS)
    auth = parse_peers_auth(header)
    assert (auth.did, auth.ts) == (alpha.did, TS)
    verify_peers_auth(auth, ANCHOR, alpha.public_key)
    with pytest.raises(InvalidRecord) as info:
        verify_peers_auth(auth, "another-anchor:1", alpha.public_key)
    assert info.value.forged
    with pytest.raises(InvalidRecord):
        verify_peers_auth(auth, ANCHOR, NodeIdentity.generate("x").public_key)


@pytest.mark.parametrize(
    "header", [None, "", "Bearer abc", 'CIS-Anchor did="did:cis:a:0123456789abcdef",ts="1"']
)
def test_malformed_peers_headers_are_refused(header: str | None) -> None:
    with pytest.raises(InvalidRecord):
        parse_peers_auth(header)

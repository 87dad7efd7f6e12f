"""The handshake, sans I/O: every refusal of issue 4's Proof, each with its code and reason."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from noise.connection import Keypair, NoiseConnection

from cis.federation import wire_pb2 as pb
from cis.federation.connection import (
    Authenticated,
    Closed,
    Role,
    State,
    TunnelConnection,
)
from cis.federation.handshake import (
    NOISE_PROTOCOL_NAME,
    PROLOGUE,
    STATIC_KEY_SIG_PREFIX,
    Credentials,
    StaticKey,
)
from cis.federation.trust import StaticTrust
from cis.identity.keys import NodeIdentity

from .helpers import complete_handshake, identities, make_pair, pump

ENDPOINT = "ws://127.0.0.1:8484/_cis/federation/v1"


@pytest.fixture
def alice() -> NodeIdentity:
    return identities("alice")[0]


@pytest.fixture
def bob() -> NodeIdentity:
    return identities("bob")[0]


def closed_event(conn: TunnelConnection) -> Closed:
    events = conn.events_received()
    closes = [e for e in events if isinstance(e, Closed)]
    assert len(closes) == 1, events
    assert conn.state is State.CLOSED
    assert not any(isinstance(e, Authenticated) for e in events)
    return closes[0]


def raw_noise(role: Role, static: StaticKey | None = None) -> Any:
    """A bare noiseprotocol connection, to craft messages our own code never sends."""
    noise = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)
    noise.set_prologue(PROLOGUE)
    noise.set_keypair_from_private_bytes(Keypair.STATIC, (static or StaticKey.generate()).private)
    if role is Role.INITIATOR:
        noise.set_as_initiator()
    else:
        noise.set_as_responder()
    noise.start_handshake()
    return noise


def test_valid_handshake_authenticates_both_sides(alice: NodeIdentity, bob: NodeIdentity) -> None:
    a = Credentials.create(alice, endpoints=[ENDPOINT])
    b = Credentials.create(bob)
    pair = make_pair(a, b, expected_did=bob.did)
    complete_handshake(pair)
    (seen_by_alice,) = pair.initiator.events_received()
    (seen_by_bob,) = pair.responder.events_received()
    assert isinstance(seen_by_alice, Authenticated) and isinstance(seen_by_bob, Authenticated)
    assert seen_by_alice.peer.did == bob.did and seen_by_alice.peer.did_key == bob.did_key
    assert seen_by_alice.peer.static_key == b.static_key.public
    assert seen_by_bob.peer.did == alice.did and seen_by_bob.peer.public_key == alice.public_key
    assert seen_by_bob.peer.static_key == a.static_key.public
    assert seen_by_bob.peer.endpoints == (ENDPOINT,)
    assert seen_by_alice.peer.we_initiated and not seen_by_bob.peer.we_initiated
    assert seen_by_alice.peer.handshake_hash == seen_by_bob.peer.handshake_hash
    assert pair.initiator.state is pair.responder.state is State.OPEN


def test_messages_have_the_xx_shape(alice: NodeIdentity, bob: NodeIdentity) -> None:
    pair = make_pair(Credentials.create(alice), Credentials.create(bob))
    (m1,) = pair.initiator.data_to_send()
    assert len(m1) == 32  # ephemeral key only: no payload in message 1
    pair.responder.receive_message(m1)
    (m2,) = pair.responder.data_to_send()
    assert len(m2) > 32 + 48 + 16  # e, encrypted s, encrypted payload


@pytest.mark.parametrize("forger", ["responder", "initiator"])
def test_wrong_signature_is_refused(alice: NodeIdentity, bob: NodeIdentity, forger: str) -> None:
    a, b = Credentials.create(alice), Credentials.create(bob)
    if forger == "responder":
        b = dataclasses.replace(b, sig=bytes(64))
    else:
        a = dataclasses.replace(a, sig=alice.sign(b"something else entirely"))
    pair = make_pair(a, b)
    complete_handshake(pair)
    victim = pair.initiator if forger == "responder" else pair.responder
    event = closed_event(victim)
    assert event.code == 1008
    assert "static key signature" in event.reason
    if forger == "responder":
        assert pair.responder.state is State.AWAIT_MSG3  # the initiator never sent message 3


def test_signature_over_a_different_static_key_is_refused(
    alice: NodeIdentity, bob: NodeIdentity
) -> None:
    other = StaticKey.generate()
    b = Credentials.create(bob)
    b = dataclasses.replace(b, sig=bob.sign(STATIC_KEY_SIG_PREFIX + other.public))
    pair = make_pair(Credentials.create(alice), b)
    complete_handshake(pair)
    event = closed_event(pair.initiator)
    assert (event.code, "static key signature" in event.reason) == (1008, True)


def test_a_valid_payload_replayed_with_another_static_key_is_refused(
    alice: NodeIdentity, bob: NodeIdentity
) -> None:
    # Mallory copies Bob's whole payload (signed over Bob's static key) into her own handshake.
    bob_creds = Credentials.create(bob)
    mallory = dataclasses.replace(bob_creds, static_key=StaticKey.generate())
    pair = make_pair(Credentials.create(alice), mallory)
    complete_handshake(pair)
    event = closed_event(pair.initiator)
    assert event.code == 1008 and "delivered key" in event.reason


@pytest.mark.parametrize(
    ("field", "expected"),
    [("did", "DID does not match its key"), ("did_key", "did_key does not name ed25519_pub")],
)
def test_a_did_that_does_not_match_its_key_is_refused(
    alice: NodeIdentity, bob: NodeIdentity, field: str, expected: str
) -> None:
    carol = identities("carol")[0]
    a = Credentials.create(alice)
    a = dataclasses.replace(a, **{field: getattr(carol, field)})
    pair = make_pair(a, Credentials.create(bob))
    complete_handshake(pair)
    event = closed_event(pair.responder)
    assert event.code == 1008 and expected in event.reason


def test_a_did_with_the_right_digits_but_another_name_is_accepted_as_named(
    alice: NodeIdentity, bob: NodeIdentity
) -> None:
    # did:cis binds only the key digits; the node name is the claimant's, checked elsewhere.
    renamed = NodeIdentity("alias", alice.signing_key)
    pair = make_pair(Credentials.create(renamed), Credentials.create(bob))
    complete_handshake(pair)
    (event,) = pair.responder.events_received()
    assert isinstance(event, Authenticated) and event.peer.did == renamed.did


def test_a_malformed_did_is_refused(alice: NodeIdentity, bob: NodeIdentity) -> None:
    a = dataclasses.replace(Credentials.create(alice), did="did:cis:UPPER:0123")
    pair = make_pair(a, Credentials.create(bob))
    complete_handshake(pair)
    event = closed_event(pair.responder)
    assert event.code == 1008 and "DID" in event.reason


def test_a_payload_in_message_1_is_refused(bob: NodeIdentity) -> None:
    responder = TunnelConnection(Role.RESPONDER, Credentials.create(bob), StaticTrust())
    noise = raw_noise(Role.INITIATOR)
    responder.receive_message(bytes(noise.write_message(b"early data")))
    event = closed_event(responder)
    assert (event.code, event.reason) == (1002, "payload in handshake message 1")
    assert responder.data_to_send() == []  # nothing answered


def _payload_bytes(identity: NodeIdentity, static: StaticKey, **changes: Any) -> bytes:
    payload = pb.HandshakePayload(
        did=identity.did,
        did_key=identity.did_key,
        ed25519_pub=identity.public_key,
        sig=identity.sign(STATIC_KEY_SIG_PREFIX + static.public),
        version=1,
    )
    for key, value in changes.items():
        if key == "endpoints":
            payload.endpoints.extend(value)
        else:
            setattr(payload, key, value)
    return payload.SerializeToString()


@pytest.mark.parametrize(
    ("payload_of", "code", "reason"),
    [
        (lambda i, s: b"\xff\xff\xff", 1002, "not valid protobuf"),
        (lambda i, s: _payload_bytes(i, s, version=0), 1002, "version"),
        (lambda i, s: _payload_bytes(i, s, ed25519_pub=b"short"), 1008, "32 bytes"),
        (lambda i, s: _payload_bytes(i, s, endpoints=[ENDPOINT] * 9), 1002, "endpoints"),
        (lambda i, s: _payload_bytes(i, s, endpoints=["http://x:1/"]), 1002, "endpoints"),
    ],
)
def test_malformed_payloads_are_refused(
    alice: NodeIdentity, bob: NodeIdentity, payload_of: Any, code: int, reason: str
) -> None:
    initiator = TunnelConnection(Role.INITIATOR, Credentials.create(alice), StaticTrust())
    static = StaticKey.generate()
    noise = raw_noise(Role.RESPONDER, static)
    noise.read_message(initiator.data_to_send()[0])
    initiator.receive_message(bytes(noise.write_message(payload_of(bob, static))))
    event = closed_event(initiator)
    assert event.code == code and reason in event.reason


@pytest.mark.parametrize("which", [1, 2, 3])
def test_a_truncated_message_is_refused(alice: NodeIdentity, bob: NodeIdentity, which: int) -> None:
    pair = make_pair(Credentials.create(alice), Credentials.create(bob))
    order = [
        (pair.initiator, pair.responder),
        (pair.responder, pair.initiator),
        (pair.initiator, pair.responder),
    ]
    for step, (src, dst) in enumerate(order, start=1):
        (message,) = src.data_to_send()
        if step == which:
            dst.receive_message(message[: len(message) - 5])
            event = closed_event(dst)
            assert event.code == 1002
            assert f"message {which}" in event.reason
            return
        dst.receive_message(message)
    pytest.fail("the truncated message was never delivered")


def test_an_oversized_message_is_refused(alice: NodeIdentity, bob: NodeIdentity) -> None:
    responder = TunnelConnection(Role.RESPONDER, Credentials.create(bob), StaticTrust())
    responder.receive_message(bytes(65_536))
    event = closed_event(responder)
    assert event.code == 1009 and "65535" in event.reason


def test_an_oversized_handshake_message_is_refused(alice: NodeIdentity, bob: NodeIdentity) -> None:
    pair = make_pair(Credentials.create(alice), Credentials.create(bob))
    pump(pair.initiator, pair.responder)
    pair.responder.data_to_send()
    pair.initiator.receive_message(bytes(10_000))
    event = closed_event(pair.initiator)
    assert event.code == 1009 and "too large" in event.reason


def test_message_1_replayed_in_place_of_message_3_is_refused(
    alice: NodeIdentity, bob: NodeIdentity
) -> None:
    pair = make_pair(Credentials.create(alice), Credentials.create(bob))
    (m1,) = pair.initiator.data_to_send()
    pair.responder.receive_message(m1)
    pair.responder.receive_message(m1)
    event = closed_event(pair.responder)
    assert event.code == 1002


@pytest.mark.parametrize("which", [2, 3])
def test_a_message_replayed_from_another_session_is_refused(
    alice: NodeIdentity, bob: NodeIdentity, which: int
) -> None:
    a, b = Credentials.create(alice), Credentials.create(bob)
    first = make_pair(a, b)
    pump(first.initiator, first.responder)
    (old_m2,) = first.responder.data_to_send()
    first.initiator.receive_message(old_m2)
    (old_m3,) = first.initiator.data_to_send()

    second = make_pair(a, b)
    pump(second.initiator, second.responder)
    if which == 2:
        second.responder.data_to_send()
        second.initiator.receive_message(old_m2)
        victim = second.initiator
    else:
        pump(second.responder, second.initiator)
        second.initiator.data_to_send()
        second.responder.receive_message(old_m3)
        victim = second.responder
    event = closed_event(victim)
    assert event.code == 1002 and f"message {which}" in event.reason


def test_responder_refuses_an_initiator_at_trust_0(alice: NodeIdentity, bob: NodeIdentity) -> None:
    pair = make_pair(
        Credentials.create(alice),
        Credentials.create(bob),
        responder_trust=StaticTrust({alice.did: 0}),
    )
    complete_handshake(pair)
    event = closed_event(pair.responder)
    assert event.code == 1008 and event.reason == f"trust level 0 for {alice.did}"
    assert pair.responder.peer is None


def test_initiator_refuses_a_responder_at_trust_0_by_did_key(
    alice: NodeIdentity, bob: NodeIdentity
) -> None:
    pair = make_pair(
        Credentials.create(alice),
        Credentials.create(bob),
        initiator_trust=StaticTrust({bob.did_key: 0}),
    )
    complete_handshake(pair)
    event = closed_event(pair.initiator)
    assert event.code == 1008 and "trust level 0" in event.reason
    assert pair.responder.state is State.AWAIT_MSG3  # message 3 never sent


def test_dialler_refuses_an_unexpected_did(alice: NodeIdentity, bob: NodeIdentity) -> None:
    carol = identities("carol")[0]
    pair = make_pair(Credentials.create(alice), Credentials.create(bob), expected_did=carol.did)
    complete_handshake(pair)
    event = closed_event(pair.initiator)
    assert event.code == 1008 and carol.did in event.reason


def test_a_peer_presenting_our_own_identity_is_refused(alice: NodeIdentity) -> None:
    twin = Credentials.create(alice)  # a restored copy: same key, another process
    pair = make_pair(Credentials.create(alice), twin)
    complete_handshake(pair)
    event = closed_event(pair.initiator)
    assert event.code == 1008 and "identity conflict" in event.reason


def test_input_after_close_is_ignored(alice: NodeIdentity, bob: NodeIdentity) -> None:
    responder = TunnelConnection(Role.RESPONDER, Credentials.create(bob), StaticTrust())
    responder.receive_message(b"x")
    closed_event(responder)
    responder.receive_message(bytes(32))
    assert responder.events_received() == [] and responder.data_to_send() == []


def test_the_nodes_admission_hook_has_the_last_word(alice: NodeIdentity, bob: NodeIdentity) -> None:
    asked: list[tuple[str, str, bytes]] = []

    def pinned(did: str, did_key: str, public_key: bytes) -> str | None:
        asked.append((did, did_key, public_key))
        return "node_id alice is bound to another key; run cis-node trust rebind"

    pair = make_pair(Credentials.create(alice), Credentials.create(bob))
    pair.responder = TunnelConnection(
        Role.RESPONDER, Credentials.create(bob), StaticTrust(), admission=pinned
    )
    complete_handshake(pair)
    event = closed_event(pair.responder)
    assert event.code == 1008 and "trust rebind" in event.reason
    assert asked == [(alice.did, alice.did_key, alice.public_key)]

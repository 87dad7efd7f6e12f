from __future__ import annotations

import base58
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cis.identity import (
    InvalidDid,
    NodeIdentity,
    did_key_from_public_key,
    parse_did,
    pub_key_short,
    public_key_from_did_key,
)
from cis.identity.did import check_did_binds_key, parse_did_cis

# did:key spec example (w3c-ccg did-key-spec, "Ed25519"): decodes to 0xed 0x01 + 32 bytes.
SPEC_EXAMPLE = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


def test_spec_example_round_trips() -> None:
    key = public_key_from_did_key(SPEC_EXAMPLE)
    assert len(key) == 32
    assert base58.b58decode(SPEC_EXAMPLE[len("did:key:z") :])[:2] == b"\xed\x01"
    assert did_key_from_public_key(key) == SPEC_EXAMPLE


@given(st.binary(min_size=32, max_size=32))
def test_did_key_round_trip(public_key: bytes) -> None:
    did_key = did_key_from_public_key(public_key)
    assert did_key.startswith("did:key:z6Mk")
    assert public_key_from_did_key(did_key) == public_key


@pytest.mark.parametrize(
    "bad",
    [
        "did:key:",
        "did:key:z",
        "did:key:u" + "A" * 40,  # base64url multibase: valid did:key, not accepted here
        "did:key:z0OIl",  # characters outside base58btc
        "did:key:z" + base58.b58encode(b"\xec\x01" + bytes(32)).decode(),  # X25519, not Ed25519
        "did:key:z" + base58.b58encode(b"\xed\x01" + bytes(31)).decode(),  # short key
        "did:web:example.com",
        "did:key:z" + "1" * 300,
    ],
)
def test_bad_did_key_refused(bad: str) -> None:
    with pytest.raises(InvalidDid):
        public_key_from_did_key(bad)


def test_identity_names_follow_the_spec_of_issue_2() -> None:
    ident = NodeIdentity.from_seed("munin-macmini", bytes(range(32)))
    pub = ident.public_key
    assert ident.pub_key_short == pub.hex()[:16] == pub_key_short(pub)
    assert ident.did == f"did:cis:munin-macmini:{pub.hex()[:16]}"
    assert ident.did_key == "did:key:z" + base58.b58encode(b"\xed\x01" + pub).decode()
    assert ident.server_name == "munin-macmini.cis.local"
    assert ident.key_id == f"ed25519:{pub.hex()[:16]}"
    assert ident.system_user_id == "@cis:munin-macmini.cis.local"
    check_did_binds_key(ident.did, pub)
    check_did_binds_key(ident.did_key, pub)


def test_repr_never_shows_the_key() -> None:
    ident = NodeIdentity.from_seed("n1", bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(ident)
    assert "signing_key" not in repr(ident)


def test_did_bound_to_other_key_is_refused() -> None:
    a = NodeIdentity.generate("a")
    b = NodeIdentity.generate("b")
    with pytest.raises(InvalidDid):
        check_did_binds_key(a.did, b.public_key)
    with pytest.raises(InvalidDid):
        check_did_binds_key(a.did_key, b.public_key)


@pytest.mark.parametrize(
    "bad",
    [
        "did:cis:n1",
        "did:cis:N1:0123456789abcdef",
        "did:cis:n1:0123456789ABCDEF",
        "did:cis:n1:0123",
        "did:cis:-n:0123456789abcdef",
    ],
)
def test_bad_did_cis_refused(bad: str) -> None:
    with pytest.raises(InvalidDid):
        parse_did_cis(bad)
    with pytest.raises(InvalidDid):
        parse_did(bad)


def test_sign_json_is_a_matrix_signature() -> None:
    from signedjson.sign import verify_signed_json

    ident = NodeIdentity.generate("n1")
    original = {"a": 1, "unsigned": {"x": 2}}
    signed = ident.sign_json(original)
    assert "signatures" not in original
    assert set(signed["signatures"]) == {"n1.cis.local"}
    assert set(signed["signatures"]["n1.cis.local"]) == {ident.key_id}
    verify_signed_json(signed, "n1.cis.local", ident.verify_key)

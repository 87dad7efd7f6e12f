"""Server key documents: Matrix-shaped, self-signed, checked only through their signature."""

from __future__ import annotations

import json

import pytest
from canonicaljson import encode_canonical_json
from unpaddedbase64 import encode_base64

from cis.federation.keys import (
    InvalidKeyDocument,
    OldKey,
    build_server_keys,
    verify_server_keys,
)
from cis.identity.keys import NodeIdentity

from .helpers import identities


def test_a_document_round_trips_and_keeps_its_bytes() -> None:
    (alpha,) = identities("alpha")
    old = NodeIdentity.generate("alpha")
    data = build_server_keys(
        alpha, 1_700_000_000_000, {old.key_id: OldKey(old.public_key, 1_690_000_000_000)}
    )
    document = json.loads(data)
    assert set(document) == {
        "server_name",
        "valid_until_ts",
        "verify_keys",
        "old_verify_keys",
        "signatures",
    }
    assert document["verify_keys"] == {alpha.key_id: {"key": encode_base64(alpha.public_key)}}
    keys = verify_server_keys(data, "alpha.cis.local")
    assert keys.verify_keys == {alpha.key_id: alpha.public_key}
    assert keys.old_verify_keys == {old.key_id: OldKey(old.public_key, 1_690_000_000_000)}
    assert keys.valid_until_ts == 1_700_000_000_000 and keys.document == data


def test_a_document_for_another_server_is_refused() -> None:
    (alpha,) = identities("alpha")
    with pytest.raises(InvalidKeyDocument, match=r"not 'beta\.cis\.local'"):
        verify_server_keys(build_server_keys(alpha, 1), "beta.cis.local")


def test_a_relayed_document_with_a_swapped_key_is_refused() -> None:
    alpha, mallory = identities("alpha", "alpha")
    document = json.loads(build_server_keys(alpha, 1))
    document["verify_keys"] = {mallory.key_id: {"key": encode_base64(mallory.public_key)}}
    with pytest.raises(InvalidKeyDocument, match="not signed"):
        verify_server_keys(bytes(encode_canonical_json(document)))


def test_a_forged_self_signed_document_fails_against_the_origin_did() -> None:
    alpha, mallory = identities("alpha", "alpha")  # same name, another key
    forged = build_server_keys(mallory, 1)
    assert verify_server_keys(forged, "alpha.cis.local").verify_keys  # consistent in itself
    with pytest.raises(InvalidKeyDocument, match="belongs to"):
        verify_server_keys(forged, "alpha.cis.local", did=alpha.did)
    assert verify_server_keys(build_server_keys(alpha, 1), did=alpha.did_key).verify_keys


def test_a_tampered_document_is_refused() -> None:
    (alpha,) = identities("alpha")
    document = json.loads(build_server_keys(alpha, 1))
    document["valid_until_ts"] = 2**53 - 1
    with pytest.raises(InvalidKeyDocument, match="not signed"):
        verify_server_keys(bytes(encode_canonical_json(document)))


def test_a_cis_key_id_must_name_its_key() -> None:
    alpha, other = identities("alpha", "other")
    document = {
        "server_name": "alpha.cis.local",
        "valid_until_ts": 1,
        "verify_keys": {other.key_id: {"key": encode_base64(alpha.public_key)}},
    }
    with pytest.raises(InvalidKeyDocument, match="does not match its key"):
        verify_server_keys(bytes(encode_canonical_json(alpha.sign_json(document))))


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[]", b'{"server_name":"a.cis.local"}', b"x" * 20_000],
)
def test_malformed_documents_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidKeyDocument):
        verify_server_keys(data)

from __future__ import annotations

import hashlib

from cis.handlers.access_tokens import (
    new_access_token,
    new_device_id,
    token_hash,
    valid_device_id,
)


def test_tokens_are_long_random_and_url_safe() -> None:
    tokens = {new_access_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert len(token) >= 43  # 32 bytes in URL-safe base64
        assert all(c.isalnum() or c in "-_" for c in token)


def test_token_hash_is_sha256() -> None:
    assert token_hash("abc") == hashlib.sha256(b"abc").digest()
    assert len(token_hash(new_access_token())) == 32


def test_device_ids() -> None:
    device = new_device_id()
    assert len(device) == 10 and device.isupper() and device.isalpha()
    assert valid_device_id(device)
    assert valid_device_id("GHTYAJCE")
    assert not valid_device_id("")
    assert not valid_device_id("has space")
    assert not valid_device_id("x" * 256)
    assert not valid_device_id("ünïcode")
    assert not valid_device_id("tab\there")

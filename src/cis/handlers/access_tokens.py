"""Access tokens and device ids.

A token is ``secrets.token_urlsafe(32)`` (256 bits from the OS), handed to the client once and
stored only as its SHA-256, so a copy of ``node.db`` holds no usable credential. SHA-256 (not a
slow hash) is right here: the input is already uniformly random, and every request checks it.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from typing import Final

from cis.ids import DeviceId

TOKEN_BYTES: Final = 32
DEVICE_ID_LENGTH: Final = 10
MAX_DEVICE_ID_LENGTH: Final = 255
_DEVICE_ALPHABET: Final = string.ascii_uppercase


def new_access_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """The stored form of ``token``: its SHA-256 digest."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_device_id() -> DeviceId:
    """Ten upper-case letters, as other servers generate (clients show them to people)."""
    return DeviceId("".join(secrets.choice(_DEVICE_ALPHABET) for _ in range(DEVICE_ID_LENGTH)))


def valid_device_id(device_id: str) -> bool:
    """A client-chosen device id: 1-255 printable ASCII characters without spaces."""
    return (
        0 < len(device_id) <= MAX_DEVICE_ID_LENGTH
        and device_id.isascii()
        and device_id.isprintable()
        and " " not in device_id
    )

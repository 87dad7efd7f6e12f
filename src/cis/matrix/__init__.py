"""The Matrix core: pure rules for room versions 10 and 11, no I/O.

- ``canonical_json``: the encoding, and the strict value domain (room versions ≥ 6).

Errors are in ``cis.matrix.errors``.
"""

from cis.matrix.errors import (
    AuthError,
    InvalidJson,
    InvalidPdu,
    MatrixError,
    MissingEvents,
    SignatureError,
    UnsupportedRoomVersion,
)
from cis.matrix.room_versions import DEFAULT_ROOM_VERSION, SUPPORTED_ROOM_VERSIONS

__all__ = [
    "DEFAULT_ROOM_VERSION",
    "SUPPORTED_ROOM_VERSIONS",
    "AuthError",
    "InvalidJson",
    "InvalidPdu",
    "MatrixError",
    "MissingEvents",
    "SignatureError",
    "UnsupportedRoomVersion",
]

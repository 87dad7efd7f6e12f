"""``NodeIdentity``: the node's Ed25519 key pair and every name derived from it.

The private part is the 32-byte seed, stored only inside ``node.db`` (see ``cis.storage``).
Signatures are Matrix signatures (``signedjson``: canonical JSON without ``signatures`` and
``unsigned``, signed under ``signatures[server_name]["ed25519:{pub_key_short}"]``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, cast

import nacl.signing
import signedjson.types
from signedjson.sign import sign_json

from cis.identity.did import did_cis, did_key_from_public_key, pub_key_short
from cis.identity.names import server_name_for, system_user_id, validate_node_name
from cis.ids import Did, DidKey, NodeId, ServerName, UserId

KEY_ALGORITHM = "ed25519"


def matrix_verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    """A verify key carrying the ``alg``/``version`` attributes ``signedjson`` reads.

    The version is the key's ``pub_key_short``, so the key id is ``ed25519:{pub_key_short}``.
    """
    key = nacl.signing.VerifyKey(public_key)
    key.alg = KEY_ALGORITHM  # type: ignore[attr-defined]
    key.version = pub_key_short(public_key)  # type: ignore[attr-defined]
    return key


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node's name and key pair. ``repr`` never shows the key."""

    node_id: NodeId
    signing_key: nacl.signing.SigningKey = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_node_name(self.node_id)
        # signedjson reads the key id from these attributes.
        self.signing_key.alg = KEY_ALGORITHM  # type: ignore[attr-defined]
        self.signing_key.version = self.pub_key_short  # type: ignore[attr-defined]

    @classmethod
    def generate(cls, node_id: str) -> NodeIdentity:
        return cls(validate_node_name(node_id), nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, node_id: str, seed: bytes) -> NodeIdentity:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed has 32 bytes")
        return cls(validate_node_name(node_id), nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        """The private seed; store it only in ``node.db``, never log it."""
        return bytes(self.signing_key)

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        """The public key, ready for ``signedjson.sign.verify_signed_json``."""
        return matrix_verify_key(self.public_key)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def pub_key_short(self) -> str:
        return pub_key_short(self.public_key)

    @property
    def did(self) -> Did:
        return did_cis(self.node_id, self.public_key)

    @property
    def did_key(self) -> DidKey:
        return did_key_from_public_key(self.public_key)

    @property
    def server_name(self) -> ServerName:
        return server_name_for(self.node_id)

    @property
    def key_id(self) -> str:
        """The Matrix key id of the server key, ``ed25519:{pub_key_short}``."""
        return f"{KEY_ALGORITHM}:{self.pub_key_short}"

    @property
    def system_user_id(self) -> UserId:
        return system_user_id(self.server_name)

    def sign(self, message: bytes) -> bytes:
        """A detached 64-byte Ed25519 signature."""
        return bytes(self.signing_key.sign(message).signature)

    def sign_json(self, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` with this node's Matrix signature added (``obj`` itself is left unchanged)."""
        key = cast(signedjson.types.SigningKey, self.signing_key)  # alg/version set above
        signed: dict[str, Any] = sign_json(copy.deepcopy(obj), self.server_name, key)
        return signed

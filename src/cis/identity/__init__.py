"""The node's identity: its name, Ed25519 key, DIDs and Matrix names.

- ``names``: node names (DNS labels), server names, Matrix user ids of this node.
- ``did``: ``did:cis:{node_id}:{pub_key_short}`` and ``did:key:z6Mk…``, both ways.
- ``keys``: ``NodeIdentity``, the key pair with everything derived from it, and signing.

Errors (``IdentityError`` and below) are in ``cis.identity.errors``.
"""

from cis.identity.did import (
    did_cis,
    did_key_from_public_key,
    parse_did,
    pub_key_short,
    public_key_from_did_key,
)
from cis.identity.errors import IdentityError, InvalidDid, InvalidName
from cis.identity.keys import NodeIdentity
from cis.identity.names import (
    node_name_from_hostname,
    server_name_for,
    system_user_id,
    validate_node_name,
)

__all__ = [
    "IdentityError",
    "InvalidDid",
    "InvalidName",
    "NodeIdentity",
    "did_cis",
    "did_key_from_public_key",
    "node_name_from_hostname",
    "parse_did",
    "pub_key_short",
    "public_key_from_did_key",
    "server_name_for",
    "system_user_id",
    "validate_node_name",
]

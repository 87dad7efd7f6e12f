"""Distinct types for the identifiers that cross module boundaries.

They are ``NewType``s over ``str``: free at run time, but mypy keeps a room id from being
passed where an event id is expected. Values are validated where they enter the node (the
parsers in ``cis.identity`` and ``cis.matrix``); the constructors here do not check.
"""

from typing import NewType

NodeId = NewType("NodeId", str)
"""A node's name, a DNS label such as ``munin-macmini`` (see ``cis.identity.names``)."""

ServerName = NewType("ServerName", str)
"""A node's Matrix server name: ``{node_id}.cis.local``."""

Did = NewType("Did", str)
"""``did:cis:{node_id}:{pub_key_short}``."""

DidKey = NewType("DidKey", str)
"""``did:key:z6Mk…``, the resolvable form of a node's Ed25519 key."""

UserId = NewType("UserId", str)
"""A Matrix user id, ``@localpart:server_name``."""

RoomId = NewType("RoomId", str)
"""A Matrix room id, ``!opaque:server_name``."""

EventId = NewType("EventId", str)
"""A Matrix event id; for room versions 10 and 11 ``$`` + URL-safe unpadded base64."""

DeviceId = NewType("DeviceId", str)
"""A Matrix device id, chosen by the client or generated at login."""

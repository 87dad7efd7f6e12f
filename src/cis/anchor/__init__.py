"""The anchor: a small registry through which nodes find each other (docs/anchor.md).

- ``records``: heartbeats and signed peers requests, built and checked the same way by all;
- ``app``: the HTTP API (``AnchorService`` + ``create_app``), ``server``: ``cis-node anchor``;
- ``client``: ``AnchorClient``, the node's heartbeat-and-poll loop (``Discovery`` the seam,
  ``StaticDiscovery`` its fake);
- the SQL is in ``cis.storage.anchor``.
"""

from cis.anchor.client import (
    AnchorClient,
    Discovery,
    PeersSnapshot,
    StaticDiscovery,
    dial_peers,
)
from cis.anchor.errors import AnchorError, AnchorRefused, ClockSkew, InvalidRecord
from cis.anchor.records import Heartbeat, anchor_name, build_heartbeat, parse_heartbeat

__all__ = [
    "AnchorClient",
    "AnchorError",
    "AnchorRefused",
    "ClockSkew",
    "Discovery",
    "Heartbeat",
    "InvalidRecord",
    "PeersSnapshot",
    "StaticDiscovery",
    "anchor_name",
    "build_heartbeat",
    "dial_peers",
    "parse_heartbeat",
]

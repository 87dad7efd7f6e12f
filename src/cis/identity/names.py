"""Node names and the Matrix names derived from them.

A node name is a DNS label (RFC 1035 §2.3.1, lower case only) and becomes the ``node_id``
verbatim; the node's Matrix server name is ``{node_id}.cis.local``, its users are
``@user:{node_id}.cis.local`` and its sovereign system user is ``@cis:{node_id}.cis.local``.
"""

from __future__ import annotations

import re
from typing import Final

from cis.identity.errors import InvalidName
from cis.ids import NodeId, ServerName, UserId

NODE_NAME_RE: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
SERVER_NAME_SUFFIX: Final = ".cis.local"
SYSTEM_USER_LOCALPART: Final = "cis"
_FALLBACK_NAME: Final = "cis-node"


def validate_node_name(name: str) -> NodeId:
    """Return ``name`` as a ``NodeId`` or raise ``InvalidName`` saying what is allowed."""
    if not NODE_NAME_RE.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise InvalidName(
            f"invalid node name {shown!r}: use 1-63 characters a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )
    return NodeId(name)


def node_name_from_hostname(hostname: str) -> NodeId:
    """Derive a valid node name from a host name (``Munin's MacMini.local`` → ``munin-s-macmini``).

    Takes the first label, lower-cases it, turns every other character into ``-``, collapses
    runs of ``-`` and trims to 63 characters; falls back to ``cis-node`` when nothing is left.
    """
    label = hostname.strip().split(".", 1)[0].lower()
    label = re.sub(r"[^a-z0-9]+", "-", label).strip("-")
    label = label[:63].rstrip("-")
    if not label or not NODE_NAME_RE.fullmatch(label):
        return NodeId(_FALLBACK_NAME)
    return NodeId(label)


def server_name_for(node_id: NodeId) -> ServerName:
    return ServerName(node_id + SERVER_NAME_SUFFIX)


def node_id_of_server_name(server_name: str) -> NodeId | None:
    """The node id of a CIS server name, or ``None`` if it is not one."""
    if not server_name.endswith(SERVER_NAME_SUFFIX):
        return None
    candidate = server_name[: -len(SERVER_NAME_SUFFIX)]
    return NodeId(candidate) if NODE_NAME_RE.fullmatch(candidate) else None


def user_id(localpart: str, server_name: ServerName) -> UserId:
    return UserId(f"@{localpart}:{server_name}")


def system_user_id(server_name: ServerName) -> UserId:
    """The node's sovereign user, which owns skill rooms and cannot log in."""
    return user_id(SYSTEM_USER_LOCALPART, server_name)

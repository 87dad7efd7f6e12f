"""Tunnel endpoints: the ``ws://`` / ``wss://`` URLs a node accepts tunnels on.

A node's endpoint is ``ws://HOST:PORT/_cis/federation/v1`` (``wss://`` behind TLS). A URL given
without a path gets that path (``--peer ws://HOST:PORT``). The same rules bound what a handshake
payload and an anchor heartbeat may advertise: at most 8 endpoints of at most 255 bytes each.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit, urlunsplit

from cis.federation.errors import FederationError

FEDERATION_PATH: Final = "/_cis/federation/v1"
MAX_ENDPOINTS: Final = 8
MAX_ENDPOINT_BYTES: Final = 255


class InvalidEndpoint(FederationError):
    """A string that is not a tunnel endpoint URL."""


def parse_endpoint(text: str) -> str:
    """``text`` as a tunnel endpoint (default path added); raises ``InvalidEndpoint``."""
    if len(text.encode("utf-8")) > MAX_ENDPOINT_BYTES:
        raise InvalidEndpoint(f"endpoint longer than {MAX_ENDPOINT_BYTES} bytes")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidEndpoint(f"not a ws:// or wss:// URL: {text[:80]!r}") from exc
    if parts.scheme not in ("ws", "wss") or not parts.hostname or port is None:
        raise InvalidEndpoint(f"not a ws://HOST:PORT[/path] or wss:// URL: {text[:80]!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidEndpoint(f"an endpoint has no query, fragment or user: {text[:80]!r}")
    path = parts.path or FEDERATION_PATH
    normalized = urlunsplit((parts.scheme, parts.netloc.lower(), path, "", ""))
    if len(normalized.encode("utf-8")) > MAX_ENDPOINT_BYTES:
        raise InvalidEndpoint(f"endpoint longer than {MAX_ENDPOINT_BYTES} bytes")
    return normalized


def check_endpoints(endpoints: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Check an advertised list: at most 8, each a valid URL as sent (already normalised)."""
    if len(endpoints) > MAX_ENDPOINTS:
        raise InvalidEndpoint(f"{len(endpoints)} endpoints advertised (max {MAX_ENDPOINTS})")
    for endpoint in endpoints:
        if parse_endpoint(endpoint) != endpoint:
            raise InvalidEndpoint(f"endpoint not in normal form: {endpoint[:80]!r}")
    return tuple(endpoints)

"""Running an anchor: ``serve`` is what ``cis-node anchor`` calls.

The listening socket is bound here (not by uvicorn) so that ``--listen 127.0.0.1:0`` works
and the real address is logged once, as ``anchor_listening url=…``. Proxy headers are
ignored: the observed IP is the TCP peer's, never a header a client could forge.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from cis.anchor.app import AnchorConfig, AnchorService, create_app
from cis.anchor.errors import AnchorError
from cis.clock import Clock
from cis.log import get_logger
from cis.storage.anchor import AnchorStore

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        """``HOST:PORT`` or ``[IPv6]:PORT``; raises ``AnchorError``."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise AnchorError(f"--listen wants HOST:PORT, not {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return cls(host, int(port))


def bind(listen: Listen) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(listen.host).version == 6 else 0
    except ValueError:
        family = 0
    if family == 0:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM)
        family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.host, listen.port))
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    listen: Listen,
    db: Path,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    clock: Clock | None = None,
    config: AnchorConfig | None = None,
) -> None:
    """Run the anchor until SIGINT/SIGTERM."""
    store = AnchorStore(db)
    store.open()
    try:
        service = AnchorService(store, clock, config)
        sock = bind(listen)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if tls_cert else "http"
        uvicorn_config = uvicorn.Config(
            create_app(service, prune_in_background=True),
            log_config=None,
            lifespan="on",
            proxy_headers=False,
            server_header=False,
            access_log=False,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
        )
        # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal under the
        # handler that was in place before it started: make those no-ops so a stop exits 0.
        previous = {
            sig: signal.signal(sig, lambda _sig, _frame: None)
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            log.info("anchor_listening", url=f"{scheme}://{shown}:{port}", db=str(db))
            uvicorn.Server(uvicorn_config).run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("anchor_stopped")
    finally:
        store.close()

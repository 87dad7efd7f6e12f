"""``cis-node sql serve``: one ``RaftDB`` with its HTTP and gRPC ports, as a process.

The composition root of the standalone service: it binds the HTTP and gRPC ports first (so that
the addresses registered in the cluster are the bound ones), starts the ``RaftDB``, serves until
SIGTERM or SIGINT, then closes the ports and stops the node. ``RaftDB`` itself knows nothing of
HTTP or gRPC, so a later issue can run it inside ``cis-node run``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cis.cluster.raftdb.auth import Users
from cis.cluster.raftdb.config import (
    RaftDBConfig,
    format_address,
    is_loopback_host,
    parse_address,
)
from cis.cluster.raftdb.db import RaftDB
from cis.cluster.raftdb.errors import ConfigError
from cis.cluster.raftdb.grpc_service import start_grpc_server
from cis.cluster.raftdb.http_api import RqliteApi
from cis.cluster.raftdb.http_server import HttpRequest, HttpResponse, HttpServer
from cis.log import get_logger

__all__ = ["ServeOptions", "serve"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config: RaftDBConfig
    http: str = "127.0.0.1:4001"
    grpc: str | None = None
    auth_file: Path | None = None
    fault_injection: bool = False


class _Dispatch:
    """The HTTP handler before and after the node has started."""

    def __init__(self) -> None:
        self.api: RqliteApi | None = None

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.api is None:
            if request.path == "/readyz":
                return HttpResponse(503, b"[-]node: starting\n", content_type="text/plain")
            return HttpResponse(503, b'{"error": "the node is starting"}')
        return await self.api(request)


def check_binds(options: ServeOptions) -> Users | None:
    """Refuse a non-loopback API address without ``--auth``; load the users file."""
    users = Users.load(options.auth_file) if options.auth_file is not None else None
    for what, addr in (("--http", options.http), ("--grpc", options.grpc)):
        if addr is None:
            continue
        host, _port = parse_address(addr, what)
        if not is_loopback_host(host) and users is None:
            raise ConfigError(
                f"{what} {addr} is not a loopback address: give --auth FILE (rqlite's user file)"
            )
    return users


async def serve(options: ServeOptions) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    users = check_binds(options)
    dispatch = _Dispatch()
    http = HttpServer(dispatch)
    http_host, http_port = parse_address(options.http, "--http")
    bound_host, bound_port = await http.start(http_host, http_port)
    http_addr = format_address(bound_host, bound_port)
    grpc_server: Any = None
    grpc_addr: str | None = None
    db_holder: list[RaftDB] = []
    try:
        config = dataclasses.replace(options.config, http_addr=http_addr)
        db = RaftDB(config)
        db_holder.append(db)
        if options.grpc is not None:
            grpc_host, grpc_port = parse_address(options.grpc, "--grpc")
            grpc_server, bound = await start_grpc_server(db, grpc_host, grpc_port, users)
            grpc_addr = format_address(grpc_host, bound)
            db.config = dataclasses.replace(db.config, grpc_addr=grpc_addr)
        await asyncio.to_thread(db.start)
        dispatch.api = RqliteApi(
            db,
            bind_addr=http_addr,
            users=users,
            fault_injection=options.fault_injection,
            grpc_addr=grpc_addr,
        )
        log.info(
            "sql_serving",
            node_id=config.node_id,
            raft=config.raft_addr,
            http=http_addr,
            grpc=grpc_addr or "-",
            data=str(config.data_dir),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("sql_stopping", node_id=config.node_id)
        return 0
    finally:
        await http.close()
        if dispatch.api is not None:
            await dispatch.api.close()
        if grpc_server is not None:
            await grpc_server.stop(grace=1.0)
        if db_holder:
            await asyncio.to_thread(db_holder[0].stop)

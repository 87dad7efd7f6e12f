"""``cis-node sql``: the replicated SQL service (docs/raftdb.md).

- ``serve``: run a node (its Raft, HTTP and optional gRPC ports);
- ``join``: run a node that asks the cluster to add it first (an empty data directory joins a
  cluster that holds data only this way; it catches up through a snapshot);
- ``remove``: ask the cluster to remove a member;
- ``status``: what a node's ``/status`` says;
- ``backup DEST``: a consistent copy of the database, through SQLite's backup API;
- ``init-secret FILE``: write a new cluster secret (32 random bytes, mode 0600).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from cis.cluster.raftdb.config import (
    DEFAULT_REQUEST_TIMEOUT_S,
    FAULT_ENV,
    Faults,
    RaftDBConfig,
    check_node_id,
    format_address,
    load_secret,
    parse_address,
    parse_peers,
    write_secret,
)
from cis.cluster.raftdb.errors import ConfigError, MembershipError
from cis.cluster.raftdb.membership import ask_any, reply_error
from cis.cluster.raftdb.server import ServeOptions, serve
from cis.log import configure_logging

F = TypeVar("F", bound=Callable[..., Any])

PASSWORD_ENV = "CIS_SQL_PASSWORD"  # noqa: S105 - a variable name, not a password


@click.group(name="sql")
def command() -> None:
    """Replicated SQL: Raft (pysyncobj) with SQLite as the state machine."""


def _address(value: str, what: str) -> str:
    host, port = parse_address(value, what)
    return format_address(host, port)


def _node_options(fn: F) -> F:
    options = [
        click.option("--id", "node_id", required=True, help="This node's id (stable)."),
        click.option("--raft", "raft", required=True, help="HOST:PORT the Raft port binds."),
        click.option(
            "--raft-advertise",
            "raft_advertise",
            default=None,
            help="HOST:PORT the other members know this node by (default: --raft).",
        ),
        click.option(
            "--peers",
            default="",
            help="ID@HOST:PORT,… of the other members (the bootstrap list).",
        ),
        click.option("--http", "http", default="127.0.0.1:4001", show_default=True),
        click.option("--grpc", "grpc", default=None, help="HOST:PORT for gRPC (off if unset)."),
        click.option(
            "--data",
            "data",
            required=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="Data directory (journal, snapshot, database).",
        ),
        click.option(
            "--auth",
            "auth",
            default=None,
            type=click.Path(dir_okay=False, path_type=Path),
            help="rqlite user file (required to bind HTTP/gRPC beyond loopback).",
        ),
        click.option(
            "--secret-file",
            "secret_file",
            default=None,
            type=click.Path(dir_okay=False, path_type=Path),
            help="Cluster secret (else $CIS_SQL_SECRET).",
        ),
        click.option(
            "--pause-before-commit-ms",
            "pause_ms",
            default=0,
            type=int,
            help="Fault injection: sleep after Raft commits an entry, before SQLite does.",
        ),
        click.option(
            "--no-journal-sync",
            "no_sync",
            is_flag=True,
            help="Do not fsync the Raft journal before acknowledging (faster, not durable).",
        ),
        click.option(
            "--request-timeout",
            "request_timeout",
            default=DEFAULT_REQUEST_TIMEOUT_S,
            type=float,
            show_default=True,
            help="Seconds a write or read waits for the cluster.",
        ),
        click.option(
            "--compaction-entries",
            "compaction_entries",
            default=5000,
            type=int,
            show_default=True,
            help="Snapshot and compact the log after this many entries.",
        ),
        click.option(
            "--fault-injection",
            "fault_injection",
            is_flag=True,
            help="Enable POST /_cis/partition (tests and scenario scripts only).",
        ),
        click.option(
            "--log-level",
            "log_level",
            default="info",
            show_default=True,
            type=click.Choice(["debug", "info", "warning", "error"]),
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run_node(join: bool, **kw: Any) -> int:
    configure_logging(kw["log_level"])
    raft = _address(kw["raft"], "--raft")
    advertise = _address(kw["raft_advertise"], "--raft-advertise") if kw["raft_advertise"] else raft
    config = RaftDBConfig(
        node_id=check_node_id(kw["node_id"]),
        raft_addr=advertise,
        raft_bind=raft,
        data_dir=kw["data"],
        secret=load_secret(kw["secret_file"]),
        peers=parse_peers(kw["peers"]),
        join=join,
        journal_sync=not kw["no_sync"],
        request_timeout_s=kw["request_timeout"],
        faults=Faults.parse(os.environ.get(FAULT_ENV), kw["pause_ms"]),
        compaction_min_entries=kw["compaction_entries"],
    )
    options = ServeOptions(
        config=config,
        http=_address(kw["http"], "--http"),
        grpc=_address(kw["grpc"], "--grpc") if kw["grpc"] else None,
        auth_file=kw["auth"],
        fault_injection=kw["fault_injection"],
    )
    return asyncio.run(serve(options))


@command.command("serve")
@_node_options
def serve_command(**kw: Any) -> int:
    """Run a node of the replicated SQL service."""
    return _run_node(False, **kw)


@command.command("join")
@_node_options
def join_command(**kw: Any) -> int:
    """Run a node that first asks the members in --peers to add it to the cluster."""
    return _run_node(True, **kw)


@command.command("remove")
@click.option("--id", "node_id", required=True, help="The member to remove.")
@click.option("--peers", required=True, help="ID@HOST:PORT,… of members to ask.")
@click.option(
    "--secret-file",
    "secret_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option("--timeout", default=30.0, type=float, show_default=True)
def remove_command(node_id: str, peers: str, secret_file: Path | None, timeout: float) -> int:
    """Remove a member from the cluster (membership change through the log)."""
    check_node_id(node_id)
    secret = load_secret(secret_file)
    addresses = list(parse_peers(peers).values())
    if not addresses:
        raise ConfigError("--peers names no member")
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            _address_used, reply = ask_any(secret, addresses, ["cis_remove", node_id])
        except MembershipError as exc:
            last = str(exc)
            time.sleep(0.5)
            continue
        error = reply_error(reply)
        if error is None:
            click.echo(f"removed node {node_id}")
            return 0
        last = error
        if not reply.get("retry"):
            break
        leader = reply.get("leader")
        if isinstance(leader, str) and leader not in addresses[:1]:
            addresses = [leader, *(a for a in addresses if a != leader)]
        time.sleep(0.5)
    raise MembershipError(f"could not remove node {node_id}: {last}")


def _http_client(user: str | None) -> httpx.Client:
    auth = None
    if user is not None:
        password = os.environ.get(PASSWORD_ENV)
        if not password:
            raise ConfigError(f"--user needs the password in ${PASSWORD_ENV}")
        auth = httpx.BasicAuth(user, password)
    return httpx.Client(auth=auth, trust_env=False, timeout=30.0)


def _get(client: httpx.Client, url: str) -> httpx.Response:
    try:
        return client.get(url)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {url.split('?', 1)[0]}: {exc}") from exc


@command.command("status")
@click.option("--http", "http", default="127.0.0.1:4001", show_default=True)
@click.option("--user", default=None, help=f"Basic-auth user (password in ${PASSWORD_ENV}).")
@click.option("--json", "as_json", is_flag=True, help="Print /status as JSON.")
def status_command(http: str, user: str | None, as_json: bool) -> int:
    """Show what a node's /status says."""
    with _http_client(user) as client:
        reply = _get(client, f"http://{_address(http, '--http')}/status")
    if reply.status_code != 200:
        raise ConfigError(f"/status answered HTTP {reply.status_code}")
    status = reply.json()
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return 0
    store = status["store"]
    raft = store["raft"]
    leader = store["leader"]
    click.echo(f"node       {store['node_id']}  raft {store['addr']}  {raft['state']}")
    click.echo(f"leader     {leader['node_id'] or '-'}  {leader['addr'] or '-'}")
    click.echo(
        f"raft       term {raft['term']}  commit {raft['commit_index']}"
        f"  applied {raft['applied_index']}  snapshot {raft['snapshot_index']}"
    )
    click.echo(f"sqlite     {store['sqlite_version']}  ready {store['ready']}")
    if store.get("failed"):
        click.echo(f"failed     {store['failed']}")
    for node in store["nodes"]:
        click.echo(f"member     {node['id']}  {node['addr']}  {node['api_addr']}")
    return 0


@command.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--http", "http", default="127.0.0.1:4001", show_default=True)
@click.option("--user", default=None, help=f"Basic-auth user (password in ${PASSWORD_ENV}).")
def backup_command(dest: Path, http: str, user: str | None) -> int:
    """Write a consistent copy of the database to DEST (with its applied index)."""
    with _http_client(user) as client:
        reply = _get(client, f"http://{_address(http, '--http')}/db/backup")
    if reply.status_code != 200:
        raise ConfigError(f"/db/backup answered HTTP {reply.status_code}: {reply.text[:200]}")
    tmp = dest.with_name(f".{dest.name}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, reply.content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dest)
    applied = reply.headers.get("x-cis-applied-index", "?")
    click.echo(f"backup written to {dest} (applied index {applied})")
    return 0


@command.command("init-secret")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing file.")
def init_secret_command(path: Path, force: bool) -> int:
    """Write a new cluster secret (32 random bytes as hex) to PATH with mode 0600."""
    write_secret(path, force=force)
    click.echo(f"wrote a new cluster secret to {path}")
    return 0

"""Configuration of a replicated SQL node, parsed and checked before anything starts.

The cluster secret is the only thing between the Raft port and ``pickle.loads``: pysyncobj
decrypts every message with a Fernet key derived from it (PBKDF2 with a fixed salt, so the
secret itself must carry the entropy) and then unpickles it. We therefore require at least 32
random bytes, written by ``cis-node sql init-secret`` as 64 hex digits into a file of mode 0600,
and refuse a file that others can read. The secret is never logged nor put in a ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cis.cluster.raftdb.errors import ConfigError
from cis.cluster.raftdb.raft import RaftTimings

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT_S",
    "Faults",
    "RaftDBConfig",
    "is_loopback_host",
    "load_secret",
    "parse_address",
    "parse_peers",
    "write_secret",
]

SECRET_ENV: Final = "CIS_SQL_SECRET"  # noqa: S105 - a variable name
FAULT_ENV: Final = "CIS_SQL_FAULT"
MIN_SECRET_BYTES: Final = 32
DEFAULT_REQUEST_TIMEOUT_S: Final = 10.0
_NODE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX: Final = re.compile(r"^[0-9a-fA-F]+$")
_B64URL: Final = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


def check_node_id(value: str) -> str:
    if not _NODE_ID.match(value):
        raise ConfigError(
            f"bad node id {value!r}: 1-64 characters from A-Z a-z 0-9 . _ -, starting with a"
            " letter or digit"
        )
    return value


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) with a literal IP or ``localhost``."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{what}: {host!r} is not an IP address (or localhost)") from None
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what}: bad port {port_text!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{what}: port {port} out of range")
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_peers(text: str | None) -> dict[str, str]:
    """``ID@HOST:PORT,…`` → ``{id: "host:port"}``."""
    peers: dict[str, str] = {}
    if not text:
        return peers
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        node_id, sep, addr = item.partition("@")
        if not sep:
            raise ConfigError(f"--peers: expected ID@HOST:PORT, got {item!r}")
        check_node_id(node_id)
        host, port = parse_address(addr, "--peers")
        if node_id in peers:
            raise ConfigError(f"--peers: node id {node_id} appears twice")
        peers[node_id] = format_address(host, port)
    if len(set(peers.values())) != len(peers):
        raise ConfigError("--peers: two peers share an address")
    return peers


def _check_secret_text(text: str, where: str) -> str:
    text = text.strip()
    if _HEX.match(text) and len(text) % 2 == 0:
        raw_len = len(text) // 2
    elif _B64URL.match(text):
        raw_len = len(text.rstrip("=")) * 3 // 4
    else:
        raise ConfigError(f"{where}: the secret must be hex or base64url text")
    if raw_len < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{where}: the secret must hold at least {MIN_SECRET_BYTES} random bytes"
            " (cis-node sql init-secret writes one)"
        )
    if len(set(text)) < 8:
        raise ConfigError(f"{where}: the secret does not look random")
    return text


def load_secret(file: Path | None, env: Mapping[str, str] | None = None) -> str:
    """The cluster secret from ``file`` (mode 0600, ours) or ``$CIS_SQL_SECRET``."""
    environ = os.environ if env is None else env
    if file is not None:
        try:
            info = file.stat()
        except OSError as exc:
            raise ConfigError(f"cannot read the secret file {file}: {exc.strerror}") from exc
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"the secret file {file} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"the secret file {file} is readable by others (mode"
                f" {stat.S_IMODE(info.st_mode):o}); chmod 600 it"
            )
        try:
            text = file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the secret file {file}") from exc
        return _check_secret_text(text, str(file))
    value = environ.get(SECRET_ENV)
    if value:
        return _check_secret_text(value, SECRET_ENV)
    raise ConfigError(
        f"no cluster secret: pass --secret-file FILE or set {SECRET_ENV}"
        " (cis-node sql init-secret FILE creates one)"
    )


def write_secret(path: Path, *, force: bool = False) -> None:
    """Write 32 random bytes as 64 hex digits to ``path`` with mode 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; pass --force to replace it") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secrets.token_hex(MIN_SECRET_BYTES) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault injection (``--pause-before-commit-ms``, ``$CIS_SQL_FAULT``); off by default.

    ``CIS_SQL_FAULT`` is a comma-separated list of:

    - ``exit_before_apply:N``: exit with status 137 after the first entry whose index is ≥ N
      is committed by Raft and executed, before its SQLite transaction commits;
    - ``exit_in_compaction``: exit with 137 in the middle of a log compaction (new journal
      written, not yet renamed into place);
    - ``exit_in_snapshot``: exit with 137 after a snapshot file is written, before it replaces
      the previous one;
    - ``max_page_count:N``: cap the database at N pages, so that applying fails with
      SQLITE_FULL exactly as on a full disk.
    """

    pause_before_commit_ms: int = 0
    exit_before_apply: int | None = None
    exit_in_compaction: bool = False
    exit_in_snapshot: bool = False
    max_page_count: int | None = None

    @classmethod
    def parse(cls, text: str | None, pause_before_commit_ms: int = 0) -> Faults:
        if pause_before_commit_ms < 0 or pause_before_commit_ms > 600_000:
            raise ConfigError("--pause-before-commit-ms must be between 0 and 600000")
        exit_before: int | None = None
        in_compaction = in_snapshot = False
        pages: int | None = None
        for raw in (text or "").split(","):
            item = raw.strip()
            if not item:
                continue
            name, _, value = item.partition(":")
            if name == "exit_before_apply":
                exit_before = _positive(value, item)
            elif name == "exit_in_compaction" and not value:
                in_compaction = True
            elif name == "exit_in_snapshot" and not value:
                in_snapshot = True
            elif name == "max_page_count":
                pages = _positive(value, item)
            else:
                raise ConfigError(f"{FAULT_ENV}: unknown fault {item!r}")
        return cls(pause_before_commit_ms, exit_before, in_compaction, in_snapshot, pages)

    @property
    def any(self) -> bool:
        return self != Faults()


def _positive(value: str, item: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{FAULT_ENV}: {item!r} needs a positive integer") from None
    if number <= 0:
        raise ConfigError(f"{FAULT_ENV}: {item!r} needs a positive integer")
    return number


@dataclass(frozen=True, slots=True)
class RaftDBConfig:
    """Everything a ``RaftDB`` needs; see docs/raftdb.md for each setting."""

    node_id: str
    raft_addr: str
    """This node's Raft identity, ``host:port``, as the other members know it."""
    data_dir: Path
    secret: str = field(repr=False)
    peers: Mapping[str, str] = field(default_factory=dict)
    """The other members at bootstrap, ``{id: "host:port"}``; the log's membership wins later."""
    raft_bind: str | None = None
    """Where the Raft port binds; defaults to ``raft_addr``."""
    http_addr: str | None = None
    grpc_addr: str | None = None
    join: bool = False
    journal_sync: bool = True
    timings: RaftTimings = field(default_factory=RaftTimings)
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    faults: Faults = field(default_factory=Faults)
    compaction_min_entries: int = 5000
    compaction_min_time_s: float = 300.0

    def __post_init__(self) -> None:
        check_node_id(self.node_id)
        host, port = parse_address(self.raft_addr, "--raft")
        if format_address(host, port) != self.raft_addr:
            raise ConfigError(f"--raft: write the address as {format_address(host, port)}")
        if self.raft_bind is not None:
            parse_address(self.raft_bind, "--raft bind")
        if self.node_id in self.peers:
            raise ConfigError(f"--peers lists this node's own id {self.node_id}")
        if self.raft_addr in self.peers.values():
            raise ConfigError("--peers lists this node's own Raft address")
        if not 0.1 <= self.request_timeout_s <= 600:
            raise ConfigError("the request timeout must be between 0.1 and 600 seconds")
        if self.compaction_min_entries < 16:
            raise ConfigError("compaction needs at least 16 entries")

    @property
    def bind(self) -> str:
        return self.raft_bind or self.raft_addr

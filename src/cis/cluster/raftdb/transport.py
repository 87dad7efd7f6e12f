"""pysyncobj's TCP transport with the additions the service needs.

- **Bounded frames.** pysyncobj reads everything a socket offers into one buffer before it looks
  at the 4-byte length prefix, so a peer (or anyone, before the handshake) could make it buffer
  without limit. Our connection class checks each frame's declared length as bytes arrive and
  drops the connection at the first prefix above ``MAX_FRAME_BYTES`` (64 MiB) or below zero.
- **Fsync before acknowledging.** Before a follower acknowledges entries (``next_node_idx``) or a
  leader replicates them (``append_entries``), the journal is synced (``Journal.sync``), so an
  entry counts towards a majority only once it is on disk (when syncing is on).
- **Partitions.** A drop table of peer addresses: messages to and from them are dropped (the
  TCP connections stay up, so pysyncobj's own reconnect logic is not what is tested). Used by
  the fault-injection endpoint of the scenario scripts; pysyncobj refuses connections from
  addresses it does not know, so a proxy in front of it could not do this.
- **The gate.** While closed, every Raft message is dropped but utility messages (``cis_info``,
  answered by the service) still work: an empty node uses it to ask its peers whether the
  cluster already holds data before it takes part in any election.
- **Raft's truncation rule.** pysyncobj truncates a follower's log after ``prevLogIdx`` on
  *every* ``append_entries`` whose ``prevLogIdx`` is below its last index, even when the entries
  match. A leader sends such messages routinely (it moves ``nextIndex`` back on a late
  acknowledgement), so a follower regularly dropped entries it had already acknowledged: if
  the leader then died, a new leader could be elected without entries that were committed.
  ``normalize_append_entries`` rewrites each incoming message so that pysyncobj truncates only
  at a real conflict (Raft §5.3: "If an existing entry conflicts with a new one (same index but
  different terms), delete the existing entry and all that follow it"), never acknowledges
  more than the message proved to match, and never commits past that point.
- **Contact times** per peer, for ``freshness`` on ``none`` reads.
- **Encryption.** pysyncobj's Fernet (AES-CBC + HMAC, key from PBKDF2 with a fixed salt) costs
  ~120 µs per message and direction here; ``AeadEncryptor`` is a drop-in with AES-256-GCM
  (~7 µs), its key derived from the cluster secret by HKDF-SHA256. pysyncobj's handshake
  (random per-connection keys inside the encrypted messages) and its per-connection timestamp
  check are kept; a message whose tag does not verify drops the connection before unpickling.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.tcp_server import TcpServer
from pysyncobj.transport import TCPTransport

from cis.log import get_logger

__all__ = [
    "MAX_FRAME_BYTES",
    "AeadEncryptor",
    "CisTransport",
    "LogView",
    "normalize_append_entries",
]

log = get_logger(__name__)

MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
_LENGTH: Final = struct.Struct("i")  # pysyncobj's prefix: native int, as tcp_connection.py packs it
_SYNC_BEFORE: Final = frozenset({"append_entries", "next_node_idx"})


_TOKEN_HEAD: Final = struct.Struct(">4sQ12s")  # magic, timestamp, nonce
_TOKEN_MAGIC: Final = b"CIS1"


class AeadEncryptor:
    """pysyncobj's encryptor interface (``encrypt_at_time``, ``extract_timestamp``,
    ``decrypt``) over AES-256-GCM. Token: ``"CIS1" | u64 time | 12-byte nonce | sealed``, the
    header authenticated as associated data."""

    def __init__(self, secret: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"cis-raftdb",
            info=b"pysyncobj transport, AES-256-GCM, v1",
        ).derive(secret.encode())
        self._aead = AESGCM(key)

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        head = _TOKEN_HEAD.pack(_TOKEN_MAGIC, current_time, os.urandom(12))
        return head + self._aead.encrypt(head[-12:], data, head)

    def extract_timestamp(self, token: bytes) -> int:
        magic, stamp, _nonce = _TOKEN_HEAD.unpack_from(token, 0)
        if magic != _TOKEN_MAGIC:
            raise InvalidTag
        return int(stamp)

    def decrypt(self, token: bytes) -> bytes:
        head = bytes(token[: _TOKEN_HEAD.size])
        return self._aead.decrypt(head[-12:], bytes(token[_TOKEN_HEAD.size :]), head)


class LogView(Protocol):
    """What ``normalize_append_entries`` reads of the follower's log."""

    @property
    def first_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    def term_at(self, index: int) -> int | None: ...


def normalize_append_entries(
    message: dict[str, Any], log_view: LogView
) -> tuple[dict[str, Any], int | None]:
    """Rewrite an ``append_entries`` so pysyncobj applies Raft's rules (module docstring).

    Returns the message to hand to pysyncobj and, when its reply would acknowledge more than
    the message proved, the ``next_node_idx`` the reply must carry instead.
    """
    if "prevLogIdx" not in message or message.get("transmission") is not None:
        return message, None
    prev = message["prevLogIdx"]
    last = log_view.last_index
    if not isinstance(prev, int) or prev >= last or prev < log_view.first_index:
        return message, None
    if log_view.term_at(prev) != message.get("prevLogTerm"):
        return message, None  # pysyncobj answers the mismatch itself
    entries = list(message.get("entries") or [])
    matched = 0
    for entry in entries:
        index, term = entry[1], entry[2]
        if index > last or log_view.term_at(index) != term:
            break
        matched += 1
    new = dict(message)
    if matched == len(entries):
        # Everything sent is already here: nothing to truncate. Point pysyncobj at our last
        # entry (so it keeps the tail), but acknowledge and commit only what was proved.
        proved = prev + len(entries)
        new["prevLogIdx"] = last
        new["prevLogTerm"] = log_view.term_at(last)
        new["entries"] = []
        new["commit_index"] = min(int(message.get("commit_index", 0)), proved)
        return new, (proved + 1 if proved < last else None)
    # The first entry that is new or conflicts: pysyncobj truncates from there (a real
    # conflict) or simply appends (past our last entry).
    anchor = prev + matched
    new["prevLogIdx"] = anchor
    new["prevLogTerm"] = log_view.term_at(anchor)
    new["entries"] = entries[matched:]
    return new, None


class BoundedTcpConnection(TcpConnection):  # type: ignore[misc]
    """A ``TcpConnection`` that refuses a frame longer than ``MAX_FRAME_BYTES``."""

    def _TcpConnection__processRead(self) -> bool:
        more = bool(TcpConnection._TcpConnection__processRead(self))
        buffer: bytes = self._TcpConnection__readBuffer
        pos = 0
        while len(buffer) - pos >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, pos)
            if length < 0 or length > MAX_FRAME_BYTES:
                log.warning("raft_frame_refused", declared_bytes=length)
                self.disconnect()
                return False
            if len(buffer) - pos - _LENGTH.size < length:
                break
            pos += _LENGTH.size + length
        return more


class _BoundedTcpServer(TcpServer):  # type: ignore[misc]
    """A ``TcpServer`` whose accepted connections are ``BoundedTcpConnection``."""

    def _TcpServer__onNewConnection(self, descr: int, event: int) -> None:
        if event & POLL_EVENT_TYPE.READ:
            try:
                sock, _addr = self._TcpServer__socket.accept()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self.unbind()
                return
            send_size = self._TcpServer__sendBufferSize
            recv_size = self._TcpServer__recvBufferSize
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_size)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = BoundedTcpConnection(
                poller=self._TcpServer__poller,
                socket=sock,
                timeout=self._TcpServer__connectionTimeout,
                sendBufferSize=send_size,
                recvBufferSize=recv_size,
                keepalive=self._TcpServer__keepalive,
            )
            self._TcpServer__onNewConnectionCallback(conn)
        if event & POLL_EVENT_TYPE.ERROR:
            self.unbind()


class CisTransport(TCPTransport):  # type: ignore[misc]
    """See the module docstring. Runs in pysyncobj's tick thread only, except the setters."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        self._dropped: frozenset[str] = frozenset()
        self._gated = bool(getattr(syncObj, "_cis_gated", False))
        self._sync: Callable[[], None] = getattr(syncObj, "_cis_sync", None) or (lambda: None)
        self._log_view: LogView | None = getattr(syncObj, "_cis_log_view", None)
        self._ack_override: dict[str, int] = {}
        self.last_contact: dict[str, float] = {}
        super().__init__(syncObj, selfNode, otherNodes)

    # ------------------------------------------------------------------ controls (any thread)

    def set_dropped(self, addresses: frozenset[str]) -> None:
        self._dropped = addresses

    @property
    def dropped(self) -> frozenset[str]:
        return self._dropped

    def open_gate(self) -> None:
        self._gated = False

    @property
    def gated(self) -> bool:
        return self._gated

    # ------------------------------------------------------------------ pysyncobj hooks

    def _createServer(self) -> None:
        conf = self._syncObj.conf
        host, port = conf.bindAddress.rsplit(":", 1)
        self._server = _BoundedTcpServer(
            self._syncObj._poller,
            host,
            port,
            onNewConnection=self._onNewIncomingConnection,
            sendBufferSize=conf.sendBufferSize,
            recvBufferSize=conf.recvBufferSize,
            connectionTimeout=conf.connectionTimeout,
        )

    def addNode(self, node: Any) -> None:
        # As TCPTransport.addNode, with the bounded connection class.
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        if self._shouldConnect(node):
            conf = self._syncObj.conf
            conn = BoundedTcpConnection(
                poller=self._syncObj._poller,
                timeout=conf.connectionTimeout,
                sendBufferSize=conf.sendBufferSize,
                recvBufferSize=conf.recvBufferSize,
                keepalive=conf.tcp_keepalive,
            )
            conn.encryptor = self._syncObj.encryptor
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        address = getattr(node, "address", None)
        if self._gated or (address is not None and address in self._dropped):
            return
        if address is not None:
            self.last_contact[address] = time.monotonic()
            if (
                self._log_view is not None
                and isinstance(message, dict)
                and message.get("type") == "append_entries"
            ):
                message, ack = normalize_append_entries(message, self._log_view)
                if ack is not None:
                    self._ack_override[address] = ack
        super()._onMessageReceived(node, message)
        if address is not None:
            self._ack_override.pop(address, None)

    def send(self, node: Any, message: Any) -> bool:
        if self._gated:
            return False
        address = getattr(node, "address", None)
        if address is not None and address in self._dropped:
            return False
        if isinstance(message, dict) and message.get("type") in _SYNC_BEFORE:
            self._sync()
            if address is not None and message.get("type") == "next_node_idx":
                ack = self._ack_override.pop(address, None)
                if ack is not None and message.get("success"):
                    message = dict(message, next_node_idx=ack)
        return bool(super().send(node, message))

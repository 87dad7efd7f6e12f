"""``RaftDB``: replicated SQLite on pysyncobj, embeddable in any asyncio process.

Threads and what each owns::

    caller's event loop ──execute()/query()──► Proposer ──► pysyncobj queue
         ▲   (reads run here, on this thread's read-only connection)      │
         │                                                              tick thread
         │ one wake-up per batch of completions                  (Raft, network, journal)
         │                                                               │ committed entries
         └──────────── applier thread ◄──────── SimpleQueue ◄────────────┘
                       (the only SQLite writer)

- **Writes** go to the proposer, which groups whatever is pending into one log entry while the
  previous one is in flight (group commit without a batching delay: an idle node proposes at
  once). A follower's entries travel to the leader through pysyncobj's forwarding. Every entry
  carries a batch id; a failed proposal (leader change) is proposed again with the same id until
  its deadline, and the state machine applies each id at most once.
- **Reads** at ``linearizable`` wait for a *read barrier*: a no-op entry proposed through the log
  and applied here; one barrier serves every read that arrived before it was proposed, and
  reads arriving meanwhile share the next one (at most one barrier in flight). Since the
  barrier is committed by a quorum in the leader's current term after the read began, and the
  read runs once everything up to it is applied, the read sees every write acknowledged before
  it started: linearizable, also on a deposed leader (whose barrier never commits: the read
  fails after its timeout instead of returning stale data). ``strong`` is the same with a
  barrier of its own. ``weak`` reads the leader's state once it has applied the commit index it
  knows, if it believes it is leader; ``none`` reads whatever this node has.
- **Snapshots** are written by a background thread (SQLite's backup API) and handed to
  pysyncobj through ``serializeChecker``; installing one pauses the applier.

Failure policy: an apply that fails for a reason outside the SQL halts the node (``failed`` is
set, Raft stops, nothing is skipped); a snapshot that cannot be written or loaded, or a journal
that cannot be written, ends the process (``on_fatal``), since going on could diverge.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import heapq
import itertools
import json
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pysyncobj import FAIL_REASON
from pysyncobj import pickle as sync_pickle
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.poller import POLL_EVENT_TYPE

from cis.cluster.raftdb.config import RaftDBConfig, check_node_id, parse_address
from cis.cluster.raftdb.errors import (
    ConfigError,
    MembershipError,
    NodeFailed,
    NoLeader,
    NotLeader,
    RaftDBError,
    ReadUnavailable,
    RefusedStatement,
    StatementError,
    UnknownOutcome,
)
from cis.cluster.raftdb.journal import Journal, JournalError, fsync_dir
from cis.cluster.raftdb.membership import ask, ask_any, reply_error
from cis.cluster.raftdb.raft import MAX_ENTRY_BYTES, MemberNode, RaftNode, make_conf
from cis.cluster.raftdb.state import (
    ApplyHalted,
    Batch,
    Outcome,
    Reader,
    Request,
    SharedCaches,
    StateMachine,
    read_snapshot_header,
)
from cis.cluster.raftdb.statements import ReadLevel, Statement, StatementResult
from cis.log import get_logger

__all__ = ["NodeInfo", "RaftDB"]

log = get_logger(__name__)

STATE_FILE: Final = "state.db"
JOURNAL_FILE: Final = "raft.journal"
SNAPSHOT_FILE: Final = "raft.snapshot"
IDENTITY_FILE: Final = "node.json"
EXIT_FATAL: Final = 70
EXIT_FAULT: Final = 137

_RAFT_STATES: Final = {0: "Follower", 1: "Candidate", 2: "Leader"}
_RETRY_SOON: Final = frozenset(
    {FAIL_REASON.LEADER_CHANGED, FAIL_REASON.DISCARDED, FAIL_REASON.UNKNOWN_OUTCOME}
)
# A forwarded command whose leader changed, or whose response came too late, may still be in
# the log; every other failure (no leader, queue full, not leader, denied, discarded) means
# that attempt was not, or will never be, applied.
_MAYBE_APPENDED: Final = frozenset({FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME})
_FAIL_NAMES: Final = {
    value: name.lower()
    for name, value in vars(FAIL_REASON).items()
    if not name.startswith("_") and isinstance(value, int)
}
_TICK_WAIT_S: Final = 0.05
_STATUS_EVERY_S: Final = 0.02
_HOUSEKEEPING_EVERY_S: Final = 0.05

Completion = Callable[[object], None]
"""Called once, from any thread, with a result or an exception instance."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A member as the node registry (replicated) knows it."""

    node_id: str
    raft_addr: str
    http_addr: str | None = None
    grpc_addr: str | None = None
    sqlite_version: str | None = None


@dataclass(slots=True)
class _PendingRequest:
    request: Request
    deadline: float
    done: Completion
    size: int
    resolved: bool = False


@dataclass(slots=True)
class _PendingBatch:
    batch: Batch
    requests: list[_PendingRequest]
    wire: tuple[str, int, tuple[object, ...]]
    attempts: int = 0
    open_attempts: int = 0  # handed to pysyncobj, no callback yet (may be in some log)
    maybe_appended: bool = False  # an attempt was forwarded and its fate is unknown
    committed: bool = False  # an attempt was committed: it will be applied


@dataclass(slots=True)
class _ReadWaiter:
    deadline: float
    done: Completion
    resolved: bool = False
    proposed: bool = False  # set before the barrier it waits on is handed to pysyncobj
    sink: _LoopSink | None = None  # the event loop that waits, if any


@dataclass(slots=True)
class _LoopReads:
    """The reads of one event loop that wait for the same (not yet proposed) barrier."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[object]
    waiter: _ReadWaiter


@dataclass(slots=True)
class _SnapshotJob:
    raft_index: int
    header: dict[str, object]
    finished: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Status:
    """What the tick thread last saw; read by other threads without locks."""

    state: str = "Follower"
    term: int = 0
    commit_index: int = 0
    last_applied: int = 0
    leader_addr: str | None = None
    first_log_index: int = 0
    last_log_index: int = 0
    members: tuple[str, ...] = ()
    connected: tuple[str, ...] = ()
    has_quorum: bool = False


class _LoopSink:
    """Delivers completions to one event loop with one wake-up per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[tuple[asyncio.Future[Any] | None, object]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, future: asyncio.Future[Any], value: object) -> None:
        with self._lock:
            self._items.append((future, value))
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(self._drain)

    def post_after(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop after the tasks woken by what was posted before it."""
        with self._lock:
            self._items.append((None, fn))
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._scheduled = False
        for future, value in items:
            if future is None:
                self.loop.call_soon(value)  # type: ignore[arg-type]
                continue
            if future.done():
                continue
            if isinstance(value, BaseException):
                future.set_exception(value)
            else:
                future.set_result(value)


def _entry_to_json(entry: tuple[bytes, int, int]) -> list[object]:
    return [base64.b64encode(bytes(entry[0])).decode(), int(entry[1]), int(entry[2])]


def _entry_from_json(value: object) -> tuple[bytes, int, int]:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError("bad entry in snapshot header")
    cmd, idx, term = value
    return (base64.b64decode(str(cmd)), int(idx), int(term))


class RaftDB:
    """A replicated SQLite database; see the module docstring and docs/raftdb.md.

    Lifecycle: ``start()`` (blocking, from any thread), then the ``async`` methods from any
    event loop, then ``stop()``. ``on_fatal`` is called (from some internal thread) when the
    process must end rather than risk diverging; by default it calls ``os._exit(70)``.
    """

    def __init__(
        self,
        config: RaftDBConfig,
        *,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.raft_addr = config.raft_addr
        self.data_dir = config.data_dir
        self._on_fatal = on_fatal or _exit_fatal
        self._caches = SharedCaches()
        self._readers = threading.local()
        self._all_readers: list[Reader] = []
        self._resolve_lock = threading.Lock()
        self._read_waiters: dict[int, _ReadWaiter] = {}
        self._inflight_batch: str | None = None
        self._sinks: dict[int, _LoopSink] = {}
        self._loop_reads: dict[int, _LoopReads] = {}
        self._lock = threading.RLock()
        self._state: StateMachine | None = None
        self._node: RaftNode | None = None
        self._journal: Journal | None = None
        self._status = _Status()
        self._applied = 0
        self._applied_lock = threading.Lock()
        self._applied_waiters: list[tuple[int, int, Callable[[], None]]] = []
        self._waiter_seq = itertools.count()
        self._apply_queue: queue.SimpleQueue[tuple[str, int, object]] = queue.SimpleQueue()
        self._pending: dict[str, _PendingBatch] = {}
        self._proposals: deque[_PendingRequest] = deque()
        self._retry_heap: list[tuple[float, int, str]] = []
        self._batch_seq = itertools.count(1)
        self._boot_id = secrets.token_hex(6)
        self._barrier_inflight = False
        self._barrier_next: list[_ReadWaiter] = []
        self._barrier_retry_at: float | None = None
        self._barrier_kick_since: float | None = None
        self._registry: dict[str, NodeInfo] = {}
        self._registering = False
        self._init_proposed = False
        self._snapshot_job: _SnapshotJob | None = None
        self._snapshot_index = 0
        self._failed: str | None = None
        self._stopping = threading.Event()
        self._tick_thread: threading.Thread | None = None
        self._applier_thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._started_at = time.time()
        self._last_watermark = 0
        self._enqueued_upto = 0  # the last index handed to the applier (tick thread only)
        self._wake_r = self._wake_w = -1

    # ================================================================== lifecycle

    def start(self) -> None:
        """Open the data directory, bind the Raft port and start the threads.

        Raises ``ConfigError`` when the directory belongs to another node or process, the
        secret is refused by the members (``join``), or the SQLite version differs from the
        cluster's.
        """
        try:
            self._start()
        except BaseException:
            # Leave nothing behind: the caller may start another RaftDB on the same directory.
            if self._node is not None and self._tick_thread is None:
                self._node.destroy()
            if self._journal is not None:
                self._journal.close()
            if self._state is not None:
                self._state.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise

    def _start(self) -> None:
        cfg = self.config
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_data_dir()
        self._check_identity()
        self._state = StateMachine(
            self.data_dir / STATE_FILE,
            caches=self._caches,
            max_page_count=cfg.faults.max_page_count,
        )
        state = self._state
        if state.cluster_sqlite_version not in (None, state.sqlite_version):
            raise ConfigError(
                f"this node has SQLite {state.sqlite_version} but the cluster runs"
                f" {state.cluster_sqlite_version}; replicas must run the same version"
            )
        self._applied = state.applied_index
        self._enqueued_upto = state.applied_index
        self._reload_registry()
        snapshot_path = self.data_dir / SNAPSHOT_FILE
        self._journal = Journal(
            self.data_dir / JOURNAL_FILE, sync=cfg.journal_sync, fault_hook=self._fault_point
        )
        empty = (
            state.applied_index == 0
            and self._journal.last_index <= 1
            and not snapshot_path.exists()
        )
        if cfg.join and empty:
            members = self._join_cluster()
        else:
            members = self._initial_members(snapshot_path)
        gated = empty and not cfg.join and bool(cfg.peers)
        conf = make_conf(
            bind=cfg.bind,
            journal_file=str(self.data_dir / JOURNAL_FILE),
            dump_file=str(snapshot_path),
            timings=cfg.timings,
            serializer=self._serialize,
            deserializer=self._deserialize,
            serialize_checker=self._serialize_checker,
            on_state_changed=self._on_state_changed,
            compaction_min_entries=cfg.compaction_min_entries,
            compaction_min_time=cfg.compaction_min_time_s,
        )
        try:
            self._node = RaftNode(
                self.raft_addr,
                members,
                conf,
                self,
                journal=self._journal,
                secret=cfg.secret,
                gated=gated,
            )
        except Exception as exc:
            raise ConfigError(f"cannot start Raft on {cfg.bind}: {exc}") from exc
        # pysyncobj commits, at the start of a tick, what was acknowledged before it, and a
        # tick ends by polling its sockets. With no other member no acknowledgement ever ends
        # that poll, so a lone node answered each write only after the 50 ms poll timeout:
        # just before the poll, wake it when appended entries wait for commit.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._node._poller.subscribe(self._wake_r, self._drain_wake, POLL_EVENT_TYPE.READ)
        self._node.addOnTickCallback(self._before_poll)
        transport = self._node.transport
        transport.setOnUtilityMessageCallback("cis_info", self._utility_info)
        transport.setOnUtilityMessageCallback("cis_join", self._utility_join)
        transport.setOnUtilityMessageCallback("cis_remove", self._utility_remove)
        for name in ("add", "remove", "set_version"):  # membership goes through cis_* only
            transport.setOnUtilityMessageCallback(name, None)
        self._applier_thread = threading.Thread(
            target=self._applier_loop, name=f"raftdb-apply-{self.node_id}", daemon=True
        )
        self._tick_thread = threading.Thread(
            target=self._tick_loop, name=f"raftdb-tick-{self.node_id}", daemon=True
        )
        self._applier_thread.start()
        self._tick_thread.start()
        if gated:
            threading.Thread(
                target=self._preflight, name=f"raftdb-preflight-{self.node_id}", daemon=True
            ).start()
        log.info(
            "raftdb_started",
            node_id=self.node_id,
            raft=self.raft_addr,
            members=",".join(members),
            applied_index=state.applied_index,
            journal_sync=cfg.journal_sync,
            gated=gated,
        )

    def stop(self) -> None:
        """Stop the threads, release the data directory. Pending calls fail with NodeFailed."""
        self._stopping.set()
        if self._tick_thread is not None:
            self._tick_thread.join(timeout=10)
        self._apply_queue.put(("stop", 0, None))
        if self._applier_thread is not None:
            self._applier_thread.join(timeout=30)
        self._fail_everything(NodeFailed("the node is stopping"))
        with self._lock:
            readers = list(self._all_readers)
            self._all_readers.clear()
        for reader in readers:
            reader.close()
        if self._state is not None:
            self._state.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        log.info("raftdb_stopped", node_id=self.node_id)

    def _lock_data_dir(self) -> None:
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"{self.data_dir} is in use by another process") from None
        self._lock_fd = fd

    def _check_identity(self) -> None:
        path = self.data_dir / IDENTITY_FILE
        mine = {"node_id": self.node_id, "raft_addr": self.raft_addr}
        if path.exists():
            try:
                theirs = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from exc
            if theirs != mine:
                raise ConfigError(
                    f"{self.data_dir} belongs to node {theirs.get('node_id')} at"
                    f" {theirs.get('raft_addr')}, not {self.node_id} at {self.raft_addr}"
                )
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(mine), encoding="utf-8")
        os.replace(tmp, path)
        fsync_dir(self.data_dir)

    def _initial_members(self, snapshot_path: Path) -> list[str]:
        """The other members: the snapshot's, then the log's changes; else ``--peers``."""
        assert self._journal is not None
        members: set[str]
        start_after = 0
        if snapshot_path.exists():
            header = read_snapshot_header(snapshot_path, verify=False)
            cluster = header.data.get("cluster")
            if not isinstance(cluster, list):
                raise ConfigError(f"{snapshot_path}: no membership in the snapshot")
            members = {str(a) for a in cluster}
            start_after = header.raft_index
        else:
            members = {self.raft_addr, *self.config.peers.values()}
        for command, index, _term in self._journal:
            if index <= start_after or command[:1] != b"\x02":
                continue
            change = sync_pickle.loads(command[1:])
            if isinstance(change, list) and len(change) >= 2 and change[0] in ("add", "rem"):
                address = str(change[1])
                if change[0] == "add":
                    members.add(address)
                else:
                    members.discard(address)
        members.discard(self.raft_addr)
        return sorted(members)

    def _join_cluster(self) -> list[str]:
        """Ask a member to add this node; returns the members to start with."""
        cfg = self.config
        if not cfg.peers:
            raise ConfigError("join needs --peers: the members to ask")
        assert self._state is not None
        deadline = time.monotonic() + max(30.0, cfg.request_timeout_s * 3)
        command = ["cis_join", self.node_id, self.raft_addr, self._state.sqlite_version]
        last_error = "no answer"
        while time.monotonic() < deadline:
            try:
                address, reply = ask_any(cfg.secret, cfg.peers.values(), command)
            except MembershipError as exc:
                last_error = str(exc)
                time.sleep(0.5)
                continue
            error = reply_error(reply)
            if error is None:
                members = reply.get("members")
                if not isinstance(members, list):
                    raise ConfigError(f"{address} sent no member list")
                log.info("raftdb_joined", via=address, members=",".join(map(str, members)))
                return sorted({str(m) for m in members} - {self.raft_addr})
            if reply.get("retry"):
                last_error = error
                time.sleep(0.5)
                continue
            raise ConfigError(f"the cluster refused to add this node: {error}")
        raise ConfigError(f"could not join the cluster: {last_error}")

    def _preflight(self) -> None:
        """Empty data directory, not joining: learn whether the cluster already has data.

        Runs while the transport is gated (no Raft traffic). Opens the gate once a member says
        the cluster is empty too (a bootstrap); ends the process if it holds data.
        """
        cfg = self.config
        while not self._stopping.is_set():
            for address in cfg.peers.values():
                try:
                    reply = ask(cfg.secret, address, ["cis_info"], timeout=2.0)
                except MembershipError:
                    continue
                if reply.get("has_data"):
                    message = (
                        f"this node's data directory is empty but the cluster (member {address},"
                        f" applied index {reply.get('applied_index')}) already holds data;"
                        " add this node with `cis-node sql join`"
                    )
                    self._fatal(message)
                    return
                if self._node is not None:
                    self._node.transport.open_gate()
                log.info("raftdb_gate_opened", asked=address)
                return
            self._stopping.wait(0.5)

    # ================================================================== tick thread

    def _tick_loop(self) -> None:
        node = self._node
        assert node is not None
        last_status = 0.0
        last_housekeeping = 0.0
        errors = 0
        try:
            while not self._stopping.is_set() and self._failed is None:
                try:
                    node.doTick(_TICK_WAIT_S)
                    errors = 0
                except JournalError as exc:
                    self._fatal(f"the Raft journal failed: {exc}")
                    return
                except Exception:
                    errors += 1
                    log.exception("raftdb_tick_failed", consecutive=errors)
                    time.sleep(_TICK_WAIT_S)
                applied = node.raftLastApplied
                if applied > self._last_watermark:
                    self._last_watermark = applied
                    if not self._advance_inline(applied):
                        self._apply_queue.put(("watermark", applied, None))
                now = time.monotonic()
                if now - last_status >= _STATUS_EVERY_S:
                    last_status = now
                    self._refresh_status(node)
                if now - last_housekeeping >= _HOUSEKEEPING_EVERY_S:
                    last_housekeeping = now
                    self._housekeeping(now)
        finally:
            try:
                node.destroy()
            except Exception:
                log.exception("raftdb_destroy_failed")

    def _before_poll(self) -> None:
        node = self._node
        if node is None or self._status.members or not node._isLeader():
            return
        if node.log_bounds()[1] > node.raftCommitIndex:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"w")

    def _drain_wake(self, _fd: int, _events: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _refresh_status(self, node: RaftNode) -> None:
        leader = node._getLeader()
        first, last = node.log_bounds()
        members = tuple(sorted(n.address for n in node.otherNodes))
        connected = tuple(a for a in members if node.isNodeConnected(MemberNode(a)))
        self._status = _Status(
            state=_RAFT_STATES.get(node.raft_state(), "Follower"),
            term=int(node.raftCurrentTerm),
            commit_index=int(node.raftCommitIndex),
            last_applied=int(node.raftLastApplied),
            leader_addr=leader.address if leader is not None else None,
            first_log_index=first,
            last_log_index=last,
            members=members,
            connected=connected,
            has_quorum=bool(node.hasQuorum),
        )

    def _housekeeping(self, now: float) -> None:
        """Tick thread: retries, deadlines, registration, cluster init."""
        self._expire(now)
        due: list[str] = []
        with self._lock:
            while self._retry_heap and self._retry_heap[0][0] <= now:
                due.append(heapq.heappop(self._retry_heap)[2])
        for batch_id in due:
            self._retry(batch_id)
        if self._barrier_retry_at is not None and self._barrier_retry_at <= now:
            self._barrier_retry_at = None
            self._start_barrier_if_waiting()
        kick_since = self._barrier_kick_since
        if kick_since is not None and now - kick_since > 0.2:
            self._kick_barrier()  # the loop that should have proposed it is gone or stuck
        status = self._status
        if status.leader_addr is None or self._node is None or self._node.transport.gated:
            return
        state = self._state
        assert state is not None
        if status.state == "Leader" and state.cluster_id is None and not self._init_proposed:
            self._init_proposed = True
            self._node._service(
                "init",
                (secrets.token_hex(8), state.sqlite_version),
                callback=self._on_init_done,
            )
        mine = NodeInfo(
            self.node_id,
            self.raft_addr,
            self.config.http_addr,
            self.config.grpc_addr,
            state.sqlite_version,
        )
        if self._registry.get(self.node_id) != mine and not self._registering:
            self._registering = True
            self._node._service(
                "register",
                (self.node_id, self.raft_addr, mine.http_addr, mine.grpc_addr, mine.sqlite_version),
                callback=self._on_registered,
            )

    def _on_init_done(self, _res: object, err: int) -> None:
        if err != FAIL_REASON.SUCCESS:
            self._init_proposed = False

    def _on_registered(self, _res: object, err: int) -> None:
        self._registering = False

    def _on_state_changed(self, old: int, new: int) -> None:
        log.info(
            "raftdb_raft_state",
            node_id=self.node_id,
            state=_RAFT_STATES.get(new, str(new)),
            was=_RAFT_STATES.get(old, str(old)),
        )
        if new != 2:
            self._init_proposed = False

    # ------------------------------------------------------------------ replicated bodies

    def on_entry(self, index: int, payload: object) -> None:
        self._enqueued_upto = index
        self._apply_queue.put(("entry", index, payload))

    def on_barrier(self, index: int) -> int:
        # A barrier changes nothing: when the applier has nothing left to do it is applied
        # here and now, which spares a thread hand-off per barrier (per batch of reads).
        if not self._advance_inline(index):
            self._enqueued_upto = index
            self._apply_queue.put(("barrier", index, None))
        return index

    def on_service(self, index: int, op: str, args: tuple[object, ...]) -> None:
        self._enqueued_upto = index
        self._apply_queue.put(("service", index, (op, args)))

    def _advance_inline(self, index: int) -> bool:
        """Tick thread: mark ``index`` applied if every entry before it is (applier idle)."""
        ready: list[Callable[[], None]] = []
        with self._applied_lock:
            if self._enqueued_upto > self._applied or self._failed is not None:
                return False
            self._applied = max(self._applied, index)
            heap = self._applied_waiters
            while heap and heap[0][0] <= self._applied:
                ready.append(heapq.heappop(heap)[2])
        for fn in ready:
            fn()
        return True

    # ================================================================== applier thread

    def _applier_loop(self) -> None:
        state = self._state
        assert state is not None
        while True:
            kind, index, payload = self._apply_queue.get()
            if kind == "stop":
                return
            if self._failed is not None:
                continue
            try:
                if kind == "entry":
                    self._apply_entry(state, index, payload)
                elif kind == "service":
                    self._apply_service(state, index, payload)
            except ApplyHalted as exc:
                self._halt(str(exc))
                continue
            except Exception as exc:
                log.exception("raftdb_apply_bug", index=index)
                self._halt(f"applying entry {index} failed: {type(exc).__name__}: {exc}")
                continue
            self._advance_applied(index)

    def _apply_entry(self, state: StateMachine, index: int, payload: object) -> None:
        if index <= state.applied_index:
            return  # replayed after a restart: already in the database
        try:
            batch = Batch.from_wire(payload)
        except StatementError as exc:
            # Deterministic on every replica: recorded as applied, with no effect.
            log.error("raftdb_malformed_entry", index=index, error=str(exc))
            state.apply_meta(index, "invalid", ())
            return
        with self._lock:
            mine = batch.batch_id in self._pending
        result = state.apply_batch(index, batch, self._before_commit, results=mine)
        if result.outcome is Outcome.SKIPPED:
            return
        with self._lock:
            pending = self._pending.pop(batch.batch_id, None)
        if pending is None:
            return
        self._release_slot(batch.batch_id)
        if result.outcome is Outcome.APPLIED:
            for req, res in zip(pending.requests, result.results, strict=True):
                self._resolve(req, list(res))
        else:
            for req in pending.requests:
                self._resolve(req, UnknownOutcome("applied before; its results are not kept"))

    def _apply_service(self, state: StateMachine, index: int, payload: object) -> None:
        if not isinstance(payload, tuple) or len(payload) != 2:
            state.apply_meta(index, "invalid", ())
            return
        op, args = payload
        if not isinstance(op, str) or not isinstance(args, tuple):
            state.apply_meta(index, "invalid", ())
            return
        refusal = state.apply_meta(index, op, args, self._before_commit)
        if refusal:
            log.error("raftdb_service_entry_refused", index=index, reason=refusal)
        if op in ("register", "forget"):
            self._reload_registry()
        if state.cluster_sqlite_version not in (None, state.sqlite_version):
            raise ApplyHalted(
                f"this node has SQLite {state.sqlite_version} but the cluster runs"
                f" {state.cluster_sqlite_version}; replicas must run the same version"
            )

    def _before_commit(self, index: int) -> None:
        """Between Raft's commit and SQLite's: the fault-injection point of seed 004."""
        faults = self.config.faults
        if faults.pause_before_commit_ms:
            time.sleep(faults.pause_before_commit_ms / 1000)
        if faults.exit_before_apply is not None and index >= faults.exit_before_apply:
            self._fault_exit(f"exit_before_apply at index {index}")

    def _fault_point(self, name: str) -> None:
        if name == "compaction_written" and self.config.faults.exit_in_compaction:
            self._fault_exit("exit_in_compaction")

    def _fault_exit(self, what: str) -> None:
        log.warning("raftdb_fault_exit", fault=what, status=EXIT_FAULT)
        for handler in __import__("logging").getLogger().handlers:
            handler.flush()
        os._exit(EXIT_FAULT)

    def _advance_applied(self, index: int) -> None:
        ready: list[Callable[[], None]] = []
        with self._applied_lock:
            self._applied = max(self._applied, index)
            heap = self._applied_waiters
            while heap and heap[0][0] <= self._applied:
                ready.append(heapq.heappop(heap)[2])
        for fn in ready:
            fn()

    def _when_applied(self, index: int, fn: Callable[[], None]) -> None:
        """Call ``fn`` (from the applier thread, or now) once ``index`` is applied here."""
        with self._applied_lock:
            if self._applied < index:
                heapq.heappush(self._applied_waiters, (index, next(self._waiter_seq), fn))
                return
        fn()

    def _halt(self, reason: str) -> None:
        if self._failed is not None:
            return
        self._failed = reason
        log.error("raftdb_node_halted", node_id=self.node_id, reason=reason)
        self._fail_everything(NodeFailed(f"node {self.node_id} stopped: {reason}"))

    def _fatal(self, reason: str) -> None:
        self._failed = reason
        log.error("raftdb_fatal", node_id=self.node_id, reason=reason)
        self._on_fatal(reason)

    def _fail_everything(self, error: RaftDBError) -> None:
        with self._lock:
            pendings = list(self._pending.values())
            self._pending.clear()
            proposals = list(self._proposals)
            self._proposals.clear()
            self._barrier_next = []
        with self._resolve_lock:
            waiters = list(self._read_waiters.values())
        for pending in pendings:
            for req in pending.requests:
                self._resolve(req, error)
        for req in proposals:
            self._resolve(req, error)
        for waiter in waiters:
            self._resolve_read(waiter, error)
        with self._applied_lock:
            stuck = [fn for _, _, fn in self._applied_waiters]
            self._applied_waiters = []
        for fn in stuck:
            fn()

    def _reload_registry(self) -> None:
        state = self._state
        assert state is not None
        with state._lock:  # the writer connection; we are in the applier thread or starting
            state._auth.user = False
            rows = state._conn.execute(
                "SELECT node_id, raft_addr, http_addr, grpc_addr, sqlite_version FROM _cis_nodes"
            ).fetchall()
        self._registry = {str(r[0]): NodeInfo(str(r[0]), str(r[1]), r[2], r[3], r[4]) for r in rows}

    # ================================================================== snapshots

    def _serialize(self, tmp_file: str, raft_data: Any) -> None:
        """pysyncobj's serializer (tick thread): start writing a snapshot in the background.

        pysyncobj renames ``tmp_file`` over the dump file right after this returns; we leave no
        such file, so that rename fails harmlessly, and our checker puts the finished snapshot
        in place (in the tick thread, so it cannot race with a snapshot being installed).
        """
        try:
            Path(tmp_file).unlink(missing_ok=True)
            last, prev, cluster = raft_data
            header: dict[str, object] = {
                "raft_index": int(last[1]),
                "last": _entry_to_json(last),
                "prev": _entry_to_json(prev),
                "cluster": sorted(n.address for n in cluster),
            }
            job = _SnapshotJob(int(last[1]), header)
        except Exception as exc:
            job = _SnapshotJob(0, {}, error=f"bad Raft data: {exc}")
            job.finished.set()
            self._snapshot_job = job
            return
        self._snapshot_job = job
        threading.Thread(
            target=self._write_snapshot, args=(job,), name="raftdb-snapshot", daemon=True
        ).start()

    def _write_snapshot(self, job: _SnapshotJob) -> None:
        state = self._state
        assert state is not None
        try:
            caught_up = threading.Event()
            self._when_applied(job.raft_index, caught_up.set)
            while not caught_up.wait(0.5):
                if self._failed is not None or self._stopping.is_set():
                    raise ApplyHalted("the node stopped before the snapshot")
            partial = self.data_dir / (SNAPSHOT_FILE + ".partial")
            started = time.monotonic()
            applied = state.write_snapshot(partial, job.header)
            log.info(
                "raftdb_snapshot_written",
                raft_index=job.raft_index,
                applied_index=applied,
                bytes=partial.stat().st_size,
                seconds=round(time.monotonic() - started, 3),
            )
        except Exception as exc:
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.finished.set()

    def _serialize_checker(self) -> int:
        job = self._snapshot_job
        if job is None:
            return int(SERIALIZER_STATE.NOT_SERIALIZING)
        if not job.finished.is_set():
            return int(SERIALIZER_STATE.SERIALIZING)
        self._snapshot_job = None
        if job.error is not None:
            self._fatal(f"cannot write a snapshot: {job.error}")
            return int(SERIALIZER_STATE.FAILED)
        if self.config.faults.exit_in_snapshot:
            self._fault_exit("exit_in_snapshot")
        partial = self.data_dir / (SNAPSHOT_FILE + ".partial")
        try:
            os.replace(partial, self.data_dir / SNAPSHOT_FILE)
            fsync_dir(self.data_dir)
        except OSError as exc:
            self._fatal(f"cannot put the snapshot in place: {exc}")
            return int(SERIALIZER_STATE.FAILED)
        self._snapshot_index = job.raft_index
        return int(SERIALIZER_STATE.SUCCESS)

    def _deserialize(self, file_name: str) -> Any:
        """pysyncobj's deserializer (tick thread): at start-up and when a snapshot arrives."""
        state = self._state
        assert state is not None
        try:
            path = Path(file_name)
            header = read_snapshot_header(path)
            if header.data.get("sqlite_version") not in (None, state.sqlite_version):
                raise ConfigError(
                    f"the snapshot was made with SQLite {header.data.get('sqlite_version')},"
                    f" this node has {state.sqlite_version}"
                )
            if state.install_snapshot(path):
                self._reload_registry()
            cluster = header.data.get("cluster")
            if not isinstance(cluster, list):
                raise ValueError("no cluster in the snapshot")
            self._snapshot_index = max(self._snapshot_index, header.raft_index)
            return (
                _entry_from_json(header.data.get("last")),
                _entry_from_json(header.data.get("prev")),
                {MemberNode(str(a)) for a in cluster},
            )
        except Exception as exc:
            # pysyncobj would log and carry on with whatever state it has: never that.
            self._fatal(f"cannot load the snapshot {file_name}: {exc}")
            raise

    # ================================================================== proposals (writes)

    def _submit(self, request: Request, size: int, timeout_s: float, done: Completion) -> None:
        pending = _PendingRequest(request, time.monotonic() + timeout_s, done, size)
        with self._lock:
            self._proposals.append(pending)
            batch = self._take_batch_locked() if self._inflight_batch is None else None
        if batch is not None:
            self._send_attempt(batch)

    def _claim(self, req: _PendingRequest) -> bool:
        """Mark ``req`` resolved; True for the one caller that gets to answer it."""
        with self._resolve_lock:
            if req.resolved:
                return False
            req.resolved = True
            return True

    def _take_batch_locked(self) -> _PendingBatch | None:
        """Group what is queued into one entry (holding ``self._lock``); counts its attempt."""
        now = time.monotonic()
        requests: list[_PendingRequest] = []
        size = 0
        while self._proposals:
            req = self._proposals[0]
            if req.resolved:
                self._proposals.popleft()
                continue
            if req.deadline <= now:
                self._proposals.popleft()
                if self._claim(req):
                    req.done(NoLeader("not proposed in time: the write was not applied"))
                continue
            cost = req.size
            if requests and size + cost > MAX_ENTRY_BYTES:
                break
            self._proposals.popleft()
            requests.append(req)
            size += cost
        if not requests:
            return None
        batch = Batch(
            f"{self._boot_id}-{next(self._batch_seq)}",
            int(time.time() * 1000),
            tuple(r.request for r in requests),
        )
        pending = _PendingBatch(batch, requests, batch.to_wire(), attempts=1, open_attempts=1)
        self._pending[batch.batch_id] = pending
        self._inflight_batch = batch.batch_id
        return pending

    def _release_slot(self, batch_id: str) -> None:
        """The in-flight entry is answered, applied or expired: propose what queued since."""
        with self._lock:
            if self._inflight_batch != batch_id:
                return
            self._inflight_batch = None
            nxt = self._take_batch_locked()
        if nxt is not None:
            self._send_attempt(nxt)

    def _send_attempt(self, pending: _PendingBatch) -> None:
        """Hand one attempt (already counted in ``open_attempts``) to pysyncobj."""
        node = self._node
        if node is None or self._failed is not None:
            with self._lock:
                pending.open_attempts -= 1
            return
        node._entry(
            pending.wire,
            callback=lambda _res, err, p=pending: self._on_batch_done(p, err),
        )

    def _retry(self, batch_id: str) -> None:
        """Tick thread: propose a batch again, with the same id (applied at most once)."""
        with self._lock:
            pending = self._pending.get(batch_id)
            if pending is None or all(r.resolved for r in pending.requests):
                return
            pending.attempts += 1
            pending.open_attempts += 1
        self._send_attempt(pending)

    def _on_batch_done(self, pending: _PendingBatch, err: int) -> None:
        """pysyncobj's answer to one attempt (tick thread, or the caller's at once)."""
        batch_id = pending.batch.batch_id
        if err != FAIL_REASON.SUCCESS:
            log.debug("raftdb_proposal_failed", batch=batch_id, reason=_FAIL_NAMES.get(err, err))
        with self._lock:
            pending.open_attempts -= 1
            if err == FAIL_REASON.SUCCESS:
                pending.committed = True  # the applier answers once it has applied it
            elif err in _MAYBE_APPENDED:
                pending.maybe_appended = True
            if err != FAIL_REASON.SUCCESS and batch_id in self._pending:
                delay = 0.01 if err in _RETRY_SOON else 0.05
                heapq.heappush(
                    self._retry_heap, (time.monotonic() + delay, next(self._waiter_seq), batch_id)
                )
        self._release_slot(batch_id)

    def _expire(self, now: float) -> None:
        """Tick thread: answer requests past their deadline, and reads past theirs.

        A write is reported as not applied (``NoLeader``) only when every attempt came back
        with an answer that rules it out; otherwise its outcome is unknown.
        """
        notify: list[tuple[_PendingRequest, RaftDBError]] = []
        finished: list[str] = []
        with self._lock:
            for batch_id, pending in list(self._pending.items()):
                due = [r for r in pending.requests if not r.resolved and r.deadline <= now]
                live = any(not r.resolved and r.deadline > now for r in pending.requests)
                if not due and live:
                    continue
                # Not applied for certain only if the batch is abandoned now (no retry can
                # follow) and every attempt came back with an answer that rules it out.
                definite = not live and not (
                    pending.maybe_appended or pending.open_attempts > 0 or pending.committed
                )
                for req in due:
                    error: RaftDBError = (
                        NoLeader("no leader in time: the write was not applied")
                        if definite
                        else UnknownOutcome(
                            "no result in time: the write may or may not have been applied"
                        )
                    )
                    if self._claim(req):
                        notify.append((req, error))
                if not live:
                    del self._pending[batch_id]
                    finished.append(batch_id)
            queued: deque[_PendingRequest] = deque()
            for req in self._proposals:
                if req.resolved:
                    continue
                if req.deadline <= now:
                    if self._claim(req):
                        notify.append(
                            (req, NoLeader("not proposed in time: the write was not applied"))
                        )
                else:
                    queued.append(req)
            self._proposals = queued
        for req, error in notify:
            req.done(error)
        for batch_id in finished:
            self._release_slot(batch_id)
        with self._resolve_lock:
            waiting = list(self._read_waiters.values())
        for waiter in waiting:
            if not waiter.resolved and waiter.deadline <= now:
                self._resolve_read(
                    waiter,
                    ReadUnavailable(
                        "no quorum confirmed the read in time: refusing to serve it"
                        if self._status.leader_addr is not None
                        else "no leader: a linearizable read cannot be served"
                    ),
                )

    def _resolve(self, req: _PendingRequest, value: object) -> None:
        if self._claim(req):
            req.done(value)

    # ================================================================== read barriers

    def _read_barrier(self, waiter: _ReadWaiter, *, shared: bool) -> None:
        with self._resolve_lock:
            self._read_waiters[id(waiter)] = waiter
        if not shared:
            self._propose_barrier([waiter])
            return
        with self._lock:
            self._barrier_next.append(waiter)
            if self._barrier_inflight:
                return
            self._barrier_inflight = True
            group = self._barrier_next
            self._barrier_next = []
        self._propose_barrier(group, shared=True)

    def _propose_barrier(self, group: list[_ReadWaiter], *, shared: bool = False) -> None:
        node = self._node
        if node is None:
            for waiter in group:
                self._resolve_read(waiter, NodeFailed("the node is not running"))
            return
        for waiter in group:  # before proposing: a read that sees False is not too late
            waiter.proposed = True
        propose = node._barrier if node._isLeader() else node._relayed_barrier
        propose(callback=lambda res, err, g=group, s=shared: self._on_barrier_done(g, s, res, err))

    def _on_barrier_done(
        self, group: list[_ReadWaiter], shared: bool, res: object, err: int
    ) -> None:
        """A barrier came back (tick thread): release its reads, propose the next one.

        When every read waiting for the next barrier belongs to one event loop, the next
        barrier is proposed *by that loop*, after it has answered the reads just released: the
        reads that arrive meanwhile join it, so under load a barrier serves more reads (each
        barrier costs several messages and ticks on every node).
        """
        deferred: _LoopSink | None = None
        nxt: list[_ReadWaiter] = []
        if shared:
            with self._lock:
                waiting = self._barrier_next
                sinks = {w.sink for w in waiting}
                if waiting and len(sinks) == 1 and None not in sinks:
                    deferred = waiting[0].sink
                    self._barrier_kick_since = time.monotonic()  # stays "in flight"
                else:
                    nxt = waiting
                    self._barrier_next = []
                    self._barrier_inflight = bool(nxt)
            if nxt:
                self._propose_barrier(nxt, shared=True)
        live = [w for w in group if not w.resolved]
        if err == FAIL_REASON.SUCCESS and isinstance(res, int):
            index = res

            def release() -> None:
                for waiter in live:
                    self._resolve_read(waiter, index)
                if deferred is not None:
                    deferred.post_after(self._kick_barrier)

            self._when_applied(index, release)
            return
        if deferred is not None:
            deferred.post_after(self._kick_barrier)
        if not live:
            return
        # Not confirmed (no leader, leader changed): wait for a later barrier, until deadlines.
        with self._lock:
            self._barrier_next[:0] = live
        self._barrier_retry_at = time.monotonic() + (0.01 if err in _RETRY_SOON else 0.05)

    def _kick_barrier(self) -> None:
        """Propose the barrier the waiting reads share (a deferred hand-over, see above)."""
        with self._lock:
            self._barrier_kick_since = None
            group = self._barrier_next
            self._barrier_next = []
            self._barrier_inflight = bool(group)
        if group:
            self._propose_barrier(group, shared=True)

    def _start_barrier_if_waiting(self) -> None:
        with self._lock:
            if self._barrier_inflight or not self._barrier_next:
                return
            self._barrier_inflight = True
            group = self._barrier_next
            self._barrier_next = []
        self._propose_barrier(group, shared=True)

    def _resolve_read(self, waiter: _ReadWaiter, value: object) -> None:
        with self._resolve_lock:
            if waiter.resolved:
                return
            waiter.resolved = True
            self._read_waiters.pop(id(waiter), None)
        waiter.done(value)

    # ================================================================== the async API

    def _sink(self) -> _LoopSink:
        loop = asyncio.get_running_loop()
        sink = self._sinks.get(id(loop))
        if sink is None or sink.loop is not loop:
            sink = _LoopSink(loop)
            self._sinks[id(loop)] = sink
        return sink

    def reader(self) -> Reader:
        """This thread's read-only connection."""
        reader: Reader | None = getattr(self._readers, "reader", None)
        if reader is None:
            reader = Reader(self.data_dir / STATE_FILE, self._caches)
            self._readers.reader = reader
            with self._lock:
                self._all_readers.append(reader)
        return reader

    def _check_serving(self) -> None:
        if self._failed is not None:
            raise NodeFailed(f"node {self.node_id} stopped: {self._failed}")
        if self._node is None or self._stopping.is_set():
            raise NodeFailed(f"node {self.node_id} is not running")

    def check_statements(self, statements: Sequence[Statement]) -> list[bool]:
        """Classify each statement (True: it writes) and refuse what may not enter the log."""
        reader = self.reader()
        out = []
        for i, stmt in enumerate(statements):
            verdict = reader.classify(stmt)
            if verdict.refused is not None:
                raise RefusedStatement(f"statement {i + 1}: {verdict.refused}")
            out.append(verdict.writes)
        return out

    async def execute(
        self,
        statements: Sequence[Statement],
        *,
        transaction: bool = False,
        timeout_s: float | None = None,
        client_key: str | None = None,
        checked: bool = False,
    ) -> list[StatementResult]:
        """Apply ``statements`` through the log; one result per statement (errors included).

        Raises ``RefusedStatement`` before proposing anything the log must not carry,
        ``NoLeader`` when no leader took it in time, ``UnknownOutcome`` when it was proposed
        but no result came back in time, ``NodeFailed`` when this node has stopped.
        """
        self._check_serving()
        if not checked:
            self.check_statements(statements)
        if client_key is not None and not (0 < len(client_key) <= 200):
            raise StatementError("a request key must be 1-200 characters")
        request = Request.of(
            statements, transaction, None if client_key is None else f"c:{client_key}"
        )
        size = _estimate_size(request)
        if size > MAX_ENTRY_BYTES:
            raise StatementError(f"the request is larger than {MAX_ENTRY_BYTES} bytes")
        future: asyncio.Future[list[StatementResult]] = asyncio.get_running_loop().create_future()
        sink = self._sink()
        self._submit(
            request,
            size,
            timeout_s if timeout_s is not None else self.config.request_timeout_s,
            lambda value: sink.post(future, value),
        )
        return await future

    async def query(
        self,
        statements: Sequence[Statement],
        *,
        level: ReadLevel = ReadLevel.WEAK,
        timeout_s: float | None = None,
        freshness: float | None = None,
    ) -> list[StatementResult]:
        """Read at ``level`` (docs/raftdb.md gives each level's staleness bound).

        ``weak`` on a follower raises ``NotLeader`` (the HTTP service forwards such reads);
        ``linearizable`` and ``strong`` work on any node and raise ``ReadUnavailable`` rather
        than answer when no quorum confirms them in time.
        """
        self._check_serving()
        wait = timeout_s if timeout_s is not None else self.config.request_timeout_s
        await self.read_fence(level, timeout_s=wait, freshness=freshness)
        return self.reader().query(statements, timeout_s=wait)

    async def read_fence(
        self,
        level: ReadLevel,
        *,
        timeout_s: float | None = None,
        freshness: float | None = None,
    ) -> None:
        """Wait until a read at ``level`` may run on this node's state."""
        wait = timeout_s if timeout_s is not None else self.config.request_timeout_s
        if level is ReadLevel.NONE:
            if freshness is not None:
                self._check_freshness(freshness)
            return
        if level is ReadLevel.WEAK:
            node = self._node
            assert node is not None
            if not node._isLeader():
                leader = self.leader()
                raise NotLeader("not the leader", leader.node_id if leader is not None else None)
            commit = int(node.raftCommitIndex)
            if self._applied >= commit:
                return
            await self._wait_applied(commit, wait)
            return
        loop = asyncio.get_running_loop()
        if level is ReadLevel.STRONG:
            future: asyncio.Future[object] = loop.create_future()
            sink = self._sink()
            waiter = _ReadWaiter(time.monotonic() + wait, lambda value: sink.post(future, value))
            self._read_barrier(waiter, shared=False)
            await future
            return
        # The reads of this loop that arrive before the next barrier is proposed share one
        # future (and one waiter in the barrier group). A read that finds the group already
        # proposed starts a new one: the barrier it waits for is proposed after it arrived.
        group = self._loop_reads.get(id(loop))
        if group is None or group.loop is not loop or group.waiter.proposed or group.future.done():
            shared: asyncio.Future[object] = loop.create_future()
            sink = self._sink()
            waiter = _ReadWaiter(
                time.monotonic() + wait, lambda value: sink.post(shared, value), sink=sink
            )
            group = _LoopReads(loop, shared, waiter)
            self._loop_reads[id(loop)] = group
            self._read_barrier(waiter, shared=True)
        # shield: one cancelled read must not cancel the others waiting on the same future
        await asyncio.shield(group.future)

    async def _wait_applied(self, index: int, timeout_s: float) -> None:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        sink = self._sink()
        self._when_applied(index, lambda: sink.post(future, None))
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise ReadUnavailable("this node did not catch up in time") from None
        self._check_serving()

    def _check_freshness(self, freshness: float) -> None:
        if self._node is not None and self._node._isLeader():
            return
        leader = self._status.leader_addr
        contact = (
            self._node.transport.last_contact.get(leader)
            if leader is not None and self._node
            else None
        )
        if contact is None or time.monotonic() - contact > freshness:
            raise ReadUnavailable(
                f"this node has not heard from a leader within {freshness:g} s (freshness)"
            )

    async def table_version(
        self,
        table: str,
        *,
        level: ReadLevel = ReadLevel.LINEARIZABLE,
        timeout_s: float | None = None,
    ) -> int:
        """The index of the last applied entry that wrote ``table`` (0 if none)."""
        self._check_serving()
        await self.read_fence(level, timeout_s=timeout_s)
        return self.reader().table_version(table)

    async def backup(self, dest: Path, *, level: ReadLevel = ReadLevel.LINEARIZABLE) -> int:
        """A consistent copy of the database at ``dest``; returns its applied index."""
        self._check_serving()
        await self.read_fence(level)
        state = self._state
        assert state is not None
        return await asyncio.to_thread(state.backup, dest)

    async def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready()[0]:
            if time.monotonic() > deadline:
                raise NoLeader(f"node {self.node_id} not ready after {timeout_s:g} s")
            self._check_serving()
            await asyncio.sleep(0.05)

    # ================================================================== control

    def force_compaction(self) -> None:
        """Ask pysyncobj to snapshot and compact the log at the next tick."""
        self._check_serving()
        assert self._node is not None
        self._node.forceLogCompaction()

    def set_partition(self, addresses: Sequence[str]) -> None:
        """Drop Raft messages to and from these member addresses (fault injection)."""
        self._check_serving()
        assert self._node is not None
        self._node.transport.set_dropped(frozenset(addresses))
        log.warning("raftdb_partition", node_id=self.node_id, dropped=",".join(addresses) or "-")

    # ------------------------------------------------------------------ utility messages

    def _utility_info(self, _args: list[Any], callback: Callable[[Any, Any], None]) -> None:
        state = self._state
        assert state is not None
        callback(
            {
                "ok": True,
                "node_id": self.node_id,
                "has_data": state.has_data,
                "applied_index": self._applied,
                "cluster_id": state.cluster_id,
                "sqlite_version": state.sqlite_version,
                "members": sorted({self.raft_addr, *self._status.members}),
            },
            None,
        )

    def _utility_join(self, args: list[Any], callback: Callable[[Any, Any], None]) -> None:
        node = self._node
        state = self._state
        assert node is not None
        assert state is not None
        if len(args) != 3 or not all(isinstance(a, str) for a in args):
            callback({"ok": False, "error": "malformed join request"}, None)
            return
        node_id, address, version = args
        try:
            check_node_id(node_id)
            parse_address(address, "address")
        except ConfigError as exc:
            callback({"ok": False, "error": str(exc)}, None)
            return
        if version != state.sqlite_version:
            callback(
                {
                    "ok": False,
                    "error": f"SQLite {version} differs from the cluster's {state.sqlite_version}",
                },
                None,
            )
            return
        known = self._registry.get(node_id)
        if known is not None and known.raft_addr != address:
            callback(
                {"ok": False, "error": f"node id {node_id} is already used by {known.raft_addr}"},
                None,
            )
            return
        members = {self.raft_addr, *(n.address for n in node.otherNodes)}
        if address in members:
            # Only an empty node asks to join: a member that lost its data must not come back
            # as if it still held what it acknowledged (Raft counts on it): remove it first.
            callback(
                {
                    "ok": False,
                    "error": f"{address} is still a member; remove it first"
                    f" (cis-node sql remove --id {node_id})",
                },
                None,
            )
            return

        def added(_res: Any, err: Any) -> None:
            if err == FAIL_REASON.SUCCESS:
                node._service("membership", ("add", node_id, address))
                callback({"ok": True, "members": sorted(members | {address})}, None)
            else:
                callback({"ok": False, "retry": True, "error": f"membership change: {err}"}, None)

        log.info("raftdb_adding_member", node_id=node_id, raft=address)
        node.addNodeToCluster(address, callback=added)

    def _utility_remove(self, args: list[Any], callback: Callable[[Any, Any], None]) -> None:
        node = self._node
        assert node is not None
        if len(args) != 1 or not isinstance(args[0], str):
            callback({"ok": False, "error": "malformed remove request"}, None)
            return
        node_id = args[0]
        info = self._registry.get(node_id)
        address = info.raft_addr if info is not None else self.config.peers.get(node_id)
        if node_id == self.node_id:
            address = self.raft_addr
        members = {self.raft_addr, *(n.address for n in node.otherNodes)}
        if address is None or address not in members:
            callback({"ok": False, "error": f"node {node_id} is not a member"}, None)
            return
        if address == self.raft_addr and node._isLeader():
            # A Raft leader cannot remove itself: hand leadership over, then the caller retries.
            node.transferLeadership()
            callback({"ok": False, "retry": True, "error": "leadership is being transferred"}, None)
            return
        if address == self._status.leader_addr:
            # Only the leader can hand its leadership over: send the caller there.
            callback(
                {
                    "ok": False,
                    "retry": True,
                    "leader": address,
                    "error": "the member to remove is the leader; ask it to step down",
                },
                None,
            )
            return

        def removed(_res: Any, err: Any) -> None:
            if err == FAIL_REASON.SUCCESS:
                node._service("forget", (node_id,))
                callback({"ok": True}, None)
            else:
                callback({"ok": False, "retry": True, "error": f"membership change: {err}"}, None)

        log.info("raftdb_removing_member", node_id=node_id, raft=address)
        node.removeNodeFromCluster(address, callback=removed)

    # ================================================================== status

    @property
    def failed(self) -> str | None:
        """Why this node stopped applying, or None."""
        return self._failed

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def sqlite_version(self) -> str:
        return sqlite3.sqlite_version

    def is_leader(self) -> bool:
        return self._node is not None and bool(self._node._isLeader())

    def node_for_address(self, address: str | None) -> NodeInfo | None:
        if address is None:
            return None
        for info in self._registry.values():
            if info.raft_addr == address:
                return info
        if address == self.raft_addr:
            cfg = self.config
            return NodeInfo(self.node_id, self.raft_addr, cfg.http_addr, cfg.grpc_addr)
        for node_id, addr in self.config.peers.items():
            if addr == address:
                return NodeInfo(node_id, addr)
        return NodeInfo("", address)

    def leader(self) -> NodeInfo | None:
        return self.node_for_address(self._status.leader_addr)

    def nodes(self) -> list[NodeInfo]:
        """Every member: the registry's details for the addresses Raft counts as members."""
        members = [self.raft_addr, *self._status.members]
        return [info for info in (self.node_for_address(a) for a in members) if info is not None]

    def is_reachable(self, raft_addr: str) -> bool:
        return raft_addr == self.raft_addr or raft_addr in self._status.connected

    def _leader_alive(self) -> bool:
        """A leader is known and (unless it is us) was heard from within an election timeout.

        pysyncobj keeps a follower's last leader for as long as it hears from no one, so the
        leader it names is trusted only while messages keep coming.
        """
        node = self._node
        status = self._status
        if node is None or node.transport.gated or status.leader_addr is None:
            return False
        if status.leader_addr == self.raft_addr:
            return status.state == "Leader"
        contact = node.transport.last_contact.get(status.leader_addr)
        return (
            contact is not None and time.monotonic() - contact <= self.config.timings.election_max
        )

    def ready(self) -> tuple[bool, list[str]]:
        """rqlite's readiness: a leader is known and this node applied its commit index."""
        lines = []
        ok = True
        if self._failed is not None or self._node is None:
            lines.append(f"[-]node: {self._failed or 'not running'}")
            ok = False
        elif self._node.transport.gated:
            lines.append("[-]node: empty data directory, waiting to hear from a peer")
            ok = False
        else:
            lines.append("[+]node ok")
        status = self._status
        if self._leader_alive():
            lines.append("[+]leader ok")
        else:
            lines.append("[-]leader not found")
            ok = False
        if self._failed is None and self._applied >= status.commit_index > 0:
            lines.append("[+]store ok")
        else:
            lines.append(
                f"[-]store: applied index {self._applied} below commit index {status.commit_index}"
            )
            ok = False
        return ok, lines

    def status(self) -> dict[str, Any]:
        """rqlite's ``/status`` shape, with our details; safe from any thread."""
        status = self._status
        leader = self.leader()
        state = self._state
        return {
            "store": {
                "node_id": self.node_id,
                "addr": self.raft_addr,
                "dir": str(self.data_dir),
                "leader": {
                    "node_id": leader.node_id if leader is not None else "",
                    "addr": status.leader_addr or "",
                },
                "raft": {
                    "state": "Shutdown" if self._failed else status.state,
                    "term": status.term,
                    "commit_index": status.commit_index,
                    "applied_index": self._applied,
                    "last_log_index": status.last_log_index,
                    "first_log_index": status.first_log_index,
                    "snapshot_index": self._snapshot_index,
                    "voters": len(status.members) + 1,
                    "has_quorum": status.has_quorum,
                    "journal_sync": self.config.journal_sync,
                },
                "sqlite_version": self.sqlite_version,
                "cluster_sqlite_version": state.cluster_sqlite_version if state else None,
                "cluster_id": state.cluster_id if state else None,
                "db_applied_index": state.applied_index if state else 0,
                "nodes": [
                    {"id": n.node_id, "addr": n.raft_addr, "api_addr": n.http_addr or ""}
                    for n in self.nodes()
                ],
                "ready": self.ready()[0],
                "failed": self._failed,
                "gated": bool(self._node and self._node.transport.gated),
                "partitioned_from": sorted(self._node.transport.dropped) if self._node else [],
            },
            "node": {
                "start_time": self._started_at,
                "uptime": round(time.time() - self._started_at, 3),
                "pid": os.getpid(),
            },
        }


def _estimate_size(request: Request) -> int:
    """Roughly the bytes ``request`` adds to an entry (bounds entries to MAX_ENTRY_BYTES)."""
    size = 64
    for sql, params in request.statements:
        size += len(sql) + 16
        for value in params.values() if type(params) is dict else params:
            kind = type(value)
            size += len(value) + 8 if kind is str or kind is bytes else 12  # type: ignore[arg-type]
    return size


def _exit_fatal(reason: str) -> None:
    for handler in __import__("logging").getLogger().handlers:
        handler.flush()
    os._exit(EXIT_FATAL)

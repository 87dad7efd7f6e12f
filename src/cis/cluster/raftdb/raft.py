"""The pysyncobj node: which methods are replicated and how pysyncobj is configured.

pysyncobj calls a replicated method's body in its tick thread, on every node, once the entry is
committed; ``self.raftLastApplied + 1`` is then the entry's index (the trick Patroni's
``raft.py`` uses). The bodies here only hand the entry to ``RaftHooks`` (the applier's queue):
SQLite work never runs in the tick thread, so heartbeats are never late because of it.

Configuration choices (``make_conf``), each for a reason:

- ``autoTick=False``: the service drives ``doTick`` from its own thread (no dependency on the
  thread that created the node staying alive; journal errors are seen and end the node).
- ``appendEntriesUseBatch=False``: with batching on, every write waits for the next heartbeat
  (~100 ms, measured); grouping happens in the proposer instead (group commit).
- ``commandsWaitLeader=False``: a command without a leader fails at once (MISSING_LEADER) and the
  proposer retries until its deadline, so "no leader" is a definite, bounded failure.
- ``leaderFallbackTimeout`` ≤ 1 s: a leader that lost its majority stops believing it leads
  (and stops serving ``weak`` reads) within that time instead of pysyncobj's 30 s.
- ``dynamicMembershipChange=True`` from the first start; ``useFork=False`` and our own
  serializer (SQLite's backup API, asynchronous through ``serializeChecker``).
- ``appendEntriesBatchSizeBytes`` above the largest entry the proposer builds, so an entry never
  takes pysyncobj's chunked "transmission" path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import pysyncobj.syncobj as _syncobj
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj import pickle as sync_pickle
from pysyncobj.node import Node, TCPNode

from cis.cluster.raftdb.journal import Journal
from cis.cluster.raftdb.transport import AeadEncryptor, CisTransport

__all__ = ["MAX_ENTRY_BYTES", "MemberNode", "RaftHooks", "RaftNode", "RaftTimings", "make_conf"]

MAX_ENTRY_BYTES: Final = 16 * 1024 * 1024

# pysyncobj builds its journal inside SyncObj.__init__ through the module-level function
# ``createJournal(journalFile)``, with no way to pass a class. We wrap that function once: a
# journal file registered here by ``RaftNode`` gets our ``Journal`` object; any other call
# (another SyncObj in the process) gets pysyncobj's own journal, unchanged.
_original_create_journal = _syncobj.createJournal
_prepared_journals: dict[str, Journal] = {}
_prepared_lock = threading.Lock()


def _create_journal(journalFile: str | None = None) -> Any:
    with _prepared_lock:
        journal = _prepared_journals.pop(journalFile, None) if journalFile else None
    return journal if journal is not None else _original_create_journal(journalFile)


_syncobj.createJournal = _create_journal


class MemberNode(TCPNode):  # type: ignore[misc]
    """pysyncobj's ``TCPNode`` with its hash computed once.

    pysyncobj keys every per-peer dict and set by node objects and hashes them through two
    Python-level calls (``__hash__`` → ``id``) tens of thousands of times a second under
    load; equality stays pysyncobj's (same id).
    """

    def __init__(self, address: str, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        object.__setattr__(self, "_cis_hash", hash(address))

    # Nodes travel pickled inside membership entries. A string's hash differs from one
    # process to the next (hash randomisation), so the cached hash must never travel: a node
    # unpickled with another process's hash would not match the same member in a set.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_cis_hash", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        object.__setattr__(self, "_cis_hash", hash(self._id))

    def __hash__(self) -> int:
        value: int = self._cis_hash
        return value

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Node) and self._id == other._id)


class RaftHooks(Protocol):
    """What the replicated methods call, in the tick thread."""

    def on_entry(self, index: int, payload: object) -> None: ...

    def on_barrier(self, index: int) -> int: ...

    def on_service(self, index: int, op: str, args: tuple[object, ...]) -> None: ...


@dataclass(frozen=True, slots=True)
class RaftTimings:
    """Raft timers in seconds (pysyncobj's names in the comments)."""

    heartbeat: float = 0.1  # appendEntriesPeriod
    election_min: float = 0.8  # raftMinTimeout
    election_max: float = 1.6  # raftMaxTimeout
    leader_fallback: float = 1.0  # leaderFallbackTimeout
    reconnect: float = 0.5  # connectionRetryTime


def make_conf(
    *,
    bind: str,
    journal_file: str,
    dump_file: str,
    timings: RaftTimings,
    serializer: Callable[[str, Any], None],
    deserializer: Callable[[str], Any],
    serialize_checker: Callable[[], int],
    on_state_changed: Callable[[int, int], None],
    compaction_min_entries: int,
    compaction_min_time: float,
) -> Any:
    return SyncObjConf(
        # No password: pysyncobj would build its Fernet encryptor; RaftNode supplies ours.
        password=None,
        autoTick=False,
        appendEntriesUseBatch=False,
        appendEntriesBatchSizeBytes=2 * MAX_ENTRY_BYTES,
        commandsWaitLeader=False,
        raftMinTimeout=timings.election_min,
        raftMaxTimeout=timings.election_max,
        appendEntriesPeriod=timings.heartbeat,
        leaderFallbackTimeout=timings.leader_fallback,
        connectionTimeout=max(3.5, timings.election_max),
        connectionRetryTime=timings.reconnect,
        dynamicMembershipChange=True,
        bindAddress=bind,
        journalFile=journal_file,
        fullDumpFile=dump_file,
        useFork=False,
        serializer=serializer,
        deserializer=deserializer,
        serializeChecker=serialize_checker,
        onStateChanged=on_state_changed,
        logCompactionMinEntries=compaction_min_entries,
        logCompactionMinTime=compaction_min_time,
        maxBindRetries=5,
        bindRetryTime=0.5,
    )


class RaftNode(SyncObj):  # type: ignore[misc]
    """A pysyncobj node whose replicated methods feed ``hooks``."""

    def __init__(
        self,
        self_address: str,
        others: list[str],
        conf: Any,
        hooks: RaftHooks,
        *,
        journal: Journal,
        secret: str,
        gated: bool,
    ) -> None:
        # Read by CisTransport while SyncObj.__init__ builds it.
        self._cis_encryptor = AeadEncryptor(secret)
        self._cis_sync = journal.sync
        self._cis_log_view = journal
        self._cis_gated = gated
        self._cis_hooks = hooks
        with _prepared_lock:
            _prepared_journals[conf.journalFile] = journal
        self._cis_data_applied = False
        self._cis_barriers_applied = 0
        try:
            super().__init__(
                self_address, others, conf, nodeClass=MemberNode, transportClass=CisTransport
            )
        finally:
            with _prepared_lock:
                _prepared_journals.pop(conf.journalFile, None)
        # A read barrier's bytes in the log, as pysyncobj encodes a call without arguments
        # (command type REGULAR, then the pickled method id).
        journal.no_sync_commands = frozenset(
            b"\x00" + sync_pickle.dumps(self._methodToID[self._getFuncName(name)])
            for name in ("_barrier", "_relayed_barrier")
        )

    @property
    def encryptor(self) -> AeadEncryptor:
        """What pysyncobj's transport encrypts every message with (never None here)."""
        return self._cis_encryptor

    def _getEncryptor(self) -> AeadEncryptor:
        return self._cis_encryptor

    @property
    def transport(self) -> CisTransport:
        transport: CisTransport = self._SyncObj__transport
        return transport

    def _SyncObj__applyLogEntries(self) -> bool:  # overrides the mangled name
        # pysyncobj asks for an append_entries round right after it applies anything, so that
        # followers learn the new commit index at once. A round of read barriers alone changes
        # nothing a follower needs soon (the next heartbeat carries the commit index): skip
        # it, which saves two messages and two acknowledgements per barrier.
        self._cis_data_applied = False
        self._cis_barriers_applied = 0
        before = self.raftLastApplied
        wanted = bool(SyncObj._SyncObj__applyLogEntries(self))
        if not wanted:
            return False
        # Internal entries (no-op, membership) do not call our hooks: propagate those too.
        applied = self.raftLastApplied - before
        return self._cis_data_applied or applied != self._cis_barriers_applied

    @replicated  # type: ignore[untyped-decorator]
    def _entry(self, payload: object) -> None:
        self._cis_data_applied = True
        self._cis_hooks.on_entry(self.raftLastApplied + 1, payload)

    @replicated  # type: ignore[untyped-decorator]
    def _barrier(self) -> int:
        """A read barrier proposed by the leader itself."""
        self._cis_barriers_applied += 1
        return self._cis_hooks.on_barrier(self.raftLastApplied + 1)

    @replicated  # type: ignore[untyped-decorator]
    def _relayed_barrier(self) -> int:
        """A read barrier proposed by a follower: it waits to apply it, so its commit index
        must travel at once (not with the next heartbeat)."""
        self._cis_data_applied = True
        return self._cis_hooks.on_barrier(self.raftLastApplied + 1)

    @replicated  # type: ignore[untyped-decorator]
    def _service(self, op: str, args: tuple[object, ...]) -> None:
        self._cis_data_applied = True
        self._cis_hooks.on_service(self.raftLastApplied + 1, op, args)

    # Read-only views of pysyncobj state used for status (tick thread or racy-but-atomic reads).

    def raft_state(self) -> int:
        state: int = self._SyncObj__raftState
        return state

    def log_bounds(self) -> tuple[int, int]:
        log = self._SyncObj__raftLog
        if len(log) == 0:
            return (0, 0)
        return (int(log[0][1]), int(log[-1][1]))

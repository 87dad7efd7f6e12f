"""The Raft log on disk, replacing pysyncobj's ``FileJournal``.

pysyncobj 0.3.17's journal is an mmap without ``msync``, ``fsync`` or checksums, and its
compaction (``deleteEntriesTo``) clears the header and re-adds the kept tail in place, so a
``kill -9`` in the middle leaves a prefix: entries this node had acknowledged are gone. This
journal keeps the same interface (pysyncobj calls it from its tick thread only) and adds:

- **a CRC per record**: ``u32 length | u32 crc32 | u64 index | u64 term | command``; on open,
  the file is read up to the first short, corrupt or out-of-sequence record and cut there, so a
  torn append (power loss) costs only that unacknowledged tail;
- **crash-safe compaction**: the kept tail is written to a new file which replaces the old one
  with ``rename`` (``fsync`` of file and directory around it when syncing), so a crash leaves
  either journal, never a prefix;
- **optional fsync before acknowledging** (``sync=True``): ``add`` only marks the file dirty;
  the transport calls ``sync()`` before it sends anything that acknowledges or replicates
  entries (a follower's ``next_node_idx``, a leader's ``append_entries``), so one
  ``fdatasync`` covers every entry appended since the last one (group commit at the disk).
  Read barriers (``no_sync_commands``) carry no state and do not make the file dirty: losing
  one in a crash loses no write, and the next data entry's sync covers it anyway;
- term and vote in a small JSON sidecar written by temp file + ``rename`` (+ ``fsync`` when
  syncing) before any vote is sent, as Raft §5.1 requires; the commit index goes there too,
  lazily (pysyncobj saves it once a second; it is only an optimisation on restart).

Invariants: ``self._entries[i]`` is the record at byte ``self._offsets[i]``; ``self._end`` is
the end of the last valid record; indices are consecutive.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, overload

from cis.log import get_logger

__all__ = ["Entry", "Journal", "JournalError", "fsync_dir"]

log = get_logger(__name__)

Entry = tuple[bytes, int, int]
"""``(command, index, term)`` as pysyncobj stores them."""

MAGIC: Final = b"CIS-RAFT-JOURNAL1\n"
_RECORD_HEAD: Final = struct.Struct("<II")
_ENTRY_HEAD: Final = struct.Struct("<QQ")
MAX_RECORD_BYTES: Final = 1 << 30


class JournalError(Exception):
    """The journal cannot be read or written; the node must stop rather than guess."""


def fsync_dir(path: Path) -> None:
    """Make a rename or creation in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(command: bytes, index: int, term: int) -> bytes:
    payload = _ENTRY_HEAD.pack(index, term) + command
    return _RECORD_HEAD.pack(len(payload), zlib.crc32(payload)) + payload


class Journal:
    """A pysyncobj journal (``add``/``clear``/``deleteEntriesFrom``/``deleteEntriesTo``/…)."""

    def __init__(
        self,
        path: Path,
        *,
        sync: bool,
        fault_hook: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.sync_enabled = sync
        self._meta_path = path.with_name(path.name + ".meta")
        self._fault_hook = fault_hook
        self.no_sync_commands: frozenset[bytes] = frozenset()
        self._entries: list[Entry] = []
        self._offsets: list[int] = []
        self._dirty = False
        self.truncated_bytes = 0
        self._meta: dict[str, object] = self._read_meta()
        self._meta_dirty = False
        self._fd = self._open_and_scan()

    # ------------------------------------------------------------------ opening

    def _read_meta(self) -> dict[str, object]:
        try:
            data = json.loads(self._meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise JournalError(f"cannot read {self._meta_path}: {exc}") from exc
        if not isinstance(data, dict):
            raise JournalError(f"{self._meta_path} is not a JSON object")
        return data

    def _open_and_scan(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open {self.path}: {exc}") from exc
        try:
            data = b""
            size = os.fstat(fd).st_size
            if size:
                data = os.pread(fd, size, 0)
            if not data:
                os.pwrite(fd, MAGIC, 0)
                self._end = len(MAGIC)
                return fd
            if not data.startswith(MAGIC):
                raise JournalError(f"{self.path} is not a CIS Raft journal")
            pos = len(MAGIC)
            while pos + _RECORD_HEAD.size <= len(data):
                length, crc = _RECORD_HEAD.unpack_from(data, pos)
                start = pos + _RECORD_HEAD.size
                if length < _ENTRY_HEAD.size or start + length > len(data):
                    break
                payload = data[start : start + length]
                if zlib.crc32(payload) != crc:
                    break
                index, term = _ENTRY_HEAD.unpack_from(payload, 0)
                if self._entries and index != self._entries[-1][1] + 1:
                    break
                self._entries.append((payload[_ENTRY_HEAD.size :], index, term))
                self._offsets.append(pos)
                pos = start + length
            self._end = pos
            if pos < len(data):
                # A torn or corrupt tail (a crash in the middle of an append): drop it.
                self.truncated_bytes = len(data) - pos
                log.warning(
                    "raft_journal_tail_dropped", path=str(self.path), bytes=self.truncated_bytes
                )
                os.ftruncate(fd, pos)
                os.fsync(fd)
            return fd
        except BaseException:
            os.close(fd)
            raise

    # ------------------------------------------------------------------ pysyncobj's interface

    def add(self, command: bytes, idx: int, term: int) -> None:
        if self._entries and idx != self._entries[-1][1] + 1:
            raise JournalError(f"journal index {idx} does not follow {self._entries[-1][1]}")
        record = _record(bytes(command), idx, term)
        self._write(record, self._end)
        self._entries.append((bytes(command), idx, term))
        self._offsets.append(self._end)
        self._end += len(record)
        if command not in self.no_sync_commands:
            self._dirty = True

    def _write(self, data: bytes, offset: int) -> None:
        try:
            written = os.pwrite(self._fd, data, offset)
        except OSError as exc:
            raise JournalError(f"cannot write the Raft journal: {exc}") from exc
        if written != len(data):
            raise JournalError("short write to the Raft journal")

    def clear(self) -> None:
        self._entries = []
        self._offsets = []
        self._truncate(len(MAGIC))

    def _truncate(self, offset: int) -> None:
        try:
            os.ftruncate(self._fd, offset)
        except OSError as exc:
            raise JournalError(f"cannot truncate the Raft journal: {exc}") from exc
        self._end = offset
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Drop the entries from position ``entryFrom`` on (a conflicting suffix)."""
        if entryFrom >= len(self._entries):
            return
        offset = self._offsets[entryFrom]
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._truncate(offset)

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the entries before position ``entryTo`` (after a snapshot), atomically."""
        if entryTo <= 0:
            return
        kept = self._entries[entryTo:]
        tmp = self.path.with_name(self.path.name + ".compact")
        records = [_record(*entry) for entry in kept]
        try:
            # The snapshot this compaction follows was renamed into place just before: make
            # that rename durable before the entries it replaces are dropped.
            if self.sync_enabled:
                fsync_dir(self.path.parent)
            with open(tmp, "wb") as f:
                f.write(MAGIC)
                for rec in records:
                    f.write(rec)
                f.flush()
                if self.sync_enabled:
                    os.fsync(f.fileno())
            if self._fault_hook is not None:
                self._fault_hook("compaction_written")
            os.replace(tmp, self.path)
            if self.sync_enabled:
                fsync_dir(self.path.parent)
            new_fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise JournalError(f"cannot compact the Raft journal: {exc}") from exc
        os.close(self._fd)
        self._fd = new_fd
        self._entries = list(kept)
        self._offsets = []
        pos = len(MAGIC)
        for rec in records:
            self._offsets.append(pos)
            pos += len(rec)
        self._end = pos
        self._dirty = False

    @overload
    def __getitem__(self, item: int) -> Entry: ...

    @overload
    def __getitem__(self, item: slice) -> list[Entry]: ...

    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def _destroy(self) -> None:
        self.close()

    def flush(self) -> None:
        self.sync()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self._meta.get("commit_index") != raftCommitIndex:
            self._meta["commit_index"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        value = self._meta.get("commit_index", 1)
        return value if isinstance(value, int) else 1

    def setCurrentTerm(self, term: int, votedForNodeId: object) -> None:
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId if isinstance(votedForNodeId, str) else None
        self._store_meta(durable=True)

    def getCurrentTerm(self) -> int:
        value = self._meta.get("term", 0)
        return value if isinstance(value, int) else 0

    def getVotedForNodeId(self) -> str | None:
        value = self._meta.get("voted_for")
        return value if isinstance(value, str) else None

    def onOneSecondTimer(self) -> None:
        if self._meta_dirty:
            self._store_meta(durable=False)

    # ------------------------------------------------------------------ ours

    def _store_meta(self, *, durable: bool) -> None:
        tmp = self._meta_path.with_name(self._meta_path.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._meta, f)
                f.flush()
                if durable and self.sync_enabled:
                    os.fsync(f.fileno())
            os.replace(tmp, self._meta_path)
            if durable and self.sync_enabled:
                fsync_dir(self._meta_path.parent)
        except OSError as exc:
            raise JournalError(f"cannot store the Raft term and vote: {exc}") from exc
        self._meta_dirty = False

    def sync(self) -> None:
        """``fdatasync`` the appends since the last call (no-op when syncing is off)."""
        if self._dirty:
            if self.sync_enabled:
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    raise JournalError(f"cannot sync the Raft journal: {exc}") from exc
            self._dirty = False

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``, or None if this log does not hold it."""
        if not self._entries:
            return None
        pos = index - self._entries[0][1]
        if 0 <= pos < len(self._entries):
            return self._entries[pos][2]
        return None

    @property
    def first_index(self) -> int:
        return self._entries[0][1] if self._entries else 0

    @property
    def last_index(self) -> int:
        return self._entries[-1][1] if self._entries else 0

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
                if self._meta_dirty:
                    self._store_meta(durable=False)
            finally:
                os.close(self._fd)
                self._fd = -1

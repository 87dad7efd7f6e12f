"""The Raft journal: CRC per record, torn tails, atomic compaction, term and vote."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cis.cluster.raftdb.journal import MAGIC, Journal, JournalError


def fill(journal: Journal, first: int, last: int, term: int = 1) -> None:
    for index in range(first, last + 1):
        journal.add(f"cmd-{index}".encode(), index, term)


def test_entries_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = Journal(path, sync=True)
    fill(journal, 1, 50)
    journal.sync()
    journal.close()
    again = Journal(path, sync=True)
    assert len(again) == 50
    assert again[0] == (b"cmd-1", 1, 1)
    assert again[-1] == (b"cmd-50", 50, 1)
    assert again[10:12] == [(b"cmd-11", 11, 1), (b"cmd-12", 12, 1)]
    assert (again.first_index, again.last_index, again.term_at(7), again.term_at(51)) == (
        1,
        50,
        1,
        None,
    )


def test_a_torn_or_corrupt_tail_is_cut_at_the_last_good_record(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = Journal(path, sync=False)
    fill(journal, 1, 10)
    journal.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:  # a crash in the middle of the 10th record
        f.truncate(size - 5)
    torn = Journal(path, sync=False)
    assert torn.last_index == 9 and torn.truncated_bytes > 0
    fill(torn, 10, 12, term=2)  # appends continue after the cut
    torn.close()
    data = bytearray(path.read_bytes())
    data[len(data) - 3] ^= 0x55  # flip a bit in the last record: its CRC fails
    path.write_bytes(bytes(data))
    assert Journal(path, sync=False).last_index == 11


def test_indices_must_follow_each_other(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "raft.journal", sync=False)
    fill(journal, 1, 3)
    with pytest.raises(JournalError):
        journal.add(b"x", 5, 1)


def test_truncating_a_conflicting_suffix(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = Journal(path, sync=False)
    fill(journal, 1, 10)
    journal.deleteEntriesFrom(6)  # keep positions 0..5 (indices 1..6)
    fill(journal, 7, 8, term=3)
    journal.close()
    again = Journal(path, sync=False)
    assert [e[1] for e in again] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert again.term_at(7) == 3


def test_compaction_is_atomic_even_if_the_process_dies_half_way(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"

    def die(point: str) -> None:
        raise RuntimeError(f"killed at {point}")

    journal = Journal(path, sync=True, fault_hook=die)
    fill(journal, 1, 100)
    with pytest.raises(RuntimeError, match="compaction_written"):
        journal.deleteEntriesTo(90)
    # The new file was written but not renamed: the old journal is whole.
    assert Journal(path, sync=True).last_index == 100
    assert len(Journal(path, sync=True)) == 100
    ok = Journal(path, sync=True)
    ok.deleteEntriesTo(90)
    ok.add(b"after", 101, 1)
    ok.close()
    again = Journal(path, sync=True)
    assert (again.first_index, again.last_index) == (91, 101)
    assert path.read_bytes().startswith(MAGIC)


def test_term_vote_and_commit_index_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = Journal(path, sync=True)
    journal.setCurrentTerm(7, "127.0.0.1:5001")
    journal.setRaftCommitIndex(42)
    journal.onOneSecondTimer()
    journal.close()
    again = Journal(path, sync=True)
    assert again.getCurrentTerm() == 7
    assert again.getVotedForNodeId() == "127.0.0.1:5001"
    assert again.getRaftCommitIndex() == 42


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    path.write_bytes(b"PYSYNCOBJ\x00\x00\x00 something else")
    with pytest.raises(JournalError, match="not a CIS Raft journal"):
        Journal(path, sync=False)


def test_sync_is_a_no_op_without_appends(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "raft.journal", sync=True)
    journal.sync()
    fill(journal, 1, 2)
    journal.sync()
    assert os.path.getsize(tmp_path / "raft.journal") > len(MAGIC)

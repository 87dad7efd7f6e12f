"""The transport: Raft's truncation rule restored, bounded frames."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from pysyncobj.poller import createPoller
from pysyncobj.tcp_connection import CONNECTION_STATE

from cis.cluster.raftdb.transport import (
    MAX_FRAME_BYTES,
    BoundedTcpConnection,
    normalize_append_entries,
)


@dataclass
class FakeLog:
    terms: dict[int, int]

    @property
    def first_index(self) -> int:
        return min(self.terms)

    @property
    def last_index(self) -> int:
        return max(self.terms)

    def term_at(self, index: int) -> int | None:
        return self.terms.get(index)


def ae(prev: int, prev_term: int, entries: list[tuple[int, int]], commit: int) -> dict:
    return {
        "type": "append_entries",
        "term": 2,
        "prevLogIdx": prev,
        "prevLogTerm": prev_term,
        "entries": [(b"c", i, t) for i, t in entries],
        "commit_index": commit,
    }


def test_a_stale_message_whose_entries_match_truncates_nothing() -> None:
    log = FakeLog({i: 1 for i in range(1, 11)})  # 1..10, all term 1
    message, ack = normalize_append_entries(ae(5, 1, [(6, 1), (7, 1)], commit=10), log)
    assert message["prevLogIdx"] == 10 and message["entries"] == []
    assert message["commit_index"] == 7  # only what the message proved
    assert ack == 8  # acknowledge 7, not 10


def test_a_stale_heartbeat_acknowledges_only_its_prev_index() -> None:
    log = FakeLog({i: 1 for i in range(1, 11)})
    message, ack = normalize_append_entries(ae(4, 1, [], commit=9), log)
    assert message["prevLogIdx"] == 10 and message["commit_index"] == 4 and ack == 5


def test_a_real_conflict_truncates_from_the_conflict() -> None:
    log = FakeLog({1: 1, 2: 1, 3: 1, 4: 1, 5: 1})
    message, ack = normalize_append_entries(ae(2, 1, [(3, 1), (4, 2), (5, 2)], 5), log)
    assert message["prevLogIdx"] == 3 and message["prevLogTerm"] == 1
    assert [e[1] for e in message["entries"]] == [4, 5]
    assert ack is None


def test_new_entries_past_the_end_are_appended_without_truncation() -> None:
    log = FakeLog({1: 1, 2: 1, 3: 1})
    message, ack = normalize_append_entries(ae(1, 1, [(2, 1), (3, 1), (4, 1)], 4), log)
    assert message["prevLogIdx"] == 3 and [e[1] for e in message["entries"]] == [4]
    assert ack is None


def test_messages_that_need_no_rewrite_pass_unchanged() -> None:
    log = FakeLog({1: 1, 2: 1})
    current = ae(2, 1, [(3, 1)], 3)
    assert normalize_append_entries(current, log) == (current, None)
    mismatch = ae(1, 9, [(2, 2)], 2)
    assert normalize_append_entries(mismatch, log) == (mismatch, None)
    snapshot = {"type": "append_entries", "term": 2, "serialized": b"x", "commit_index": 5}
    assert normalize_append_entries(snapshot, log) == (snapshot, None)


def test_an_oversized_length_prefix_drops_the_connection_before_buffering() -> None:
    poller = createPoller("auto")
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    received: list[object] = []
    conn = BoundedTcpConnection(poller, socket=ours, onMessageReceived=received.append)
    theirs.sendall(struct.pack("i", MAX_FRAME_BYTES + 1) + b"x" * 1000)
    deadline = time.monotonic() + 5
    while conn.state != CONNECTION_STATE.DISCONNECTED and time.monotonic() < deadline:
        poller.poll(0.05)
    assert conn.state == CONNECTION_STATE.DISCONNECTED
    assert received == []
    theirs.close()


def test_a_negative_length_prefix_drops_the_connection() -> None:
    poller = createPoller("auto")
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = BoundedTcpConnection(poller, socket=ours)
    theirs.sendall(struct.pack("i", -5))
    deadline = time.monotonic() + 5
    while conn.state != CONNECTION_STATE.DISCONNECTED and time.monotonic() < deadline:
        poller.poll(0.05)
    assert conn.state == CONNECTION_STATE.DISCONNECTED
    theirs.close()


def test_a_frame_within_the_limit_is_delivered() -> None:
    import pickle
    import zlib

    poller = createPoller("auto")
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    received: list[object] = []
    conn = BoundedTcpConnection(poller, socket=ours, onMessageReceived=received.append)
    data = zlib.compress(pickle.dumps({"type": "hello", "n": 1}), 3)
    theirs.sendall(struct.pack("i", len(data)) + data)
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        poller.poll(0.05)
    assert received == [{"type": "hello", "n": 1}]
    assert conn.state == CONNECTION_STATE.CONNECTED
    conn.disconnect()
    theirs.close()


def test_a_member_node_pickled_in_another_process_still_matches() -> None:
    import pickle
    import subprocess
    import sys

    from cis.cluster.raftdb.raft import MemberNode

    code = (
        "import pickle, sys; from cis.cluster.raftdb.raft import MemberNode; "
        "sys.stdout.buffer.write(pickle.dumps(MemberNode('127.0.0.1:4002')))"
    )
    blob = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, timeout=60
    ).stdout
    remote = pickle.loads(blob)
    local = MemberNode("127.0.0.1:4002")
    assert remote == local and hash(remote) == hash(local)
    assert len({remote, local}) == 1

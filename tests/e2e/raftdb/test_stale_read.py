"""The checker on a live history that is certainly stale, and on its linearizable twin."""

from __future__ import annotations

import time

import pytest

from tests.e2e.raftdb.checker import Op, Verdict, check
from tests.e2e.raftdb.harness import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WRITE = "INSERT INTO reg (k, v) VALUES ('x', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
READ = "SELECT v FROM reg WHERE k = 'x'"


def timed_write(node, value: int) -> Op:  # type: ignore[no-untyped-def]
    call = time.monotonic()
    node.execute([WRITE, value])
    return Op(1, "x", "write", value, None, call, time.monotonic())


def timed_read(node, level: str) -> Op:  # type: ignore[no-untyped-def]
    call = time.monotonic()
    values = node.query([READ], level=level)[0].get("values") or [[None]]
    return Op(2, "x", "read", None, values[0][0], call, time.monotonic())


def test_a_frozen_follower_read_at_level_none_is_caught_as_stale(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(n for n in cluster.members if n is not leader)
    others = [n for n in cluster.members if n is not follower]
    leader.execute("CREATE TABLE reg (k TEXT PRIMARY KEY, v INTEGER)")
    history = [timed_write(leader, 1)]
    cluster.wait_converged()
    # Freeze the follower, and have the others stop sending it anything, so that it cannot
    # learn of the next write however the threads race when it wakes up.
    follower.pause()
    try:
        for node in others:
            node.partition([follower.raft_addr])
        history.append(timed_write(leader, 2))
    finally:
        follower.resume()
    stale = timed_read(follower, "none")
    assert stale.output == 1, "the follower was expected to still hold the old value"
    fresh = timed_read(follower, "linearizable")  # forwarded to the leader
    assert fresh.output == 2
    for node in others:
        node.partition([])

    result = check([*history, stale])
    assert result.verdict is Verdict.NOT_LINEARIZABLE and result.key == "x", result
    assert check([*history, fresh]).verdict is Verdict.LINEARIZABLE
    cluster.wait_ready()
    cluster.assert_identical()

"""Fault scenarios for the replicated SQL service (seed 004's ``verify.ps1 -Scenario …``).

Run one by hand (each has a budget of 60 s, start-up and checks included)::

    .venv/bin/python -m tests.e2e.raftdb.scenarios leader_kill
    .venv/bin/python -m tests.e2e.raftdb.scenarios full --duration 30

Every scenario starts three real ``cis-node sql serve`` processes, runs concurrent clients
(``workload.py``) while it injects its faults, heals everything, and then checks:

1. the recorded history is linearizable (``checker.py``), final reads included;
2. no acknowledged write is lost: every acknowledged ledger row is on every replica, and the
   counter incremented in the same transactions equals the acknowledged increments plus at
   most the ones whose outcome was unknown (a double apply would exceed that);
3. once every node reports the same applied index, the replicas hold identical databases,
   schema included.

It prints one line per phase and ``PASS``/``FAIL``; the exit status is 0 on PASS.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.raftdb.checker import Verdict, check
from tests.e2e.raftdb.harness import Cluster, Node
from tests.e2e.raftdb.workload import SCHEMA, Workload

BUDGET_S = 60.0


@dataclass
class Report:
    name: str
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(f"[{self.name}] {text}", flush=True)


Faults = Callable[[Cluster, Report, float], Awaitable[None]]


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(max(0.0, seconds))


async def _wait_ready(cluster: Cluster, within: float = 30.0) -> Node:
    return await asyncio.to_thread(cluster.wait_ready, within)


async def _restart(node: Node, report: Report, env: dict[str, str] | None = None) -> None:
    node.start(env=env)
    report.say(f"restarted node {node.node_id}")


# ---------------------------------------------------------------------- the faults


async def leader_kill(cluster: Cluster, report: Report, duration: float) -> None:
    rounds = 2 if duration < 20 else 3
    for _ in range(rounds):
        await _sleep(duration / (rounds * 2 + 1))
        leader = await asyncio.to_thread(cluster.leader)
        leader.kill()
        report.say(f"kill -9 the leader, node {leader.node_id}")
        await _sleep(duration / (rounds * 2 + 1))
        await _restart(leader, report)
    await _wait_ready(cluster)


async def restart_single_node(cluster: Cluster, report: Report, duration: float) -> None:
    await _sleep(duration / 5)
    follower = random.choice(await asyncio.to_thread(cluster.followers))
    follower.kill()
    report.say(f"kill -9 follower node {follower.node_id}")
    await _sleep(duration / 5)
    await _restart(follower, report)
    await _wait_ready(cluster)
    await _sleep(duration / 5)
    other = random.choice(await asyncio.to_thread(cluster.followers))
    code = other.stop()
    report.say(f"SIGTERM node {other.node_id} (exit status {code})")
    await _sleep(duration / 5)
    await _restart(other, report)
    await _wait_ready(cluster)


async def partition_minority(cluster: Cluster, report: Report, duration: float) -> None:
    await _sleep(duration / 6)
    leader = await asyncio.to_thread(cluster.leader)
    follower = random.choice([n for n in cluster.members if n is not leader])
    await _cut(cluster, [follower], report)
    await _sleep(duration / 4)
    await _heal(cluster, report)
    await _wait_ready(cluster)
    await _sleep(duration / 6)
    leader = await asyncio.to_thread(cluster.leader)
    await _cut(cluster, [leader], report)
    report.say(f"the leader, node {leader.node_id}, is the minority now")
    await _sleep(duration / 4)
    await _heal(cluster, report)
    await _wait_ready(cluster)


async def _cut(cluster: Cluster, minority: list[Node], report: Report) -> None:
    majority = [n for n in cluster.members if n not in minority]
    for node in minority:
        await asyncio.to_thread(node.partition, [n.raft_addr for n in majority])
    for node in majority:
        await asyncio.to_thread(node.partition, [n.raft_addr for n in minority])
    report.say(f"partition: {[n.node_id for n in minority]} | {[n.node_id for n in majority]}")


async def _heal(cluster: Cluster, report: Report) -> None:
    for node in cluster.members:
        if node.running:
            await asyncio.to_thread(node.partition, [])
    report.say("partition healed")


async def prepare_commit_kill(cluster: Cluster, report: Report, duration: float) -> None:
    """Seed 004's fault: the process dies after Raft committed an entry, before SQLite did."""
    for victim_is_leader in (False, True):
        await _sleep(duration / 6)
        leader = await asyncio.to_thread(cluster.leader)
        victim = (
            leader
            if victim_is_leader
            else random.choice([n for n in cluster.members if n is not leader])
        )
        commit = victim.status()["store"]["raft"]["commit_index"]
        code = victim.stop()
        target = commit + 40
        env = {"CIS_SQL_FAULT": f"exit_before_apply:{target}"}
        victim.extra_args = ["--pause-before-commit-ms", "20"]
        victim.start(env=env)
        report.say(
            f"node {victim.node_id} ({'leader' if victim_is_leader else 'follower'}, stopped"
            f" with status {code}) restarted to exit before committing entry ≥ {target}"
        )
        status = await asyncio.to_thread(victim.wait_exit, max(20.0, duration))
        report.say(f"node {victim.node_id} exited with status {status}")
        if status != 137:
            report.problems.append(f"node {victim.node_id} exited {status}, expected 137")
        victim.extra_args = []
        await _restart(victim, report)
        await _wait_ready(cluster)


async def full(cluster: Cluster, report: Report, duration: float) -> None:
    share = duration / 4
    await restart_single_node(cluster, report, share)
    await leader_kill(cluster, report, share)
    await partition_minority(cluster, report, share)
    await prepare_commit_kill(cluster, report, share)


SCENARIOS: dict[str, Faults] = {
    "full": full,
    "restart_single_node": restart_single_node,
    "prepare_commit_kill": prepare_commit_kill,
    "leader_kill": leader_kill,
    "partition_minority": partition_minority,
}


# ---------------------------------------------------------------------- running and checking


async def run_scenario(name: str, root: Path, duration: float) -> Report:
    report = Report(name)
    started = time.monotonic()
    cluster = Cluster(root)
    try:
        cluster.start()
        leader = await _wait_ready(cluster, 60)
        await asyncio.to_thread(leader.execute, *SCHEMA)
        report.say(f"cluster ready, leader node {leader.node_id}")
        workload = Workload(cluster)
        await workload.run(duration, lambda: SCENARIOS[name](cluster, report, duration))
        for node in cluster.members:
            if not node.running:
                await _restart(node, report)
        await _heal(cluster, report)
        await _wait_ready(cluster, 60)
        await workload.final_reads()
        stats = workload.stats
        report.say(
            f"history: {len(workload.history)} operations"
            f" ({stats.ok} ok, {stats.failed} failed, {stats.unknown} unknown outcome)"
        )
        await asyncio.to_thread(verify, cluster, workload, report)
    except Exception as exc:  # a harness failure is a failed scenario, with the logs
        report.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        cluster.close()
    report.say(f"{'PASS' if report.passed else 'FAIL'} in {time.monotonic() - started:.1f}s")
    for problem in report.problems:
        report.say(f"problem: {problem[:2000]}")
    return report


def verify(cluster: Cluster, workload: Workload, report: Report) -> None:
    if workload.errors:
        report.problems.append(f"unexpected errors: {workload.errors[:5]}")
    result = check(workload.history, time_limit_s=20)
    report.say(f"linearizability: {result.verdict.value} ({result.ops_checked} operations)")
    if result.verdict is not Verdict.LINEARIZABLE:
        report.problems.append(f"history is {result.verdict.value}: {result.key} {result.detail}")
    index = cluster.assert_identical()
    report.say(f"replicas identical at applied index {index}")
    for node in cluster.members:
        rows = node.query("SELECT id FROM acks", level="none")[0].get("values") or []
        present = {row[0] for row in rows}
        lost = workload.acked_rows - present
        if lost:
            report.problems.append(
                f"node {node.node_id} lost acknowledged rows {sorted(lost)[:10]}"
            )
        extra = present - workload.acked_rows - workload.unknown_rows
        if extra:
            report.problems.append(
                f"node {node.node_id} has rows never written {sorted(extra)[:10]}"
            )
            report.say("ledger failures: " + "; ".join(workload.failures[-20:]))
        counter = node.query("SELECT n FROM counter WHERE id = 1", level="none")[0]["values"][0][0]
        low = workload.acked_increments
        high = workload.acked_increments + workload.unknown_increments
        if not low <= counter <= high:
            report.problems.append(
                f"node {node.node_id}: counter {counter} outside [{low}, {high}] (lost or doubled)"
            )
    report.say(
        f"no acknowledged write lost: {len(workload.acked_rows)} ledger rows on every replica,"
        f" counter within [{workload.acked_increments},"
        f" {workload.acked_increments + workload.unknown_increments}]"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--duration", type=float, default=25.0, help="seconds of faults (25)")
    parser.add_argument("--dir", type=Path, default=None, help="keep data and logs here")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 40:
        parser.error("--duration must be between 1 and 40 seconds (the budget is 60 s)")
    root = args.dir or Path(tempfile.mkdtemp(prefix=f"cis-sql-{args.scenario}-"))

    async def bounded() -> Report:
        return await asyncio.wait_for(run_scenario(args.scenario, root, args.duration), BUDGET_S)

    try:
        report = asyncio.run(bounded())
    except TimeoutError:
        print(f"[{args.scenario}] FAIL: over the {BUDGET_S:g}s budget (logs in {root})")
        return 1
    if not report.passed:
        print(f"[{args.scenario}] logs in {root}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

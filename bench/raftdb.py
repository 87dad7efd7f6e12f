#!/usr/bin/env python3
"""Benchmark the replicated SQL service against a 3-member etcd, in the same run.

For each storage mode (``disk``: data under ``--work``; ``tmpfs``: data on /dev/shm, since
pysyncobj itself never fsyncs and etcd does), this starts both clusters side by side:

- a 3-member etcd (``shared/bench/raft/start_etcd.sh``), measured with
  ``kv_bench.py --target etcd``;
- a 3-node ``cis-node sql serve`` cluster on loopback (and, with ``--nosync``, a second one
  started with ``--no-journal-sync``, to measure what fsyncing the Raft journal costs),
  measured with ``kv_bench.py --target rqlite`` against its leader;

and then runs each scenario (write1, write64, read_lin64; batch of 1,000 statements in one
transaction for ours) on one system after the other, ``--reps`` times, so that each pair is
measured minutes apart at most: the machine is shared, and what other processes take (reported
by kv_bench as ``other_cpu_cores``) moves a lot. It records every run's JSON, the Raft term
before and after every run (a change means an election during it), and prints a table with the
ratios ours/etcd per repetition and their median, against the targets of issue 6: at 64
clients writes ≥ 0.5× etcd and linearizable reads ≥ 1× etcd; batched statements ≥ 20,000/s.

    .venv/bin/python bench/raftdb.py --reps 3 --nosync --out bench/results/raftdb

Kept out of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"write64": 0.5, "read_lin64": 1.0}
BATCH_TARGET = 20_000
SCENARIOS = ("write1", "write64", "read_lin64", "batch")


def find_bench_dir() -> Path:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "bench" / "raft"
        if (candidate / "kv_bench.py").exists():
            return candidate
    raise SystemExit("cannot find shared/bench/raft/ (kv_bench.py); pass --bench-dir")


def free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Etcd:
    def __init__(self, args: argparse.Namespace, mode: str) -> None:
        self.args = args
        self.run_dir = args.work / f"etcd-{mode}"
        shutil.rmtree(self.run_dir, ignore_errors=True)
        start = [str(args.bench_dir / "start_etcd.sh")]
        if mode == "tmpfs":
            start.append("--tmpfs")
        subprocess.run([*start, str(self.run_dir)], check=True, stdout=subprocess.DEVNULL)
        env = dict(
            line.split("=", 1)
            for line in (self.run_dir / "etcd.env").read_text().split("\n")
            if "=" in line
        )
        self.url = env["ETCD_LEADER"].strip().strip('"')
        self.pids = [int(p) for p in (self.run_dir / "etcd.pids").read_text().split()]

    def stop(self) -> None:
        subprocess.run(
            [str(self.args.bench_dir / "stop.sh"), "--clean", str(self.run_dir)],
            check=False,
            stdout=subprocess.DEVNULL,
        )


def _get(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # loopback only
        return json.loads(reply.read())


class Ours:
    def __init__(self, args: argparse.Namespace, mode: str, name: str, extra: list[str]) -> None:
        self.run_dir = args.work / f"{name}-{mode}"
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True)
        self.mode = mode
        self.data_root = (
            Path(tempfile.mkdtemp(prefix="cis-bench.", dir="/dev/shm"))
            if mode == "tmpfs"
            else self.run_dir / "data"
        )
        secret = self.run_dir / "cluster.secret"
        subprocess.run(
            [args.python, "-m", "cis", "sql", "init-secret", str(secret)],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        ports = free_ports(6)
        self.raft = [f"127.0.0.1:{p}" for p in ports[:3]]
        self.http = [f"127.0.0.1:{p}" for p in ports[3:]]
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(3):
            peers = ",".join(f"{j + 1}@{self.raft[j]}" for j in range(3) if j != i)
            argv = [
                args.python, "-m", "cis", "sql", "serve",
                "--id", str(i + 1), "--raft", self.raft[i], "--peers", peers,
                "--http", self.http[i], "--data", str(self.data_root / f"n{i + 1}"),
                "--secret-file", str(secret), "--log-level", "warning", *extra,
            ]  # fmt: skip
            log = open(self.run_dir / f"n{i + 1}.log", "wb")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            )
            log.close()
        self.pids = [p.pid for p in self.procs]
        self.url = self._leader_url()

    def _leader_url(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                statuses = [_get(f"http://{h}/status") for h in self.http]
            except OSError:
                continue
            leaders = {s["store"]["leader"]["addr"] for s in statuses}
            if len(leaders) == 1 and "" not in leaders:
                return f"http://{self.http[self.raft.index(leaders.pop())]}"
        raise SystemExit(f"the cluster did not elect a leader; logs in {self.run_dir}")

    def terms(self) -> list[int]:
        return [int(_get(f"http://{h}/status")["store"]["raft"]["term"]) for h in self.http]

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.mode == "tmpfs":
            shutil.rmtree(self.data_root, ignore_errors=True)


def kv_bench(
    args: argparse.Namespace,
    target: str,
    system: Etcd | Ours,
    scenario: str,
    label: str,
) -> dict[str, Any]:
    out = args.out / f"{label}.json"
    count = args.n[scenario]
    cmd = [
        args.python, str(args.bench_dir / "kv_bench.py"),
        "--target", target, "--url", system.url, "--client", "raw",
        "--scenarios", scenario, "-n", f"{scenario}={count}",
        "--server-pids", " ".join(map(str, system.pids)),
        "--label", label, "--run-tag", label.replace(" ", "-"),
        "--out", str(out), "--quiet",
    ]  # fmt: skip
    print(f"# {label}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    terms_before = system.terms() if isinstance(system, Ours) else None
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, timeout=1800)
    result = dict(json.loads(out.read_text()))
    if terms_before is not None and isinstance(system, Ours):
        result["terms"] = {"before": terms_before, "after": system.terms()}
    return result


def figure(run: dict[str, Any] | None, scenario: str) -> float | None:
    if not run:
        return None
    result = run.get("results", {}).get(scenario, {})
    key = "statements_per_s" if scenario == "batch" else "ops_per_s"
    value = result.get(key)
    return float(value) if isinstance(value, int | float) else None


def other_cpu(run: dict[str, Any] | None, scenario: str) -> str:
    value = (run or {}).get("results", {}).get(scenario, {}).get("other_cpu_cores")
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def term_change(run: dict[str, Any] | None) -> str:
    if not run:
        return "-"
    if "terms" in run:
        return f"{max(run['terms']['before'])}→{max(run['terms']['after'])}"
    before = run.get("server_before", {}).get("status", {}).get("raft_term")
    after = run.get("server_after", {}).get("status", {}).get("raft_term")
    return f"{before}→{after}"


def summarize(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| mode | scenario | rep | etcd | cis | cis/etcd | cis no-sync | other CPU (etcd/cis) |"
        " terms etcd | terms cis | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    medians = []
    for mode in args.modes:
        for scenario in SCENARIOS:
            ratios = []
            for rep in range(1, args.reps + 1):
                etcd = runs.get(f"etcd {mode} {scenario} rep{rep}")
                ours = runs.get(f"cis {mode} {scenario} rep{rep}")
                nosync = runs.get(f"cis-nosync {mode} {scenario} rep{rep}")
                a, b, c = figure(etcd, scenario), figure(ours, scenario), figure(nosync, scenario)
                ratio = b / a if a and b else None
                if ratio is not None:
                    ratios.append(ratio)
                target = (
                    f"≥ {TARGETS[scenario]}×"
                    if scenario in TARGETS
                    else (f"≥ {BATCH_TARGET}/s" if scenario == "batch" else "")
                )
                lines.append(
                    f"| {mode} | {scenario} | {rep} | {a or '-'} | {b or '-'} |"
                    f" {f'{ratio:.2f}' if ratio else '-'} | {c or '-'} |"
                    f" {other_cpu(etcd, scenario)}/{other_cpu(ours, scenario)} |"
                    f" {term_change(etcd)} | {term_change(ours)} | {target} |"
                )
            if ratios:
                medians.append(
                    f"{mode} {scenario}: median cis/etcd {statistics.median(ratios):.2f}"
                )
            elif scenario == "batch":
                values = [
                    v
                    for rep in range(1, args.reps + 1)
                    if (v := figure(runs.get(f"cis {mode} batch rep{rep}"), "batch"))
                ]
                if values:
                    medians.append(f"{mode} batch: median {statistics.median(values):.0f} stmts/s")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {m}" for m in medians)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/raftdb-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "raftdb")
    parser.add_argument("--bench-dir", type=Path, default=None)
    parser.add_argument("--modes", default="disk,tmpfs")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("-n", default="write1=2000,write64=20000,read_lin64=20000,batch=200000")
    parser.add_argument("--nosync", action="store_true", help="also run --no-journal-sync")
    args = parser.parse_args()
    args.bench_dir = args.bench_dir or find_bench_dir()
    args.modes = args.modes.split(",")
    args.n = dict(item.split("=") for item in args.n.split(","))
    args.n = {k: int(v) for k, v in args.n.items()}
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    for mode in args.modes:
        systems: list[tuple[str, str, Etcd | Ours]] = []
        try:
            systems.append(("etcd", "etcd", Etcd(args, mode)))
            systems.append(("cis", "rqlite", Ours(args, mode, "cis", [])))
            if args.nosync:
                systems.append(
                    ("cis-nosync", "rqlite", Ours(args, mode, "cis-nosync", ["--no-journal-sync"]))
                )
            for rep in range(1, args.reps + 1):
                for scenario in SCENARIOS:
                    for name, target, system in systems:
                        if scenario == "batch" and target == "etcd":
                            continue
                        label = f"{name} {mode} {scenario} rep{rep}"
                        runs[label] = kv_bench(args, target, system, scenario, label)
        finally:
            for _, _, system in systems:
                system.stop()
    table = summarize(runs, args)
    print(table)
    (args.out / "summary.md").write_text(table + "\n")
    (args.out / "summary.json").write_text(json.dumps(runs, indent=2) + "\n")
    print(f"# results in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

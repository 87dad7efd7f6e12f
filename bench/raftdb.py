#!/usr/bin/env python3
"""Benchmark the replicated SQL service against a 3-member etcd, in the same run.

For each storage mode (``disk``: data under ``--work``; ``tmpfs``: data on /dev/shm, since
pysyncobj itself never fsyncs and etcd does), this runs, one after the other:

1. a fresh 3-member etcd (``shared/bench/raft/start_etcd.sh``) measured with
   ``kv_bench.py --target etcd`` (write1, write64, read_lin64);
2. a fresh 3-node ``cis-node sql serve`` cluster on loopback measured with
   ``kv_bench.py --target rqlite`` against its leader (write1, write64, read_lin64, batch of
   1,000 statements in one transaction).

It records each run's JSON, the Raft term before and after every run (a change means an
election happened during it), and prints a table with the ratios ours/etcd and the targets of
issue 6: at 64 clients writes ≥ 0.5× etcd and linearizable reads ≥ 1× etcd; batched
statements ≥ 20,000/s. Both are measured with the same client (``--client raw``) on the same
machine; on a 2-core VM client and servers share the cores, so read the figures as ratios.

    .venv/bin/python bench/raftdb.py --work /tmp/raftdb-bench --out bench/results/raftdb

Kept out of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
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


def kv_bench(
    args: argparse.Namespace, target: str, url: str, pids: list[int], label: str, out: Path
) -> dict[str, Any]:
    scenarios = "write1,write64,read_lin64" + (",batch" if target == "rqlite" else "")
    cmd = [
        args.python,
        str(args.bench_dir / "kv_bench.py"),
        "--target",
        target,
        "--url",
        url,
        "--client",
        "raw",
        "--scenarios",
        scenarios,
        "-n",
        args.n,
        "--server-pids",
        " ".join(map(str, pids)),
        "--label",
        label,
        "--out",
        str(out),
        "--quiet",
    ]
    print(f"# {label}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, timeout=1800)
    return dict(json.loads(out.read_text()))


def run_etcd(args: argparse.Namespace, mode: str, rep: int) -> dict[str, Any]:
    run_dir = args.work / f"etcd-{mode}-rep{rep}"
    shutil.rmtree(run_dir, ignore_errors=True)
    start = [str(args.bench_dir / "start_etcd.sh")]
    if mode == "tmpfs":
        start.append("--tmpfs")
    subprocess.run([*start, str(run_dir)], check=True, stdout=subprocess.DEVNULL, timeout=120)
    try:
        env = dict(
            line.split("=", 1)
            for line in (run_dir / "etcd.env").read_text().split("\n")
            if "=" in line
        )
        leader = env["ETCD_LEADER"].strip().strip('"')
        pids = [int(p) for p in (run_dir / "etcd.pids").read_text().split()]
        return kv_bench(
            args,
            "etcd",
            leader,
            pids,
            f"etcd-{mode} rep{rep}",
            args.out / f"etcd-{mode}-rep{rep}.json",
        )
    finally:
        subprocess.run(
            [str(args.bench_dir / "stop.sh"), "--clean", str(run_dir)],
            check=False,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )


def _get(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # loopback only
        return json.loads(reply.read())


def run_ours(args: argparse.Namespace, mode: str, rep: int) -> dict[str, Any]:
    run_dir = args.work / f"cis-{mode}-rep{rep}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    data_root = (
        Path(tempfile.mkdtemp(prefix="cis-bench.", dir="/dev/shm"))
        if mode == "tmpfs"
        else run_dir / "data"
    )
    secret = run_dir / "cluster.secret"
    subprocess.run(
        [args.python, "-m", "cis", "sql", "init-secret", str(secret)],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    ports = free_ports(6)
    raft = [f"127.0.0.1:{p}" for p in ports[:3]]
    http = [f"127.0.0.1:{p}" for p in ports[3:]]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(3):
            peers = ",".join(f"{j + 1}@{raft[j]}" for j in range(3) if j != i)
            argv = [
                args.python, "-m", "cis", "sql", "serve",
                "--id", str(i + 1), "--raft", raft[i], "--peers", peers,
                "--http", http[i], "--data", str(data_root / f"n{i + 1}"),
                "--secret-file", str(secret), *args.serve_args,
            ]  # fmt: skip
            log = open(run_dir / f"n{i + 1}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        deadline = time.monotonic() + 60
        leader_url = None
        while time.monotonic() < deadline and leader_url is None:
            time.sleep(0.3)
            try:
                statuses = [_get(f"http://{h}/status") for h in http]
            except OSError:
                continue
            leaders = {s["store"]["leader"]["addr"] for s in statuses}
            if len(leaders) == 1 and "" not in leaders:
                addr = leaders.pop()
                leader_url = f"http://{http[raft.index(addr)]}"
        if leader_url is None:
            raise SystemExit(f"the cluster did not elect a leader; logs in {run_dir}")
        terms_before = [_get(f"http://{h}/status")["store"]["raft"]["term"] for h in http]
        result = kv_bench(
            args,
            "rqlite",
            leader_url,
            [p.pid for p in procs],
            f"cis-{mode} rep{rep}",
            args.out / f"cis-{mode}-rep{rep}.json",
        )
        terms_after = [_get(f"http://{h}/status")["store"]["raft"]["term"] for h in http]
        result["terms"] = {"before": terms_before, "after": terms_after}
        return result
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if mode == "tmpfs":
            shutil.rmtree(data_root, ignore_errors=True)


def figure(run: dict[str, Any], scenario: str, key: str = "ops_per_s") -> float | None:
    result = run.get("results", {}).get(scenario, {})
    value = result.get(key)
    return float(value) if isinstance(value, int | float) else None


def term_change(run: dict[str, Any]) -> str:
    if "terms" in run:
        before, after = run["terms"]["before"], run["terms"]["after"]
        return f"{max(before)}→{max(after)}"
    before = run.get("server_before", {}).get("status", {}).get("raft_term")
    after = run.get("server_after", {}).get("status", {}).get("raft_term")
    return f"{before}→{after}"


def summarize(runs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| mode | scenario | etcd | cis | cis/etcd | target |",
        "|---|---|---|---|---|---|",
    ]
    for name in sorted(runs):
        if not name.startswith("cis-"):
            continue
        ours = runs[name]
        mode_rep = name[len("cis-") :]
        etcd = runs.get(f"etcd-{mode_rep}", {})
        for scenario in ("write1", "write64", "read_lin64"):
            a, b = figure(etcd, scenario), figure(ours, scenario)
            ratio = f"{b / a:.2f}" if a and b else "-"
            target = f"≥ {TARGETS[scenario]}" if scenario in TARGETS else ""
            lines.append(f"| {mode_rep} | {scenario} ops/s | {a} | {b} | {ratio} | {target} |")
        stmts = figure(ours, "batch", "statements_per_s")
        lines.append(f"| {mode_rep} | batch statements/s | - | {stmts} | - | ≥ {BATCH_TARGET} |")
        lines.append(
            f"| {mode_rep} | Raft term (before→after) | {term_change(etcd)} |"
            f" {term_change(ours)} | | |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/raftdb-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "raftdb")
    parser.add_argument("--bench-dir", type=Path, default=None)
    parser.add_argument("--modes", default="disk,tmpfs")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("-n", default="write1=2000,write64=20000,read_lin64=20000,batch=200000")
    parser.add_argument(
        "--serve-arg",
        dest="serve_args",
        action="append",
        default=[],
        help="extra argument for cis-node sql serve (repeat)",
    )
    parser.add_argument("--skip-etcd", action="store_true")
    args = parser.parse_args()
    args.bench_dir = args.bench_dir or find_bench_dir()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    for rep in range(1, args.reps + 1):
        for mode in args.modes.split(","):
            if not args.skip_etcd:
                runs[f"etcd-{mode}-rep{rep}"] = run_etcd(args, mode, rep)
            runs[f"cis-{mode}-rep{rep}"] = run_ours(args, mode, rep)
    table = summarize(runs)
    print(table)
    (args.out / "summary.md").write_text(table + "\n")
    (args.out / "summary.json").write_text(json.dumps(runs, indent=2) + "\n")
    print(f"# results in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

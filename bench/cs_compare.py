#!/usr/bin/env python3
"""Run ``cs_bench.py`` against a fresh Synapse and fresh CIS nodes in one sitting; print ratios.

Usage (from the repository root, after ``make install``)::

    .venv/bin/python bench/cs_compare.py --out-dir /tmp/cs-compare [--runs 2]

For each run it starts a new Synapse (``start_synapse.sh`` into a new directory) and runs the
benchmark against it, then, for each room ``synchronous`` mode (``NORMAL``, the default, and
``FULL``, which is what Synapse's SQLite runs at), initialises a new CIS home, starts
``cis-node run --open-registration`` on 127.0.0.1 and runs the same benchmark with ``--pid``.
Every process it starts is stopped by its own PID, also on failure. The JSON of every run goes
to ``--out-dir``; a Markdown table of the figures and the ratios CIS/Synapse goes to stdout.

The benchmark script and the Synapse helpers live in the shared folder
(``--bench-dir``, default ``../shared/bench/matrix`` beside this checkout, else
``/work/shared/bench/matrix``); they are used as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NODE_NAME = "bench"
SERVER_NAME = f"{NODE_NAME}.cis.local"


def default_bench_dir() -> Path:
    for candidate in (
        ROOT.parent / "shared" / "bench" / "matrix",
        Path("/work/shared/bench/matrix"),
    ):
        if (candidate / "cs_bench.py").is_file():
            return candidate
    return ROOT.parent / "shared" / "bench" / "matrix"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(message: str) -> None:
    print(f"[cs_compare] {message}", file=sys.stderr, flush=True)


def run_bench(
    python: str,
    bench_dir: Path,
    base_url: str,
    server_name: str,
    pid: int,
    out: Path,
    extra: list[str],
) -> dict[str, Any]:
    cmd = [
        python,
        str(bench_dir / "cs_bench.py"),
        "--base-url",
        base_url,
        "--server-name",
        server_name,
        "--pid",
        str(pid),
        "--out",
        str(out),
        *extra,
    ]
    log("running " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, timeout=3600)
    return json.loads(out.read_text())


def start_synapse(bench_dir: Path, data_dir: Path, port: int) -> int:
    out = subprocess.run(
        [str(bench_dir / "start_synapse.sh"), str(data_dir), str(port)],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return int(out.stdout.strip().splitlines()[-1])


def stop_synapse(bench_dir: Path, data_dir: Path) -> None:
    subprocess.run([str(bench_dir / "stop_synapse.sh"), str(data_dir)], check=False, timeout=60)


def start_cis(home: Path, synchronous: str, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    cis_node = str(Path(sys.executable).parent / "cis-node")
    subprocess.run(
        [cis_node, "init", "--node-name", NODE_NAME, "--home", str(home)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (home / "config.toml").write_text(
        f'[storage]\nroom_synchronous = "{synchronous}"\n', encoding="utf-8"
    )
    with log_file.open("wb") as sink:
        proc = subprocess.Popen(
            [
                cis_node,
                "run",
                "--home",
                str(home),
                "--listen",
                f"127.0.0.1:{port}",
                "--open-registration",
                "--log-level",
                "warning",
            ],
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    runtime = home / "run" / "node.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cis-node exited early; see {log_file}")
        if runtime.is_file():
            return proc
        time.sleep(0.2)
    stop_cis(proc)
    raise RuntimeError("cis-node did not start within 60 s")


def stop_cis(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


FIGURES: list[tuple[str, tuple[str, ...], bool]] = [
    # (label, path in the JSON, higher is better)
    ("send_seq msgs/s", ("send_seq", "msgs_per_s"), True),
    ("send_conc msgs/s", ("send_conc", "msgs_per_s"), True),
    ("delivery p50 ms", ("delivery", "latency_ms", "p50"), False),
    ("delivery p99 ms", ("delivery", "latency_ms", "p99"), False),
    ("initial_sync median ms", ("initial_sync", "median_ms"), False),
    ("RSS after setup MB", ("server_rss_mb_after_setup",), False),
    ("RSS at end MB", ("server_memory", "rss_mb"), False),
    ("send_seq server CPU ms/msg", ("send_seq", "server_cpu_ms_per_msg"), False),
    ("send_conc server CPU ms/msg", ("send_conc", "server_cpu_ms_per_msg"), False),
]


def pick(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    labels = list(results)
    lines = [
        "| figure | "
        + " | ".join(labels)
        + " | "
        + " | ".join(f"{lab} / synapse" for lab in labels if lab != "synapse")
        + " |"
    ]
    lines.append("|" + "---|" * (1 + len(labels) * 2 - 1))
    for label, path, higher in FIGURES:
        medians: dict[str, float | None] = {}
        for name, runs in results.items():
            values = [v for r in runs if (v := pick(r, path)) is not None]
            medians[name] = statistics.median(values) if values else None
        row = [label] + [
            "-"
            if medians[n] is None
            else ", ".join(f"{pick(r, path):g}" for r in results[n] if pick(r, path) is not None)
            for n in labels
        ]
        base = medians.get("synapse")
        for name in labels:
            if name == "synapse":
                continue
            mine = medians[name]
            if base and mine:
                ratio = mine / base if higher else base / mine
                row.append(
                    f"{ratio:.1f}x {'faster' if higher else 'better'}"
                    if "MB" not in label
                    else f"{mine / base:.2f} of synapse"
                )
            else:
                row.append("-")
        lines.append("| " + " | ".join(row) + " |")
    ok = {n: [bool(r.get("ok")) for r in runs] for n, runs in results.items()}
    lines.append("")
    lines.append(f"ok: {ok}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--bench-dir", type=Path, default=default_bench_dir())
    parser.add_argument(
        "--bench-python", default=sys.executable, help="python with httpx for cs_bench.py"
    )
    parser.add_argument(
        "--modes", default="NORMAL,FULL", help="room synchronous modes to run CIS with"
    )
    parser.add_argument("--skip-synapse", action="store_true")
    parser.add_argument(
        "bench_args", nargs="*", help="extra cs_bench.py arguments after --, e.g. -- -M 500"
    )
    args = parser.parse_args()
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, list[dict[str, Any]]] = {}
    if not args.skip_synapse:
        results["synapse"] = []
    for mode in args.modes.split(","):
        results[f"cis {mode}"] = []
    for run in range(1, args.runs + 1):
        if not args.skip_synapse:
            data = Path(f"/tmp/cs-compare-synapse-{stamp}-{run}")
            port = free_port()
            pid = start_synapse(args.bench_dir, data, port)
            try:
                results["synapse"].append(
                    run_bench(
                        args.bench_python,
                        args.bench_dir,
                        f"http://127.0.0.1:{port}",
                        "bench.local",
                        pid,
                        out_dir / f"synapse-run{run}.json",
                        args.bench_args,
                    )
                )
            finally:
                stop_synapse(args.bench_dir, data)
        for mode in args.modes.split(","):
            home = out_dir / f"cis-{mode.lower()}-{stamp}-{run}"
            port = free_port()
            proc = start_cis(home, mode, port, out_dir / f"cis-{mode.lower()}-run{run}.log")
            try:
                results[f"cis {mode}"].append(
                    run_bench(
                        args.bench_python,
                        args.bench_dir,
                        f"http://127.0.0.1:{port}",
                        SERVER_NAME,
                        proc.pid,
                        out_dir / f"cis-{mode.lower()}-run{run}.json",
                        args.bench_args,
                    )
                )
            finally:
                stop_cis(proc)
    print(table(results))
    return 0 if all(r.get("ok") for runs in results.values() for r in runs) else 1


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())

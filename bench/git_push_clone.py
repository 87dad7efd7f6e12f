"""Push and clone of a 5,000-commit repository through the Git skill, against ``git clone
--no-local`` of the same repository (the baseline), in the same run.

    .venv/bin/python bench/git_push_clone.py [--commits 5000] [--repeat 3] [--workdir DIR]

It builds the repository with ``git fast-import`` (each commit edits one of 100 files and adds a
line to a growing log, like ordinary history), starts a real ``cis-node run`` on 127.0.0.1:0,
then times, ``--repeat`` times each and reports medians: the baseline clone, a push of every
branch and tag to a fresh ``cis://bench/repo-N``, and a clone from it (both through
``git-remote-cis``). Target: push and clone each at most 3x the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def fast_import_stream(commits: int) -> bytes:
    out: list[bytes] = []
    ts = 1_700_000_000
    log_lines: list[str] = []
    for n in range(1, commits + 1):
        path = f"src/module{n % 100:02d}.txt"
        body = "".join(f"line {n} {k} of {path}\n" for k in range(n % 7 + 3)).encode()
        log_lines.append(f"commit {n}\n")
        if len(log_lines) > 200:
            log_lines = log_lines[-200:]
        log = "".join(log_lines).encode()
        message = f"commit number {n}\n".encode()
        out.append(b"commit refs/heads/main\n")
        out.append(f"mark :{n}\n".encode())
        out.append(f"committer Bench <bench@example.org> {ts + n} +0000\n".encode())
        out.append(f"data {len(message)}\n".encode() + message)
        if n > 1:
            out.append(f"from :{n - 1}\n".encode())
        out.append(f"M 100644 inline {path}\ndata {len(body)}\n".encode() + body)
        out.append(f"M 100644 inline LOG\ndata {len(log)}\n".encode() + log)
        out.append(b"\n")
    out.append(b"reset refs/heads/release\nfrom :%d\n\n" % (commits // 2))
    out.append(
        b"tag v1.0\nfrom :%d\ntagger Bench <bench@example.org> %d +0000\ndata 8\nrelease\n\n"
        % (commits // 2, ts)
    )
    return b"".join(out)


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr.decode()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cis-git-bench-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    home = work / "home"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CIS_HOME": str(home),
        "HOME": str(work),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    source = work / "source"
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True, env=env)
    stream = fast_import_stream(args.commits)
    subprocess.run(["git", "fast-import", "--quiet"], input=stream, cwd=source, check=True, env=env)
    subprocess.run(["git", "gc", "-q"], cwd=source, check=True, env=env)
    objects = subprocess.run(
        ["git", "count-objects", "-v"],
        cwd=source,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    subprocess.run(
        [str(BIN / "cis-node"), "init", "--node-name", "bench"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    log = (work / "node.log").open("w")
    node = subprocess.Popen(
        [str(BIN / "cis-node"), "run", "--listen", "127.0.0.1:0"],
        env=env, stderr=log, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        runtime = home / "run" / "node.json"
        deadline = time.monotonic() + 60
        while not runtime.exists() or json.loads(runtime.read_text()).get("pid") != node.pid:
            if time.monotonic() > deadline or node.poll() is not None:
                raise SystemExit("the node did not start; see node.log")
            time.sleep(0.05)
        baseline, push, clone = [], [], []
        for attempt in range(args.repeat):
            target = work / f"baseline-{attempt}"
            baseline.append(
                run(["git", "clone", "-q", "--no-local", str(source), str(target)], work, env)
            )
            url = f"cis://bench/repo-{attempt}"
            push.append(run(["git", "push", "-q", url, "--all"], source, env))
            run(["git", "push", "-q", url, "--tags"], source, env)
            target = work / f"clone-{attempt}"
            clone.append(run(["git", "clone", "-q", url, str(target)], work, env))
            heads = [
                subprocess.run(
                    ["git", "rev-parse", "main"],
                    cwd=repo,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                for repo in (source, target)
            ]
            assert heads[0] == heads[1], "the clone differs from the source"
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)
        log.close()
    base = statistics.median(baseline)
    print(f"repository: {args.commits} commits; {' '.join(objects.split())}")
    print(f"baseline  git clone --no-local   median {base:.3f} s  runs {_fmt(baseline)}")
    for name, times in (("push  cis://", push), ("clone cis://", clone)):
        median = statistics.median(times)
        print(f"{name:<32} median {median:.3f} s  runs {_fmt(times)}  {median / base:.2f}x")
    return 0


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


if __name__ == "__main__":
    sys.exit(main())

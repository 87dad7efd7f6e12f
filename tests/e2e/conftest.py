"""Real ``cis-node`` processes on loopback, always cleaned up (even when a test fails)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def cis_node(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a ``cis-node`` subcommand to completion."""
    return subprocess.run(
        [sys.executable, "-m", "cis", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class RunningNode:
    home: Path
    process: subprocess.Popen[str]
    log_path: Path
    url: str = ""

    @property
    def admin_token(self) -> str:
        return (self.home / "admin.token").read_text().strip()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


@dataclass
class Processes:
    """Every process a test started; killed at teardown."""

    tmp: Path
    started: list[subprocess.Popen[str]] = field(default_factory=list)
    files: list[IO[str]] = field(default_factory=list)

    def popen(
        self, argv: list[str], log_name: str, **kwargs: Any
    ) -> tuple[subprocess.Popen[str], Path]:
        log_path = self.tmp / log_name
        log_file = log_path.open("w", encoding="utf-8")
        self.files.append(log_file)
        process = subprocess.Popen(
            argv, stderr=log_file, text=True, cwd=REPO, start_new_session=True, **kwargs
        )
        self.started.append(process)
        return process, log_path

    def run_node(
        self, home: Path, *extra: str, name: str = "node", env: dict[str, str] | None = None
    ) -> RunningNode:
        """``cis-node run`` on port 0 (``env`` added to the environment); returns once
        ``run/node.json`` names this process."""
        process, log_path = self.popen(
            [sys.executable, "-m", "cis", "run", "--home", str(home), "--listen", "127.0.0.1:0",
             *extra],
            f"{name}-{len(self.started)}.log",
            stdout=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        node = RunningNode(home, process, log_path)
        runtime = home / "run" / "node.json"

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"cis-node run exited {process.returncode}:\n{node.log()}")
            try:
                data = json.loads(runtime.read_text())
            except (FileNotFoundError, ValueError):
                return False
            if data.get("pid") != process.pid:
                return False
            node.url = str(data["url"])
            return True

        wait_for(ready, START_TIMEOUT_S, "the node to start")
        return node

    def writer(self, home: Path, *extra: str, name: str = "writer") -> subprocess.Popen[str]:
        process, _ = self.popen(
            [sys.executable, "-m", "tests.e2e.writer", "--home", str(home), *extra],
            f"{name}-{len(self.started)}.log",
            stdout=subprocess.PIPE,
        )
        return process

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        for handle in self.files:
            handle.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.cleanup()


@pytest.fixture
def node_home(tmp_path: Path) -> Path:
    """A freshly initialised home."""
    home = tmp_path / "home"
    result = cis_node("init", "--home", str(home), "--node-name", "alpha")
    assert result.returncode == 0, result.stderr
    return home

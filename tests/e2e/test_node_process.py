"""``cis-node run`` as a real process: serving, status, the home's lock, stopping on signals."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Processes, cis_node, wait_for

pytestmark = pytest.mark.e2e

STATUS_KEYS = {
    "node_id", "did", "did_key", "server_name", "version", "running", "listen", "uptime_s",
    "rooms", "storage",
}  # fmt: skip
STORAGE_KEYS = {"node_db_bytes", "rooms_bytes", "blobs_bytes", "total_bytes"}
LOG_LINE = re.compile(
    r"^ts=\S+ level=(debug|info|warning|error) logger=\S+ action=\S+"
    r'( \S+=("([^"\\]|\\.)*"|\S*))*$'
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_then_stops_within_5s_with_long_polls_open(
    processes: Processes, node_home: Path, sig: signal.Signals
) -> None:
    node = processes.run_node(node_home)
    status = node.get("/_cis/admin/v1/status").json()
    assert set(status) == STATUS_KEYS and set(status["storage"]) == STORAGE_KEYS
    assert status["running"] is True and status["node_id"] == "alpha"
    assert node.url == f"http://{status['listen']}"
    assert isinstance(status["uptime_s"], int) and status["rooms"] == 0
    cli = cis_node("status", "--home", str(node_home), "--json")
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(cli.stdout)
    assert set(from_cli) == STATUS_KEYS and from_cli["running"] is True
    assert from_cli["did"] == status["did"] and from_cli["listen"] == status["listen"]

    # Secrets in a query string or a header never reach the log.
    secret = "Qs3cr3tQueryValue"
    assert node.get(f"/_cis/admin/v1/rooms?access_token={secret}").status_code == 401
    auth = {"Authorization": f"Bearer {node.admin_token}"}
    assert node.get("/_cis/admin/v1/rooms", headers=auth).json() == {"rooms": []}
    wrong = node.get("/_cis/admin/v1/rooms", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.json()["errcode"] == "M_UNKNOWN_TOKEN"

    with ThreadPoolExecutor(max_workers=3) as pool:
        polls = [
            pool.submit(
                httpx.get,
                f"{node.url}/_cis/admin/v1/stream?from=1000000&timeout=60000",
                headers=auth,
                timeout=30,
            )
            for _ in range(3)
        ]
        time.sleep(0.5)  # let the three requests reach the server
        assert not any(p.done() for p in polls)
        started = time.monotonic()
        code = node.stop(sig)
        elapsed = time.monotonic() - started
        answers = [p.result(timeout=10) for p in polls]
    assert code == 0, node.log()
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    assert all(a.status_code == 200 and "position" in a.json() for a in answers)
    assert not (node_home / "run" / "node.json").exists()

    log = node.log()
    for line in log.splitlines():
        assert LOG_LINE.match(line), line
    for forbidden in (secret, node.admin_token, "access_token", "Authorization", "Bearer"):
        assert forbidden not in log
    assert "action=node_started" in log and "action=node_stopped clean=true" in log
    after = json.loads(cis_node("status", "--home", str(node_home), "--json").stdout)
    assert after["running"] is False and after["listen"] is None and after["uptime_s"] is None


def test_the_lock_refuses_a_second_run_init_and_restore(
    processes: Processes, node_home: Path, tmp_path: Path
) -> None:
    node = processes.run_node(node_home)
    pid = node.process.pid
    for args in (
        ("run", "--listen", "127.0.0.1:0"),
        ("init", "--node-name", "beta", "--force"),
    ):
        result = cis_node(*args, "--home", str(node_home))
        assert result.returncode == 1
        assert result.stderr == f"error: {node_home} is in use by another cis-node (pid {pid}); "\
            "stop it first or choose another --home\n"  # fmt: skip
    backup = tmp_path / "backup"
    assert cis_node("backup", "--home", str(node_home), str(backup)).returncode == 0
    restore = cis_node("restore", str(backup), "--home", str(node_home), "--force")
    assert restore.returncode == 1 and "in use by another cis-node" in restore.stderr
    status = node.get("/_cis/admin/v1/status").json()
    assert status["node_id"] == "alpha"  # the running node's home was not touched
    assert node.stop() == 0


def test_after_kill_9_status_says_stopped_and_run_recovers(
    processes: Processes, node_home: Path
) -> None:
    node = processes.run_node(node_home)
    node.stop(signal.SIGKILL)
    status = json.loads(cis_node("status", "--home", str(node_home), "--json").stdout)
    assert status["running"] is False
    again = processes.run_node(node_home, name="again")
    assert "action=unclean_stop_detected" in again.log()
    assert "action=reindexed" in again.log()
    assert again.stop() == 0


def test_ipv6_loopback(processes: Processes, node_home: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    process, log_path = processes.popen(
        [sys.executable, "-m", "cis", "run", "--home", str(node_home), "--listen", "[::1]:0"],
        "v6.log",
    )
    runtime = node_home / "run" / "node.json"
    wait_for(runtime.exists, 60, "the node to start")
    url = json.loads(runtime.read_text())["url"]
    assert url.startswith("http://[::1]:")
    status = httpx.get(f"{url}/_cis/admin/v1/status", timeout=30).json()
    assert status["listen"].startswith("[::1]:")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0, log_path.read_text()

"""The trust switch on real processes: a node blacklisted (level 0, set with the node stopped)
never gets a tunnel, though the anchor tells both sides where the other is; ``cis-node trust``
and ``cis-node peers`` against the running node go through its admin API, and the change
applies within 2 s both ways (raising reconnects, lowering closes)."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import Processes, cis_node, wait_for
from tests.e2e.fed import FedNode, init_home, run_node, start_anchor, wait_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

APPLY_WITHIN_S = 2.0


def _did(home: object) -> str:
    result = cis_node("status", "--home", str(home), "--json")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["did"])


def _cli(*args: str) -> str:
    result = cis_node(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _peers(node: FedNode) -> dict[str, dict[str, object]]:
    answer = json.loads(_cli("peers", "--home", str(node.home), "--json"))
    assert answer["running"] is True
    return {str(p["node_id"]): p for p in answer["peers"]}


def test_a_blacklisted_node_never_gets_a_tunnel_until_trust_rises(processes: Processes) -> None:
    anchor = start_anchor(processes)
    homes = {n: init_home(processes, n) for n in ("alpha", "beta", "gamma")}
    gamma_did = _did(homes["gamma"])
    out = _cli("trust", "set", gamma_did, "0", "--home", str(homes["alpha"]))
    assert "running" not in out  # written to the stopped node's node.db
    alpha, beta, gamma = (run_node(processes, homes[n], anchor) for n in ("alpha", "beta", "gamma"))
    wait_mesh([alpha, beta])
    wait_mesh([beta, gamma])

    # gamma learnt alpha's endpoint from the anchor and dials it; alpha refuses each attempt.
    def refused() -> bool:
        log = alpha.running.log()
        return "action=handshake_refused" in log and f"trust level 0 for {gamma_did}" in log

    wait_for(refused, 30, "alpha to refuse gamma's handshake")
    time.sleep(1.0)  # a few more attempts (backoff cap 1 s in the test configuration)
    assert "gamma" not in alpha.online_peers()
    assert "alpha" not in gamma.online_peers()
    seen = _peers(alpha)
    assert seen["beta"]["online"] is True
    assert "gamma" not in seen or (seen["gamma"]["online"] is False and seen["gamma"]["trust"] == 0)
    listed = json.loads(_cli("trust", "list", "--home", str(alpha.home), "--json"))
    assert {"did": gamma_did, "level": 0} in listed["entries"]

    # Raised on the running node: the tunnel opens within 2 s.
    out = _cli("trust", "set", gamma_did, "1", "--home", str(alpha.home))
    assert "applied by the running node" in out
    wait_for(lambda: "gamma" in alpha.online_peers(), APPLY_WITHIN_S, "alpha's tunnel to gamma")
    wait_for(lambda: "alpha" in gamma.online_peers(), APPLY_WITHIN_S, "gamma's tunnel to alpha")
    assert _peers(alpha)["gamma"]["trust"] == 1

    # Lowered again: closed within 2 s, on both sides, and it stays closed.
    _cli("trust", "set", gamma_did, "0", "--home", str(alpha.home))
    wait_for(lambda: "gamma" not in alpha.online_peers(), APPLY_WITHIN_S, "the tunnel to close")
    wait_for(lambda: "alpha" not in gamma.online_peers(), APPLY_WITHIN_S, "gamma to see it closed")
    time.sleep(1.5)
    assert "gamma" not in alpha.online_peers() and "alpha" not in gamma.online_peers()
    for node in (alpha, beta, gamma):
        assert node.running.stop() == 0

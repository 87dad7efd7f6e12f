"""``cis-node trust`` and ``cis-node peers`` on a stopped node (they work on ``node.db``).
The same commands against a running node go through its admin API: tests/e2e/test_fed_trust.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cis.cli.main import main
from cis.identity import NodeIdentity

OTHER = NodeIdentity.generate("beta")


@pytest.fixture
def home(cis_home: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["init", "--home", str(cis_home), "--node-name", "alpha"]) == 0
    capsys.readouterr()
    return cis_home


def _listed(home: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["trust", "list", "--home", str(home), "--json"]) == 0
    answer: dict[str, object] = json.loads(capsys.readouterr().out)
    return answer


def test_set_and_list_offline_in_both_did_forms(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _listed(home, capsys) == {"default": 1, "entries": []}
    assert main(["trust", "set", str(OTHER.did), "0", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"{OTHER.did} trust 0"
    assert main(["trust", "set", str(OTHER.did_key), "2", "--home", str(home)]) == 0
    capsys.readouterr()
    entries = _listed(home, capsys)["entries"]
    assert {(e["did"], e["level"]) for e in entries} == {  # type: ignore[attr-defined]
        (str(OTHER.did), 0),
        (str(OTHER.did_key), 2),
    }
    assert main(["trust", "set", str(OTHER.did), "1", "--home", str(home)]) == 0
    capsys.readouterr()
    entries = _listed(home, capsys)["entries"]
    assert (str(OTHER.did), 1) in {(e["did"], e["level"]) for e in entries}  # type: ignore[attr-defined]
    assert main(["trust", "list", "--home", str(home)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("default 1\n") and f"1  {OTHER.did}" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "did:web:example.org", "1"], "did"),
        (["set", "did:cis:nonsense", "1"], "did"),
        (["set", str(OTHER.did), "3"], "3"),
        (["rebind", "not-a-did"], "did"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["trust", *args, "--home", str(home)])
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert message in err.lower() and "Traceback" not in err
    assert _listed(home, capsys)["entries"] == []


def test_rebind_offline(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trust", "rebind", str(OTHER.did), "--home", str(home)]) == 0
    assert capsys.readouterr().out == (
        f"{OTHER.server_name}: unpinned nothing; pins the key of the next authenticated handshake\n"
    )
    # A did:key names no server by itself: only one this node has seen can be rebound.
    assert main(["trust", "rebind", str(OTHER.did_key), "--home", str(home)]) == 1
    assert capsys.readouterr().err == f"error: no server is known under {OTHER.did_key}\n"


def test_peers_offline(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["peers", "--home", str(home), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"peers": [], "running": False}
    assert main(["peers", "--home", str(home)]) == 0
    assert capsys.readouterr().out == "no peers\n"

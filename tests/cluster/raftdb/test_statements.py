"""Statements at the boundary, the tokenizer, configuration and secrets, the users file."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from cis.cluster.raftdb.auth import Users
from cis.cluster.raftdb.config import (
    Faults,
    RaftDBConfig,
    load_secret,
    parse_address,
    parse_peers,
    write_secret,
)
from cis.cluster.raftdb.errors import ConfigError, StatementError
from cis.cluster.raftdb.sqltext import first_keyword, null_parameters, string_literals
from cis.cluster.raftdb.statements import (
    ReadLevel,
    Statement,
    check_wire,
    parse_statements,
)


def test_the_three_rqlite_statement_shapes() -> None:
    got = parse_statements(
        ["SELECT 1", ["INSERT INTO t VALUES (?, ?)", "a", 2], ["SELECT :x", {"x": True}], ""]
    )
    assert got == [
        Statement("SELECT 1"),
        Statement("INSERT INTO t VALUES (?, ?)", ("a", 2)),
        Statement("SELECT :x", (), (("x", 1),)),
    ]
    assert got[2].bindings() == {"x": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"q": "SELECT 1"},
        [1],
        [["SELECT ?", [1, 2]]],
        [["SELECT ?", {"a": 1}, 3]],
        [["SELECT ?", 2**64]],
        [["SELECT ?", float("nan")]],
        [[]],
        ["SELECT '\x00'"],
    ],
)
def test_malformed_bodies_are_refused(body: object) -> None:
    with pytest.raises(StatementError):
        parse_statements(body)


def test_the_log_form_is_checked_again_on_every_replica() -> None:
    assert check_wire(("SELECT ?", (1, None, 1.5, "x", b"y"))) == (
        "SELECT ?",
        (1, None, 1.5, "x", b"y"),
    )
    for bad in [("x",), (1, ()), ("SELECT ?", [1]), ("SELECT ?", (object(),)), ("a\x00", ())]:
        with pytest.raises(StatementError):
            check_wire(bad)


def test_read_levels() -> None:
    assert ReadLevel.parse(None, ReadLevel.WEAK) is ReadLevel.WEAK
    assert ReadLevel.parse("Linearizable", ReadLevel.WEAK) is ReadLevel.LINEARIZABLE
    assert ReadLevel.parse("auto", ReadLevel.NONE) is ReadLevel.WEAK
    with pytest.raises(StatementError):
        ReadLevel.parse("eventual", ReadLevel.WEAK)


def test_the_tokenizer() -> None:
    assert first_keyword("  -- note\n /* c */ vacuum") == "VACUUM"
    assert first_keyword("(SELECT 1)") == ""
    assert null_parameters("SELECT ? , :a, @b, $c, ?12, '?' FROM t") == (
        "SELECT NULL , NULL, NULL, NULL, NULL, '?' FROM t"
    )
    assert string_literals("SELECT 'it''s', \"now\", x'00', 'NOW'") == ["it's", "NOW"]


def test_addresses_and_peers() -> None:
    assert parse_address("localhost:4001", "x") == ("127.0.0.1", 4001)
    assert parse_address("[::1]:9", "x") == ("::1", 9)
    assert parse_peers("1@127.0.0.1:1,2@127.0.0.1:2") == {"1": "127.0.0.1:1", "2": "127.0.0.1:2"}
    for bad in ["1@x:1", "1@127.0.0.1", "127.0.0.1:1", "1@127.0.0.1:1,1@127.0.0.1:2"]:
        with pytest.raises(ConfigError):
            parse_peers(bad)
    with pytest.raises(ConfigError, match="own"):
        RaftDBConfig(
            node_id="1",
            raft_addr="127.0.0.1:1",
            data_dir=Path("/tmp/x"),
            secret="x",
            peers={"2": "127.0.0.1:1"},
        )


def test_secrets_are_random_private_and_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_secret(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    secret = load_secret(path)
    assert len(bytes.fromhex(secret)) == 32
    with pytest.raises(ConfigError, match="exists"):
        write_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_secret(path)
    with pytest.raises(ConfigError, match="32 random bytes"):
        load_secret(None, {"CIS_SQL_SECRET": "abcdef0123456789"})
    with pytest.raises(ConfigError, match="no cluster secret"):
        load_secret(None, {})
    config = RaftDBConfig(node_id="1", raft_addr="127.0.0.1:1", data_dir=tmp_path, secret=secret)
    assert secret not in repr(config)


def test_fault_settings() -> None:
    faults = Faults.parse("exit_before_apply:12,max_page_count:50", pause_before_commit_ms=5)
    assert faults == Faults(5, 12, False, False, 50)
    assert Faults.parse(None) == Faults()
    for bad in ["exit_before_apply:0", "explode", "max_page_count:x"]:
        with pytest.raises(ConfigError):
            Faults.parse(bad)


def test_the_rqlite_users_file(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text(
        json.dumps(
            [
                {"username": "bob", "password": "pw1", "perms": ["query", "status"]},
                {"username": "root", "password": "pw2", "perms": ["all"]},
                {"username": "*", "perms": ["ready"]},
            ]
        )
    )
    users = Users.load(path)

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert users.allowed(basic("bob", "pw1"), "query")
    assert not users.allowed(basic("bob", "pw1"), "execute")
    assert not users.allowed(basic("bob", "nope"), "query")
    assert users.allowed(basic("root", "pw2"), "execute")
    assert users.allowed(None, "ready")
    assert not users.allowed(None, "query")
    assert not users.allowed("Basic !!!", "query")
    path.write_text(json.dumps([{"username": "x", "password": "$2a$10$abc", "perms": []}]))
    with pytest.raises(ConfigError, match="bcrypt"):
        Users.load(path)

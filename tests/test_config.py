from __future__ import annotations

from pathlib import Path

import pytest

from cis.cli.main import main
from cis.config import ConfigError, ListenAddress, load_config, render_config
from cis.home import Home
from cis.storage.sqlite import Synchronous


def test_defaults(tmp_path: Path) -> None:
    config = load_config(Home(tmp_path), environ={})
    assert str(config.listen) == "127.0.0.1:8484"
    assert config.log_level == "info" and config.room_synchronous is Synchronous.NORMAL
    assert config.max_open_rooms == 0 and config.room_cache_kib == 256
    assert config.event_loop == "uvloop"
    assert set(config.sources.values()) == {"default"}


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.config.write_text(
        '[node]\nlisten = "0.0.0.0:9000"\nlog_level = "warning"\n'
        '[storage]\nroom_synchronous = "FULL"\nmax_open_rooms = 12\n'
    )
    environ = {"CIS_LISTEN": "127.0.0.1:9001", "CIS_LOG_LEVEL": "debug"}
    config = load_config(home, flags={"--listen": "[::1]:9002"}, environ=environ)
    assert config.listen == ListenAddress("::1", 9002)
    assert config.sources["node.listen"] == "flag --listen"
    assert config.log_level == "debug" and config.sources["node.log_level"] == "env CIS_LOG_LEVEL"
    assert config.room_synchronous is Synchronous.FULL
    assert config.sources["storage.room_synchronous"] == "file"
    assert config.max_open_rooms == 12
    assert config.room_cache_kib == 256 and config.sources["storage.room_cache_kib"] == "default"
    shown = render_config(config)
    assert 'listen = "[::1]:9002"  # flag --listen' in shown
    assert 'room_synchronous = "FULL"  # file' in shown
    assert "room_cache_kib = 256  # default" in shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[node]\nlisten = 8484\n", r"node\.listen \(config\.toml\): expected HOST:PORT"),
        ('[node]\nlisten = "host:99999"\n', "port must be a number from 0 to 65535"),
        ('[node]\nlisten = "::1:80"\n', "put an IPv6 address in brackets"),
        ('[node]\nlog_level = "loud"\n', "must be one of debug, info, warning, error"),
        ('[node]\nevent_loop = "trio"\n', "must be one of uvloop, asyncio"),
        ('[storage]\nroom_synchronous = "OFF"\n', "must be NORMAL or FULL"),
        ("[storage]\nmax_open_rooms = -1\n", "must be an integer from 0"),
        ("[storage]\nmax_open_rooms = true\n", "must be an integer"),
        ("[storage]\nsurprise = 1\n", "unknown setting storage.surprise"),
        ('[nodes]\nlisten = "a:1"\n', r"unknown section \[nodes\]"),
        ("[node\n", "config.toml: "),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    home = Home(tmp_path)
    home.config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(home, environ={})


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.listen \(env CIS_LISTEN\)"):
        load_config(Home(tmp_path), environ={"CIS_LISTEN": "nope"})


def test_print_config_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIS_ROOM_SYNCHRONOUS", "full")
    args = ["run", "--home", str(tmp_path), "--listen", "127.0.0.1:0", "--print-config"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert 'listen = "127.0.0.1:0"  # flag --listen' in out
    assert 'room_synchronous = "FULL"  # env CIS_ROOM_SYNCHRONOUS' in out
    assert main(["run", "--home", str(tmp_path), "--listen", "bad", "--print-config"]) == 1
    assert capsys.readouterr().err.startswith("error: node.listen (flag --listen): ")

"""The node's configuration: flags > environment > ``$HOME/config.toml`` > defaults.

Every setting is declared once in ``SETTINGS`` (its TOML section and key, environment variable,
command-line flag, default and parser), so the four sources cannot drift apart. The file is read
with the standard ``tomllib``; an unknown section or key, or a bad value, is a one-line
``ConfigError`` naming where it came from. ``cis-node run --print-config`` shows the result
with the source of every value::

    [node]
    listen = "127.0.0.1:8484"        # default
    log_level = "debug"              # env CIS_LOG_LEVEL

To add a setting: a field on ``Config`` and a ``Setting`` in ``SETTINGS``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cis.errors import CisError
from cis.home import Home
from cis.storage.sqlite import Synchronous

__all__ = ["SETTINGS", "Config", "ConfigError", "ListenAddress", "load_config", "render_config"]


class ConfigError(CisError):
    """A configuration value (from any source) that cannot be used."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """``HOST:PORT`` or ``[IPv6]:PORT``; port 0 asks the system for a free one."""
        if not isinstance(text, str) or not text:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8484 or [::1]:8484")
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise ValueError("expected [IPv6]:PORT, e.g. [::1]:8484")
            try:
                ipaddress.IPv6Address(host)
            except ValueError as exc:
                raise ValueError(f"{host!r} is not an IPv6 address") from exc
        else:
            host, sep, port = text.rpartition(":")
            if not sep or not host:
                raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8484 or [::1]:8484")
            if ":" in host:
                raise ValueError("put an IPv6 address in brackets: [::1]:8484")
            if any(c.isspace() or c in "/?#@" for c in host):
                raise ValueError(f"{host!r} is not a host name or address")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"port must be a number from 0 to 65535, not {port!r}")
        return cls(host, int(port))


LOG_LEVELS: Final = ("debug", "info", "warning", "error")


def _listen(value: object) -> ListenAddress:
    if isinstance(value, ListenAddress):
        return value
    return ListenAddress.parse(str(value) if not isinstance(value, str) else value)


def _log_level(value: object) -> str:
    level = str(value).lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def _synchronous(value: object) -> Synchronous:
    try:
        return Synchronous(str(value).upper())
    except ValueError as exc:
        raise ValueError("must be NORMAL or FULL") from exc


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


SKILL_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")


def _skill_names(value: object) -> tuple[str, ...]:
    """A list of skill names (``CIS_SKILLS=git,memory``; an empty string enables none)."""
    if isinstance(value, str):
        items: list[object] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("must be a list of skill names")
    names: list[str] = []
    for item in items:
        if not isinstance(item, str) or not SKILL_NAME_RE.match(item):
            raise ValueError(f"{item!r} is not a skill name ([a-z][a-z0-9_]{{0,31}})")
        if item not in names:
            names.append(item)
    return tuple(names)


def _float_between(low: float, high: float) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value) if isinstance(value, int | float | str) else None
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise ValueError(f"must be a number from {low:g} to {high:g}")
        return number

    return parse


def _url_list(value: object) -> tuple[str, ...]:
    """A list of URLs: repeated flags, a TOML array, or comma-separated text (environment)."""
    if isinstance(value, str):
        items: list[object] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("must be a list of URLs")
    urls: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item or any(c.isspace() for c in item):
            raise ValueError("must be a list of URLs")
        if item not in urls:
            urls.append(item)
    return tuple(urls)


def _anchor_urls(value: object) -> tuple[str, ...]:
    urls = _url_list(value)
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return urls


def _peer_urls(value: object) -> tuple[str, ...]:
    from cis.federation.endpoints import parse_endpoint

    urls = _url_list(value)
    out: list[str] = []
    for url in urls:
        try:
            out.append(parse_endpoint(url))
        except Exception as exc:
            raise ValueError(f"{url!r}: {exc}") from None
    return tuple(out)


def _advertise(value: object) -> ListenAddress | None:
    if value is None or value == "":
        return None
    return _listen(value)


def _optional_path(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be a file path")
    return value


def _int_between(low: int, high: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        try:
            number = int(value) if isinstance(value, int | str) else None
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return number

    return parse


@dataclass(frozen=True, slots=True)
class Setting:
    section: str
    key: str
    env: str
    flag: str | None
    default: object
    parse: Callable[[object], object]
    help: str
    attr: str | None = None
    """The ``Config`` field, when it is not ``key`` (keys repeat across sections)."""

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def field(self) -> str:
        return self.attr or self.key


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(
        "node", "listen", "CIS_LISTEN", "--listen", "127.0.0.1:8484", _listen,
        "HOST:PORT the HTTP server binds (port 0: any free port; [::1]:PORT for IPv6)",
    ),
    Setting(
        "node", "log_level", "CIS_LOG_LEVEL", "--log-level", "info", _log_level,
        "debug, info, warning or error",
    ),
    Setting(
        "storage", "room_synchronous", "CIS_ROOM_SYNCHRONOUS", None, "NORMAL", _synchronous,
        "NORMAL or FULL for room databases (node.db is always FULL)",
    ),
    Setting(
        "storage", "max_open_rooms", "CIS_MAX_OPEN_ROOMS", None, 0, _int_between(0, 100_000),
        "room databases open at once; 0: min(256, (RLIMIT_NOFILE - 64) / 6)",
    ),
    Setting(
        "storage", "room_cache_kib", "CIS_ROOM_CACHE_KIB", None, 256, _int_between(64, 1 << 20),
        "SQLite page cache per room connection, in KiB",
    ),
    Setting(
        "matrix", "open_registration", "CIS_OPEN_REGISTRATION", "--open-registration", False,
        _bool, "let anyone register an account through the Client-Server API",
    ),
    Setting(
        "matrix", "max_upload_bytes", "CIS_MAX_UPLOAD_BYTES", None, 50 * 1024 * 1024,
        _int_between(1024, 1 << 34), "largest media upload, in bytes",
    ),
    Setting(
        "federation", "anchors", "CIS_ANCHORS", "--anchor", (), _anchor_urls,
        "anchor URLs to heartbeat to and learn peers from (repeatable)",
    ),
    Setting(
        "federation", "peers", "CIS_PEERS", "--peer", (), _peer_urls,
        "static peers, ws://HOST:PORT[/path] (repeatable; path default /_cis/federation/v1)",
    ),
    Setting(
        "federation", "advertise", "CIS_ADVERTISE", "--advertise", None, _advertise,
        "HOST:PORT other nodes can reach this node at (port 0: the bound port)",
    ),
    Setting(
        "federation", "anchor_ca", "CIS_ANCHOR_CA", "--anchor-ca", None, _optional_path,
        "CA bundle to verify the anchor's TLS certificate (default: the system store)",
    ),
    Setting(
        "federation", "default_trust", "CIS_DEFAULT_TRUST", None, 1, _int_between(0, 2),
        "trust level of a peer not in did_trust: 0 none, 1 read, 2 full",
    ),
    Setting(
        "federation", "anchor_interval", "CIS_ANCHOR_INTERVAL", None, 30.0,
        _float_between(0.05, 3600), "seconds between anchor heartbeats and polls",
    ),
    Setting(
        "federation", "ping_interval", "CIS_PING_INTERVAL", None, 5.0, _float_between(0.05, 600),
        "seconds between tunnel pings (they measure RTT)",
    ),
    Setting(
        "federation", "silence_timeout", "CIS_SILENCE_TIMEOUT", None, 15.0,
        _float_between(0.1, 3600), "seconds of silence after which a tunnel is closed",
    ),
    Setting(
        "federation", "catchup_interval", "CIS_CATCHUP_INTERVAL", None, 60.0,
        _float_between(0.1, 3600), "seconds between forward-extremity exchanges with each peer",
    ),
    Setting(
        "federation", "backoff_cap", "CIS_BACKOFF_CAP", None, 60.0, _float_between(0.1, 3600),
        "longest wait between reconnection attempts, in seconds",
    ),
    Setting(
        "skills", "enabled", "CIS_SKILLS", None, ("git", "memory"), _skill_names,
        "the installed skills this node runs (docs/skills.md)", "skills_enabled",
    ),
    Setting(
        "skills", "handler_timeout_s", "CIS_SKILL_HANDLER_TIMEOUT_S", None, 30.0,
        _float_between(0.05, 3600), "a skill call overrunning this is disabled",
        "skill_handler_timeout_s",
    ),
    Setting(
        "skills", "events_per_s", "CIS_SKILL_EVENTS_PER_S", None, 50, _int_between(1, 100_000),
        "events a skill may send per second (sustained)", "skill_events_per_s",
    ),
    Setting(
        "skills", "events_burst", "CIS_SKILL_EVENTS_BURST", None, 500, _int_between(1, 1_000_000),
        "events a skill may send in a burst; past rate and burst it is flooding",
        "skill_events_burst",
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Config:
    listen: ListenAddress
    log_level: str
    room_synchronous: Synchronous
    max_open_rooms: int
    room_cache_kib: int
    open_registration: bool
    max_upload_bytes: int
    anchors: tuple[str, ...]
    peers: tuple[str, ...]
    advertise: ListenAddress | None
    anchor_ca: str | None
    default_trust: int
    anchor_interval: float
    ping_interval: float
    silence_timeout: float
    catchup_interval: float
    backoff_cap: float
    skills_enabled: tuple[str, ...]
    skill_handler_timeout_s: float
    skill_events_per_s: int
    skill_events_burst: int
    sources: Mapping[str, str]
    """Where each setting came from: ``default``, ``file``, ``env CIS_…`` or ``flag --…``."""
    skill_settings: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """Each ``[skills.NAME]`` table of the file, handed to that skill as its configuration."""


def load_config(
    home: Home,
    *,
    flags: Mapping[str, object | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve every setting. ``flags`` maps flag names (``--listen``) to given values."""
    flags = flags or {}
    environ = os.environ if environ is None else environ
    from_file = _read_file(home.config)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        raw: object = setting.default
        source = "default"
        if setting.name in from_file:
            raw, source = from_file[setting.name], "file"
        if setting.env in environ:
            raw, source = environ[setting.env], f"env {setting.env}"
        flag_value = flags.get(setting.flag) if setting.flag is not None else None
        if flag_value is not None and flag_value != ():
            raw, source = flag_value, f"flag {setting.flag}"
        where = home.config.name if source == "file" else source
        try:
            values[setting.field] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{setting.name} ({where}): {exc}") from None
        sources[setting.name] = source
    if values["silence_timeout"] <= values["ping_interval"]:
        raise ConfigError("federation.silence_timeout must be longer than federation.ping_interval")
    return Config(**values, sources=sources, skill_settings=_skill_tables(home.config))


def _read_file(path: Path) -> dict[str, object]:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        document = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    known = {s.name for s in SETTINGS}
    sections = {s.section for s in SETTINGS}
    flat: dict[str, object] = {}
    for section, table in document.items():
        if section not in sections or not isinstance(table, dict):
            raise ConfigError(f"{path}: unknown section [{section}]")
        for key, value in table.items():
            if section == "skills" and isinstance(value, dict):
                continue  # [skills.NAME]: that skill's own table (``_skill_tables``)
            name = f"{section}.{key}"
            if name not in known:
                raise ConfigError(f"{path}: unknown setting {name}")
            flat[name] = value
    return flat


def _skill_tables(path: Path) -> dict[str, dict[str, object]]:
    """The ``[skills.NAME]`` tables of the file (already read and checked by ``_read_file``)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    skills = document.get("skills")
    if not isinstance(skills, dict):
        return {}
    tables: dict[str, dict[str, object]] = {}
    for name, table in skills.items():
        if isinstance(table, dict):
            if not SKILL_NAME_RE.match(name):
                raise ConfigError(f"{path}: [skills.{name}] does not name a skill")
            tables[name] = dict(table)
    return tables


def _toml_value(value: object) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render_config(config: Config) -> str:
    """The effective configuration as TOML, each value followed by its source."""
    lines = ["# cis-node effective configuration: flags > environment > config.toml > defaults"]
    section = None
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines.append("")
            lines.append(f"[{section}]")
        value = getattr(config, setting.field)
        if value is None:
            lines.append(f"# {setting.field} is not set  # {config.sources[setting.name]}")
            continue
        shown = _toml_value(value if isinstance(value, int | float | tuple) else str(value))
        lines.append(f"{setting.key} = {shown}  # {config.sources[setting.name]}")
    return "\n".join(lines) + "\n"

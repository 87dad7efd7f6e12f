"""Structured logs: one line per record on stderr, in ``key=value`` form.

A record reads ``ts=2026-11-23T10:00:00.123Z level=info logger=cis.node action=node_started
listen=127.0.0.1:8484``. Code logs an *action* (a snake_case verb phrase) and fields::

    log = get_logger(__name__)
    log.info("room_opened", room_id=room_id, open_rooms=12)

Records from other libraries (uvicorn, websockets, pysyncobj) go through the same formatter as
``action=log msg="…"``, so a log stays one line per record whoever wrote it.

What never reaches a log:
- values of fields named like a secret (``password``, ``token``, ``authorization``, …) are
  written as ``[redacted]``; that is a safety net, not licence to pass them;
- query strings: uvicorn's access log is rewritten to the path alone (access tokens travel in
  query strings);
- request bodies and headers: nothing here logs them, and nothing may.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, Final, TextIO

__all__ = ["Logger", "configure_logging", "format_value", "get_logger"]

_ACTION: Final = "cis_action"
_FIELDS: Final = "cis_fields"

SECRET_FIELDS: Final = frozenset(
    {
        "password",
        "passwd",
        "token",
        "access_token",
        "admin_token",
        "authorization",
        "secret",
        "signing_key",
        "private_key",
        "seed",
    }
)


def format_value(value: object) -> str:
    """Render one value for ``key=value``: bare when safe, else double-quoted and escaped.

    Escaping keeps a record on one line whatever the value holds (newlines, quotes, control
    characters, invalid text).
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = value if isinstance(value, str) else str(value)
    if text and all(_is_bare(ch) for ch in text):
        return text
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _is_bare(ch: str) -> bool:
    return ch.isprintable() and ch not in ' ="\\' and not ch.isspace()


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return lowered in SECRET_FIELDS or lowered.endswith(("_token", "_password", "_secret"))


class LogfmtFormatter(logging.Formatter):
    """Formats every record as one ``key=value`` line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={format_value(record.name)}",
        ]
        action = getattr(record, _ACTION, None)
        if isinstance(action, str):
            parts.append(f"action={format_value(action)}")
            fields = getattr(record, _FIELDS, None)
            if isinstance(fields, Mapping):
                for key, value in fields.items():
                    shown = "[redacted]" if _is_secret(str(key)) else format_value(value)
                    parts.append(f"{key}={shown}")
        else:
            parts.append("action=log")
            parts.append(f"msg={format_value(record.getMessage())}")
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            parts.append(f"error={format_value(exc_type.__name__)}")
            if exc is not None and str(exc):
                parts.append(f"error_msg={format_value(str(exc))}")
            # The stack (file, line, function) without local variables, on the same line.
            frames = traceback.extract_tb(tb)
            stack = " < ".join(
                f"{f.name}@{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames[::-1]
            )
            if stack:
                parts.append(f"stack={format_value(stack)}")
        return " ".join(parts)


class _AccessLogFilter(logging.Filter):
    """Rewrites uvicorn's access records to ``method path status`` without the query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, full_path, _http_version, status = args
            path = str(full_path).split("?", 1)[0]
            setattr(record, _ACTION, "http_request")
            setattr(
                record,
                _FIELDS,
                {"client": client, "method": method, "path": path, "status": status},
            )
        return True


class Logger:
    """A thin front on ``logging.Logger`` that takes an action and fields."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    @property
    def name(self) -> str:
        return self._logger.name

    def isEnabledFor(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def _log(self, level: int, action: str, fields: dict[str, Any], exc_info: bool) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(
                level,
                action,
                extra={_ACTION: action, _FIELDS: fields},
                exc_info=exc_info,
                stacklevel=3,
            )

    def debug(self, action: str, **fields: Any) -> None:
        self._log(logging.DEBUG, action, fields, False)

    def info(self, action: str, **fields: Any) -> None:
        self._log(logging.INFO, action, fields, False)

    def warning(self, action: str, **fields: Any) -> None:
        self._log(logging.WARNING, action, fields, False)

    def error(self, action: str, **fields: Any) -> None:
        self._log(logging.ERROR, action, fields, False)

    def exception(self, action: str, **fields: Any) -> None:
        """Log at error level with the current exception's type, message and stack."""
        self._log(logging.ERROR, action, fields, True)


def get_logger(name: str) -> Logger:
    return Logger(logging.getLogger(name))


# Loggers of libraries we run, which get their own handlers unless told otherwise.
_FOREIGN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "pysyncobj")


def configure_logging(level: str | int = "info", stream: TextIO | None = None) -> None:
    """Send every record (ours and the libraries') to ``stream`` (stderr) as one line each.

    Safe to call more than once: the previous handler is replaced.
    """
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    handler.set_name("cis")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "cis":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _AccessLogFilter) for f in access.filters):
        access.addFilter(_AccessLogFilter())

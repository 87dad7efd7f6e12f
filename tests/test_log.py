from __future__ import annotations

import io
import logging

from hypothesis import given
from hypothesis import strategies as st

from cis.log import configure_logging, format_value, get_logger


def capture() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("debug", stream)
    return stream


def test_action_and_fields_on_one_line() -> None:
    stream = capture()
    get_logger("cis.test").info("node_started", listen="127.0.0.1:8484", rooms=3, note="two words")
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "level=info logger=cis.test action=node_started" in line
    assert 'listen=127.0.0.1:8484 rooms=3 note="two words"' in line


def test_secret_fields_are_redacted() -> None:
    stream = capture()
    get_logger("cis.test").info("login", access_token="syt_secret", password="hunter2", user="@a:b")
    out = stream.getvalue()
    assert "syt_secret" not in out and "hunter2" not in out
    assert "access_token=[redacted]" in out and "user=@a:b" in out


def test_foreign_records_are_one_line() -> None:
    stream = capture()
    logging.getLogger("websockets.server").warning("line one\nline two")
    out = stream.getvalue()
    assert out.count("\n") == 1
    assert 'action=log msg="line one\\nline two"' in out


def test_uvicorn_access_log_drops_the_query_string() -> None:
    stream = capture()
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "GET",
        "/_matrix/client/v3/sync?access_token=secret123&since=s1",
        "1.1",
        200,
    )
    out = stream.getvalue()
    assert "secret123" not in out and "since=s1" not in out
    assert "action=http_request" in out and "path=/_matrix/client/v3/sync" in out


def test_exceptions_stay_on_one_line() -> None:
    stream = capture()
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        get_logger("cis.test").exception("failed", step=1)
    out = stream.getvalue()
    assert out.count("\n") == 1
    assert "error=ValueError" in out and 'error_msg="bad\\nthing"' in out


@given(st.text())
def test_any_value_renders_on_one_line_without_bare_separators(value: str) -> None:
    rendered = format_value(value)
    assert "\n" not in rendered and "\r" not in rendered
    if not rendered.startswith('"'):
        assert " " not in rendered and "=" not in rendered
    else:
        assert rendered.endswith('"')

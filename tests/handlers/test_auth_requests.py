from __future__ import annotations

from typing import Any

import pytest

from cis.handlers.auth_requests import check_localpart, parse_login, parse_register
from cis.handlers.errors import ApiError
from cis.ids import ServerName

SERVER = ServerName("node1.cis.local")


@pytest.mark.parametrize("localpart", ["alice", "a.b_c=d-e/f+g", "0", "x" * 200])
def test_valid_localparts(localpart: str) -> None:
    assert check_localpart(localpart, SERVER) == f"@{localpart}:{SERVER}"


@pytest.mark.parametrize(
    "localpart", ["", "Alice", "al ice", "al:ice", "_bridge", "ümlaut", "a*b", "x" * 240, "a\n"]
)
def test_invalid_localparts(localpart: str) -> None:
    with pytest.raises(ApiError) as info:
        check_localpart(localpart, SERVER)
    assert info.value.errcode == "M_INVALID_USERNAME"
    assert info.value.status == 400


def test_register_as_matrix_nio_sends_it() -> None:
    req = parse_register(
        {
            "username": "alice",
            "password": "pw",
            "auth": {"type": "m.login.dummy"},
            "device_id": "DEV1",
            "initial_device_display_name": "nio",
        }
    )
    assert req.username == "alice" and req.password == "pw"
    assert req.auth_type == "m.login.dummy" and req.session is None
    assert req.device_id == "DEV1" and req.initial_device_display_name == "nio"
    assert not req.inhibit_login
    with_session = parse_register({"auth": {"type": "m.login.dummy", "session": "abc"}})
    assert with_session.session == "abc" and with_session.username is None
    assert parse_register({}).auth_type is None


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"username": 5}, "M_INVALID_PARAM"),
        ({"password": ["x"]}, "M_INVALID_PARAM"),
        ({"password": "x" * 513}, "M_INVALID_PARAM"),
        ({"auth": "m.login.dummy"}, "M_BAD_JSON"),
        ({"auth": {"type": 1}}, "M_INVALID_PARAM"),
        ({"device_id": "has space"}, "M_INVALID_PARAM"),
        ({"inhibit_login": "no"}, "M_INVALID_PARAM"),
    ],
)
def test_register_rejects(body: dict[str, Any], errcode: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_register(body)
    assert info.value.errcode == errcode


def test_login_forms() -> None:
    nio = parse_login(
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "Alice"},
            "password": "pw",
            "device_id": "D",
        }
    )
    assert nio.localpart == "alice" and nio.server is None and nio.device_id == "D"
    full = parse_login(
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "@bob:node1.cis.local"},
            "password": "pw",
        }
    )
    assert full.localpart == "bob" and full.server == "node1.cis.local"
    legacy = parse_login({"type": "m.login.password", "user": "carol", "password": "pw"})
    assert legacy.localpart == "carol"


@pytest.mark.parametrize(
    ("body", "errcode", "status"),
    [
        ({}, "M_MISSING_PARAM", 400),
        ({"type": "m.login.token", "token": "x"}, "M_UNKNOWN", 400),
        ({"type": "m.login.password", "password": "pw"}, "M_MISSING_PARAM", 400),
        ({"type": "m.login.password", "user": "a"}, "M_MISSING_PARAM", 400),
        ({"type": "m.login.password", "user": 3, "password": "pw"}, "M_INVALID_PARAM", 400),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b"},
                "password": "pw",
            },
            "M_FORBIDDEN",
            403,
        ),
        (
            {"type": "m.login.password", "identifier": {"type": "x"}, "password": "pw"},
            "M_UNKNOWN",
            400,
        ),
        ({"type": "m.login.password", "identifier": "alice", "password": "p"}, "M_BAD_JSON", 400),
        ({"type": "m.login.password", "user": "@nocolon", "password": "p"}, "M_FORBIDDEN", 403),
    ],
)
def test_login_rejects(body: dict[str, Any], errcode: str, status: int) -> None:
    with pytest.raises(ApiError) as info:
        parse_login(body)
    assert info.value.errcode == errcode
    assert info.value.status == status

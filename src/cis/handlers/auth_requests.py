"""Registration and login requests, validated into frozen objects.

Registration (Client-Server API §"POST /register", §"User-Interactive Authentication API"):
only the ``m.login.dummy`` flow is offered. A request without ``auth`` gets 401 with the flow
and a session id; a request whose ``auth`` is ``{"type": "m.login.dummy"}`` completes at once,
with or without a ``session`` (that is what matrix-nio sends on its first call, and what
Synapse accepts). Usernames follow the localpart grammar of the appendices §"User Identifiers"
(``a-z 0-9 . _ = - / +``, the whole id at most 255 bytes); a leading ``_`` is refused as
other servers reserve it for bridges.

Login (§"POST /login"): ``m.login.password`` with an ``m.id.user`` identifier (a localpart or a
full user id) or the deprecated top-level ``user``. Third-party identifiers are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cis.handlers.access_tokens import valid_device_id
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.passwords import MAX_PASSWORD_BYTES
from cis.ids import DeviceId, ServerName, UserId

LOCALPART_RE: Final = re.compile(r"[a-z0-9._=\-/+]+")
MAX_USER_ID_BYTES: Final = 255
MAX_DISPLAY_NAME_LENGTH: Final = 256
DUMMY_FLOW: Final = "m.login.dummy"
PASSWORD_LOGIN: Final = "m.login.password"  # noqa: S105 (a login type, not a secret)


def check_localpart(localpart: str, server_name: ServerName) -> UserId:
    """The user id for a new account's ``localpart``, or ``M_INVALID_USERNAME``."""
    if not localpart or not LOCALPART_RE.fullmatch(localpart):
        raise ApiError(
            Errcode.INVALID_USERNAME,
            "User ID can only contain characters a-z, 0-9, or '._=-/+'",
        )
    if localpart.startswith("_"):
        raise ApiError(Errcode.INVALID_USERNAME, "User ID may not begin with '_'")
    user_id = f"@{localpart}:{server_name}"
    if len(user_id.encode("utf-8")) > MAX_USER_ID_BYTES:
        raise ApiError(Errcode.INVALID_USERNAME, "User ID is too long")
    return UserId(user_id)


def _optional_str(body: Mapping[str, Any], key: str, max_len: int = 512) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise ApiError(Errcode.INVALID_PARAM, f"Invalid {key}")
    return value


def _password(body: Mapping[str, Any]) -> str | None:
    value = body.get("password")
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ApiError(Errcode.INVALID_PARAM, "Invalid password")
    return value


def _device_id(body: Mapping[str, Any]) -> DeviceId | None:
    value = _optional_str(body, "device_id", 255)
    if value is None:
        return None
    if not valid_device_id(value):
        raise ApiError(Errcode.INVALID_PARAM, "Invalid device_id")
    return DeviceId(value)


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    username: str | None
    password: str | None
    auth_type: str | None
    session: str | None
    device_id: DeviceId | None
    initial_device_display_name: str | None
    inhibit_login: bool


def parse_register(body: Mapping[str, Any]) -> RegisterRequest:
    username = _optional_str(body, "username", MAX_USER_ID_BYTES)
    auth = body.get("auth")
    auth_type: str | None = None
    session: str | None = None
    if auth is not None:
        if not isinstance(auth, dict):
            raise ApiError(Errcode.BAD_JSON, "auth must be an object")
        auth_type = _optional_str(auth, "type", 128)
        session = _optional_str(auth, "session", 128)
    inhibit = body.get("inhibit_login", False)
    if not isinstance(inhibit, bool):
        raise ApiError(Errcode.INVALID_PARAM, "Invalid inhibit_login")
    return RegisterRequest(
        username=username,
        password=_password(body),
        auth_type=auth_type,
        session=session,
        device_id=_device_id(body),
        initial_device_display_name=_optional_str(
            body, "initial_device_display_name", MAX_DISPLAY_NAME_LENGTH
        ),
        inhibit_login=inhibit,
    )


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """A password login for ``localpart`` (lower-cased) on ``server`` (``None``: this one)."""

    localpart: str
    server: str | None
    password: str
    device_id: DeviceId | None
    initial_device_display_name: str | None


def _forbidden_login() -> ApiError:
    return ApiError(Errcode.FORBIDDEN, "Invalid username or password")


def parse_login(body: Mapping[str, Any]) -> LoginRequest:
    login_type = body.get("type")
    if login_type is None:
        raise ApiError(Errcode.MISSING_PARAM, "Missing login type")
    if login_type != PASSWORD_LOGIN:
        raise ApiError(Errcode.UNKNOWN, "Unknown login type")
    identifier = body.get("identifier")
    user: object
    if identifier is not None:
        if not isinstance(identifier, dict):
            raise ApiError(Errcode.BAD_JSON, "identifier must be an object")
        id_type = identifier.get("type")
        if id_type != "m.id.user":
            if id_type in ("m.id.thirdparty", "m.id.phone"):
                raise _forbidden_login()
            raise ApiError(Errcode.UNKNOWN, "Unknown identifier type")
        user = identifier.get("user")
    else:
        user = body.get("user")  # deprecated form, still sent by some clients
    if user is None:
        raise ApiError(Errcode.MISSING_PARAM, "Missing user identifier")
    if not isinstance(user, str) or not user or len(user) > MAX_USER_ID_BYTES:
        raise ApiError(Errcode.INVALID_PARAM, "Invalid user identifier")
    password = _password(body)
    if password is None:
        raise ApiError(Errcode.MISSING_PARAM, "Missing password")
    server: str | None = None
    localpart = user
    if user.startswith("@"):
        localpart, sep, server = user[1:].partition(":")
        if not sep:
            raise _forbidden_login()
    return LoginRequest(
        localpart=localpart.lower(),
        server=server,
        password=password,
        device_id=_device_id(body),
        initial_device_display_name=_optional_str(
            body, "initial_device_display_name", MAX_DISPLAY_NAME_LENGTH
        ),
    )

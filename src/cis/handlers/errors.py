"""Errors a use case reports to its caller, in the Matrix vocabulary.

A handler refuses a request by raising ``ApiError`` with a Matrix ``errcode`` (Client-Server
API §"Standard error response") and the HTTP status the spec pairs with it; the HTTP layer
renders it as ``{"errcode": …, "error": …}``, and federation maps it onto its own frames.

Messages are fixed sentences chosen here, never built from request values: an error must not
echo what the client sent (it could be a password, a token or a megabyte of junk)::

    CisError
    └── ApiError            errcode + HTTP status (+ extra JSON fields)
        ├── RateLimited     429 M_LIMIT_EXCEEDED with retry_after_ms
        └── AuthRequired    401 user-interactive auth: flows, params, session
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from cis.errors import CisError


class Errcode(StrEnum):
    """The errcodes this server sends (Client-Server API §"Common error codes")."""

    FORBIDDEN = "M_FORBIDDEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"  # noqa: S105 (errcodes, not secrets)
    MISSING_TOKEN = "M_MISSING_TOKEN"  # noqa: S105
    BAD_JSON = "M_BAD_JSON"
    NOT_JSON = "M_NOT_JSON"
    NOT_FOUND = "M_NOT_FOUND"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    UNRECOGNIZED = "M_UNRECOGNIZED"
    UNKNOWN = "M_UNKNOWN"
    USER_IN_USE = "M_USER_IN_USE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    ROOM_IN_USE = "M_ROOM_IN_USE"
    INVALID_ROOM_STATE = "M_INVALID_ROOM_STATE"
    UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"
    INCOMPATIBLE_ROOM_VERSION = "M_INCOMPATIBLE_ROOM_VERSION"
    BAD_STATE = "M_BAD_STATE"
    GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
    MISSING_PARAM = "M_MISSING_PARAM"
    INVALID_PARAM = "M_INVALID_PARAM"
    TOO_LARGE = "M_TOO_LARGE"
    EXCLUSIVE = "M_EXCLUSIVE"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"


# The status each errcode carries unless a caller says otherwise.
_DEFAULT_STATUS: Final[Mapping[Errcode, int]] = {
    Errcode.FORBIDDEN: 403,
    Errcode.UNKNOWN_TOKEN: 401,
    Errcode.MISSING_TOKEN: 401,
    Errcode.BAD_JSON: 400,
    Errcode.NOT_JSON: 400,
    Errcode.NOT_FOUND: 404,
    Errcode.LIMIT_EXCEEDED: 429,
    Errcode.UNRECOGNIZED: 404,
    Errcode.UNKNOWN: 400,
    Errcode.USER_IN_USE: 400,
    Errcode.INVALID_USERNAME: 400,
    Errcode.ROOM_IN_USE: 400,
    Errcode.INVALID_ROOM_STATE: 400,
    Errcode.UNSUPPORTED_ROOM_VERSION: 400,
    Errcode.INCOMPATIBLE_ROOM_VERSION: 400,
    Errcode.BAD_STATE: 400,
    Errcode.GUEST_ACCESS_FORBIDDEN: 403,
    Errcode.MISSING_PARAM: 400,
    Errcode.INVALID_PARAM: 400,
    Errcode.TOO_LARGE: 413,
    Errcode.EXCLUSIVE: 400,
    Errcode.USER_DEACTIVATED: 403,
}


class ApiError(CisError):
    """A refusal with a Matrix errcode, an HTTP status and a fixed, non-echoing message."""

    def __init__(
        self,
        errcode: Errcode,
        message: str,
        *,
        status: int | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message
        self.status = _DEFAULT_STATUS[errcode] if status is None else status
        self.extra: Mapping[str, object] = dict(extra) if extra else {}

    def to_json(self) -> dict[str, object]:
        """The response body: ``errcode`` and ``error`` first, then any extra fields."""
        body: dict[str, object] = {"errcode": self.errcode.value, "error": self.message}
        body.update(self.extra)
        return body


class RateLimited(ApiError):
    """429 ``M_LIMIT_EXCEEDED``; the client may retry after ``retry_after_ms``."""

    def __init__(self, retry_after_ms: int) -> None:
        retry = max(1, int(retry_after_ms))
        super().__init__(
            Errcode.LIMIT_EXCEEDED,
            "Too many requests; retry later",
            extra={"retry_after_ms": retry},
        )
        self.retry_after_ms = retry


class AuthRequired(ApiError):
    """401 of user-interactive auth (Client-Server API §"User-interactive API in the REST API").

    The first answer carries only ``flows``, ``params`` and ``session``; after a failed
    attempt it also carries ``errcode`` and ``error``.
    """

    def __init__(self, body: Mapping[str, object], *, failed: bool = False) -> None:
        super().__init__(
            Errcode.FORBIDDEN,
            "Invalid authentication" if failed else "Authentication required",
            status=401,
            extra=body,
        )
        self.failed = failed

    def to_json(self) -> dict[str, object]:
        if self.failed:
            return super().to_json()
        return dict(self.extra)


def forbidden(message: str) -> ApiError:
    return ApiError(Errcode.FORBIDDEN, message)


def not_found(message: str) -> ApiError:
    return ApiError(Errcode.NOT_FOUND, message)


def bad_json(message: str) -> ApiError:
    return ApiError(Errcode.BAD_JSON, message)


def invalid_param(message: str) -> ApiError:
    return ApiError(Errcode.INVALID_PARAM, message)


def missing_param(message: str) -> ApiError:
    return ApiError(Errcode.MISSING_PARAM, message)

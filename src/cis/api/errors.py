"""Matrix-shaped errors: ``{"errcode": "M_…", "error": "…"}`` with the right HTTP status.

A route raises ``ApiError`` (``cis.handlers.errors``: the one error class of every API, with
the Matrix errcodes); unknown paths are ``M_UNRECOGNIZED`` (404, or 405 for a known path
with the wrong method); bad parameters are ``M_INVALID_PARAM``. An error never echoes the
request, and an unexpected exception is logged (without locals) and answered with a bare 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cis.handlers.errors import ApiError, Errcode
from cis.log import get_logger

log = get_logger(__name__)


__all__ = ["ApiError", "Errcode", "error_handlers", "error_response", "query_int"]


def error_response(status: int, errcode: str, message: str) -> JSONResponse:
    return JSONResponse({"errcode": errcode, "error": message}, status_code=status)


def query_int(
    query: Mapping[str, str], name: str, default: int, *, low: int, high: int | None = None
) -> int:
    """An integer query parameter within ``[low, high]``; 400 ``M_INVALID_PARAM`` naming it
    (never echoing the value) otherwise."""
    text = query.get(name)
    if text is None:
        return default
    stripped = text.strip()
    digits = stripped[1:] if stripped[:1] in ("-", "+") else stripped
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise ApiError(Errcode.INVALID_PARAM, f"Invalid parameter: {name}")
    value = int(stripped)
    if value < low or (high is not None and value > high):
        raise ApiError(Errcode.INVALID_PARAM, f"Invalid parameter: {name}")
    return value


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.to_json(), status_code=exc.status)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, "M_UNRECOGNIZED", "Unrecognized request")
    if exc.status_code == 405:
        return error_response(405, "M_UNRECOGNIZED", "Method not allowed")
    return error_response(exc.status_code, "M_UNKNOWN", "Request failed")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error(
        "request_failed", method=request.method, path=request.url.path,
        error=type(exc).__name__,
    )  # fmt: skip
    return error_response(500, "M_UNKNOWN", "Internal server error")


def error_handlers() -> dict[Any, Any]:
    """The ``exception_handlers`` of the node's Starlette application."""
    return {ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected}

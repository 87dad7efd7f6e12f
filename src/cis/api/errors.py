"""Matrix-shaped errors: ``{"errcode": "M_…", "error": "…"}`` with the right HTTP status.

A route raises ``ApiError`` (``cis.handlers.errors``: the one error class of every API, with
the Matrix errcodes); unknown paths are ``M_UNRECOGNIZED`` (404, or 405 for a known path
with the wrong method); bad parameters are ``M_INVALID_PARAM``. An error never echoes the
request, and an unexpected exception is logged (without locals) and answered with a bare 500.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cis.handlers.errors import ApiError, Errcode
from cis.log import get_logger

log = get_logger(__name__)


__all__ = ["ApiError", "Errcode", "error_response", "install_error_handlers"]


def error_response(status: int, errcode: str, message: str) -> JSONResponse:
    return JSONResponse({"errcode": errcode, "error": message}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.to_json(), status_code=exc.status)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(404, "M_UNRECOGNIZED", "Unrecognized request")
        if exc.status_code == 405:
            return error_response(405, "M_UNRECOGNIZED", "Method not allowed")
        return error_response(exc.status_code, "M_UNKNOWN", "Request failed")

    async def invalid_param(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        names = sorted({str(err["loc"][-1]) for err in exc.errors() if err.get("loc")})
        return error_response(400, "M_INVALID_PARAM", f"Invalid parameter: {', '.join(names)}")

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "request_failed", method=request.method, path=request.url.path,
            error=type(exc).__name__,
        )  # fmt: skip
        return error_response(500, "M_UNKNOWN", "Internal server error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_param)
    app.add_exception_handler(Exception, unexpected)

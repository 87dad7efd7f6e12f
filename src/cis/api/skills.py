"""``/_cis/admin/v1/skills``: local tools talking to the node's skills (admin token).

- ``GET skills``: installed and enabled skills, their rooms, state and counters.
- ``POST skills/{skill}/commands/{command}``: a JSON object in, the command's JSON object out
  (``cis-node memory set …``). A ``CommandError`` is 400 ``M_INVALID_PARAM`` with its message;
  a disabled or absent skill is 503 ``M_UNAVAILABLE``.
- ``WebSocket skills/{skill}/streams/{stream}``: a byte stream to the skill (``git-remote-cis``),
  wire format in ``cis.skills.pipe``. The admin token travels in the ``Authorization`` header of
  the upgrade request; a missing or wrong one is refused before the upgrade (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from cis.api.admin import AdminAuth
from cis.log import get_logger
from cis.skills.contract import CommandError, SkillDisabled, SkillError, SkillUnavailable
from cis.skills.host import SkillHost
from cis.skills.pipe import PipeClosed, PipeStream, end_message, parse_params

__all__ = ["skills_routes"]

log = get_logger(__name__)

PREFIX: Final = "/_cis/admin/v1"
MAX_COMMAND_BYTES: Final = 1024 * 1024
EXIT_FATAL: Final = 128


def _error(status: int, errcode: str, message: str) -> JSONResponse:
    return JSONResponse({"errcode": errcode, "error": message}, status_code=status)


def _token_ok(header: str | None, token: bytes) -> bool:
    if header is None:
        return False
    scheme, _, presented = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode("utf-8", "surrogateescape"), token
    )


def skills_routes(host: SkillHost, admin_token: str, auth: AdminAuth) -> list[BaseRoute]:
    """``auth`` checks the admin token of HTTP requests; the stream checks its own."""
    token = admin_token.encode("utf-8")

    async def list_skills(_request: Request) -> Response:
        return JSONResponse({"skills": [status.to_json() for status in host.statuses()]})

    async def run_command(request: Request) -> Response:
        skill: str = request.path_params["skill"]
        command: str = request.path_params["command"]
        body = await request.body()
        if len(body) > MAX_COMMAND_BYTES:
            return _error(413, "M_TOO_LARGE", "Command body too large")
        try:
            args = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "M_NOT_JSON", "Command body is not JSON")
        if not isinstance(args, dict):
            return _error(400, "M_BAD_JSON", "Command body must be a JSON object")
        try:
            result = await host.call_command(skill, command, args)
        except CommandError as exc:
            return _error(400, "M_INVALID_PARAM", str(exc))
        except (SkillUnavailable, SkillDisabled) as exc:
            return _error(503, "M_UNAVAILABLE", str(exc))
        except SkillError as exc:
            return _error(500, "M_UNKNOWN", str(exc))
        return JSONResponse(dict(result))

    async def run_stream(websocket: WebSocket) -> None:
        skill: str = websocket.path_params["skill"]
        stream: str = websocket.path_params["stream"]
        if not _token_ok(websocket.headers.get("authorization"), token):
            await websocket.close(code=1008)  # before accept: the upgrade gets a 403
            return
        await websocket.accept()
        try:
            params = parse_params(await websocket.receive_text())
        except (ValueError, KeyError, WebSocketDisconnect) as exc:
            with contextlib.suppress(Exception):
                await websocket.send_bytes(end_message(EXIT_FATAL, f"bad stream request: {exc}"))
                await websocket.close()
            return
        await _serve_stream(host, websocket, skill, stream, params)

    return [
        Route(f"{PREFIX}/skills", auth.guard(list_skills), methods=["GET"]),
        Route(
            f"{PREFIX}/skills/{{skill}}/commands/{{command}}",
            auth.guard(run_command),
            methods=["POST"],
        ),
        WebSocketRoute(f"{PREFIX}/skills/{{skill}}/streams/{{stream}}", run_stream),
    ]


async def _serve_stream(
    host: SkillHost, websocket: WebSocket, skill: str, stream: str, params: dict[str, str]
) -> None:
    pipe = PipeStream(asyncio.get_running_loop())

    async def pump_in() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                pipe.close()
                return
            data = message.get("bytes")
            if data is None:
                pipe.close()
                return
            if data:
                await pipe.feed(data)
            else:
                pipe.feed_eof()

    async def pump_out() -> None:
        while (item := await pipe.next_out()) is not None:
            channel, data = item
            await websocket.send_bytes(bytes([channel]) + data)

    reader = asyncio.create_task(pump_in())
    writer = asyncio.create_task(pump_out())
    status, error = 0, None
    try:
        status = await host.run_stream(skill, stream, pipe, params)
    except (CommandError, SkillUnavailable, SkillDisabled) as exc:
        status, error = EXIT_FATAL, str(exc)
    except PipeClosed:
        status, error = EXIT_FATAL, "the stream was closed"
    except Exception as exc:
        log.error("skill_stream_failed", skill=skill, stream=stream, error=type(exc).__name__)
        status, error = EXIT_FATAL, "internal error"
    try:
        await pipe.finish_output()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 30)
        await websocket.send_bytes(end_message(status, error))
        await websocket.close()
    except Exception as exc:  # the tool is gone already
        log.debug("skill_stream_end_unsent", skill=skill, stream=stream, error=type(exc).__name__)
    finally:
        pipe.close()
        for task in (reader, writer):
            task.cancel()
        await asyncio.gather(reader, writer, return_exceptions=True)

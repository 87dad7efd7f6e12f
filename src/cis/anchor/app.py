"""The anchor's HTTP API: routes (``create_app``) → handlers (``AnchorService``) → store.

Two endpoints, and by design no other (docs/anchor.md): an anchor helps nodes find each other
and has no way to carry their data.

- ``POST /v1/heartbeat``: a signed heartbeat (``records``). Refused: a body over 4 KiB (413);
  anything but exactly the heartbeat's fields (400); a signature or DID that does not match
  its key (401); a heartbeat for another anchor (400); ``ts`` more than 300 s from the anchor's
  clock (400 ``IO.CIS.CLOCK_SKEW`` with ``anchor_ts``); ``ts`` not above the last accepted one
  (409 ``IO.CIS.REPLAY``); a ``node_id`` bound to another key seen in the last 30 days (409
  ``IO.CIS.KEY_BOUND``); a new node when 10,000 are kept (503 ``IO.CIS.ANCHOR_FULL``).
- ``GET /v1/peers``: for a registered node, by a signed ``Authorization`` header (401 without
  a valid one, 403 for an unknown node, the same skew and replay rules on its ``ts``):
  ``{"observed_ip", "observed_port", "peers": [heartbeat, …], "ts"}`` where each heartbeat
  is stored bytes served unchanged, those received in the last 90 s, the caller's excepted.
  The port is informational: NAT may change it, and nodes never advertise it.

Every request first takes a token from its address's bucket (429 ``M_LIMIT_EXCEEDED``).
Errors are Matrix-shaped: ``{"errcode", "error"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cis.anchor.errors import InvalidRecord
from cis.anchor.ratelimit import RateLimiter
from cis.anchor.records import (
    HEARTBEAT_PATH,
    PEERS_PATH,
    authority,
    parse_heartbeat,
    parse_peers_auth,
    verify_peers_auth,
)
from cis.clock import Clock, SystemClock
from cis.identity.did import parse_did_cis, public_key_from_did_key
from cis.log import get_logger
from cis.storage.anchor import AnchorStore, AnchorTxn

log = get_logger(__name__)

DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class AnchorConfig:
    max_skew_ms: int = 300_000
    live_window_ms: int = 90_000
    binding_ttl_ms: int = 30 * DAY_MS
    max_entries: int = 10_000
    max_body: int = 4096
    rate_per_s: float = 1.0
    burst: float = 30.0
    max_tracked_addresses: int = 10_000
    prune_every_s: float = 600.0


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: dict[str, Any], **headers: str) -> Reply:
        return cls(status, json.dumps(obj, separators=(",", ":")).encode(), dict(headers))

    @classmethod
    def error(cls, status: int, errcode: str, error: str, **extra: Any) -> Reply:
        return cls.json(status, {"errcode": errcode, "error": error, **extra})

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers, media_type="application/json")


class AnchorService:
    """The anchor's logic; every time comes from the injected clock."""

    def __init__(
        self, store: AnchorStore, clock: Clock | None = None, config: AnchorConfig | None = None
    ) -> None:
        self.store = store
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.config = config if config is not None else AnchorConfig()
        self.limiter = RateLimiter(
            self.clock, self.config.rate_per_s, self.config.burst, self.config.max_tracked_addresses
        )

    def rate_limit(self, address: str) -> Reply | None:
        wait = self.limiter.allow(address)
        if wait <= 0:
            return None
        retry_ms = max(1, int(wait * 1000))
        return Reply(
            429,
            json.dumps(
                {
                    "errcode": "M_LIMIT_EXCEEDED",
                    "error": "too many requests",
                    "retry_after_ms": retry_ms,
                }
            ).encode(),
            {"Retry-After": str(max(1, -(-retry_ms // 1000)))},
        )

    def _skew(self, ts: int, now_ms: int) -> Reply | None:
        if abs(ts - now_ms) <= self.config.max_skew_ms:
            return None
        return Reply.error(
            400,
            "IO.CIS.CLOCK_SKEW",
            f"ts is more than {self.config.max_skew_ms // 1000} s from the anchor's clock",
            anchor_ts=now_ms,
        )

    async def heartbeat(self, body: bytes, anchor: str) -> Reply:
        try:
            obj = json.loads(body)
        except ValueError:
            return Reply.error(400, "M_NOT_JSON", "body is not JSON")
        try:
            heartbeat = parse_heartbeat(obj)
        except InvalidRecord as exc:
            if exc.forged:
                log.warning("heartbeat_forged", reason=str(exc))
                return Reply.error(401, "M_UNAUTHORIZED", str(exc))
            return Reply.error(400, "M_BAD_JSON", str(exc))
        if heartbeat.anchor != anchor:
            return Reply.error(400, "IO.CIS.WRONG_ANCHOR", f"this anchor is {anchor}")
        now = self.clock.time_ms()
        skewed = self._skew(heartbeat.ts, now)
        if skewed is not None:
            log.info("heartbeat_skewed", did=heartbeat.did, skew_ms=heartbeat.ts - now)
            return skewed
        config = self.config

        def accept(txn: AnchorTxn) -> str:
            row = txn.get(heartbeat.node_id)
            if row is not None and now - row.last_seen_ms < config.binding_ttl_ms:
                if row.did_key != heartbeat.did_key:
                    return "key_bound"
                if heartbeat.ts <= row.last_ts:
                    return "replay"
            if row is None and txn.count() >= config.max_entries:
                txn.prune(now - config.binding_ttl_ms)
                if txn.count() >= config.max_entries:
                    return "full"
            txn.put_heartbeat(
                heartbeat.node_id,
                heartbeat.did,
                heartbeat.did_key,
                ts=heartbeat.ts,
                now_ms=now,
                record=heartbeat.canonical,
            )
            return "accepted"

        outcome = await self.store.run("accept_heartbeat", accept)
        if outcome == "accepted":
            return Reply.json(200, {"ts": now})
        log.info("heartbeat_refused", did=heartbeat.did, outcome=outcome)
        if outcome == "replay":
            return Reply.error(409, "IO.CIS.REPLAY", "ts is not after the last accepted heartbeat")
        if outcome == "key_bound":
            return Reply.error(
                409, "IO.CIS.KEY_BOUND", f"{heartbeat.node_id} is bound to another key"
            )
        return Reply.error(503, "IO.CIS.ANCHOR_FULL", "the anchor keeps no more nodes")

    async def peers(self, authorization: str | None, anchor: str, ip: str, port: int) -> Reply:
        try:
            auth = parse_peers_auth(authorization)
        except InvalidRecord as exc:
            return Reply.error(401, "M_UNAUTHORIZED", str(exc))
        now = self.clock.time_ms()
        skewed = self._skew(auth.ts, now)
        if skewed is not None:
            return skewed
        node_id = parse_did_cis(auth.did)[0]
        config = self.config

        def serve(txn: AnchorTxn) -> str | list[bytes]:
            row = txn.get(node_id)
            if row is None or row.did != auth.did:
                return "unknown"
            if now - row.last_seen_ms >= config.binding_ttl_ms:
                return "unknown"
            try:
                verify_peers_auth(auth, anchor, public_key_from_did_key(row.did_key))
            except InvalidRecord:
                return "forged"
            if auth.ts <= row.last_poll_ts:
                return "replay"
            txn.touch_poll(node_id, auth.ts, now)
            return txn.live_records(now - config.live_window_ms, exclude_node=node_id)

        outcome = await self.store.run("serve_peers", serve)
        if outcome == "unknown":
            return Reply.error(403, "M_FORBIDDEN", "send a heartbeat first")
        if outcome == "forged":
            return Reply.error(401, "M_UNAUTHORIZED", "request signature does not verify")
        if outcome == "replay":
            return Reply.error(409, "IO.CIS.REPLAY", "ts is not after the last request")
        assert isinstance(outcome, list)
        body = b"".join(
            [
                b'{"observed_ip":',
                json.dumps(ip).encode(),
                b',"observed_port":',
                str(port).encode(),
                b',"peers":[',
                b",".join(outcome),
                b'],"ts":',
                str(now).encode(),
                b"}",
            ]
        )
        return Reply(200, body)

    async def prune(self) -> int:
        cutoff = self.clock.time_ms() - self.config.binding_ttl_ms
        return await self.store.run("prune_nodes", lambda txn: txn.prune(cutoff))


# ---------------------------------------------------------------- routes


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds ``limit`` bytes (the rest is not read)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _address(request: Request) -> tuple[str, int]:
    client = request.client
    return (client.host, client.port) if client is not None else ("unknown", 0)


def create_app(service: AnchorService, *, prune_in_background: bool = False) -> Starlette:
    """The ASGI app over an open store. With ``prune_in_background`` its lifespan also forgets
    expired bindings every ``prune_every_s`` (the ``cis-node anchor`` process)."""

    async def heartbeat(request: Request) -> Response:
        ip, _port = _address(request)
        limited = service.rate_limit(ip)
        if limited is not None:
            return limited.response()
        body = await _read_body(request, service.config.max_body)
        if body is None:
            limit = service.config.max_body
            return Reply.error(413, "M_TOO_LARGE", f"body over {limit} bytes").response()
        anchor = authority(request.headers.get("host", ""), request.url.scheme)
        return (await service.heartbeat(body, anchor)).response()

    async def peers(request: Request) -> Response:
        ip, port = _address(request)
        limited = service.rate_limit(ip)
        if limited is not None:
            return limited.response()
        anchor = authority(request.headers.get("host", ""), request.url.scheme)
        reply = await service.peers(request.headers.get("authorization"), anchor, ip, port)
        return reply.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        ip, _port = _address(request)
        limited = service.rate_limit(ip)
        if limited is not None:
            return limited.response()
        return Reply.error(status, "M_UNRECOGNIZED", "no such endpoint").response()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if not prune_in_background:
            yield
            return
        task = asyncio.create_task(_prune_forever(service))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return Starlette(
        routes=[
            Route(HEARTBEAT_PATH, heartbeat, methods=["POST"]),
            Route(PEERS_PATH, peers, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


async def _prune_forever(service: AnchorService) -> None:
    while True:
        try:
            pruned = await service.prune()
        except Exception:
            log.exception("anchor_prune_failed")
            continue
        if pruned:
            log.info("anchor_pruned", nodes=pruned)
        await asyncio.sleep(service.config.prune_every_s)

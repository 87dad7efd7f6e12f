"""The node's side of an anchor: heartbeat, poll, and check every record itself.

``AnchorClient.run()`` sends a heartbeat and then asks for peers every ``interval`` seconds
(30 by default), on the injected clock; the node passes what it learns to the tunnel manager
(``on_peers`` → ``TunnelManager.set_peer_endpoints``). A failure is logged and retried at the
next tick; a clock-skew refusal is logged as ``anchor_clock_skew`` with both clocks.

The anchor is not trusted with anything but availability: every record it returns is checked
here as the anchor checked it (signature, DID bound to its key, shape), records that are
implausibly old or older than one already seen for the same DID are dropped (an anchor
replaying stale endpoints), and this node's own record is skipped. TLS is verified against
the system store, or ``ca_file`` when given.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx
from canonicaljson import encode_canonical_json

from cis.anchor.errors import AnchorError, AnchorRefused, ClockSkew, InvalidRecord
from cis.anchor.records import (
    HEARTBEAT_PATH,
    PEERS_PATH,
    Heartbeat,
    anchor_name,
    build_heartbeat,
    parse_heartbeat,
    sign_peers_request,
)
from cis.clock import Clock, SystemClock
from cis.identity.keys import NodeIdentity
from cis.ids import Did
from cis.log import get_logger

log = get_logger(__name__)

DEFAULT_INTERVAL: Final = 30.0
RECORD_MAX_AGE_MS: Final = 90_000 + 2 * 300_000
"""The anchor serves records younger than 90 s by its clock, and two clocks may each be 300 s
from the anchor's: anything older than this cannot be a record the anchor should serve."""
MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PeersSnapshot:
    anchor: str
    peers: tuple[Heartbeat, ...]
    observed_ip: str
    observed_port: int | None
    anchor_ts: int


class Discovery(Protocol):
    """What the node needs of an anchor; ``AnchorClient`` and ``StaticDiscovery`` provide it."""

    async def heartbeat(self) -> None: ...

    async def peers(self) -> PeersSnapshot: ...


PeersCallback = Callable[[PeersSnapshot], Awaitable[None] | None]


class PeerDialer(Protocol):
    """The part of ``TunnelManager`` the anchor feeds."""

    def set_peer_endpoints(self, did: str, endpoints: Iterable[str]) -> None: ...


def dial_peers(dialer: PeerDialer) -> PeersCallback:
    """An ``on_peers`` callback keeping a tunnel to every peer an anchor lists, at the
    endpoints its own signed record gives (a new endpoint is dialled at once)."""

    def on_peers(snapshot: PeersSnapshot) -> None:
        for record in snapshot.peers:
            dialer.set_peer_endpoints(record.did, record.endpoints)

    return on_peers


class AnchorClient:
    def __init__(
        self,
        url: str,
        identity: NodeIdentity,
        *,
        endpoints: Sequence[str] | Callable[[], Sequence[str]] = (),
        clock: Clock | None = None,
        interval: float = DEFAULT_INTERVAL,
        ca_file: str | None = None,
        request_timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        on_peers: PeersCallback | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.name = anchor_name(url)
        self.identity = identity
        self.interval = interval
        self._endpoints = endpoints
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._on_peers = on_peers
        self._sleep = sleep
        self._last_heartbeat_ts = 0
        self._last_poll_ts = 0
        self._newest: dict[Did, int] = {}
        verify: ssl.SSLContext | bool = True
        if self.url.startswith("https:"):
            verify = ssl.create_default_context(cafile=ca_file)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            verify=verify,
            timeout=request_timeout,
            transport=transport,
            trust_env=False,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _next_ts(self, last: int) -> int:
        # Strictly increasing even within one millisecond or if the wall clock steps back a
        # little: the anchor refuses a ts that is not above the last one it accepted.
        return max(self._clock.time_ms(), last + 1)

    def _current_endpoints(self) -> Sequence[str]:
        return self._endpoints() if callable(self._endpoints) else self._endpoints

    async def heartbeat(self) -> None:
        """Send one heartbeat; raises ``AnchorRefused`` (``ClockSkew``) or ``httpx.HTTPError``."""
        ts = self._next_ts(self._last_heartbeat_ts)
        self._last_heartbeat_ts = ts
        record = build_heartbeat(self.identity, self.name, self._current_endpoints(), ts)
        response = await self._http.post(
            HEARTBEAT_PATH,
            content=bytes(encode_canonical_json(record)),
            headers={"content-type": "application/json"},
        )
        if response.status_code != 200:
            self._refused(response, ts)

    async def peers(self) -> PeersSnapshot:
        """Ask for the live peers and check each record; invalid ones are logged and dropped."""
        ts = self._next_ts(self._last_poll_ts)
        self._last_poll_ts = ts
        response = await self._http.get(
            PEERS_PATH,
            headers={"authorization": sign_peers_request(self.identity, self.name, ts)},
        )
        if response.status_code != 200:
            self._refused(response, ts)
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise AnchorRefused(response.status_code, "IO.CIS.TOO_LARGE", "response too large")
        try:
            body = json.loads(response.content)
            raw_peers = body["peers"]
            observed_ip = str(body["observed_ip"])
            anchor_ts = int(body["ts"])
            port = body.get("observed_port")
        except (ValueError, KeyError, TypeError) as exc:
            raise AnchorRefused(200, "M_BAD_JSON", "peers response is malformed") from exc
        if not isinstance(raw_peers, list):
            raise AnchorRefused(200, "M_BAD_JSON", "peers is not a list")
        return PeersSnapshot(
            anchor=self.url,
            peers=tuple(self._check_records(raw_peers)),
            observed_ip=observed_ip,
            observed_port=port if isinstance(port, int) else None,
            anchor_ts=anchor_ts,
        )

    def _check_records(self, raw_peers: list[Any]) -> list[Heartbeat]:
        now = self._clock.time_ms()
        accepted: list[Heartbeat] = []
        for raw in raw_peers:
            try:
                record = parse_heartbeat(raw)
            except InvalidRecord as exc:
                log.warning("anchor_record_invalid", anchor=self.url, reason=str(exc))
                continue
            if record.did == self.identity.did:
                continue
            if not now - RECORD_MAX_AGE_MS <= record.ts <= now + RECORD_MAX_AGE_MS:
                log.warning("anchor_record_stale", anchor=self.url, did=record.did, ts=record.ts)
                continue
            if record.ts < self._newest.get(record.did, 0):
                log.warning("anchor_record_rollback", anchor=self.url, did=record.did)
                continue
            self._newest[record.did] = record.ts
            accepted.append(record)
        return accepted

    def _refused(self, response: httpx.Response, local_ts: int) -> None:
        try:
            body = response.json()
            errcode, error = str(body["errcode"]), str(body.get("error", ""))
        except (ValueError, KeyError, TypeError):
            errcode, error, body = "M_UNKNOWN", response.text[:200], {}
        if errcode == "IO.CIS.CLOCK_SKEW" and isinstance(body.get("anchor_ts"), int):
            skew = ClockSkew(response.status_code, errcode, error, body["anchor_ts"], local_ts)
            log.warning(
                "anchor_clock_skew",
                anchor=self.url,
                anchor_ts=skew.anchor_ts,
                local_ts=local_ts,
                skew_ms=skew.skew_ms,
            )
            raise skew
        raise AnchorRefused(response.status_code, errcode, error)

    async def run(self) -> None:
        """Heartbeat and poll every ``interval`` seconds until cancelled."""
        next_at = self._clock.monotonic()
        while True:
            await self.tick()
            next_at += self.interval
            delay = next_at - self._clock.monotonic()
            if delay < 0:  # fell behind (a long outage): do not burst to catch up
                next_at = self._clock.monotonic()
                delay = 0.0
            await self._sleep(delay)

    async def tick(self) -> PeersSnapshot | None:
        """One heartbeat and one poll; failures are logged, not raised."""
        try:
            await self.heartbeat()
        except ClockSkew:
            pass  # logged with both clocks where it was raised
        except (AnchorError, httpx.HTTPError) as exc:
            log.warning("anchor_heartbeat_failed", anchor=self.url, error=_describe(exc))
        try:
            snapshot = await self.peers()
        except ClockSkew:
            return None
        except (AnchorError, httpx.HTTPError) as exc:
            log.warning("anchor_poll_failed", anchor=self.url, error=_describe(exc))
            return None
        if self._on_peers is not None:
            try:
                result = self._on_peers(snapshot)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("anchor_peers_callback_failed", anchor=self.url)
        return snapshot


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class StaticDiscovery:
    """A ``Discovery`` that knows a fixed set of records (tests, static deployments)."""

    def __init__(self, records: Sequence[Heartbeat] = (), observed_ip: str = "127.0.0.1"):
        self.records = list(records)
        self.observed_ip = observed_ip
        self.heartbeats = 0

    async def heartbeat(self) -> None:
        self.heartbeats += 1

    async def peers(self) -> PeersSnapshot:
        return PeersSnapshot("static:", tuple(self.records), self.observed_ip, None, 0)

"""User-interactive authentication (Client-Server API §"User-Interactive Authentication API").

Two flows are offered: ``m.login.dummy`` for registration (no real check: it exists so clients
can follow the protocol) and ``m.login.password`` for deleting devices, where the user proves
again who they are. A request that needs auth and carries none gets 401 with the flows and a
new session id; sessions expire after ``ttl`` seconds and their number is bounded.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import Any, Final

from cis.clock import Clock
from cis.handlers.errors import AuthRequired

DUMMY: Final = "m.login.dummy"
PASSWORD: Final = "m.login.password"  # noqa: S105 (an auth type, not a secret)


class UiaSessions:
    """Session ids handed out in 401 answers, remembered for ``ttl`` seconds."""

    def __init__(self, clock: Clock, *, ttl: float = 600.0, max_sessions: int = 10_000) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_sessions
        self._sessions: OrderedDict[str, float] = OrderedDict()  # id -> expiry (monotonic)

    def __len__(self) -> int:
        return len(self._sessions)

    def new(self) -> str:
        now = self._clock.monotonic()
        while self._sessions:
            oldest, expiry = next(iter(self._sessions.items()))
            if expiry > now and len(self._sessions) < self._max:
                break
            del self._sessions[oldest]
        session = secrets.token_urlsafe(18)
        self._sessions[session] = now + self._ttl
        return session

    def known(self, session: str) -> bool:
        expiry = self._sessions.get(session)
        return expiry is not None and expiry > self._clock.monotonic()

    def complete(self, session: str | None) -> None:
        """Forget ``session`` once the request it guarded has succeeded."""
        if session is not None:
            self._sessions.pop(session, None)

    def challenge(self, stage: str, *, failed: bool = False) -> AuthRequired:
        """The 401 answer offering the one-stage flow ``stage`` with a fresh session."""
        body: dict[str, Any] = {
            "flows": [{"stages": [stage]}],
            "params": {},
            "session": self.new(),
        }
        return AuthRequired(body, failed=failed)

from __future__ import annotations

from cis.clock import FakeClock
from cis.handlers.uia import DUMMY, UiaSessions


def test_challenge_offers_the_flow_with_a_session() -> None:
    clock = FakeClock()
    sessions = UiaSessions(clock, ttl=60)
    challenge = sessions.challenge(DUMMY)
    body = challenge.to_json()
    assert challenge.status == 401
    assert body["flows"] == [{"stages": ["m.login.dummy"]}]
    assert body["params"] == {}
    assert "errcode" not in body  # a first answer carries no error
    session = body["session"]
    assert isinstance(session, str) and sessions.known(session)
    failed = sessions.challenge(DUMMY, failed=True).to_json()
    assert failed["errcode"] == "M_FORBIDDEN" and "flows" in failed


def test_sessions_expire_and_are_bounded() -> None:
    clock = FakeClock()
    sessions = UiaSessions(clock, ttl=60, max_sessions=10)
    first = sessions.new()
    clock.advance(61)
    assert not sessions.known(first)
    ids = [sessions.new() for _ in range(50)]
    assert len(sessions) <= 10
    assert sessions.known(ids[-1])
    sessions.complete(ids[-1])
    assert not sessions.known(ids[-1])
    sessions.complete(None)

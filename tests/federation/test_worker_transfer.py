"""Checked events cross back from receipt's worker processes as plain fields and are rebuilt
from their canonical bytes: the rebuilt event is the one the worker checked, field by field,
for messages, state events, redactions and events replaced by their redacted form."""

from __future__ import annotations

import dataclasses
import pickle

from cis.handlers.federation_ingest import (
    Checked,
    KeySnapshot,
    _check_all,
    _check_in_worker,
    _from_worker,
)
from cis.matrix import Event
from cis.matrix.canonical_json import encode_canonical_json
from tests.factories import KEY_ID, SERVER, SIGNING_KEY, make_event

ROOM = f"!transfer:{SERVER}"


def same(a: Event, b: Event) -> bool:
    return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(Event))


def test_events_rebuilt_from_a_worker_are_the_checked_ones() -> None:
    message = make_event(ROOM, content={"msgtype": "m.text", "body": "hi", "n": [1, {"a": None}]})
    state = make_event(ROOM, type="m.room.topic", state_key="", content={"topic": "t"})
    redaction = make_event(ROOM, type="m.room.redaction", content={"redacts": message.event_id})
    raws = [e.canonical_bytes for e in (message, state, redaction)]
    tampered = {**message.to_pdu(), "content": {"msgtype": "m.text", "body": "changed"}}
    raws.append(encode_canonical_json(tampered))
    raws.append(b"{not json")
    keys = KeySnapshot({SERVER: {KEY_ID: bytes(SIGNING_KEY.verify_key)}})

    inline = _check_all(message.room_version, raws, keys)
    crossed = pickle.loads(pickle.dumps(_check_in_worker(message.room_version, raws, keys)))
    rebuilt = [_from_worker(r) for r in crossed]

    assert [type(r) for r in rebuilt] == [type(r) for r in inline]
    assert rebuilt[-1] is None
    for before, after in zip(inline[:-1], rebuilt[:-1], strict=True):
        assert isinstance(before, Checked) and isinstance(after, Checked)
        assert after.redacted == before.redacted
        assert same(after.event, before.event)
    assert isinstance(rebuilt[3], Checked) and rebuilt[3].redacted
    assert "body" not in rebuilt[3].event.content
    assert rebuilt[2].event.redacts == message.event_id  # type: ignore[union-attr]

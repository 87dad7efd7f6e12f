from __future__ import annotations

from cis.handlers.client_events import client_event, stripped_event

PDU = {
    "type": "m.room.message",
    "room_id": "!r:x",
    "sender": "@a:x",
    "content": {"body": "hi", "msgtype": "m.text"},
    "origin_server_ts": 1000,
    "depth": 5,
    "prev_events": ["$p"],
    "auth_events": ["$a"],
    "hashes": {"sha256": "h"},
    "signatures": {"x": {"ed25519:k": "s"}},
    "unsigned": {"secret": "server-only"},
}


def test_client_format_drops_federation_fields() -> None:
    event = client_event(PDU, "$e", now_ms=1500)
    assert event == {
        "type": "m.room.message",
        "room_id": "!r:x",
        "sender": "@a:x",
        "content": {"body": "hi", "msgtype": "m.text"},
        "origin_server_ts": 1000,
        "event_id": "$e",
        "unsigned": {"age": 500},
    }


def test_unsigned_additions() -> None:
    event = client_event(
        {**PDU, "type": "m.room.topic", "state_key": ""},
        "$e",
        now_ms=900,
        transaction_id="txn1",
        prev_content={"topic": "old"},
        replaces_state="$old",
        include_room_id=False,
    )
    assert "room_id" not in event
    assert event["state_key"] == ""
    assert event["unsigned"] == {
        "age": 0,
        "transaction_id": "txn1",
        "prev_content": {"topic": "old"},
        "replaces_state": "$old",
    }


def test_v11_redaction_gets_a_top_level_redacts() -> None:
    pdu = {**PDU, "type": "m.room.redaction", "content": {"redacts": "$target"}}
    assert client_event(pdu, "$r", now_ms=1000)["redacts"] == "$target"
    v10 = {**PDU, "type": "m.room.redaction", "redacts": "$t10", "content": {}}
    assert client_event(v10, "$r", now_ms=1000)["redacts"] == "$t10"


def test_stripped_state() -> None:
    pdu = {**PDU, "type": "m.room.name", "state_key": "", "content": {"name": "N"}}
    assert stripped_event(pdu) == {
        "type": "m.room.name",
        "state_key": "",
        "sender": "@a:x",
        "content": {"name": "N"},
    }

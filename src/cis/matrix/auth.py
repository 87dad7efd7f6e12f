"""The authorisation rules of room versions 10 and 11 (``content/rooms/v10.md`` and ``v11.md``,
"Authorisation rules"; the numbers in ``AuthError.rule`` are that list's).

Two entry points, because the rules have two halves:

- ``check_auth_events_selection(event, cited)``: rule 2, on the auth events an event *cites*
  (duplicates, entries outside the auth events selection, rejected entries, no create event,
  another room). It returns the cited events as a state map for ``check_auth``.
- ``check_auth(room_version, event, auth_state)``: rule 1 and rules 3 to 10, against a state map
  ``{(type, state_key): event}``. The map may be larger than needed (the whole room state):
  only the keys of the auth events selection are read.

The server-server API ("Checks performed on receipt of a PDU", steps 4 to 6) checks a received
event three times; each is one call here:

4. against its auth events: ``check_auth(v, e, check_auth_events_selection(e, cited))``;
5. against the state before it: ``check_auth(v, e, state_before)`` (rejected ⇒ reject);
6. against the current state: ``check_auth(v, e, current_state)`` (rejected ⇒ soft-fail).

Where a room has no ``m.room.join_rules`` event, the join rule is taken to be ``invite``, as
Synapse and Ruma do (the spec does not name a default; ``invite`` is the closed choice).
Third-party invites (4.4.1) are checked in full: the signature check over ``signed`` needs only
the public keys the ``m.room.third_party_invite`` event carries. Rule 4.2 (a
``join_authorised_via_users_server`` join must be signed by that user's server) needs that
server's key, which this pure module does not have: the caller passes ``is_signed_by``, and
without it such an event is rejected.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any, Final, cast

import nacl.exceptions
import nacl.signing
import signedjson.types
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from cis.matrix.errors import AuthError, MissingEvents
from cis.matrix.events import Event, EventLike, StateKey, thaw
from cis.matrix.power_levels import PowerLevels, effective_power_levels, room_creator
from cis.matrix.room_versions import SUPPORTED_ROOM_VERSIONS, RoomVersion, get_room_version

CREATE: Final = "m.room.create"
MEMBER: Final = "m.room.member"
POWER_LEVELS: Final = "m.room.power_levels"
JOIN_RULES: Final = "m.room.join_rules"
THIRD_PARTY_INVITE: Final = "m.room.third_party_invite"
REDACTION: Final = "m.room.redaction"

AUTHORISING_USER: Final = "join_authorised_via_users_server"
_LEVEL_KEYS: Final = (
    "users_default",
    "events_default",
    "state_default",
    "ban",
    "redact",
    "kick",
    "invite",
)


def server_of(matrix_id: str) -> str:
    """The server name part of a user or room id (everything after the first ``:``)."""
    return matrix_id.partition(":")[2]


def is_user_id(value: object) -> bool:
    """``@localpart:server``, at most 255 bytes (appendices, "User Identifiers"; historical
    user ids are accepted, so the localpart is not restricted further)."""
    return (
        isinstance(value, str)
        and value.startswith("@")
        and bool(server_of(value))
        and len(value.encode("utf-8", "surrogatepass")) <= 255
    )


def _membership(event: EventLike | None) -> str | None:
    if event is None:
        return None
    value = event.content.get("membership")
    return value if isinstance(value, str) else None


# ------------------------------------------------------------------ auth events selection


def auth_types_for(
    event_type: str, state_key: str | None, sender: str, content: Mapping[str, Any]
) -> frozenset[StateKey]:
    """The state keys of the auth events selection (server-server API, "Auth events
    selection"): create, power levels, the sender's membership and, for membership events,
    the target's membership, the join rules (join/invite/knock), the third-party invite named
    by ``signed.token`` and the authorising user's membership (restricted joins)."""
    if event_type == CREATE:
        return frozenset()
    keys: set[StateKey] = {(CREATE, ""), (POWER_LEVELS, ""), (MEMBER, sender)}
    if event_type == MEMBER:
        membership = content.get("membership")
        if state_key is not None:
            keys.add((MEMBER, state_key))
        if membership in ("join", "invite", "knock"):
            keys.add((JOIN_RULES, ""))
        if membership == "invite":
            tpi = content.get("third_party_invite")
            signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
            token = signed.get("token") if isinstance(signed, Mapping) else None
            if isinstance(token, str):
                keys.add((THIRD_PARTY_INVITE, token))
        if membership == "join":
            via = content.get(AUTHORISING_USER)
            if isinstance(via, str):
                keys.add((MEMBER, via))
    return frozenset(keys)


def auth_types_for_event(event: EventLike) -> frozenset[StateKey]:
    return auth_types_for(event.type, event.state_key, event.sender, event.content)


def check_auth_events_selection(
    event: EventLike,
    auth_events: Sequence[EventLike],
    *,
    rejected: Container[str] = frozenset(),
) -> dict[StateKey, EventLike]:
    """Rule 2: check the auth events ``event`` cites; return them keyed by state key.

    ``auth_events`` are the events named in ``event.auth_events`` (in any order; extra ones are
    ignored); a cited id not among them raises ``MissingEvents``. ``rejected`` names events
    known to have been rejected. ``m.room.create`` events skip rule 2 (rule 1 decides them).
    """
    if event.type == CREATE:
        return {}
    by_id = {e.event_id: e for e in auth_events}
    missing = [i for i in event.auth_events if i not in by_id]
    if missing:
        raise MissingEvents(missing)
    cited = [by_id[i] for i in event.auth_events]

    seen: set[StateKey] = set()
    for a in cited:  # 2.1
        if a.state_key is None:
            continue  # not state at all: refused by 2.2 below
        key = (a.type, a.state_key)
        if key in seen:
            raise AuthError("2.1", f"two auth events for {key}")
        seen.add(key)
    selection = auth_types_for_event(event)
    for a in cited:  # 2.2
        if a.state_key is None or (a.type, a.state_key) not in selection:
            raise AuthError(
                "2.2", f"auth event {a.event_id} ({a.type}) is not in the auth events selection"
            )
    for a in cited:  # 2.3
        if a.event_id in rejected:
            raise AuthError("2.3", f"auth event {a.event_id} was rejected")
    selected: dict[StateKey, EventLike] = {(a.type, a.state_key or ""): a for a in cited}
    if (CREATE, "") not in selected:  # 2.4
        raise AuthError("2.4", "no m.room.create event among the auth events")
    for a in cited:  # 2.5
        if a.room_id != event.room_id:
            raise AuthError("2.5", f"auth event {a.event_id} belongs to another room")
    return selected


# ------------------------------------------------------------------ the rules


class _AuthState:
    """The auth state as the rules read it, checking rule 2.5 on each event it hands out."""

    __slots__ = ("_event", "_state")

    def __init__(self, event: EventLike, state: Mapping[StateKey, EventLike]) -> None:
        self._event = event
        self._state = state

    def get(self, key: StateKey) -> EventLike | None:
        found = self._state.get(key)
        if found is not None and found.room_id != self._event.room_id:
            raise AuthError("2.5", f"auth event {found.event_id} belongs to another room")
        return found


def check_auth(
    room_version: str,
    event: EventLike,
    auth_events: Mapping[StateKey, EventLike],
    *,
    is_signed_by: Callable[[str], bool] | None = None,
) -> None:
    """Raise ``AuthError`` (naming the rule) unless the rules allow ``event`` given the state
    ``auth_events``; see the module docstring for the three ways to call it.

    ``is_signed_by(server_name)`` answers rule 4.2: whether ``event`` carries a valid signature
    by that server. Without it, an event with ``join_authorised_via_users_server`` is rejected.
    """
    rv = get_room_version(room_version)
    content = event.content

    # 1. m.room.create
    if event.type == CREATE:
        if event.prev_events:
            raise AuthError("1.1", "m.room.create has prev_events")
        if server_of(event.room_id) != server_of(event.sender):
            raise AuthError("1.2", "the room id's server is not the sender's")
        if "room_version" in content and not (
            isinstance(content["room_version"], str)
            and content["room_version"] in SUPPORTED_ROOM_VERSIONS
        ):
            raise AuthError("1.3", f"unknown room version {content['room_version']!r}")
        if not rv.implicit_room_creator and "creator" not in content:
            raise AuthError("1.4", "m.room.create has no creator (room version 10)")
        return

    state = _AuthState(event, auth_events)
    create = state.get((CREATE, ""))
    if create is None:
        raise AuthError("2.4", "no m.room.create event in the auth state")

    # 3. m.federate
    if content_federate_false(create) and server_of(event.sender) != server_of(create.sender):
        raise AuthError("3", "the room does not federate and the sender is from another server")

    levels = effective_power_levels(rv, create, state.get((POWER_LEVELS, "")))
    sender_level = levels.user_level(event.sender)

    # 4. m.room.member
    if event.type == MEMBER:
        _check_membership(rv, event, state, create=create, levels=levels, is_signed_by=is_signed_by)
        return

    # 5.
    if _membership(state.get((MEMBER, event.sender))) != "join":
        raise AuthError("5", f"{event.sender} is not joined")

    # 6. m.room.third_party_invite
    if event.type == THIRD_PARTY_INVITE:
        if sender_level >= levels.invite:
            return
        raise AuthError("6", "power level below the invite level")

    # 7. required power level
    required = levels.required_level(event.type, event.state_key is not None)
    if required > sender_level:
        raise AuthError(
            "7", f"{event.type} needs power level {required}, sender has {sender_level}"
        )

    # 8. state keys that are user ids belong to that user
    key = event.state_key
    if key is not None and key.startswith("@") and key != event.sender:
        raise AuthError("8", "a state key that is a user id must be the sender's")

    # 9. m.room.power_levels
    if event.type == POWER_LEVELS:
        _check_power_levels(event, state.get((POWER_LEVELS, "")), sender_level)

    # 10. allow


def content_federate_false(create: EventLike) -> bool:
    """Whether ``m.room.create`` says ``"m.federate": false``."""
    return create.content.get("m.federate") is False


def _check_membership(
    rv: RoomVersion,
    event: EventLike,
    state: _AuthState,
    *,
    create: EventLike,
    levels: PowerLevels,
    is_signed_by: Callable[[str], bool] | None,
) -> None:
    content = event.content
    target = event.state_key
    sender = event.sender
    # 4.1
    if target is None or "membership" not in content:
        raise AuthError("4.1", "a membership event needs a state_key and content.membership")
    membership = content["membership"]

    # 4.2
    if AUTHORISING_USER in content:
        via = content[AUTHORISING_USER]
        if not is_user_id(via):
            raise AuthError("4.2", f"{AUTHORISING_USER} is not a user id")
        if is_signed_by is None or not is_signed_by(server_of(via)):
            raise AuthError("4.2", f"not signed by {server_of(via)}, the authorising server")

    sender_membership = _membership(state.get((MEMBER, sender)))
    target_membership = _membership(state.get((MEMBER, target)))
    join_rules = state.get((JOIN_RULES, ""))
    join_rule = join_rules.content.get("join_rule") if join_rules is not None else "invite"
    sender_level = levels.user_level(sender)
    target_level = levels.user_level(target)

    if membership == "join":  # 4.3
        if (
            len(event.prev_events) == 1
            and event.prev_events[0] == create.event_id
            and target == room_creator(rv, create)
        ):
            return  # 4.3.1: the creator's first join
        if sender != target:
            raise AuthError("4.3.2", "only the user themself can join")
        if sender_membership == "ban":
            raise AuthError("4.3.3", f"{sender} is banned")
        if join_rule in ("invite", "knock"):
            if target_membership in ("invite", "join"):
                return
            raise AuthError("4.3.4", f"join rule {join_rule} and {sender} is not invited")
        if join_rule in ("restricted", "knock_restricted"):
            if target_membership in ("join", "invite"):
                return
            via = content.get(AUTHORISING_USER)
            if (
                not isinstance(via, str)
                or _membership(state.get((MEMBER, via))) != "join"
                or levels.user_level(via) < levels.invite
            ):
                raise AuthError(
                    "4.3.5", "no joined user with the invite level authorised this join"
                )
            return
        if join_rule == "public":
            return
        raise AuthError("4.3.7", f"join rule {join_rule!r} lets nobody join")

    if membership == "invite":  # 4.4
        if "third_party_invite" in content:
            _check_third_party_invite(event, state, target_membership)
            return
        if sender_membership != "join":
            raise AuthError("4.4.2", f"{sender} is not joined")
        if target_membership in ("join", "ban"):
            raise AuthError("4.4.3", f"{target} is {target_membership}")
        if sender_level >= levels.invite:
            return
        raise AuthError("4.4.5", "power level below the invite level")

    if membership == "leave":  # 4.5
        if sender == target:
            if sender_membership in ("invite", "join", "knock"):
                return
            raise AuthError("4.5.1", f"{sender} cannot leave from {sender_membership}")
        if sender_membership != "join":
            raise AuthError("4.5.2", f"{sender} is not joined")
        if target_membership == "ban" and sender_level < levels.ban:
            raise AuthError("4.5.3", "unbanning needs the ban level")
        if sender_level >= levels.kick and target_level < sender_level:
            return
        raise AuthError("4.5.5", "kicking needs the kick level and more power than the target")

    if membership == "ban":  # 4.6
        if sender_membership != "join":
            raise AuthError("4.6.1", f"{sender} is not joined")
        if sender_level >= levels.ban and target_level < sender_level:
            return
        raise AuthError("4.6.3", "banning needs the ban level and more power than the target")

    if membership == "knock":  # 4.7
        if join_rule not in ("knock", "knock_restricted"):
            raise AuthError("4.7.1", f"join rule {join_rule!r} does not allow knocking")
        if sender != target:
            raise AuthError("4.7.2", "only the user themself can knock")
        if sender_membership not in ("ban", "invite", "join"):
            return
        raise AuthError("4.7.4", f"{sender} is {sender_membership}")

    raise AuthError("4.8", f"unknown membership {membership!r}")


def _check_third_party_invite(
    event: EventLike, state: _AuthState, target_membership: str | None
) -> None:
    """Rule 4.4.1."""
    if target_membership == "ban":
        raise AuthError("4.4.1.1", f"{event.state_key} is banned")
    tpi = event.content["third_party_invite"]
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError("4.4.1.2", "third_party_invite has no signed object")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("4.4.1.3", "signed needs mxid and token")
    if mxid != event.state_key:
        raise AuthError("4.4.1.4", "signed.mxid is not the state key")
    invite = state.get((THIRD_PARTY_INVITE, token))
    if invite is None:
        raise AuthError("4.4.1.5", "no m.room.third_party_invite for this token")
    if invite.sender != event.sender:
        raise AuthError("4.4.1.6", "sender differs from the third-party invite's sender")
    if _signed_by_any_invite_key(thaw(signed), invite):
        return
    raise AuthError("4.4.1.8", "no signature in signed matches the invite's public keys")


def _invite_public_keys(invite: EventLike) -> list[nacl.signing.VerifyKey]:
    encoded: list[object] = [invite.content.get("public_key")]
    listed = invite.content.get("public_keys")
    if isinstance(listed, Sequence) and not isinstance(listed, str):
        encoded.extend(k.get("public_key") for k in listed if isinstance(k, Mapping))
    keys = []
    for text in encoded:
        if not isinstance(text, str):
            continue
        try:
            raw = decode_base64(text)
            keys.append(nacl.signing.VerifyKey(raw))
        except (binascii.Error, ValueError, UnicodeError, nacl.exceptions.CryptoError):
            continue
    return keys


class _KeyUnderId:
    __slots__ = ("alg", "key", "version")

    def __init__(self, key_id: str, key: nacl.signing.VerifyKey) -> None:
        self.alg, _, self.version = key_id.partition(":")
        self.key = key

    def verify(self, message: bytes, signature: bytes) -> bytes:
        return self.key.verify(message, signature)


def _signed_by_any_invite_key(signed: dict[str, Any], invite: EventLike) -> bool:
    """4.4.1.7: any ed25519 signature in ``signed`` made by any key of the invite."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict):
        return False
    for key in _invite_public_keys(invite):
        for server, by_key in signatures.items():
            if not isinstance(by_key, dict):
                continue
            for key_id in by_key:
                if not key_id.startswith("ed25519:"):
                    continue
                checker = cast(signedjson.types.VerifyKey, _KeyUnderId(key_id, key))
                try:
                    verify_signed_json(signed, server, checker)
                except (SignatureVerifyException, nacl.exceptions.CryptoError):
                    continue
                return True
    return False


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _int_values(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value.values()
    )


def _as_map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _check_power_levels(event: EventLike, previous: EventLike | None, sender_level: int) -> None:
    """Rule 9."""
    new = event.content
    for key in _LEVEL_KEYS:  # 9.1
        if key in new and _int_or_none(new[key]) is None:
            raise AuthError("9.1", f"{key} is not an integer")
    for key in ("events", "notifications"):  # 9.2
        if key in new and not _int_values(new[key]):
            raise AuthError("9.2", f"{key} is not an object of integers")
    if "users" in new:  # 9.3
        users = new["users"]
        if not _int_values(users) or not all(is_user_id(u) for u in users):
            raise AuthError("9.3", "users is not an object of user ids to integers")
    if previous is None:  # 9.4
        return
    old = previous.content

    for key in _LEVEL_KEYS:  # 9.5
        o, n = _int_or_none(old.get(key)), _int_or_none(new.get(key))
        if (key in old) == (key in new) and o == n:
            continue
        if o is not None and o > sender_level:
            raise AuthError("9.5.1", f"cannot change {key} from {o}, above your level")
        if n is not None and n > sender_level:
            raise AuthError("9.5.2", f"cannot set {key} to {n}, above your level")

    def entries(sub: str) -> tuple[Mapping[str, Any], Mapping[str, Any], list[str]]:
        o_map, n_map = _as_map(old.get(sub)), _as_map(new.get(sub))
        return o_map, n_map, sorted(set(o_map) | set(n_map))

    for sub in ("events", "notifications"):  # 9.6: changed or removed
        o_map, n_map, keys = entries(sub)
        for k in keys:
            o = _int_or_none(o_map.get(k))
            changed = k in o_map and (k not in n_map or n_map[k] != o_map[k])
            if changed and o is not None and o > sender_level:
                raise AuthError("9.6", f"cannot change {sub}.{k} from {o}, above your level")
    for sub in ("events", "notifications"):  # 9.7: added or changed
        o_map, n_map, keys = entries(sub)
        for k in keys:
            n = _int_or_none(n_map.get(k))
            changed = k in n_map and (k not in o_map or n_map[k] != o_map[k])
            if changed and n is not None and n > sender_level:
                raise AuthError("9.7", f"cannot set {sub}.{k} to {n}, above your level")
    o_map, n_map, users = entries("users")
    for u in users:  # 9.8: changed or removed, other than the sender's own entry
        if u == event.sender or u not in o_map:
            continue
        if u not in n_map or n_map[u] != o_map[u]:
            o = _int_or_none(o_map[u])
            if o is not None and o >= sender_level:
                raise AuthError("9.8", f"cannot change {u} from {o}, not below your level")
    for u in users:  # 9.9: added or changed
        if u in n_map and (u not in o_map or n_map[u] != o_map[u]):
            n = _int_or_none(n_map[u])
            if n is not None and n > sender_level:
                raise AuthError("9.9", f"cannot set {u} to {n}, above your level")


# ------------------------------------------------------------------ redactions


def redaction_allowed(
    room_version: str,
    redaction: Event,
    original: EventLike,
    auth_events: Mapping[StateKey, EventLike],
) -> bool:
    """Whether a server applies ``redaction`` to ``original`` (``rooms/fragments/
    v3-handling-redactions.md``): the auth rules accept any redaction event; applying it needs
    the sender's power level at least the *redact level*, or the same server as the original's
    sender. ``auth_events`` is the state the redaction is judged against (create and power
    levels are read)."""
    rv = get_room_version(room_version)
    if redaction.type != REDACTION or redaction.redacts != original.event_id:
        return False
    if redaction.room_id != original.room_id:
        return False
    levels = effective_power_levels(
        rv, auth_events.get((CREATE, "")), auth_events.get((POWER_LEVELS, ""))
    )
    if levels.user_level(redaction.sender) >= levels.redact:
        return True
    return server_of(redaction.sender) == server_of(original.sender)

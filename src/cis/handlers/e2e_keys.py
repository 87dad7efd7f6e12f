"""End-to-end encryption plumbing (Client-Server API §"End-to-End Encryption", "Key
management API", §"Send-to-Device messaging").

The server stores and relays what clients encrypt: device identity keys, one-time and
fallback keys, and to-device messages. It checks shapes and ownership (a device uploads only
its own keys), never contents. Keys of users on other nodes come with federation; until then a
query for them reports the server in ``failures``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from cis.handlers.auth import Requester
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.notifier import Notifier
from cis.handlers.stream_counters import StreamCounters
from cis.ids import DeviceId, ServerName, UserId
from cis.storage.client.accounts import AccountStore
from cis.storage.client.e2e import E2eStore

MAX_KEYS_PER_UPLOAD: Final = 1000
MAX_QUERY_USERS: Final = 1000
MAX_TO_DEVICE_TARGETS: Final = 1000
MAX_ID_LENGTH: Final = 255
MAX_RECENT_TXNS: Final = 10_000
MAX_CACHED_DEVICES: Final = 100_000


def _bad(message: str) -> ApiError:
    return ApiError(Errcode.BAD_JSON, message)


def _key_map(value: object, what: str) -> dict[tuple[str, str], Mapping[str, Any] | str]:
    """``{"<algorithm>:<key id>": key}`` → ``{(algorithm, key id): key}``."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_KEYS_PER_UPLOAD:
        raise _bad(f"{what} must be an object")
    out: dict[tuple[str, str], Mapping[str, Any] | str] = {}
    for name, key in value.items():
        algorithm, sep, key_id = name.partition(":")
        if not sep or not algorithm or not key_id or len(name) > MAX_ID_LENGTH:
            raise _bad(f"{what} keys must be <algorithm>:<key id>")
        if not isinstance(key, dict | str):
            raise _bad(f"{what} entries must be objects or strings")
        out[(algorithm, key_id)] = key
    return out


def _user_id(value: object) -> UserId:
    if not isinstance(value, str) or not value.startswith("@") or ":" not in value:
        raise _bad("Expected a user id")
    if len(value) > MAX_ID_LENGTH:
        raise _bad("Expected a user id")
    return UserId(value)


def _server_of(user_id: UserId) -> str:
    return user_id.split(":", 1)[1]


SharingRooms = Callable[[UserId, Sequence[UserId]], Awaitable[set[UserId]]]
"""``(user, others) -> those of others who share a joined room with user``."""


class RemoteKeys(Protocol):
    """What federation adds to key management (``cis.handlers.federation_edus.EduRelay``)."""

    async def query_keys(
        self, wanted: Mapping[UserId, Sequence[DeviceId]]
    ) -> tuple[dict[str, Any], dict[str, Any]]: ...

    async def claim_keys(
        self, wanted: Mapping[UserId, Mapping[DeviceId, str]]
    ) -> tuple[dict[str, Any], dict[str, Any]]: ...

    def send_to_device(
        self,
        sender: UserId,
        event_type: str,
        message_id: str,
        messages: Mapping[str, Mapping[str, Any]],
    ) -> None: ...

    async def device_list_changed(self, user_id: UserId, device_id: DeviceId) -> None: ...


class KeyCounts:
    """Per device, its unclaimed one-time key counts and unused fallback key types, as
    ``/sync`` reports them; cached, and dropped when that device's keys change (an upload by
    it, a claim of its keys)."""

    def __init__(self, store: E2eStore) -> None:
        self._store = store
        self._cache: dict[tuple[str, str], tuple[dict[str, int], list[str]]] = {}

    async def get(self, user_id: UserId, device_id: DeviceId) -> tuple[dict[str, int], list[str]]:
        key = (user_id, device_id)
        cached = self._cache.get(key)
        if cached is None:
            cached = await self._store.key_counts_and_fallbacks(user_id, device_id)
            if len(self._cache) > MAX_CACHED_DEVICES:
                self._cache.clear()
            self._cache[key] = cached
        return dict(cached[0]), list(cached[1])

    def forget(self, user_id: str, device_id: str) -> None:
        self._cache.pop((user_id, device_id), None)


class E2eKeysHandler:
    def __init__(
        self,
        store: E2eStore,
        *,
        accounts: AccountStore,
        notifier: Notifier,
        server_name: ServerName,
        counters: StreamCounters,
        key_counts: KeyCounts,
        sharing: SharingRooms,
    ) -> None:
        self._key_counts = key_counts
        self._sharing = sharing
        self._store = store
        self._accounts = accounts
        self._notifier = notifier
        self._counters = counters
        self._server_name = server_name
        # Recent (user, device, txn id) of sendToDevice, so a retried request is not queued
        # twice (Client-Server API §"Transaction identifiers"); bounded, in memory.
        self._recent_txns: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self.federation: RemoteKeys | None = None
        """Set when the node federates: keys and to-device messages of other servers' users."""

    async def upload(self, requester: Requester, body: Mapping[str, Any]) -> dict[str, Any]:
        device_keys = body.get("device_keys")
        if device_keys is not None:
            if not isinstance(device_keys, dict):
                raise _bad("device_keys must be an object")
            if (
                device_keys.get("user_id") != requester.user_id
                or device_keys.get("device_id") != requester.device_id
            ):
                raise ApiError(Errcode.INVALID_PARAM, "device_keys must be this device's")
            if not isinstance(device_keys.get("keys"), dict) or not isinstance(
                device_keys.get("algorithms"), list
            ):
                raise _bad("device_keys needs keys and algorithms")
        self._key_counts.forget(requester.user_id, requester.device_id)
        counts = await self._store.upload(
            requester.user_id,
            requester.device_id,
            device_keys,
            _key_map(body.get("one_time_keys"), "one_time_keys"),
            _key_map(body.get("fallback_keys"), "fallback_keys"),
        )
        if device_keys is not None:
            # Other users learn of the change through device_lists.changed in /sync.
            self._counters.advance("device_lists", await self._store.device_list_position())
            self._notifier.notify_user(requester.user_id)
            if self.federation is not None:
                await self.federation.device_list_changed(requester.user_id, requester.device_id)
        counts.setdefault("signed_curve25519", 0)
        return {"one_time_key_counts": counts}

    async def query(self, body: Mapping[str, Any]) -> dict[str, Any]:
        wanted_raw = body.get("device_keys")
        if not isinstance(wanted_raw, dict) or len(wanted_raw) > MAX_QUERY_USERS:
            raise _bad("device_keys must be an object")
        wanted: dict[UserId, list[DeviceId]] = {}
        remote: dict[UserId, list[DeviceId]] = {}
        failures: dict[str, Any] = {}
        for user, devices in wanted_raw.items():
            user_id = _user_id(user)
            if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
                raise _bad("device_keys entries must be lists of device ids")
            if _server_of(user_id) != self._server_name:
                if self.federation is None:
                    failures[_server_of(user_id)] = {}
                else:
                    remote[user_id] = [DeviceId(d) for d in devices]
                continue
            wanted[user_id] = [DeviceId(d) for d in devices]
        found: dict[str, Any] = {}
        if wanted:
            found.update({str(u): d for u, d in (await self._store.query(wanted)).items()})
        if remote and self.federation is not None:
            remote_found, remote_failures = await self.federation.query_keys(remote)
            found.update(remote_found)
            failures.update(remote_failures)
        return {
            "device_keys": found,
            "failures": failures,
            "master_keys": {},
            "self_signing_keys": {},
            "user_signing_keys": {},
        }

    async def claim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        wanted_raw = body.get("one_time_keys")
        if not isinstance(wanted_raw, dict) or len(wanted_raw) > MAX_QUERY_USERS:
            raise _bad("one_time_keys must be an object")
        wanted: dict[UserId, dict[DeviceId, str]] = {}
        remote: dict[UserId, dict[DeviceId, str]] = {}
        failures: dict[str, Any] = {}
        for user, devices in wanted_raw.items():
            user_id = _user_id(user)
            if not isinstance(devices, dict) or not all(
                isinstance(a, str) for a in devices.values()
            ):
                raise _bad("one_time_keys entries must map device ids to algorithms")
            if _server_of(user_id) != self._server_name:
                if self.federation is None:
                    failures[_server_of(user_id)] = {}
                else:
                    remote[user_id] = {DeviceId(d): a for d, a in devices.items()}
                continue
            wanted[user_id] = {DeviceId(d): a for d, a in devices.items()}
        claimed: dict[str, Any] = {}
        if wanted:
            claimed.update({str(u): d for u, d in (await self._store.claim(wanted)).items()})
        if remote and self.federation is not None:
            remote_claimed, remote_failures = await self.federation.claim_keys(remote)
            claimed.update(remote_claimed)
            failures.update(remote_failures)
        for user_id, devices in wanted.items():
            for device_id in devices:
                self._key_counts.forget(user_id, device_id)
        return {"one_time_keys": claimed, "failures": failures}

    async def send_to_device(
        self, requester: Requester, event_type: str, txn_id: str, body: Mapping[str, Any]
    ) -> None:
        """Queue ``messages`` (``{user: {device or "*": content}}``) for local devices."""
        txn_key = (requester.user_id, requester.device_id, txn_id)
        if txn_key in self._recent_txns:
            return
        messages = body.get("messages")
        if not isinstance(messages, dict):
            raise _bad("messages must be an object")
        queued: list[tuple[UserId, DeviceId, Mapping[str, Any]]] = []
        remote: dict[str, Mapping[str, Any]] = {}
        for user, devices in messages.items():
            user_id = _user_id(user)
            if not isinstance(devices, dict):
                raise _bad("messages entries must be objects")
            for device, content in devices.items():
                if not isinstance(content, dict):
                    raise _bad("message contents must be objects")
                if _server_of(user_id) != self._server_name:
                    remote[user_id] = devices
                    continue
                if device == "*":
                    records = await self._accounts.list_devices(user_id)
                    targets = [r.device_id for r in records]
                else:
                    targets = [DeviceId(device)]
                queued.extend((user_id, target, content) for target in targets)
                if len(queued) > MAX_TO_DEVICE_TARGETS:
                    raise ApiError(Errcode.INVALID_PARAM, "Too many to-device targets")
        if remote and self.federation is not None:
            self.federation.send_to_device(requester.user_id, event_type, txn_id, remote)
        if queued:
            last = await self._store.queue_to_device(requester.user_id, event_type, queued)
            self._counters.advance("to_device", last)
            self._notifier.notify_users({user for user, _, _ in queued})
        self._recent_txns[txn_key] = None
        while len(self._recent_txns) > MAX_RECENT_TXNS:
            self._recent_txns.popitem(last=False)

    async def changes(self, requester: Requester, since: int, until: int) -> list[str]:
        """Users whose devices changed in ``(since, until]`` and who share a room with the
        requester (or are the requester): whose keys a client must fetch again."""
        changed = await self._store.device_list_changes(since, until)
        others = [u for u in changed if u != requester.user_id]
        sharing = await self._sharing(requester.user_id, others)
        return sorted(str(u) for u in sharing | ({requester.user_id} & changed))

"""Accounts and devices: register, log in and out, whoami, devices, ``cis-node user add``.

Rules (Client-Server API §"Account registration and management", §"Login", §"Device
management"):

- Registration is closed unless the node runs with ``--open-registration`` (403
  ``M_FORBIDDEN``); guests are refused. The ``m.login.dummy`` flow completes at once (see
  ``cis.handlers.auth_requests``). Registrations are rate-limited per IP.
- A password is checked in the scrypt pool; an unknown user is checked against a dummy hash,
  and both failures answer the same 403 ``M_FORBIDDEN``. Failed logins are limited per account
  and per IP (5 a minute); successful logins are never charged.
- The node's system user and any user without a password cannot log in.
- ``logout`` deletes the device (and so its token and keys); ``logout/all`` deletes them all.
- ``DELETE /devices/{id}`` needs the user's password again (user-interactive auth).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final

from cis.clock import Clock
from cis.handlers.access_tokens import new_access_token, new_device_id, token_hash
from cis.handlers.auth import Authenticator, Requester
from cis.handlers.auth_requests import (
    LoginRequest,
    RegisterRequest,
    check_localpart,
)
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.passwords import PasswordHasher
from cis.handlers.ratelimit import RateLimiter
from cis.handlers.stream_counters import StreamCounters
from cis.handlers.uia import DUMMY, PASSWORD, UiaSessions
from cis.ids import DeviceId, ServerName, UserId
from cis.storage.client.accounts import AccountStore, DeviceRecord, UserExists
from cis.storage.client.e2e import E2eStore

SYSTEM_LOCALPART: Final = "cis"
RESERVED_LOCALPARTS: Final = frozenset({SYSTEM_LOCALPART})


@dataclass(frozen=True, slots=True)
class AccountLimits:
    registrations_per_ip: RateLimiter
    failed_logins_per_account: RateLimiter
    failed_logins_per_ip: RateLimiter


def _forbidden_login() -> ApiError:
    return ApiError(Errcode.FORBIDDEN, "Invalid username or password")


class AccountHandler:
    def __init__(
        self,
        *,
        server_name: ServerName,
        accounts: AccountStore,
        e2e: E2eStore,
        hasher: PasswordHasher,
        auth: Authenticator,
        uia: UiaSessions,
        limits: AccountLimits,
        clock: Clock,
        open_registration: bool,
        counters: StreamCounters,
    ) -> None:
        self._counters = counters
        self._server_name = server_name
        self._accounts = accounts
        self._e2e = e2e
        self._hasher = hasher
        self._auth = auth
        self._uia = uia
        self._limits = limits
        self._clock = clock
        self._open_registration = open_registration

    @property
    def server_name(self) -> ServerName:
        return self._server_name

    # ------------------------------------------------------------------ registration

    async def check_available(self, localpart: str) -> None:
        """Raise ``M_INVALID_USERNAME`` or ``M_USER_IN_USE`` unless ``localpart`` is free."""
        user_id = check_localpart(localpart, self._server_name)
        if localpart in RESERVED_LOCALPARTS or await self._accounts.get_user(user_id) is not None:
            raise ApiError(Errcode.USER_IN_USE, "User ID already taken")

    async def register(self, request: RegisterRequest, *, kind: str, ip: str) -> dict[str, Any]:
        if kind == "guest":
            raise ApiError(Errcode.GUEST_ACCESS_FORBIDDEN, "Guest access is not allowed")
        if kind != "user":
            raise ApiError(Errcode.INVALID_PARAM, "Invalid kind")
        if not self._open_registration:
            raise ApiError(Errcode.FORBIDDEN, "Registration has been disabled")
        if request.username is not None:
            await self.check_available(request.username)
        if request.auth_type is None:
            raise self._uia.challenge(DUMMY)
        if request.auth_type != DUMMY:
            raise self._uia.challenge(DUMMY, failed=True)
        if request.password is None or request.password == "":
            raise ApiError(Errcode.MISSING_PARAM, "Missing password")
        self._limits.registrations_per_ip.acquire(ip)
        localpart = request.username if request.username is not None else await self._free_id()
        user_id = check_localpart(localpart, self._server_name)
        password_hash = await self._hasher.hash(request.password)
        device_id = request.device_id or new_device_id()
        token = new_access_token()
        device = None
        if not request.inhibit_login:
            device = (device_id, request.initial_device_display_name, token_hash(token))
        try:
            await self._accounts.register(
                user_id=user_id,
                password_hash=password_hash,
                device=device,
                now_ms=self._clock.time_ms(),
                ip=ip or None,
            )
        except UserExists:
            raise ApiError(Errcode.USER_IN_USE, "User ID already taken") from None
        await self._accounts.set_profile_field(user_id, "displayname", localpart)
        self._uia.complete(request.session)
        if request.inhibit_login:
            return {"user_id": user_id}
        self._counters.advance("device_lists", await self._e2e.mark_device_list_change(user_id))
        return {"user_id": user_id, "device_id": device_id, "access_token": token}

    async def _free_id(self) -> str:
        for _ in range(10):
            candidate = "u" + secrets.token_hex(6)
            if await self._accounts.get_user(f"@{candidate}:{self._server_name}") is None:
                return candidate
        raise ApiError(Errcode.UNKNOWN, "Could not pick a user id", status=500)

    async def create_user(self, localpart: str, password: str | None, *, admin: bool) -> UserId:
        """``cis-node user add``: create a user (no device); ``M_USER_IN_USE`` if taken."""
        await self.check_available(localpart)
        user_id = check_localpart(localpart, self._server_name)
        password_hash = None if password is None else await self._hasher.hash(password)
        try:
            await self._accounts.create_user(
                user_id,
                password_hash,
                admin=admin,
                now_ms=self._clock.time_ms(),
                displayname=localpart,
            )
        except UserExists:
            raise ApiError(Errcode.USER_IN_USE, "User ID already taken") from None
        return user_id

    # ------------------------------------------------------------------ login

    async def _check_password(self, user_id: str, password: str, ip: str) -> UserId:
        """The user id if ``password`` is right; the same 403 for every kind of failure."""
        self._limits.failed_logins_per_account.check(user_id)
        self._limits.failed_logins_per_ip.check(ip)
        user = await self._accounts.get_user(user_id)
        stored = None if user is None or user.deactivated else user.password_hash
        if await self._hasher.verify(password, stored) and user is not None:
            return user.user_id
        self._limits.failed_logins_per_account.charge(user_id)
        self._limits.failed_logins_per_ip.charge(ip)
        raise _forbidden_login()

    async def login(self, request: LoginRequest, *, ip: str) -> dict[str, Any]:
        if request.server is not None and request.server != self._server_name:
            # Same answer and cost as a wrong password.
            await self._hasher.verify(request.password, None)
            raise _forbidden_login()
        user_id = await self._check_password(
            f"@{request.localpart}:{self._server_name}", request.password, ip
        )
        device_id = request.device_id or new_device_id()
        token = new_access_token()
        created = await self._accounts.login_device(
            user_id=user_id,
            device_id=device_id,
            display_name=request.initial_device_display_name,
            token_hash=token_hash(token),
            now_ms=self._clock.time_ms(),
            ip=ip or None,
        )
        if created:
            self._counters.advance("device_lists", await self._e2e.mark_device_list_change(user_id))
        return {
            "user_id": user_id,
            "device_id": device_id,
            "access_token": token,
            "home_server": self._server_name,
        }

    # ------------------------------------------------------------------ sessions, devices

    async def logout(self, requester: Requester) -> None:
        await self._delete_devices(requester.user_id, [requester.device_id])

    async def logout_all(self, requester: Requester) -> None:
        await self._delete_devices(requester.user_id, None)

    async def _delete_devices(self, user_id: UserId, device_ids: list[DeviceId] | None) -> None:
        deleted, hashes = await self._accounts.delete_devices(user_id, device_ids)
        self._auth.forget(hashes)
        if deleted:
            self._counters.advance("device_lists", await self._e2e.mark_device_list_change(user_id))

    async def devices(self, requester: Requester) -> list[DeviceRecord]:
        return await self._accounts.list_devices(requester.user_id)

    async def device(self, requester: Requester, device_id: DeviceId) -> DeviceRecord:
        record = await self._accounts.get_device(requester.user_id, device_id)
        if record is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown device")
        return record

    async def rename_device(self, requester: Requester, device_id: DeviceId, name: str) -> None:
        if not await self._accounts.rename_device(requester.user_id, device_id, name):
            raise ApiError(Errcode.NOT_FOUND, "Unknown device")

    async def delete_devices(
        self, requester: Requester, device_ids: list[DeviceId], auth: object, ip: str
    ) -> None:
        """Delete devices after user-interactive auth with the user's password."""
        if auth is None:
            raise self._uia.challenge(PASSWORD)
        if not isinstance(auth, dict) or auth.get("type") != PASSWORD:
            raise self._uia.challenge(PASSWORD, failed=True)
        password = auth.get("password")
        identifier = auth.get("identifier")
        claimed = auth.get("user")
        if isinstance(identifier, dict):
            claimed = identifier.get("user")
        if not isinstance(password, str) or not isinstance(claimed, str):
            raise self._uia.challenge(PASSWORD, failed=True)
        if not claimed.startswith("@"):
            claimed = f"@{claimed.lower()}:{self._server_name}"
        if claimed != requester.user_id:
            raise ApiError(Errcode.FORBIDDEN, "Cannot authenticate as another user")
        try:
            await self._check_password(requester.user_id, password, ip)
        except ApiError as exc:
            if exc.errcode == Errcode.LIMIT_EXCEEDED:
                raise
            raise self._uia.challenge(PASSWORD, failed=True) from None
        session = auth.get("session")
        self._uia.complete(session if isinstance(session, str) else None)
        await self._delete_devices(requester.user_id, device_ids)


class UserAdmin:
    """Accounts as the admin API (and ``cis-node user``) manage them."""

    def __init__(self, accounts: AccountHandler, store: AccountStore, node_did: str) -> None:
        self._accounts = accounts
        self._store = store
        self._did = node_did

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        localpart = body.get("localpart")
        password = body.get("password")
        admin = body.get("admin", False)
        if not isinstance(localpart, str):
            raise ApiError(Errcode.MISSING_PARAM, "Missing localpart")
        if password is not None and not isinstance(password, str):
            raise ApiError(Errcode.INVALID_PARAM, "Invalid password")
        if not isinstance(admin, bool):
            raise ApiError(Errcode.INVALID_PARAM, "Invalid admin flag")
        user_id = await self._accounts.create_user(localpart, password, admin=admin)
        return await self.get(user_id)

    async def get(self, user_id: str) -> dict[str, Any]:
        user = await self._store.get_user(user_id)
        if user is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown user")
        return {
            "user_id": user.user_id,
            "did": self._did,
            "admin": user.admin,
            "system": user.system,
            "can_login": user.password_hash is not None,
            "displayname": user.displayname,
            "deactivated": user.deactivated,
            "created_ts": user.created_ts,
        }

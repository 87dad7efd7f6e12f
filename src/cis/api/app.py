"""The node's ASGI application for everything but the Client-Server API: admin, skills, and
the federation tunnel's WebSocket route, which ``cis.node`` appends.

Only ``cis.node`` calls ``create_app``, with the handlers it built. It is plain Starlette (which
federation's WebSocket route needs anyway), not a framework with a validation layer: the
handful of routes parse their own parameters, and the node stays lighter in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from cis.api.admin import AdminAuth, admin_routes
from cis.api.errors import error_handlers
from cis.handlers.accounts import UserAdmin
from cis.handlers.admin import AdminHandler
from cis.handlers.status import StatusHandler
from cis.skills.host import SkillHost

if TYPE_CHECKING:
    from cis.handlers.federation_admin import FederationAdmin


def create_app(
    *,
    status: StatusHandler,
    admin: AdminHandler,
    admin_token: str,
    users: UserAdmin | None = None,
    federation: FederationAdmin | None = None,
    skills: SkillHost | None = None,
) -> Starlette:
    auth = AdminAuth(admin_token)
    routes: list[BaseRoute] = admin_routes(status, admin, auth, users)
    if federation is not None:
        from cis.api.federation_admin import federation_routes

        routes.extend(federation_routes(federation, auth))
    if skills is not None:
        from cis.api.skills import skills_routes

        routes.extend(skills_routes(skills, admin_token, auth))
    return Starlette(routes=routes, exception_handlers=error_handlers())

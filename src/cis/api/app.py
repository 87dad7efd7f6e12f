"""The node's ASGI application: every route on one port.

Only ``cis.node`` calls ``create_app``, with the handlers it built; later issues add their
routers here (Matrix Client-Server under ``/_matrix/client``, federation, the web admin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from cis import __version__
from cis.api.admin import AdminAuth, admin_router
from cis.api.errors import install_error_handlers
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
) -> FastAPI:
    app = FastAPI(
        title="cis-node",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    auth = AdminAuth(admin_token)
    app.include_router(admin_router(status, admin, auth, users))
    if federation is not None:
        from cis.api.federation_admin import federation_router

        app.include_router(federation_router(federation, auth))
    if skills is not None:
        from cis.api.skills import skills_router

        app.include_router(skills_router(skills, admin_token, auth))
    return app

"""Who may do what: every check of a role, a route guard or an object-level rule, is in this file.

Roles: ``student`` (default), ``teacher``, ``admin``; teachers and admins are staff. There is no
sign-up for staff roles (``coderunner user-role``), and a role change signs the user out.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers import BaseRouteHandler

from gateway.dependencies import principal_of, services_of
from gateway.errors import Unauthorized
from gateway.tokens import Principal, bearer_token

STAFF_ROLES = frozenset({"teacher", "admin"})


def is_staff(principal: Principal) -> bool:
    return principal.role in STAFF_ROLES


def can_read(principal: Principal, owner_id: str) -> bool:
    """A job (its result, its events) is visible to its owner and to staff.

    Anyone else gets the same 404 as for a job that does not exist, so ids reveal nothing.
    """
    return principal.user_id == owner_id or is_staff(principal)


async def staff_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of routes for teachers and admins: 401 when not signed in, 403 for students."""
    if not is_staff(await principal_of(connection)):
        raise PermissionDeniedException("this is for teachers and admins only")


def metrics_token_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of ``/metrics``: with ``METRICS_TOKEN`` set, only ``Authorization: Bearer <token>``."""
    expected = services_of(connection.app.state).settings.metrics_token
    if expected is None:
        return
    token = bearer_token(connection.headers)
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("send `Authorization: Bearer <METRICS_TOKEN>`")

"""Roles, in-process: the staff guard on a route and the object-level rule for jobs (no servers)."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from gateway.dependencies import Services, store_services
from gateway.errors import EXCEPTION_HANDLERS
from gateway.guards import can_read, staff_only
from gateway.settings import GatewaySettings
from gateway.tokens import Principal, TokenService


@pytest.mark.parametrize(
    ("role", "user", "visible"),
    [("student", "owner", True), ("student", "other", False), ("teacher", "other", True), ("admin", "other", True)],
)
def test_a_job_is_visible_to_its_owner_and_to_staff_only(role: str, user: str, visible: bool) -> None:
    assert can_read(Principal(user_id=user, role=role), "owner") is visible


@get("/staff-area", guards=[staff_only])
async def staff_area() -> str:
    return "ok"


def test_staff_only_routes_refuse_students_and_strangers() -> None:
    settings = GatewaySettings(
        nats_url="nats://127.0.0.1:4222",
        redis_url="redis://127.0.0.1:6379/0",
        mongodb_uri="mongodb://127.0.0.1:27017/",
        jwt_secret=secrets.token_urlsafe(48),
    )
    tokens = TokenService(settings)  # no Redis: nothing is revoked
    unused: dict[str, Any] = {field.name: None for field in dataclasses.fields(Services)}
    app = Litestar([staff_area], exception_handlers=EXCEPTION_HANDLERS)
    store_services(app.state, Services(**{**unused, "settings": settings, "tokens": tokens}))
    with TestClient(app) as client:

        def as_role(role: str | None) -> Any:
            headers = {"Authorization": f"Bearer {tokens.access_token('u1', role, 'f1')}"} if role else {}
            return client.get("/staff-area", headers=headers)

        assert as_role("teacher").text == "ok"
        assert as_role("admin").status_code == 200
        refused = as_role("student")
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == "https://coderunner.dev/problems/forbidden"
        assert as_role(None).status_code == 401

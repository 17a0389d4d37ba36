"""Request-level protections: request ids, security headers, the client's address, the API quota."""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
from collections.abc import Container

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.dependencies import services_of
from gateway.quotas import Policy
from gateway.settings import GatewaySettings
from gateway.tokens import bearer_token

log = logging.getLogger(__name__)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

SECURITY_HEADERS = {
    # The page's script and styles are served from this origin; nothing else may load or frame it.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


class RequestIdFilter(logging.Filter):
    """Adds the current request id to every log record (``%(request_id)s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def client_address(scope: Scope, trusted: Container[str]) -> str:
    """The client's address; X-Forwarded-For only counts when the peer is a trusted proxy."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if peer not in trusted:
        return peer
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            # Walk from the right: the first hop that is not one of our proxies is the client.
            for hop in reversed([h.strip() for h in value.decode("latin-1").split(",")]):
                if hop and hop not in trusted:
                    return hop
    return peer


async def with_request_id(scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
    """Run one HTTP request with its request id set, echoed, and the security headers added.

    Wrapped around the whole application (see ``gateway.app.Gateway``), not as a Litestar
    middleware: those run only once a route matched, so 404 and 405 answers went without.
    """
    incoming = ""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            break
    rid = incoming if _REQUEST_ID_RE.fullmatch(incoming) else secrets.token_hex(8)
    token = request_id.set(rid)
    started = False

    async def send_with_headers(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
            headers = MutableScopeHeaders.from_message(message)
            headers["x-request-id"] = rid
            for key, value in SECURITY_HEADERS.items():
                if key not in headers:
                    headers[key] = value
        await send(message)

    try:
        await next_app(scope, receive, send_with_headers)
    except Exception:
        # Only what Litestar could not answer gets here: mostly failures after the response started.
        log.exception("%s %s failed%s", scope.get("method"), scope.get("path"), " mid-response" if started else "")
        raise
    finally:
        request_id.reset(token)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return bearer_token({"authorization": value.decode("latin-1")})
    return None


# Routes outside the API quota: probes, metrics, docs and the page itself.
QUOTA_EXEMPT = ("/health", "/ready", "/metrics", "/schema", "/static", "/favicon.ico")


class ApiQuotaMiddleware(ASGIMiddleware):
    """The API quota on every route but probes, metrics, docs and the page.

    A request with a valid access token counts against its user (``API_LIMIT_PER_MINUTE``); one
    without against its client address (``API_LIMIT_ANONYMOUS_PER_MINUTE``); both against their
    address's ceiling (``API_LIMIT_PER_ADDRESS_PER_MINUTE``). Keyed by address alone, a class
    behind a school's NAT shared one student's allowance. A token that does not verify counts as
    anonymous, so forged ones cannot mint fresh allowances.

    A refusal (``TooManyRequests``) is answered by the app's exception handlers, as any error is.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, settings: GatewaySettings) -> None:
        self.user_policy = Policy("api", settings.api_limit_per_minute, 60)
        self.anonymous_policy = Policy("api-anonymous", settings.api_limit_anonymous_per_minute, 60)
        self.address_policy = Policy("api-address", settings.api_limit_per_address_per_minute, 60)
        self.trusted = settings.trusted_proxy_set

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        path = scope.get("path", "")
        if path == "/" or path.startswith(QUOTA_EXEMPT):
            await next_app(scope, receive, send)
            return
        services = services_of(scope["litestar_app"].state)
        address = f"client:{client_address(scope, self.trusted)}"
        token = _bearer(scope)
        user = services.tokens.user_of(token) if token else None
        first = (f"user:{user}", self.user_policy) if user else (address, self.anonymous_policy)
        decision = await services.quotas.take_each([first, (address, self.address_policy)])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for key, value in decision.headers.items():
                    if key.lower() not in headers:
                        headers[key] = value
            await send(message)

        await next_app(scope, receive, send_with_headers)

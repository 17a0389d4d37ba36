"""Gateway errors, and the one place that maps them to RFC 9457 problem details."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from nats.errors import Error as NatsError

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://coderunner.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class GatewayError(Exception):
    """Base of every error the gateway's services raise."""

    status = 500
    title = "Internal error"
    slug = "internal"

    def __init__(self, detail: str = "", *, headers: dict[str, str] | None = None) -> None:
        self.detail = detail
        self.headers = headers
        super().__init__(detail or self.title)


class JobNotFound(GatewayError):
    status, title, slug = 404, "Job not found", "job-not-found"


class CodeTooLarge(GatewayError):
    status, title, slug = 413, "Submission too large", "too-large"


class InvalidRequest(GatewayError):
    status, title, slug = 400, "Invalid request", "invalid-request"


class Unauthorized(GatewayError):
    status, title, slug = 401, "Not authenticated", "unauthorized"

    def __init__(self, detail: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer", **(headers or {})})


class Conflict(GatewayError):
    status, title, slug = 409, "Conflict", "conflict"


class TooManyRequests(GatewayError):
    status, title, slug = 429, "Too many requests", "rate-limited"


class Gone(GatewayError):
    status, title, slug = 410, "Gone", "gone"


class QueueFull(GatewayError):
    status, title, slug = 503, "Too busy", "queue-full"


class BusUnavailable(GatewayError):
    status, title, slug = 503, "Queue unavailable", "queue-unavailable"


class IdempotencyKeyReused(GatewayError):
    # draft-ietf-httpapi-idempotency-key-header: a key reused with another payload is 422.
    status, title, slug = 422, "Idempotency-Key reused", "idempotency-key-reused"


# --- answers: every error is an RFC 9457 problem document ------------------------------------------

_SLUGS = {
    400: "invalid-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
    406: "not-acceptable", 409: "conflict", 413: "too-large", 415: "unsupported-media-type", 429: "rate-limited",
    500: "internal", 503: "unavailable",
}  # fmt: skip
RETRY_AFTER_BUS = "2"


def problem(
    status: int,
    title: str,
    slug: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Any = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    if extra:
        body["extra"] = extra
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {}))


def _where(request: Request[Any, Any, Any]) -> str:
    return f"{request.method} {request.scope.get('path', '?')}"


def gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[dict[str, Any]]:
    if exc.status >= 500:
        cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
        log.warning("%s answered %d: %s%s", _where(request), exc.status, exc.detail or exc.title, cause)
    return problem(exc.status, exc.title, exc.slug, exc.detail or exc.title, headers=exc.headers)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Litestar's own errors: validation, routing (404, 405), body too large..."""
    status = exc.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    if status >= 500:
        log.error("%s answered %d", _where(request), status, exc_info=exc)
        return problem(status, title, _SLUGS.get(status, f"http-{status}"), title, headers=exc.headers)
    detail = exc.detail if exc.detail and exc.detail != title else title
    return problem(status, title, _SLUGS.get(status, f"http-{status}"), detail, headers=exc.headers, extra=exc.extra)


def bus_error(request: Request[Any, Any, Any], exc: NatsError) -> Response[dict[str, Any]]:
    """A NATS error no service turned into an answer: the bus is unavailable, try again."""
    log.warning("%s answered 503: NATS %s: %s", _where(request), type(exc).__name__, exc)
    return problem(
        503,
        BusUnavailable.title,
        BusUnavailable.slug,
        "the queue is unavailable; try again shortly",
        headers={"Retry-After": RETRY_AFTER_BUS},
    )


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything else is a bug or an outage: log it with its traceback; tell the client nothing of it."""
    log.error("%s failed: %s: %s", _where(request), type(exc).__name__, exc, exc_info=exc)
    return problem(500, "Internal error", "internal", "the server failed; the request id identifies it in the logs")


EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    GatewayError: gateway_error,
    HTTPException: http_error,
    NatsError: bus_error,
    Exception: unexpected_error,
}

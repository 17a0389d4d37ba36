"""Gateway errors, and the one place that maps them to RFC 9457 problem details.

:class:`Problem` is the one declaration of the shape: every error answer's body is one (the
exception handlers below build them, for the gateway's own errors and Litestar's), and the OpenAPI
document's problem schema is derived from it (:mod:`gateway.openapi`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from nats.errors import Error as NatsError
from pymongo.errors import ConnectionFailure as MongoConnectionFailure
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from telemetry import metrics

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://coderunner.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


# The body of every error the gateway answers (its docstring is the OpenAPI schema's description).
class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details"""

    type: str
    title: str
    status: int
    detail: str
    extra: Any = None


class GatewayError(Exception):
    """Base of every error the gateway's services raise; a subclass names its problem type.

    ``class JobNotFound(GatewayError, status=404, title="Job not found", slug="job-not-found")``
    answers 404 with ``type`` ``https://coderunner.dev/problems/job-not-found``.
    """

    status = 500
    title = "Internal error"
    slug = "internal"

    def __init_subclass__(cls, *, status: int, title: str, slug: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status, cls.title, cls.slug = status, title, slug

    def __init__(self, detail: str = "", *, headers: dict[str, str] | None = None) -> None:
        self.detail = detail
        self.headers = headers
        super().__init__(detail or self.title)


class JobNotFound(GatewayError, status=404, title="Job not found", slug="job-not-found"): ...


class CodeTooLarge(GatewayError, status=413, title="Submission too large", slug="too-large"): ...


class InvalidRequest(GatewayError, status=400, title="Invalid request", slug="invalid-request"): ...


class Conflict(GatewayError, status=409, title="Conflict", slug="conflict"): ...


class TooManyRequests(GatewayError, status=429, title="Too many requests", slug="rate-limited"): ...


class Gone(GatewayError, status=410, title="Gone", slug="gone"): ...


class QueueFull(GatewayError, status=503, title="Too busy", slug="queue-full"): ...


class SignInBusy(GatewayError, status=503, title="Too busy", slug="sign-in-busy"): ...


class BusUnavailable(GatewayError, status=503, title="Queue unavailable", slug="queue-unavailable"): ...


# The read-only flag (flags/declared.py: READ_ONLY): no new work is queued; reads keep working.
class ReadOnly(GatewayError, status=503, title="Read-only mode", slug="read-only"):
    def __init__(self, paused: str) -> None:
        super().__init__(
            f"Code Runner is in read-only mode: {paused}. Results, history, progress and live events still work, "
            "and jobs already queued still run; try again later",
            headers={"Retry-After": RETRY_AFTER_READ_ONLY},
        )


# draft-ietf-httpapi-idempotency-key-header: a key reused with another payload is 422.
class IdempotencyKeyReused(GatewayError, status=422, title="Idempotency-Key reused", slug="idempotency-key-reused"): ...


class Unauthorized(GatewayError, status=401, title="Not authenticated", slug="unauthorized"):
    def __init__(self, detail: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer", **(headers or {})})


# --- answers: every error is an RFC 9457 problem document ------------------------------------------

_SLUGS = {
    400: "invalid-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
    406: "not-acceptable", 409: "conflict", 413: "too-large", 415: "unsupported-media-type", 429: "rate-limited",
    500: "internal", 503: "unavailable",
}  # fmt: skip
RETRY_AFTER_BUS = "2"
# Read-only mode is an operator's decision that lasts minutes, not a blip.
RETRY_AFTER_READ_ONLY = "30"


def problem(
    status: int,
    title: str,
    slug: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Any = None,
) -> Response[Problem]:
    body = Problem(type=PROBLEM_BASE + slug, title=title, status=status, detail=detail, extra=extra or None)
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {}))


def _where(request: Request[Any, Any, Any]) -> str:
    return f"{request.method} {request.scope.get('path', '?')}"


def _unavailable(cause: str) -> None:
    metrics.UNAVAILABLE.labels(cause).inc()
    if cause == "read_only":
        return  # an operator's kill switch: neither overload nor a dependency failing
    # Overload (the queue, or the password-hashing queue, is long) is not a dependency failing.
    metrics.error("queue_full" if cause in ("queue_full", "sign_in_busy") else "dependency")


def gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[Problem]:
    if exc.status == 503:
        _unavailable(
            "queue_full"
            if isinstance(exc, QueueFull)
            else "sign_in_busy"
            if isinstance(exc, SignInBusy)
            else "nats"
            if isinstance(exc, BusUnavailable)
            else "read_only"
            if isinstance(exc, ReadOnly)
            else "other"
        )
    elif exc.status >= 500:
        metrics.error("http_5xx")
    if exc.status >= 500 and not isinstance(exc, ReadOnly):  # read-only: one log line when it is set
        cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
        log.warning("%s answered %d: %s%s", _where(request), exc.status, exc.detail or exc.title, cause)
    return problem(exc.status, exc.title, exc.slug, exc.detail or exc.title, headers=exc.headers)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    """Litestar's own errors: validation, routing (404, 405), body too large, guards (403)..."""
    status = exc.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    if status >= 500:
        metrics.error("http_5xx")
        log.error("%s answered %d", _where(request), status, exc_info=exc)
        return problem(status, title, _SLUGS.get(status, f"http-{status}"), title, headers=exc.headers)
    detail = exc.detail if exc.detail and exc.detail != title else title
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        detail = _invalid_fields(request, exc.extra) or detail
    return problem(status, title, _SLUGS.get(status, f"http-{status}"), detail, headers=exc.headers, extra=exc.extra)


def _invalid_fields(request: Request[Any, Any, Any], extra: list[Any]) -> str:
    """ "displayName: Expected ..." per field, each named as the client sends it (a header's name,
    not its Python parameter's)."""
    try:
        parameters = request.route_handler.parsed_fn_signature.parameters
    except Exception:  # no route matched
        parameters = {}
    named = []
    for item in extra:
        if not isinstance(item, dict) or "message" not in item:
            continue
        key = str(item.get("key") or "")
        definition = getattr(parameters.get(key), "kwarg_definition", None)
        names = (getattr(definition, n, None) for n in ("header", "query", "cookie", "name"))
        alias = next((a for a in names if a), key)
        named.append(f"{alias}: {item['message']}" if alias and alias != "data" else str(item["message"]))
    return "; ".join(named)[:500]


def bus_error(request: Request[Any, Any, Any], exc: NatsError) -> Response[Problem]:
    """A NATS error no service turned into an answer: the bus is unavailable, try again."""
    _unavailable("nats")
    log.warning("%s answered 503: NATS %s: %s", _where(request), type(exc).__name__, exc)
    return problem(
        503,
        BusUnavailable.title,
        BusUnavailable.slug,
        "the queue is unavailable; try again shortly",
        headers={"Retry-After": RETRY_AFTER_BUS},
    )


def dependency_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """Redis or MongoDB unreachable (or too slow) where no service had an answer of its own: an
    outage, not a bug. 503 with Retry-After, a warning in the log, nothing internal in the body."""
    _unavailable("mongodb" if isinstance(exc, MongoConnectionFailure) else "redis")
    log.warning("%s answered 503: %s: %s", _where(request), type(exc).__name__, exc)
    return problem(
        503,
        "Temporarily unavailable",
        "unavailable",
        "a service Code Runner depends on is unavailable; try again shortly",
        headers={"Retry-After": RETRY_AFTER_BUS},
    )


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """Anything else is a bug or an outage: log it with its traceback; tell the client nothing of it."""
    metrics.error("http_5xx")
    log.error("%s failed: %s: %s", _where(request), type(exc).__name__, exc, exc_info=exc)
    return problem(500, "Internal error", "internal", "the server failed; the request id identifies it in the logs")


EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    GatewayError: gateway_error,
    HTTPException: http_error,
    NatsError: bus_error,
    # Connection failures and timeouts only: a duplicate key or a script error is a bug (500).
    RedisConnectionError: dependency_error,
    RedisTimeoutError: dependency_error,
    MongoConnectionFailure: dependency_error,
    Exception: unexpected_error,
}

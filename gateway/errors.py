"""Gateway errors, and the one place that maps them to RFC 9457 problem details."""

from __future__ import annotations

from litestar.plugins.problem_details import ProblemDetailsException

PROBLEM_BASE = "https://coderunner.dev/problems/"


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


class Forbidden(GatewayError):
    status, title, slug = 403, "Forbidden", "forbidden"


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


def to_problem(exc: GatewayError) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=exc.status,
        title=exc.title,
        detail=exc.detail or exc.title,
        type_=PROBLEM_BASE + exc.slug,
        headers=exc.headers,
    )

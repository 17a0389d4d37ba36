"""Settings every process shares: where the bus is and how long it keeps events."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from bus.streams import BusLimits
from config.loader import AppEnv, PositiveFloat, PositiveInt, Url

# A secret containing one of these is a default or a placeholder, never a real secret.
WEAK_SECRET_WORDS = (
    "secret", "default", "password", "passwd", "jwt_secret", "changeme", "change_me", "change-me",
    "example", "test", "dummy", "placeholder", "your", "xxxx", "1234", "admin", "qwerty",
)  # fmt: skip
MIN_SECRET_LENGTH = 32


def check_secret(name: str, value: str) -> None:
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"{name} must be at least {MIN_SECRET_LENGTH} characters (got {len(value)})")
    lowered = value.lower()
    weak = [w for w in WEAK_SECRET_WORDS if w in lowered]
    if weak:
        raise ValueError(f"{name} looks like a placeholder (contains {weak[0]!r}): use a random value")
    if len(set(value)) < 10:
        raise ValueError(f"{name} has too few distinct characters to be random")


class CommonSettings(Struct, frozen=True, kw_only=True):
    """Shared by every process"""

    nats_url: Url
    app_env: AppEnv = "development"
    # How long streams keep events: replay and result look-ups depend on it.
    stream_retention_seconds: PositiveFloat = 7 * 24 * 3600.0
    # Window in which a repeated Nats-Msg-Id (Idempotency-Key) is dropped by JetStream.
    duplicate_window_seconds: PositiveFloat = 120.0
    runner_ack_wait_seconds: PositiveFloat = 30.0
    runner_max_deliver: PositiveInt = 3
    # How long a consumer process may hold an event before JetStream delivers it again (a killed
    # consumer's event waits this long).
    consumer_ack_wait_seconds: PositiveFloat = 30.0
    # Copies of every stream (and durable consumer) in a JetStream cluster: 3 in production (a node
    # may fail), 1 on a single server. Raised on existing streams at start-up; JetStream refuses
    # more replicas than the cluster has nodes.
    stream_replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    log_level: str = "INFO"
    # JSON lines unless stderr is a terminal ("auto"); or always one of them.
    log_format: Literal["auto", "json", "text"] = "auto"
    # Traces go to this OTLP/HTTP endpoint when set (e.g. http://otel-collector:4318).
    otel_exporter_otlp_endpoint: str | None = None
    # Bearer token that GET /metrics requires when set (every process); required (and checked for
    # strength) in production. Unset in development and staging: /metrics is open.
    metrics_token: str | None = None
    # Runners and consumers serve GET /metrics here when a port is set (the gateway serves it on
    # its own port). `coderunner up` gives each process one and prints them.
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Meta(ge=1, le=65535)] | None = None

    @classmethod
    def check_values(cls, values: Mapping[str, Any]) -> list[str]:
        """Weak secrets, and secrets production requires (each one named)."""
        problems = []
        if values.get("metrics_token") is not None:
            try:
                check_secret("METRICS_TOKEN", values["metrics_token"])
            except ValueError as exc:
                problems.append(str(exc))
        elif values.get("metrics_port") is not None and values.get("app_env") == "production":
            problems.append("METRICS_TOKEN is required in production (METRICS_PORT serves /metrics without it)")
        return problems

    def __post_init__(self) -> None:
        problems = type(self).check_values(msgspec.structs.asdict(self))
        if problems:
            raise ValueError("; ".join(problems))

    def bus_limits(self) -> BusLimits:
        """The stream and consumer knobs among these settings (same names in both)."""
        names = {f.name for f in dataclasses.fields(BusLimits)}
        return BusLimits(**{f.name: getattr(self, f.name) for f in msgspec.structs.fields(self) if f.name in names})

"""Settings every process shares: where the bus is and how long it keeps events."""

from __future__ import annotations

import dataclasses

import msgspec
from msgspec import Struct

from bus.streams import BusLimits
from config.loader import AppEnv, PositiveFloat, PositiveInt, Url


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
    log_level: str = "INFO"
    # Traces go to this OTLP/HTTP endpoint when set (e.g. http://otel-collector:4318).
    otel_exporter_otlp_endpoint: str | None = None

    def bus_limits(self) -> BusLimits:
        """The stream and consumer knobs among these settings (same names in both)."""
        names = {f.name for f in dataclasses.fields(BusLimits)}
        return BusLimits(**{f.name: getattr(self, f.name) for f in msgspec.structs.fields(self) if f.name in names})

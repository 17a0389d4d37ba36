from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from deploy.config import PositiveFloat, PositiveInt, Url
from deploy.settings import CommonSettings


class GatewaySettings(CommonSettings, frozen=True, kw_only=True):
    """Gateway (HTTP API and SSE)"""

    redis_url: Url
    mongodb_uri: Url
    gateway_host: str = "127.0.0.1"
    gateway_port: Annotated[int, Meta(ge=1, le=65535)] = 8000
    max_code_bytes: PositiveInt = 64 * 1024
    max_stdin_bytes: PositiveInt = 64 * 1024
    sse_heartbeat_seconds: PositiveFloat = 15.0
    # Limits applied to a plain Run (graded jobs take theirs from the problem).
    run_wall_time_ms: Annotated[int, Meta(ge=100, le=600_000)] = 5_000
    run_memory_mb: Annotated[int, Meta(ge=16, le=16384)] = 128
    run_output_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024

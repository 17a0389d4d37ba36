from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Annotated, Any

from msgspec import Meta

from config.common import CommonSettings, check_secret
from config.loader import PositiveFloat, PositiveInt, Url


@dataclass(frozen=True)
class TrustedProxies:
    """The reverse proxies whose X-Forwarded-For counts: addresses and networks."""

    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        return cls(tuple(ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()))

    def __contains__(self, address: object) -> bool:
        try:
            ip = ip_address(str(address))
        except ValueError:  # "unknown", a Unix socket's peer, a hostname: never a trusted proxy
            return False
        return any(ip in net for net in self.networks)


class GatewaySettings(CommonSettings, frozen=True, kw_only=True):
    """Gateway (HTTP API and SSE)"""

    redis_url: Url
    mongodb_uri: Url
    # Signs access tokens (HS256). Required; `coderunner up` generates one in development.
    jwt_secret: str
    gateway_host: str = "127.0.0.1"
    gateway_port: Annotated[int, Meta(ge=1, le=65535)] = 8000
    # The one browser origin allowed to call the API cross-origin (unset: same origin only).
    cors_origin: Annotated[str, Meta(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")] | None = None
    # Comma-separated addresses or networks (CIDR, e.g. an ingress controller's pod network) of
    # reverse proxies whose X-Forwarded-For is trusted.
    trusted_proxies: str = ""
    jwt_issuer: str = "coderunner"
    jwt_audience: str = "coderunner-api"
    access_token_seconds: Annotated[int, Meta(ge=60, le=3600)] = 15 * 60
    refresh_token_days: Annotated[int, Meta(ge=1, le=90)] = 30
    # Quotas, shared by all gateway replicas through Redis.
    exec_limit_per_minute: PositiveInt = 10
    exec_limit_per_day: PositiveInt = 500
    # The rest of the API: per signed-in user; per client address for requests without a valid
    # access token; and a ceiling per address over both (a school behind one NAT address).
    api_limit_per_minute: PositiveInt = 100
    api_limit_anonymous_per_minute: PositiveInt = 300
    api_limit_per_address_per_minute: PositiveInt = 3000
    # Sign-ins and registrations get 503 (Retry-After) when the password-hashing queue would make
    # them wait longer than this.
    sign_in_max_wait_seconds: PositiveFloat = 5.0
    # Submissions get 503 once the runners' backlog (pending + in flight) reaches this.
    max_queue_depth: PositiveInt = 200
    # Also 503 (Retry-After) when the queue would take longer than this to start a new job.
    max_queue_wait_seconds: PositiveFloat = 10.0
    max_code_bytes: PositiveInt = 64 * 1024
    max_stdin_bytes: PositiveInt = 64 * 1024
    sse_heartbeat_seconds: PositiveFloat = 15.0
    # Concurrent event streams, across replicas (counted in Redis): more get 429.
    sse_max_streams_per_user: PositiveInt = 10
    sse_max_streams_per_job: PositiveInt = 3
    # A connection whose request head has not fully arrived this long after it opened (or after
    # its previous response) is closed; an idle keep-alive connection after HTTP_KEEP_ALIVE_SECONDS.
    http_header_timeout_seconds: PositiveFloat = 10.0
    http_keep_alive_seconds: PositiveFloat = 5.0
    # Limits applied to a plain Run (graded jobs take theirs from the problem).
    run_wall_time_ms: Annotated[int, Meta(ge=100, le=600_000)] = 5_000
    run_output_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024

    @classmethod
    def check_values(cls, values: Mapping[str, Any]) -> list[str]:
        """Secrets that are weak, or missing where the environment requires them (each one named)."""
        problems = super().check_values(values)
        if values.get("jwt_secret") is not None:
            try:
                check_secret("JWT_SECRET", values["jwt_secret"])
            except ValueError as exc:
                problems.append(str(exc))
        if values.get("metrics_token") is None and values.get("app_env") == "production":
            problems.append("METRICS_TOKEN is required in production (GET /metrics is public without it)")
        try:
            _trusted(values.get("trusted_proxies") or "")
        except ValueError as exc:
            problems.append(f"TRUSTED_PROXIES: {exc} (addresses or CIDR networks, comma-separated)")
        return problems

    @property
    def trusted_proxy_set(self) -> TrustedProxies:
        return _trusted(self.trusted_proxies)


@functools.lru_cache(maxsize=8)
def _trusted(text: str) -> TrustedProxies:
    return TrustedProxies.parse(text)

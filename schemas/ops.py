"""Operator-facing payloads (request/reply on core NATS, not stored in a stream)."""

from __future__ import annotations

from msgspec import Struct


class PoolStats(Struct, frozen=True, kw_only=True, rename="camel"):
    backend: str
    min_size: int
    max_size: int
    idle: int
    busy: int
    created: int
    destroyed: int
    warm_hits: int
    cold_starts: int
    failed_health_checks: int
    spawn_failures: int
    expired: int


class RunnerStats(Struct, frozen=True, kw_only=True, tag="runner.stats", tag_field="type", rename="camel"):
    """Answer to a request on ``coderunner.v1.runners.stats``."""

    runner_id: str
    concurrency: int
    running: int
    pool: PoolStats
    v: int = 1
    # Which mechanism enforces each sandbox limit here, e.g. {"memory": "cgroup v2"} (added in v1.1).
    enforcement: dict[str, str] = {}

"""Metrics: the exposition endpoint of runners and consumers, its token, and what each process
exports after real work (each figure checked against what happened)."""

from __future__ import annotations

import asyncio
import re
import secrets

import httpx
import pytest

from config.loader import SettingsError, load
from consumers.settings import ConsumerSettings
from local import embedded
from runner.settings import RunnerSettings
from telemetry import metrics
from telemetry.exposition import MetricsServer
from tests.conftest import Stack, wait_for
from tests.helpers import read_events, submit

TOKEN = secrets.token_urlsafe(40)


def test_the_exposition_answers_only_its_two_gets_and_checks_the_token() -> None:
    async def run() -> list[bytes]:
        server = MetricsServer("127.0.0.1", 0, TOKEN)
        await server.start()
        answers = []
        try:
            for raw in (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n",
                f"GET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode(),
                b"GET /health HTTP/1.1\r\n\r\n",
                b"POST /metrics HTTP/1.1\r\n\r\n",
                b"GET /etc/passwd HTTP/1.1\r\n\r\n",
                b"nonsense\r\n\r\n",
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(raw)
                await writer.drain()
                answers.append(await reader.read())
                writer.close()
        finally:
            await server.stop()
        return answers

    anonymous, wrong, right, health, post, other, nonsense = asyncio.run(run())
    assert anonymous.startswith(b"HTTP/1.1 401") and wrong.startswith(b"HTTP/1.1 401")
    assert right.startswith(b"HTTP/1.1 200") and b"text/plain; version=" in right
    assert health.startswith(b"HTTP/1.1 200")  # liveness needs no token
    assert post.startswith(b"HTTP/1.1 405") and other.startswith(b"HTTP/1.1 404")
    assert nonsense.startswith(b"HTTP/1.1 400")


def test_without_a_token_the_metrics_are_open() -> None:
    """The check above fails when the protection is off: no token, no 401."""

    async def run() -> bytes:
        server = MetricsServer("127.0.0.1", 0, None)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
            await writer.drain()
            data = await reader.read()
            writer.close()
            return data
        finally:
            await server.stop()

    assert asyncio.run(run()).startswith(b"HTTP/1.1 200")


def test_production_serves_metrics_only_with_a_strong_token() -> None:
    env = {"NATS_URL": "nats://127.0.0.1:4222", "METRICS_PORT": "9100", "APP_ENV": "production"}
    with pytest.raises(SettingsError, match="METRICS_TOKEN is required in production"):
        load(RunnerSettings, {**env, "SANDBOX_ALLOW_WEAK_LIMITS": "true"})
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        load(
            ConsumerSettings,
            {**env, "REDIS_URL": "redis://x", "MONGODB_URI": "mongodb://x", "METRICS_TOKEN": "changeme" * 5},
        )
    ok = load(RunnerSettings, {**env, "METRICS_TOKEN": TOKEN})
    assert ok.metrics_port == 9100 and ok.metrics_token == TOKEN
    # Without a metrics port nothing is served, so nothing is required.
    assert load(RunnerSettings, {"NATS_URL": "nats://x:1", "APP_ENV": "production"}).metrics_port is None


def test_every_declared_metric_follows_the_naming_rules() -> None:
    for name in metrics.declared_names():
        assert name.startswith("coderunner_"), name
        assert re.fullmatch(r"[a-z_]+", name), name
    for collector in (*metrics.COMMON, *(c for group in metrics.BY_KIND.values() for c in group)):
        for family in collector.describe():  # type: ignore[attr-defined]
            labels = set(getattr(collector, "_labelnames", ()))
            # No user, job or problem id may become a label (unbounded series, personal data).
            assert not labels & {"user", "user_id", "job", "job_id", "problem", "problem_id", "email"}, family.name
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), family.name


def _scrape(url: str) -> dict[str, float]:
    text = httpx.get(url, timeout=5).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


@pytest.mark.e2e
def test_each_process_exports_what_it_did(stack: Stack) -> None:
    port = embedded.free_port()
    runner = stack.runner(METRICS_PORT=str(port))
    try:
        before = _scrape(f"{stack.base_url}/metrics")
        with stack.client() as c:
            job = submit(c, "print('x')")
            assert read_events(c, job["eventsUrl"])[-1].event == "done"
            failing = submit(c, "raise SystemExit(3)")
            read_events(c, failing["eventsUrl"])
        at_runner = _scrape(f"http://127.0.0.1:{port}/metrics")
        assert at_runner['coderunner_build_info{process="runner",version="0.1.0"}'] == 1
        assert at_runner['coderunner_execution_duration_seconds_count{mode="run",verdict="OK"}'] >= 1
        assert at_runner['coderunner_execution_duration_seconds_count{mode="run",verdict="RUNTIME_ERROR"}'] >= 1
        assert at_runner["coderunner_queue_wait_seconds_count"] >= 2
        assert at_runner["coderunner_runner_slots"] == 2
        # (Its value may be 0 for a moment: used sandboxes are replaced, not reused.)
        assert 'coderunner_sandbox_pool_available{backend="bwrap"}' in at_runner
        assert at_runner['coderunner_messages_total{consumer="runner",outcome="ack"}'] >= 2
        # A runner does not export the gateway's figures (a 0 from it would mislead a max()).
        assert "coderunner_queue_depth" not in at_runner and "coderunner_sse_connections" not in at_runner

        def gateway_counted() -> dict[str, float] | None:
            # Sampled every 5 s: the runner's durable exists only since this test's runner started.
            now = _scrape(f"{stack.base_url}/metrics")
            sampled = 'coderunner_consumer_pending{consumer="runner",stream="SUBMISSIONS"}' in now
            return now if sampled and now.get("coderunner_daily_submissions", 0) >= 2 else None

        after = wait_for(gateway_counted, 20, what="the daily count and the runner's backlog sampled")
        assert isinstance(after, dict)
        key = 'coderunner_submissions_total{mode="run"}'
        assert after[key] - before.get(key, 0) == 2
        assert after["coderunner_daily_active_users"] >= 1
        assert 'coderunner_consumer_pending{consumer="runner",stream="SUBMISSIONS"}' in after
        assert after["coderunner_queue_depth"] == 0
        assert "coderunner_runner_slots" not in after
        http = [k for k in after if k.startswith("coderunner_requests_total{") and 'path="/execution/submit"' in k]
        assert http, "the HTTP metrics name the route template"
        assert not any(job["jobId"] in k for k in after), "no job id in any label"
    finally:
        runner.stop()

"""Structured logs: JSON lines (text on a terminal) with request, trace and job ids; no secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import jwt
import pytest
from opentelemetry.sdk.trace import TracerProvider

from config.loader import load
from gateway.security import RequestIdFilter, request_id
from gateway.settings import GatewaySettings
from telemetry import logs
from telemetry.logs import (
    JsonFormatter,
    RedactionFilter,
    TextFormatter,
    bind_job,
    redact,
    register_secret,
    register_settings_secrets,
)
from telemetry.setup import setup_logging
from tests.conftest import ROOT

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def no_registered_secrets() -> Iterator[None]:
    logs._clear_secrets()
    yield
    logs._clear_secrets()


def capture(fmt: str = "json", *filters: logging.Filter) -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own (not the root: pytest's handlers stay) writing through one handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test-proc") if fmt == "json" else TextFormatter("test-proc"))
    for f in filters:
        handler.addFilter(f)
    logger = logging.getLogger(f"test.logs.{secrets.token_hex(4)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def entries(stream: io.StringIO) -> list[dict]:
    lines = stream.getvalue().splitlines()
    return [json.loads(line) for line in lines]


def a_jwt(secret: str = "k3Xq9vLm2PzR7tYw4NbC8sHd6FgJ1aQe5UoI0") -> str:
    return jwt.encode({"sub": "user-1", "aud": "coderunner-api"}, secret, algorithm="HS256")


# --- the JSON lines ----------------------------------------------------------------------------


def test_json_line_has_the_fields_and_nothing_absent() -> None:
    logger, stream = capture()
    logger.info("job %s queued", "j-1")
    logger.warning("second")
    first, second = entries(stream)
    assert set(first) == {"timestamp", "level", "process", "logger", "message"}, first
    assert first["level"] == "INFO" and second["level"] == "WARNING"
    assert first["process"] == "test-proc" and first["logger"] == logger.name
    assert first["message"] == "job j-1 queued"
    assert TIMESTAMP.match(first["timestamp"]), first["timestamp"]
    stamped = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 5, "UTC, not local time"


def test_one_line_per_record_even_with_newlines_and_tracebacks() -> None:
    logger, stream = capture()
    logger.info('two\nlines "quoted" \ud800 lone surrogate')
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("failed")
    assert len(stream.getvalue().splitlines()) == 2
    plain, failed = entries(stream)
    assert plain["message"].startswith('two\nlines "quoted"')
    assert failed["level"] == "ERROR" and failed["message"] == "failed"
    assert failed["exception"].startswith("Traceback") and "ValueError: boom" in failed["exception"]


def test_trace_and_span_ids_inside_a_span_only() -> None:
    tracer = TracerProvider().get_tracer("test")  # a provider of its own: the global one is untouched
    logger, stream = capture()
    with tracer.start_as_current_span("handle") as span:
        logger.info("inside")
    logger.info("outside")
    inside, outside = entries(stream)
    ctx = span.get_span_context()
    assert inside["trace_id"] == format(ctx.trace_id, "032x") and re.fullmatch(r"[0-9a-f]{32}", inside["trace_id"])
    assert inside["span_id"] == format(ctx.span_id, "016x")
    assert "trace_id" not in outside and "span_id" not in outside


async def test_job_id_inside_bind_job_and_per_task() -> None:
    logger, stream = capture()

    async def handle(job: str) -> None:
        with bind_job(job):
            await asyncio.sleep(0.01)  # the other task runs meanwhile, bound to its own job
            logger.info("handling")

    logger.info("before")
    await asyncio.gather(handle("job-a"), handle("job-b"))
    with bind_job("job-c"), bind_job("job-d"):
        logger.info("nested")
    logger.info("after")
    before, a, b, nested, after = entries(stream)
    assert "job_id" not in before and "job_id" not in after
    assert {a["job_id"], b["job_id"]} == {"job-a", "job-b"}
    assert nested["job_id"] == "job-d"


def test_request_id_from_the_gateways_filter() -> None:
    logger, stream = capture("json", RequestIdFilter())
    token = request_id.set("req-42")
    try:
        logger.info("in a request")
    finally:
        request_id.reset(token)
    logger.info("outside a request")
    inside, outside = entries(stream)
    assert inside["request_id"] == "req-42"
    assert "request_id" not in outside, "the filter's '-' placeholder is not logged"


def test_text_format_carries_the_same_context() -> None:
    tracer = TracerProvider().get_tracer("test")
    logger, stream = capture("text", RequestIdFilter())
    token = request_id.set("req-7")
    try:
        with bind_job("job-9"), tracer.start_as_current_span("s") as span:
            logger.info("hello %s", "there")
    finally:
        request_id.reset(token)
    trace_id = format(span.get_span_context().trace_id, "032x")
    line = stream.getvalue().rstrip("\n")
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} INFO test-proc \[req-7\] job=job-9 trace={trace_id} "
        rf"{re.escape(logger.name)}: hello there",
        line,
    ), line


# --- setup_logging: the process's one handler ----------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, sys.excepthook, threading.excepthook
    uvicorn = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level)
        for n in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    }
    yield
    for h in root.handlers[:]:
        if h not in saved[0]:
            root.removeHandler(h)
    for h in saved[0]:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(saved[1])
    sys.excepthook, threading.excepthook = saved[2], saved[3]
    logging.captureWarnings(False)
    for name, (handlers, propagate, level) in uvicorn.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate, logger.level = handlers, propagate, level


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.usefixtures("restore_logging")
def test_text_on_a_terminal_json_otherwise() -> None:
    tty = Terminal()
    handler = setup_logging("INFO", "proc", stream=tty)
    assert isinstance(handler.formatter, TextFormatter)
    logging.getLogger("x").info("to a terminal")
    assert " INFO proc x: to a terminal" in tty.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(tty.getvalue())

    piped = io.StringIO()
    handler = setup_logging("INFO", "proc", stream=piped)
    assert isinstance(handler.formatter, JsonFormatter)
    logging.getLogger("x").info("to a pipe")
    logging.getLogger("x").debug("below the level")
    assert [e["message"] for e in entries(piped)] == ["to a pipe"]
    assert "to a pipe" not in tty.getvalue(), "the earlier handler was replaced, not kept"

    forced = io.StringIO()
    setup_logging("DEBUG", "proc", stream=Terminal(), fmt="json")
    setup_logging("DEBUG", "proc", stream=forced, fmt="text")
    logging.getLogger("x").debug("forced")
    assert "DEBUG proc x: forced" in forced.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_uvicorn_loggers_go_through_the_same_handler() -> None:
    import uvicorn

    logging.getLogger("uvicorn.access").addHandler(logging.StreamHandler(io.StringIO()))
    logging.getLogger("uvicorn.access").propagate = False
    out = io.StringIO()
    setup_logging("INFO", "gateway", stream=out)
    # What the gateway's main() does next: uvicorn.Config must not re-install its own logging.
    uvicorn.Config(lambda *a: None, log_config=None, log_level="info", access_log=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate, name
    ticket = a_jwt()
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/execution/jobs/j/events?ticket={ticket}", "1.1", 200
    )
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:8000")
    access, error = entries(out)
    assert access["logger"] == "uvicorn.access" and access["message"].endswith('?ticket=[jwt] HTTP/1.1" 200')
    assert ticket not in out.getvalue()
    assert error["logger"] == "uvicorn.error"


# --- redaction -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        pytest.param(
            "Authorization: Bearer abc.def-ghi", "abc.def-ghi", "Authorization: Bearer [redacted]", id="bearer"
        ),
        pytest.param(
            "connect to redis://default:hunter2pw@cache:6379/0 failed",
            "hunter2pw",
            "connect to redis://default:[redacted]@cache:6379/0 failed",
            id="url",
        ),
        pytest.param(
            "mongodb://admin:p@ss:w0rd@db1,db2/app?authSource=admin",
            "w0rd",
            "mongodb://admin:[redacted]@db1,db2/app?authSource=admin",
            id="url-with-at-in-password",
        ),
        pytest.param("nats://:tok3n@bus:4222", "tok3n", "nats://:[redacted]@bus:4222", id="url-no-user"),
        pytest.param("login password=hunter2 email=a@b", "hunter2", "login password=[redacted] email=a@b", id="pair"),
        pytest.param(
            '{"email": "a@b.org", "password": "correct \\"horse\\" battery"}',
            "horse",
            '{"email": "a@b.org", "password": "[redacted]"}',
            id="json",
        ),
        pytest.param("{'client_secret': 'abc123'}", "abc123", "{'client_secret': '[redacted]'}", id="dict-repr"),
        pytest.param(
            "METRICS_TOKEN=zz9zz X-Api-Key: kk7", "zz9zz", "METRICS_TOKEN=[redacted] X-Api-Key: [redacted]", id="names"
        ),
    ],
)
def test_each_pattern_is_scrubbed(text: str, secret: str, expected: str) -> None:
    assert redact(text) == expected
    assert secret not in redact(text)


def test_jwts_are_scrubbed_wherever_they_are() -> None:
    token = a_jwt()
    for text in (token, f"token {token} end", f"/events?ticket={token}&x=1", f"Bearer {token}", f'"{token}"'):
        cleaned = redact(text)
        assert token not in cleaned and token.split(".")[1] not in cleaned, cleaned
        assert "[jwt]" in cleaned
    unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."
    assert redact(f"alg none: {unsigned}") == "alg none: [jwt]"


def test_ordinary_lines_are_left_alone() -> None:
    for text in (
        "runner pulling with concurrency 2",
        "access_token_seconds=900 refresh_token_days=30",
        "GET http://127.0.0.1:8000/health 200",
        "idempotency key k-1 already used",
        "user a@example.org signed in",
    ):
        assert redact(text) is text, text


def test_registered_secrets_in_messages_arguments_and_exceptions() -> None:
    secret = "Zx81-" + secrets.token_urlsafe(24)
    register_secret(secret)
    register_secret("ab")  # too short to register: would garble every line
    logger, stream = capture("json", RedactionFilter())
    logger.warning("signing with %s", secret)
    logger.info("lab about")
    try:
        raise RuntimeError(f"bad key {secret}")
    except RuntimeError:
        logger.exception("could not sign")
    logger.info("here", stack_info=True, extra={"x": 1})
    assert secret not in stream.getvalue()
    warning, short, failed, _ = entries(stream)
    assert warning["message"] == "signing with [redacted]"
    assert short["message"] == "lab about"
    assert "RuntimeError: bad key [redacted]" in failed["exception"]


def test_settings_secrets_are_registered() -> None:
    jwt_secret = "k3Xq9vLm2PzR7tYw4NbC8sHd6FgJ1aQe5UoI0"
    metrics_token = "Mt-" + secrets.token_urlsafe(32)
    settings = load(
        GatewaySettings,
        {
            "NATS_URL": "nats://bus:n4ts-pass@nats:4222",
            "REDIS_URL": "redis://:r3dis%2Fpass@redis:6379/0",
            "MONGODB_URI": "mongodb://app:m0ngo-pass@mongo/db",
            "JWT_SECRET": jwt_secret,
            "METRICS_TOKEN": metrics_token,
        },
    )
    register_settings_secrets(settings)
    text = f"{jwt_secret} n4ts-pass r3dis/pass r3dis%2Fpass m0ngo-pass {metrics_token}"
    assert redact(text) == " ".join(["[redacted]"] * 6)


# --- end to end: a real process's stderr ----------------------------------------------------------

PROCESS = r"""
import logging, os, sys
from telemetry.logs import RedactionFilter, bind_job, register_secret
from telemetry.setup import setup_logging

handler = setup_logging("INFO", "e2e")
if os.environ.get("UNPROTECTED"):
    handler.filters = [f for f in handler.filters if not isinstance(f, RedactionFilter)]
register_secret(os.environ["E2E_SECRET"])
log = logging.getLogger("e2e.worker")
with bind_job("job-e2e"):
    log.info("token issued: %s", os.environ["E2E_JWT"])
log.warning("cannot reach %s", os.environ["E2E_URL"])
log.info("signing key is %s", os.environ["E2E_SECRET"])
logging.getLogger("uvicorn.access").info("GET /x?ticket=%s 200", os.environ["E2E_JWT"])
try:
    raise ConnectionError("auth failed with " + os.environ["E2E_SECRET"])
except ConnectionError:
    log.exception("giving up")
raise SystemError("crashed holding " + os.environ["E2E_SECRET"])
"""


def run_process(stderr: int | None = subprocess.PIPE, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    secret = "Qp7-" + secrets.token_urlsafe(24)
    token = a_jwt(secret)
    url_password = "Pw-" + secrets.token_hex(8)
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "E2E_SECRET": secret,
        "E2E_JWT": token,
        "E2E_URL": f"redis://default:{url_password}@127.0.0.1:6399/0",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", PROCESS],
        cwd=ROOT,
        env=environ,
        stderr=stderr,
        stdout=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    return done, [secret, token, token.split(".")[1], token.split(".")[2], url_password]


def leaked(output: str, secret_values: list[str]) -> list[str]:
    return [s for s in secret_values if s in output]


def test_a_process_writes_json_lines_without_secrets() -> None:
    done, secret_values = run_process()
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is JSON, the crash's traceback too
    assert [(e["level"], e["logger"]) for e in parsed] == [
        ("INFO", "e2e.worker"),
        ("WARNING", "e2e.worker"),
        ("INFO", "e2e.worker"),
        ("INFO", "uvicorn.access"),
        ("ERROR", "e2e.worker"),
        ("CRITICAL", "e2e"),
    ], lines
    assert all(e["process"] == "e2e" and TIMESTAMP.match(e["timestamp"]) for e in parsed)
    assert parsed[0]["job_id"] == "job-e2e" and "job_id" not in parsed[1]
    assert parsed[0]["message"] == "token issued: [jwt]"
    assert parsed[1]["message"] == "cannot reach redis://default:[redacted]@127.0.0.1:6399/0"
    assert "SystemError: crashed holding [redacted]" in parsed[5]["exception"]
    assert leaked(done.stderr, secret_values) == []


def test_the_leak_check_fails_without_the_redaction_filter() -> None:
    done, secret_values = run_process(UNPROTECTED="1")
    assert done.returncode == 1
    assert all(json.loads(line) for line in done.stderr.splitlines())
    assert leaked(done.stderr, secret_values) == secret_values, "the check above would have caught a leak"


def test_a_process_on_a_terminal_writes_text() -> None:
    primary, secondary = os.openpty()
    try:
        try:
            done, secret_values = run_process(stderr=secondary)
        finally:
            os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
    output = b"".join(chunks).decode()
    assert done.returncode == 1
    assert re.search(r" INFO e2e job=job-e2e e2e\.worker: token issued: \[jwt\]", output), output
    assert "Traceback" in output and not output.lstrip().startswith("{")
    assert leaked(output, secret_values) == []

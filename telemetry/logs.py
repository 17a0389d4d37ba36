"""Structured logs: one JSON object per line (plain text on a terminal), with secrets scrubbed.

Every line carries ``timestamp`` (UTC, milliseconds), ``level``, ``process``, ``logger`` and
``message``, and when there is one the ``request_id`` (the gateway's ``RequestIdFilter``), the
``trace_id`` and ``span_id`` of the current OpenTelemetry span, the ``job_id`` bound with
:func:`bind_job`, and the ``exception`` text.

:class:`RedactionFilter`, installed on the handler, scrubs every line before it is formatted:
values registered with :func:`register_secret` (the JWT secret, the metrics token, passwords in
the service URLs), anything shaped like a JWT, ``password=...``-style pairs, ``Bearer`` tokens and
the password of ``scheme://user:password@host`` URLs, in the message and in exception text alike.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from opentelemetry import trace

REDACTED = "[redacted]"
JWT_REDACTED = "[jwt]"

# The job a runner or consumer is handling right now; set with ``bind_job`` around each message.
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)


@contextmanager
def bind_job(job_id: str | None) -> Iterator[None]:
    """Every log line written inside (in this task, and tasks it starts) carries ``job_id``."""
    token = job_id_var.set(job_id or None)
    try:
        yield
    finally:
        job_id_var.reset(token)


# --- secrets ---------------------------------------------------------------------------------

# Shorter values are not registered: redacting every "ab" would garble all logs. Such passwords in
# URLs are still scrubbed by the URL pattern.
MIN_SECRET_LENGTH = 4
_secrets: tuple[str, ...] = ()  # longest first; replaced whole (readers never lock)
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Never log ``value`` (nor its URL-decoded form): it becomes ``[redacted]`` wherever it appears."""
    global _secrets
    if not value:
        return
    candidates = {value, urllib.parse.unquote(value)}
    with _secrets_lock:
        merged = set(_secrets) | {c for c in candidates if len(c) >= MIN_SECRET_LENGTH}
        _secrets = tuple(sorted(merged, key=len, reverse=True))


def register_url_secrets(url: str | None) -> None:
    """Register the password of ``scheme://user:password@host/...`` (nothing when there is none)."""
    if not url or "@" not in url:
        return
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return
    register_secret(password)


_SECRET_FIELD = re.compile(r"secret|token|password|passwd|api_?key|credential", re.IGNORECASE)


def register_settings_secrets(settings: object) -> None:
    """Register what a settings object holds that must never be logged.

    String fields named like ``*secret*``, ``*token*``, ``*password*`` (``JWT_SECRET``,
    ``METRICS_TOKEN``), and the password of every field holding a URL with credentials
    (``NATS_URL``, ``REDIS_URL``, ``MONGODB_URI``, ``DOCKER_HOST``...).
    """
    if isinstance(settings, msgspec.Struct):
        fields = {name: getattr(settings, name) for name in settings.__struct_fields__}
    else:
        fields = dict(vars(settings))
    for name, value in fields.items():
        if not isinstance(value, str):
            continue
        if _SECRET_FIELD.search(name):
            register_secret(value)
        if "://" in value:
            register_url_secrets(value)


def _clear_secrets() -> None:
    """For tests."""
    global _secrets
    with _secrets_lock:
        _secrets = ()


# --- redaction -------------------------------------------------------------------------------

# Header.payload.signature, base64url, the header starting with '{"' (eyJ); the signature may be empty.
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# scheme://user:password@host: the password runs to the authority's last '@'.
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@\"'<>]*:)[^\s/?#\"'<>]*@")
_BEARER = re.compile(r"(?P<head>\bBearer\s+)(?!\[(?:redacted|jwt)\])[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_KEYS = r"password|passwd|pwd|secret|token|ticket|api[_-]?key|credentials?"
# password=..., "password": "...", 'client_secret': '...', X-Api-Key: ..., ?ticket=...
_PAIR = re.compile(
    rf"""(?P<head>(?P<q>["']?)(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]*(?:{_KEYS})(?P=q)\s*[:=]\s*)"""
    r"""(?!\[(?:redacted|jwt)\])(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&"'})\]]+)""",
    re.IGNORECASE,
)
# Cheap gates, on the lower-cased text: substring tests, then a case-sensitive search for a key
# followed by ':' or '=' (case-insensitive searches are several times slower). Most lines stop here.
_PAIR_WORDS = ("pass", "pwd", "secret", "token", "ticket", "key", "credential")
_PAIR_HINT = re.compile(rf"""(?:{_KEYS})["']?\s*[:=]""")


def _pair(match: re.Match[str]) -> str:
    value = match["value"]
    if value[0] in "\"'":
        return f"{match['head']}{value[0]}{REDACTED}{value[0]}"
    return f"{match['head']}{REDACTED}"


def redact(text: str) -> str:
    """``text`` without registered secrets, JWTs, password pairs, bearer tokens or URL passwords."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "eyJ" in text:
        text = _JWT.sub(JWT_REDACTED, text)
    if "://" in text and "@" in text:
        text = _URL_CREDENTIALS.sub(rf"\g<head>{REDACTED}@", text)
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\g<head>{REDACTED}", text)
    if any(word in lowered for word in _PAIR_WORDS) and _PAIR_HINT.search(lowered):
        text = _PAIR.sub(_pair, text)
    return text


_exception_formatter = logging.Formatter()


class RedactionFilter(logging.Filter):
    """Scrubs a record's message (arguments included), exception and stack text; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # a bad format string: the handler reports it, as it would have
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _exception_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# --- formatting ------------------------------------------------------------------------------


def _context(record: logging.LogRecord) -> tuple[str | None, str | None, str | None, str | None]:
    """request id, trace id, span id, job id: from the record (``extra=``) or the current context."""
    request_id = getattr(record, "request_id", None)
    if request_id == "-":
        request_id = None
    trace_id = getattr(record, "trace_id", None)
    span_id = getattr(record, "span_id", None)
    if trace_id is None:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    job_id = getattr(record, "job_id", None) or job_id_var.get()
    return request_id, trace_id, span_id, job_id


def iso_timestamp(created: float) -> str:
    """``2024-05-01T12:34:56.789Z``"""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": iso_timestamp(record.created),
            "level": record.levelname,
            "process": self.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id, trace_id, span_id, job_id = _context(record)
        if request_id:
            entry["request_id"] = request_id
        if trace_id:
            entry["trace_id"] = trace_id
            if span_id:
                entry["span_id"] = span_id
        if job_id:
            entry["job_id"] = job_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        try:
            return _encode(entry).decode()
        except (UnicodeEncodeError, msgspec.EncodeError):
            return json.dumps(entry)  # lone surrogates: escaped as \udXXX


class TextFormatter(logging.Formatter):
    """``time LEVEL process [request id] job=… trace=… logger: message`` for a terminal."""

    def __init__(self, process: str) -> None:
        super().__init__("%(asctime)s %(levelname)s %(log_prefix)s%(name)s: %(message)s")
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        request_id, trace_id, _, job_id = _context(record)
        prefix = [self.process]
        if hasattr(record, "request_id"):
            prefix.append(f"[{request_id or '-'}]")
        if job_id:
            prefix.append(f"job={job_id}")
        if trace_id:
            prefix.append(f"trace={trace_id}")
        record.log_prefix = " ".join(prefix) + " "
        return super().format(record)

"""Where the flags' values live, how they change, and the cached view every process checks.

- **The store** is one Redis hash, :data:`REDIS_KEY` (field: the flag's name, value: ``on``,
  ``off`` or a percentage). :func:`set_flag` (``coderunner flag set``) writes it and publishes a
  ``flag.changed`` event on the FLAGS stream, the audit trail; when the event cannot be published
  the old value is put back, so a change without its audit record does not stay.
- **Readers** never ask the store per request: a :class:`FlagReader` keeps the values in memory,
  reads them again every :data:`REFRESH_SECONDS`, and at once when a ``flag.changed`` event goes by
  (a core NATS subscription, where the process gives one). The gateway and the grading consumer read Redis
  (:class:`RedisSource`); runners, which are never given a database URL, read the last event of
  each flag on the FLAGS stream (:class:`StreamSource`), which carries the same value.
- **Fail-safe**: a read that fails keeps the last values read (logged once per outage, and again
  when the source is back); a process that never managed a read runs on the declared defaults,
  which are the behaviour without flags (nothing read-only, bubblewrap, the usual feedback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus import client, streams
from flags.declared import FLAGS, Flag, FlagError, on_for, parse, show
from schemas import subjects
from schemas.flags import FlagChanged, flag_event_decoder
from telemetry import metrics

log = logging.getLogger(__name__)

REDIS_KEY = "coderunner:flags"
# How old the values a process checks may be when no change event reached it.
REFRESH_SECONDS = 1.0
# A read that takes longer counts as failed (the last values stay).
READ_TIMEOUT_SECONDS = 2.0
# Publishes of one audit event (same Nats-Msg-Id: JetStream keeps one copy) before giving up.
PUBLISH_TRIES = 3


class Source(Protocol):
    where: str

    async def read(self) -> dict[str, str]:
        """The stored value of every flag that has one, by name (as stored: ``on``, ``25``...)."""
        ...


class RedisSource:
    where = "Redis"

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def read(self) -> dict[str, str]:
        raw: dict[Any, Any] = await self.redis.hgetall(REDIS_KEY)
        return {_text(k): _text(v) for k, v in raw.items()}


class StreamSource:
    """The flags as the last ``flag.changed`` event of each says (one direct get per flag)."""

    where = "the FLAGS stream"

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def read(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for flag in FLAGS:
            try:
                raw = await self.js.get_msg(streams.FLAGS, subject=subjects.flag_changed(flag.name), direct=True)
            except NotFoundError:
                continue  # never set: its default
            values[flag.name] = flag_event_decoder.decode(raw.data or b"").new
        return values


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def values_of(raw: dict[str, str]) -> dict[str, int]:
    """Every flag's value from what a source holds: its default where it holds none (or nonsense)."""
    values: dict[str, int] = {}
    for flag in FLAGS:
        text = raw.get(flag.name)
        values[flag.name] = flag.default
        if text is not None:
            try:
                values[flag.name] = parse(flag, text)
            except FlagError:
                log.warning("flag %s holds %r, which it does not take: its default applies", flag.name, text)
    return values


class FlagReader:
    """The flags as this process sees them: in memory, refreshed in the background, fail-safe."""

    def __init__(self, source: Source, *, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.source = source
        self.refresh_seconds = refresh_seconds
        self.values: dict[str, int] = {f.name: f.default for f in FLAGS}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._failing = False
        self._raw: dict[str, str] | None = None
        for flag in FLAGS:
            metrics.FLAG_VALUE.labels(flag.name).set(flag.default)

    def value(self, flag: Flag) -> int:
        return self.values[flag.name]

    def enabled(self, flag: Flag, key: str = "") -> bool:
        """Whether ``flag`` is on (for ``key``: a job or user id, for a share)."""
        return on_for(flag, self.values[flag.name], key)

    async def refresh(self) -> bool:
        """Read every value once; on failure keep the ones held (False)."""
        try:
            raw = await asyncio.wait_for(self.source.read(), READ_TIMEOUT_SECONDS)
        except Exception as exc:
            if not self._failing:
                held = ", ".join(f"{f.name}={show(f, self.values[f.name])}" for f in FLAGS)
                log.warning(
                    "flags: %s is unreachable (%s: %s); keeping %s", self.source.where, type(exc).__name__, exc, held
                )
            self._failing = True
            return False
        if self._failing:
            log.info("flags: %s is back", self.source.where)
            self._failing = False
        if raw == self._raw:
            return True  # nothing changed (and a bad stored value is logged once, not every second)
        self._raw = raw
        previous = self.values
        self.values = values = values_of(raw)
        for flag in FLAGS:
            if values[flag.name] != previous[flag.name]:
                log.info("flag %s is now %s", flag.name, show(flag, values[flag.name]))
            metrics.FLAG_VALUE.labels(flag.name).set(values[flag.name])  # after the values: never ahead
        return True

    async def start(self, nc: NATS | None = None) -> None:
        """Read the values (the defaults stay if that fails), then keep them current: every
        ``refresh_seconds``, and at once on a ``flag.changed`` event when ``nc`` is given."""
        await self.refresh()
        if nc is not None:
            self._sub = await nc.subscribe(subjects.FLAGS_CHANGED, cb=self._changed)
        self._task = asyncio.create_task(self._follow())

    async def _changed(self, _msg: Msg) -> None:
        self._wake.set()

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.refresh_seconds)
            self._wake.clear()
            await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


# Set a field and return what it held, in one step (two operators at once each get the value the
# other replaced).
_SWAP = "local old = redis.call('HGET', KEYS[1], ARGV[1]); redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return old"
# Put the old value back, unless someone set another one meanwhile.
_UNDO = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"""


async def read_store(redis: aioredis.Redis) -> tuple[dict[str, int], set[str]]:
    """The stored values (defaults where none), and the names of the flags that were ever set."""
    raw = await RedisSource(redis).read()
    return values_of(raw), {f.name for f in FLAGS if f.name in raw}


async def set_flag(
    redis: aioredis.Redis, js: JetStreamContext, flag: Flag, value: int, *, by: str, host: str, reason: str = ""
) -> tuple[FlagChanged, int]:
    """Store a flag's new value and publish its audit event; the event and its stream sequence.

    The value goes to Redis first, then the event to the FLAGS stream (runners read it there). If
    the event cannot be published, the old value is put back and the error raised: no change
    without its audit record.
    """
    new = show(flag, value)
    before = await redis.eval(_SWAP, 1, REDIS_KEY, flag.name, new)
    old_raw = None if before is None else _text(before)
    old = show(flag, values_of({flag.name: old_raw} if old_raw is not None else {})[flag.name])
    event = FlagChanged(
        flag=flag.name,
        old=old,
        new=new,
        changed_at=datetime.now(UTC),
        changed_by=by,
        host=host,
        reason=reason,
        change_id=secrets.token_urlsafe(12),
    )
    error: BaseException | None = None
    for attempt in range(PUBLISH_TRIES):
        try:
            ack = await client.publish(js, subjects.flag_changed(flag.name), event, msg_id=f"flag-{event.change_id}")
        except Exception as exc:  # NotPublished, or unknown (a timeout): the same msg id again
            error = exc
            await asyncio.sleep(0.5 * (attempt + 1))
            continue
        return event, int(ack.seq)
    await redis.eval(_UNDO, 1, REDIS_KEY, flag.name, new, old_raw or "")
    assert error is not None
    raise error


async def history(js: JetStreamContext, flag: Flag | None = None) -> list[tuple[int, FlagChanged]]:
    """The audit trail: every stored change (of one flag, or of all), oldest first, with its sequence."""
    subject = subjects.flag_changed(flag.name) if flag else subjects.FLAGS_CHANGED
    found: list[tuple[int, FlagChanged]] = []
    seq = 1
    while True:
        try:
            raw = await js.get_msg(streams.FLAGS, seq=seq, subject=subject, next=True, direct=True)
        except NotFoundError:
            return found
        assert raw.seq is not None
        found.append((raw.seq, flag_event_decoder.decode(raw.data or b"")))
        seq = raw.seq + 1

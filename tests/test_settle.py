"""The one settle rule, against a real JetStream: ack, dead-letter and term, nak with back-off, or
leave a cancelled message for redelivery."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from bus import streams
from bus.settle import Disposition, Permanent, Transient, settle
from config.common import CommonSettings
from schemas import subjects
from schemas.deadletter import DeadLetter, DeadLetterReason


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[tuple[Any, Any, str]]:
    """A connection, the project's streams, and a scratch stream with a durable consumer of its own."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await streams.provision(js, CommonSettings(nats_url=nats_url).bus_limits())
    name = f"SETTLE{secrets.token_hex(4).upper()}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"settle.{name}.>"]))
    await js.add_consumer(
        name, ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT, ack_wait=1.0, max_deliver=5)
    )
    try:
        yield nc, js, name
    finally:
        await js.delete_stream(name)
        await nc.close()


async def _one(js: Any, stream: str, wait: float = 5.0) -> Any:
    sub = await js.pull_subscribe_bind(durable="w", stream=stream)
    msgs = await sub.fetch(1, timeout=wait)
    return msgs[0]


async def _publish(js: Any, stream: str, job: str) -> None:
    await js.publish(f"settle.{stream}.{job}", b'{"x": 1}')


async def test_success_is_acked_and_not_redelivered(bus: tuple[Any, Any, str]) -> None:
    _, js, stream = bus
    await _publish(js, stream, "a")
    msg = await _one(js, stream)

    async def ok() -> None:
        return None

    assert await settle(js, msg, ok, who="test") is Disposition.ACK
    info = await js.consumer_info(stream, "w")
    assert info.num_ack_pending == 0 and info.ack_floor.stream_seq == msg.metadata.sequence.stream
    with pytest.raises(nats.errors.TimeoutError):
        await _one(js, stream, wait=1.5)  # past AckWait: not redelivered


async def test_permanent_is_dead_lettered_with_its_reason_and_terminated(bus: tuple[Any, Any, str]) -> None:
    _, js, stream = bus
    await _publish(js, stream, "b")
    msg = await _one(js, stream)

    async def bad() -> None:
        raise Permanent(DeadLetterReason.UNDECODABLE, "not JSON")

    assert await settle(js, msg, bad, who="test") is Disposition.TERM
    raw = await js.get_msg(streams.DEADLETTER, subject=subjects.deadletter(stream.lower()), direct=True)
    record = msgspec.json.decode(raw.data, type=DeadLetter)
    assert record.reason is DeadLetterReason.UNDECODABLE and record.detail == "not JSON"
    assert record.stream == stream and record.consumer == "w"
    assert record.stream_seq == msg.metadata.sequence.stream and record.payload == '{"x": 1}'
    with pytest.raises(nats.errors.TimeoutError):
        await _one(js, stream, wait=1.5)  # terminated: never redelivered


async def test_transient_is_nakked_and_redelivered(bus: tuple[Any, Any, str]) -> None:
    _, js, stream = bus
    await _publish(js, stream, "c")
    msg = await _one(js, stream)

    async def flaky() -> None:
        raise Transient("the database blinked")

    assert await settle(js, msg, flaky, who="test") is Disposition.NAK
    again = await _one(js, stream)
    assert again.metadata.sequence.stream == msg.metadata.sequence.stream
    assert again.metadata.num_delivered == 2
    await again.ack()


async def test_unexpected_errors_are_nakked_too(bus: tuple[Any, Any, str]) -> None:
    _, js, stream = bus
    await _publish(js, stream, "d")
    msg = await _one(js, stream)

    async def broken() -> None:
        raise KeyError("bug")

    assert await settle(js, msg, broken, who="test") is Disposition.NAK
    again = await _one(js, stream)  # it came back
    await again.ack()


async def test_cancelled_is_left_unsettled_for_redelivery(bus: tuple[Any, Any, str]) -> None:
    _, js, stream = bus
    await _publish(js, stream, "e")
    msg = await _one(js, stream)

    async def stopping() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await settle(js, msg, stopping, who="test")
    again = await _one(js, stream)  # after AckWait (1 s)
    assert again.metadata.num_delivered == 2

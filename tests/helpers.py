from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import nats
from httpx_sse import connect_sse


@dataclass
class Sse:
    id: str
    event: str
    data: Any


def submit(client: httpx.Client, code: str, *, stdin: str = "", key: str | None = None) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    res = client.post("/execution/submit", json={"code": code, "stdin": stdin}, headers=headers)
    assert res.status_code == 202, res.text
    return res.json()


def read_events(
    client: httpx.Client, url: str, *, last_event_id: str | None = None, stop_after: int | None = None
) -> list[Sse]:
    """Read an SSE stream until ``done`` (or ``stop_after`` events, to simulate a dropped connection)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    events: list[Sse] = []
    with connect_sse(client, "GET", url, headers=headers) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            if sse.data == "":
                # httpx-sse dispatches an empty event after each comment heartbeat once an id was
                # seen; browsers do not (WHATWG: an empty data buffer dispatches nothing).
                continue
            events.append(Sse(sse.id, sse.event, json.loads(sse.data)))
            if sse.event == "done" or (stop_after is not None and len(events) >= stop_after):
                break
    return events


def output_of(events: list[Sse], stream: str = "stdout") -> str:
    return "".join(e.data["text"] for e in events if e.event == "output" and e.data["stream"] == stream)


def stored_messages(nats_url: str, stream: str, subject: str) -> list[bytes]:
    """Every message stored on a subject, read straight from JetStream with direct gets."""

    async def read() -> list[bytes]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        out: list[bytes] = []
        seq = 1
        while True:
            try:
                msg = await js.get_msg(stream, seq=seq, subject=subject, next=True, direct=True)
            except nats.js.errors.NotFoundError:
                break
            out.append(msg.data or b"")
            seq = (msg.seq or seq) + 1
        await nc.close()
        return out

    return asyncio.run(read())


def json_lines(text: str) -> list[dict[str, Any]]:
    """A process's log records (JSON lines: its log is a file, not a terminal)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

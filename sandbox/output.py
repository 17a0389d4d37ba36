"""Capped, lenient handling of a sandboxed program's output."""

from __future__ import annotations

import asyncio
import codecs

from sandbox.base import OutputSink
from schemas.executions import StreamName


class CappedStream:
    """Forwards decoded text of one stream to a sink and stops forwarding past ``cap`` bytes."""

    def __init__(self, stream: StreamName, cap: int, sink: OutputSink, *, keep_tail: int = 0) -> None:
        self.stream = stream
        self.cap = cap
        self.sink = sink
        self.bytes_seen = 0
        self.truncated = False
        self.exceeded = asyncio.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._keep_tail = keep_tail
        self.tail = ""

    async def feed(self, data: bytes) -> None:
        room = self.cap - self.bytes_seen
        self.bytes_seen += len(data)
        if room <= 0:
            # Past the cap: the rest is drained (so the writer is not blocked) and dropped.
            self.truncated = True
            self.exceeded.set()
            return
        if len(data) > room:
            data = data[:room]
            self.truncated = True
            self.exceeded.set()
        await self._emit(self._decoder.decode(data))

    async def finish(self) -> None:
        await self._emit(self._decoder.decode(b"", final=True))

    async def _emit(self, text: str) -> None:
        if not text:
            return
        if self._keep_tail:
            self.tail = (self.tail + text)[-self._keep_tail :]
        await self.sink(self.stream, text)

"""Capped, lenient reading of a sandboxed program's output."""

from __future__ import annotations

import asyncio
import codecs

from sandbox.base import OutputSink
from schemas.executions import StreamName

READ_SIZE = 16 * 1024


class CappedReader:
    """Reads one pipe, forwards decoded text, and stops forwarding past ``cap`` bytes."""

    def __init__(self, stream: StreamName, reader: asyncio.StreamReader, cap: int, sink: OutputSink):
        self.stream = stream
        self.reader = reader
        self.cap = cap
        self.sink = sink
        self.bytes_seen = 0
        self.truncated = False
        self.exceeded = asyncio.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    async def pump(self) -> None:
        while True:
            data = await self.reader.read(READ_SIZE)
            if not data:
                break
            room = self.cap - self.bytes_seen
            self.bytes_seen += len(data)
            if room <= 0:
                # Past the cap: keep draining so the writer is not blocked before it is killed.
                self.truncated = True
                self.exceeded.set()
                continue
            if len(data) > room:
                data = data[:room]
                self.truncated = True
                self.exceeded.set()
            text = self._decoder.decode(data)
            if text:
                await self.sink(self.stream, text)
        tail = self._decoder.decode(b"", final=True)
        if tail:
            await self.sink(self.stream, tail)

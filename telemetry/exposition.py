"""``GET /metrics`` (and ``GET /health``) for the processes that have no HTTP server of their own:
runners and consumers, on ``METRICS_PORT``.

A small asyncio server in the process's own loop (no thread, no framework): it answers one request
per connection, refuses anything but those two GETs, and requires ``Authorization: Bearer
<METRICS_TOKEN>`` when a token is set, as the gateway's ``/metrics`` does.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

if TYPE_CHECKING:
    from config.common import CommonSettings

log = logging.getLogger(__name__)

HEAD_LIMIT = 8 * 1024
HEAD_TIMEOUT = 5.0


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class MetricsServer:
    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.host = host
        self.port = port
        self.token = token
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        sock = self._server.sockets[0].getsockname()
        self.port = sock[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def answer(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response("400 Bad Request", b"bad request\n")
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/metrics", "/health"):
            return _response("404 Not Found", b"not found\n")
        if method != "GET":
            return _response("405 Method Not Allowed", b"method not allowed\n")
        if target == "/health":
            return _response("200 OK", b"ok\n")
        if self.token is not None:
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return _response("401 Unauthorized", b"a metrics token is required\n")
        return _response("200 OK", generate_latest(REGISTRY), CONTENT_TYPE_LATEST)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            if len(head) > HEAD_LIMIT:
                raise ValueError("head too large")
            writer.write(self.answer(head))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, OSError):
            pass
        finally:
            writer.close()


async def start_metrics(settings: CommonSettings) -> MetricsServer | None:
    """Serve /metrics when the process has a METRICS_PORT (a port in use stops the start-up)."""
    if settings.metrics_port is None:
        return None
    server = MetricsServer(settings.metrics_host, settings.metrics_port, settings.metrics_token)
    try:
        await server.start()
    except OSError as exc:
        raise SystemExit(
            f"METRICS_PORT={settings.metrics_port} cannot be served on {settings.metrics_host}: {exc}"
        ) from None
    return server

"""An HTTP proxy in front of DynamoDB Local that throttles writes above a set rate, as a provisioned table does.

DynamoDB Local never throttles. This proxy forwards every request to it unchanged, except that PutItem,
DeleteItem, UpdateItem and BatchWriteItem calls beyond ``writes_per_s`` (a token bucket with a burst of
a tenth of a second's worth) are answered with HTTP 400 ``ProvisionedThroughputExceededException``, the
error a provisioned table (or a hot on-demand partition) returns. It runs on its own event loop in its own
thread, so a busy harness does not delay it. Used by ``bench/throttle.py`` and the integration test
``tests/integration/sink/test_throttling.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any, Self

import aiohttp
from aiohttp import web

WRITE_TARGETS = frozenset(f"DynamoDB_20120810.{op}" for op in ("PutItem", "DeleteItem", "UpdateItem", "BatchWriteItem"))
THROTTLE_BODY = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",'
    b'"message":"The level of configured provisioned throughput for the table was exceeded."}'
)
HOP_BY_HOP = frozenset({"host", "content-length", "connection", "transfer-encoding", "accept-encoding"})


class ThrottlingProxy:
    """Forward to ``upstream``; throttle writes above ``writes_per_s`` while ``throttling`` is set."""

    def __init__(self, upstream: str, writes_per_s: float) -> None:
        """Configure; ``start`` binds the port and starts the thread."""
        self.upstream = upstream.rstrip("/")
        self.writes_per_s = writes_per_s
        self.burst = max(1.0, writes_per_s / 10)
        self.throttling = True
        self.accepted = 0
        self.throttled = 0
        self.endpoint_url = ""
        self._tokens = self.burst
        self._refilled = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    def counts(self) -> tuple[int, int]:
        """Writes forwarded and writes throttled so far."""
        return self.accepted, self.throttled

    def _admit(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.writes_per_s)
        self._refilled = now
        if not self.throttling:
            return True
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def _handle(self, request: web.Request, session: aiohttp.ClientSession) -> web.Response:
        body = await request.read()
        if request.headers.get("X-Amz-Target", "") in WRITE_TARGETS:
            if not self._admit():
                self.throttled += 1
                return web.Response(status=400, body=THROTTLE_BODY, content_type="application/x-amz-json-1.0")
            self.accepted += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with session.request(request.method, self.upstream + request.path_qs, data=body, headers=headers) as up:
            payload = await up.read()
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=up.status, body=payload, headers=out_headers)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

            async def handler(request: web.Request) -> web.Response:
                return await self._handle(request, session)

            app = web.Application(client_max_size=16 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server: Any = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
            port = server.sockets[0].getsockname()[1]
            self.endpoint_url = f"http://127.0.0.1:{port}"
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

    def start(self) -> ThrottlingProxy:
        """Serve in a thread; return once the port is bound."""

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="throttling-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            msg = "throttling proxy did not start"
            raise RuntimeError(msg)
        return self

    def close(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        """Start (if needed) and return self."""
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()

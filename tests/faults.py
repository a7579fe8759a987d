"""A fault-injecting HTTP server in front of a DynamoDB endpoint, for the lean path's failure tests.

``FaultProxy`` forwards every request to the real endpoint (DynamoDB Local) unchanged, except that while
a fault is set, requests of the chosen operation get the fault's answer instead: a proxy's 403 HTML
page, DynamoDB's AccessDenied or ExpiredToken JSON, a JSON body that is not an object, or a 200 cut
short. It runs on its own thread and event loop, so both async tests and the (synchronous) Lambda
handler can use it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import aiohttp
from aiohttp import web

FAULTS: dict[str, tuple[int, str, bytes]] = {
    "403_html": (403, "text/html", b"<html><head><title>403 Forbidden</title></head><body>Forbidden</body></html>"),
    "access_denied": (
        400,
        "application/x-amz-json-1.0",
        json.dumps(
            {
                "__type": "com.amazon.coral.service#AccessDeniedException",
                "Message": "User: arn:aws:sts::123456789012:assumed-role/r/s is not authorized to perform: "
                "dynamodb:PutItem on resource: secret-value-4711",
            }
        ).encode(),
    ),
    "expired_token": (
        400,
        "application/x-amz-json-1.0",
        json.dumps(
            {
                "__type": "com.amazon.coral.service#ExpiredTokenException",
                "message": "The security token included in the request is expired",
            }
        ).encode(),
    ),
    "non_object_json": (400, "application/json", b'["not", "an", "object"]'),
    "truncated_200": (200, "application/x-amz-json-1.0", b'{"ConsumedCapacity": {"TableNa'),
}
"""Fault name: status, content type and body of the answer sent instead of forwarding."""

CODES = {
    "403_html": "HTTP403",
    "access_denied": "AccessDeniedException",
    "expired_token": "ExpiredTokenException",
    "non_object_json": "HTTP400",
}
"""The AWS error code each target-wide fault is reported under."""


class FaultProxy:
    """Forwards to ``upstream``; answers ``operation`` requests with a fault while one is set."""

    def __init__(self, upstream: str, operation: str = "PutItem") -> None:
        """Nothing runs until ``start``."""
        self.upstream = upstream.rstrip("/")
        self.operation = operation
        self.fault: str | None = None
        self.faulted = 0
        """Requests answered with a fault so far."""
        self.forwarded = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> FaultProxy:
        """Listen on a free local port; returns self (``url`` is set)."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def close(self) -> None:
        """Stop serving and end the thread."""
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("x-amz-target", "")
        fault = self.fault
        if fault is not None and target.endswith(f".{self.operation}"):
            self.faulted += 1
            status, content_type, payload = FAULTS[fault]
            return web.Response(status=status, body=payload, content_type=content_type.split(";")[0])
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host", "content-length"}}
        async with self._session.post(self.upstream + request.path_qs, data=body, headers=headers) as resp:
            payload = await resp.read()
            self.forwarded += 1
            out: dict[str, Any] = {"status": resp.status, "body": payload}
            return web.Response(**out, headers={"content-type": resp.headers.get("content-type", "")})

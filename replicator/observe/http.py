"""The HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` (alive) and ``/readyz`` (shards progress)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from replicator.observe.state import WorkerState


class HealthServer:
    """Serves metrics and health on one port; port 0 binds any free port (see ``port`` after start)."""

    def __init__(self, state: WorkerState, *, host: str, port: int, readiness_timeout_s: float) -> None:
        """Remember where to listen; no I/O."""
        self.state = state
        self.host = host
        self.port = port
        self.readiness_timeout_s = readiness_timeout_s
        self.ready_check_enabled = True
        """False: /readyz does not wait for ``state.running`` (a server with no worker behind it)."""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve in the background."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        self.state.refresh_gauges()
        body = generate_latest(self.state.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        # Ready: the worker has started serving, and every shard it reads made progress (a batch
        # done, or an empty read: caught up) within readiness_timeout_s; no shard stopped on an error.
        bad = self.state.not_ready(self.readiness_timeout_s)
        starting = self.ready_check_enabled and not self.state.running
        ready = not bad and not starting
        body: dict[str, object] = {"ready": ready, "shards_not_ready": bad, "shards": len(self.state.shards)}
        if starting:
            body["reason"] = "starting"
        targets = self.state.targets_json()
        if targets:
            # Fan-out: each shard's targets (checkpoint, attached or catching up, queued batches, lag).
            # A detached target does not make the worker unready: the others are replicating.
            body["targets"] = targets
        return web.Response(status=200 if ready else 503, text=json.dumps(body) + "\n", content_type="application/json")

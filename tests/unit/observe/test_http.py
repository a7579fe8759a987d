"""/metrics, /healthz and /readyz over real HTTP against a running HealthServer."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from replicator.observe.http import HealthServer
from replicator.observe.metrics import Metrics
from replicator.observe.state import WorkerState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

T0 = 1_700_000_000.0


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        """Set up the fake."""
        self.now = T0

    def __call__(self) -> float:
        """Return the current fake time."""
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """Return a hand-moved clock."""
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> WorkerState:
    """Return a worker state on a fresh registry."""
    return WorkerState(Metrics(), clock=clock)


@pytest.fixture
async def server(state: WorkerState) -> AsyncIterator[HealthServer]:
    """Run a HealthServer on a free loopback port."""
    srv = HealthServer(state, host="127.0.0.1", port=0, readiness_timeout_s=60)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


async def _get(server: HealthServer, path: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}{path}") as resp,
    ):
        return resp.status, resp.headers["Content-Type"], await resp.text()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_port_zero_binds_a_free_port(server: HealthServer) -> None:
    """With port 0 the server reports the port it bound, and answers there."""
    assert server.port != 0
    status, _, body = await _get(server, "/healthz")
    assert (status, body) == (200, "ok\n")


async def test_metrics_serves_prometheus_text_with_current_ages(
    server: HealthServer, state: WorkerState, clock: FakeClock
) -> None:
    """A scrape parses as Prometheus text and shows ages computed at scrape time."""
    state.set_state("s1", "reading")
    state.read("s1", newest_created_us=int((T0 - 5) * 1_000_000))
    state.metrics.for_target("eu-west-1").records.labels(outcome="replicated").inc(4)
    clock.now += 10
    status, content_type, body = await _get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    samples = _samples(body)
    assert samples[("replicator_iterator_age_seconds", (("shard", "s1"),))] == 15
    assert samples[("replicator_checkpoint_age_seconds", (("shard", "s1"),))] == 10
    assert samples[("replicator_records_total", (("outcome", "replicated"), ("target", "eu-west-1")))] == 4
    assert samples[("replicator_shards", (("state", "reading"),))] == 1
    clock.now += 20
    _, _, body = await _get(server, "/metrics")
    assert _samples(body)[("replicator_iterator_age_seconds", (("shard", "s1"),))] == 35


async def test_readyz_waits_for_the_worker_to_start(server: HealthServer, state: WorkerState) -> None:
    """Before the worker runs /readyz is 503 with reason starting; /healthz is 200 all along."""
    status, content_type, body = await _get(server, "/readyz")
    assert status == 503
    assert content_type.startswith("application/json")
    assert '"reason": "starting"' in body
    assert (await _get(server, "/healthz"))[0] == 200
    state.running = True
    status, _, body = await _get(server, "/readyz")
    assert status == 200
    assert '"ready": true' in body


async def test_readyz_fails_on_a_stalled_shard_and_recovers(
    server: HealthServer, state: WorkerState, clock: FakeClock
) -> None:
    """A reading shard with no progress past readiness_timeout_s makes /readyz 503, naming the shard."""
    state.running = True
    state.set_state("s1", "reading")
    state.set_state("s2", "reading")
    clock.now += 59
    state.caught_up("s2")
    assert (await _get(server, "/readyz"))[0] == 200
    clock.now += 2  # s1: 61 s without progress; s2: 2 s
    status, _, body = await _get(server, "/readyz")
    assert status == 503
    assert '"shards_not_ready": ["s1"]' in body
    state.batch_done("s1")
    assert (await _get(server, "/readyz"))[0] == 200


async def test_readyz_fails_on_a_stopped_shard(server: HealthServer, state: WorkerState) -> None:
    """A shard stopped on an error makes /readyz 503 at once; /healthz stays 200 (the process is alive)."""
    state.running = True
    state.set_state("s1", "stopped", error="TrimmedDataError")
    status, _, body = await _get(server, "/readyz")
    assert status == 503
    assert '"s1"' in body
    assert (await _get(server, "/healthz"))[0] == 200


async def test_unknown_path_is_404(server: HealthServer) -> None:
    """Only the three endpoints exist."""
    assert (await _get(server, "/debug"))[0] == 404


async def test_closed_server_refuses_connections(state: WorkerState) -> None:
    """After close the port no longer answers."""
    srv = HealthServer(state, host="127.0.0.1", port=0, readiness_timeout_s=60)
    await srv.start()
    await srv.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(srv, "/healthz")


async def test_readyz_shows_each_targets_progress_with_fan_out(server: HealthServer, state: WorkerState) -> None:
    """With several targets /readyz lists each shard's targets; a detached one leaves the worker ready."""
    state.running = True
    state.set_state("s1", "reading")
    state.caught_up("s1")
    healthy, behind = state.target("s1", "eu"), state.target("s1", "ap")
    healthy.checkpoint = "00000000000000000000042"
    behind.attached, behind.queued_batches, behind.newest_done_s = False, 0, T0 - 30
    status, _, body = await _get(server, "/readyz")
    assert status == 200
    targets = json.loads(body)["targets"]["s1"]
    assert targets["eu"] == {"checkpoint": "00000000000000000000042", "attached": True, "queued_batches": 0, "lag_s": 0}
    assert targets["ap"]["attached"] is False
    assert targets["ap"]["lag_s"] == 30

"""A real Prometheus scrapes a running replicator: lag and throughput series exist and move under load."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import yaml
from replicator_dev.local.common import create_table, free_port
from replicator_dev.local.dynamodb_local import DynamoDBLocal

from replicator.core.config import Config
from replicator.runtime.service import Replicator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


class Prometheus:
    """A Prometheus server on a loopback port, scraping one target every second."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        """Write the config; ``start`` launches the server."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "prometheus.yml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "replicator",
                            "scrape_interval": "1s",
                            "scrape_timeout": "900ms",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            ),
            encoding="utf-8",
        )
        self.data = tmp_path / "tsdb"
        self.log = tmp_path / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch the server (readiness is awaited by ``wait_ready``)."""
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.data}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """Terminate the server (kill after 10 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float = 15) -> None:
        """Wait for /-/ready; fail with the server's log if it exits or never gets ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited: {self.log.read_text(errors='replace')}")
            try:
                async with session.get(f"{self.url}/-/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)
        pytest.fail(f"prometheus not ready in {timeout_s} s: {self.log.read_text(errors='replace')}")

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        """Run an instant query; return its vector of {metric, value}."""
        async with session.get(f"{self.url}/api/v1/query", params={"query": expr}) as resp:
            body = await resp.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    """Return ``start(target) -> Prometheus``; every server is stopped at teardown."""
    if not shutil.which(PROMETHEUS):
        pytest.fail("prometheus is not installed: run `make deps` (or apt-get install -y prometheus)")
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        prom = Prometheus(tmp_path, target)
        started.append(prom)
        prom.start()
        return prom

    yield start
    for prom in started:
        prom.stop()


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(r["value"][1]) for r in result]


async def _observe(
    prom: Prometheus, session: aiohttp.ClientSession, timeout_s: float = 25
) -> tuple[set[float], list[float], list[float]]:
    """Query once a second until lag moved and throughput showed: iterator ages, rates, totals seen."""
    ages: set[float] = set()
    rates: list[float] = []
    totals: list[float] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        ages.update(_values(await prom.query(session, "replicator_iterator_age_seconds")))
        rates.extend(_values(await prom.query(session, 'rate(replicator_records_total{outcome="replicated"}[5s])')))
        totals.extend(_values(await prom.query(session, 'replicator_records_total{outcome="replicated"}')))
        if len(ages) >= 2 and any(r > 0 for r in rates) and len(set(totals)) >= 3:
            break
    return ages, rates, totals


async def _assert_labelled_by_target(prom: Prometheus, session: aiohttp.ClientSession, target: str) -> None:
    """A single target's series carry target="<its region>"; the shard's reading carries none."""
    for query in (
        'sum by (target) (replicator_records_total{outcome="replicated"})',
        "sum by (target) (replicator_replication_latency_seconds_count)",
    ):
        assert [s["metric"] for s in await prom.query(session, query)] == [{"target": target}], query
    ages = await prom.query(session, "replicator_iterator_age_seconds")
    assert ages
    assert not any("target" in s["metric"] for s in ages)


async def test_prometheus_sees_lag_and_throughput_move(
    region_a: DynamoDBLocal,
    region_b: DynamoDBLocal,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    prometheus_factory: Callable[[str], Prometheus],
) -> None:
    """Under a steady write load, Prometheus holds per-shard iterator age and a positive replicated rate."""
    source, target = unique_name("src"), unique_name("dst")
    create_table(region_a.endpoint_url, source, region_name="us-east-1")
    create_table(region_b.endpoint_url, target, stream_view_type=None, region_name="us-west-2")
    metrics_port = free_port()
    cfg = Config(
        source={"region": "us-east-1", "table": source, "endpoint_url": region_a.endpoint_url},
        target={"region": "us-west-2", "table": target, "endpoint_url": region_b.endpoint_url},
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        metrics={"host": "127.0.0.1", "port": metrics_port, "readiness_timeout_s": 30},
        reader={"poll_interval_s": 0.2, "max_idle_poll_interval_s": 0.5, "shard_discovery_interval_s": 2},
    )
    replicator = Replicator(cfg)
    run = asyncio.create_task(replicator.run())
    stop_writing = asyncio.Event()
    written = 0

    def write_some(start: int, n: int) -> None:
        client = region_a.client()
        for i in range(start, start + n):
            client.put_item(TableName=source, Item={"pk": {"S": f"k{i % 50}"}, "v": {"N": str(i)}})

    async def workload() -> None:
        nonlocal written
        while not stop_writing.is_set():
            await asyncio.to_thread(write_some, written, 5)
            written += 5
            await asyncio.sleep(0.2)

    writer: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(replicator.started.wait(), 15)
        assert replicator.http is not None
        assert replicator.http.port == metrics_port
        prom = prometheus_factory(f"127.0.0.1:{metrics_port}")
        async with aiohttp.ClientSession() as session:
            await prom.wait_ready(session)
            writer = asyncio.create_task(workload())
            ages, rates, totals = await _observe(prom, session)
            up = await prom.query(session, 'up{job="replicator"}')
            shard_series = await prom.query(session, "replicator_iterator_age_seconds")
            shards_reading = await prom.query(session, 'replicator_shards{state="reading"}')
            await _assert_labelled_by_target(prom, session, "us-west-2")
    finally:
        stop_writing.set()
        if writer is not None:
            await writer
        replicator.stop()
        await run
    assert _values(up) == [1.0]
    assert shard_series, "no iterator age series"
    assert all(s["metric"]["shard"].startswith("shardId-") for s in shard_series)
    assert _values(shards_reading) == [1.0]
    assert len(ages) >= 2, f"iterator age never moved: {ages}"
    assert any(r > 0 for r in rates), f"no replicated throughput seen: {rates}"
    assert totals == sorted(totals)
    assert len(set(totals)) >= 3, f"replicated total did not keep growing: {totals}"
    assert written > 0

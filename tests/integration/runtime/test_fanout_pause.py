"""Fan-out against DynamoDB Local: one target paused for 30 s does not stall the other, then catches up.

The paused target sits behind ``faults.FaultProxy``, which answers its writes with AccessDenied while the
pause lasts (the target refuses: its ``TargetHealth`` holds its writes); the other target is DynamoDB
Local itself. Waits end on outcomes (items in the target tables, the worker's own state); the pause's
30 s is the scenario's length, not a bound anything is asserted against.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import pytest
from faults import FaultProxy
from replicator_dev.local.common import create_table, local_client

from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.ops.compare import scan_items
from replicator.runtime.service import Replicator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal

MARKERS = ("_rep_version", "_rep_origin", "_rep_ts", "_rep_deleted", "_rep_expires")
PAUSE_S = 30.0
HANG_S = 120.0
"""Only a hang ends a wait this way: every wait ends on an outcome long before."""


def _items(endpoint: str, table: str) -> dict[str, dict[str, Any]]:
    client = local_client("dynamodb", endpoint)
    return {
        item["pk"]["S"]: {k: v for k, v in item.items() if k not in MARKERS}
        for item in scan_items(client, table)
        if "_rep_deleted" not in item
    }


def _put_many(endpoint: str, table: str, keys: range) -> None:
    client = local_client("dynamodb", endpoint)
    for i in keys:
        client.put_item(TableName=table, Item={"pk": {"S": f"k{i:03d}"}, "v": {"N": str(i)}})


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_S
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            pytest.fail(f"hung: {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _running(cfg: Config, metrics: Metrics) -> AsyncIterator[Replicator]:
    replicator = Replicator(cfg, shutdown_timeout_s=5, metrics=metrics)
    task = asyncio.create_task(replicator.run())
    await _until(lambda: replicator.started.is_set() or task.done(), "the replicator starting")
    if task.done():
        task.result()
    try:
        yield replicator
    finally:
        replicator.stop()
        await asyncio.wait_for(task, timeout=60)


@pytest.fixture
def proxy(region_b: DynamoDBLocal) -> Iterator[FaultProxy]:
    """A fault-injecting HTTP server in front of the target region."""
    server = FaultProxy(region_b.endpoint_url).start()
    yield server
    server.close()


async def test_one_target_paused_for_30_s_the_other_keeps_going_then_it_catches_up(
    proxy: FaultProxy,
    region_a: DynamoDBLocal,
    region_b: DynamoDBLocal,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """The healthy target gets every change during the pause; the paused one then catches up, nothing lost."""
    s, healthy, paused = unique_name("src"), unique_name("ok"), unique_name("paused")
    src, dst = region_a.endpoint_url, region_b.endpoint_url
    create_table(src, s)
    create_table(dst, healthy, stream_view_type=None)
    create_table(dst, paused, stream_view_type=None)
    cfg = Config(
        source={"region": "us-east-1", "table": s, "endpoint_url": src},  # type: ignore[arg-type]
        targets=[  # type: ignore[list-item]
            {"name": "healthy", "region": "us-west-2", "table": healthy, "endpoint_url": dst},
            {"name": "paused", "region": "us-west-2", "table": paused, "endpoint_url": proxy.url},
        ],
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "cp.db")},  # type: ignore[arg-type]
        metrics={"enabled": False},  # type: ignore[arg-type]
        logging={"level": "WARNING", "format": "json"},  # type: ignore[arg-type]
        reader={"shard_discovery_interval_s": 1.0, "max_idle_poll_interval_s": 0.25},  # type: ignore[arg-type]
        failure={"batch_size": 5, "target_unavailable_max_backoff_seconds": 0.5},  # type: ignore[arg-type]
        fanout={"max_buffered_batches": 1, "detach_after_s": 2.0},  # type: ignore[arg-type]
    )
    metrics = Metrics()
    async with _running(cfg, metrics) as replicator:
        proxy.fault = "access_denied"
        paused_at = time.monotonic()
        written = 0
        # Changes keep coming during the pause; each round waits until the healthy target has all of them.
        while time.monotonic() - paused_at < PAUSE_S:
            await asyncio.to_thread(_put_many, src, s, range(written, written + 15))
            written += 15
            await _until(lambda n=written: len(_items(dst, healthy)) == n, f"{written} items in the healthy target")
            assert proxy.fault is not None
            await asyncio.sleep(min(3.0, max(0.0, PAUSE_S - (time.monotonic() - paused_at))))
        assert len(_items(dst, paused)) == 0
        detached = [
            target.attached
            for status in replicator.state.shards.values()
            for tid, target in status.targets.items()
            if tid == "paused"
        ]
        assert False in detached
        proxy.fault = None
        source_items = await asyncio.to_thread(_items, src, s)
        await _until(lambda: _items(dst, paused) == source_items, "the paused target catching up")
        await _until(
            lambda: all(t.attached for st in replicator.state.shards.values() for t in st.targets.values()),
            "the paused target attached again",
        )
    assert await asyncio.to_thread(_items, dst, healthy) == source_items
    assert await asyncio.to_thread(_items, dst, paused) == source_items
    assert metrics.registry.get_sample_value("replicator_errors_total", {"kind": "target_detached"})

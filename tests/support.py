"""Helpers the tests share: configs, an in-process worker, scans, waiting, a manual clock, a DynamoDB Local client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from replicator_dev.local.dynamodb_local import DynamoDBLocal
from types_aiobotocore_dynamodb import DynamoDBClient

from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.ops.compare import scan_items
from replicator.runtime.service import Replicator


def make_config(
    source: DynamoDBLocal,
    target: DynamoDBLocal,
    table: str,
    tmp_path: Path,
    *,
    target_table: str | None = None,
    source_region: str = "us-east-1",
    target_region: str = "eu-west-1",
    **overrides: Any,
) -> Config:
    """A config replicating ``table`` from ``source`` to ``target`` with fast polling."""
    data: dict[str, Any] = {
        "source": {"region": source_region, "table": table, "endpoint_url": source.endpoint_url},
        "target": {"region": target_region, "table": target_table or table, "endpoint_url": target.endpoint_url},
        "checkpoint": {"backend": "sqlite", "path": str(tmp_path / f"cp-{table}-{source_region}.db")},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "reader": {"poll_interval_s": 0.05, "max_idle_poll_interval_s": 0.1, "shard_discovery_interval_s": 0.5},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Config(**data)


@contextlib.asynccontextmanager
async def running(cfg: Config, *, metrics: Metrics | None = None, **kwargs: Any) -> AsyncIterator[Replicator]:
    """Run a Replicator in this event loop for the block's duration; re-raise its failure."""
    replicator = Replicator(cfg, metrics=metrics or Metrics(), **kwargs)
    task = asyncio.create_task(replicator.run())
    started = asyncio.create_task(replicator.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        task.result()
    try:
        yield replicator
    finally:
        replicator.stop()
        await asyncio.wait_for(task, timeout=30)


scan = scan_items
"""Every item of a table (consistent read); the name the tests use."""


async def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` (run in a thread: it may call boto3) until true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A metric sample's value (0 when absent)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


class ManualClock:
    """A clock a test moves by hand (``clock.now += 5``): pass it where the code takes ``clock``/``wall``."""

    def __init__(self, now: float = 1000.0) -> None:
        """Start at ``now``."""
        self.now = now

    def __call__(self) -> float:
        """The time the test set."""
        return self.now


@contextlib.asynccontextmanager
async def ddb_client(ddb: DynamoDBLocal) -> AsyncIterator[DynamoDBClient]:
    """An aiobotocore DynamoDB client of a DynamoDB Local process (closed on exit)."""
    async with get_session().create_client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=ddb.endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - DynamoDB Local accepts any key
    ) as client:
        yield client

"""The fault matrix in the service: each target-wide failure produced for real, against real processes.

DynamoDB Local provides a deleted target table (ResourceNotFoundException) and a target re-created with
another key schema (ValidationException on every item); ``faults.FaultProxy``, an HTTP server in front
of DynamoDB Local, provides a 403 HTML page, AccessDenied and ExpiredToken answers, a non-object JSON
error and a 200 cut short on the lean write path; libfaketime puts the source's records near the
stream's retention. Outcomes are read from the worker's own metrics, the dead-letter file and the
target's items; waits end on the worker's accounting (a hang bound only fails a hang).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from faults import CODES, FaultProxy
from replicator_dev.local.common import create_table, local_client

from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.ops.compare import scan_items
from replicator.runtime.service import Replicator
from replicator.sink import deadletter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal

MARKERS = ("_rep_version", "_rep_origin", "_rep_ts", "_rep_deleted", "_rep_expires")
HANG_S = 240.0
"""Only a hang ends a wait this way: every wait ends on an outcome long before."""
PRIVATE_VALUE = "secret-value-4711"


def _config(src: str, s: str, tgt: str, t: str, tmp: Path) -> Config:
    return Config(
        source={"region": "us-east-1", "table": s, "endpoint_url": src},
        target={"region": "us-west-2", "table": t, "endpoint_url": tgt},
        checkpoint={"backend": "sqlite", "path": str(tmp / "cp.db")},
        metrics={"enabled": False},
        logging={"level": "WARNING", "format": "json"},
        reader={"shard_discovery_interval_s": 1.0, "max_idle_poll_interval_s": 0.25},
        failure={
            "on_failure": {"destination": str(tmp / "dead" / "letters.jsonl")},
            "target_unavailable_max_backoff_seconds": 0.5,
        },
    )


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
        client.put_item(TableName=table, Item={"pk": {"S": f"k{i:03d}"}, "v": {"N": str(i)}, "p": {"S": PRIVATE_VALUE}})


def _recreate(endpoint: str, table: str, *, hash_key: str = "pk") -> None:
    client = local_client("dynamodb", endpoint)
    with contextlib.suppress(client.exceptions.ResourceNotFoundException):
        client.delete_table(TableName=table)
    if hash_key:
        create_table(endpoint, table, hash_key=hash_key, stream_view_type=None)


def _outcomes(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["outcome"]: s.value
        for s in metrics.records.collect()[0].samples
        if s.name.endswith("_total") and s.value
    }


def _read(metrics: Metrics) -> float:
    return sum(s.value for s in metrics.records_read.collect()[0].samples if s.name.endswith("_total"))


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _all_accounted(metrics: Metrics, records: int) -> Callable[[], bool]:
    return lambda: _read(metrics) >= records and sum(_outcomes(metrics).values()) == _read(metrics)


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"hung: {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _running(cfg: Config, metrics: Metrics):
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


def _dead_letters(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "dead" / "letters.jsonl"
    return list(deadletter.read_jsonl(path)) if path.exists() else []


@pytest.mark.parametrize("fault", ["403_html", "access_denied", "expired_token", "non_object_json"])
async def test_lean_path_refusals_hold_everything_until_fixed(  # noqa: PLR0917 - pytest fixtures
    fault: str, proxy: FaultProxy, region_a, region_b, unique_name, tmp_path
) -> None:
    """A 403 page, AccessDenied, ExpiredToken, a non-object error: held, alerted by code, resumed, none lost."""
    s, t = unique_name("src"), unique_name("dst")
    create_table(region_a.endpoint_url, s)
    create_table(region_b.endpoint_url, t, stream_view_type=None)
    metrics = Metrics()
    code = CODES[fault]
    proxy.fault = fault
    with structlog.testing.capture_logs() as logs:
        await _refused_then_fixed(proxy, _config(region_a.endpoint_url, s, proxy.url, t, tmp_path), metrics, code)
    assert _outcomes(metrics) == {"replicated": 20}
    assert _value(metrics, "replicator_target_unavailable", target="us-west-2", code=code) == 0
    assert _dead_letters(tmp_path) == []
    assert await asyncio.to_thread(_items, region_b.endpoint_url, t) == await asyncio.to_thread(
        _items, region_a.endpoint_url, s
    )
    assert {"event": "target_unavailable", "code": code} in [{k: e.get(k) for k in ("event", "code")} for e in logs]
    assert {"event": "target_available", "code": code} in [{k: e.get(k) for k in ("event", "code")} for e in logs]
    assert PRIVATE_VALUE not in repr(logs)


async def _refused_then_fixed(proxy: FaultProxy, cfg: Config, metrics: Metrics, code: str) -> None:
    s = cfg.source.table
    assert s is not None
    async with _running(cfg, metrics):
        await asyncio.to_thread(_put_many, str(cfg.source.endpoint_url), s, range(20))
        await _until(lambda: proxy.faulted >= 23, "probes of the refusing target")
        assert _value(metrics, "replicator_target_unavailable", target="us-west-2", code=code) == 1
        assert _value(metrics, "replicator_dead_letters_total", target="us-west-2") == 0
        assert _outcomes(metrics) == {}
        proxy.fault = None
        await _until(_all_accounted(metrics, 20), "every record read reaching an outcome")


async def test_lean_path_truncated_answers_are_retried(
    proxy: FaultProxy, region_a, region_b, unique_name, tmp_path
) -> None:
    """A 200 whose body is cut short is a broken answer: retried (transient), nothing held or dead-lettered."""
    s, t = unique_name("src"), unique_name("dst")
    create_table(region_a.endpoint_url, s)
    create_table(region_b.endpoint_url, t, stream_view_type=None)
    metrics = Metrics()
    proxy.fault = "truncated_200"
    async with _running(_config(region_a.endpoint_url, s, proxy.url, t, tmp_path), metrics):
        await asyncio.to_thread(_put_many, region_a.endpoint_url, s, range(10))
        await _until(lambda: proxy.faulted >= 20, "retries of the broken answers")
        proxy.fault = None
        await _until(_all_accounted(metrics, 10), "every record read reaching an outcome")
    assert _outcomes(metrics) == {"replicated": 10}
    assert _value(metrics, "replicator_retries_total", target="us-west-2", operation="PutItem") >= 20
    assert sum(s.value for s in metrics.target_unavailable.collect()[0].samples) == 0
    assert _dead_letters(tmp_path) == []


@pytest.mark.parametrize("broken", ["deleted", "other_key_schema"])
async def test_broken_target_table_holds_until_fixed(broken: str, region_a, region_b, unique_name, tmp_path) -> None:
    """Target table deleted, or re-created keyed on another attribute: held, nothing dead-lettered, then resumed."""
    s, t = unique_name("src"), unique_name("dst")
    create_table(region_a.endpoint_url, s)
    create_table(region_b.endpoint_url, t, stream_view_type=None)
    metrics = Metrics()
    code = "ResourceNotFoundException" if broken == "deleted" else "ValidationException"
    async with _running(_config(region_a.endpoint_url, s, region_b.endpoint_url, t, tmp_path), metrics):
        await asyncio.to_thread(_put_many, region_a.endpoint_url, s, range(5))
        await _until(_all_accounted(metrics, 5), "the first records replicated")
        await asyncio.to_thread(_recreate, region_b.endpoint_url, t, hash_key="" if broken == "deleted" else "id")
        await asyncio.to_thread(_put_many, region_a.endpoint_url, s, range(5, 25))
        await _until(
            lambda: (
                _value(metrics, "replicator_target_errors_total", target="us-west-2", scope="target", code=code) >= 25
            ),
            "probes of the broken table",
        )
        assert _value(metrics, "replicator_target_unavailable", target="us-west-2", code=code) == 1
        assert _outcomes(metrics) == {"replicated": 5}
        await asyncio.to_thread(_recreate, region_b.endpoint_url, t)
        await _until(_all_accounted(metrics, 25), "every record read reaching an outcome")
    assert _outcomes(metrics) == {"replicated": 25}
    assert _value(metrics, "replicator_dead_letters_total", target="us-west-2") == 0
    assert _dead_letters(tmp_path) == []
    assert _value(metrics, "replicator_target_unavailable", target="us-west-2", code=code) == 0
    # The table was emptied by the fix: the records held during the outage are all in it.
    target = await asyncio.to_thread(_items, region_b.endpoint_url, t)
    assert sorted(target) == [f"k{i:03d}" for i in range(5, 25)]


async def test_records_near_retention_are_dead_lettered_with_content_while_the_target_is_down(
    ddb_local_factory, region_b, unique_name, tmp_path
) -> None:
    """Source records written 23 h ago (libfaketime): with the target gone they go to the file, in full."""
    # Records reach the dead-letter deadline (24 h - 1 h) about 10 s after they are written.
    source = ddb_local_factory(faketime=f"-{86400 - 3600 - 10}")
    s, t = unique_name("src"), unique_name("dst")
    create_table(source.endpoint_url, s)
    create_table(region_b.endpoint_url, t, stream_view_type=None)
    metrics = Metrics()
    async with _running(_config(source.endpoint_url, s, region_b.endpoint_url, t, tmp_path), metrics):
        await asyncio.to_thread(_recreate, region_b.endpoint_url, t, hash_key="")
        await asyncio.to_thread(_put_many, source.endpoint_url, s, range(6))
        await _until(_all_accounted(metrics, 6), "every record read reaching an outcome")
        assert (
            _value(metrics, "replicator_target_unavailable", target="us-west-2", code="ResourceNotFoundException") == 1
        )
    assert _outcomes(metrics) == {"dead_lettered": 6}
    letters = _dead_letters(tmp_path)
    assert sorted(d["record"]["dynamodb"]["NewImage"]["v"]["N"] for d in letters) == [str(i) for i in range(6)]
    assert {d["error"]["type"] for d in letters} == {"TargetUnavailableError"}

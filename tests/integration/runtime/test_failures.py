"""Fault tests against real processes: DynamoDB Local paused and killed, the worker SIGKILLed.

Throttling, 500s and connection resets are injected with botocore before-send hooks on the worker's
target client; a poison record is dead-lettered (JSONL, and SQS on moto's server) and redriven.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import pytest
import yaml
from replicator_dev.local.common import create_table, local_client
from replicator_dev.local.dynamodb_local import DynamoDBLocal

from replicator.aws.clients import open_clients
from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.ops.compare import scan_items
from replicator.ops.redrive import redrive
from replicator.runtime.service import Replicator
from replicator.sink import deadletter

if TYPE_CHECKING:
    from pathlib import Path

MARKERS = ("_rep_version", "_rep_origin", "_rep_ts", "_rep_deleted", "_rep_expires")
ITEM_LIMIT = 400 * 1024


def _cfg_dict(
    src: DynamoDBLocal, src_table: str, tgt: DynamoDBLocal, tgt_table: str, tmp: Path, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "source": {"region": "us-east-1", "table": src_table, "endpoint_url": src.endpoint_url},
        "target": {"region": "us-west-2", "table": tgt_table, "endpoint_url": tgt.endpoint_url},
        "checkpoint": {"backend": "sqlite", "path": str(tmp / "cp.db")},
        "metrics": {"enabled": False},
        "logging": {"level": "WARNING", "format": "json"},
        "reader": {"shard_discovery_interval_s": 1.0, "max_idle_poll_interval_s": 0.25},
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def _tables(src: DynamoDBLocal, tgt: DynamoDBLocal, unique_name) -> tuple[str, str]:
    s, t = unique_name("src"), unique_name("dst")
    create_table(src.endpoint_url, s)
    create_table(tgt.endpoint_url, t, stream_view_type=None)
    return s, t


def _scan(ddb: DynamoDBLocal, table: str) -> dict[str, dict[str, Any]]:
    return {
        item["pk"]["S"]: {k: v for k, v in item.items() if k not in MARKERS}
        for item in scan_items(_client(ddb), table)
        if "_rep_deleted" not in item
    }


_CLIENTS: dict[str, Any] = {}


def _client(ddb: DynamoDBLocal) -> Any:
    # Creating a boto3 client costs ~0.25 s: one per endpoint for the whole module.
    if ddb.endpoint_url not in _CLIENTS:
        _CLIENTS[ddb.endpoint_url] = local_client("dynamodb", ddb.endpoint_url, max_attempts=10)
    return _CLIENTS[ddb.endpoint_url]


def _put(ddb: DynamoDBLocal, table: str, key: str, value: int, **extra: Any) -> None:
    _client(ddb).put_item(TableName=table, Item={"pk": {"S": key}, "v": {"N": str(value)}, **extra})


async def _converged(
    src: DynamoDBLocal,
    s: str,
    tgt: DynamoDBLocal,
    t: str,
    timeout: float,  # noqa: ASYNC109 - a deadline to fail at, not cancellation
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    want = await asyncio.to_thread(_scan, src, s)
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            got = await asyncio.to_thread(_scan, tgt, t)
            if got == want:
                return got
        await asyncio.sleep(0.5)
    missing = sorted(set(want) - set(got))[:5]
    diff = sorted(k for k in want if k in got and got[k] != want[k])[:5]
    pytest.fail(
        f"target did not converge in {timeout}s: {len(want)} source items, {len(got)} target; "
        f"missing {missing}, differ {diff}"
    )


@contextlib.asynccontextmanager
async def _running(cfg: Config, **kw: Any):
    replicator = Replicator(cfg, shutdown_timeout_s=5, **kw)
    task = asyncio.create_task(replicator.run())
    started = asyncio.create_task(replicator.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert started in done, "replicator did not start within 30 s"
    try:
        yield replicator
    finally:
        replicator.stop()
        await asyncio.wait_for(task, timeout=30)


def _outcomes(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["outcome"]: s.value
        for s in metrics.records.collect()[0].samples
        if s.name.endswith("_total") and s.value
    }


def _read_total(metrics: Metrics) -> float:
    return sum(s.value for s in metrics.records_read.collect()[0].samples if s.name.endswith("_total"))


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


HANG_S = 600.0
"""Bounds a wait that ends on the worker's accounting: reached only if the worker hangs."""


async def _settled(metrics: Metrics, records: int) -> None:
    """Wait until the worker read ``records`` (or more: re-reads) and every record read reached an outcome."""
    deadline = time.monotonic() + HANG_S
    while not (_read_total(metrics) >= records and sum(_outcomes(metrics).values()) == _read_total(metrics)):
        if time.monotonic() > deadline:
            pytest.fail(f"hung: read {_read_total(metrics)} of {records} records, outcomes {_outcomes(metrics)}")
        await asyncio.sleep(0.2)


# --------------------------------------------------------------------------------------------------
# A poison record, dead-lettered and redriven
# --------------------------------------------------------------------------------------------------


def _poison_workload(region_a: DynamoDBLocal, s: str) -> None:
    client = local_client("dynamodb", region_a.endpoint_url)
    for i in range(100):
        item: dict[str, Any] = {"pk": {"S": f"k{i:03d}"}, "v": {"N": str(i)}}
        if i == 42:
            # Just under 400 KB in the source; over it once the replication markers are added.
            room = ITEM_LIMIT - len("pk") - len("k042") - len("v") - 2 - len("blob") - 40
            item["blob"] = {"S": "x" * room}
        client.put_item(TableName=s, Item=item)


@pytest.mark.parametrize("destination", ["jsonl", "sqs"])
async def test_poison_record_is_dead_lettered_and_redriven(  # noqa: PLR0917 - pytest fixtures
    destination: str, region_a, region_b, moto_server, unique_name, tmp_path
) -> None:
    """Of 100 records the one too big for the target is dead-lettered; redrive after a fix writes it."""
    s, t = _tables(region_a, region_b, unique_name)
    if destination == "sqs":
        sqs = moto_server.client("sqs")
        url = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
        on_failure = {
            "destination": url,
            "endpoint_url": moto_server.endpoint_url,
            "region": moto_server.region_name,
        }
    else:
        on_failure = {"destination": str(tmp_path / "dead" / "letters.jsonl")}
    data = _cfg_dict(region_a, s, region_b, t, tmp_path, failure={"on_failure": on_failure, "batch_size": 100})
    cfg = Config(**data)
    await asyncio.to_thread(_poison_workload, region_a, s)
    metrics = Metrics()
    async with _running(cfg, metrics=metrics):
        await _settled(metrics, 100)
    outcomes = _outcomes(metrics)
    assert outcomes == {"replicated": 99, "dead_lettered": 1}
    assert sum(outcomes.values()) == _read_total(metrics) == 100
    target = await asyncio.to_thread(_scan, region_b, t)
    assert len(target) == 99
    assert "k042" not in target

    # The cause fixed (the blob is not replicated), redrive replays the dead letter.
    fixed = Config(**{**data, "transforms": [{"type": "exclude", "attributes": ["blob"]}]})
    report = await redrive(fixed)
    assert report.read == 1
    assert report.outcomes == {"replicated": 1}
    assert report.ok
    target = await asyncio.to_thread(_scan, region_b, t)
    assert target["k042"] == {"pk": {"S": "k042"}, "v": {"N": "42"}}
    if destination == "sqs":
        assert report.deleted_messages >= 1
        left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert int(left["ApproximateNumberOfMessages"]) + int(left["ApproximateNumberOfMessagesNotVisible"]) == 0
    else:
        (doc,) = deadletter.read_jsonl(tmp_path / "dead" / "letters.jsonl")
        assert doc["error"]["type"] == "RecordRejectedError"
        assert doc["sequenceNumber"]
        assert doc["streamArn"]


# --------------------------------------------------------------------------------------------------
# The target region paused, then killed and restarted
# --------------------------------------------------------------------------------------------------


async def _write_over(region: DynamoDBLocal, table: str, keys: int, seconds: float, start: int = 0) -> None:
    """Write ``keys`` keys spread over ``seconds`` (off the event loop)."""
    begin = time.monotonic()
    for n, i in enumerate(range(start, start + keys)):
        await asyncio.to_thread(_put, region, table, f"k{i % 60:03d}", i)
        await asyncio.sleep(max(0.0, begin + seconds * (n + 1) / keys - time.monotonic()))


async def test_target_paused_30s_loses_nothing(region_a, ddb_local_factory, unique_name, tmp_path) -> None:
    """SIGSTOP of the target for 30 s mid-workload: retries carry the worker through, then it catches up."""
    target = ddb_local_factory(region_name="us-west-2")
    s, t = _tables(region_a, target, unique_name)
    metrics = Metrics()
    cfg = Config(**_cfg_dict(region_a, s, target, t, tmp_path))
    async with _running(cfg, metrics=metrics) as replicator:
        writer = asyncio.create_task(_write_over(region_a, s, 200, 8))
        await asyncio.sleep(2)
        target.pause()
        try:
            await asyncio.sleep(30)
        finally:
            target.resume()
        await writer
        await _settled(metrics, 200)
        await _converged(region_a, s, target, t, timeout=HANG_S)
        assert not any(st.state == "stopped" for st in replicator.state.shards.values())
    assert _sample(metrics, "replicator_retries_total", target="us-west-2", operation="PutItem") > 0
    assert sum(_outcomes(metrics).values()) == _read_total(metrics)


async def test_target_killed_and_restarted_on_same_data(region_a, ddb_local_factory, unique_name, tmp_path) -> None:
    """The target process dies and comes back on its -dbPath: the worker resumes without a restart."""
    target = ddb_local_factory(region_name="us-west-2", db_path=True)
    s, t = _tables(region_a, target, unique_name)
    metrics = Metrics()
    cfg = Config(**_cfg_dict(region_a, s, target, t, tmp_path))
    async with _running(cfg, metrics=metrics):
        writer = asyncio.create_task(_write_over(region_a, s, 200, 8))
        await asyncio.sleep(2)
        target.kill()
        await asyncio.sleep(5)
        await asyncio.to_thread(target.start)
        await writer
        await _settled(metrics, 200)
        await _converged(region_a, s, target, t, timeout=HANG_S)
    assert _sample(metrics, "replicator_retries_total", target="us-west-2", operation="PutItem") > 0
    assert sum(_outcomes(metrics).values()) == _read_total(metrics)


# --------------------------------------------------------------------------------------------------
# Throttling and connection resets between the worker and the target
# --------------------------------------------------------------------------------------------------


def _inject_faults(client: Any, rng: random.Random, counts: dict[str, int]) -> None:
    """Fail a third of PutItem calls before they are sent: HTTP 400 throttling or a dropped connection."""

    def before_send(request: Any, **_: Any) -> None:
        roll = rng.random()
        if roll < 0.2:
            counts["throttled"] += 1
            raise botocore.exceptions.ClientError(
                {
                    "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "PutItem",
            )
        if roll < 0.3:
            counts["reset"] += 1
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)
        if roll < 0.35:
            counts["500"] += 1
            raise botocore.exceptions.ClientError(
                {
                    "Error": {"Code": "InternalServerError", "Message": "x"},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },
                "PutItem",
            )

    client.meta.events.register("before-send.dynamodb.PutItem", before_send)


async def test_throttling_and_resets_are_retried_without_loss(region_a, region_b, unique_name, tmp_path) -> None:
    """A third of target writes throttled, reset or 500: backoff, no loss, no shard stuck."""
    s, t = _tables(region_a, region_b, unique_name)
    cfg = Config(**_cfg_dict(region_a, s, region_b, t, tmp_path))
    metrics = Metrics()
    counts = {"throttled": 0, "reset": 0, "500": 0}
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, cfg)
        rng = random.Random(7)  # noqa: S311 - fault pattern, not security
        _inject_faults(clients.target.client, rng, counts)
        async with _running(cfg, metrics=metrics, clients=clients) as replicator:
            await _write_over(region_a, s, 300, 4)
            # Full-jitter backoff grows to 20 s: a write refused eight or nine times in a row (0.35 each) stalls
            # its batch for tens of seconds now and then, longer on a loaded machine. The wait ends on the
            # worker's accounting (all 300 records read and each at an outcome); the bound only fails a hang.
            await _settled(metrics, 300)
            await _converged(region_a, s, region_b, t, timeout=HANG_S)
            assert not any(st.state == "stopped" for st in replicator.state.shards.values())
    assert min(counts.values()) > 0
    assert (
        _sample(metrics, "replicator_throttles_total", target="us-west-2", operation="PutItem") == counts["throttled"]
    )
    assert _sample(metrics, "replicator_retries_total", target="us-west-2", operation="PutItem") == sum(counts.values())
    assert sum(_outcomes(metrics).values()) == _read_total(metrics)


# --------------------------------------------------------------------------------------------------
# The worker SIGKILLed ten times
# --------------------------------------------------------------------------------------------------


def _spawn_worker(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--config", str(config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )


async def test_worker_sigkilled_ten_times_converges(region_a, region_b, unique_name, tmp_path) -> None:
    """Ten SIGKILLs at random moments during a workload, a restart after each: target equals source."""
    s, t = _tables(region_a, region_b, unique_name)
    config_path = tmp_path / "replicator.yaml"
    config_path.write_text(yaml.safe_dump(_cfg_dict(region_a, s, region_b, t, tmp_path)))
    log = tmp_path / "worker.log"
    rng = random.Random(11)  # noqa: S311 - kill timing, not security
    writer = asyncio.create_task(_write_over(region_a, s, 400, 25))
    proc = _spawn_worker(config_path, log)
    try:
        for _ in range(10):
            await asyncio.sleep(rng.uniform(0.8, 2.5))
            assert proc.poll() is None, log.read_text()[-2000:]
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            proc = _spawn_worker(config_path, log)
        await writer
        # Ten restarts on a loaded machine: the separate processes' accounting is not readable here, so
        # the wait ends at convergence itself; the bound only fails a hang.
        await _converged(region_a, s, region_b, t, timeout=HANG_S)
    finally:
        if proc.poll() is None:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 20)

"""Kinesis Data Streams for DynamoDB as the source: moto's Kinesis server -> pipeline -> DynamoDB Local.

Records are put in the format DynamoDB publishes to Kinesis (JSON with ``awsRegion``, ``eventID``,
``eventName``, ``userIdentity``, ``recordFormat``, ``tableName``, ``dynamodb`` {ApproximateCreationDateTime
in ms, Keys, NewImage, OldImage, SizeBytes}, ``eventSource``), including duplicates, reordering, a
µs-precision timestamp, a binary attribute, another table's changes, a split and a merge.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from replicator_dev.local.common import create_table

from replicator.checkpoint.sqlite import SqliteCheckpointStore
from replicator.core.config import Config
from replicator.runtime.service import Replicator

if TYPE_CHECKING:
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal
    from replicator_dev.local.moto_server import MotoServer

MARKERS = {"_rep_version", "_rep_origin", "_rep_ts", "_rep_expires"}


class _Producer:
    """Plays DynamoDB's part: puts change records for one table into a Kinesis stream."""

    def __init__(self, kinesis: Any, stream: str, table: str) -> None:
        self.kinesis = kinesis
        self.stream = stream
        self.table = table
        self.state: dict[str, dict[str, Any] | None] = {}
        self.clock_ms = int(time.time() * 1000) - 60_000
        self.n = 0

    def change(self, key: str, value: int | None, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Build the payload of a change of ``key`` to ``value`` (None: delete) and apply it to the model."""
        self.clock_ms += 3  # distinct milliseconds: the order of changes is in their timestamps
        self.n += 1
        old = self.state.get(key)
        new = None if value is None else {"pk": {"S": key}, "v": {"N": str(value)}, **(extra or {})}
        event = "REMOVE" if new is None else ("INSERT" if old is None else "MODIFY")
        ddb: dict[str, Any] = {
            "ApproximateCreationDateTime": self.clock_ms,
            "Keys": {"pk": {"S": key}},
            "SizeBytes": 40,
        }
        if new is not None:
            ddb["NewImage"] = new
        if old is not None:
            ddb["OldImage"] = old
        self.state[key] = new
        return {
            "awsRegion": "us-east-1",
            "eventID": f"evt-{self.n}",
            "eventName": event,
            "userIdentity": None,
            "recordFormat": "application/json",
            "tableName": self.table,
            "dynamodb": ddb,
            "eventSource": "aws:dynamodb",
        }

    def put(self, payload: dict[str, Any]) -> None:
        """Put one change record, keyed by the item's partition key as DynamoDB does."""
        key = payload["dynamodb"]["Keys"]["pk"]["S"]
        self.kinesis.put_record(StreamName=self.stream, Data=json.dumps(payload).encode(), PartitionKey=key)

    def expected(self) -> dict[str, dict[str, Any]]:
        """Live items of the modelled table, with binary values as bytes (as boto3 returns them)."""
        out = {}
        for key, item in self.state.items():
            if item is None:
                continue
            decoded = {k: ({"B": base64.b64decode(v["B"])} if "B" in v else v) for k, v in item.items()}
            out[key] = decoded
        return out


def _shard_of(key: str, ranges: dict[str, tuple[int, int]]) -> str:
    """Return the shard moto routes a partition key to (MD5 of the key within a shard's hash range)."""
    value = int(hashlib.md5(key.encode()).hexdigest(), 16)  # noqa: S324 - Kinesis's own key hash
    return next(sid for sid, (low, high) in ranges.items() if low <= value < high)


def _target_items(ddb: DynamoDBLocal, table: str) -> dict[str, dict[str, Any]]:
    client = ddb.client()
    out = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            if "_rep_deleted" in item:
                continue
            out[item["pk"]["S"]] = {k: v for k, v in item.items() if k not in MARKERS}
    return out


async def _converged(producer: _Producer, region_b: DynamoDBLocal, table: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await asyncio.to_thread(_target_items, region_b, table)
        if got == producer.expected() or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.3)


async def test_kinesis_source_replicates_duplicates_reordering_and_reshards(  # noqa: PLR0915 - one scenario
    moto_server: MotoServer, region_b, unique_name, tmp_path: Path
) -> None:
    """Every change takes effect once, whatever Kinesis duplicated or reordered, through a split and merge."""
    kinesis = moto_server.client("kinesis")
    stream, table, target = unique_name("ks"), unique_name("src"), unique_name("dst")
    kinesis.create_stream(StreamName=stream, ShardCount=4)
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    create_table(region_b.endpoint_url, target)
    producer = _Producer(kinesis, stream, table)
    ranges = {
        s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in kinesis.list_shards(StreamARN=arn)["Shards"]
    }

    binary = {"blob": {"B": base64.b64encode(b"\x00\x01\xfe").decode()}}
    for round_ in range(3):
        for k in range(30):
            payload = producer.change(f"k{k:02d}", round_, extra=binary if k == 0 else None)
            producer.put(payload)
            if k % 7 == 0:
                producer.put(payload)  # a duplicate delivery
    # Reordered delivery: a key's later change reaches the stream before the earlier one.
    first, second = producer.change("k05", 100), producer.change("k05", 101)
    producer.put(second)
    producer.put(first)
    producer.put(producer.change("k06", None))
    # A µs-precision timestamp (ApproximateCreationDateTimePrecision MICROSECOND).
    micro = producer.change("k07", 200)
    micro["dynamodb"]["ApproximateCreationDateTime"] = producer.clock_ms * 1000 + 1
    producer.put(micro)
    # Another table streaming into the same Kinesis stream: not ours, never replicated.
    foreign = _Producer(kinesis, stream, "some-other-table").change("zz-foreign", 1)
    producer.put(foreign)

    cfg = Config(
        source={
            "kind": "kinesis",
            "region": "us-east-1",
            "table": table,
            "stream_arn": arn,
            "endpoint_url": moto_server.endpoint_url,
        },
        target={"region": "us-west-2", "table": target, "endpoint_url": region_b.endpoint_url},
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        metrics={"enabled": False},
        reader={"poll_interval_s": 0.05, "max_idle_poll_interval_s": 0.2, "shard_discovery_interval_s": 0.5},
        starting_position="TRIM_HORIZON",
    )
    replicator = Replicator(cfg, shutdown_timeout_s=5)
    task = asyncio.create_task(replicator.run())
    try:
        got = await _converged(producer, region_b, target)
        assert got == producer.expected()
        assert got["k05"]["v"] == {"N": "101"}
        assert "k06" not in got
        assert got["k00"]["blob"] == {"B": b"\x00\x01\xfe"}
        assert "zz-foreign" not in got
        registry = replicator.metrics.registry
        lost = sum(
            registry.get_sample_value("replicator_records_total", {"target": "us-west-2", "outcome": outcome}) or 0
            for outcome in ("collapsed", "superseded")
        )
        # 5 duplicates and the late, older k05 change lost last-writer-wins (in the batch or at the target).
        assert lost >= 6

        # Reshard while running: split shard 0, merge shards 2 and 3; then more changes.
        kinesis.split_shard(StreamName=stream, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**126 // 2))
        kinesis.merge_shards(
            StreamName=stream,
            ShardToMerge="shardId-000000000002",
            AdjacentShardToMerge="shardId-000000000003",
        )
        # moto keeps routing a resharded range's keys to the closed parents (real Kinesis never writes to
        # a closed shard), so later changes go only to keys of the untouched shard 1.
        untouched = [k for k in producer.state if _shard_of(k, ranges) == "shardId-000000000001"]
        assert untouched
        for i, key in enumerate(untouched):
            producer.put(producer.change(key, 1000 + i))
        got = await _converged(producer, region_b, target)
        assert got == producer.expected()
        children = [s["ShardId"] for s in kinesis.list_shards(StreamARN=arn)["Shards"] if s.get("ParentShardId")]
        assert len(children) == 3

        def reading() -> dict[str, str]:
            return {sid: status.state for sid, status in replicator.state.shards.items() if sid in children}

        deadline = time.monotonic() + 10
        while set(reading().values()) != {"reading"} and time.monotonic() < deadline:  # noqa: ASYNC110 - polls
            await asyncio.sleep(0.2)
        states = reading()
    finally:
        replicator.stop()
        await asyncio.wait_for(task, 20)

    store = SqliteCheckpointStore(tmp_path / "cp.db")
    await store.start()
    checkpoints = await store.load_all(arn)
    await store.close()
    shards = {s["ShardId"]: s for s in kinesis.list_shards(StreamARN=arn)["Shards"]}
    merged = next(s for s in shards.values() if s.get("AdjacentParentShardId"))
    # Parents were read to their end before their children: both parents of the merge are shard_end.
    assert checkpoints[merged["ParentShardId"]].shard_end
    assert checkpoints[merged["AdjacentParentShardId"]].shard_end
    assert checkpoints["shardId-000000000000"].shard_end
    # ...and then the children (empty: moto writes on to the closed parents) were being read.
    assert states == dict.fromkeys(children, "reading")


async def test_records_that_are_not_dynamodb_changes_are_skipped_and_the_shard_goes_on(
    moto_server: MotoServer, region_b, unique_name, tmp_path: Path
) -> None:
    """A shared stream's foreign data between two changes: both changes replicated, the foreign ones counted."""
    kinesis = moto_server.client("kinesis")
    stream, table, target = unique_name("ks"), unique_name("src"), unique_name("dst")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    create_table(region_b.endpoint_url, target)
    producer = _Producer(kinesis, stream, table)
    producer.put(producer.change("a", 1))
    kinesis.put_record(StreamName=stream, Data=b"plain text from another producer", PartitionKey="x")
    kinesis.put_record(StreamName=stream, Data=json.dumps({"order": 7}).encode(), PartitionKey="x")
    producer.put(producer.change("b", 2))
    cfg = Config(
        source={
            "kind": "kinesis",
            "region": "us-east-1",
            "table": table,
            "stream_arn": arn,
            "endpoint_url": moto_server.endpoint_url,
        },
        target={"region": "us-west-2", "table": target, "endpoint_url": region_b.endpoint_url},
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        metrics={"enabled": False},
        reader={"poll_interval_s": 0.05, "max_idle_poll_interval_s": 0.2, "shard_discovery_interval_s": 0.5},
        starting_position="TRIM_HORIZON",
    )
    replicator = Replicator(cfg, shutdown_timeout_s=5)
    task = asyncio.create_task(replicator.run())
    try:
        got = await _converged(producer, region_b, target)
        assert got == producer.expected()
        registry = replicator.metrics.registry
        skipped = registry.get_sample_value(
            "replicator_source_records_skipped_total", {"reason": "not_a_dynamodb_change"}
        )
        assert skipped == 2
        assert not any(s.state == "stopped" for s in replicator.state.shards.values())
    finally:
        replicator.stop()
        await task

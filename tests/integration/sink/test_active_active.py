"""Active-active end to end: two DynamoDB Local regions, a worker each way, concurrent writers.

The application keeps the documented contract: every write sets ``updatedAt`` (epoch ms), greater than
the timestamp of the item it replaces (a conditional write makes sure of it when writers race).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from replicator_dev.local.common import create_table

from replicator.aws.clients import Clients, open_clients
from replicator.core.config import Config
from replicator.core.errors import StreamConfigError
from replicator.core.records import from_lambda_event, from_stream_record
from replicator.observe.metrics import OUTCOMES, Metrics
from replicator.ops.verify import verify
from replicator.runtime.service import Replicator
from replicator.runtime.wiring import build_processor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal

A, B = "us-east-1", "us-west-2"
REPLICATION = {"timestamp_attribute": "updatedAt", "timestamp_unit": "ms", "source_tombstones": True}


def config(
    src: tuple[str, DynamoDBLocal, str], dst: tuple[str, DynamoDBLocal, str], checkpoints: Path, **extra: Any
) -> Config:
    """Return a worker's config: source and target given as (region, DynamoDB Local, table)."""
    return Config(
        source={"region": src[0], "table": src[2], "endpoint_url": src[1].endpoint_url},
        target={"region": dst[0], "table": dst[2], "endpoint_url": dst[1].endpoint_url},
        checkpoint={"backend": "sqlite", "path": str(checkpoints)},
        metrics={"port": 0, "host": "127.0.0.1"},
        reader={"poll_interval_s": 0.05, "max_idle_poll_interval_s": 0.1, "shard_discovery_interval_s": 1},
        starting_position="TRIM_HORIZON",
        replication=extra.pop("replication", REPLICATION),
        **extra,
    )


class Pair:
    """Two tables (A in region_a, B in region_b) and the configs of both directions."""

    def __init__(self, region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name: Callable[[str], str], tmp: Path):
        """Create both tables with NEW_AND_OLD_IMAGES streams."""
        self.ddb = {A: region_a, B: region_b}
        self.table = {A: unique_name("aa-a"), B: unique_name("aa-b")}
        create_table(region_a.endpoint_url, self.table[A], region_name=A)
        create_table(region_b.endpoint_url, self.table[B], region_name=B)
        self.client = {A: region_a.client(), B: region_b.client()}
        self.cfg = {
            A: config((A, region_a, self.table[A]), (B, region_b, self.table[B]), tmp / "a-to-b.db"),
            B: config((B, region_b, self.table[B]), (A, region_a, self.table[A]), tmp / "b-to-a.db"),
        }

    def get(self, region: str, pk: str) -> dict[str, Any] | None:
        """Read an item (consistently)."""
        item: dict[str, Any] | None = (
            self.client[region].get_item(TableName=self.table[region], Key={"pk": {"S": pk}}, ConsistentRead=True)
        ).get("Item")
        return item

    def scan(self, region: str) -> dict[str, dict[str, Any]]:
        """Every item by pk."""
        items: dict[str, dict[str, Any]] = {}
        for page in (
            self.client[region].get_paginator("scan").paginate(TableName=self.table[region], ConsistentRead=True)
        ):
            items.update({i["pk"]["S"]: i for i in page["Items"]})
        return items

    def stream_records(self, region: str) -> list[dict[str, Any]]:
        """Every record in the table's stream, all shards from their start."""
        streams = self.ddb[region].client("dynamodbstreams")
        arn = self.client[region].describe_table(TableName=self.table[region])["Table"]["LatestStreamArn"]
        records: list[dict[str, Any]] = []
        for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
                "ShardIterator"
            ]
            while it:
                resp = streams.get_records(ShardIterator=it, Limit=1000)
                records.extend(resp["Records"])
                if not resp["Records"]:
                    break
                it = resp.get("NextShardIterator")
        return records

    def write(self, region: str, pk: str, op: str, value: int) -> bool:
        """One application write honouring the timestamp contract; False when there was nothing to do."""
        client, table = self.client[region], self.table[region]
        for _ in range(20):
            current = self.get(region, pk)
            is_live = current is not None and "_rep_deleted" not in current
            old_ts = int(current["updatedAt"]["N"]) if current and "updatedAt" in current else 0
            ts = {"N": str(max(int(time.time() * 1000), old_ts + 1))}
            # Racing the replicator: write only over the timestamp just read (else read again).
            guard = {"ConditionExpression": "attribute_not_exists(updatedAt) OR updatedAt < :ts"}
            try:
                if op == "delete":
                    if not is_live:
                        return False
                    client.delete_item(
                        TableName=table,
                        Key={"pk": {"S": pk}},
                        ConditionExpression="updatedAt = :old",
                        ExpressionAttributeValues={":old": {"N": str(old_ts)}},
                    )
                elif op == "update" and is_live:
                    client.update_item(
                        TableName=table,
                        Key={"pk": {"S": pk}},
                        UpdateExpression="SET a = :a, updatedAt = :ts",
                        ExpressionAttributeValues={":a": {"N": str(value)}, ":ts": ts},
                        **guard,
                    )
                else:
                    item = {"pk": {"S": pk}, "a": {"N": str(value)}, "who": {"S": region}, "updatedAt": ts}
                    client.put_item(TableName=table, Item=item, ExpressionAttributeValues={":ts": ts}, **guard)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                continue
            return True
        raise AssertionError("application write kept losing races")


@contextlib.asynccontextmanager
async def running(cfg: Config, metrics: Metrics | None = None) -> AsyncIterator[Replicator]:
    """Run a worker in-process until the block ends."""
    replicator = Replicator(cfg, metrics=metrics, shutdown_timeout_s=5)
    task = asyncio.create_task(replicator.run())
    started = asyncio.create_task(replicator.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        task.result()  # raises the worker's error
    assert started in done, "worker did not start"
    try:
        yield replicator
    finally:
        replicator.stop()
        await asyncio.wait_for(task, 30)


def live(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the item as readers see it: tombstones absent, markers left out."""
    if item is None or "_rep_deleted" in item:
        return None
    return {k: v for k, v in item.items() if not k.startswith("_rep_")}


async def until(predicate: Callable[[], bool], limit_s: float = 30, message: str = "condition") -> None:
    """Poll ``predicate`` (in a thread) until it holds."""
    deadline = time.monotonic() + limit_s
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        await asyncio.sleep(0.2)


async def quiesce(pair: Pair, limit_s: float = 60) -> tuple[int, int]:
    """Wait until both streams stop growing and both tables agree; return the stream record counts."""
    deadline = time.monotonic() + limit_s
    previous = (-1, -1)
    while True:
        counts = await asyncio.gather(*(asyncio.to_thread(lambda r=r: len(pair.stream_records(r))) for r in (A, B)))
        now = (counts[0], counts[1])
        if now == previous:
            a, b = await asyncio.gather(asyncio.to_thread(pair.scan, A), asyncio.to_thread(pair.scan, B))
            same = {k: live(v) for k, v in a.items()} == {k: live(v) for k, v in b.items()}
            if same:
                return now
        assert time.monotonic() < deadline, "replication did not quiesce"
        previous = now
        await asyncio.sleep(1.5)


@pytest.fixture
def pair(region_a, region_b, unique_name, tmp_path) -> Pair:
    """Two empty tables, one per region."""
    return Pair(region_a, region_b, unique_name, tmp_path)


async def test_concurrent_writers_converge_without_echo_loops(pair: Pair) -> None:
    """Concurrent writers in both regions end identical; verify agrees; echoes never loop."""
    keys = [f"k{i}" for i in range(12)]

    def writer(region: str, seed: int) -> int:
        rng = random.Random(seed)  # noqa: S311 - a workload, not a secret
        done = 0
        for n in range(80):
            op = rng.choice(["put", "put", "update", "update", "delete"])
            done += pair.write(region, rng.choice(keys), op, n)
        return done

    async with running(pair.cfg[A]), running(pair.cfg[B]):
        written = await asyncio.gather(asyncio.to_thread(writer, A, 1), asyncio.to_thread(writer, B, 2))
        assert sum(written) > 100
        counts = await quiesce(pair)
        # No echo loop: with both workers still running, nothing more appears in either stream.
        await asyncio.sleep(3)
        again = await asyncio.gather(*(asyncio.to_thread(lambda r=r: len(pair.stream_records(r))) for r in (A, B)))
        assert tuple(again) == counts
        # Each application write leads to at most one replicated write and one source tombstone.
        assert sum(counts) <= 3 * sum(written)
    for region in (A, B):
        report = await verify(pair.cfg[region])
        assert not report.diverged, report.differences[:5]
        assert report.source_items == report.target_items
    a = {k: live(v) for k, v in pair.scan(A).items()}
    assert any(v is not None for v in a.values())


async def test_update_of_a_replicated_item_replicates_back(pair: Pair) -> None:
    """An UpdateItem in B touching app attributes of an item that came from A reaches A."""
    async with running(pair.cfg[A]), running(pair.cfg[B]):
        pair.write(A, "u1", "put", 1)
        await until(lambda: pair.get(B, "u1") is not None, message="A's item in B")
        replicated = pair.get(B, "u1")
        assert replicated is not None
        assert replicated["_rep_origin"] == {"S": A}
        assert pair.write(B, "u1", "update", 2)
        # The update left A's markers in place in B, yet it is an application change.
        assert pair.get(B, "u1")["_rep_origin"] == {"S": A}  # type: ignore[index]
        await until(lambda: (pair.get(A, "u1") or {}).get("a") == {"N": "2"}, message="B's update in A")
        back = pair.get(A, "u1")
        assert back is not None
        assert back["_rep_origin"] == {"S": B}
        await quiesce(pair)
    assert live(pair.get(A, "u1")) == live(pair.get(B, "u1"))


async def test_a_delete_of_an_upsert_on_a_tombstone_reaches_both_regions(pair: Pair) -> None:
    """An UpdateItem upsert on a tombstone in B, deleted before B's worker reads it: both regions lose the key."""
    async with running(pair.cfg[A]), running(pair.cfg[B]):
        pair.write(A, "d1", "put", 1)
        await until(lambda: pair.get(B, "d1") is not None, message="A's item in B")
        assert pair.write(A, "d1", "delete", 0)
        await until(lambda: "_rep_deleted" in (pair.get(B, "d1") or {}), message="the tombstone in B")
        await quiesce(pair)
    # Workers stopped: the flags of the upsert are not cleared before the application deletes it.
    tombstone = pair.get(B, "d1")
    assert tombstone is not None
    upsert_ts = str(int(tombstone["updatedAt"]["N"]) + 1)
    pair.client[B].update_item(
        TableName=pair.table[B],
        Key={"pk": {"S": "d1"}},
        UpdateExpression="SET a = :a, updatedAt = :ts",
        ExpressionAttributeValues={":a": {"N": "2"}, ":ts": {"N": upsert_ts}},
    )
    assert "_rep_deleted" in (pair.get(B, "d1") or {})  # what UpdateItem does: the flag stays
    pair.client[B].delete_item(TableName=pair.table[B], Key={"pk": {"S": "d1"}})
    async with running(pair.cfg[A]), running(pair.cfg[B]):
        await quiesce(pair)
    assert live(pair.get(A, "d1")) is None
    assert live(pair.get(B, "d1")) is None


async def test_replay_and_redrive_never_regress(pair: Pair) -> None:
    """Re-reading A's stream from its start, or redriving an old change, leaves B as it was."""
    async with running(pair.cfg[A]), running(pair.cfg[B]):
        for n in range(3):
            pair.write(A, "r1", "put", n)
            pair.write(A, "r2", "put", n)
        pair.write(A, "r2", "delete", 0)
        pair.write(B, "r3", "put", 7)
        await quiesce(pair)
    before = {k: live(v) for k, v in pair.scan(B).items()}
    assert before["r1"] is not None
    assert before["r1"]["a"] == {"N": "2"}
    assert before["r2"] is None

    # Replay: the A->B worker loses its checkpoint and reads A's stream again from TRIM_HORIZON.
    source_records = pair.stream_records(A)
    for leftover in pair.cfg[A].checkpoint.path.parent.glob(pair.cfg[A].checkpoint.path.name + "*"):
        leftover.unlink()
    metrics = Metrics()
    async with running(pair.cfg[A], metrics):

        def read_everything() -> bool:
            total = sum(
                metrics.registry.get_sample_value("replicator_records_total", {"target": B, "outcome": o}) or 0
                for o in OUTCOMES
            )
            return total >= len(source_records)

        await until(read_everything, message="the replay to finish")
        superseded = metrics.registry.get_sample_value(
            "replicator_records_total", {"target": B, "outcome": "superseded"}
        )
        assert superseded is not None
        assert superseded > 0
        assert metrics.registry.get_sample_value("replicator_conflicts_total", {"target": B}) == superseded
    assert {k: live(v) for k, v in pair.scan(B).items()} == before

    # Redrive: the first put of r1 and r2 (older than what B holds), processed again.
    async with _aio_clients(pair.cfg[A]) as clients:
        processor = build_processor(
            pair.cfg[A],
            target_client=clients.target,
            metrics=Metrics(),
            dead_letters=None,
            source_client=clients.source,
        )
        old = [
            from_stream_record(r, shard_id="s", stream_arn="arn")
            for r in source_records
            if r["eventName"] == "INSERT"
            and r["dynamodb"]["Keys"]["pk"]["S"] in ("r1", "r2")
            and "_rep_version" not in r["dynamodb"]["NewImage"]  # not r2's source tombstone
        ]
        assert len(old) == 2
        result = await processor.process(old)
    assert result.outcomes["superseded"] == 2
    assert {k: live(v) for k, v in pair.scan(B).items()} == before


@contextlib.asynccontextmanager
async def _aio_clients(cfg: Config) -> AsyncIterator[Clients]:
    async with contextlib.AsyncExitStack() as stack:
        yield await open_clients(stack, cfg)


async def test_keys_only_stream_is_refused(region_a, region_b, unique_name, tmp_path) -> None:
    """A KEYS_ONLY source stream stops the worker with a message naming the needed view type."""
    src, dst = unique_name("ko-a"), unique_name("ko-b")
    create_table(region_a.endpoint_url, src, stream_view_type="KEYS_ONLY")
    create_table(region_b.endpoint_url, dst)
    cfg = config((A, region_a, src), (B, region_b, dst), tmp_path / "cp.db")
    with pytest.raises(StreamConfigError, match=r"KEYS_ONLY.*NEW_AND_OLD_IMAGES"):
        async with running(cfg):
            pass


@pytest.mark.parametrize(("policy", "replicated"), [("replicate", True), ("skip", False)])
async def test_ttl_deletes_follow_the_policy(pair: Pair, policy: str, replicated: bool) -> None:  # noqa: FBT001 - parametrized
    """A TTL deletion (userIdentity dynamodb.amazonaws.com) is replicated or skipped per ttl_deletes."""
    cfg = pair.cfg[A].model_copy(
        update={"replication": pair.cfg[A].replication.model_copy(update={"ttl_deletes": policy})}
    )
    # The target holds an older version: a delete is versioned at the deleted write's timestamp (5), so
    # it must win over 4 (an equal local timestamp would be a tie that the region names decide).
    pair.client[B].put_item(TableName=pair.table[B], Item={"pk": {"S": "t1"}, "a": {"N": "1"}, "updatedAt": {"N": "4"}})
    event = {
        "eventID": "1",
        "eventName": "REMOVE",
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "dynamodb": {
            "Keys": {"pk": {"S": "t1"}},
            "OldImage": {"pk": {"S": "t1"}, "a": {"N": "1"}, "updatedAt": {"N": "5"}},
            "SequenceNumber": "100",
            "ApproximateCreationDateTime": time.time(),
        },
    }
    async with _aio_clients(cfg) as clients:
        processor = build_processor(
            cfg,
            target_client=clients.target,
            metrics=Metrics(),
            dead_letters=None,
            source_client=clients.source,
        )
        result = await processor.process([from_lambda_event(event, shard_id="s")])
    assert result.outcomes["replicated" if replicated else "ttl_skipped"] == 1
    assert (live(pair.get(B, "t1")) is None) is replicated

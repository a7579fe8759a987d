"""A 3-region full mesh: one worker per region fanning out to the other two, concurrent writers everywhere.

Each worker reads its own region's stream once (one reader per shard) and writes every change to the
two other regions (``targets:``). The application keeps the documented contract (docs/conflicts.md):
every write sets ``updatedAt`` (epoch ms) greater than the item it replaces, and both
``timestamp_attribute`` and ``source_tombstones`` are on. The mesh must converge and must not loop: a
replicated write shows up in its table's stream as an echo, which that region's worker does not forward.
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

from replicator.aws.clients import open_clients
from replicator.core.config import Config
from replicator.core.records import from_stream_record
from replicator.observe.metrics import Metrics
from replicator.ops.verify import verify
from replicator.runtime.service import Replicator
from replicator.runtime.wiring import build_processor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal

A, B, C = "us-east-1", "us-west-2", "eu-west-1"
REGIONS = (A, B, C)
# The recommended active-active settings of docs/conflicts.md, the same on every worker.
REPLICATION = {"timestamp_attribute": "updatedAt", "timestamp_unit": "ms", "source_tombstones": True}
VERSION, DELETED = "_rep_version", "_rep_deleted"


class Mesh:
    """One table per region, and each region's worker config: its table to the two others."""

    def __init__(self, ddb: dict[str, DynamoDBLocal], unique_name: Callable[[str], str], tmp: Path) -> None:
        """Create the three tables with NEW_AND_OLD_IMAGES streams."""
        self.ddb = ddb
        self.table = {region: unique_name(f"mesh-{region}") for region in REGIONS}
        for region in REGIONS:
            create_table(ddb[region].endpoint_url, self.table[region], region_name=region)
        self.client = {region: ddb[region].client() for region in REGIONS}
        self.cfg = {region: self._config(region, tmp / f"{region}.db") for region in REGIONS}
        self.metrics = {region: Metrics() for region in REGIONS}
        # Each successful application write, by region: (pk, op, its timestamp or the deleted item's).
        self.log: dict[str, list[tuple[str, str, int]]] = {region: [] for region in REGIONS}

    def _config(self, source: str, checkpoints: Path) -> Config:
        return Config(
            source={"region": source, "table": self.table[source], "endpoint_url": self.ddb[source].endpoint_url},  # type: ignore[arg-type]
            targets=[
                {"region": other, "table": self.table[other], "endpoint_url": self.ddb[other].endpoint_url}
                for other in REGIONS
                if other != source
            ],  # type: ignore[list-item]
            checkpoint={"backend": "sqlite", "path": str(checkpoints)},  # type: ignore[arg-type]
            metrics={"port": 0, "host": "127.0.0.1"},  # type: ignore[arg-type]
            reader={"poll_interval_s": 0.05, "max_idle_poll_interval_s": 0.1, "shard_discovery_interval_s": 1},  # type: ignore[arg-type]
            starting_position="TRIM_HORIZON",
            replication=REPLICATION,  # type: ignore[arg-type]
        )

    def get(self, region: str, pk: str) -> dict[str, Any] | None:
        """Read an item (consistently)."""
        item: dict[str, Any] | None = (
            self.client[region].get_item(TableName=self.table[region], Key={"pk": {"S": pk}}, ConsistentRead=True)
        ).get("Item")
        return item

    def scan(self, region: str) -> dict[str, dict[str, Any]]:
        """Every item by pk."""
        items: dict[str, dict[str, Any]] = {}
        paginator = self.client[region].get_paginator("scan")
        for page in paginator.paginate(TableName=self.table[region], ConsistentRead=True):
            items.update({i["pk"]["S"]: i for i in page["Items"]})
        return items

    def stream_records(self, region: str) -> list[dict[str, Any]]:
        """Every record in the region's stream, all shards from their start."""
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
            is_live = current is not None and DELETED not in current
            old_ts = int(current["updatedAt"]["N"]) if current and "updatedAt" in current else 0
            ts = {"N": str(max(int(time.time() * 1000), old_ts + 1))}
            # Racing the workers: write only over the timestamp just read (else read again).
            guard = {"ConditionExpression": "attribute_not_exists(updatedAt) OR updatedAt < :ts"}
            try:
                if op == "delete":
                    if not is_live:
                        return False
                    # Not on a tombstone that arrived since the read: it keeps the timestamp, and deleting
                    # it loses the delete's protection (test_application_delete_of_a_tombstone_...).
                    client.delete_item(
                        TableName=table,
                        Key={"pk": {"S": pk}},
                        ConditionExpression="updatedAt = :old AND attribute_not_exists(#del)",
                        ExpressionAttributeNames={"#del": DELETED},
                        ExpressionAttributeValues={":old": {"N": str(old_ts)}},
                    )
                elif op == "update" and is_live:
                    client.update_item(
                        TableName=table,
                        Key={"pk": {"S": pk}},
                        UpdateExpression="SET a = :a, who = :who, updatedAt = :ts",
                        ExpressionAttributeValues={":a": {"N": str(value)}, ":who": {"S": region}, ":ts": ts},
                        **guard,
                    )
                else:
                    item = {"pk": {"S": pk}, "a": {"N": str(value)}, "who": {"S": region}, "updatedAt": ts}
                    client.put_item(TableName=table, Item=item, ExpressionAttributeValues={":ts": ts}, **guard)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                continue
            self.log[region].append((pk, op, old_ts if op == "delete" else int(ts["N"])))
            return True
        raise AssertionError("application write kept losing races")

    def converged(self) -> bool:
        """True when the three tables hold the same live items."""
        views = [{k: live(v) for k, v in self.scan(region).items()} for region in REGIONS]
        return views[0] == views[1] == views[2]

    def quiescent(self) -> dict[str, int] | None:
        """Stream lengths by region once every worker has read and settled every record of its stream.

        A fixed point, judged by the workers' own accounting rather than by time: every record of every
        stream is read and has an outcome for each of its two targets, and no stream grew meanwhile, so
        no write is in flight and none can follow. None while that does not hold yet.
        """
        before = {region: len(self.stream_records(region)) for region in REGIONS}
        for region in REGIONS:
            read = sample_sum(self.metrics[region], "replicator_records_read_total")
            settled = sample_sum(self.metrics[region], "replicator_records_total")
            if read != before[region] or settled != (len(REGIONS) - 1) * read:
                return None
        after = {region: len(self.stream_records(region)) for region in REGIONS}
        return before if after == before else None


def sample_sum(metrics: Metrics, name: str, **labels: str) -> float:
    """Sum a metric's samples whose labels include ``labels`` (whatever other labels they carry)."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def live(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the item as readers see it: tombstones absent, markers left out."""
    if item is None or DELETED in item:
        return None
    return {k: v for k, v in item.items() if not k.startswith("_rep_")}


def version_of(image: dict[str, Any] | None) -> str | None:
    """The image's version marker, if any."""
    return (image or {}).get(VERSION, {}).get("S")


def by_application(record: dict[str, Any]) -> bool:
    """Whether a stream record is an application's change (the version marker did not change)."""
    data = record["dynamodb"]
    if record["eventName"] == "REMOVE":
        return DELETED not in data.get("OldImage", {})
    return version_of(data.get("NewImage")) in (None, version_of(data.get("OldImage")))


@contextlib.asynccontextmanager
async def running(cfg: Config, metrics: Metrics) -> AsyncIterator[Replicator]:
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


async def until(predicate: Callable[[], Any], limit_s: float, message: str) -> Any:
    """Poll ``predicate`` (in a thread) until it returns something truthy; return that."""
    deadline = time.monotonic() + limit_s
    while not (value := await asyncio.to_thread(predicate)):
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        await asyncio.sleep(0.5)
    return value


@pytest.fixture
def mesh(region_a, region_b, ddb_local_factory, unique_name, tmp_path) -> Mesh:
    """Three empty tables, one per region (the third region a DynamoDB Local process of its own)."""
    region_c = ddb_local_factory(region_name=C)
    return Mesh({A: region_a, B: region_b, C: region_c}, unique_name, tmp_path)


async def test_three_region_mesh_converges_without_loops(mesh: Mesh) -> None:
    """Conflicting writes, deletes and re-creates in 3 regions converge; each write echoes at most N-1 times."""
    keys = [f"k{i}" for i in range(10)]

    def writer(region: str, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - a workload, not a secret
        for n in range(60):
            op = rng.choice(["put", "put", "update", "update", "delete"])
            mesh.write(region, rng.choice(keys), op, n)

    def ties() -> None:
        # The same key, the same timestamp, three values: the greatest region name (us-west-2) must win.
        ts = {"N": str(int(time.time() * 1000) + 60_000)}
        for region in REGIONS:
            item = {"pk": {"S": "tie"}, "a": {"N": "0"}, "who": {"S": region}, "updatedAt": ts}
            mesh.client[region].put_item(TableName=mesh.table[region], Item=item)
            mesh.log[region].append(("tie", "put", int(ts["N"])))

    def delete_then_recreate_elsewhere() -> None:
        # Created in A, deleted in B once it arrived there, re-created in C once the delete reached C.
        assert mesh.write(A, "phoenix", "put", 1)
        wait_for(lambda: live(mesh.get(B, "phoenix")) is not None)
        assert mesh.write(B, "phoenix", "delete", 0)
        wait_for(lambda: DELETED in (mesh.get(C, "phoenix") or {}))
        assert mesh.write(C, "phoenix", "put", 3)

    async with contextlib.AsyncExitStack() as stack:
        for region in REGIONS:
            await stack.enter_async_context(running(mesh.cfg[region], mesh.metrics[region]))
        await asyncio.gather(
            *(asyncio.to_thread(writer, region, seed) for seed, region in enumerate(REGIONS)),
            asyncio.to_thread(ties),
            asyncio.to_thread(delete_then_recreate_elsewhere),
        )
        # Every successful application write, by region (list appends are atomic across the writer threads).
        written = {region: len(mesh.log[region]) for region in REGIONS}
        assert sum(written.values()) > 100
        await until(mesh.converged, 60, "the three tables to converge")
        counts: dict[str, int] = await until(mesh.quiescent, 60, "every worker to settle its whole stream")
        report_cost(mesh, written, counts)

    views = {region: {k: live(v) for k, v in mesh.scan(region).items()} for region in REGIONS}
    assert views[A] == views[B] == views[C]
    assert views[A]["tie"] is not None
    assert views[A]["tie"]["who"] == {"S": B}
    assert views[A]["phoenix"] is not None
    assert views[A]["phoenix"]["a"] == {"N": "3"}
    for region in REGIONS:
        for target in mesh.cfg[region].targets:
            report = await verify(mesh.cfg[region].for_target(target))
            assert not report.diverged, (region, target.region, report.differences[:5])

    for region in REGIONS:
        records = mesh.stream_records(region)
        # Every application write is one record of its own region's stream, and nothing else is taken for one:
        # a replicated write mistaken for an application change would be forwarded, and could loop.
        assert sum(map(by_application, records)) == written[region], region
        # The rest are replicated writes from the two other regions (each application write at most once
        # per region) and this worker's own writes to its source: a tombstone after an application delete,
        # and clearing the flags of an application UpdateItem that landed on a tombstone (a revive).
        others = sum(written[o] for o in REGIONS if o != region)
        deletes = sum(r["eventName"] == "REMOVE" and by_application(r) for r in records)
        upserts_on_tombstones = sum(by_application(r) and DELETED in r["dynamodb"].get("NewImage", {}) for r in records)
        assert len(records) - written[region] <= others + deletes + upserts_on_tombstones, region


def wait_for(predicate: Callable[[], bool], limit_s: float = 30) -> None:
    """Poll ``predicate`` (in this thread) until it holds."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def report_cost(mesh: Mesh, written: dict[str, int], counts: dict[str, int]) -> None:
    """Print what the mesh cost per application write, from the workers' own metrics (see docs/topologies.md)."""
    total_writes = sum(written.values())
    figures: dict[str, float] = {"application writes": total_writes, "stream records": sum(counts.values())}
    for name, sample, labels in (
        ("GetRecords calls returning records", "replicator_get_records_calls_total", {"result": "records"}),
        ("GetRecords calls, empty", "replicator_get_records_calls_total", {"result": "empty"}),
        ("records read", "replicator_records_read_total", {}),
        ("replicated (conditional write won)", "replicator_records_total", {"outcome": "replicated"}),
        ("superseded (conditional write lost)", "replicator_records_total", {"outcome": "superseded"}),
        ("collapsed (no write)", "replicator_records_total", {"outcome": "collapsed"}),
        ("echo_skipped (no write)", "replicator_records_total", {"outcome": "echo_skipped"}),
    ):
        figures[name] = sum(sample_sum(mesh.metrics[r], sample, **labels) for r in REGIONS)
    for name, value in figures.items():
        print(f"mesh cost: {name}: {value:.0f} ({value / total_writes:.2f} per application write)")  # noqa: T201 - shown with -s, quoted in docs/topologies.md


async def test_application_delete_of_a_tombstone_keeps_the_key_deleted_everywhere(mesh: Mesh) -> None:
    """An application delete landing on a tombstone (racing a replicated delete) must not let a replay revive the key.

    The race: the application in A reads B's item live at ``updatedAt = T`` and deletes it with the guard
    ``updatedAt = T``; meanwhile B's delete of its own write arrives and turns the item into a tombstone,
    which keeps ``updatedAt = T``, so the guard passes and the application's delete removes the tombstone.
    Its REMOVE record must not be taken for TTL collecting a tombstone (``tombstone_gc``, which is not
    replicated): A would be left without the tombstone that stops an older change from coming back.
    """
    async with contextlib.AsyncExitStack() as stack:
        for region in REGIONS:
            await stack.enter_async_context(running(mesh.cfg[region], mesh.metrics[region]))
        assert mesh.write(C, "k", "put", 1)  # an older version, made in C
        await until(lambda: live(mesh.get(A, "k")) is not None and live(mesh.get(B, "k")) is not None, 30, "C's put")
        assert mesh.write(B, "k", "put", 2)  # T, made in B
        await until(lambda: (live(mesh.get(A, "k")) or {}).get("a") == {"N": "2"}, 30, "B's put in A")
        deleted_ts = mesh.get(A, "k")["updatedAt"]  # type: ignore[index]
        # B deletes its own write: the delete keeps its timestamp T, and so does the tombstone in A.
        assert mesh.write(B, "k", "delete", 0)
        await until(lambda: DELETED in (mesh.get(A, "k") or {}), 30, "B's delete in A")
        # The application in A, having read the item live at T, deletes it under its guard.
        mesh.client[A].delete_item(
            TableName=mesh.table[A],
            Key={"pk": {"S": "k"}},
            ConditionExpression="updatedAt = :old",
            ExpressionAttributeValues={":old": deleted_ts},
        )
        await until(mesh.quiescent, 60, "every worker to settle its whole stream")

    # A replay of C's old put (a lost checkpoint, a redrive: at-least-once delivery allows it) loses to the
    # delete in B and C; it must lose in A too.
    old_put = next(r for r in mesh.stream_records(C) if r["eventName"] == "INSERT" and by_application(r))
    cfg = mesh.cfg[C]
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, cfg)
        for target in cfg.targets:
            processor = build_processor(
                cfg.for_target(target),
                target_client=clients.target_clients(cfg)[target.target_id],
                metrics=Metrics(),
                dead_letters=None,
                source_client=clients.source,
            )
            await processor.process([from_stream_record(old_put, shard_id="s", stream_arn="arn")])
    views = {region: live(mesh.get(region, "k")) for region in REGIONS}
    assert views == dict.fromkeys(REGIONS), views

"""Property: any interleaving of writes in two regions, delivered late, twice or out of order, converges.

The real pipeline, processor and ConditionalWriter write into two DynamoDB Local tables (one per
region), so DynamoDB itself evaluates every condition. Each region's stream is simulated exactly: every
write to a table (the application's own and the replicator's) becomes a ChangeRecord built from the
item before and after it, as DynamoDB Streams (NEW_AND_OLD_IMAGES) would deliver it. Records are then
delivered to the other region in an order, batching and duplication chosen by hypothesis.

The application keeps the active-active contract: it writes ``updatedAt`` (ms) on every write, greater
than the timestamp of the item (or tombstone) it replaces in its region, and a re-create greater than the
item it deleted. The expected final state of a
key is its application change with the greatest version (``version.change_version``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from aiobotocore.session import get_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replicator_dev.local.common import create_table

from replicator.aws.clients import TargetClient, client_config
from replicator.core.config import Config
from replicator.core.records import ChangeRecord, Item, from_lambda_event
from replicator.observe.metrics import Metrics
from replicator.pipeline import version as versions
from replicator.pipeline.origin import classify, strip_markers
from replicator.runtime.wiring import build_processor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from replicator.pipeline.processor import BatchProcessor

REGIONS = ("us-east-1", "us-west-2")
BASE_MS = 1_700_000_000_000
REPLICATION = {"timestamp_attribute": "updatedAt", "timestamp_unit": "ms", "source_tombstones": True}


@dataclasses.dataclass
class Region:
    """One simulated region: its table, its client, its stream and the application's clock."""

    name: str
    table: str
    client: Any
    clock_ms: int = BASE_MS
    pending: list[ChangeRecord] = dataclasses.field(default_factory=list)
    history: list[ChangeRecord] = dataclasses.field(default_factory=list)
    seq: itertools.count[int] = dataclasses.field(default_factory=lambda: itertools.count(10**20))
    last_ts: dict[str, int] = dataclasses.field(default_factory=dict)
    """Per key, the greatest timestamp this region's application wrote or saw: it never goes back."""


@dataclasses.dataclass
class World:
    """Both regions, their replicators (index i replicates region i into the other) and the oracle."""

    regions: tuple[Region, Region]
    processors: tuple[BatchProcessor, BatchProcessor]
    prefix: str
    markers: frozenset[str]
    app_changes: dict[str, list[tuple[str, ChangeRecord]]] = dataclasses.field(default_factory=dict)


@pytest.fixture
async def clients(region_a, region_b) -> AsyncIterator[tuple[Any, Any]]:
    """One aiobotocore DynamoDB client per region."""
    session = get_session()
    async with contextlib.AsyncExitStack() as stack:
        made = []
        for ddb, name in ((region_a, REGIONS[0]), (region_b, REGIONS[1])):
            made.append(
                await stack.enter_async_context(
                    session.create_client(
                        "dynamodb",
                        region_name=name,
                        endpoint_url=ddb.endpoint_url,
                        aws_access_key_id="x",
                        aws_secret_access_key="x",  # noqa: S106 - DynamoDB Local takes any key
                        config=client_config(),
                    )
                )
            )
        yield made[0], made[1]


@pytest.fixture
def tables(region_a, region_b, unique_name) -> tuple[str, str]:
    """One table per region; examples keep apart by key prefix."""
    names = (unique_name("lww-a"), unique_name("lww-b"))
    create_table(region_a.endpoint_url, names[0], region_name=REGIONS[0])
    create_table(region_b.endpoint_url, names[1], region_name=REGIONS[1])
    return names


def make_world(clients: tuple[Any, Any], tables: tuple[str, str], region_a, region_b) -> World:
    """Wire both directions as the service does (build_processor), with source tombstones on."""
    endpoints = (region_a.endpoint_url, region_b.endpoint_url)
    regions = (Region(REGIONS[0], tables[0], clients[0]), Region(REGIONS[1], tables[1], clients[1]))
    processors = []
    for i in (0, 1):
        o = 1 - i
        cfg = Config(
            source={"region": REGIONS[i], "table": tables[i], "endpoint_url": endpoints[i]},
            target={"region": REGIONS[o], "table": tables[o], "endpoint_url": endpoints[o]},
            replication=REPLICATION,
            metrics={"enabled": False},
        )
        processors.append(
            build_processor(
                cfg,
                target_client=TargetClient(clients[o]),
                metrics=Metrics(),
                dead_letters=None,
                source_client=clients[i],
                clock=lambda: BASE_MS / 1000,  # fixed tombstone TTLs: an example replays identically
            )
        )
    markers = processors[0].pipeline.replication.marker_attributes
    return World(regions, (processors[0], processors[1]), uuid.uuid4().hex[:8], markers)


async def get(region: Region, pk: str) -> Item | None:
    """Read an item with a consistent read."""
    resp = await region.client.get_item(TableName=region.table, Key={"pk": {"S": pk}}, ConsistentRead=True)
    item: Item | None = resp.get("Item")
    return item


def stream_record(region: Region, pk: str, before: Item | None, after: Item | None) -> ChangeRecord | None:
    """Record what DynamoDB Streams would emit for this change of one item (None: no change)."""
    if before == after:
        return None
    event_name = "INSERT" if before is None else ("REMOVE" if after is None else "MODIFY")
    ddb: dict[str, Any] = {
        "Keys": {"pk": {"S": pk}},
        "SequenceNumber": str(next(region.seq)),
        "ApproximateCreationDateTime": float(region.clock_ms // 1000),
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if before is not None:
        ddb["OldImage"] = before
    if after is not None:
        ddb["NewImage"] = after
    event = {
        "eventID": ddb["SequenceNumber"],
        "eventName": event_name,
        "dynamodb": ddb,
        "awsRegion": region.name,
    }
    record = from_lambda_event(event, shard_id=f"shard-{region.name}")
    region.pending.append(record)
    region.history.append(record)
    return record


def live(item: Item | None, markers: frozenset[str]) -> Item | None:
    """Return the item as readers see it: tombstones are absent, markers are left out."""
    if item is None or "_rep_deleted" in item:
        return None
    return strip_markers(item, markers)


async def local_write(world: World, r: int, key: str, op: str, advance_ms: int, value: int) -> None:  # noqa: PLR0917 - one drawn tuple
    """Write as the application does in region ``r``, keeping the timestamp contract."""
    region = world.regions[r]
    pk = f"{world.prefix}-{key}"
    before = await get(region, pk)
    region.clock_ms += advance_ms
    current_ts = int(before["updatedAt"]["N"]) if before and "updatedAt" in before else 0
    # The contract: greater than the item it replaces, and, after a delete, than the item deleted.
    value_ms = max(region.clock_ms, current_ts + 1, region.last_ts.get(pk, 0) + 1)
    region.last_ts[pk] = max(value_ms, current_ts)
    ts = {"N": str(value_ms)}
    is_live = live(before, world.markers) is not None
    ddb, table = region.client, region.table
    if op == "delete":
        if not is_live:
            return  # the application sees nothing to delete
        await ddb.delete_item(TableName=table, Key={"pk": {"S": pk}})
    elif op == "update" and is_live:
        # Touches application attributes only: the old markers stay in place.
        await ddb.update_item(
            TableName=table,
            Key={"pk": {"S": pk}},
            UpdateExpression="SET a = :a, updatedAt = :ts",
            ExpressionAttributeValues={":a": {"N": str(value)}, ":ts": ts},
        )
    else:
        item = {
            "pk": {"S": pk},
            "a": {"N": str(value)},
            "b": {"S": f"{region.name}-{value}"},
            "updatedAt": ts,
        }
        await ddb.put_item(TableName=table, Item=item)
    record = stream_record(region, pk, before, await get(region, pk))
    assert record is not None
    assert classify(record, world.processors[r].pipeline.replication) == "application"
    world.app_changes.setdefault(pk, []).append((region.name, record))


async def deliver(world: World, r: int, picks: list[int], *, keep: bool) -> None:
    """Deliver records from region ``r``'s stream to the other region as one batch."""
    src = world.regions[r]
    batch = []
    for pick in picks:
        if not src.pending:
            break
        batch.append(src.pending[pick % len(src.pending)] if keep else src.pending.pop(pick % len(src.pending)))
    if not batch:
        return
    pks = sorted({rec.keys["pk"]["S"] for rec in batch})
    before = {(t, pk): await get(world.regions[t], pk) for t in (0, 1) for pk in pks}
    result = await world.processors[r].process(batch)
    assert result.total == len(batch)
    assert result.outcomes["dead_lettered"] == 0
    for (t, pk), old in before.items():
        stream_record(world.regions[t], pk, old, await get(world.regions[t], pk))


def expected_state(world: World, pk: str) -> Item | None:
    """Return the state the key's application change with the greatest version decides."""
    best: tuple[str, ChangeRecord] | None = None
    for origin, record in world.app_changes[pk]:
        version, _ = versions.change_version(
            record,
            origin=origin,
            version_attribute="_rep_version",
            timestamp_attribute="updatedAt",
            timestamp_unit="ms",
        )
        if best is None or version > best[0]:
            best = (version, record)
    assert best is not None
    return None if best[1].new_image is None else strip_markers(best[1].new_image, world.markers)


async def drain(world: World, data: st.DataObject) -> None:
    """Deliver every pending record (echoes included) in an order hypothesis picks."""
    while world.regions[0].pending or world.regions[1].pending:
        # Draws never depend on the state (only their count does): hypothesis replays them exactly.
        r = data.draw(st.integers(0, 1), label="drain region")
        if not world.regions[r].pending:
            r = 1 - r
        picks = data.draw(st.lists(st.integers(0, 50), min_size=1, max_size=3), label="drain picks")
        await deliver(world, r, picks, keep=False)


async def check_converged(world: World) -> None:
    """Both tables hold the expected state for every key written."""
    for pk in world.app_changes:
        want = expected_state(world, pk)
        got = [live(await get(region, pk), world.markers) for region in world.regions]
        assert got[0] == want, f"{REGIONS[0]} diverged on {pk}"
        assert got[1] == want, f"{REGIONS[1]} diverged on {pk}"


local_ops = st.tuples(
    st.integers(0, 1),
    st.sampled_from(["k0", "k1", "k2"]),
    st.sampled_from(["put", "put", "update", "update", "delete"]),
    st.sampled_from([0, 1, 2, 3, 1500]),
    st.integers(0, 9),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_two_regions_converge_to_last_writer(clients, tables, region_a, region_b, data):
    """Random writes in both regions, delivered late, duplicated and reordered, converge to the LWW state."""
    world = make_world(clients, tables, region_a, region_b)
    steps = data.draw(st.integers(4, 24), label="steps")
    for _ in range(steps):
        if data.draw(st.integers(0, 2), label="kind") < 2:  # two local writes per delivery
            await local_write(world, *data.draw(local_ops, label="local write"))
        else:
            r = data.draw(st.integers(0, 1), label="from region")
            picks = data.draw(st.lists(st.integers(0, 50), min_size=1, max_size=3), label="picks")
            # keep=True delivers without consuming: the record is delivered again later (a duplicate).
            await deliver(world, r, picks, keep=data.draw(st.booleans(), label="duplicate"))
    await drain(world, data)
    if not world.app_changes:
        return
    await check_converged(world)

    # A replay of old records (a checkpoint reset, a redrive) changes nothing.
    for region in world.regions:
        picks = data.draw(st.lists(st.integers(0, 10**6), max_size=6), label="replay")
        region.pending.extend(region.history[p % len(region.history)] for p in picks if region.history)
    await drain(world, data)
    await check_converged(world)

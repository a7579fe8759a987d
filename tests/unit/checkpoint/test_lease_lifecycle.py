"""Lease lifecycle on the fake table: finished leases deleted after retention, live-only reads, bounded memory."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError
from fake_lease_table import FakeLeaseTable
from support import ManualClock

from replicator.checkpoint.leases import LeaseManager
from replicator.core.config import LeaseConfig
from replicator.source.shards import Shard, ShardTree

ARN = "arn:aws:dynamodb:us-east-1:1:table/T/stream/x"
RETENTION_S = 100.0


def _manager(table: FakeLeaseTable, worker: str, clock: ManualClock) -> LeaseManager:
    cfg = LeaseConfig(enabled=True, finished_retention_s=RETENTION_S, cleanup_interval_s=1.0)
    return LeaseManager(table, "leases", stream_arn=ARN, worker_id=worker, cfg=cfg, clock=clock, wall=clock)


def _listing(tree: ShardTree, *shards: Shard) -> None:
    """What the coordinator does with a listing: merge it and forget what is no longer listed."""
    tree.update(shards)
    tree.prune(s.shard_id for s in shards)


async def _cleanup(manager: LeaseManager, tree: ShardTree, clock: ManualClock) -> int:
    clock.now += manager.cleanup_interval_s
    return await manager.cleanup_if_due(tree)


async def test_a_finished_lease_is_deleted_only_past_retention_once_its_child_started_and_it_is_unlisted() -> None:
    """The parent's item stays while its child has not started, while listed, and before retention; then goes."""
    table, clock = FakeLeaseTable(), ManualClock()
    p, c = Shard("p", None, "1", "9"), Shard("c", "p", "10")
    tree = ShardTree()
    _listing(tree, p, c)
    a = _manager(table, "A", clock)
    await a.prepare()
    await a.ensure_leases(tree.shards.values())
    assert await a.rebalance(tree) == ["p"]
    await a.checkpoint("p", "9", shard_end=True, parent_shard_id=None)
    clock.now += RETENTION_S + 1
    assert await _cleanup(a, tree, clock) == 0, "child not started, parent still listed"
    assert await a.rebalance(tree) == ["c"]
    assert await _cleanup(a, tree, clock) == 0, "parent still listed by the stream"
    _listing(tree, c)  # the stream trimmed the parent
    assert "p" in table.items
    assert await _cleanup(a, tree, clock) == 1
    assert "p" not in table.items
    assert set(table.items) == {"c"}


async def test_a_finished_lease_stays_until_retention_even_when_unlisted_and_its_child_started() -> None:
    """Never earlier than retention: a lagging replay must still find the parent's checkpoint."""
    table, clock = FakeLeaseTable(), ManualClock()
    tree = ShardTree()
    _listing(tree, Shard("p", None, "1", "9"), Shard("c", "p", "10"))
    a = _manager(table, "A", clock)
    await a.ensure_leases(tree.shards.values())
    await a.rebalance(tree)
    await a.checkpoint("p", "9", shard_end=True, parent_shard_id=None)
    await a.rebalance(tree)
    _listing(tree, Shard("c", "p", "10"))
    clock.now += RETENTION_S / 2
    assert await _cleanup(a, tree, clock) == 0
    assert table.items["p"]["checkpoint"] == {"S": "9"}


async def test_rebalance_reads_only_live_leases() -> None:
    """Rebalancing queries the live index: a finished lease is no longer read, nor kept in the lease cache."""
    table, clock = FakeLeaseTable(), ManualClock()
    tree = ShardTree()
    _listing(tree, Shard("p", None, "1", "9"), Shard("c", "p", "10"))
    a = _manager(table, "A", clock)
    await a.prepare()
    await a.ensure_leases(tree.shards.values())
    await a.rebalance(tree)
    await a.checkpoint("p", "9", shard_end=True, parent_shard_id=None)
    table.queries.clear()
    assert await a.rebalance(tree) == ["c"]
    assert [q.get("IndexName") for q in table.queries] == ["live-leases"]
    assert set(a.refresh.__self__._table.items) == {"c"}  # type: ignore[attr-defined]
    assert a.checkpoints()["p"].shard_end  # lineage still knows the parent finished


async def test_a_lagging_worker_neither_recreates_a_deleted_parent_nor_blocks_its_child() -> None:
    """After cleanup deleted the parent, a worker that still lists it learns from the child that it ended."""
    table, clock = FakeLeaseTable(), ManualClock()
    p, c = Shard("p", None, "1", "9"), Shard("c", "p", "10")
    current, lagging = ShardTree(), ShardTree()
    _listing(current, p, c)
    _listing(lagging, p, c)
    a, b = _manager(table, "A", clock), _manager(table, "B", clock)
    await a.prepare()
    await a.ensure_leases(current.shards.values())
    await a.rebalance(current)
    await a.checkpoint("p", "9", shard_end=True, parent_shard_id=None)
    await a.rebalance(current)
    await a.release_all()
    _listing(current, c)
    clock.now += RETENTION_S + 1
    assert await _cleanup(a, current, clock) == 1
    await b.prepare()
    await b.ensure_leases(lagging.shards.values())
    assert "p" not in table.items, "the deleted parent's lease was created again"
    assert await b.rebalance(lagging) == ["c"]


async def test_an_older_table_gets_the_live_index_and_its_items_the_live_key() -> None:
    """A table made before the index: prepare adds it and backfills liveStreamArn on unfinished leases only."""
    table, clock = FakeLeaseTable(), ManualClock()
    table.has_live_index = False
    key = {"streamArn": {"S": ARN}}
    table.items["old"] = {**key, "shardId": {"S": "old"}, "shardEnd": {"BOOL": True}, "leaseCounter": {"N": "4"}}
    table.items["open"] = {**key, "shardId": {"S": "open"}, "leaseCounter": {"N": "2"}, "parentShardId": {"S": "old"}}
    a = _manager(table, "A", clock)
    await a.prepare()
    assert table.index_updates == 1
    assert table.items["open"]["liveStreamArn"] == {"S": ARN}
    assert "liveStreamArn" not in table.items["old"]
    tree = ShardTree()
    _listing(tree, Shard("old", None, "1", "5"), Shard("open", "old", "6"))
    clock.now += 11  # the old owner's lease expired
    assert await a.rebalance(tree) == ["open"]


async def test_a_year_of_rollovers_keeps_the_table_and_memory_bounded_by_open_shards() -> None:
    """Many rollovers: lease items and every cache follow listed shards (open + retained), not history."""
    table, clock = FakeLeaseTable(), ManualClock()
    width, lifetime_s, rollovers = 4, 40.0, 60
    a = _manager(table, "A", clock)
    await a.prepare()
    tree = ShardTree()
    generations: list[list[Shard]] = []
    for gen in range(rollovers):
        parents = generations[-1] if generations else [None] * width
        generations.append(
            [Shard(f"g{gen:03d}-{i}", p.shard_id if p else None, f"{gen:03d}", None) for i, p in enumerate(parents)]
        )
        if gen:  # the previous generation is now closed
            generations[-2] = [
                Shard(s.shard_id, s.parent_shard_id, s.starting_sequence_number, "e") for s in generations[-2]
            ]
        listed_gens = [g for n, g in enumerate(generations) if (gen - n) * lifetime_s <= RETENTION_S + lifetime_s]
        _listing(tree, *(s for g in listed_gens for s in g))
        await a.ensure_leases(tree.shards.values())
        for _ in range(2):
            await a.rebalance(tree)
        for sid in list(a.held()):
            if tree.shards[sid].closed:
                await a.checkpoint(sid, "e", shard_end=True, parent_shard_id=None)
        await a.rebalance(tree)
        clock.now += lifetime_s
        await a.cleanup_if_due(tree)
    listed = len(tree.shards)
    assert listed <= width * (RETENTION_S / lifetime_s + 2)
    assert len(table.items) <= listed + width
    cached = a.table
    assert len(cached.items) <= width
    assert len(cached.seen) <= width
    assert len(cached.finished) <= listed
    assert len(cached.exists) <= listed


class _InFlightTable(FakeLeaseTable):
    """Each UpdateItem takes a moment; counts how many are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.most_in_flight = 0

    async def update_item(self, **kwargs: Any) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            await super().update_item(**kwargs)
        finally:
            self.in_flight -= 1


async def _holding_300(table: _InFlightTable) -> tuple[LeaseManager, ShardTree]:
    """A manager that created and took 300 leases, the table's in-flight count reset."""
    tree = ShardTree()
    _listing(tree, *(Shard(f"s{i:03d}", None, "1") for i in range(300)))
    a = _manager(table, "A", ManualClock())
    await a.ensure_leases(tree.shards.values())
    assert len(await a.rebalance(tree)) == 300
    table.most_in_flight = 0
    return a, tree


async def test_hundreds_of_leases_are_renewed_concurrently_not_one_after_another() -> None:
    """One after another, 300 renewals outlast the failover time on a busy table: they overlap instead."""
    table = _InFlightTable()
    a, tree = await _holding_300(table)
    await a.renew_all()
    assert table.most_in_flight > 1
    assert a.held() == set(tree.shards)
    assert all(table.items[sid]["leaseCounter"] == {"N": "2"} for sid in tree.shards)


async def test_hundreds_of_leases_are_released_concurrently_at_shutdown() -> None:
    """One after another, 330 releases outlasted a container's stop timeout: they overlap, and all are freed."""
    table = _InFlightTable()
    a, tree = await _holding_300(table)
    await a.release_all()
    assert table.most_in_flight > 1
    assert a.held() == set()
    assert not any("leaseOwner" in table.items[sid] for sid in tree.shards)


class _InFlightPutTable(FakeLeaseTable):
    """Each PutItem takes a moment; counts how many are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.most_in_flight = 0

    async def put_item(self, **kwargs: Any) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            await super().put_item(**kwargs)
        finally:
            self.in_flight -= 1


async def test_the_leases_of_a_rollovers_children_are_created_concurrently() -> None:
    """A rollover opens hundreds of children at once: their lease items are created concurrently, each once."""
    table, clock = _InFlightPutTable(), ManualClock()
    shards = [Shard(f"s{i:03d}", None, "1") for i in range(300)]
    a = _manager(table, "A", clock)
    await a.ensure_leases(shards)
    assert table.most_in_flight > 1
    assert set(table.items) == {s.shard_id for s in shards}


async def test_a_rebalance_takes_the_leases_it_lacks_concurrently() -> None:
    """300 free leases: the takes overlap instead of running one after another."""
    table, clock = _InFlightTable(), ManualClock()
    tree = ShardTree()
    _listing(tree, *(Shard(f"s{i:03d}", None, "1") for i in range(300)))
    a = _manager(table, "A", clock)
    await a.ensure_leases(tree.shards.values())
    assert len(await a.rebalance(tree)) == 300
    assert table.most_in_flight > 1


class _LaggingIndexTable(FakeLeaseTable):
    """The live index answers from a snapshot taken at ``freeze``: an eventually consistent read."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen: list[dict[str, Any]] | None = None

    def freeze(self) -> None:
        self.frozen = [dict(i) for i in self.items.values() if "liveStreamArn" in i]

    async def query(self, **kwargs: Any) -> dict[str, Any]:
        if kwargs.get("IndexName") is not None and self.frozen is not None:
            return {"Items": [dict(i) for i in self.frozen]}
        return await super().query(**kwargs)


async def test_a_stale_live_index_read_from_before_our_take_does_not_drop_the_lease() -> None:
    """The index still shows the lease before our take (no owner, lower counter): not a loss."""
    table, clock = _LaggingIndexTable(), ManualClock()
    tree = ShardTree()
    _listing(tree, Shard("s0", None, "1"))
    a = _manager(table, "A", clock)
    await a.prepare()
    await a.ensure_leases(tree.shards.values())
    table.freeze()
    assert await a.rebalance(tree) == ["s0"]  # the frozen read still offers it; the take is conditional
    await a.rebalance(tree)
    assert a.held() == {"s0"}
    await a.checkpoint("s0", "5", shard_end=False, parent_shard_id=None)


class _RepairFailsTable(FakeLeaseTable):
    """Setting the live key is throttled while ``repair_fails``: the sweep stops before repairing."""

    def __init__(self) -> None:
        super().__init__()
        self.repair_fails = False

    async def update_item(self, **kwargs: Any) -> None:
        if self.repair_fails and kwargs["UpdateExpression"].startswith("SET liveStreamArn"):
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem")
        await super().update_item(**kwargs)


async def test_a_failed_sweep_does_not_switch_to_the_index_and_drop_a_lease_without_the_live_key() -> None:
    """A lease an older version created (no live key) and we hold stays held when the repairing sweep fails."""
    table, clock = _RepairFailsTable(), ManualClock()
    table.has_live_index = False
    a = _manager(table, "A", clock)
    await a.prepare()  # adds the index; until it is ACTIVE and backfilled, every item of the stream is read
    # An older worker of a rolling deploy creates a child's lease, without the live key.
    table.items["c"] = {"streamArn": {"S": ARN}, "shardId": {"S": "c"}, "leaseCounter": {"N": "0"}}
    tree = ShardTree()
    _listing(tree, Shard("c", None, "1"))
    assert await a.rebalance(tree) == ["c"]
    table.repair_fails = True
    with pytest.raises(ClientError):
        await _cleanup(a, tree, clock)
    await a.rebalance(tree)
    assert a.held() == {"c"}, "the held lease was dropped: the index does not show it yet"

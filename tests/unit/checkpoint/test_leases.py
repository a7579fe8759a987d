"""LeaseManager against an in-memory table with DynamoDB's conditional-write semantics (fast, no server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fake_lease_table import FakeLeaseTable, GatedLeaseTable
from support import ManualClock

from replicator.checkpoint.leases import LeaseManager
from replicator.core.config import LeaseConfig
from replicator.core.errors import LeaseLostError
from replicator.source.shards import Shard, ShardTree

ARN = "arn:aws:kinesis:us-east-1:1:stream/s"


def _tree(*shards: Shard) -> ShardTree:
    tree = ShardTree()
    tree.update(shards)
    return tree


def _manager(table: FakeLeaseTable, worker: str, clock: ManualClock) -> LeaseManager:
    return LeaseManager(table, "leases", stream_arn=ARN, worker_id=worker, cfg=LeaseConfig(enabled=True), clock=clock)


async def test_a_new_worker_steals_one_lease_per_round_until_balanced_and_the_victim_is_fenced() -> None:
    """B joins A's 4 leases: one steal per round, 2 each; A's checkpoint on a stolen shard is refused."""
    table, clock = FakeLeaseTable(), ManualClock()
    tree = _tree(*(Shard(f"s{i}", None, "1") for i in range(4)))
    a, b = _manager(table, "A", clock), _manager(table, "B", clock)
    await a.ensure_leases(tree.shards.values())
    assert len(await a.rebalance(tree)) == 4
    assert len(await b.rebalance(tree)) == 1
    assert len(await b.rebalance(tree)) == 1
    assert await b.rebalance(tree) == []  # balanced: 2 and 2, no more stealing
    stolen = b.held()
    assert len(stolen) == 2
    victim = next(iter(stolen))
    stop = a.stop_event(victim)
    with pytest.raises(LeaseLostError):
        await a.checkpoint(victim, "5", shard_end=False, parent_shard_id=None)
    assert stop.is_set()
    await a.rebalance(tree)
    assert a.held() == {"s0", "s1", "s2", "s3"} - stolen
    await b.checkpoint(victim, "7", shard_end=False, parent_shard_id=None)
    assert table.items[victim]["checkpoint"] == {"S": "7"}


async def test_a_dead_workers_leases_are_taken_only_after_the_failover_time() -> None:
    """Leases whose counter stops moving are taken after failover_time_s of this worker's own clock."""
    table, clock = FakeLeaseTable(), ManualClock()
    tree = _tree(Shard("s0", None, "1"), Shard("s1", None, "1"))
    a, b = _manager(table, "A", clock), _manager(table, "B", clock)
    await a.ensure_leases(tree.shards.values())
    await a.rebalance(tree)
    await b.rebalance(tree)  # first sight of A's counters; B steals one (2 > fair share 1)
    clock.now += 5
    await a.renew_all()
    clock.now += 5.5  # 10.5 s after B first saw the lease A still holds, but A renewed 5.5 s ago
    await b.rebalance(tree)
    assert len(b.held()) == 1
    clock.now += 11  # A is gone: no renewal for more than failover_time_s
    assert len(await b.rebalance(tree)) == 1
    assert b.held() == {"s0", "s1"}


async def test_a_child_is_taken_only_after_its_parent_ended_and_release_frees_leases() -> None:
    """The child's lease stays untaken until the parent's item says shardEnd; release removes the owner."""
    table, clock = FakeLeaseTable(), ManualClock()
    tree = _tree(Shard("p", None, "1", "9"), Shard("c", "p", "10"))
    a = _manager(table, "A", clock)
    await a.ensure_leases(tree.shards.values())
    assert await a.rebalance(tree) == ["p"]
    assert await a.rebalance(tree) == []
    await a.checkpoint("p", "9", shard_end=True, parent_shard_id=None)
    assert a.held() == set()
    assert await a.rebalance(tree) == ["c"]
    await a.release_all()
    assert "leaseOwner" not in table.items["c"]
    b = _manager(table, "B", clock)
    assert await b.rebalance(tree) == ["c"]  # unowned: no need to wait for the failover time


class _SlowQueryTable(FakeLeaseTable):
    """Query reads its snapshot at once but answers later, as a slow network would."""

    async def query(self, **kwargs: Any) -> dict[str, Any]:
        snapshot = await super().query(**kwargs)
        await asyncio.sleep(0.05)
        return snapshot


async def test_a_checkpoint_during_a_refresh_does_not_drop_the_lease() -> None:
    """A counter bumped by our own checkpoint while the lease Query was in flight is a stale read, not a loss."""
    table, clock = _SlowQueryTable(), ManualClock()
    tree = _tree(Shard("s0", None, "1"))
    a = _manager(table, "A", clock)
    await a.ensure_leases(tree.shards.values())
    await a.rebalance(tree)

    async def checkpoint_soon() -> None:
        await asyncio.sleep(0.01)
        await a.checkpoint("s0", "5", shard_end=False, parent_shard_id=None)

    await asyncio.gather(a.rebalance(tree), checkpoint_soon())
    assert a.held() == {"s0"}
    await a.checkpoint("s0", "6", shard_end=False, parent_shard_id=None)


async def _cancel_in_flight(table: GatedLeaseTable, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` once its write is applied, check it waits for the reply, then let the reply come."""
    await asyncio.wait_for(table.applied.wait(), timeout=5)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done(), "the cancellation went on before the lease write had its answer"
    table.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task


def _stored_counter(table: FakeLeaseTable, shard_id: str) -> int:
    return int(table.items[shard_id]["leaseCounter"]["N"])


async def test_a_checkpoint_cancelled_in_flight_completes_and_keeps_the_counter_in_step() -> None:
    """Cancelled while DynamoDB's answer is on its way, a checkpoint still records the counter it wrote."""
    table, clock = GatedLeaseTable(), ManualClock()
    tree = _tree(Shard("s0", None, "1"))
    a = _manager(table, "A", clock)
    await a.ensure_leases(tree.shards.values())
    await a.rebalance(tree)
    table.hold_replies()
    task = asyncio.create_task(a.checkpoint("s0", "5", shard_end=False, parent_shard_id=None))
    await _cancel_in_flight(table, task)
    assert table.items["s0"]["checkpoint"] == {"S": "5"}
    assert a._table.held["s0"].counter == _stored_counter(table, "s0")
    await a.renew_all()
    await a.checkpoint("s0", "6", shard_end=False, parent_shard_id=None)
    assert a.held() == {"s0"}


async def test_a_shard_end_cancelled_in_flight_still_ends_the_lease() -> None:
    """The shard-end checkpoint and dropping the ended lease are not separated by a cancellation."""
    table, clock = GatedLeaseTable(), ManualClock()
    tree = _tree(Shard("p", None, "1", "9"))
    a = _manager(table, "A", clock)
    await a.ensure_leases(tree.shards.values())
    await a.rebalance(tree)
    table.hold_replies()
    task = asyncio.create_task(a.checkpoint("p", "9", shard_end=True, parent_shard_id=None))
    await _cancel_in_flight(table, task)
    assert table.items["p"]["shardEnd"] == {"BOOL": True}
    assert a.held() == set()


async def test_a_take_cancelled_in_flight_is_held_and_released_at_shutdown() -> None:
    """A rebalance cancelled while its take is answered still holds that lease, so shutdown releases it."""
    table, clock = GatedLeaseTable(), ManualClock()
    tree = _tree(Shard("s0", None, "1"))
    a = _manager(table, "A", clock)
    await a.ensure_leases(tree.shards.values())
    table.hold_replies()
    task = asyncio.create_task(a.rebalance(tree))
    await _cancel_in_flight(table, task)
    assert table.items["s0"]["leaseOwner"] == {"S": "A"}
    assert a.held() == {"s0"}
    assert a._table.held["s0"].counter == _stored_counter(table, "s0")
    await a.release_all()
    assert "leaseOwner" not in table.items["s0"]


async def test_a_renewal_cancelled_at_shutdown_does_not_keep_the_lease_from_being_released() -> None:
    """Shutdown cancels the renewer mid-renewal; the renewal finishes first, so release_all frees the lease."""
    table, clock = GatedLeaseTable(), ManualClock()
    tree = _tree(Shard("s0", None, "1"), Shard("s1", None, "1"))
    a = _manager(table, "A", clock)
    await a.ensure_leases(tree.shards.values())
    await a.rebalance(tree)
    table.hold_replies()
    renewer = asyncio.create_task(a.renew_all())
    await _cancel_in_flight(table, renewer)
    a.stop_readers()
    await a.release_all()
    assert [sid for sid, item in table.items.items() if "leaseOwner" in item] == []
    assert a.held() == set()

"""Finished checkpoints without leases: deleted by lease cleanup's rule, never earlier (SQLite store)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fake_lease_table import FakeLeaseTable
from support import ManualClock

from replicator.checkpoint.leases import LeasedCheckpointStore, LeaseManager
from replicator.checkpoint.sqlite import SqliteCheckpointStore
from replicator.core.config import LeaseConfig
from replicator.source.shards import Shard, ShardTree

if TYPE_CHECKING:
    from pathlib import Path

ARN = "arn:aws:dynamodb:us-east-1:1:table/T/stream/x"
RETENTION_S = 100.0


async def _store(tmp_path: Path) -> SqliteCheckpointStore:
    store = SqliteCheckpointStore(tmp_path / "cp.db")
    await store.start()
    return store


async def test_a_finished_checkpoint_waits_for_its_child_the_listing_and_retention(tmp_path: Path) -> None:
    """The parent's row stays while its child has no position, while listed, and before retention; then goes."""
    store = await _store(tmp_path)
    try:
        await store.save(ARN, "p", "9", shard_end=True)
        ended_s = (await store.load_all(ARN))["p"].updated_at_s
        late_s = ended_s + RETENTION_S + 1

        async def delete(listed: dict[str, tuple[str, ...]], now_s: float) -> list[str]:
            return await store.delete_finished(ARN, listed=listed, now_s=now_s, retention_s=RETENTION_S)

        assert await delete({"c": ("p",)}, late_s) == [], "child listed, never started"
        await store.save(ARN, "c", None, parent_shard_id="p")
        assert await delete({"c": ("p",)}, late_s) == [], "a child's position-less checkpoint is no start"
        await store.save(ARN, "c", "10", parent_shard_id="p")
        assert await delete({"p": (), "c": ("p",)}, late_s) == [], "parent still listed by the stream"
        assert await delete({"c": ("p",)}, ended_s + RETENTION_S - 1) == [], "inside retention"
        assert set(await store.load_all(ARN)) == {"p", "c"}
        assert await delete({"c": ("p",)}, late_s) == ["p"]
        assert set(await store.load_all(ARN)) == {"c"}
        assert await delete({"c": ("p",)}, late_s) == [], "idempotent: nothing more to delete"
    finally:
        await store.close()


async def test_an_open_shard_and_an_unlisted_unfinished_one_are_never_deleted(tmp_path: Path) -> None:
    """Only shard-end checkpoints go: one short of shard end (its loss is reported elsewhere) stays."""
    store = await _store(tmp_path)
    try:
        await store.save(ARN, "lost", "5")
        await store.save(ARN, "open", "7")
        deleted = await store.delete_finished(
            ARN, listed={"open": ()}, now_s=time.time() + 10 * RETENTION_S, retention_s=RETENTION_S
        )
        assert deleted == []
        assert set(await store.load_all(ARN)) == {"lost", "open"}
    finally:
        await store.close()


async def test_a_chain_is_deleted_oldest_first_and_stops_at_an_unstarted_child(tmp_path: Path) -> None:
    """Grandparent before parent; a finished shard whose listed child has not started stays."""
    store = await _store(tmp_path)
    try:
        await store.save(ARN, "g", "1", shard_end=True)
        await store.save(ARN, "p", "2", shard_end=True, parent_shard_id="g")
        await store.save(ARN, "c", "3", shard_end=True, parent_shard_id="p")
        now_s = time.time() + RETENTION_S + 1
        listed = {"d": ("c",)}  # c's child is listed and has no checkpoint yet
        deleted = await store.delete_finished(ARN, listed=listed, now_s=now_s, retention_s=RETENTION_S)
        assert deleted == ["g", "p"]
        assert set(await store.load_all(ARN)) == {"c"}
    finally:
        await store.close()


async def test_the_leased_store_leaves_finished_leases_to_the_lease_cleanup() -> None:
    """With leases the store's delete_finished deletes nothing; the lease cleanup deletes the same item once."""
    table, clock = FakeLeaseTable(), ManualClock()
    p, c = Shard("p", None, "1", "9"), Shard("c", "p", "10")
    tree = ShardTree()
    tree.update([p, c])
    cfg = LeaseConfig(enabled=True, finished_retention_s=RETENTION_S, cleanup_interval_s=1.0)
    manager = LeaseManager(table, "leases", stream_arn=ARN, worker_id="A", cfg=cfg, clock=clock, wall=clock)
    await manager.ensure_leases(tree.shards.values())
    assert await manager.rebalance(tree) == ["p"]
    await manager.checkpoint("p", "9", shard_end=True, parent_shard_id=None)
    assert await manager.rebalance(tree) == ["c"]
    tree.prune(["c"])  # the stream trimmed the parent
    clock.now += RETENTION_S + 1
    store = LeasedCheckpointStore(manager)
    listed = {"c": ("p",)}
    assert await store.delete_finished(ARN, listed=listed, now_s=clock.now, retention_s=RETENTION_S) == []
    assert "p" in table.items
    assert await manager.cleanup_if_due(tree) == 1
    assert set(table.items) == {"c"}

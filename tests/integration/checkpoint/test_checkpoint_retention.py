"""Finished checkpoints without leases on DynamoDB Local: items stay bounded over rollovers, deletes are conditional."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from support import ddb_client

from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from replicator_dev.local.dynamodb_local import DynamoDBLocal

    from replicator.checkpoint import Checkpoint

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/T/stream/2026-01-01T00:00:00.000"
RETENTION_S = 100.0
ROLLOVERS = 20
LISTED_GENERATIONS = 3


async def test_checkpoint_items_stay_bounded_over_many_rollovers(
    region_a: DynamoDBLocal, unique_name: Callable[[str], str]
) -> None:
    """Twenty rollovers with three generations listed leave the listed generations' items, not twenty-one."""
    async with ddb_client(region_a) as client:
        store = DynamoDBCheckpointStore(client, unique_name("cp"))
        await store.start()
        await store.save(ARN, "g0", "0")
        for gen in range(1, ROLLOVERS + 1):
            await store.save(ARN, f"g{gen - 1}", str(gen), shard_end=True)
            await store.save(ARN, f"g{gen}", str(gen + 1), parent_shard_id=f"g{gen - 1}")
            first = max(0, gen - LISTED_GENERATIONS + 1)
            listed = {f"g{g}": (f"g{g - 1}",) if g else () for g in range(first, gen + 1)}
            late_s = time.time() + RETENTION_S + 1
            await store.delete_finished(ARN, listed=listed, now_s=late_s, retention_s=RETENTION_S)
            assert set(await store.load_all(ARN)) == set(listed)
        now_s = time.time()
        assert await store.delete_finished(ARN, listed={}, now_s=now_s, retention_s=RETENTION_S) == [], (
            "inside retention nothing goes, listed or not"
        )


async def test_a_delete_holds_only_while_the_item_says_shard_end(
    region_a: DynamoDBLocal, unique_name: Callable[[str], str]
) -> None:
    """An item that no longer says shard end when the delete lands stays (the delete is conditional)."""
    async with ddb_client(region_a) as client:
        store = DynamoDBCheckpointStore(client, unique_name("cp"))
        await store.start()
        await store.save(ARN, "p", "9", shard_end=True)
        await store.save(ARN, "c", "10", parent_shard_id="p")
        stale = await store.load_all(ARN)
        await store.save(ARN, "p", "9")  # saved again short of shard end after the read
        real_load_all = store.load_all

        async def stale_view(stream_arn: str) -> dict[str, Checkpoint]:
            del stream_arn
            return {sid: dataclasses.replace(cp) for sid, cp in stale.items()}

        store.load_all = stale_view  # type: ignore[method-assign]
        late_s = time.time() + RETENTION_S + 1
        deleted = await store.delete_finished(ARN, listed={"c": ("p",)}, now_s=late_s, retention_s=RETENTION_S)
        assert deleted == []
        assert set(await real_load_all(ARN)) == {"p", "c"}

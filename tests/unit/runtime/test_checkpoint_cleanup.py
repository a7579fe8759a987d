"""The coordinator's checkpoint cleanup: once per interval, with the listing's parents, and a failure is not fatal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from support import ManualClock

from replicator.core.config import LeaseConfig
from replicator.runtime.checkpoint_cleanup import CheckpointCleanup
from replicator.source.shards import Shard, ShardTree

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

ARN = "arn:aws:dynamodb:us-east-1:1:table/T/stream/x"


class _Store:
    """Records each delete_finished call; raises on the first when told to."""

    def __init__(self, *, fail_first: bool) -> None:
        self.calls: list[tuple[dict[str, tuple[str, ...]], float, float]] = []
        self.fail_first = fail_first

    async def delete_finished(
        self, stream_arn: str, *, listed: Mapping[str, Sequence[str]], now_s: float, retention_s: float
    ) -> list[str]:
        del stream_arn
        self.calls.append(({sid: tuple(p) for sid, p in listed.items()}, now_s, retention_s))
        if self.fail_first and len(self.calls) == 1:
            raise ConnectionError
        return ["p"]


async def test_cleanup_runs_once_per_interval_with_the_listing_and_survives_a_failure() -> None:
    """Nothing before the interval; a failed sweep returns nothing and the next interval sweeps again."""
    clock = ManualClock()
    cleanup = CheckpointCleanup(
        LeaseConfig(finished_retention_s=50.0, cleanup_interval_s=10.0), clock=clock, wall=lambda: 7.0
    )
    tree = ShardTree()
    tree.update([Shard("c", "p", "10"), Shard("m", "c", "20", adjacent_parent_shard_id="d")])
    store = _Store(fail_first=True)
    assert await cleanup.run_if_due(store, ARN, tree) == []  # type: ignore[arg-type]
    assert store.calls == []
    clock.now += 10
    assert await cleanup.run_if_due(store, ARN, tree) == []  # type: ignore[arg-type]
    assert store.calls == [({"c": ("p",), "m": ("c", "d")}, 7.0, 50.0)]
    assert await cleanup.run_if_due(store, ARN, tree) == []  # type: ignore[arg-type]
    assert len(store.calls) == 1, "not again inside the interval"
    clock.now += 10
    assert await cleanup.run_if_due(store, ARN, tree) == ["p"]  # type: ignore[arg-type]

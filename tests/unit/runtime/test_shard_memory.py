"""A worker's per-shard memory follows the listed shards: trimmed shards leave the tree and the worker state."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from scripted_stream import RecordingTarget, ScriptedStream

from replicator.aws.clients import Clients, TargetClient
from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.runtime.service import Replicator

if TYPE_CHECKING:
    from pathlib import Path

ROLLOVERS = 30
LISTED_GENERATIONS = 3


async def test_trimmed_shards_leave_the_worker_state_across_many_rollovers(tmp_path: Path) -> None:
    """After 30 rollovers with 3 generations listed, the worker keeps a few shards, not all 31."""
    cfg = Config(
        source={"region": "us-east-1", "table": "Orders"},
        target={"region": "eu-west-1", "table": "Orders"},
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        metrics={"enabled": False},
        reader={"poll_interval_s": 0.01, "max_idle_poll_interval_s": 0.02, "shard_discovery_interval_s": 0.05},
    )
    stream, target = ScriptedStream(), RecordingTarget()
    clients = Clients(source=stream, streams=stream, target=TargetClient(target))  # type: ignore[arg-type]
    replicator = Replicator(cfg, metrics=Metrics(), clients=clients)
    stream.add_shard("g0")
    task = asyncio.create_task(replicator.run())
    try:
        async with asyncio.timeout(60):
            for gen in range(1, ROLLOVERS + 1):
                stream.roll(gen, listed_generations=LISTED_GENERATIONS)
                while target.values_of("k")[-1:] != [gen]:
                    assert not task.done(), task
                    await asyncio.sleep(0.01)
            # Let discovery run a few more times so the last trimmed shards are forgotten.
            await stream.listed_again()
    finally:
        replicator.stop()
        await task
    assert target.values_of("k") == list(range(1, ROLLOVERS + 1))
    assert len(replicator.state.shards) <= LISTED_GENERATIONS + 1, sorted(replicator.state.shards)

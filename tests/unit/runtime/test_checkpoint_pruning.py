"""Without leases, stored checkpoints follow the listed shards: finished ones go, and a restart reads nothing twice."""

from __future__ import annotations

import asyncio
import sqlite3
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


def _config(tmp_path: Path, **leases: float) -> Config:
    return Config(
        source={"region": "us-east-1", "table": "Orders"},
        target={"region": "eu-west-1", "table": "Orders"},
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        metrics={"enabled": False},
        reader={"poll_interval_s": 0.01, "max_idle_poll_interval_s": 0.02, "shard_discovery_interval_s": 0.05},
        leases=leases,
    )


def _rows(tmp_path: Path) -> set[str]:
    with sqlite3.connect(tmp_path / "cp.db") as conn:
        return {row[0] for row in conn.execute("SELECT shard_id FROM checkpoints")}


def _replicator(cfg: Config, stream: ScriptedStream, target: RecordingTarget, metrics: Metrics) -> Replicator:
    clients = Clients(source=stream, streams=stream, target=TargetClient(target))  # type: ignore[arg-type]
    return Replicator(cfg, metrics=metrics, clients=clients)


async def _wait_for(target: RecordingTarget, value: int, task: asyncio.Task[None]) -> None:
    while target.values_of("k")[-1:] != [value]:
        assert not task.done(), task
        await asyncio.sleep(0.01)


async def _roll(stream: ScriptedStream, target: RecordingTarget, task: asyncio.Task[None]) -> None:
    """Thirty rollovers, the stream listing the last three generations; one change per generation."""
    for gen in range(1, ROLLOVERS + 1):
        stream.roll(gen, listed_generations=LISTED_GENERATIONS)
        await _wait_for(target, gen, task)


async def test_finished_checkpoints_stay_bounded_and_a_restart_reads_nothing_again(tmp_path: Path) -> None:
    """30 rollovers leave the listed shards' rows only; a restart re-reads none and raises no trimmed alarm."""
    cfg = _config(tmp_path, finished_retention_s=0.001, cleanup_interval_s=0.05)
    stream, target, metrics = ScriptedStream(), RecordingTarget(), Metrics()
    replicator = _replicator(cfg, stream, target, metrics)
    stream.add_shard("g0")
    task = asyncio.create_task(replicator.run())
    try:
        async with asyncio.timeout(60):
            await _roll(stream, target, task)
            # Cleanup runs with discovery: wait until it caught up with the last trimmed generation.
            while f"g{ROLLOVERS - LISTED_GENERATIONS}" in _rows(tmp_path):
                assert not task.done(), task
                await asyncio.sleep(0.01)
    finally:
        replicator.stop()
        await task
    # The open shard has a row once a record of it is done.
    listed = {f"g{gen}" for gen in range(ROLLOVERS - LISTED_GENERATIONS + 1, ROLLOVERS + 1)}
    assert listed - {f"g{ROLLOVERS}"} <= _rows(tmp_path) <= listed

    metrics = Metrics()
    again = _replicator(cfg, stream, target, metrics)
    task = asyncio.create_task(again.run())
    try:
        async with asyncio.timeout(60):
            stream.put(f"g{ROLLOVERS}", "k", ROLLOVERS + 1)
            await _wait_for(target, ROLLOVERS + 1, task)
    finally:
        again.stop()
        await task
    assert target.values_of("k") == list(range(1, ROLLOVERS + 2)), "a shard was read again"
    assert (metrics.registry.get_sample_value("replicator_errors_total", {"kind": "trimmed_data"}) or 0.0) == 0


async def test_nothing_is_deleted_before_the_retention(tmp_path: Path) -> None:
    """With the default retention (a day), every finished shard's row stays however often cleanup runs."""
    cfg = _config(tmp_path, cleanup_interval_s=0.01)
    stream, target = ScriptedStream(), RecordingTarget()
    replicator = _replicator(cfg, stream, target, Metrics())
    stream.add_shard("g0")
    task = asyncio.create_task(replicator.run())
    try:
        async with asyncio.timeout(60):
            await _roll(stream, target, task)
            await stream.listed_again()
    finally:
        replicator.stop()
        await task
    assert _rows(tmp_path) >= {f"g{gen}" for gen in range(ROLLOVERS)}

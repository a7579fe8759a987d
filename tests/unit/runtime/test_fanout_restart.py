"""Review of fan-out restarts: per-target checkpoints across a restart, and changes of the target list."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from unit.runtime.fanout_kit import SHARD, Target, seqs, sqlite, stream_of, until, wire

from replicator.checkpoint import for_one_target
from replicator.core.config import ReaderConfig
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.observe.state import WorkerState
from replicator.runtime.consumer import ReaderSettings, ShardReader
from replicator.runtime.fanout_reader import run_fanned_out
from replicator.source.shards import Shard
from replicator.source.streams import StreamsSource

if TYPE_CHECKING:
    from pathlib import Path

    from scripted_stream import ScriptedStream

    from replicator.checkpoint import Checkpoint
    from replicator.checkpoint.sqlite import SqliteCheckpointStore


async def test_latest_restart_after_a_target_that_never_wrote_loses_the_healthy_targets_records(
    tmp_path: Path,
) -> None:
    """starting_position LATEST, one target stuck before its first write: a restart must not skip a's records."""
    stream = stream_of(0, closed=False)
    store = await sqlite(tmp_path)
    fast, stuck = Target(), Target(hold_after=0)
    for i in range(50):
        stream.put(SHARD, f"k{i % 5}", i)
    # The first run read from the shard's start (the checkpoint it leaves is the same with LATEST).
    fanout, reader = wire(stream, {"a": fast, "b": stuck}, store)
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await until(lambda: fast.written == seqs(1, 50), task)
    task.cancel()  # a shutdown: target a wrote 1..50 and saved it
    await asyncio.gather(task, return_exceptions=True)
    saved = (await store.load_all(stream.arn))[SHARD]
    assert saved.targets == {"a": f"{50:021d}"}

    for i in range(50, 80):  # written to the source while the worker is down
        stream.put(SHARD, f"k{i % 5}", i)
    stream.close(SHARD)
    fast2, stuck2 = Target(), Target()
    fanout2, reader2 = wire(stream, {"a": fast2, "b": stuck2}, store, checkpoint=saved, initial_position="LATEST")
    assert await asyncio.wait_for(run_fanned_out(fanout2, reader2), 20) == "shard_end"
    # Target a had written 1..50: it must get 51..80, as one target alone would after a restart.
    assert fast2.written == seqs(51, 80)


async def _two_targets_then_stop(tmp_path: Path) -> tuple[ScriptedStream, SqliteCheckpointStore, Checkpoint]:
    """A fan-out run to a and b stopped with a at 100 and b at 30: the saved checkpoint."""
    stream = stream_of(100, closed=False)
    store = await sqlite(tmp_path)
    fast, slow = Target(), Target(hold_after=30)
    fanout, reader = wire(stream, {"a": fast, "b": slow}, store)
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await until(lambda: fast.written == seqs(1, 100) and slow.waiting, task)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    saved = (await store.load_all(stream.arn))[SHARD]
    assert saved.targets == {"a": f"{100:021d}", "b": f"{30:021d}"}
    return stream, store, saved


async def test_removing_all_but_one_target_resumes_it_from_its_own_position(tmp_path: Path) -> None:
    """Targets [a, b] then target a alone: a resumes after its own 100, not the slowest's 30 (no rewrite)."""
    stream, store, saved = await _two_targets_then_stop(tmp_path)
    stream.close(SHARD)
    only = Target()
    # One target: the coordinator runs a plain ShardReader with the shard's checkpoint.
    reader = ShardReader(
        api=StreamsSource(stream, stream),
        stream_arn=stream.arn,
        shard=Shard(SHARD, None, "1"),
        checkpoint=for_one_target(saved, "a"),  # what the coordinator passes with one target
        store=store,
        processor=only,  # type: ignore[arg-type]
        state=WorkerState(Metrics()),
        metrics=Metrics(),
        settings=ReaderSettings(
            reader=ReaderConfig(poll_interval_s=0, max_idle_poll_interval_s=0.01, get_records_limit=10),
            batch_size=10,
            initial_position="TRIM_HORIZON",
        ),
        retry_policy=RetryPolicy(max_attempts=1),
        stop=asyncio.Event(),
    )
    assert await asyncio.wait_for(reader.run(), 20) == "shard_end"
    assert only.written == []  # a wrote 1..100 already

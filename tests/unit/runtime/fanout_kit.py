"""Scaffolding for the fan-out review tests: a scripted stream, target doubles and a wired ShardFanOut."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from scripted_stream import ScriptedStream

from replicator.checkpoint.sqlite import SqliteCheckpointStore
from replicator.core.config import FanOutConfig, ReaderConfig
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.observe.state import WorkerState
from replicator.runtime.consumer import ReaderSettings, ShardReader
from replicator.runtime.fanout_reader import MainReaderState, MainReaderStore
from replicator.runtime.shard_fanout import ShardFanOut
from replicator.source.shards import Shard
from replicator.source.streams import StreamsSource

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from replicator.checkpoint import Checkpoint, CheckpointStore
    from replicator.core.records import ChangeRecord

SHARD = "s1"
BOUND = 2


class Health:
    """What the fan-out reads of a target's ``TargetHealth``."""

    unavailable_code: str | None = None


class Target:
    """A target's processor: records what it wrote, in order; ``hold_after`` makes writes wait for ``release``."""

    def __init__(self, *, hold_after: int | None = None, dead_letter_error: BaseException | None = None) -> None:
        """Free, or held once ``hold_after`` records are written; ``dead_letter_error``: the destination fails."""
        self.written: list[int] = []
        self.dead_lettered: list[int] = []
        self.target = Health()
        self.gate = asyncio.Event()
        self.hold_after = hold_after
        self.waiting = False
        self.dead_letter_error = dead_letter_error
        if hold_after is None:
            self.gate.set()

    def release(self) -> None:
        """Let held writes through and call the target available."""
        self.gate.set()
        self.target.unavailable_code = None

    async def process(self, records: Sequence[ChangeRecord]) -> None:
        """Write (record) the batch, waiting at the gate once ``hold_after`` records are written."""
        if self.hold_after is not None and len(self.written) >= self.hold_after:
            self.waiting = True
            await self.gate.wait()
            self.waiting = False
        await asyncio.sleep(0)
        self.written.extend(int(r.sequence_number) for r in records)

    async def dead_letter_all(self, records: Sequence[ChangeRecord], error: BaseException) -> None:
        """Dead-letter (record) the batch, or fail as the destination would."""
        del error
        if self.dead_letter_error is not None:
            raise self.dead_letter_error
        self.dead_lettered.extend(int(r.sequence_number) for r in records)


class YieldingStream(ScriptedStream):
    """Yields to the loop on every GetRecords, as a network call would (an idle open shard must not spin)."""

    async def get_records(self, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:  # noqa: N803
        """GetRecords after a yield."""
        await asyncio.sleep(0.001)
        return await super().get_records(ShardIterator, Limit)


def stream_of(records: int, *, closed: bool = True) -> ScriptedStream:
    """A one-shard stream with ``records`` records (sequence numbers 1..records)."""
    stream = YieldingStream()
    stream.add_shard(SHARD)
    for i in range(records):
        stream.put(SHARD, f"k{i % 5}", i)
    if closed:
        stream.close(SHARD)
    return stream


def wire(
    stream: ScriptedStream,
    targets: dict[str, Target],
    store: CheckpointStore,
    *,
    checkpoint: Checkpoint | None = None,
    initial_position: Any = "TRIM_HORIZON",
    on_shard_end: Any = "wait",
    api: Any = None,
) -> tuple[ShardFanOut, ShardReader]:
    """A shard's fan-out and its reader, wired as the coordinator does."""
    metrics = Metrics()
    state = WorkerState(metrics)
    source = api or StreamsSource(stream, stream)
    settings = ReaderSettings(
        reader=ReaderConfig(poll_interval_s=0, max_idle_poll_interval_s=0.01, get_records_limit=10),
        batch_size=10,
        initial_position=initial_position,
    )
    shard = Shard(SHARD, None, "1")
    fanout = ShardFanOut(
        api=source,
        settings=settings,
        stream_arn=stream.arn,
        shard=shard,
        checkpoint=checkpoint,
        processors=targets,  # type: ignore[arg-type]
        store=store,
        state=state,
        metrics=metrics,
        cfg=FanOutConfig(max_buffered_batches=BOUND, detach_after_s=0.05),
        retry_policy=RetryPolicy(max_attempts=1),
    )
    fanout.on_shard_end = on_shard_end
    reader = ShardReader(
        api=source,
        stream_arn=stream.arn,
        shard=shard,
        checkpoint=checkpoint,
        store=MainReaderStore(fanout),
        processor=fanout,
        state=MainReaderState(state),
        metrics=metrics,
        settings=settings,
        retry_policy=RetryPolicy(max_attempts=1),
        stop=asyncio.Event(),
    )
    return fanout, reader


async def until(condition: Callable[[], bool], task: asyncio.Task[Any] | None = None) -> None:
    """Wait for ``condition`` (re-raising the task's error if it ends first)."""
    async with asyncio.timeout(20):
        while not condition():
            if task is not None and task.done():
                task.result()
            await asyncio.sleep(0.005)


async def sqlite(tmp_path: Path) -> SqliteCheckpointStore:
    """A started SQLite checkpoint store."""
    store = SqliteCheckpointStore(tmp_path / "cp.db")
    await store.start()
    return store


def seqs(first: int, last: int) -> list[int]:
    """Sequence numbers first..last."""
    return list(range(first, last + 1))

"""failure.parallelization_factor: lanes by key, batches in flight, and the checkpoint rule."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from scripted_stream import ScriptedStream

from replicator.core.config import ReaderConfig
from replicator.core.records import ChangeRecord
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.observe.state import WorkerState
from replicator.runtime.consumer import CheckpointTracker, ReaderSettings, ShardReader, lane_of
from replicator.source.shards import Shard
from replicator.source.streams import StreamsSource

if TYPE_CHECKING:
    from collections.abc import Sequence


def test_checkpoint_stops_below_first_unfinished_record() -> None:
    """Out-of-order completion moves the checkpoint only over the all-done prefix."""
    tracker = CheckpointTracker()
    tracker.add(["1", "2", "3", "4", "5"])
    tracker.done(["2", "4"])
    assert tracker.advance() is None
    tracker.done(["1"])
    assert tracker.advance() == "2"
    tracker.done(["5"])
    assert tracker.advance() is None
    tracker.done(["3"])
    assert tracker.advance() == "5"
    assert tracker.pending == 0


def test_lane_is_a_function_of_the_key() -> None:
    """Every change of one key goes to the same lane; keys spread over the lanes."""

    def record(key: str, seq: int) -> ChangeRecord:
        return ChangeRecord("MODIFY", {"pk": {"S": key}}, None, None, str(seq), 0.0, "s", {})

    lanes = {lane_of(record(f"k{i}", i), 4) for i in range(100)}
    assert lanes == {0, 1, 2, 3}
    assert {lane_of(record("same", i), 4) for i in range(20)} == {lane_of(record("same", 0), 4)}


class _Store:
    """Checks, at every save, that each record up to the checkpoint was processed."""

    def __init__(self, processed: set[str]) -> None:
        self.processed = processed
        self.saved: list[str] = []

    async def save(self, stream_arn: str, shard_id: str, seq: str | None, **_: Any) -> None:
        del stream_arn, shard_id
        if seq is None:
            return
        assert all(f"{i:021d}" in self.processed for i in range(1, int(seq) + 1)), (
            f"checkpoint {seq} passes undone records"
        )
        self.saved.append(seq)


class _Processor:
    """Slow on some keys, records per-key order and how many batches overlap; may fail on one record."""

    def __init__(self, fail_seq: str | None = None) -> None:
        self.processed: set[str] = set()
        self.order: dict[str, list[int]] = {}
        self.running = 0
        self.max_running = 0
        self.fail_seq = fail_seq

    async def process(self, records: Sequence[ChangeRecord]) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            slow = any(r.keys["pk"]["S"] in {"k0", "k3"} for r in records)
            await asyncio.sleep(0.02 if slow else 0.001)
            for r in records:
                if r.sequence_number == self.fail_seq:
                    raise RuntimeError("boom")
                self.order.setdefault(r.keys["pk"]["S"], []).append(int(r.sequence_number))
                self.processed.add(r.sequence_number)
        finally:
            self.running -= 1


def _reader(stream: ScriptedStream, processor: _Processor, store: _Store, factor: int) -> ShardReader:
    metrics = Metrics()
    return ShardReader(
        api=StreamsSource(stream, stream),
        stream_arn=stream.arn,
        shard=Shard("s1", None, "1"),
        checkpoint=None,
        store=store,  # type: ignore[arg-type]
        processor=processor,  # type: ignore[arg-type]
        state=WorkerState(metrics),
        metrics=metrics,
        settings=ReaderSettings(
            reader=ReaderConfig(poll_interval_s=0, max_idle_poll_interval_s=0, get_records_limit=10),
            batch_size=10,
            initial_position="TRIM_HORIZON",
            parallelization_factor=factor,
        ),
        retry_policy=RetryPolicy(max_attempts=1),
        stop=asyncio.Event(),
    )


def _stream(records: int, keys: int) -> ScriptedStream:
    stream = ScriptedStream()
    stream.add_shard("s1")
    for i in range(records):
        stream.put("s1", f"k{i % keys}", i)
    stream.close("s1")
    return stream


async def test_lanes_keep_key_order_and_checkpoint_safely() -> None:
    """Factor 4: batches overlap, each key's changes run in order, checkpoints never pass undone records."""
    processor = _Processor()
    store = _Store(processor.processed)
    reader = _reader(_stream(200, 7), processor, store, factor=4)
    assert await asyncio.wait_for(reader.run(), 10) == "shard_end"
    assert len(processor.processed) == 200
    assert processor.max_running > 1
    for seqs in processor.order.values():
        assert seqs == sorted(seqs)
    assert store.saved[-1] == f"{200:021d}"
    assert store.saved == sorted(store.saved)


async def test_failed_lane_stops_the_shard_below_the_failure() -> None:
    """A lane's failure ends the reader with that error; the checkpoint stays below the failed record."""
    fail = f"{57:021d}"
    processor = _Processor(fail_seq=fail)
    store = _Store(processor.processed)
    reader = _reader(_stream(200, 7), processor, store, factor=4)
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(reader.run(), 10)
    assert fail not in processor.processed
    assert all(seq < fail for seq in store.saved)


class _HangingProcessor:
    """The target is down: every sub-batch retries until cancelled."""

    def __init__(self) -> None:
        self.processed: set[str] = set()
        self.cancelled = 0

    async def process(self, records: list[Any]) -> None:
        del records
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_cancelling_a_reader_cancels_every_lane_task() -> None:
    """Shutdown's cancel reaches the sub-batch actually writing, not only each lane's last task."""
    processor = _HangingProcessor()
    reader = _reader(_stream(60, 2), processor, _Store(processor.processed), factor=2)
    task = asyncio.create_task(reader.run())
    await asyncio.sleep(0.3)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done, "reader.run() did not return after cancel"
    assert processor.cancelled >= 1  # the sub-batch that was writing, not just a lane tail


class _FailFastProcessor:
    """Fails at once on key k0; every other sub-batch takes half a second."""

    def __init__(self) -> None:
        self.processed: set[str] = set()
        self.finished_at: list[float] = []

    async def process(self, records: list[Any]) -> None:
        if any(r.keys["pk"]["S"] == "k0" for r in records):
            await asyncio.sleep(0.01)
            raise RuntimeError("poison")
        await asyncio.sleep(0.5)
        self.finished_at.append(time.monotonic())
        self.processed.update(r.sequence_number for r in records)


async def test_a_failed_lane_leaves_no_sub_batch_running_after_the_reader_returns() -> None:
    """When one lane fails, its sibling sub-batches finish or are cancelled before run() raises."""
    processor = _FailFastProcessor()
    reader = _reader(_stream(20, 2), processor, _Store(processor.processed), factor=2)
    with pytest.raises(RuntimeError, match="poison"):
        await reader.run()
    ended = time.monotonic()
    await asyncio.sleep(1.0)
    assert [t for t in processor.finished_at if t > ended] == []

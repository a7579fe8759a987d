"""Fan-out per target: bounded queues, detach, catch-up within two readers per shard, per-target checkpoints."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from fake_lease_table import FakeLeaseTable
from scripted_stream import ScriptedStream

from replicator.checkpoint import Checkpoint, CheckpointStore
from replicator.checkpoint.dynamodb import targets_of
from replicator.checkpoint.leases import LeasedCheckpointStore, LeaseManager
from replicator.checkpoint.sqlite import SqliteCheckpointStore
from replicator.core.config import FanOutConfig, LeaseConfig, ReaderConfig
from replicator.core.errors import TargetDetachedError
from replicator.core.retry import RetryPolicy
from replicator.observe.metrics import Metrics
from replicator.observe.state import WorkerState
from replicator.runtime.consumer import ReaderSettings, ShardReader
from replicator.runtime.fanout_reader import MainReaderState, MainReaderStore, run_fanned_out
from replicator.runtime.shard_fanout import ShardFanOut
from replicator.source.shards import Shard, ShardTree
from replicator.source.streams import StreamsSource

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from replicator.core.records import ChangeRecord

SHARD = "s1"
BOUND = 2


class _Health:
    """What the fan-out reads of a target's ``TargetHealth``."""

    unavailable_code: str | None = None


class _Target:
    """A target's processor: records what it wrote, in order; ``hold`` makes writes wait until released."""

    def __init__(self, *, held: bool = False, hold_after: int | None = None) -> None:
        self.written: list[int] = []
        self.target = _Health()
        self.gate = asyncio.Event()
        self.hold_after = 0 if held else hold_after
        """Records written before writes start to wait for ``release``."""
        self.waiting = False
        self.dead_lettered: list[int] = []
        if self.hold_after is None:
            self.gate.set()

    def release(self) -> None:
        self.gate.set()
        self.target.unavailable_code = None

    async def process(self, records: Sequence[ChangeRecord]) -> None:
        if self.hold_after is not None and len(self.written) >= self.hold_after:
            self.waiting = True
            await self.gate.wait()
            self.waiting = False
        await asyncio.sleep(0)
        self.written.extend(int(r.sequence_number) for r in records)

    async def dead_letter_all(self, records: Sequence[ChangeRecord], error: BaseException) -> None:
        assert isinstance(error, TargetDetachedError)
        self.dead_lettered.extend(int(r.sequence_number) for r in records)


class _CountingStream(ScriptedStream):
    """Tags every iterator with the reader chain it belongs to, to count readers of a shard at once."""

    def __init__(self) -> None:
        super().__init__()
        self.chains = 0
        self.calls: list[int] = []

    async def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        out = await super().get_shard_iterator(**kwargs)
        self.chains += 1
        return {"ShardIterator": f"{out['ShardIterator']}#{self.chains}"}

    async def get_records(self, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:  # noqa: N803
        inner, chain = ShardIterator.split("#")
        self.calls.append(int(chain))
        await asyncio.sleep(0)
        out = await super().get_records(inner, Limit)
        if "NextShardIterator" in out:
            out["NextShardIterator"] = f"{out['NextShardIterator']}#{chain}"
        return out

    def max_concurrent_readers(self) -> int:
        """The most reader chains live at once: a chain lives from its first GetRecords to its last."""
        spans: dict[int, list[int]] = {}
        for index, chain in enumerate(self.calls):
            spans.setdefault(chain, [index, index])[1] = index
        return max(sum(1 for a, b in spans.values() if a <= i <= b) for i in range(len(self.calls)))


def _stream(records: int, *, closed: bool = True) -> _CountingStream:
    stream = _CountingStream()
    stream.add_shard(SHARD)
    for i in range(records):
        stream.put(SHARD, f"k{i % 5}", i)
    if closed:
        stream.close(SHARD)
    return stream


def _fanout(
    stream: ScriptedStream,
    targets: dict[str, _Target],
    store: CheckpointStore,
    *,
    checkpoint: Checkpoint | None = None,
    stop: asyncio.Event | None = None,
) -> tuple[ShardFanOut, ShardReader, WorkerState]:
    metrics = Metrics()
    state = WorkerState(metrics)
    api = StreamsSource(stream, stream)
    settings = ReaderSettings(
        reader=ReaderConfig(poll_interval_s=0, max_idle_poll_interval_s=0.01, get_records_limit=10),
        batch_size=10,
        initial_position="TRIM_HORIZON",
    )
    shard = Shard(SHARD, None, "1")
    fanout = ShardFanOut(
        api=api,
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
    reader = ShardReader(
        api=api,
        stream_arn=stream.arn,
        shard=shard,
        checkpoint=checkpoint,
        store=MainReaderStore(fanout),
        processor=fanout,
        state=MainReaderState(state),
        metrics=metrics,
        settings=settings,
        retry_policy=RetryPolicy(max_attempts=1),
        stop=stop or asyncio.Event(),
    )
    return fanout, reader, state


async def _until(condition: Callable[[], bool], task: asyncio.Task[Any] | None = None) -> None:
    async with asyncio.timeout(20):
        while not condition():
            if task is not None and task.done():
                task.result()
            await asyncio.sleep(0.005)


async def _sqlite(tmp_path: Path) -> SqliteCheckpointStore:
    store = SqliteCheckpointStore(tmp_path / "cp.db")
    await store.start()
    return store


def _all(records: int) -> list[int]:
    return list(range(1, records + 1))


async def test_held_target_is_detached_the_other_flows_then_catches_up_exactly_once(tmp_path: Path) -> None:
    """One target held: the other writes everything; queue within bound; then catch-up, nothing lost or twice."""
    stream = _stream(200)
    healthy, held = _Target(), _Target(hold_after=3)
    store = await _sqlite(tmp_path)
    fanout, reader, state = _fanout(stream, {"a": healthy, "b": held}, store)
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await _until(lambda: healthy.written == _all(200), task)
    lane = fanout.lanes["b"]
    assert not lane.attached
    assert lane.detached_count == 1
    assert held.waiting
    assert state.shards[SHARD].targets["b"].attached is False
    checkpoints = await store.load_all(stream.arn)
    assert checkpoints[SHARD].targets["a"] == f"{200:021d}"
    assert checkpoints[SHARD].sequence_number == checkpoints[SHARD].targets["b"]
    assert not checkpoints[SHARD].shard_end  # the held target has not finished the shard
    held.release()
    assert await asyncio.wait_for(task, 20) == "shard_end"
    assert held.written == _all(200)
    assert healthy.written == _all(200)
    assert all(lane.max_queued <= BOUND for lane in fanout.lanes.values())
    assert fanout.max_readers == 2
    assert stream.max_concurrent_readers() <= 2
    final = (await store.load_all(stream.arn))[SHARD]
    assert final.shard_end
    assert final.targets == {"a": f"{200:021d}", "b": f"{200:021d}"}
    assert state.shards[SHARD].targets["b"].attached is True


async def test_catch_up_rejoins_a_shard_still_being_written(tmp_path: Path) -> None:
    """Records keep coming during the catch-up: the target rejoins the reader with no gap and no duplicate."""
    stream = _stream(100, closed=False)
    healthy, held = _Target(), _Target(hold_after=2)
    fanout, reader, _ = _fanout(stream, {"a": healthy, "b": held}, await _sqlite(tmp_path))
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await _until(lambda: len(healthy.written) == 100 and not fanout.lanes["b"].attached, task)
    held.release()
    for i in range(100, 300):
        stream.put(SHARD, f"k{i % 5}", i)
        if i % 20 == 0:
            await asyncio.sleep(0.001)
    stream.close(SHARD)
    assert await asyncio.wait_for(task, 20) == "shard_end"
    assert healthy.written == _all(300)
    assert held.written == _all(300)
    assert fanout.lanes["b"].attached


async def test_two_held_targets_take_turns_with_one_catch_up_reader(tmp_path: Path) -> None:
    """Three targets, two held: both detached, yet never more than two readers of the shard at once."""
    stream = _stream(150)
    targets = {"a": _Target(), "b": _Target(hold_after=1), "c": _Target(hold_after=2)}
    fanout, reader, _ = _fanout(stream, targets, await _sqlite(tmp_path))
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await _until(lambda: targets["a"].written == _all(150), task)
    assert not fanout.lanes["b"].attached
    assert not fanout.lanes["c"].attached
    targets["b"].release()
    targets["c"].release()
    assert await asyncio.wait_for(task, 20) == "shard_end"
    for target in targets.values():
        assert target.written == _all(150)
    assert fanout.max_readers == 2
    assert stream.max_concurrent_readers() <= 2


async def test_unavailable_target_is_detached_without_waiting_out_the_bound(tmp_path: Path) -> None:
    """A full queue of a target its health calls unavailable detaches at once, whatever detach_after_s says."""
    stream = _stream(60)
    healthy, held = _Target(), _Target(held=True)
    held.target.unavailable_code = "ResourceNotFoundException"
    fanout, reader, _ = _fanout(stream, {"a": healthy, "b": held}, await _sqlite(tmp_path))
    fanout.detach_after_s = 3600.0
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await _until(lambda: healthy.written == _all(60), task)
    assert not fanout.lanes["b"].attached
    held.release()
    assert await asyncio.wait_for(task, 20) == "shard_end"
    assert held.written == _all(60)


async def _lease_store() -> LeasedCheckpointStore:
    table = FakeLeaseTable()
    manager = LeaseManager(
        table,  # type: ignore[arg-type]
        "cp",
        stream_arn=ScriptedStream().arn,
        worker_id="w1",
        cfg=LeaseConfig(enabled=True),
    )
    shard = Shard(SHARD, None, "1")
    tree = ShardTree()
    tree.update([shard])
    await manager.ensure_leases([shard])
    assert await manager.rebalance(tree) == [SHARD]
    return LeasedCheckpointStore(manager)


@pytest.mark.parametrize("backend", ["sqlite", "leases"])
async def test_restart_resumes_each_target_from_its_own_checkpoint(tmp_path: Path, backend: str) -> None:
    """After a restart the reader starts at the slowest target and each target skips what it already wrote."""
    stream = _stream(100, closed=False)
    store: CheckpointStore = await _sqlite(tmp_path) if backend == "sqlite" else await _lease_store()
    fast, slow = _Target(), _Target(hold_after=30)
    fanout, reader, _ = _fanout(stream, {"a": fast, "b": slow}, store)
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await _until(lambda: fast.written == _all(100) and slow.waiting, task)
    task.cancel()  # the shutdown's drain timeout: the held write is abandoned, and read again after restart
    await asyncio.gather(task, return_exceptions=True)
    assert slow.written == _all(30)
    saved = (await store.load_all(stream.arn))[SHARD]
    assert saved.targets == {"a": f"{100:021d}", "b": f"{30:021d}"}
    assert saved.sequence_number == f"{30:021d}"

    for i in range(100, 120):
        stream.put(SHARD, f"k{i % 5}", i)
    stream.close(SHARD)
    fast2, slow2 = _Target(), _Target()
    fanout2, reader2, _ = _fanout(stream, {"a": fast2, "b": slow2}, store, checkpoint=saved)
    stream.iterator_requests.clear()
    assert await asyncio.wait_for(run_fanned_out(fanout2, reader2), 20) == "shard_end"
    assert stream.iterator_requests[0] == (SHARD, "AFTER_SEQUENCE_NUMBER", f"{30:021d}")
    assert fast2.written == list(range(101, 121))
    assert slow.written + slow2.written == _all(120)
    if isinstance(store, LeasedCheckpointStore):
        # A finished lease reads as plain shard end (its item left the live index): look at the item.
        item = store.manager.table.client.items[SHARD]  # type: ignore[attr-defined]
        assert item["shardEnd"] == {"BOOL": True}
        assert targets_of(item) == {"a": f"{120:021d}", "b": f"{120:021d}"}
    else:
        final = (await store.load_all(stream.arn))[SHARD]
        assert final.shard_end
        assert final.targets == {"a": f"{120:021d}", "b": f"{120:021d}"}


async def test_a_failing_target_stops_the_shard_with_its_error(tmp_path: Path) -> None:
    """A target's writer failing (a poison record, a lost lease) ends the shard's reader with that error."""

    class _Failing(_Target):
        async def process(self, records: Sequence[ChangeRecord]) -> None:
            del records
            raise RuntimeError("poison")

    stream = _stream(50, closed=False)
    fanout, reader, _ = _fanout(stream, {"a": _Target(), "b": _Failing()}, await _sqlite(tmp_path))
    with pytest.raises(RuntimeError, match="poison"):
        await asyncio.wait_for(run_fanned_out(fanout, reader), 20)
    assert not fanout._tasks


class _ExpiringStream(_CountingStream):
    """The first iterator of the catch-up reader (the second reader chain) has expired when it is used."""

    async def get_records(self, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:  # noqa: N803
        if ShardIterator.endswith("#2"):
            raise ClientError({"Error": {"Code": "ExpiredIteratorException", "Message": "m"}}, "GetRecords")
        return await super().get_records(ShardIterator, Limit)


async def test_catch_up_reader_renews_an_expired_iterator_from_the_targets_checkpoint(tmp_path: Path) -> None:
    """An expired iterator in the catch-up is re-acquired after the target's own position: nothing lost."""
    stream = _ExpiringStream()
    stream.add_shard(SHARD)
    for i in range(80):
        stream.put(SHARD, f"k{i % 5}", i)
    stream.close(SHARD)
    healthy, held = _Target(), _Target(hold_after=20)
    fanout, reader, _ = _fanout(stream, {"a": healthy, "b": held}, await _sqlite(tmp_path))
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await _until(lambda: healthy.written == _all(80) and not fanout.lanes["b"].attached and held.waiting, task)
    held.release()
    assert await asyncio.wait_for(task, 20) == "shard_end"
    assert held.written == _all(80)
    position = fanout.lanes["b"].position
    assert position == f"{80:021d}"
    after = [req for req in stream.iterator_requests if req[1] == "AFTER_SEQUENCE_NUMBER"]
    assert len(after) == 2  # the catch-up's first iterator, then its renewal from the same position
    assert after[0] == after[1]


async def test_stopping_does_not_wait_out_a_full_queue(tmp_path: Path) -> None:
    """Told to stop while a held target's queue is full, the reader gives up waiting and the others drain."""
    stream = _stream(100, closed=False)
    healthy, held = _Target(), _Target(hold_after=10)
    stop = asyncio.Event()
    store = await _sqlite(tmp_path)
    fanout, reader, _ = _fanout(stream, {"a": healthy, "b": held}, store, stop=stop)
    fanout.detach_after_s = 3600.0
    fanout.stop = stop
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await _until(lambda: held.waiting and len(fanout.lanes["b"].queue) == BOUND, task)
    stop.set()
    await _until(lambda: not fanout.lanes["b"].attached and fanout.lanes["a"].idle, task)
    assert healthy.written == _all(int(fanout.handed or 0))
    task.cancel()  # the held write: the shutdown's drain timeout
    await asyncio.gather(task, return_exceptions=True)
    saved = (await store.load_all(stream.arn))[SHARD]
    assert saved.targets == {"a": fanout.handed, "b": f"{10:021d}"}


@pytest.mark.parametrize("stuck", ["held", "unavailable"])
async def test_dead_letter_policy_ends_the_shard_for_every_target(tmp_path: Path, stuck: str) -> None:
    """on_shard_end_while_detached: dead_letter: a stuck target's rest of the shard is dead-lettered, the shard ends."""
    stream = _stream(200)
    healthy, held = _Target(), _Target(hold_after=3)
    if stuck == "unavailable":
        held.target.unavailable_code = "AccessDeniedException"
    store = await _sqlite(tmp_path)
    fanout, reader, _ = _fanout(stream, {"a": healthy, "b": held}, store)
    fanout.on_shard_end = "dead_letter"
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    # Never released: without the policy the shard would wait for target b for ever.
    assert await asyncio.wait_for(task, 20) == "shard_end"
    assert healthy.written == _all(200)
    # Every record of b's: written before it got stuck, or dead-lettered after, once and in order.
    assert held.written + held.dead_lettered == _all(200)
    assert held.written == _all(10)  # its first batch of 10, written before it started to hold
    assert fanout.max_readers <= 2
    final = (await store.load_all(stream.arn))[SHARD]
    assert final.shard_end
    assert final.targets == {"a": f"{200:021d}", "b": f"{200:021d}"}


async def test_wait_policy_holds_the_shard_end_for_a_stuck_target(tmp_path: Path) -> None:
    """The default (wait): the shard does not end while a target is held, and nothing is dead-lettered."""
    stream = _stream(50)
    healthy, held = _Target(), _Target(hold_after=3)
    store = await _sqlite(tmp_path)
    fanout, reader, _ = _fanout(stream, {"a": healthy, "b": held}, store)
    task = asyncio.create_task(run_fanned_out(fanout, reader))
    await _until(lambda: healthy.written == _all(50) and held.waiting, task)
    await asyncio.sleep(0.2)
    assert not task.done()
    assert not (await store.load_all(stream.arn))[SHARD].shard_end
    held.release()
    assert await asyncio.wait_for(task, 20) == "shard_end"
    assert held.written == _all(50)
    assert held.dead_lettered == []

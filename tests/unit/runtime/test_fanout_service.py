"""The worker with several targets, against the scripted stream: one target hung does not stall the others."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from scripted_stream import RecordingTarget, ScriptedStream

from replicator.aws.clients import Clients, TargetClient
from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.runtime.service import Replicator

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

SHARD = "s1"


async def _until(condition: Callable[[], bool], task: asyncio.Task[Any]) -> None:
    async with asyncio.timeout(20):
        while not condition():
            if task.done():
                task.result()
            await asyncio.sleep(0.005)


def _config(tmp_path: Path, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "source": {"region": "us-east-1", "table": "Orders"},
        "targets": [
            {"name": "a", "region": "eu-west-1", "table": "Orders"},
            {"name": "b", "region": "ap-south-1", "table": "Orders"},
        ],
        "checkpoint": {"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        "metrics": {"enabled": False},
        "reader": {"poll_interval_s": 0.01, "max_idle_poll_interval_s": 0.02, "get_records_limit": 10},
        "failure": {"batch_size": 10},
        "replication": {"deletes": "delete"},
        **overrides,
    }
    return Config(**data)


def _values(target: RecordingTarget, keys: int) -> list[int]:
    return sorted(v for k in range(keys) for v in target.values_of(f"k{k}"))


class _HangingTarget(RecordingTarget):
    """A target whose writes wait until ``gate`` opens (a hung endpoint), then are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def put_item(self, **params: Any) -> dict[str, Any]:
        await self.gate.wait()
        return await super().put_item(**params)


async def test_the_service_keeps_one_target_flowing_while_another_hangs(tmp_path: Path) -> None:
    """Worker with two targets, one hung: the other gets every change; once released, the hung one catches up."""
    stream = ScriptedStream()
    stream.add_shard(SHARD)
    for i in range(60):
        stream.put(SHARD, f"k{i}", i)  # a key per change: the processor would coalesce one key's changes
    healthy, hung = RecordingTarget(), _HangingTarget()
    cfg = _config(tmp_path, fanout={"max_buffered_batches": 1, "detach_after_s": 0.1})
    clients = Clients(
        source=stream,  # type: ignore[arg-type]
        streams=stream,  # type: ignore[arg-type]
        target=TargetClient(healthy),  # type: ignore[arg-type]
        targets={"a": TargetClient(healthy), "b": TargetClient(hung)},  # type: ignore[arg-type]
    )
    replicator = Replicator(cfg, metrics=Metrics(), clients=clients)
    task = asyncio.create_task(replicator.run())
    try:
        state = replicator.state
        await _until(lambda: SHARD in state.shards and state.target(SHARD, "a").checkpoint == f"{60:021d}", task)
        assert len(healthy.writes) == 60
        targets = state.shards[SHARD].targets
        assert targets["b"].attached is False
        assert targets["b"].checkpoint is None
        assert state.targets_json()[SHARD]["b"]["attached"] is False
        assert state.targets_json()[SHARD]["a"]["checkpoint"] == f"{60:021d}"
        for i in range(60, 80):
            stream.put(SHARD, f"k{i}", i)
        await _until(lambda: len(healthy.writes) == 80, task)
        hung.gate.set()
        await _until(lambda: len(hung.writes) >= 80 and targets["b"].attached, task)
        assert _values(hung, 80) == list(range(80))
        assert _values(healthy, 80) == list(range(80))
    finally:
        replicator.stop()
        await task


async def test_a_hung_target_does_not_hold_the_other_within_the_buffer(tmp_path: Path) -> None:
    """Default settings: while one target hangs, the other writes what the buffer holds, then both finish."""
    stream = ScriptedStream()
    stream.add_shard(SHARD)
    for i in range(40):  # four batches: within the default buffer, no detach needed
        stream.put(SHARD, f"k{i}", i)
    healthy, hung = RecordingTarget(), _HangingTarget()
    clients = Clients(
        source=stream,  # type: ignore[arg-type]
        streams=stream,  # type: ignore[arg-type]
        target=TargetClient(healthy),  # type: ignore[arg-type]
        targets={"a": TargetClient(healthy), "b": TargetClient(hung)},  # type: ignore[arg-type]
    )
    replicator = Replicator(_config(tmp_path), metrics=Metrics(), clients=clients)
    task = asyncio.create_task(replicator.run())
    try:
        await _until(lambda: len(healthy.writes) == 40, task)
        assert not hung.writes
        hung.gate.set()
        await _until(lambda: len(hung.writes) == 40, task)
        assert _values(hung, 40) == list(range(40))
        assert _values(healthy, 40) == list(range(40))
    finally:
        replicator.stop()
        await task

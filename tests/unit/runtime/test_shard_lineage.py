"""Shard lineage against the scripted stream: splits, rollovers, new shards, trimmed parents."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from scripted_stream import RecordingTarget, ScriptedStream

from replicator.aws.clients import Clients, TargetClient
from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.runtime.service import Replicator


def _config(tmp_path: Path, **overrides: object) -> Config:
    data: dict[str, object] = {
        "source": {"region": "us-east-1", "table": "Orders"},
        "target": {"region": "eu-west-1", "table": "Orders"},
        "checkpoint": {"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        "metrics": {"enabled": False},
        "reader": {"poll_interval_s": 0.01, "max_idle_poll_interval_s": 0.02, "shard_discovery_interval_s": 0.05},
        "replication": {"deletes": "delete"},
    }
    data.update(overrides)
    return Config(**data)  # type: ignore[arg-type]


async def _run_until(replicator: Replicator, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    task = asyncio.create_task(replicator.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not done():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
    finally:
        replicator.stop()
        await task


def _replicator(cfg: Config, stream: ScriptedStream, target: RecordingTarget) -> Replicator:
    clients = Clients(source=stream, streams=stream, target=TargetClient(target))
    return Replicator(cfg, metrics=Metrics(), clients=clients)


async def test_split_reads_parent_before_children(tmp_path: Path) -> None:
    """After a split, each key's changes reach the target in source order: parent first."""
    stream = ScriptedStream()
    stream.add_shard("p")
    for v in range(50):
        stream.put("p", f"k{v % 5}", v)
    stream.close("p")
    stream.add_shard("c1", parent="p")
    stream.add_shard("c2", parent="p")
    for v in range(50, 100):
        # After a split each key lives in exactly one child.
        stream.put("c1" if (v % 5) % 2 else "c2", f"k{v % 5}", v)
    target = RecordingTarget()
    rep = _replicator(_config(tmp_path), stream, target)
    await _run_until(rep, lambda: all(99 - i in target.values_of(f"k{(99 - i) % 5}") for i in range(5)))
    for k in range(5):
        values = target.values_of(f"k{k}")
        assert values == sorted(values), f"k{k} out of order: {values}"
        assert values[-1] == max(v for v in range(100) if v % 5 == k)
    # Children were opened only after the parent was read to its end.
    order = [shard for shard, _, _ in stream.iterator_requests]
    assert order.index("p") < order.index("c1")
    assert order.index("p") < order.index("c2")


async def test_rollover_chain_is_read_in_order(tmp_path: Path) -> None:
    """A chain of rolled-over shards is read one after another, oldest first."""
    stream = ScriptedStream()
    parent = None
    for i in range(4):
        shard = f"s{i}"
        stream.add_shard(shard, parent)
        for v in range(10):
            stream.put(shard, "k", i * 10 + v)
        if i < 3:
            stream.close(shard)
        parent = shard
    target = RecordingTarget()
    rep = _replicator(_config(tmp_path), stream, target)
    await _run_until(rep, lambda: 39 in target.values_of("k"))
    values = target.values_of("k")
    assert values == sorted(values)
    assert rep.state.shards["s0"].state == "closed"


async def test_shard_appearing_while_running_is_picked_up(tmp_path: Path) -> None:
    """A shard created after start is discovered and read from its first record."""
    stream = ScriptedStream()
    stream.add_shard("a")
    stream.put("a", "k1", 1)
    target = RecordingTarget()
    rep = _replicator(_config(tmp_path, starting_position="LATEST"), stream, target)

    async def script() -> None:
        # Once the worker reads "a" (started at LATEST): a wall-clock delay could let a loaded worker's first
        # listing see "b" already, open at start, which LATEST then rightly skips.
        while ("a", "LATEST", None) not in stream.iterator_requests:  # noqa: ASYNC110 - the scripted stream has no event
            await asyncio.sleep(0.01)
        stream.close("a")
        stream.add_shard("b", parent="a")
        stream.put("b", "k2", 2)

    script_task = asyncio.create_task(script())
    await _run_until(rep, lambda: target.values_of("k2") == [2])
    await script_task
    # LATEST applied to the shard open at start, not to the child discovered later.
    assert ("a", "LATEST", None) in stream.iterator_requests
    assert ("b", "TRIM_HORIZON", None) in stream.iterator_requests
    assert target.values_of("k1") == []


async def test_restart_resumes_after_checkpoint(tmp_path: Path) -> None:
    """A second run starts AFTER_SEQUENCE_NUMBER of the saved checkpoint and skips finished shards."""
    stream = ScriptedStream()
    stream.add_shard("p")
    for v in range(10):
        stream.put("p", "k", v)
    stream.close("p")
    stream.add_shard("c", parent="p")
    last = stream.put("c", "k", 10)
    cfg = _config(tmp_path)
    first = RecordingTarget()
    await _run_until(_replicator(cfg, stream, first), lambda: 10 in first.values_of("k"))
    stream.put("c", "k", 11)
    second = RecordingTarget()
    await _run_until(_replicator(cfg, stream, second), lambda: 11 in second.values_of("k"))
    assert second.values_of("k") == [11]
    assert ("c", "AFTER_SEQUENCE_NUMBER", last) in stream.iterator_requests
    assert stream.iterator_requests.count(("p", "TRIM_HORIZON", None)) == 1


@pytest.mark.parametrize("hidden_parent", [True, False])
async def test_trimmed_parent_does_not_block_child(tmp_path: Path, hidden_parent: bool) -> None:  # noqa: FBT001
    """A child whose parent has aged out of the stream starts at once; a listed open parent blocks it."""
    stream = ScriptedStream()
    stream.add_shard("p")
    stream.put("p", "k", 1)
    stream.add_shard("c", parent="p")
    stream.put("c", "k", 2)
    if hidden_parent:
        stream.hidden.add("p")
    target = RecordingTarget()
    rep = _replicator(_config(tmp_path), stream, target)
    waiter: Callable[[], bool] = lambda: 2 in target.values_of("k")  # noqa: E731
    if hidden_parent:
        await _run_until(rep, waiter)
        assert target.values_of("k") == [2]
    else:
        await _run_until(rep, lambda: 1 in target.values_of("k") and rep.state.shards.get("c") is not None)
        assert target.values_of("k") == [1]
        assert rep.state.shards["c"].state == "waiting_on_parent"


async def test_stop_returns_while_discovery_retries_an_unreachable_stream(tmp_path: Path) -> None:
    """SIGTERM during endless discovery retries (Streams API unreachable) still shuts down promptly."""
    stream = ScriptedStream()
    stream.add_shard("a")
    describe = stream.describe_stream
    calls = 0

    async def flaky_describe(**kwargs: object) -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls > 1:  # start-up's resolve succeeds; every discovery after it fails
            raise ConnectionResetError("unreachable")
        return await describe(**kwargs)  # type: ignore[arg-type]

    stream.describe_stream = flaky_describe  # type: ignore[method-assign]
    rep = _replicator(_config(tmp_path), stream, RecordingTarget())
    task = asyncio.create_task(rep.run())
    await asyncio.wait_for(rep.started.wait(), timeout=5)
    await asyncio.sleep(0.5)
    assert calls > 2  # discovery is retrying
    rep.stop()
    await asyncio.wait_for(task, timeout=5)


async def test_latest_starts_every_shard_open_at_start_at_latest(tmp_path: Path) -> None:
    """LATEST: an open child of a listed closed parent starts at LATEST at once; a later child at TRIM_HORIZON."""
    stream = ScriptedStream()
    stream.add_shard("p")
    stream.put("p", "k", 1)
    stream.close("p")
    stream.add_shard("c", parent="p")
    stream.put("c", "k", 2)  # before the start: not wanted with LATEST
    target = RecordingTarget()
    rep = _replicator(_config(tmp_path, starting_position="LATEST"), stream, target)

    async def script() -> None:
        while not any(req[0] == "c" for req in stream.iterator_requests):  # noqa: ASYNC110 - a scripted stream has no event
            await asyncio.sleep(0.01)
        stream.put("c", "k", 3)
        while 3 not in target.values_of("k"):  # noqa: ASYNC110 - a scripted target has no event
            await asyncio.sleep(0.01)
        stream.close("c")
        stream.add_shard("d", parent="c")
        stream.put("d", "k", 4)

    script_task = asyncio.create_task(script())
    await _run_until(rep, lambda: 4 in target.values_of("k"))
    await script_task
    assert ("c", "LATEST", None) in stream.iterator_requests
    assert ("d", "TRIM_HORIZON", None) in stream.iterator_requests
    assert target.values_of("k") == [3, 4]

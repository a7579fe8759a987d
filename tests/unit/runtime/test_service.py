"""The Replicator service against a scripted stream: one run per instance, signals, the shutdown order."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_lease_table import FakeLeaseTable
from scripted_stream import RecordingTarget, ScriptedStream

from replicator.aws.clients import Clients, TargetClient
from replicator.core.config import Config
from replicator.core.records import ChangeRecord
from replicator.observe.metrics import Metrics
from replicator.runtime.consumer import lane_of
from replicator.runtime.service import Replicator

READER = {"poll_interval_s": 0.01, "max_idle_poll_interval_s": 0.02, "shard_discovery_interval_s": 0.05}


def _config(tmp_path: Path, **overrides: object) -> Config:
    data: dict[str, object] = {
        "source": {"region": "us-east-1", "table": "Orders"},
        "target": {"region": "eu-west-1", "table": "Orders"},
        "checkpoint": {"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        "metrics": {"enabled": False},
        "reader": READER,
        "replication": {"deletes": "delete"},
    }
    data.update(overrides)
    return Config(**data)  # type: ignore[arg-type]


def _stream(*keys: str) -> ScriptedStream:
    stream = ScriptedStream()
    stream.add_shard("s0")
    for value, key in enumerate(keys):
        stream.put("s0", key, value)
    return stream


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling state that other tasks change without an event
            await asyncio.sleep(0.01)


async def test_run_refuses_a_second_start(tmp_path: Path) -> None:
    """run() raises a clear error when called again, while running and after it returned."""
    stream = _stream("k")
    target = RecordingTarget()
    rep = Replicator(
        _config(tmp_path),
        metrics=Metrics(),
        clients=Clients(source=stream, streams=stream, target=TargetClient(target)),
    )
    first = asyncio.create_task(rep.run())
    await asyncio.wait_for(rep.started.wait(), timeout=5)
    with pytest.raises(RuntimeError, match="already been started"):
        await asyncio.wait_for(rep.run(), timeout=5)
    rep.stop()
    await first
    with pytest.raises(RuntimeError, match="already been started"):
        await asyncio.wait_for(rep.run(), timeout=5)


async def test_a_stop_signal_stops_the_run_and_its_handler_is_removed(tmp_path: Path) -> None:
    """A signal given to run() stops it; once run() returned the signal is no longer handled by it."""
    stream = _stream("k")
    target = RecordingTarget()
    rep = Replicator(
        _config(tmp_path),
        metrics=Metrics(),
        clients=Clients(source=stream, streams=stream, target=TargetClient(target)),
    )
    task = asyncio.create_task(rep.run(stop_signals=(signal.SIGUSR1,)))
    await asyncio.wait_for(rep.started.wait(), timeout=5)
    await _until(lambda: target.values_of("k") == [0])
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.wait_for(task, timeout=5)
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)


class _SlowCheckpointTable(FakeLeaseTable):
    """Checkpoint writes are applied at once and answered late: shutdown cancels readers while they wait."""

    def __init__(self) -> None:
        super().__init__()
        self.checkpoint_applied = asyncio.Event()

    async def update_item(self, **kwargs: Any) -> None:
        await super().update_item(**kwargs)
        if "checkpoint = :seq" in kwargs["UpdateExpression"]:
            self.checkpoint_applied.set()
            await asyncio.sleep(0.3)


async def test_shutdown_releases_the_leases_of_a_reader_cancelled_mid_checkpoint(tmp_path: Path) -> None:
    """A reader cancelled by the drain deadline while its checkpoint is answered still lets shutdown release."""
    stream = _stream("a", "b")
    table = _SlowCheckpointTable()
    cfg = _config(
        tmp_path,
        checkpoint={"backend": "dynamodb", "table": "leases"},
        leases={"enabled": True},
        worker_id="w1",
    )
    clients = Clients(source=stream, streams=stream, target=TargetClient(RecordingTarget()), checkpoint=table)
    rep = Replicator(cfg, metrics=Metrics(), clients=clients, shutdown_timeout_s=0.05)
    task = asyncio.create_task(rep.run())
    await asyncio.wait_for(table.checkpoint_applied.wait(), timeout=5)
    assert table.items["s0"]["leaseOwner"] == {"S": "w1"}
    rep.stop()
    await asyncio.wait_for(task, timeout=5)
    assert table.items["s0"]["checkpoint"] == {"S": stream.shards["s0"].records[-1]["dynamodb"]["SequenceNumber"]}
    assert "leaseOwner" not in table.items["s0"]


class _StuckTarget(RecordingTarget):
    """Never answers a write of ``stuck_key``."""

    def __init__(self, stuck_key: str) -> None:
        super().__init__()
        self.stuck_key = stuck_key

    async def put_item(self, **params: Any) -> dict[str, Any]:
        if params["Item"]["pk"]["S"] == self.stuck_key:
            await asyncio.Event().wait()
        return await super().put_item(**params)


def _key_in_another_lane(than: str, lanes: int) -> str:
    def lane(key: str) -> int:
        return lane_of(ChangeRecord("MODIFY", {"pk": {"S": key}}, None, None, "1", 0.0, "s0", {}), lanes)

    return next(f"k{i}" for i in range(100) if lane(f"k{i}") != lane(than))


async def test_shutdown_saves_what_finished_lanes_did_before_their_reader_was_cancelled(tmp_path: Path) -> None:
    """Cancelled past the drain deadline, a reader's finished lanes still get their final checkpoint."""
    fast = _key_in_another_lane("stuck", 2)
    stream = _stream(fast, "stuck")
    target = _StuckTarget("stuck")
    cfg = _config(tmp_path, failure={"parallelization_factor": 2})
    clients = Clients(source=stream, streams=stream, target=TargetClient(target))
    rep = Replicator(cfg, metrics=Metrics(), clients=clients, shutdown_timeout_s=0.05)
    task = asyncio.create_task(rep.run())
    await _until(lambda: target.values_of(fast) == [0])
    rep.stop()
    await asyncio.wait_for(task, timeout=5)
    with sqlite3.connect(tmp_path / "cp.db") as db:
        rows = db.execute("SELECT shard_id, sequence_number FROM checkpoints").fetchall()
    assert rows == [("s0", stream.shards["s0"].records[0]["dynamodb"]["SequenceNumber"])]


async def test_a_bad_filter_fails_run_before_any_client_table_or_port_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filters compile first: run raises the FilterError naming it, having opened nothing."""
    from replicator.core.errors import FilterError  # noqa: PLC0415
    from replicator.runtime import service  # noqa: PLC0415

    opened: list[str] = []

    async def open_clients(*_args: object, **_kwargs: object) -> dict[str, Any]:
        opened.append("clients")
        return {}

    monkeypatch.setattr(service, "open_clients", open_clients)
    cfg = _config(tmp_path, filters=[{"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">>", 1]}]}}}}])
    with pytest.raises(FilterError, match=r"filters\[0\]"):
        await Replicator(cfg, metrics=Metrics()).run()
    assert opened == []
    assert not (tmp_path / "cp.db").exists()

"""Trimmed data told apart from a checkpoint that merely aged out; a trimmed parent never read to its end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from fake_lease_table import FakeLeaseTable, leased_config
from scripted_stream import RecordingTarget, ScriptedStream

from replicator.aws.clients import Clients, TargetClient
from replicator.checkpoint.sqlite import SqliteCheckpointStore
from replicator.core.config import Config
from replicator.observe.metrics import Metrics
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


def _error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {}}, operation)


class _AgingStream(ScriptedStream):
    """Once ``aged`` is set, held iterators expire and the records up to ``trimmed_through`` are trimmed."""

    def __init__(self) -> None:
        super().__init__()
        self.aged = False
        self.trimmed_through = 0

    async def get_records(self, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:  # noqa: N803
        if self.aged and not ShardIterator.endswith("!"):
            raise _error("ExpiredIteratorException", "GetRecords")
        return await super().get_records(ShardIterator.rstrip("!"), Limit)

    async def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        seq = kwargs.get("SequenceNumber")
        if self.aged and seq is not None and int(seq) <= self.trimmed_through:
            self.iterator_requests.append((kwargs["ShardId"], kwargs["ShardIteratorType"], seq))
            raise _error("TrimmedDataAccessException", "GetShardIterator")
        answer = await super().get_shard_iterator(**kwargs)
        if self.aged and kwargs["ShardIteratorType"] == "TRIM_HORIZON":
            # The trimmed records are gone: TRIM_HORIZON is past them.
            shard, pos = answer["ShardIterator"].split("|")
            seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in self.shards[shard].records]
            pos = str(max(int(pos), sum(1 for s in seqs if s <= self.trimmed_through)))
            answer = {"ShardIterator": f"{shard}|{pos}"}
        return {"ShardIterator": answer["ShardIterator"] + ("!" if self.aged else "")}


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling state that other tasks change without an event
            await asyncio.sleep(0.01)


def _errors(metrics: Metrics, kind: str) -> float:
    return metrics.registry.get_sample_value("replicator_errors_total", {"kind": kind}) or 0.0


async def test_a_quiet_shard_whose_checkpoint_aged_out_reads_on_without_an_alarm(tmp_path: Path) -> None:
    """Nothing after the checkpoint was seen, then the checkpointed record aged out: read on, no trimmed_data."""
    stream = _AgingStream()
    stream.add_shard("s")
    last = stream.put("s", "k", 1)
    target = RecordingTarget()
    metrics = Metrics()
    clients = Clients(source=stream, streams=stream, target=TargetClient(target))
    rep = Replicator(_config(tmp_path), metrics=metrics, clients=clients)
    task = asyncio.create_task(rep.run())
    try:
        await _until(lambda: target.values_of("k") == [1] and rep.state.shard("s").checkpoint == last)
        await _until(lambda: rep.state.shard("s").newest_record_s is None)  # an empty read: caught up
        stream.trimmed_through = int(last)
        stream.aged = True
        await _until(lambda: ("s", "AFTER_SEQUENCE_NUMBER", last) in stream.iterator_requests[1:])
        stream.put("s", "k", 2)
        await _until(lambda: 2 in target.values_of("k"))
        assert rep.state.shard("s").state == "reading"
        assert _errors(metrics, "trimmed_data") == 0
    finally:
        rep.stop()
        await task


def _parent_trimmed_unread() -> tuple[ScriptedStream, str]:
    """Parent ``p`` (its first record returned) trimmed from the listing with one record unread; child ``c``."""
    stream = ScriptedStream()
    stream.add_shard("p")
    first = stream.put("p", "k", 1)
    stream.put("p", "k", 2)  # never read: trimmed with its shard while the worker was down
    stream.close("p")
    stream.add_shard("c", parent="p")
    stream.put("c", "k", 3)
    stream.hidden.add("p")
    return stream, first


@pytest.mark.parametrize("on_trimmed", ["fail", "skip_to_trim_horizon"])
async def test_a_parent_trimmed_before_it_was_read_to_its_end_is_data_loss(tmp_path: Path, on_trimmed: str) -> None:
    """A stored unfinished checkpoint of a parent no longer listed: the child stops, or skips with the alarm."""
    cfg = _config(tmp_path, reader={**READER, "on_trimmed_data": on_trimmed})
    stream, first = _parent_trimmed_unread()
    store = SqliteCheckpointStore(cfg.checkpoint.path)
    await store.start()
    await store.save(stream.arn, "p", first)
    await store.close()
    target = RecordingTarget()
    metrics = Metrics()
    clients = Clients(source=stream, streams=stream, target=TargetClient(target))
    rep = Replicator(cfg, metrics=metrics, clients=clients)
    task = asyncio.create_task(rep.run())
    try:
        if on_trimmed == "fail":
            await _until(lambda: rep.state.shards.get("p") is not None and rep.state.shards["p"].state == "stopped")
            await asyncio.sleep(0.2)  # several cycles: the child must still not start
            assert not any(req[0] == "c" for req in stream.iterator_requests)
            assert target.values_of("k") == []
            assert "p" in rep.state.not_ready(timeout_s=3600)
        else:
            await _until(lambda: target.values_of("k") == [3])
            assert _errors(metrics, "trimmed_data_skipped") == 1
        assert _errors(metrics, "trimmed_data") == 1
    finally:
        rep.stop()
        await task


async def test_with_leases_a_parent_trimmed_before_it_was_read_to_its_end_is_data_loss_too() -> None:
    """Leases on: the child's fresh lease item is no progress; the unfinished, unlisted parent stops it, counted."""
    stream, first = _parent_trimmed_unread()
    table = FakeLeaseTable()
    # The parent's lease as the last worker left it: checkpointed short of its end, released.
    table.items["p"] = {
        "streamArn": {"S": stream.arn},
        "shardId": {"S": "p"},
        "leaseCounter": {"N": "5"},
        "checkpoint": {"S": first},
        "shardEnd": {"BOOL": False},
        "updatedAt": {"N": "1"},
        "liveStreamArn": {"S": stream.arn},
    }
    cfg = leased_config(READER)
    target = RecordingTarget()
    metrics = Metrics()
    clients = Clients(source=stream, streams=stream, target=TargetClient(target), checkpoint=table)
    rep = Replicator(cfg, metrics=metrics, clients=clients)
    task = asyncio.create_task(rep.run())
    try:
        await _until(lambda: "c" in table.items and table.items["c"].get("leaseOwner") == {"S": "w1"})
        await asyncio.sleep(0.2)  # several cycles: the child must still not start
        assert not any(req[0] == "c" for req in stream.iterator_requests), "the child read past a lost parent"
        assert target.values_of("k") == []
        assert _errors(metrics, "trimmed_data") == 1
    finally:
        rep.stop()
        await task

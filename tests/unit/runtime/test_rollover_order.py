"""Issue 14 item 8: a key's changes on both sides of a rollover, in one second, ordered by sequence number.

Versions break a timestamp tie with the sequence number. DynamoDB Streams documents a shard's
``SequenceNumberRange`` as the range of its possible sequence numbers, nothing across shards: a child
whose range starts below its parent's end would put a key's later change (in the child) below its
earlier one (in the parent). The worker checks each rollover it reads against the documented ranges.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from scripted_stream import ScriptedStream
from support import sample
from unit.model.evaluator import holds

from replicator.aws.clients import Clients, TargetClient
from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.runtime.service import Replicator

if TYPE_CHECKING:
    from pathlib import Path

ONE_SECOND = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class ConditionalTarget:
    """A target table that evaluates each write's ConditionExpression, as DynamoDB does."""

    def __init__(self) -> None:
        """Start empty."""
        self.items: dict[str, dict[str, Any]] = {}
        self.attempts = 0

    async def put_item(self, **params: Any) -> dict[str, Any]:
        """PutItem, refused with ConditionalCheckFailedException when the condition is false."""
        self.attempts += 1
        key = params["Item"]["pk"]["S"]
        if not holds(
            params["ConditionExpression"],
            params["ExpressionAttributeNames"],
            params["ExpressionAttributeValues"],
            self.items.get(key),
        ):
            raise ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": ""}}, "PutItem")
        self.items[key] = params["Item"]
        return {}


def _config(tmp_path: Path) -> Config:
    return Config(
        source={"region": "us-east-1", "table": "Orders"},  # type: ignore[arg-type]
        target={"region": "eu-west-1", "table": "Orders"},  # type: ignore[arg-type]
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "cp.db")},  # type: ignore[arg-type]
        metrics={"enabled": False},  # type: ignore[arg-type]
        reader={"poll_interval_s": 0.01, "max_idle_poll_interval_s": 0.02, "shard_discovery_interval_s": 0.05},  # type: ignore[arg-type]
    )


def _rollover(*, child_below_parent: bool) -> ScriptedStream:
    """A stream where key k is written in the parent, then in its child, in the same second."""
    stream = ScriptedStream()
    stream.add_shard("parent")
    stream.seq = 500
    stream.put("parent", "k", 1)
    stream.close("parent")
    if child_below_parent:
        stream.seq = 0  # the child's range starts below the parent's end: nothing documented forbids it
    stream.add_shard("child", parent="parent")
    stream.put("child", "k", 2)
    for shard in stream.shards.values():
        for record in shard.records:
            record["dynamodb"]["ApproximateCreationDateTime"] = ONE_SECOND
    return stream


async def _replicate(tmp_path: Path, stream: ScriptedStream) -> tuple[ConditionalTarget, Metrics]:
    target, metrics = ConditionalTarget(), Metrics()
    clients = Clients(source=stream, streams=stream, target=TargetClient(target))  # type: ignore[arg-type]
    replicator = Replicator(_config(tmp_path), metrics=metrics, clients=clients)
    task = asyncio.create_task(replicator.run())
    try:
        async with asyncio.timeout(30):
            while target.attempts < len(stream.shards):  # one write per record, each shard has one
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
    finally:
        replicator.stop()
        await task
    return target, metrics


async def test_a_rollover_with_increasing_ranges_keeps_a_keys_order_in_one_second(tmp_path: Path) -> None:
    """The child's range starts above the parent's end: the child's change wins the tie, nothing is reported."""
    target, metrics = await _replicate(tmp_path, _rollover(child_below_parent=False))
    assert target.items["k"]["v"] == {"N": "2"}
    assert sample(metrics, "replicator_errors_total", kind="sequence_order") == 0


async def test_a_rollover_whose_child_range_starts_below_the_parents_end_is_reported(tmp_path: Path) -> None:
    """Sequence numbers that go back across a rollover would order the key's later change first: reported."""
    target, metrics = await _replicate(tmp_path, _rollover(child_below_parent=True))
    # What the check is for: the tie-break put the child's change below the parent's (it was refused).
    assert target.items["k"]["v"] == {"N": "1"}
    assert sample(metrics, "replicator_errors_total", kind="sequence_order") == 1

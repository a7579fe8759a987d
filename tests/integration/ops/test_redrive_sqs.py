"""Dead letters through a FIFO queue on moto's SQS server, redriven into DynamoDB Local."""

from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING, Any

from replicator_dev.local.common import create_table

from replicator.core.config import Config
from replicator.core.errors import TransformError
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.ops.redrive import redrive
from replicator.sink import deadletter

if TYPE_CHECKING:
    from collections.abc import Callable

    from replicator_dev.local.dynamodb_local import DynamoDBLocal
    from replicator_dev.local.moto_server import MotoServer

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000"
AWKWARD = "not for SQS: \ufffe \uffff, fine: é \U0001f600"


def _record(key: str, seq: int, text: str) -> ChangeRecord:
    event = {
        "eventID": f"e{seq}",
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "eventSourceARN": ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": 1_767_225_600.0 + seq,
            "Keys": {"pk": {"S": key}},
            "NewImage": {"pk": {"S": key}, "t": {"S": text}},
            "SequenceNumber": f"{seq:021d}",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    return from_lambda_event(event, shard_id="shardId-1")


def _incompressible(size: int) -> str:
    rng = random.Random(11)  # noqa: S311 - test data, not secrets
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))


async def test_fifo_queue_takes_dead_letters_and_redrive_replays_them_exactly(
    region_b: DynamoDBLocal, moto_server: MotoServer, unique_name: Callable[[str], str]
) -> None:
    """A FIFO queue accepts every letter (a multi-part one sent twice too); redrive writes exact text and empties it."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique_name("dlq") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    dst = unique_name("dst")
    create_table(region_b.endpoint_url, dst, stream_view_type=None, region_name="us-west-2")
    cfg = Config(
        source={"region": "us-east-1", "table": "src"},
        target={"region": "us-west-2", "table": dst, "endpoint_url": region_b.endpoint_url},
        metrics={"enabled": False},
        failure={
            "on_failure": {
                "destination": url,
                "endpoint_url": moto_server.endpoint_url,
                "region": moto_server.region_name,
            }
        },
    )
    big_text = _incompressible(380_000)  # under 400 KB, over 256 KiB even compressed
    records = [_record("awkward", 1, AWKWARD), _record("big", 2, big_text), _record("plain", 3, "x")]
    async with contextlib.AsyncExitStack() as stack:
        sink = await deadletter.from_config(cfg, stack)
        assert isinstance(sink, deadletter.SqsDeadLetters)
        for record in records:
            await sink.send(record, error=TransformError("rejected"), attempts=1)
        # The big letter again, as after a crash: same id, a different error, so different parts.
        await sink.send(records[1], error=TransformError("rejected again"), attempts=2)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessages"]) == 1 + 2 + 1 + 2

    report = await redrive(cfg)
    assert report.ok, report.lines()
    assert report.read >= 3
    assert report.outcomes["replicated"] == 3
    target = region_b.client()
    got: dict[str, Any] = {
        key: target.get_item(TableName=dst, Key={"pk": {"S": key}}, ConsistentRead=True)["Item"]["t"]["S"]
        for key in ("awkward", "big", "plain")
    }
    assert got == {"awkward": AWKWARD, "big": big_text, "plain": "x"}
    left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(left["ApproximateNumberOfMessages"]) + int(left["ApproximateNumberOfMessagesNotVisible"]) == 0

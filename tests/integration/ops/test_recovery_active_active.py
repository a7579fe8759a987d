"""Recovery tooling with the active-active config (``replication.source_tombstones: true``) on DynamoDB Local.

``run`` accepts this config (the ECS template gives it to every task), so ``backfill`` and ``redrive``
must too: both write through the same processor, which tombstones deletes in the source as well.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from replicator_dev.local.common import create_table

from replicator.core.config import Config
from replicator.core.records import from_lambda_event
from replicator.ops.backfill import BackfillSettings, run_backfill
from replicator.ops.redrive import redrive
from replicator.ops.verify import verify
from replicator.sink import deadletter

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal

A, B = "us-east-1", "us-west-2"
ACTIVE_ACTIVE = {"timestamp_attribute": "updatedAt", "timestamp_unit": "ms", "source_tombstones": True}


def _event(table_arn: str, name: str, key: str, seq: int, image: dict[str, Any] | None) -> dict[str, Any]:
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": time.time(),
        "Keys": {"pk": {"S": key}},
        "SequenceNumber": f"{seq:021d}",
        "SizeBytes": 20,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if image is not None:
        dynamodb["NewImage"] = image
    return {
        "eventID": f"e{seq}",
        "eventName": name,
        "eventSource": "aws:dynamodb",
        "awsRegion": A,
        "eventSourceARN": f"{table_arn}/stream/2026-01-01T00:00:00.000",
        "dynamodb": dynamodb,
    }


async def test_backfill_and_redrive_work_with_the_active_active_config(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Backfill and redrive both succeed with source_tombstones on, and the target converges with the source."""
    src, dst = unique_name("aa-src"), unique_name("aa-dst")
    create_table(region_a.endpoint_url, src, region_name=A)
    create_table(region_b.endpoint_url, dst, region_name=B)
    dead = tmp_path / "dead.jsonl"
    cfg = Config(
        source={"region": A, "table": src, "endpoint_url": region_a.endpoint_url},
        target={"region": B, "table": dst, "endpoint_url": region_b.endpoint_url},
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        metrics={"enabled": False},
        replication=ACTIVE_ACTIVE,
        failure={"on_failure": {"destination": str(dead)}},
    )
    source = region_a.client()
    now_ms = int(time.time() * 1000)
    for i in range(20):
        source.put_item(
            TableName=src, Item={"pk": {"S": f"k{i:02d}"}, "v": {"N": str(i)}, "updatedAt": {"N": str(now_ms)}}
        )

    summary = await run_backfill(cfg, BackfillSettings(segments=2, safety_margin_s=0), progress_path=tmp_path / "p")
    assert summary.written == 20
    assert summary.dead_lettered == 0
    assert not (await verify(cfg)).diverged

    # Two changes the stream carried but the target refused at the time: an update and a delete. The
    # application made them in the source; redrive replays them from their dead letters.
    updated = {"pk": {"S": "k00"}, "v": {"N": "100"}, "updatedAt": {"N": str(now_ms + 1000)}}
    source.put_item(TableName=src, Item=updated)
    source.delete_item(TableName=src, Key={"pk": {"S": "k01"}})
    table_arn = source.describe_table(TableName=src)["Table"]["TableArn"]
    context = deadletter.DeadLetterContext.from_config(cfg)
    sink = deadletter.JsonlDeadLetters(dead)
    for event in (_event(table_arn, "MODIFY", "k00", 5, updated), _event(table_arn, "REMOVE", "k01", 6, None)):
        record = from_lambda_event(event, shard_id="shardId-1")
        await sink.send_document(context.document(record, error=RuntimeError("refused"), attempts=1))
    await sink.close()

    report = await redrive(cfg)
    assert report.ok, report.lines()
    assert report.outcomes == {"replicated": 2}
    final = await verify(cfg)
    assert not final.diverged, final.differences
    target = region_b.client()
    got = target.get_item(TableName=dst, Key={"pk": {"S": "k00"}}, ConsistentRead=True)["Item"]
    assert got["v"] == {"N": "100"}
    # The delete left a tombstone in the source too (what source_tombstones is for).
    tomb = source.get_item(TableName=src, Key={"pk": {"S": "k01"}}, ConsistentRead=True).get("Item")
    assert tomb is not None
    assert cfg.replication.tombstone_attribute in tomb

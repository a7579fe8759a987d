"""``replicator status`` against DynamoDB Local: before a run, while running, and after a stop."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import yaml
from click.testing import CliRunner
from replicator_dev.local.common import create_table
from replicator_dev.local.dynamodb_local import DynamoDBLocal

from replicator.cli.main import main
from replicator.core.config import Config
from replicator.ops.status import ShardRow, status_from_config
from replicator.runtime.service import Replicator

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from replicator_dev.local.moto_server import MotoServer


def _setup(
    region_a: DynamoDBLocal,
    region_b: DynamoDBLocal,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    **extra: Any,
) -> dict[str, Any]:
    source, target = unique_name("src"), unique_name("dst")
    create_table(region_a.endpoint_url, source, region_name="us-east-1")
    create_table(region_b.endpoint_url, target, stream_view_type=None, region_name="us-west-2")
    data: dict[str, Any] = {
        "source": {"region": "us-east-1", "table": source, "endpoint_url": region_a.endpoint_url},
        "target": {"region": "us-west-2", "table": target, "endpoint_url": region_b.endpoint_url},
        "checkpoint": {"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        "metrics": {"enabled": False},
        "reader": {
            "poll_interval_s": 0.05,
            "max_idle_poll_interval_s": 0.1,
            "shard_discovery_interval_s": 0.5,
        },
    }
    data.update(extra)
    return data


def _put(region: DynamoDBLocal, table: str, keys: range) -> None:
    client = region.client()
    for i in keys:
        client.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}, "v": {"N": str(i)}})


async def _replicate_until(cfg: Config, region_b: DynamoDBLocal, count: int) -> None:
    replicator = Replicator(cfg)
    task = asyncio.create_task(replicator.run())
    client = region_b.client()
    try:
        async with asyncio.timeout(20):
            while client.scan(TableName=cfg.target.table, Select="COUNT")["Count"] < count:
                if task.done():
                    task.result()
                await asyncio.sleep(0.1)
    finally:
        replicator.stop()
        await task


def _only(rows: list[ShardRow]) -> ShardRow:
    (row,) = rows  # DynamoDB Local gives a new table one open shard
    return row


async def test_status_before_during_and_after_a_run(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name, tmp_path: Path
) -> None:
    """Not started with 3 waiting; in progress at the last record after a run; 2 behind after a stop."""
    cfg = Config(**_setup(region_a, region_b, unique_name, tmp_path))
    _put(region_a, cfg.source.table or "", range(3))
    before = await status_from_config(cfg)
    row = _only(before.rows)
    assert (row.progress, row.closed, row.checkpoint, row.owner) == ("not_started", False, None, None)
    assert row.records_behind == 3
    assert row.iterator_age_s is not None
    assert row.iterator_age_s >= 0
    assert before.checkpoint_note is not None
    assert "does not exist" in before.checkpoint_note
    assert not cfg.checkpoint.path.exists()  # status creates nothing

    await _replicate_until(cfg, region_b, 3)
    after = _only((await status_from_config(cfg)).rows)
    assert after.progress == "in_progress"
    assert after.checkpoint is not None
    assert (after.records_behind, after.iterator_age_s) == (0, 0.0)

    _put(region_a, cfg.source.table or "", range(3, 5))
    await asyncio.sleep(1.1)  # creation times have one-second resolution: let the next record age visibly
    stopped = _only((await status_from_config(cfg)).rows)
    assert stopped.checkpoint == after.checkpoint
    assert stopped.records_behind == 2
    assert stopped.more_behind is False
    assert stopped.iterator_age_s is not None
    assert stopped.iterator_age_s >= 1


async def test_status_shows_the_lease_owner_from_the_dynamodb_store(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name, tmp_path: Path
) -> None:
    """With DynamoDB checkpoints the owner column shows the shard item's leaseOwner."""
    cp_table = unique_name("cp")
    data = _setup(region_a, region_b, unique_name, tmp_path, checkpoint={"backend": "dynamodb", "table": cp_table})
    cfg = Config(**data)
    missing = await status_from_config(cfg)
    assert missing.checkpoint_note is not None
    assert "does not exist" in missing.checkpoint_note
    _put(region_a, cfg.source.table or "", range(1))
    await _replicate_until(cfg, region_b, 1)
    report = await status_from_config(cfg)
    row = _only(report.rows)
    assert row.owner is None
    region_b.client().update_item(
        TableName=cp_table,
        Key={"streamArn": {"S": report.stream_arn}, "shardId": {"S": row.shard_id}},
        UpdateExpression="SET leaseOwner = :o",
        ExpressionAttributeValues={":o": {"S": "worker-7"}},
    )
    assert _only((await status_from_config(cfg)).rows).owner == "worker-7"


def test_status_command_prints_a_table_and_json(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name, tmp_path: Path
) -> None:
    """``replicator status --config FILE`` prints the table; ``--json`` the same rows as JSON."""
    data = _setup(region_a, region_b, unique_name, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    _put(region_a, data["source"]["table"], range(2))
    runner = CliRunner()
    result = runner.invoke(main, ["status", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # logs go to stderr
    (shard,) = report["shards"]
    assert shard["progress"] == "not_started"
    assert shard["records_behind"] == 2
    assert shard["owner"] is None
    table = runner.invoke(main, ["status", "--config", str(path)], terminal_width=250)
    assert table.exit_code == 0, table.output
    # The table abbreviates shard ids to their distinct end (the full id is in --json).
    assert shard["shard_id"].removeprefix("shardId-")[-13:] in table.output
    assert "not started" in table.output
    assert "1 shards (1 open, 0 closed): 1 not started" in table.output
    assert "open" in table.output


def test_status_command_reports_a_bad_config(tmp_path: Path) -> None:
    """A config error exits 2 naming the key."""
    path = tmp_path / "config.yaml"
    path.write_text("source: {region: us-east-1}\ntarget: {region: x, table: abc}\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["status", "--config", str(path)])
    assert result.exit_code == 2
    assert "source" in result.output


async def test_status_reads_a_kinesis_source(
    moto_server: MotoServer, region_b: DynamoDBLocal, unique_name, tmp_path
) -> None:
    """With source.kind kinesis, status lists the Kinesis stream's shards (not DynamoDB Streams')."""
    kinesis = moto_server.client("kinesis")
    stream, table, target = unique_name("ks"), unique_name("src"), unique_name("dst")
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    create_table(region_b.endpoint_url, target, stream_view_type=None)
    record = {"eventName": "INSERT", "tableName": table, "dynamodb": {"Keys": {"pk": {"S": "a"}}}}
    kinesis.put_record(StreamName=stream, Data=json.dumps(record).encode(), PartitionKey="a")
    cfg = Config(
        source={
            "kind": "kinesis",
            "region": "us-east-1",
            "table": table,
            "kinesis_stream_name": stream,
            "endpoint_url": moto_server.endpoint_url,
        },
        target={"region": "us-west-2", "table": target, "endpoint_url": region_b.endpoint_url},
        checkpoint={"backend": "sqlite", "path": str(tmp_path / "cp.db")},
        metrics={"enabled": False},
    )
    report = await status_from_config(cfg)
    assert report.stream_arn == arn
    assert len(report.rows) == 2
    assert {row.progress for row in report.rows} == {"not_started"}
    assert sum(row.records_behind or 0 for row in report.rows) == 1
    assert report.summary()["shards"] == 2

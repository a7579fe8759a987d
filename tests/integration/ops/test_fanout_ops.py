"""``backfill`` and ``verify`` with ``targets:`` on DynamoDB Local: every target, or the one ``--target`` names."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from click.testing import CliRunner
from replicator_dev.local.common import create_table

from replicator.cli.main import main

if TYPE_CHECKING:
    from pathlib import Path

    from replicator_dev.local.dynamodb_local import DynamoDBLocal


def _setup(
    region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name: Any, tmp_path: Path
) -> tuple[Path, str, str, str]:
    """A source with 12 items, two empty target tables, and a config file naming them ``one`` and ``two``."""
    src, one, two = unique_name("src"), unique_name("one"), unique_name("two")
    create_table(region_a.endpoint_url, src)
    for table in (one, two):
        create_table(region_b.endpoint_url, table, stream_view_type=None, region_name="us-west-2")
    client = region_a.client()
    for i in range(12):
        client.put_item(TableName=src, Item={"pk": {"S": f"k{i}"}, "v": {"N": str(i)}})
    config = tmp_path / "replicator.yaml"
    target = {"region": "us-west-2", "endpoint_url": region_b.endpoint_url}
    config.write_text(
        json.dumps(
            {
                "source": {"region": "us-east-1", "table": src, "endpoint_url": region_a.endpoint_url},
                "targets": [{"name": "one", "table": one, **target}, {"name": "two", "table": two, **target}],
                "checkpoint": {"backend": "sqlite", "path": str(tmp_path / "state" / "cp.db")},
                "metrics": {"enabled": False},
            }
        )
    )
    return config, src, one, two


def _count(ddb: DynamoDBLocal, table: str) -> int:
    return len(ddb.client().scan(TableName=table, ConsistentRead=True)["Items"])


def test_backfill_copies_into_the_named_target_then_every_target(region_a, region_b, unique_name, tmp_path) -> None:
    """--target two fills two alone; without it, each target is copied in turn with its own progress."""
    config, _src, one, two = _setup(region_a, region_b, unique_name, tmp_path)
    args = ["backfill", "--config", str(config), "--segments", "2", "--no-progress"]

    only = CliRunner().invoke(main, [*args, "--target", "two"])
    assert only.exit_code == 0, only.output
    assert _count(region_b, two) == 12
    assert _count(region_b, one) == 0
    assert "target two:" in only.output
    assert "target one:" not in only.output

    every = CliRunner().invoke(main, args)
    assert every.exit_code == 0, every.output
    assert _count(region_b, one) == 12
    # two's own progress says it is done: it is not scanned again, one's copy is not skipped because of it.
    assert "target one:" in every.output
    assert "target two:" in every.output
    progress = json.loads((tmp_path / "state" / "backfill-progress.json").read_text())
    assert len(progress) == 2

    bad = CliRunner().invoke(main, [*args, "--target", "nope"])
    assert bad.exit_code == 2, bad.output


def test_verify_reports_each_target_and_exits_1_when_any_differs(region_a, region_b, unique_name, tmp_path) -> None:
    """One report per target; only two differs: exit 1, its keys named with two; --target one exits 0."""
    config, _src, _one, two = _setup(region_a, region_b, unique_name, tmp_path)
    backfill = ["backfill", "--config", str(config), "--segments", "2", "--no-progress", "--target", "one"]
    assert CliRunner().invoke(main, backfill).exit_code == 0

    result = CliRunner().invoke(main, ["verify", "--config", str(config), "--segments", "2"])
    assert result.exit_code == 1, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    assert {target for target, _kind, _keys in lines} == {"two"}
    assert len(lines) == 12
    assert "target one: ok" in result.stderr
    assert "target two: diverged: 12" in result.stderr

    assert CliRunner().invoke(main, ["verify", "--config", str(config), "--target", "one"]).exit_code == 0
    assert _count(region_b, two) == 0

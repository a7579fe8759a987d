"""``replicator verify`` on DynamoDB Local: finds differences by key, repairs them, honours transforms."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import yaml
from click.testing import CliRunner
from replicator_dev.local.common import create_table

from replicator.cli.main import main
from replicator.core.config import Config
from replicator.ops.verify import verify

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "SECRET-VALUE-4242"  # noqa: S105 - stands for item contents that must never be printed


def setup(region_a, region_b, unique_name, **extra: Any) -> tuple[Config, dict[str, Any]]:
    """Two tables and a config (as a dict too, for the CLI)."""
    src, dst = unique_name("v-src"), unique_name("v-dst")
    create_table(region_a.endpoint_url, src)
    create_table(region_b.endpoint_url, dst, region_name="us-west-2")
    raw: dict[str, Any] = {
        "source": {"region": "us-east-1", "table": src, "endpoint_url": region_a.endpoint_url},
        "target": {"region": "us-west-2", "table": dst, "endpoint_url": region_b.endpoint_url},
        "metrics": {"enabled": False},
        **extra,
    }
    return Config(**raw), raw


def put(ddb, table: str, pk: str, **attrs: Any) -> None:
    """Put an item with string attributes."""
    ddb.client().put_item(TableName=table, Item={"pk": {"S": pk}, **{k: {"S": v} for k, v in attrs.items()}})


def fill(cfg: Config, region_a, region_b) -> None:
    """Equal, different, missing, extra, tombstoned and marker-only-different items."""
    src, dst = cfg.source.table, cfg.target.table
    for i in range(30):
        put(region_a, src, f"same{i}", a="x")
        put(
            region_b,
            dst,
            f"same{i}",
            a="x",
            _rep_version="00000000000000001#us-east-1#1",
            _rep_origin="us-east-1",
        )
    put(region_a, src, "diff", a="x")
    put(region_b, dst, "diff", a=SECRET)
    put(region_a, src, "missing", a="x")
    put(region_b, dst, "extra", a=SECRET)
    # A tombstone in the target is an absent item: equal to nothing in the source.
    region_b.client().put_item(TableName=dst, Item={"pk": {"S": "gone"}, "_rep_deleted": {"BOOL": True}})


async def test_verify_reports_differing_keys(region_a, region_b, unique_name) -> None:
    """Differences are found by kind; markers and tombstones do not count as differences."""
    cfg, _ = setup(region_a, region_b, unique_name)
    fill(cfg, region_a, region_b)
    report = await verify(cfg, segments=4)
    assert report.source_items == 32
    assert report.target_items == 32
    assert report.target_tombstones == 1
    kinds = {(d.kind, d.keys["pk"]["S"]) for d in report.differences}
    assert kinds == {("different", "diff"), ("missing_in_target", "missing"), ("missing_in_source", "extra")}


async def test_repair_makes_the_tables_equal(region_a, region_b, unique_name) -> None:
    """--repair rewrites differing items and versioned-deletes extra ones; a second run is clean."""
    cfg, _ = setup(region_a, region_b, unique_name)
    fill(cfg, region_a, region_b)
    report = await verify(cfg, repair=True)
    assert report.repaired == 3
    assert report.unrepaired == 0
    extra = region_b.client().get_item(TableName=cfg.target.table, Key={"pk": {"S": "extra"}})["Item"]
    assert extra["_rep_deleted"] == {"BOOL": True}  # a tombstone, through the conditional writer
    assert "_rep_version" in extra
    again = await verify(cfg)
    assert not again.diverged


async def test_verify_compares_through_transforms_and_filters(region_a, region_b, unique_name) -> None:
    """A filtered and transformed replica verifies clean; a stale transformed item does not."""
    cfg, _ = setup(
        region_a,
        region_b,
        unique_name,
        filters=[{"dynamodb": {"NewImage": {"kind": {"S": ["keep"]}}}}],
        transforms=[
            {"type": "rename", "attributes": {"a": "alpha"}},
            {"type": "exclude", "attributes": ["secret"]},
        ],
    )
    src, dst = cfg.source.table, cfg.target.table
    put(region_a, src, "k1", a="1", kind="keep", secret="s")  # noqa: S106 - an attribute named secret, not a password
    put(region_b, dst, "k1", alpha="1", kind="keep")
    put(region_a, src, "k2", a="2", kind="drop")  # filtered: expected absent from the target
    report = await verify(cfg)
    assert not report.diverged, report.differences
    assert report.filtered == 1
    put(region_b, dst, "k1", alpha="old", kind="keep")
    report = await verify(cfg)
    assert [(d.kind, d.keys) for d in report.differences] == [("different", {"pk": {"S": "k1"}})]


def test_cli_prints_keys_only_and_exits_1(region_a, region_b, unique_name, tmp_path: Path) -> None:
    """The command lists differing keys (never values) and exits 1; 0 once repaired."""
    cfg, raw = setup(region_a, region_b, unique_name)
    fill(cfg, region_a, region_b)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["verify", "--config", str(path), "--segments", "2"])
    assert result.exit_code == 1, result.output
    assert SECRET not in result.output
    lines = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    assert sorted((kind, json.loads(keys)["pk"]["S"]) for kind, keys in lines) == [
        ("different", "diff"),
        ("missing_in_source", "extra"),
        ("missing_in_target", "missing"),
    ]
    repaired = CliRunner().invoke(main, ["verify", "--config", str(path), "--repair"])
    assert repaired.exit_code == 0, repaired.output
    assert CliRunner().invoke(main, ["verify", "--config", str(path)]).exit_code == 0

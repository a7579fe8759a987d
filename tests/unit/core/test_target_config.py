"""``target:`` or ``targets:``: one table, or several fed from one read (fan-out)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from replicator.core.config import Config
from replicator.core.config_load import json_schema

SOURCE = {"region": "us-east-1", "table": "orders"}


def _config(**data: Any) -> Config:
    return Config(source=SOURCE, **data)


def test_single_target_is_the_only_entry_of_targets() -> None:
    """``target:`` alone gives ``targets`` of one, named by its region, and no fan-out."""
    cfg = _config(target={"region": "eu-west-1", "table": "orders"})
    assert [t.target_id for t in cfg.targets] == ["eu-west-1"]
    assert cfg.targets[0] == cfg.target
    assert not cfg.fan_out


def test_targets_list_sets_target_to_the_first_and_fans_out() -> None:
    """``targets:`` keeps every entry in order; ``target`` is the first; names default to regions."""
    cfg = _config(
        targets=[{"region": "eu-west-1", "table": "orders"}, {"region": "ap-south-1", "table": "orders", "name": "ap"}]
    )
    assert [t.target_id for t in cfg.targets] == ["eu-west-1", "ap"]
    assert cfg.target.region == "eu-west-1"
    assert cfg.fan_out


def test_for_target_replaces_filters_and_transforms_with_the_targets_own() -> None:
    """A target's own filters/transforms replace the top-level ones for it alone."""
    own_filter = {"eventName": ["INSERT"]}
    cfg = _config(
        filters=[{"eventName": ["REMOVE"]}],
        transforms=[{"type": "exclude", "attributes": ["secret"]}],
        targets=[
            {"region": "eu-west-1", "table": "orders"},
            {"region": "ap-south-1", "table": "orders", "filters": [own_filter], "transforms": []},
        ],
    )
    first, second = (cfg.for_target(t) for t in cfg.targets)
    assert first.filters == [{"eventName": ["REMOVE"]}]
    assert first.transforms == [{"type": "exclude", "attributes": ["secret"]}]
    assert second.filters == [own_filter]
    assert second.transforms == []
    assert second.target.region == "ap-south-1"
    assert second.targets == [second.target]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "target\n  Field required"),
        ({"targets": []}, "targets is empty"),
        (
            {
                "target": {"region": "eu-west-1", "table": "orders"},
                "targets": [{"region": "x", "table": "orders"}, {"region": "y", "table": "orders"}],
            },
            "not both",
        ),
        (
            {"targets": [{"region": "eu-west-1", "table": "a-1"}, {"region": "eu-west-1", "table": "b-1"}]},
            "targets[1]: the name 'eu-west-1' is taken",
        ),
        (
            {
                "targets": [
                    {"region": "eu-west-1", "table": "a-1", "name": "one"},
                    {"region": "eu-west-1", "table": "a-1", "name": "two"},
                ]
            },
            "is listed twice",
        ),
        ({"targets": [{"region": "us-east-1", "table": "orders"}]}, "targets[0] is the source table itself"),
        (
            {
                "failure": {"parallelization_factor": 2},
                "targets": [{"region": "eu-west-1", "table": "orders"}, {"region": "ap-south-1", "table": "orders"}],
            },
            "failure.parallelization_factor above 1 is not supported with several targets",
        ),
        (
            {
                "fanout": {"on_shard_end_while_detached": "dead_letter"},
                "targets": [{"region": "eu-west-1", "table": "orders"}, {"region": "ap-south-1", "table": "orders"}],
            },
            "fanout.on_shard_end_while_detached: dead_letter needs failure.on_failure.destination",
        ),
        (
            {
                "replication": {"timestamp_attribute": "updatedAt"},
                "targets": [
                    {"region": "eu-west-1", "table": "orders"},
                    {
                        "region": "ap-south-1",
                        "table": "orders",
                        "transforms": [{"type": "include", "attributes": ["pk"]}],
                    },
                ],
            },
            "targets[1].transforms[0] (include) removes replication.timestamp_attribute",
        ),
    ],
)
def test_bad_targets_are_refused_naming_what_to_set(data: dict[str, Any], message: str) -> None:
    """Each mistake in target/targets is refused with a message naming the key."""
    with pytest.raises(ValueError, match=re.escape(message)):
        _config(**data)


def test_schema_accepts_either_target_or_targets() -> None:
    """The JSON Schema requires one of ``target`` and ``targets``, not ``target`` alone."""
    schema = json_schema()
    assert "target" not in schema["required"]
    assert schema["oneOf"] == [{"required": ["target"]}, {"required": ["targets"]}]


def test_a_dump_of_a_config_validates_again() -> None:
    """``Config(**cfg.model_dump())`` round-trips (the dump holds target and targets, the first the same)."""
    cfg = _config(targets=[{"region": "eu-west-1", "table": "orders"}, {"region": "ap-south-1", "table": "orders"}])
    assert Config(**cfg.model_dump()) == cfg
    single = _config(target={"region": "eu-west-1", "table": "orders"})
    assert Config(**single.model_dump()) == single
    edited = Config(**{**single.model_dump(), "target": {"region": "eu-west-1", "table": "other"}})
    assert [t.table for t in edited.targets] == ["other"]

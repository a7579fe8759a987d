"""A filter plus a transform chain, end to end on DynamoDB Local: the expected subset, in the expected shape."""

from __future__ import annotations

import pytest
from replicator_dev.local.common import create_table
from support import make_config, running, sample, scan, wait_until

from replicator.observe.metrics import OUTCOMES, Metrics


async def test_filtered_transformed_subset_reaches_a_target_with_another_key_schema(
    region_a, region_b, unique_name, tmp_path
) -> None:
    """Only matching records arrive, reshaped: attributes excluded/renamed/set, keys renamed for the target."""
    name, target_name = unique_name("src"), unique_name("dst")
    create_table(region_a.endpoint_url, name)
    create_table(region_b.endpoint_url, target_name, hash_key="id", stream_view_type=None)
    cfg = make_config(
        region_a,
        region_b,
        name,
        tmp_path,
        target_table=target_name,
        filters=[
            {"dynamodb": {"NewImage": {"status": {"S": ["paid", "shipped"]}}}},
            {"eventName": ["REMOVE"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "order#"}]}}}},
        ],
        transforms=[
            {"type": "exclude", "attributes": ["card"]},
            {"type": "rename", "attributes": {"total": "amount"}},
            {"type": "set", "attribute": "copiedFrom", "derived": "source_region"},
            {"type": "map_keys", "attributes": {"pk": "id"}},
        ],
        replication={"deletes": "delete"},
    )
    src = region_a.client()
    metrics = Metrics()
    async with running(cfg, metrics=metrics):
        for i in range(6):
            status = ("new", "paid", "shipped")[i % 3]
            src.put_item(
                TableName=name,
                Item={
                    "pk": {"S": f"order#{i}"},
                    "status": {"S": status},
                    "total": {"N": f"{i}.5"},
                    "card": {"S": "4111"},
                },
            )
        src.delete_item(TableName=name, Key={"pk": {"S": "order#2"}})
        src.put_item(TableName=name, Item={"pk": {"S": "draft#9"}, "status": {"S": "new"}})
        src.delete_item(TableName=name, Key={"pk": {"S": "draft#9"}})
        await wait_until(
            lambda: (
                sample(metrics, "replicator_records_total", target="eu-west-1", outcome="filtered") >= 4
                and sample(metrics, "replicator_records_total", target="eu-west-1", outcome="replicated") >= 4
            ),
            what="all 9 records reach an outcome",
        )
    target = {i["id"]["S"]: i for i in scan(region_b.client(), target_name)}
    # paid/shipped orders 1, 4, 5 (2 was deleted again); the 'new' ones and the draft are filtered out.
    assert sorted(target) == ["order#1", "order#4", "order#5"]
    markers = cfg.replication.marker_attributes
    assert {k: v for k, v in target["order#4"].items() if k not in markers} == {
        "id": {"S": "order#4"},
        "status": {"S": "paid"},
        "amount": {"N": "4.5"},
        "copiedFrom": {"S": "us-east-1"},
    }
    outcomes = {
        o: sample(metrics, "replicator_records_total", target="eu-west-1", outcome=o)
        for o in ("replicated", "collapsed", "filtered", "superseded")
    }
    assert sum(outcomes.values()) == 9  # 6 puts, 1 delete, a draft put and its delete
    assert outcomes["filtered"] == 4  # order#0, order#3, draft#9 put, draft#9 delete


@pytest.mark.parametrize(
    ("filter_mode", "expected"),
    [
        # Lambda-compatible: the delete of a#1 and a#2 leaving the subset are filtered out; the replica keeps them.
        ("lambda", {"a#1": "paid", "a#2": "paid", "a#3": "paid"}),
        # subset: a change whose OldImage matched also passes; leaving the subset deletes the target item.
        ("subset", {"a#3": "paid"}),
    ],
)
async def test_filter_mode_subset_removes_items_that_leave_the_subset(
    region_a, region_b, unique_name, tmp_path, *, filter_mode: str, expected: dict[str, str]
) -> None:
    """With filter_mode subset the replica holds exactly the matching items: deletes and leaving MODIFYs arrive."""
    name = unique_name("src")
    create_table(region_a.endpoint_url, name)
    create_table(region_b.endpoint_url, name, stream_view_type=None)
    cfg = make_config(
        region_a,
        region_b,
        name,
        tmp_path,
        filters=[{"dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}],
        filter_mode=filter_mode,
    )
    src = region_a.client()
    metrics = Metrics()
    async with running(cfg, metrics=metrics):
        for key, status in (("a#1", "paid"), ("a#2", "paid"), ("a#3", "new")):
            src.put_item(TableName=name, Item={"pk": {"S": key}, "status": {"S": status}})
        src.delete_item(TableName=name, Key={"pk": {"S": "a#1"}})
        src.put_item(TableName=name, Item={"pk": {"S": "a#2"}, "status": {"S": "cancelled"}})
        src.put_item(TableName=name, Item={"pk": {"S": "a#3"}, "status": {"S": "paid"}})
        await wait_until(
            lambda: (
                sum(sample(metrics, "replicator_records_total", target="eu-west-1", outcome=o) for o in OUTCOMES) >= 6
            ),
            what="all 6 records reach an outcome",
        )
    tombstone = cfg.replication.tombstone_attribute
    live = {i["pk"]["S"]: i["status"]["S"] for i in scan(region_b.client(), name) if tombstone not in i}
    assert live == expected

"""The table's stream disabled, then enabled again (a new stream ARN), under a running worker (DynamoDB Local)."""

from __future__ import annotations

from replicator_dev.local.common import create_table
from support import make_config, running, sample, scan, wait_until

from replicator.observe.metrics import Metrics


async def test_a_disabled_stream_is_reported_and_its_replacement_followed(
    region_a, region_b, unique_name, tmp_path
) -> None:
    """Disable: reported (metric, /readyz). Enable: the worker finishes the old stream and reads the new one."""
    name = unique_name()
    old_arn = create_table(region_a.endpoint_url, name)["LatestStreamArn"]
    create_table(region_b.endpoint_url, name, stream_view_type=None)
    cfg = make_config(region_a, region_b, name, tmp_path)
    src, tgt = region_a.client(), region_b.client()
    metrics = Metrics()

    def keys() -> set[str]:
        return {item["pk"]["S"] for item in scan(tgt, name)}

    async with running(cfg, metrics=metrics) as rep:
        src.put_item(TableName=name, Item={"pk": {"S": "before"}})
        await wait_until(lambda: keys() == {"before"}, what="the first item")
        src.update_table(TableName=name, StreamSpecification={"StreamEnabled": False})
        await wait_until(
            lambda: sample(metrics, "replicator_errors_total", kind="stream_disabled") == 1, what="stream_disabled"
        )
        assert "stream_disabled" in rep.state.not_ready(timeout_s=3600)
        # Written while no stream is enabled: in no stream, so never replicated (a backfill's job).
        src.put_item(TableName=name, Item={"pk": {"S": "gap"}})
        new_arn = src.update_table(
            TableName=name, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        )["TableDescription"]["LatestStreamArn"]
        assert new_arn != old_arn
        src.put_item(TableName=name, Item={"pk": {"S": "after"}})
        await wait_until(lambda: "after" in keys(), what="an item written to the new stream")
        assert rep.stream is not None
        assert rep.stream.arn == new_arn
        assert sample(metrics, "replicator_errors_total", kind="stream_replaced") == 1
        assert rep.state.stream_problem is None
        assert keys() == {"before", "after"}


async def test_a_worker_restarted_after_a_replacement_reads_the_old_streams_rest_first(
    region_a, region_b, unique_name, tmp_path
) -> None:
    """Stopped, then the stream replaced: on restart the old stream's unread records arrive, then the new one's."""
    name = unique_name()
    old_arn = create_table(region_a.endpoint_url, name)["LatestStreamArn"]
    create_table(region_b.endpoint_url, name, stream_view_type=None)
    cfg = make_config(region_a, region_b, name, tmp_path)
    src, tgt = region_a.client(), region_b.client()

    def keys() -> set[str]:
        return {item["pk"]["S"] for item in scan(tgt, name)}

    async with running(cfg):
        src.put_item(TableName=name, Item={"pk": {"S": "before"}})
        await wait_until(lambda: keys() == {"before"}, what="the first item")
    # While the worker is down: a change in the old stream, then the stream replaced, then a change in the new one.
    src.put_item(TableName=name, Item={"pk": {"S": "unread"}})
    src.update_table(TableName=name, StreamSpecification={"StreamEnabled": False})
    new_arn = src.update_table(
        TableName=name, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    )["TableDescription"]["LatestStreamArn"]
    assert new_arn != old_arn
    src.put_item(TableName=name, Item={"pk": {"S": "after"}})
    async with running(cfg) as rep:
        await wait_until(lambda: keys() == {"before", "unread", "after"}, what="the old stream's rest, then the new")
        assert rep.stream is not None
        assert rep.stream.arn == new_arn

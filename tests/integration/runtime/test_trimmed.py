"""Trimmed data against DynamoDB Local under libfaketime: a checkpoint that aged out is not data loss."""

from __future__ import annotations

from replicator_dev.local.common import create_table
from support import make_config, running, sample, scan, wait_until

from replicator.observe.metrics import Metrics


async def test_a_quiet_shard_whose_checkpointed_record_aged_out_reads_on(
    ddb_local_factory, region_b, unique_name, tmp_path
) -> None:
    """Caught up, then the clock moves 25 h: the checkpointed record aged out, nothing was lost, no alarm."""
    source = ddb_local_factory(time_travel=True)
    name = unique_name()
    create_table(source.endpoint_url, name)
    create_table(region_b.endpoint_url, name, stream_view_type=None)
    cfg = make_config(
        source, region_b, name, tmp_path, reader={"poll_interval_s": 0.5, "max_idle_poll_interval_s": 1.0}
    )
    metrics = Metrics()
    src = source.client()
    async with running(cfg, metrics=metrics) as rep:
        src.put_item(TableName=name, Item={"pk": {"S": "before"}})
        await wait_until(lambda: len(scan(region_b.client(), name)) == 1, what="first item")
        await wait_until(
            lambda: any(s.state == "reading" and s.newest_record_s is None for s in rep.state.shards.values()),
            what="the shard caught up (an empty read after the checkpoint)",
        )
        source.advance_clock(25 * 3600)
        await wait_until(
            lambda: sample(metrics, "replicator_errors_total", kind="expired_iterator") >= 1,
            what="the held iterator expired",
        )
        src.put_item(TableName=name, Item={"pk": {"S": "after"}})
        await wait_until(lambda: len(scan(region_b.client(), name)) == 2, what="the item written after the jump")
        assert not any(s.state == "stopped" for s in rep.state.shards.values())
    assert sample(metrics, "replicator_errors_total", kind="trimmed_data") == 0

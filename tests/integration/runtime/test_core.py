"""The core service against DynamoDB Local: event types, checkpoints, LATEST, iterators, trimmed data."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import pytest
from replicator_dev.local.common import create_table
from replicator_dev.local.dynamodb_local import DynamoDBLocal
from support import make_config, running, sample, scan, wait_until

from replicator.observe.metrics import Metrics
from replicator.ops.compare import compare_items


def _same(cfg: Any, source: DynamoDBLocal, target: DynamoDBLocal, table: str) -> bool:
    return compare_items(scan(source.client(), table), scan(target.client(), table), cfg.replication).equal


def _tables(source: DynamoDBLocal, target: DynamoDBLocal, name: str) -> None:
    create_table(source.endpoint_url, name)
    create_table(target.endpoint_url, name, stream_view_type=None)


RICH_ITEM: dict[str, Any] = {
    "pk": {"S": "rich"},
    "s": {"S": "text ✓"},
    "n": {"N": "12345678901234567890.123456789"},
    "b": {"B": base64.b64decode("AAEC")},
    "bool": {"BOOL": False},
    "null": {"NULL": True},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"\x00", b"\x01"]},
    "l": {"L": [{"S": "x"}, {"N": "1"}, {"M": {"deep": {"L": []}}}]},
    "m": {"M": {"inner": {"M": {"n": {"N": "0.1"}}}}},
}


@pytest.mark.parametrize("deletes", ["tombstone", "delete"])
async def test_every_event_type_is_replicated(region_a, region_b, unique_name, tmp_path, deletes) -> None:
    """INSERT, MODIFY and REMOVE of items of every attribute type reach the target exactly."""
    name = unique_name()
    _tables(region_a, region_b, name)
    cfg = make_config(region_a, region_b, name, tmp_path, replication={"deletes": deletes})
    src, tgt = region_a.client(), region_b.client()
    metrics = Metrics()
    async with running(cfg, metrics=metrics):
        src.put_item(TableName=name, Item=RICH_ITEM)
        src.put_item(TableName=name, Item={"pk": {"S": "gone"}, "v": {"N": "1"}})
        src.update_item(
            TableName=name,
            Key={"pk": {"S": "rich"}},
            UpdateExpression="SET n = :n REMOVE ss",
            ExpressionAttributeValues={":n": {"N": "-0.000001"}},
        )
        src.delete_item(TableName=name, Key={"pk": {"S": "gone"}})
        await wait_until(
            lambda: sample(metrics, "replicator_records_read_total", shard=_only_shard(metrics)) >= 4,
            what="4 records read",
        )
        await wait_until(lambda: _same(cfg, region_a, region_b, name), what="target equals source")
    target = {i["pk"]["S"]: i for i in scan(tgt, name)}
    assert target["rich"]["n"] == {"N": "-0.000001"}
    assert "ss" not in target["rich"]
    assert target["rich"]["b"] == RICH_ITEM["b"]
    assert target["rich"][cfg.replication.origin_attribute] == {"S": "us-east-1"}
    if deletes == "tombstone":
        assert target["gone"][cfg.replication.tombstone_attribute] == {"BOOL": True}
        assert set(target["gone"]) == {"pk", *cfg.replication.marker_attributes} - {
            cfg.replication.timestamp_marker_attribute
        }
    else:
        assert "gone" not in target
    assert (
        sample(metrics, "replicator_records_total", target="eu-west-1", outcome="replicated")
        + sample(metrics, "replicator_records_total", target="eu-west-1", outcome="collapsed")
        == 4
    )


def _only_shard(metrics: Metrics) -> str:
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == "replicator_records_read_total":
                return s.labels["shard"]
    return ""


async def test_restart_resumes_from_checkpoint(region_a, region_b, unique_name, tmp_path) -> None:
    """A restarted worker reads only what came after its checkpoint and loses nothing."""
    name = unique_name()
    _tables(region_a, region_b, name)
    cfg = make_config(region_a, region_b, name, tmp_path)
    src = region_a.client()
    first = Metrics()
    async with running(cfg, metrics=first):
        for i in range(30):
            src.put_item(TableName=name, Item={"pk": {"S": f"k{i}"}, "v": {"N": str(i)}})
        await wait_until(lambda: _same(cfg, region_a, region_b, name), what="first run converged")
    for i in range(30, 45):
        src.put_item(TableName=name, Item={"pk": {"S": f"k{i}"}, "v": {"N": str(i)}})
    second = Metrics()
    async with running(cfg, metrics=second):
        await wait_until(lambda: _same(cfg, region_a, region_b, name), what="second run converged")
    read_again = sum(
        s.value for f in second.registry.collect() for s in f.samples if s.name == "replicator_records_read_total"
    )
    assert read_again == 15


async def test_latest_start_ignores_history(region_a, region_b, unique_name, tmp_path) -> None:
    """starting_position LATEST skips what was written before the worker started."""
    name = unique_name()
    _tables(region_a, region_b, name)
    src = region_a.client()
    src.put_item(TableName=name, Item={"pk": {"S": "history"}})
    cfg = make_config(region_a, region_b, name, tmp_path, starting_position="LATEST")
    metrics = Metrics()
    async with running(cfg, metrics=metrics):
        # LATEST means "from when the reader took its iterator": write only after its first poll.
        await wait_until(
            lambda: sample(metrics, "replicator_get_records_calls_total", result="empty") >= 1, what="first poll"
        )
        src.put_item(TableName=name, Item={"pk": {"S": "new"}})
        await wait_until(lambda: len(scan(region_b.client(), name)) == 1, what="the new item")
    assert [i["pk"]["S"] for i in scan(region_b.client(), name)] == ["new"]


async def test_keys_only_stream_is_refused(region_a, region_b, unique_name, tmp_path) -> None:
    """A KEYS_ONLY stream cannot be replicated: the worker refuses to start, saying why."""
    from replicator.core.errors import StreamConfigError  # noqa: PLC0415

    name = unique_name()
    create_table(region_a.endpoint_url, name, stream_view_type="KEYS_ONLY")
    cfg = make_config(region_a, region_b, name, tmp_path)
    with pytest.raises(StreamConfigError, match="KEYS_ONLY"):
        async with running(cfg):
            pass


async def test_expired_iterator_is_reacquired_from_checkpoint(
    ddb_local_factory, region_b, unique_name, tmp_path
) -> None:
    """An iterator expired for real (clock moved 16 min under libfaketime) is replaced; nothing is lost."""
    source = ddb_local_factory(time_travel=True)
    name = unique_name()
    _tables(source, region_b, name)
    # A long idle poll keeps the held iterator unused while the clock jumps.
    cfg = make_config(
        source, region_b, name, tmp_path, reader={"poll_interval_s": 0.5, "max_idle_poll_interval_s": 1.0}
    )
    metrics = Metrics()
    src = source.client()
    async with running(cfg, metrics=metrics):
        src.put_item(TableName=name, Item={"pk": {"S": "before"}})
        await wait_until(lambda: _same(cfg, source, region_b, name), what="first item")
        await _until_an_iterator_expires(source, metrics)
        src.put_item(TableName=name, Item={"pk": {"S": "after"}})
        await wait_until(lambda: _same(cfg, source, region_b, name), what="item after the expiry")
    assert len(scan(region_b.client(), name)) == 2


async def _until_an_iterator_expires(source: DynamoDBLocal, metrics: Metrics) -> None:
    """Move the clock 16 min until the worker meets an expired iterator.

    A GetRecords in flight while the clock moves hands back an iterator issued after the jump, which does
    not expire: then the clock moves again (at most 6 times, 96 min, far inside the 24 h retention).
    """
    for _ in range(5):
        source.advance_clock(16 * 60)
        with contextlib.suppress(AssertionError):
            await wait_until(
                lambda: sample(metrics, "replicator_errors_total", kind="expired_iterator") >= 1,
                timeout_s=10,
                what="an expired iterator",
            )
            return
    source.advance_clock(16 * 60)
    await wait_until(
        lambda: sample(metrics, "replicator_errors_total", kind="expired_iterator") >= 1, what="an expired iterator"
    )


@pytest.mark.parametrize("on_trimmed", ["fail", "skip_to_trim_horizon"])
async def test_trimmed_data_stops_the_shard_unless_told_to_skip(
    ddb_local_factory, region_b, unique_name, tmp_path, on_trimmed
) -> None:
    """Records trimmed before being read (clock moved 25 h) stop the shard by default, or are skipped if configured."""
    source = ddb_local_factory(time_travel=True)
    name = unique_name()
    _tables(source, region_b, name)
    cfg = make_config(source, region_b, name, tmp_path, reader={"on_trimmed_data": on_trimmed})
    src = source.client()
    async with running(cfg):
        src.put_item(TableName=name, Item={"pk": {"S": "read"}})
        await wait_until(lambda: len(scan(region_b.client(), name)) == 1, what="first item")
    # While the worker is down, changes are written and then age out of the 24 h window.
    src.put_item(TableName=name, Item={"pk": {"S": "lost"}})
    source.advance_clock(25 * 3600)
    src.put_item(TableName=name, Item={"pk": {"S": "fresh"}})
    metrics = Metrics()
    async with running(cfg, metrics=metrics) as rep:
        await wait_until(
            lambda: sample(metrics, "replicator_errors_total", kind="trimmed_data") >= 1, what="trimmed data"
        )
        if on_trimmed == "fail":
            await wait_until(lambda: any(s.state == "stopped" for s in rep.state.shards.values()), what="shard stopped")
            assert {i["pk"]["S"] for i in scan(region_b.client(), name)} == {"read"}
        else:
            await wait_until(lambda: len(scan(region_b.client(), name)) == 2, what="fresh item")
            assert {i["pk"]["S"] for i in scan(region_b.client(), name)} == {"read", "fresh"}
            assert sample(metrics, "replicator_errors_total", kind="trimmed_data_skipped") == 1


async def test_source_tombstone_never_replaces_an_item_recreated_in_the_source(
    region_a, region_b, unique_name, tmp_path
) -> None:
    """Delete then re-create in the source: the delete's source tombstone loses to the re-created item."""
    name = unique_name()
    _tables(region_a, region_b, name)
    src = region_a.client()
    src.put_item(TableName=name, Item={"pk": {"S": "k"}, "v": {"N": "1"}, "updatedAt": {"N": "1000"}})
    src.delete_item(TableName=name, Key={"pk": {"S": "k"}})
    recreated = {"pk": {"S": "k"}, "v": {"N": "2"}, "updatedAt": {"N": "3000"}}  # no markers
    src.put_item(TableName=name, Item=recreated)
    # One record per batch: the delete is handled on its own, after the re-create already happened.
    # source_tombstones (active-active) needs timestamp_attribute; the re-create's is above the deleted item's.
    replication = {"source_tombstones": True, "timestamp_attribute": "updatedAt", "timestamp_unit": "ms"}
    cfg = make_config(region_a, region_b, name, tmp_path, replication=replication, failure={"batch_size": 1})
    metrics = Metrics()
    async with running(cfg, metrics=metrics):
        await wait_until(
            lambda: sample(metrics, "replicator_records_total", target="eu-west-1", outcome="replicated") >= 3,
            what="3 records",
        )
    source_item = src.get_item(TableName=name, Key={"pk": {"S": "k"}}, ConsistentRead=True)["Item"]
    assert source_item == recreated
    target_item = region_b.client().get_item(TableName=name, Key={"pk": {"S": "k"}}, ConsistentRead=True)["Item"]
    assert target_item["v"] == {"N": "2"}
    assert cfg.replication.tombstone_attribute not in target_item

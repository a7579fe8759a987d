"""A worker whose leases are stolen reports only the shards it owns (Kinesis on moto, leases in DynamoDB Local)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from support import running, wait_until

from replicator.core.config import Config
from replicator.observe.metrics import Metrics

if TYPE_CHECKING:
    from replicator_dev.local.dynamodb_local import DynamoDBLocal
    from replicator_dev.local.moto_server import MotoServer

SHARDS = 4


def _config(moto: MotoServer, ddb: DynamoDBLocal, arn: str, names: dict[str, str], worker: str) -> Config:
    return Config.model_validate(
        {
            "source": {"kind": "kinesis", "region": "us-east-1", "stream_arn": arn, "endpoint_url": moto.endpoint_url},
            "target": {"region": "us-west-2", "table": names["target"], "endpoint_url": ddb.endpoint_url},
            "checkpoint": {"backend": "dynamodb", "table": names["leases"]},
            "leases": {"enabled": True, "failover_time_s": 60, "renew_interval_s": 0.5},
            "worker_id": worker,
            "metrics": {"enabled": False},
            "reader": {"poll_interval_s": 0.05, "max_idle_poll_interval_s": 0.2, "shard_discovery_interval_s": 0.5},
            "starting_position": "TRIM_HORIZON",
        }
    )


def _shard_series(metrics: Metrics) -> set[str]:
    return {
        s.labels["shard"]
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "replicator_iterator_age_seconds"
    }


async def test_a_worker_whose_leases_are_stolen_exports_only_the_shards_it_owns(
    moto_server: MotoServer, region_b: DynamoDBLocal, unique_name
) -> None:
    """A holds 4 shards; B joins and steals 2: A reports 2 reading shards and 2 lag series, and stays ready."""
    from replicator_dev.local.common import create_table  # noqa: PLC0415 - only this test needs it

    kinesis = moto_server.client("kinesis")
    stream = unique_name("ks")
    names = {"target": unique_name("dst"), "leases": unique_name("leases")}
    kinesis.create_stream(StreamName=stream, ShardCount=SHARDS)
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    create_table(region_b.endpoint_url, names["target"])
    for n in range(20):
        payload: dict[str, Any] = {
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "ApproximateCreationDateTime": int(time.time() * 1000),
                "Keys": {"pk": {"S": f"k{n}"}},
                "NewImage": {"pk": {"S": f"k{n}"}},
            },
        }
        kinesis.put_record(StreamName=stream, Data=json.dumps(payload).encode(), PartitionKey=f"k{n}")
    metrics_a, metrics_b = Metrics(), Metrics()
    cfg_a = _config(moto_server, region_b, arn, names, "worker-a")
    cfg_b = _config(moto_server, region_b, arn, names, "worker-b")
    async with running(cfg_a, metrics=metrics_a) as a:
        await wait_until(lambda: a.state.count("reading") == SHARDS, what="A reads every shard")
        async with running(cfg_b, metrics=metrics_b) as b:
            await wait_until(lambda: b.state.count("reading") == SHARDS // 2, what="B stole half the shards")
            await wait_until(lambda: a.state.count("reading") == SHARDS // 2, what="A reports only what it owns")
            assert a.state.count("owned") == SHARDS // 2
            assert len(_shard_series(metrics_a)) == SHARDS // 2
            assert _shard_series(metrics_a).isdisjoint(_shard_series(metrics_b))
            assert a.state.not_ready(timeout_s=60) == []

"""The baseline: the stream-to-table Lambda handler of the seed articles, as one plain process.

What it reproduces: Lambda's event source mapping reads a shard in batches of 100 (GetRecords
Limit=100), polls again at once after a full page and 4 times a second otherwise; the handler walks the
batch and makes one synchronous boto3 call per record (PutItem of NewImage, DeleteItem of Keys), with no
conditions and no collapsing. Shards are read parent first, one at a time.

It prints ``{"records": n, "t": monotonic}`` after every batch (the harness reads progress from it) and
runs until SIGTERM.

    python bench/baseline.py --source-endpoint URL --target-endpoint URL --stream-arn ARN --target-table T
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

import boto3
import botocore.config

POLL_INTERVAL_S = 0.25  # Lambda polls each shard 4 times a second
BATCH_SIZE = 100


def _client(service: str, endpoint: str, region: str) -> Any:  # noqa: ANN401 - boto3
    # Lambda's runtime creates the client once, outside the handler, with the SDK defaults.
    cfg = botocore.config.Config(retries={"mode": "standard"})
    return boto3.session.Session().client(service, endpoint_url=endpoint, region_name=region, config=cfg)


def handler(table: Any, records: list[dict[str, Any]], target_table: str) -> None:  # noqa: ANN401 - boto3
    """Apply a batch as the seed articles' handler does: one synchronous write per record."""
    for record in records:
        ddb = record["dynamodb"]
        if record["eventName"] == "REMOVE":
            table.delete_item(TableName=target_table, Key=ddb["Keys"])
        else:
            table.put_item(TableName=target_table, Item=ddb["NewImage"])


def main() -> int:
    """Poll every shard of the stream and apply its records to the target until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source-endpoint", required=True)
    parser.add_argument("--target-endpoint", required=True)
    parser.add_argument("--stream-arn", required=True)
    parser.add_argument("--target-table", required=True)
    parser.add_argument("--source-region", default="us-east-1")
    parser.add_argument("--target-region", default="eu-west-1")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    streams = _client("dynamodbstreams", args.source_endpoint, args.source_region)
    target = _client("dynamodb", args.target_endpoint, args.target_region)
    sys.stdout.write(json.dumps({"ready": time.monotonic()}) + "\n")
    sys.stdout.flush()
    done: set[str] = set()
    total = 0
    while True:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": args.stream_arn}
        while True:
            page = streams.describe_stream(**kwargs)["StreamDescription"]
            shards += page.get("Shards", [])
            if not page.get("LastEvaluatedShardId"):
                break
            kwargs["ExclusiveStartShardId"] = page["LastEvaluatedShardId"]
        ids = {s["ShardId"] for s in shards}
        ready = [
            s
            for s in shards
            if s["ShardId"] not in done and (s.get("ParentShardId") in done or s.get("ParentShardId") not in ids)
        ]
        if not ready:
            time.sleep(POLL_INTERVAL_S)
            continue
        for shard in ready:
            iterator = streams.get_shard_iterator(
                StreamArn=args.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                resp = streams.get_records(ShardIterator=iterator, Limit=BATCH_SIZE)
                records = resp.get("Records", [])
                if records:
                    handler(target, records, args.target_table)
                    total += len(records)
                    sys.stdout.write(json.dumps({"records": total, "t": time.monotonic()}) + "\n")
                    sys.stdout.flush()
                iterator = resp.get("NextShardIterator")
                if len(records) < BATCH_SIZE and iterator:
                    time.sleep(POLL_INTERVAL_S)
            done.add(shard["ShardId"])


if __name__ == "__main__":
    sys.exit(main())

"""Cost per record of a 5-rule filter plus a 3-step transform chain, next to the write path's CPU cost.

    .venv/bin/python bench/bench_pipeline.py [--records 20000] [--json out.json]

Runs the real ``Pipeline`` (classify, filters, marker stripping, transforms, versioning) on synthetic
stream records shaped like DynamoDB Streams output, in one process, no I/O; prints µs per record.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from typing import Any

from replicator.core.config import Config
from replicator.core.records import ChangeRecord, from_stream_record
from replicator.pipeline.stages import Pipeline

FILTERS: list[dict[str, Any]] = [
    {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["paid", "shipped"]}}}},
    {"dynamodb": {"NewImage": {"region": {"S": [{"prefix": "eu-"}]}}}},
    {"dynamodb": {"Keys": {"pk": {"S": [{"anything-but": {"prefix": "tmp#"}}]}}}},
    {"dynamodb": {"NewImage": {"total": {"N": [{"exists": True}]}, "vip": {"BOOL": [True]}}}},
    {"eventName": ["REMOVE"]},
]
TRANSFORMS: list[dict[str, Any]] = [
    {"type": "exclude", "attributes": ["ssn", "notes"]},
    {"type": "rename", "attributes": {"total": "amount"}},
    {"type": "set", "attribute": "replicatedAt", "derived": "replication_time_iso"},
]


def _records(n: int) -> list[ChangeRecord]:
    out = []
    now = dt.datetime.now(tz=dt.UTC)
    for i in range(n):
        image = {
            "pk": {"S": f"order#{i:07d}"},
            "status": {"S": ("new", "paid", "shipped")[i % 3]},
            "region": {"S": ("eu-west-1", "us-east-1")[i % 2]},
            "total": {"N": f"{i % 1000}.{i % 100:02d}"},
            "vip": {"BOOL": i % 5 == 0},
            "ssn": {"S": "000-00-0000"},
            "notes": {"S": "x" * 200},
            "lines": {"L": [{"M": {"sku": {"S": f"sku-{i % 50}"}, "qty": {"N": "2"}}}]},
        }
        raw = {
            "eventID": str(i),
            "eventName": "MODIFY",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": now,
                "Keys": {"pk": image["pk"]},
                "NewImage": image,
                "OldImage": image,
                "SequenceNumber": f"{i + 1:021d}",
                "SizeBytes": 400,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
        out.append(from_stream_record(raw, shard_id="shard-0", stream_arn="arn:bench"))
    return out


def _per_record_us(pipeline: Pipeline, records: list[ChangeRecord], repeats: int) -> float:
    best = []
    for _ in range(repeats):
        start = time.process_time()
        for record in records:
            pipeline.run(record)
        best.append((time.process_time() - start) / len(records) * 1e6)
    return min(best)


def main() -> None:
    """Measure and print µs per record for three pipelines."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    base = {"source": {"region": "us-east-1", "table": "Orders"}, "target": {"region": "eu-west-1", "table": "Orders"}}
    records = _records(args.records)
    results = {}
    for name, extra in (
        ("no filters, no transforms", {}),
        ("5 filters", {"filters": FILTERS}),
        ("5 filters + 3 transforms", {"filters": FILTERS, "transforms": TRANSFORMS}),
    ):
        pipeline = Pipeline.from_config(Config(**base, **extra))  # type: ignore[arg-type]
        results[name] = _per_record_us(pipeline, records, args.repeats)
    passed = sum(
        1 for r in records if not isinstance(Pipeline.from_config(Config(**base, filters=FILTERS)).run(r), str)
    )  # type: ignore[arg-type]
    print(f"pipeline cost per record ({args.records} MODIFY records, best of {args.repeats}, CPU time):")
    for name, us in results.items():
        print(f"  {name:<28} {us:7.1f} µs")
    added = results["5 filters + 3 transforms"] - results["no filters, no transforms"]
    print(
        f"  filters + transforms add    {added:7.1f} µs per record ({passed}/{len(records)} records pass the filters)"
    )
    print(
        f"python {platform.python_version()}, {platform.machine()}, "
        f"median of runs {statistics.median(results.values()):.1f} µs"
    )
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:  # noqa: PTH123 - a plain script
            json.dump({"per_record_us": results, "added_us": added, "records": args.records}, fh, indent=2)


if __name__ == "__main__":
    main()

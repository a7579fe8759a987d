"""Least privilege, proven: the AWS actions real runs make, against what each template's role grants.

Every call is recorded as ``service:Operation`` plus the kind of resource it names (source table, its
stream, target table, checkpoint table, queue, Kinesis stream, role), at botocore's single entry point for
API calls and at the lean path's, while the replicator runs in each mode (DynamoDB Streams and Kinesis
sources, leases on the checkpoint table, dead letters to SQS, deletes as DeleteItem, source tombstones,
a cross-account target with an ExternalId) and runs each command an ECS task is used for (run, backfill,
verify, status), against DynamoDB Local and moto. The Lambda handler is invoked with a batch that writes,
deletes and dead-letters. Then, both ways: every recorded call is granted on that kind of resource, and
every granted action was called (or is listed below with the reason no call of ours shows it).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiobotocore.client import AioBaseClient
from cfn_support import ECS_TEMPLATE, LAMBDA_TEMPLATE, actions_of, role_statements
from replicator_dev.local.common import create_table
from support import make_config, running, sample, wait_until

from replicator.aws.lean import LeanDynamoDB
from replicator.core.config import Config
from replicator.observe.metrics import Metrics
from replicator.ops.backfill import BackfillSettings
from replicator.ops.backfill.run import run_backfill
from replicator.ops.status import status_from_config
from replicator.ops.verify import verify

if TYPE_CHECKING:
    from replicator_dev.local.dynamodb_local import DynamoDBLocal
    from replicator_dev.local.moto_server import MotoServer

IAM_NAMES = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage"}
"""Batch operations IAM authorises under the single action."""

PREFIX = {"dynamodb": "dynamodb", "dynamodbstreams": "dynamodb", "kinesis": "kinesis", "sqs": "sqs", "sts": "sts"}

NOT_CALLED_ECS = {
    ("kms:Decrypt", "kms"): "Kinesis checks it on GetRecords of a stream encrypted with a customer key",
    ("dynamodb:UpdateTable", "checkpoint"): "adds the live-leases index to a checkpoint table an older version "
    "created (tests/integration/checkpoint/test_lease_cleanup.py); this run's table is created with it",
}
LAMBDA_SERVICE = {
    # Lambda's event source mapping polls the stream with the function's role ...
    ("dynamodb:DescribeStream", "stream"),
    ("dynamodb:GetShardIterator", "stream"),
    ("dynamodb:GetRecords", "stream"),
    ("dynamodb:ListStreams", "*"),
    # ... sends batch metadata to the on-failure destination with it ...
    ("sqs:SendMessage", "queue"),
    # ... and Lambda writes the function's logs with it.
    ("logs:CreateLogStream", "logs"),
    ("logs:PutLogEvents", "logs"),
}
"""Actions Lambda itself takes with the function's role (AWS Lambda's documentation), not the handler."""


class Recorder:
    """``(iam action, resource kind)`` of every call, kinds told apart by the names of this test's resources."""

    def __init__(self, names: dict[str, str]) -> None:
        """``names``: table name (or queue URL) -> kind."""
        self.names = names
        self.calls: set[tuple[str, str]] = set()

    def kind(self, service: str, params: dict[str, Any]) -> str:
        """The kind of resource a call names."""
        if service == "dynamodbstreams":
            # ListStreams (even with a TableName) has no resource-level permissions: "*".
            return "*" if not ({"StreamArn", "ShardIterator"} & set(params)) else "stream"
        # BatchGetItem/BatchWriteItem name their table in RequestItems (this test's batches name one).
        tables = [params["TableName"]] if "TableName" in params else list(params.get("RequestItems", ()))
        if tables:
            (table,) = tables
            return self.names[str(table)]
        by_param = {"QueueUrl": "queue", "RoleArn": "role"}
        found = [kind for param, kind in by_param.items() if param in params]
        if found:
            return found[0]
        if service == "kinesis":
            return "kinesis"
        raise AssertionError(f"unknown resource in {service} call: {sorted(params)}")

    def add(self, service: str, operation: str, params: dict[str, Any]) -> None:
        """Record one call."""
        self.calls.add((f"{PREFIX[service]}:{IAM_NAMES.get(operation, operation)}", self.kind(service, params)))


def _kind_of_resource(resource: object) -> str:
    """The kind of resource a template statement names (by the parameter or resource it refers to)."""
    text = json.dumps(resource)
    rules = [
        (r"SourceTableName\}/stream|SourceStreamArn", "stream"),
        (r"table/\$\{SourceTableName\}", "source"),
        (r"TargetTableName", "target"),
        (r"CheckpointTableName", "checkpoint"),
        (r"DeadLetterQueue", "queue"),
        (r"SourceKinesisKmsKeyArn", "kms"),
        (r"SourceKinesisStreamArn", "kinesis"),
        (r"TargetRoleArn", "role"),
        (r"LogGroup", "logs"),
    ]
    if resource == "*":
        return "*"
    for pattern, kind in rules:
        if re.search(pattern, text):
            return kind
    raise AssertionError(f"statement resource of no known kind: {text}")


def granted(template: Path, role: str) -> set[tuple[str, str]]:
    """``(action, kind)`` for every action of every statement of ``role`` (conditional ones included)."""
    pairs = set()
    for statement in role_statements(template, role):
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            kind = _kind_of_resource(resource)
            if kind == "checkpoint" and "/index/" in json.dumps(resource):
                continue  # the checkpoint table's indexes: same actions, no call names an index
            pairs.update((action, kind) for action in actions_of(statement))
    return pairs


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Record every botocore API call and every lean-path call made during the test."""
    rec = Recorder({})
    botocore_call = AioBaseClient._make_api_call
    lean_call = LeanDynamoDB._call

    async def via_botocore(self: AioBaseClient, operation: str, params: dict[str, Any]) -> Any:
        rec.add(self.meta.service_model.service_name, operation, params)
        return await botocore_call(self, operation, params)

    async def via_lean(self: LeanDynamoDB, operation: str, params: dict[str, Any]) -> Any:
        service = "dynamodbstreams" if self._target_prefix.startswith("DynamoDBStreams") else "dynamodb"
        rec.add(service, operation, dict(params))
        return await lean_call(self, operation, params)

    monkeypatch.setattr(AioBaseClient, "_make_api_call", via_botocore)
    monkeypatch.setattr(LeanDynamoDB, "_call", via_lean)
    return rec


def _target_with_index(region: DynamoDBLocal, name: str) -> None:
    """A target whose index key g is a number: an item with a string g is refused (a dead letter)."""
    region.client().create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


async def test_ecs_task_role_grants_exactly_what_the_commands_call(  # noqa: PLR0917 - fixtures
    recorder: Recorder,
    region_a: DynamoDBLocal,
    region_b: DynamoDBLocal,
    moto_server: MotoServer,
    unique_name,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every action the ECS commands call is granted on that resource, and every grant is called."""
    source, target, checkpoint = unique_name("src"), unique_name("dst"), unique_name("cp")
    create_table(region_a.endpoint_url, source)
    _target_with_index(region_b, target)
    queue = moto_server.client("sqs").create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    recorder.names.update({source: "source", target: "target", checkpoint: "checkpoint"})
    cfg = make_config(
        region_a,
        region_b,
        source,
        tmp_path,
        target_table=target,
        checkpoint={
            "backend": "dynamodb",
            "table": checkpoint,
            "endpoint_url": region_b.endpoint_url,
            "region": "eu-west-1",
        },
        leases={"enabled": True},
        replication={"deletes": "tombstone", "source_tombstones": True, "timestamp_attribute": "updatedAt"},
        failure={
            "on_failure": {
                "destination": queue,
                "endpoint_url": moto_server.endpoint_url,
                "region": moto_server.region_name,
            }
        },
    )
    src = region_a.client()
    metrics = Metrics()
    async with running(cfg, metrics=metrics):
        await asyncio.to_thread(src.put_item, TableName=source, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
        await asyncio.to_thread(src.put_item, TableName=source, Item={"pk": {"S": "bad"}, "g": {"S": "not a number"}})
        await asyncio.to_thread(src.delete_item, TableName=source, Key={"pk": {"S": "a"}})
        await wait_until(
            lambda: (
                sample(metrics, "replicator_records_total", target="eu-west-1", outcome="dead_lettered") >= 1
                and ("dynamodb:PutItem", "source") in recorder.calls
            ),
            what=f"a dead letter and a source tombstone; calls so far: {sorted(recorder.calls)}",
        )
    # replication.deletes: delete, on the same tables and checkpoints.
    deleting = Config(**{**cfg.model_dump(), "replication": {"deletes": "delete"}})
    async with running(deleting):
        await asyncio.to_thread(src.put_item, TableName=source, Item={"pk": {"S": "c"}, "v": {"N": "1"}})
        await asyncio.to_thread(src.delete_item, TableName=source, Key={"pk": {"S": "c"}})
        await wait_until(lambda: ("dynamodb:DeleteItem", "target") in recorder.calls, what="a target DeleteItem")
    # The commands, with the same tables (backfill refuses replication.source_tombstones: its processor
    # is built without a source client).
    await run_backfill(deleting, BackfillSettings(segments=1))
    await run_backfill(deleting, BackfillSettings(segments=1, restart=True))  # clears its progress items
    await verify(deleting, segments=1, repair=True)  # "bad" is missing in the target: repair re-reads it
    await status_from_config(deleting)

    # Cross-account: the target role assumed with an ExternalId (moto's STS).
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server.endpoint_url)
    role = {"role_arn": "arn:aws:iam::123456789012:role/writer", "external_id": "ext-1"}
    await verify(Config(**{**deleting.model_dump(), "target": {**cfg.target.model_dump(), **role}}), segments=1)

    # The Kinesis source (moto), with the same checkpoint table.
    kinesis = moto_server.client("kinesis")
    stream = unique_name("ks")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    kinesis_cfg = Config(
        **{
            **deleting.model_dump(),
            "source": {
                "kind": "kinesis",
                "region": "us-east-1",
                "stream_arn": arn,
                "endpoint_url": moto_server.endpoint_url,
            },
            "replication": {},
        }
    )
    async with running(kinesis_cfg):
        await wait_until(lambda: ("kinesis:GetRecords", "kinesis") in recorder.calls, what="a Kinesis GetRecords")

    allowed = granted(ECS_TEMPLATE, "TaskRole")
    not_granted = sorted(c for c in recorder.calls if c not in allowed and (c[0], "*") not in allowed)
    never_called = sorted(allowed - recorder.calls - set(NOT_CALLED_ECS))
    assert (not_granted, never_called) == ([], []), (
        f"(called not granted, granted never called); {sorted(recorder.calls)}"
    )


def _event(name: str, key: str, sequence: int, image: dict[str, Any] | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eventID": str(sequence),
        "eventName": name,
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000",
        "dynamodb": {
            "Keys": {"pk": {"S": key}},
            "SequenceNumber": str(100 + sequence),
            "SizeBytes": 20,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "ApproximateCreationDateTime": 1767225600 + sequence,
        },
    }
    if image is not None:
        record["dynamodb"]["NewImage"] = image
    return record


def test_lambda_function_role_grants_exactly_what_the_handler_and_lambda_call(
    recorder: Recorder, region_b: DynamoDBLocal, moto_server: MotoServer, unique_name, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler's calls (write, delete, dead letter, cross-account) plus Lambda's own are the role's grants."""
    from replicator.runtime import lambda_function  # noqa: PLC0415 - the handler's package, used here only

    target = unique_name("dst")
    _target_with_index(region_b, target)
    queue = moto_server.client("sqs").create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    recorder.names.update({target: "target"})
    env = {
        "REPLICATOR_SOURCE__REGION": "us-east-1",
        "REPLICATOR_SOURCE__TABLE": "src",
        "REPLICATOR_TARGET__REGION": "us-west-2",
        "REPLICATOR_TARGET__TABLE": target,
        "REPLICATOR_TARGET__ENDPOINT_URL": region_b.endpoint_url,
        "REPLICATOR_REPLICATION__DELETES": "delete",
        "REPLICATOR_FAILURE__ON_FAILURE__DESTINATION": queue,
        "REPLICATOR_FAILURE__ON_FAILURE__ENDPOINT_URL": moto_server.endpoint_url,
        "REPLICATOR_FAILURE__ON_FAILURE__REGION": moto_server.region_name,
        "REPLICATOR_METRICS__ENABLED": "false",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    batch = {
        "Records": [
            _event("INSERT", "a", 1, {"pk": {"S": "a"}, "v": {"N": "1"}}),
            _event("INSERT", "bad", 2, {"pk": {"S": "bad"}, "g": {"S": "not a number"}}),
            _event("REMOVE", "a", 3, None),
        ]
    }
    lambda_function.reset()
    try:
        assert lambda_function.handler(batch, None) == {"batchItemFailures": []}
        # Cross-account: the target role assumed with an ExternalId (moto's STS).
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server.endpoint_url)
        monkeypatch.setenv("REPLICATOR_TARGET__ROLE_ARN", "arn:aws:iam::123456789012:role/writer")
        monkeypatch.setenv("REPLICATOR_TARGET__EXTERNAL_ID", "ext-1")
        lambda_function.reset()
        batch["Records"][0]["dynamodb"]["SequenceNumber"] = "200"
        assert lambda_function.handler({"Records": batch["Records"][:1]}, None) == {"batchItemFailures": []}
    finally:
        lambda_function.reset()

    handler_calls = set(recorder.calls)
    assert {
        ("dynamodb:PutItem", "target"),
        ("dynamodb:DeleteItem", "target"),
        ("sqs:SendMessage", "queue"),
    } <= handler_calls
    assert ("sts:AssumeRole", "role") in handler_calls
    allowed = granted(LAMBDA_TEMPLATE, "FunctionRole")
    used = handler_calls | LAMBDA_SERVICE
    not_granted = sorted(c for c in used if c not in allowed and (c[0], "*") not in allowed)
    never_called = sorted(allowed - used)
    assert (not_granted, never_called) == ([], []), f"(called not granted, granted never called); {sorted(used)}"

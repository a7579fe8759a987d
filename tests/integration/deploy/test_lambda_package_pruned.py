"""dist/lambda.zip built with --prune-botocore-data: smaller, and the handler still imports and replicates.

Run from the unpacked zip alone (``python -S -s``, only that directory on the path), as Lambda would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from replicator_dev.local.common import create_table

if TYPE_CHECKING:
    from replicator_dev.local.dynamodb_local import DynamoDBLocal

ROOT = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent(
    """
    import json, sys
    import replicator.lambda_handler as entry

    class Context:
        aws_request_id = "req-pruned"
        function_name = "replicator-pruned"
        def get_remaining_time_in_millis(self):
            return 30_000

    print("RESULT " + json.dumps(entry.handler(json.loads(sys.stdin.read()), Context())))
    """
)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Build the pruned zip with the project's script and unpack it into an otherwise empty directory."""
    out = tmp_path_factory.mktemp("pruned")
    zip_path = out / "lambda.zip"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_lambda_zip.py"),
            "--output",
            str(zip_path),
            "--prune-botocore-data",
        ],
        check=True,
        cwd=ROOT,
        timeout=900,
    )
    unpacked = out / "task"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(unpacked)
    return zip_path, unpacked


def test_only_the_called_services_models_remain(pruned: tuple[Path, Path]) -> None:
    """botocore/data keeps the models of dynamodb, dynamodbstreams, kinesis, sqs and sts only."""
    _, unpacked = pruned
    services = sorted(p.name for p in (unpacked / "botocore" / "data").iterdir() if p.is_dir())
    assert services == ["dynamodb", "dynamodbstreams", "kinesis", "sqs", "sts"]
    assert (unpacked / "botocore" / "data" / "endpoints.json").is_file()


def test_the_pruned_handler_replicates_an_event(
    pruned: tuple[Path, Path], region_b: DynamoDBLocal, unique_name, tmp_path: Path
) -> None:
    """The handler imports from the pruned zip alone and writes a one-record batch into the target."""
    _, unpacked = pruned
    target = unique_name("dst")
    create_table(region_b.endpoint_url, target, stream_view_type=None)
    event = {
        "Records": [
            {
                "eventID": "1",
                "eventName": "INSERT",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000",
                "dynamodb": {
                    "Keys": {"pk": {"S": "k"}},
                    "NewImage": {"pk": {"S": "k"}, "v": {"N": "1"}},
                    "SequenceNumber": "100",
                    "SizeBytes": 20,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                    "ApproximateCreationDateTime": 1767225600,
                },
            }
        ]
    }
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(unpacked),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "REPLICATOR_SOURCE__REGION": "us-east-1",
        "REPLICATOR_SOURCE__TABLE": "src",
        "REPLICATOR_TARGET__REGION": "us-west-2",
        "REPLICATOR_TARGET__TABLE": target,
        "REPLICATOR_TARGET__ENDPOINT_URL": region_b.endpoint_url,
        "REPLICATOR_METRICS__ENABLED": "false",
        "REPLICATOR_LOGGING__FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-c", CHILD],
        input=json.dumps(event),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert json.loads(line.removeprefix("RESULT ")) == {"batchItemFailures": []}
    item = region_b.client().get_item(TableName=target, Key={"pk": {"S": "k"}}, ConsistentRead=True)["Item"]
    assert item["v"] == {"N": "1"}

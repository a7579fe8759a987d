"""aws.clients: which clients open_clients opens, and the lean transports that travel with them."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from replicator.aws.clients import Clients, TargetClient, open_clients, open_target_client
from replicator.aws.lean import LeanDynamoDB, LeanStreams
from replicator.core.config import Config
from replicator.core.errors import ConfigError

# A closed port: these tests open clients but never send a request.
ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _static_credentials(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    for name in ("AWS_PROFILE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)


def _cfg(**extra: Any) -> Config:
    data: dict[str, Any] = {
        "source": {"region": "us-east-1", "table": "src", "endpoint_url": ENDPOINT},
        "target": {"region": "us-west-2", "table": "dst", "endpoint_url": ENDPOINT},
    }
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values}
    return Config(**data)


async def test_open_clients_with_lean_paths() -> None:
    """By default the streams client reads GetRecords through a LeanStreams and the target carries its lean path."""
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, _cfg())
        assert isinstance(clients, Clients)
        assert isinstance(clients.streams, LeanStreams)
        assert isinstance(clients.target, TargetClient)
        assert isinstance(clients.target.lean, LeanDynamoDB)
        assert clients.target.client.meta.region_name == "us-west-2"
        assert clients.source.meta.region_name == "us-east-1"


async def test_open_clients_without_lean_paths() -> None:
    """reader.lean_get_records and target.lean_writes false: botocore clients only."""
    cfg = _cfg(reader={"lean_get_records": False}, target={"lean_writes": False})
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, cfg)
        assert not isinstance(clients.streams, LeanStreams)
        assert clients.streams.meta.service_model.service_name == "dynamodbstreams"
        assert clients.target.lean is None


async def test_a_proxy_keeps_botocore_for_the_target(monkeypatch) -> None:
    """A proxy the lean path would not go through leaves the target without a lean path."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    async with contextlib.AsyncExitStack() as stack:
        target = await open_target_client(stack, _cfg())
        assert target.lean is None


async def test_checkpoint_client_only_for_the_dynamodb_backend() -> None:
    """The sqlite backend opens no checkpoint client (asking for it is a ConfigError); dynamodb opens one."""
    async with contextlib.AsyncExitStack() as stack:
        sqlite = await open_clients(stack, _cfg())
        assert sqlite.checkpoint is None
        with pytest.raises(ConfigError):
            sqlite.checkpoint_table()
        dynamodb = await open_clients(stack, _cfg(checkpoint={"backend": "dynamodb", "table": "checkpoints"}))
        assert dynamodb.checkpoint is not None
        assert dynamodb.checkpoint_table() is dynamodb.checkpoint
        # Without its own region or endpoint, the checkpoint table lives beside the target.
        assert dynamodb.checkpoint.meta.region_name == "us-west-2"

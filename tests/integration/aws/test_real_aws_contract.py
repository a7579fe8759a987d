"""The lean HTTP path against real AWS: runs only when an account and a scratch table are given.

    REPLICATOR_CONTRACT_REGION=eu-west-1 REPLICATOR_CONTRACT_TABLE=replicator-contract \
    REPLICATOR_CONTRACT_PROFILE=my-profile .venv/bin/pytest tests/integration/aws/test_real_aws_contract.py

The table needs a string partition key named ``pk`` (``REPLICATOR_CONTRACT_KEY`` to name another) and no
sort key; items written are keyed ``replicator-contract-*`` and deleted again. Credentials: a profile from the
usual ~/.aws files (``REPLICATOR_CONTRACT_PROFILE``) or ``REPLICATOR_CONTRACT_ACCESS_KEY_ID``,
``..._SECRET_ACCESS_KEY`` and optionally ``..._SESSION_TOKEN``: the test suite hides the ordinary ``AWS_*``
variables from every test so that no other test can reach a real account.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from replicator.aws.clients import client_config
from replicator.aws.lean import LeanDynamoDB

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

REGION = os.environ.get("REPLICATOR_CONTRACT_REGION")
TABLE = os.environ.get("REPLICATOR_CONTRACT_TABLE")
KEY = os.environ.get("REPLICATOR_CONTRACT_KEY", "pk")
ENDPOINT_URL = os.environ.get("REPLICATOR_CONTRACT_ENDPOINT_URL")
"""Only to dry-run this test against DynamoDB Local; unset for the real thing."""

pytestmark = pytest.mark.skipif(
    not (REGION and TABLE),
    reason="real-AWS contract test: set REPLICATOR_CONTRACT_REGION, REPLICATOR_CONTRACT_TABLE and credentials "
    "(REPLICATOR_CONTRACT_PROFILE or REPLICATOR_CONTRACT_ACCESS_KEY_ID/..._SECRET_ACCESS_KEY) to run it",
)


@contextlib.asynccontextmanager
async def _real_client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, LeanDynamoDB]]:
    profile = os.environ.get("REPLICATOR_CONTRACT_PROFILE")
    if profile:
        # Undo the suite's isolation for this test only: the default files, the named profile.
        monkeypatch.setenv("AWS_CONFIG_FILE", str(Path.home() / ".aws" / "config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(Path.home() / ".aws" / "credentials"))
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_PROFILE", profile)
    else:
        for name in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "SESSION_TOKEN"):
            value = os.environ.get(f"REPLICATOR_CONTRACT_{name}")
            if value:
                monkeypatch.setenv(f"AWS_{name}", value)
    session = AioSession()
    async with session.create_client(
        "dynamodb", region_name=REGION, endpoint_url=ENDPOINT_URL, config=client_config()
    ) as client:
        lean = LeanDynamoDB(client, credentials=await session.get_credentials(), max_connections=2)
        try:
            yield client, lean
        finally:
            await lean.close()


async def test_lean_writes_read_back_through_botocore(monkeypatch) -> None:
    """Lean PutItem reads back through botocore; a refused condition has code and request id; DeleteItem deletes."""
    key = {KEY: {"S": f"replicator-contract-{uuid.uuid4().hex}"}}
    item = {**key, "n": {"N": "1.5"}, "b": {"B": b"\x00\xff"}, "l": {"L": [{"S": "x"}, {"NULL": True}]}}
    async with _real_client(monkeypatch) as (client, lean):
        written = await lean.put_item(TableName=TABLE, Item=item)  # type: ignore[arg-type]
        assert written["ResponseMetadata"]["RequestId"]
        got = await client.get_item(TableName=TABLE, Key=key, ConsistentRead=True)  # type: ignore[arg-type]
        assert got["Item"] == item
        with pytest.raises(ClientError) as refused:
            await lean.put_item(
                TableName=TABLE,  # type: ignore[arg-type]
                Item=item,  # type: ignore[arg-type]
                ConditionExpression="attribute_not_exists(#k)",
                ExpressionAttributeNames={"#k": KEY},
            )
        assert refused.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
        assert refused.value.response["ResponseMetadata"]["RequestId"]
        await lean.delete_item(TableName=TABLE, Key=key)  # type: ignore[arg-type]
        gone = await client.get_item(TableName=TABLE, Key=key, ConsistentRead=True)  # type: ignore[arg-type]
        assert "Item" not in gone

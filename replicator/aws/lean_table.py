"""The checkpoint (lease) table's client with its hot calls sent by the lean transport.

A leased worker renews every lease it holds every few seconds (a third of 1,000 shards is about 100
UpdateItem a second), and takes and creates hundreds of leases at each rollover; through aiobotocore
each of those conditional writes cost more CPU than the replication itself (``bench/README.md``, the
scale benchmark's profile), and so did parsing the Query of every live lease at each rebalance.
Everything else (BatchGetItem, DescribeTable, CreateTable, UpdateTable) is rare and stays with botocore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Unpack

from replicator.aws.lean import intercepted

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        DeleteItemInputTypeDef,
        PutItemInputTypeDef,
        QueryInputTypeDef,
        UpdateItemInputTypeDef,
    )

    from replicator.aws.lean import LeanDynamoDB


class LeanTable:
    """``client`` with PutItem, UpdateItem, DeleteItem and Query sent by ``lean`` (same endpoint and credentials).

    A ``before-send`` handler registered on ``client`` (a stub, fault injection) is honoured per call:
    that operation then goes through botocore, so what intercepts botocore still sees it.
    """

    def __init__(self, client: DynamoDBClient, lean: LeanDynamoDB) -> None:
        """Wrap ``client``; ``lean`` shadows it."""
        self._client = client
        self._lean = lean

    async def put_item(self, **params: Unpack[PutItemInputTypeDef]) -> Any:  # noqa: ANN401 - botocore's output shape
        """PutItem through the lean path."""
        if intercepted(self._client, "PutItem"):
            return await self._client.put_item(**params)
        return await self._lean.put_item(**params)

    async def update_item(self, **params: Unpack[UpdateItemInputTypeDef]) -> Any:  # noqa: ANN401 - botocore's output shape
        """UpdateItem through the lean path."""
        if intercepted(self._client, "UpdateItem"):
            return await self._client.update_item(**params)
        return await self._lean.update_item(**params)

    async def delete_item(self, **params: Unpack[DeleteItemInputTypeDef]) -> Any:  # noqa: ANN401 - botocore's output shape
        """DeleteItem through the lean path."""
        if intercepted(self._client, "DeleteItem"):
            return await self._client.delete_item(**params)
        return await self._lean.delete_item(**params)

    async def query(self, **params: Unpack[QueryInputTypeDef]) -> Any:  # noqa: ANN401 - botocore's output shape
        """Query through the lean path."""
        if intercepted(self._client, "Query"):
            return await self._client.query(**params)
        return await self._lean.query(**params)

    def __getattr__(self, name: str) -> object:
        """Every other call is the botocore client's."""
        return getattr(self._client, name)

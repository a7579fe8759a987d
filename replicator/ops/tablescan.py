"""Whole-table reads for verify: the key schema, an item-count estimate, and a parallel consistent Scan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING, Any, cast

from replicator.core.retry import RetryPolicy, retrying

if TYPE_CHECKING:
    from collections.abc import Callable

    from types_aiobotocore_dynamodb import DynamoDBClient

    from replicator.core.records import Item
    from replicator.observe.metrics import Metrics

SCAN_RETRY = RetryPolicy(max_attempts=10)
"""Retries of each read (and of verify's repair writes): bounded, so an unreachable table fails the run."""


async def key_attributes(client: DynamoDBClient, table: str, metrics: Metrics) -> tuple[str, ...]:
    """Return the table's primary key attribute names (DescribeTable)."""
    desc = await retrying(
        "DescribeTable", lambda: client.describe_table(TableName=table), policy=SCAN_RETRY, metrics=metrics
    )
    return tuple(k["AttributeName"] for k in desc["Table"]["KeySchema"])


async def item_count(client: DynamoDBClient, table: str) -> int | None:
    """Return the table's approximate item count, None when unknown (for a progress bar, never a promise)."""
    # DynamoDB refreshes ItemCount about every six hours.
    with contextlib.suppress(Exception):
        return int((await client.describe_table(TableName=table))["Table"].get("ItemCount", 0)) or None
    return None


async def scan_table(
    client: DynamoDBClient,
    table: str,
    *,
    segments: int,
    on_page: Callable[[list[Item]], None],
    metrics: Metrics,
) -> None:
    """Scan the whole table in ``segments`` parallel segments; call ``on_page(items)`` for each page."""

    async def segment(index: int) -> None:
        start: Item | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": table,
                "Segment": index,
                "TotalSegments": segments,
                "ConsistentRead": True,
            }
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            page = await retrying("Scan", functools.partial(client.scan, **kwargs), policy=SCAN_RETRY, metrics=metrics)
            # The stubs type AttributeValues field by field; items stay the raw maps the rest of the code takes.
            on_page(cast("list[Item]", page.get("Items", [])))
            start = cast("Item | None", page.get("LastEvaluatedKey"))
            if not start:
                return

    await asyncio.gather(*(segment(i) for i in range(segments)))

"""The DynamoDB and SQLite checkpoint stores when the saving task is cancelled mid-write."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import pytest

from replicator.checkpoint.dynamodb import DynamoDBCheckpointStore
from replicator.checkpoint.sqlite import SqliteCheckpointStore

if TYPE_CHECKING:
    from pathlib import Path

ARN = "arn:aws:dynamodb:us-east-1:1:table/T/stream/1"


class _SlowReplyClient:
    """Stores the update at once and answers when ``reply`` is set."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.sent = asyncio.Event()
        self.reply = asyncio.Event()

    async def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.updates.append(kwargs)
        self.sent.set()
        await self.reply.wait()
        return {}


async def test_dynamodb_save_cancelled_in_flight_waits_for_its_answer() -> None:
    """The cancelled save returns only once DynamoDB answered: no later save can overtake it."""
    client = _SlowReplyClient()
    store = DynamoDBCheckpointStore(client, "cp")
    task = asyncio.create_task(store.save(ARN, "s0", "5"))
    await asyncio.wait_for(client.sent.wait(), timeout=5)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()
    client.reply.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.updates[0]["ExpressionAttributeValues"][":seq"] == {"S": "5"}


class _BlockingConnection:
    """Wraps a sqlite3 connection: ``execute`` of an INSERT waits for ``release`` (in its worker thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.entered = threading.Event()
        self.release = threading.Event()

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("INSERT"):
            self.entered.set()
            assert self.release.wait(5)
        return self.conn.execute(sql, *args)

    def close(self) -> None:
        self.conn.close()


async def test_sqlite_save_cancelled_mid_statement_keeps_the_connection_until_it_ran(tmp_path: Path) -> None:
    """The statement still running in its thread holds the lock: the cancellation and close wait for it."""
    store = SqliteCheckpointStore(tmp_path / "cp.db")
    await store.start()
    assert store._conn is not None
    blocking = _BlockingConnection(store._conn)
    store._conn = blocking  # type: ignore[assignment]
    task = asyncio.create_task(store.save(ARN, "s0", "5"))
    assert await asyncio.to_thread(blocking.entered.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()
    assert store._lock.locked()
    blocking.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not store._lock.locked()
    store._conn = blocking.conn
    assert (await store.load_all(ARN))["s0"].sequence_number == "5"
    await store.close()

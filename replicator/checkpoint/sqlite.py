"""Checkpoints in a SQLite file: one worker, local runs and the demo.

Fan-out positions (``Checkpoint.targets``) are a JSON object in the ``targets`` column, NULL with one
target; a file made before the column existed gets it (``ALTER TABLE``) when opened, and code that does
not know the column reads the file as before.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from replicator.checkpoint import Checkpoint
from replicator.checkpoint.retention import finished_checkpoints_to_delete
from replicator.core.shield import complete_before_cancel

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    stream_arn TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    sequence_number TEXT,
    shard_end INTEGER NOT NULL DEFAULT 0,
    parent_shard_id TEXT,
    updated_at REAL NOT NULL,
    targets TEXT,
    PRIMARY KEY (stream_arn, shard_id)
)
"""


class SqliteCheckpointStore:
    """CheckpointStore on a SQLite file (WAL, synchronous=FULL: a saved checkpoint survives a crash)."""

    def __init__(self, path: Path) -> None:
        """Remember the path; the file is opened in ``start``."""
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Create the file and table if missing."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await asyncio.to_thread(self._open)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(checkpoints)")}
        if "targets" not in columns:
            conn.execute("ALTER TABLE checkpoints ADD COLUMN targets TEXT")
        return conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteCheckpointStore used before start() or after close()")
        return self._conn

    async def _in_thread(self, call: Callable[..., T], *args: Any) -> T:  # noqa: ANN401 - passed through to call
        """Run one statement in a thread, holding the lock until it has run.

        A cancelled ``to_thread`` leaves its thread running: without waiting for it, the lock would be free
        while the statement still uses the connection, and ``close`` could close it underneath.
        """
        async with self._lock:
            return await complete_before_cancel(asyncio.to_thread(call, *args))

    async def load_all(self, stream_arn: str) -> dict[str, Checkpoint]:
        """Every checkpoint of the stream."""
        rows = await self._in_thread(
            lambda: (
                self._db()
                .execute(
                    "SELECT shard_id, sequence_number, shard_end, updated_at, parent_shard_id, targets "
                    "FROM checkpoints WHERE stream_arn = ?",
                    (stream_arn,),
                )
                .fetchall()
            )
        )
        return {
            r[0]: Checkpoint(
                shard_id=r[0],
                sequence_number=r[1],
                shard_end=bool(r[2]),
                updated_at_s=r[3],
                parent_shard_id=r[4],
                targets=json.loads(r[5]) if r[5] else {},
            )
            for r in rows
        }

    async def save(
        self,
        stream_arn: str,
        shard_id: str,
        sequence_number: str | None,
        *,
        shard_end: bool = False,
        parent_shard_id: str | None = None,
        targets: Mapping[str, str] | None = None,
    ) -> None:
        """Upsert the shard's checkpoint (and, given ``targets``, the per-target positions in the same row)."""
        positions = None if targets is None else json.dumps(dict(targets), sort_keys=True)
        args = (stream_arn, shard_id, sequence_number, int(shard_end), parent_shard_id, time.time(), positions)
        await self._in_thread(
            self._db().execute,
            "INSERT INTO checkpoints "
            "(stream_arn, shard_id, sequence_number, shard_end, parent_shard_id, updated_at, targets) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stream_arn, shard_id) DO UPDATE SET "
            "sequence_number = COALESCE(excluded.sequence_number, checkpoints.sequence_number), "
            "shard_end = excluded.shard_end, "
            "parent_shard_id = COALESCE(excluded.parent_shard_id, checkpoints.parent_shard_id), "
            "updated_at = excluded.updated_at, "
            "targets = COALESCE(excluded.targets, checkpoints.targets)",
            args,
        )

    async def delete_finished(
        self, stream_arn: str, *, listed: Mapping[str, Sequence[str]], now_s: float, retention_s: float
    ) -> list[str]:
        """Delete finished shards' rows nothing can need again (``CheckpointStore``), parents first."""
        checkpoints = await self.load_all(stream_arn)
        doomed = finished_checkpoints_to_delete(checkpoints, listed=listed, now_s=now_s, retention_s=retention_s)
        for shard_id in doomed:
            await self._in_thread(
                self._db().execute,
                "DELETE FROM checkpoints WHERE stream_arn = ? AND shard_id = ? AND shard_end = 1",
                (stream_arn, shard_id),
            )
        return doomed

    async def close(self) -> None:
        """Close the file, once no statement is running."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._in_thread(conn.close)

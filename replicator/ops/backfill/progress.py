"""Where backfill progress lives between runs: a JSON file, or items in the DynamoDB checkpoint table.

After a page's items reached their outcomes, its segment's LastEvaluatedKey is saved; a re-run skips
finished segments and continues the others after their key. A different segment count is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

from replicator.core.codec import b64_text, decode_value
from replicator.core.errors import ReplicatorError

if TYPE_CHECKING:
    from pathlib import Path

    from types_aiobotocore_dynamodb import DynamoDBClient

    from replicator.core.config import Config
    from replicator.core.records import Item


class BackfillError(ReplicatorError):
    """The backfill cannot run as asked (e.g. the saved progress is for another segment count)."""


@dataclasses.dataclass(slots=True)
class SegmentProgress:
    """How far one Scan segment has got."""

    segment: int
    last_key: Item | None = None
    done: bool = False
    scanned: int = 0


class ProgressStore(Protocol):
    """Where segment progress lives between runs. ``save`` is durable when it returns."""

    async def load(self, table: str, segments: int) -> dict[int, SegmentProgress]:
        """Return saved progress of a backfill of ``table`` in ``segments`` segments (empty if none).

        Raises BackfillError when saved progress exists for a different segment count.
        """
        ...

    async def save(self, table: str, segments: int, progress: SegmentProgress) -> None:
        """Store one segment's progress."""
        ...

    async def clear(self, table: str) -> None:
        """Forget the table's progress (``--restart``)."""
        ...


def _encode_key(key: Item | None) -> Any:  # noqa: ANN401 - JSON value
    # Key attributes are scalars; binary ones are stored under the tag "B64" (the format since the first release).
    if key is None:
        return None
    return {name: {"B64": b64_text(value["B"])} if "B" in value else dict(value) for name, value in key.items()}


def _decode_key(raw: Any) -> Item | None:  # noqa: ANN401 - JSON value
    if raw is None:
        return None
    return {name: decode_value({"B": value["B64"]}) if "B64" in value else dict(value) for name, value in raw.items()}


def _mismatch(table: str, saved: int, asked: int) -> BackfillError:
    return BackfillError(
        f"saved backfill progress for {table} is for --segments {saved}, not {asked}: "
        f"re-run with --segments {saved} to resume, or pass --restart to scan from the beginning"
    )


class JsonProgressStore:
    """Progress in a JSON file (replaced atomically on every save)."""

    def __init__(self, path: Path) -> None:
        """Remember the path; nothing is read yet."""
        self.path = path
        self._lock = asyncio.Lock()
        self._doc: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        if self._doc is None:
            try:
                self._doc = json.loads(self.path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                self._doc = {}
        return self._doc

    def _write(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    async def load(self, table: str, segments: int) -> dict[int, SegmentProgress]:
        """Return saved progress for the table (see ProgressStore)."""
        async with self._lock:
            doc = await asyncio.to_thread(self._read)
        job = doc.get(table)
        if not job:
            return {}
        if job["segments"] != segments:
            raise _mismatch(table, job["segments"], segments)
        return {
            int(i): SegmentProgress(
                int(i), _decode_key(s.get("last_key")), bool(s.get("done")), int(s.get("scanned", 0))
            )
            for i, s in job["progress"].items()
        }

    async def save(self, table: str, segments: int, progress: SegmentProgress) -> None:
        """Store one segment's progress (file rewritten atomically)."""
        async with self._lock:
            doc = await asyncio.to_thread(self._read)
            job = doc.setdefault(table, {"segments": segments, "progress": {}})
            job["progress"][str(progress.segment)] = {
                "last_key": _encode_key(progress.last_key),
                "done": progress.done,
                "scanned": progress.scanned,
                "updated_at": time.time(),
            }
            await asyncio.to_thread(self._write, doc)

    async def clear(self, table: str) -> None:
        """Forget the table's progress."""
        async with self._lock:
            doc = await asyncio.to_thread(self._read)
            if doc.pop(table, None) is not None:
                await asyncio.to_thread(self._write, doc)


class DynamoDBProgressStore:
    """Progress as items of the DynamoDB checkpoint table: ``streamArn = backfill#<table>``, one a segment."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        """Bind to the checkpoint table (created by the checkpoint store's ``start``)."""
        self._client = client
        self.table = table

    @staticmethod
    def _hash(table: str) -> str:
        return f"backfill#{table}"

    async def _items(self, table: str) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "streamArn = :s",
            "ExpressionAttributeValues": {":s": {"S": self._hash(table)}},
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        while True:
            page = await self._client.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def load(self, table: str, segments: int) -> dict[int, SegmentProgress]:
        """Return saved progress for the table (see ProgressStore)."""
        out: dict[int, SegmentProgress] = {}
        for item in await self._items(table):
            saved = int(item["segments"]["N"])
            if saved != segments:
                raise _mismatch(table, saved, segments)
            seg = int(item["segment"]["N"])
            last = item.get("lastKey", {}).get("S")
            out[seg] = SegmentProgress(
                seg,
                _decode_key(json.loads(last)) if last else None,
                bool(item.get("shardEnd", {}).get("BOOL", False)),
                int(item.get("scanned", {}).get("N", "0")),
            )
        return out

    async def save(self, table: str, segments: int, progress: SegmentProgress) -> None:
        """Put the segment's item."""
        item: dict[str, Any] = {
            "streamArn": {"S": self._hash(table)},
            "shardId": {"S": f"segment#{progress.segment:05d}"},
            "segment": {"N": str(progress.segment)},
            "segments": {"N": str(segments)},
            "shardEnd": {"BOOL": progress.done},
            "scanned": {"N": str(progress.scanned)},
            "updatedAt": {"N": repr(time.time())},
        }
        if progress.last_key is not None:
            item["lastKey"] = {"S": json.dumps(_encode_key(progress.last_key), sort_keys=True)}
        await self._client.put_item(TableName=self.table, Item=item)

    async def clear(self, table: str) -> None:
        """Delete the table's segment items."""
        for item in await self._items(table):
            await self._client.delete_item(
                TableName=self.table, Key={"streamArn": item["streamArn"], "shardId": item["shardId"]}
            )


def default_progress_path(cfg: Config) -> Path:
    """Return the JSON progress file next to the SQLite checkpoints."""
    return cfg.checkpoint.path.parent / "backfill-progress.json"

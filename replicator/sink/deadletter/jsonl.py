"""Dead letters in a local JSONL file (a path or ``file://`` URL): one document per line.

Lines are appended and fsynced; concurrent ``send`` calls are group-committed (one write and one fsync
per batch of dead letters).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from replicator.core.records import ChangeRecord
from replicator.sink.deadletter.document import DeadLetterContext, DeadLetterError, dumps


class JsonlDeadLetters:
    """Appends dead letters to a local JSONL file, fsynced before ``send`` returns.

    Concurrent sends (a batch's writes run concurrently) share one write and one fsync: the first
    sender flushes everything queued so far while later ones wait for that flush.
    """

    def __init__(self, path: Path | str, *, context: DeadLetterContext | None = None) -> None:
        """Bind to the file (created on first send, with its directory); no I/O."""
        self.path = Path(path)
        self.context = context or DeadLetterContext()
        self._pending: list[tuple[str, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.fsyncs = 0

    async def send(self, record: ChangeRecord, *, error: BaseException, attempts: int) -> None:
        """Append one dead letter; returns once it is on disk."""
        await self.send_document(self.context.document(record, error=error, attempts=attempts))

    async def send_document(self, doc: dict[str, Any]) -> None:
        """Append a ready document (``redrive`` re-writes failed ones this way)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((dumps(doc) + "\n", future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        # Let the other sends of this batch (scheduled in the same loop iteration) join the group.
        await asyncio.sleep(0)
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._append, "".join(line for line, _ in group))
            except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
                err = DeadLetterError(f"cannot append dead letters to {self.path}: {exc}")
                for _, future in group:
                    if not future.done():
                        future.set_exception(err)
                continue
            for _, future in group:
                if not future.done():
                    future.set_result(None)

    def _append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.fsyncs += 1

    async def close(self) -> None:
        """Wait for a flush in progress."""
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Every dead letter in a JSONL file; raises DeadLetterError naming the bad line."""
    docs: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                # A crash mid-append can leave a torn last line; anything else is corruption.
                raise DeadLetterError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            docs.append(doc)
    return docs

"""Dead letters in a local JSONL file (a path or ``file://`` URL): one document per line.

Lines are appended and fsynced; concurrent ``send`` calls are group-committed (one write and one fsync
per batch of dead letters). The file is created 0600 (it holds full items) and its directory fsynced.
A crash mid-append leaves a last line without its newline: the next append first moves that fragment
to ``<name>.torn-<UTC time>`` and cuts it off (its ``send`` never returned, so the record is sent again).
``scan_jsonl`` reads what is readable and lists, by line number, what is not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import structlog

from replicator.core.records import ChangeRecord
from replicator.sink.deadletter.document import DeadLetterContext, DeadLetterError, dumps

log = structlog.get_logger(__name__)

_TAIL_CHUNK_BYTES = 64 * 1024


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
        data = text.encode("utf-8")
        created = _make_dirs(self.path.parent)
        try:
            # Full items are in here: private to the worker's user (0600), whatever the umask.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            created.append(self.path.parent)
        except FileExistsError:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        try:
            self._cut_torn_tail(fd)
            # One write: a crash can tear only this group's tail, which the next append sets aside.
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        for directory in created:
            _fsync_dir(directory)
        self.fsyncs += 1

    def _cut_torn_tail(self, fd: int) -> None:
        """Set aside and cut off a last line without its newline (a crash, or a failed write, mid-append)."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        start = size
        while start > 0:
            step = min(_TAIL_CHUNK_BYTES, start)
            block = os.pread(fd, step, start - step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                start = start - step + newline + 1
                break
            start -= step
        fragment = os.pread(fd, size - start, start)
        stamp = dt.datetime.now(tz=dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.torn-{stamp}")
        aside_fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(aside_fd, fragment)
            os.fsync(aside_fd)
        finally:
            os.close(aside_fd)
        _fsync_dir(self.path.parent)
        os.ftruncate(fd, start)
        os.fsync(fd)
        # Never the fragment itself: it holds item data.
        log.warning("dead_letter_torn_tail_set_aside", path=str(self.path), bytes=len(fragment), aside=str(aside))

    async def close(self) -> None:
        """Wait for a flush in progress."""
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)


@dataclasses.dataclass(slots=True)
class JsonlContents:
    """What a JSONL dead-letter file holds: the dead letters, and the lines that are not one."""

    documents: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    unreadable: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    """(line number, why): a torn line (a crash mid-append), or anything else that is not a JSON object."""


def scan_jsonl(path: Path | str) -> JsonlContents:
    """Read every dead letter in a JSONL file; a line that is not one is listed, never skipped silently."""
    contents = JsonlContents()
    with Path(path).open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                contents.unreadable.append((number, "not UTF-8 (a torn line?)"))
                continue
            except json.JSONDecodeError as exc:
                contents.unreadable.append((number, f"not JSON ({exc.msg}; a torn line?)"))
                continue
            if not isinstance(doc, dict):
                contents.unreadable.append((number, "not a JSON object"))
                continue
            contents.documents.append(doc)
    return contents


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Every dead letter in a JSONL file; raises DeadLetterError naming the first line that is not one."""
    contents = scan_jsonl(path)
    if contents.unreadable:
        number, why = contents.unreadable[0]
        raise DeadLetterError(f"{path}:{number}: {why}")
    return contents.documents


def _write_all(fd: int, data: bytes) -> None:
    # A regular file takes the whole buffer in one call unless a signal or a full disk cuts it short.
    written = os.write(fd, data)
    while written < len(data):
        written += os.write(fd, data[written:])


def _make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents; return the parents whose entries must be fsynced."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    return [d.parent for d in reversed(missing)]


def _fsync_dir(directory: Path) -> None:
    """Make a new entry in ``directory`` durable (the file's own fsync does not cover its name)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

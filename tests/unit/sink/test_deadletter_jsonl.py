"""The JSONL dead-letter file: safe appends after a crash, private permissions, a tolerant reader."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from replicator.core.errors import TransformError
from replicator.core.records import ChangeRecord, from_lambda_event
from replicator.sink import deadletter

if TYPE_CHECKING:
    from collections.abc import Iterator

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000"


def _record(key: str, seq: int, text: str = "v") -> ChangeRecord:
    event = {
        "eventID": f"e{seq}",
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "eventSourceARN": ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": 1_767_225_600.0 + seq,
            "Keys": {"pk": {"S": key}},
            "NewImage": {"pk": {"S": key}, "t": {"S": text}},
            "SequenceNumber": f"{seq:021d}",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    return from_lambda_event(event, shard_id="shardId-1")


async def _send(path: Path, *records: ChangeRecord) -> None:
    sink = deadletter.JsonlDeadLetters(path)
    for record in records:
        await sink.send(record, error=TransformError("t"), attempts=1)
    await sink.close()


def _torn(path: Path) -> bytes:
    """Append the first 1000 bytes of a large dead letter, as a crash mid-append leaves them."""
    record = _record("big", 9, "x" * 400_000)
    doc = deadletter.DeadLetterContext().document(record, error=TransformError("t"), attempts=1)
    big = deadletter.dumps(doc)
    fragment = big.encode()[:1000]
    with path.open("ab") as f:
        f.write(fragment)
    return fragment


def _glob(directory: Path, pattern: str) -> list[Path]:
    return list(directory.glob(pattern))


async def test_append_after_a_torn_line_keeps_the_file_readable(tmp_path: Path) -> None:
    """A torn tail (crash mid-append) is set aside and cut off before the next append: every letter reads back."""
    path = tmp_path / "dl.jsonl"
    await _send(path, _record("k1", 1))
    fragment = _torn(path)
    await _send(path, _record("k2", 2))
    assert [d["record"]["dynamodb"]["Keys"]["pk"]["S"] for d in deadletter.read_jsonl(path)] == ["k1", "k2"]
    (aside,) = _glob(tmp_path, "dl.jsonl.torn-*")
    assert aside.read_bytes() == fragment
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600


async def test_reader_reports_torn_and_garbled_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    """A torn or unparseable line is reported with its number; the other dead letters are still read."""
    path = tmp_path / "dl.jsonl"
    await _send(path, _record("k1", 1))
    with path.open("ab") as f:
        f.write(b'{"format": "replicator.dead\n')  # torn, then a newline written by an older version
        f.write(b"\xff\xfe not utf-8\n")
        f.write(b"[1, 2]\n")
    await _send(path, _record("k2", 2))
    contents = deadletter.scan_jsonl(path)
    assert [d["record"]["dynamodb"]["Keys"]["pk"]["S"] for d in contents.documents] == ["k1", "k2"]
    assert [line for line, _ in contents.unreadable] == [2, 3, 4]
    assert all(reason for _, reason in contents.unreadable)
    with pytest.raises(deadletter.DeadLetterError, match=r"dl\.jsonl:2"):
        deadletter.read_jsonl(path)


@pytest.fixture
def _umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("_umask_022")
async def test_file_is_created_private_and_its_directory_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file holds full items: created 0600; the directory entry is fsynced when the file is created."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "new" / "dl.jsonl"
    await _send(path, _record("k1", 1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path.parent) in synced
    assert str(tmp_path) in synced  # the new directory's own entry
    assert str(path) in synced
    synced.clear()
    await _send(path, _record("k2", 2))
    assert synced == [str(path)]  # an append to an existing file syncs only the file


async def test_each_group_is_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group of dead letters goes to the file in one write call, so a crash tears at most its tail."""
    writes: list[int] = []
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    await _send(tmp_path / "dl.jsonl", _record("k1", 1, "y" * 300_000))
    assert len(writes) == 1
    assert json.loads((tmp_path / "dl.jsonl").read_bytes())["format"] == deadletter.FORMAT

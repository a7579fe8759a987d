"""``replicator redrive`` as a process: its progress bar on a terminal's stderr, its report alone on stdout."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
from typing import TYPE_CHECKING

import yaml

from replicator.core.errors import TransformError
from replicator.core.records import from_lambda_event
from replicator.sink import deadletter

if TYPE_CHECKING:
    from pathlib import Path

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/src/stream/2026-01-01T00:00:00.000"


def _letters(path: Path, count: int) -> None:
    lines = []
    for i in range(count):
        event = {
            "eventID": f"e{i}",
            "eventName": "MODIFY",
            "eventSourceARN": ARN,
            "dynamodb": {
                "ApproximateCreationDateTime": 1_767_225_600.0 + i,
                "Keys": {"pk": {"S": f"k{i}"}},
                "NewImage": {"pk": {"S": f"k{i}"}},
                "SequenceNumber": f"{i + 1:021d}",
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
        record = from_lambda_event(event, shard_id="shardId-1")
        doc = deadletter.DeadLetterContext().document(record, error=TransformError("t"), attempts=1)
        lines.append(deadletter.dumps(doc))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _read_all(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(OSError):  # EIO once the other end is closed
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _run(args: list[str], *, tty: bool) -> tuple[int, str, str]:
    master, slave = pty.openpty() if tty else os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "replicator", *args],
            stdout=subprocess.PIPE,
            stderr=slave,
            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        )
        os.close(slave)
        err = _read_all(master)
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return proc.returncode, out.decode(), err.decode(errors="replace")


def test_redrive_shows_progress_on_a_terminal_and_keeps_stdout_for_the_report(tmp_path: Path) -> None:
    """On a terminal redrive draws its bar (done/total) on stderr; --no-progress and non-terminals get none."""
    letters = tmp_path / "dl.jsonl"
    _letters(letters, 3)
    config = tmp_path / "replicator.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": {"region": "us-east-1", "table": "src"},
                "target": {"region": "us-west-2", "table": "dst"},
                "metrics": {"enabled": False},
                "logging": {"level": "WARNING", "format": "json"},
            }
        ),
        encoding="utf-8",
    )
    args = ["redrive", "--config", str(config), "--source", str(letters), "--dry-run", "--json"]
    code, out, err = _run(args, tty=True)
    assert code == 0, err
    assert json.loads(out)["read"] == 3
    assert "redrive" in err
    assert "3/3" in err
    code, out, err = _run([*args, "--no-progress"], tty=True)
    assert code == 0
    assert "3/3" not in err
    code, out, err = _run(args, tty=False)
    assert code == 0
    assert "3/3" not in err

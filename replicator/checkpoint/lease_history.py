"""The lease history: every lease event of this worker as one JSON line, an audit aid (``leases.history_path``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pathlib import Path


class LeaseHistory:
    """Appends lease events as JSON lines (acquired, checkpoint, renewed, lost, released): an audit aid.

    ``t`` is when the event is known to hold from (acquired: after the write returned) or until
    (checkpoint/renewed: when the write was sent), so per-shard holding intervals can be checked for
    overlap without trusting response latencies.
    """

    def __init__(self, path: Path) -> None:
        """Remember the path; the file is opened by the first event."""
        self._path = path
        self._file: TextIO | None = None

    def write(self, worker: str, shard_id: str, event: str, t: float, counter: int | None = None) -> None:
        """Append one event."""
        if self._file is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Line-buffered: a SIGKILL loses at most the line being written.
            self._file = self._path.open("a", encoding="utf-8", buffering=1)
        line = {"t": t, "worker": worker, "shard": shard_id, "event": event, "counter": counter}
        self._file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()

"""Fake clocks for a local process, through Debian's ``faketime`` package (libfaketime).

A ``TravelClock`` is the file libfaketime reads a process's clock offset from: ``advance`` jumps the
clock of every process started with its ``environment()`` forward at once.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

from replicator_dev.local.common import LocalInfraError

_LIBFAKETIME_GLOBS = (
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


def find_libfaketime() -> Path:
    """Return the path of Debian's libfaketime preload library or raise naming the package."""
    for pattern in _LIBFAKETIME_GLOBS:
        hits = sorted(glob.glob(pattern))  # noqa: PTH207 - patterns span directories
        if hits:
            return Path(hits[0])
    raise LocalInfraError("libfaketime.so.1 not found: install the Debian package `faketime`")


class TravelClock:
    """A clock offset from real time, kept in a temporary file that libfaketime reads on every clock call."""

    def __init__(self) -> None:
        """Start at the real time; the file is created by the first ``environment()``."""
        self.offset = 0.0
        """Seconds the clock is ahead of real time."""
        self._path: Path | None = None

    def environment(self) -> dict[str, str]:
        """Create the file if missing and return the variables that make libfaketime follow it."""
        if self._path is None:
            fd, name = tempfile.mkstemp(prefix="ddb-local-clock-", suffix=".rc")
            os.close(fd)
            self._path = Path(name)
            self._write(self._path)
        return {
            "LD_PRELOAD": str(find_libfaketime()),
            "FAKETIME_TIMESTAMP_FILE": str(self._path),
            # Re-read the file on every clock call: with the default cache a jump shows up only
            # after up to a second, which made expiry tests flaky. No slowdown was measurable.
            "FAKETIME_NO_CACHE": "1",
        }

    def advance(self, seconds: float) -> None:
        """Jump the clock ``seconds`` forward; takes effect at once."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds
        if self._path is not None:
            self._write(self._path)

    def _write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        # libfaketime reads a bare number as seconds; the rename keeps readers off a half-written file.
        tmp.write_text(f"+{self.offset:.3f}\n")
        tmp.replace(path)

    def remove(self) -> None:
        """Delete the file (the offset is kept: a later ``environment()`` writes it anew)."""
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

"""Run moto's server for the services DynamoDB Local lacks (SQS for dead letters, Kinesis).

It runs as a child process (``python -m moto.server``) bound to 127.0.0.1 rather than moto's
in-process ``ThreadedMotoServer``: a separate process keeps moto's global state and its CPU use away
from the code under test, and it can be paused or killed like a real endpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Self

from replicator_dev.local.common import (
    DEFAULT_REGION,
    LocalInfraError,
    LocalProcess,
    PortTakenError,
    free_port,
    local_client,
    says_port_taken,
)

_LOG_TAIL_LINES = 40


class MotoServer(LocalProcess):
    """One moto server process serving every moto service (SQS, Kinesis, ...) on one port.

    The constructor does no I/O; ``start()`` (or ``with``) launches it and waits until it answers.
    """

    name = "moto server"

    def __init__(
        self,
        *,
        port: int | None = None,
        region_name: str = DEFAULT_REGION,
        start_timeout: float = 60.0,
        python: str | None = None,
    ) -> None:
        """Record the settings; ``python`` defaults to the running interpreter (which has moto)."""
        super().__init__(port)
        self.region_name = region_name
        self.start_timeout = start_timeout
        self._python = python or sys.executable
        self._log_path: Path | None = None
        self._log_file: IO[bytes] | None = None

    def client(self, service: str, **kwargs: Any) -> Any:  # noqa: ANN401 - boto3 is untyped
        """Return a boto3 client (``sqs``, ``kinesis`` ...) bound to this server with fake credentials."""
        return local_client(service, self.endpoint_url, region_name=self.region_name, **kwargs)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last lines of the server log (for error messages)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    def _start_once(self) -> Self:
        """Launch once and block until the server answers."""
        if self.running:
            raise LocalInfraError("moto server is already running")
        if self._port is None:
            self._port = free_port()
        fd, name = tempfile.mkstemp(prefix=f"moto-{self._port}-", suffix=".log")
        os.close(fd)
        self._log_path = Path(name)
        self._log_file = self._log_path.open("ab")
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv (this interpreter + moto), no shell
            [self._python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self._port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop(timeout=2)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                tail = self.log_tail()
                error = PortTakenError if says_port_taken(tail) else LocalInfraError
                raise error(f"moto server exited while starting; log:\n{tail}")
            try:
                # The dashboard's data endpoint answers GET without credentials once the app is up.
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=2):  # noqa: S310 - loopback URL built here
                    return
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc
                time.sleep(0.05)
        raise LocalInfraError(
            f"moto server on port {self._port} did not answer within {self.start_timeout:.0f}s "
            f"({last_error}); log:\n{self.log_tail()}"
        )

    def reset(self) -> None:
        """Drop every resource the server holds (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")  # noqa: S310 - loopback URL built here
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback URL built here
            pass

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server, SIGKILL after ``timeout`` s; remove its log. No-op if not running."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None
        self._port = self._requested_port

    def close(self) -> None:
        """Stop the server (its log file is removed by ``stop``)."""
        self.stop()

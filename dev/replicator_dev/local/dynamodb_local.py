"""Run Amazon's DynamoDB Local: one process stands for one simulated region (``install.py`` fetches it).

Facts about DynamoDB Local 3.3.1 that the tests and the demo rely on (measured on this project):

* it has no option to bind to one interface: Jetty listens on all of them, on the port given;
* start-up to the first answered ``ListTables`` takes about 1.3-1.8 s (2 vCPU); ``-Xmx`` does not
  change that, so a 512 MiB heap cap is passed to keep several processes cheap;
* its stream ARNs and records name the region ``ddblocal`` whatever region the client uses;
* shard iterators expire 15 minutes (of its clock) after they were issued and stream records are
  trimmed 24 hours after they were written; trimming is evaluated lazily on each read, so moving
  its clock (``time_travel=True`` and ``advance_clock``) makes both happen at once.

Run ``python -m replicator_dev.local.dynamodb_local`` to install it (prints the jar directory), or
``python -m replicator_dev.local.dynamodb_local serve --port 8000`` to run one in the foreground.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Any, Self

import botocore.exceptions

from replicator_dev.local.common import (
    DEFAULT_REGION,
    LocalInfraError,
    LocalProcess,
    PortTakenError,
    exit_on_sigterm,
    free_port,
    local_client,
    require_tool,
    says_port_taken,
)
from replicator_dev.local.faketime import TravelClock
from replicator_dev.local.install import ensure_installed

DEFAULT_HEAP = "512m"
_LOG_TAIL_LINES = 40

_running: weakref.WeakSet[DynamoDBLocal] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Leave no Java process behind when the interpreter exits without stopping them."""
    for ddb in list(_running):
        with contextlib.suppress(Exception):
            ddb.stop(timeout=3)


def _wait_group(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait until every process of the group has exited; False on timeout.

    ``faketime`` forks the JVM and exits on SIGTERM without waiting for it, so the leader's
    exit alone does not free the port. The group id cannot be reused while a member lives.
    """
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


class DynamoDBLocal(LocalProcess):
    """One DynamoDB Local process, i.e. one simulated region.

    The constructor does no I/O; ``start()`` (or ``with``) launches it. The process runs in its own
    process group and every signal goes to the group, so a ``faketime`` wrapper and the JVM under it
    are paused, resumed and stopped together.

    Clocks (both need Debian's ``faketime`` package):

    * ``faketime="+0 x240"`` runs it under ``faketime -f SPEC``: its clock runs 240x faster, so an
      iterator used 4 s after being issued has expired. Jetty's timers speed up too, so idle
      keep-alive connections get closed within a fraction of a real second: clients must retry
      connection errors (botocore's default retry modes do).
    * ``time_travel=True`` starts it at the real time and lets ``advance_clock(seconds)`` jump its
      clock forward at once (libfaketime reading a spec file on every clock call). Jumping 16 min
      expires every iterator; jumping 25 h trims every record written before the jump.
    """

    name = "DynamoDB Local"

    def __init__(
        self,
        *,
        port: int | None = None,
        db_path: Path | str | None = None,
        shared_db: bool = True,
        faketime: str | None = None,
        time_travel: bool = False,
        heap: str | None = DEFAULT_HEAP,
        region_name: str = DEFAULT_REGION,
        start_timeout: float = 60.0,
        cache_dir: Path | None = None,
        log_path: Path | str | None = None,
    ) -> None:
        """Record the settings; nothing is started.

        ``db_path`` None runs ``-inMemory``; a directory keeps the tables on disk across restarts.
        ``shared_db`` (default) makes every client see the same tables whatever its region and key;
        without it each (key, region) pair gets its own database. ``region_name`` is only the label
        clients from ``client()`` use. ``log_path`` defaults to a temporary file removed by ``stop``.
        """
        if faketime is not None and time_travel:
            raise ValueError("faketime and time_travel are exclusive: both drive libfaketime")
        super().__init__(port)
        self.db_path = Path(db_path) if db_path is not None else None
        self.shared_db = shared_db
        self.faketime = faketime
        self.time_travel = time_travel
        self.heap = heap
        self.region_name = region_name
        self.start_timeout = start_timeout
        self._cache_dir = cache_dir
        self._log_path = Path(log_path) if log_path is not None else None
        self._own_log = log_path is None
        self._log_file: IO[bytes] | None = None
        self._paused = False
        self._clock = TravelClock() if time_travel else None
        self._lock = threading.Lock()

    # -- introspection ---------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """True between ``pause()`` and ``resume()``."""
        return self._paused

    @property
    def log_path(self) -> Path | None:
        """File receiving the process's stdout and stderr."""
        return self._log_path

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines of the process log (for error messages)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def client(self, service: str = "dynamodb", **kwargs: Any) -> Any:  # noqa: ANN401 - boto3 is untyped
        """Return a boto3 client (``dynamodb`` or ``dynamodbstreams``) bound to this process."""
        return local_client(service, self.endpoint_url, region_name=self.region_name, **kwargs)

    def __repr__(self) -> str:
        """Show port and state, never a secret (there is none)."""
        state = "paused" if self._paused else ("running" if self.running else "stopped")
        return f"DynamoDBLocal(port={self._port}, db_path={self.db_path}, {state})"

    # -- lifecycle -------------------------------------------------------------------------------

    def _command(self, jar_dir: Path) -> tuple[list[str], dict[str, str]]:
        java = require_tool("java", "to run DynamoDB Local (install a JRE 17+)")
        cmd = [java, f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}"]
        if self.heap:
            cmd.append(f"-Xmx{self.heap}")
        cmd += [
            "-jar",
            str(jar_dir / "DynamoDBLocal.jar"),
            "-port",
            str(self.port),
            "-disableTelemetry",  # no network except loopback
        ]
        if self.db_path is None:
            cmd.append("-inMemory")
        else:
            self.db_path.mkdir(parents=True, exist_ok=True)
            cmd += ["-dbPath", str(self.db_path.resolve())]
        if self.shared_db:
            cmd.append("-sharedDb")
        env = dict(os.environ)
        if self.faketime is not None:
            faketime = require_tool("faketime", "for a fake clock (apt-get install faketime)")
            cmd = [faketime, "-f", self.faketime, *cmd]
        elif self._clock is not None:
            env.update(self._clock.environment())
            env.pop("FAKETIME", None)  # the env variable would override the file
        return cmd, env

    def _forget_port(self) -> None:
        self._port = None
        if self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)  # named after the port
            self._log_path = None

    def _start_once(self) -> Self:
        """Launch once and block until it answers ``ListTables``."""
        with self._lock:
            if self.running:
                raise LocalInfraError(f"{self!r} is already running")
            jar_dir = ensure_installed(self._cache_dir)
            if self._port is None:
                self._port = free_port()
            cmd, env = self._command(jar_dir)
            if self._log_path is None:
                fd, name = tempfile.mkstemp(prefix=f"ddb-local-{self._port}-", suffix=".log")
                os.close(fd)
                self._log_path = Path(name)
            self._log_file = self._log_path.open("ab")
            self._proc = subprocess.Popen(  # noqa: S603 - argv built above from fixed parts, no shell
                cmd,
                cwd=jar_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: signals reach faketime and java alike
            )
            self._paused = False
            _running.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        probe = self.client(max_attempts=1, connect_timeout=0.5, read_timeout=2.0)
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                tail = self.log_tail()
                error = PortTakenError if says_port_taken(tail) else LocalInfraError
                raise error(
                    f"DynamoDB Local on port {self._port} exited with {code} while starting; "
                    f"log {self._log_path}:\n{tail}"
                )
            try:
                probe.list_tables(Limit=1)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                last_error = exc
                time.sleep(0.05)
            else:
                return
        raise LocalInfraError(
            f"DynamoDB Local on port {self._port} did not answer ListTables within "
            f"{self.start_timeout:.0f}s (last error: {last_error}); log {self._log_path}:\n{self.log_tail()}"
        )

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None:
            raise LocalInfraError(f"{self!r} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL. No-op if not running."""
        with self._lock:
            proc = self._proc
            if proc is not None:
                self._signal(signal.SIGTERM)
                if self._paused:
                    # A stopped process only acts on SIGTERM once continued.
                    self._signal(signal.SIGCONT)
                if not _wait_group(proc, time.monotonic() + timeout):
                    self._signal(signal.SIGKILL)
                    _wait_group(proc, time.monotonic() + timeout)
            self._finish()

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash: no flush of ``-dbPath`` data)."""
        with self._lock:
            proc = self._proc
            if proc is not None:
                self._signal(signal.SIGKILL)
                _wait_group(proc, time.monotonic() + 10)
            self._finish()

    def _finish(self) -> None:
        self._proc = None
        self._paused = False
        _running.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def pause(self) -> None:
        """SIGSTOP the process: connections stay open, calls hang until ``resume()``."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT the process after ``pause()``."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> Self:
        """Stop and start again on the same port and ``db_path`` (in-memory data is lost)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the process and remove the temporary log and clock files this object created."""
        self.stop()
        if self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None
        if self._clock is not None:
            self._clock.remove()
        self._port = self._requested_port

    # -- clock -----------------------------------------------------------------------------------

    @property
    def clock_offset(self) -> float:
        """Seconds the process's clock is ahead of real time (``time_travel`` mode)."""
        return self._clock.offset if self._clock is not None else 0.0

    def advance_clock(self, seconds: float) -> None:
        """Jump the process's clock ``seconds`` forward (``time_travel=True`` only); takes effect at once."""
        if self._clock is None:
            raise LocalInfraError("advance_clock needs DynamoDBLocal(time_travel=True)")
        self._clock.advance(seconds)


def main(argv: list[str] | None = None) -> int:
    """Install DynamoDB Local (print its directory) or serve one in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m replicator_dev.local.dynamodb_local", description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: see default_cache_dir()")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("install", help="fetch DynamoDB Local if missing and print its directory (default)")
    serve = sub.add_parser("serve", help="run one DynamoDB Local until interrupted")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--db-path", type=Path, default=None, help="default: in memory")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            exit_on_sigterm()
            with DynamoDBLocal(port=args.port, db_path=args.db_path, cache_dir=args.cache_dir) as ddb:
                sys.stdout.write(f"DynamoDB Local at {ddb.endpoint_url} (pid {ddb.pid}); Ctrl-C stops it\n")
                sys.stdout.flush()
                with contextlib.suppress(KeyboardInterrupt):
                    while ddb.running:
                        time.sleep(0.5)
        else:
            sys.stdout.write(f"{ensure_installed(args.cache_dir)}\n")
    except LocalInfraError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

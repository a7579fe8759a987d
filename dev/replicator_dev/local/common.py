"""What the local stand-ins (DynamoDB Local, moto) and the code that uses them share.

The error they raise, fake credentials, loopback ports, boto3 clients bound to a local endpoint, a
table on DynamoDB Local, and turning SIGTERM into a clean exit so their processes are stopped.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from typing import TYPE_CHECKING, Any, Self

import boto3
import botocore.config

if TYPE_CHECKING:
    from types import TracebackType

FAKE_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
"""DynamoDB Local and moto accept any key; passing these keeps clients off the real AWS config."""

DEFAULT_REGION = "us-east-1"

AUTO_PORT_ATTEMPTS = 3
"""Ports a launcher tries when the one ``free_port`` chose is taken before its process binds it.

Between ``free_port`` closing its socket and the process binding the port, another process (a
parallel test worker's launcher, any client's outgoing connection) can take it. Rare, but with
hundreds of starts per test run and several runs at once it happens; a fresh port fixes it.
"""


class LocalInfraError(RuntimeError):
    """A local stand-in (DynamoDB Local, moto) could not be installed, started or controlled."""


class PortTakenError(LocalInfraError):
    """The process exited while starting because its port was already in use."""


def says_port_taken(log_text: str) -> bool:
    """True if a process's log says it could not listen because the port was in use (Java and Python alike)."""
    return "Address already in use" in log_text


def require_tool(name: str, why: str) -> str:
    """Return the path of a program on PATH, or raise saying ``why`` it is needed."""
    path = shutil.which(name)
    if path is None:
        raise LocalInfraError(f"`{name}` is not on PATH; it is needed {why}")
    return path


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def local_client(
    service: str,
    endpoint_url: str,
    *,
    region_name: str = DEFAULT_REGION,
    max_attempts: int = 3,
    connect_timeout: float = 2.0,
    read_timeout: float = 10.0,
) -> Any:  # noqa: ANN401 - boto3 clients are dynamically typed
    """Return a sync boto3 client for a local endpoint with fake credentials and short timeouts."""
    config = botocore.config.Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
    )
    return boto3.session.Session().client(
        service, endpoint_url=endpoint_url, region_name=region_name, config=config, **FAKE_CREDENTIALS
    )


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so ``with`` blocks and atexit stop the local processes.

    Python's default SIGTERM action ends the interpreter without any cleanup, and the processes run
    in their own process groups, so without this a ``kill`` or ``timeout`` leaves JVMs behind.
    Call it once from a command's main thread (the ``serve`` command and ``replicator demo``).
    """

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def create_table(
    endpoint_url: str,
    name: str,
    *,
    hash_key: str = "pk",
    hash_key_type: str = "S",
    range_key: str | None = None,
    range_key_type: str = "S",
    stream_view_type: str | None = "NEW_AND_OLD_IMAGES",
    region_name: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """Create an on-demand table (hash key ``pk``/S, optional range key) and return its description.

    ``stream_view_type`` None creates it without a stream; otherwise the description carries
    ``LatestStreamArn``. DynamoDB Local makes tables ACTIVE at once, so there is nothing to wait for.
    """
    key_schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    attributes = [{"AttributeName": hash_key, "AttributeType": hash_key_type}]
    if range_key is not None:
        key_schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        attributes.append({"AttributeName": range_key, "AttributeType": range_key_type})
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": key_schema,
        "AttributeDefinitions": attributes,
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream_view_type is not None:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream_view_type}
    client = local_client("dynamodb", endpoint_url, region_name=region_name)
    description: dict[str, Any] = client.create_table(**kwargs)["TableDescription"]
    return description


class LocalProcess:
    """What every local stand-in process exposes: its port, endpoint, pid and whether it runs."""

    name = "local process"
    """How errors name the process."""

    def __init__(self, port: int | None) -> None:
        """Remember the requested port (None: a free one at start); no process yet."""
        self._requested_port = port
        self._port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The TCP port; known once started (or when given to the constructor)."""
        if self._port is None:
            raise LocalInfraError(f"{self.name} has no port yet: call start()")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Pid of the launched process (for DynamoDB Local under ``faketime``, the wrapper's)."""
        if self._proc is None:
            raise LocalInfraError(f"{self.name} is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the process is alive (a paused one counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Launch the process and wait until it answers; return self.

        A port chosen here (none given) that turns out to be taken is replaced by a fresh one: between
        ``free_port`` and the process's bind another process (a parallel test worker) may take it.
        """
        if self._requested_port is None:
            for _ in range(AUTO_PORT_ATTEMPTS - 1):
                try:
                    return self._start_once()
                except PortTakenError:
                    self._forget_port()
        return self._start_once()

    def _start_once(self) -> Self:
        """Launch once on ``self._port`` (a free one when None); PortTakenError when it was taken."""
        raise NotImplementedError

    def _forget_port(self) -> None:
        """Let the next start pick a fresh port."""
        self._port = None

    def close(self) -> None:
        """Stop the process and remove what this object created."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        """Start (if not yet running) and return self."""
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop and clean up."""
        self.close()

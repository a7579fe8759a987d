"""Every command's failures, turned into one line saying what failed and what to do, and an exit code.

Exit codes mean the same for every command:

- 0: done (for ``verify``: the tables match; for ``redrive``: every dead letter reached an outcome);
- 1: the command ran and failed: AWS unreachable, no credentials, access denied, a table or stream
  missing, a service error; ``verify``: the tables differ; ``redrive``: some dead letters failed again;
- 2: bad input: the command line or the configuration (file or ``REPLICATOR_*`` variables) was refused
  before anything ran, or an input file named on the command line cannot be read.

The traceback is shown only with ``--log-level debug``. When the command's logs are JSON, the failure
is one JSON log line too, so a log pipeline never meets plain text.
"""

from __future__ import annotations

import dataclasses
import traceback

import click

from replicator.core.errors import ConfigError, ReplicatorError, error_code

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

_NO_CREDENTIALS = frozenset({"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"})
_UNREACHABLE = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ProxyConnectionError",
        "HTTPClientError",
    }
)
_DENIED = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
    }
)
_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """What failed (one line), what to do about it, and the exit code."""

    exit_code: int
    message: str
    hint: str | None = None

    def line(self) -> str:
        """``error: <what failed>[; <what to do>]``."""
        return f"error: {self.message}" + (f"; {self.hint}" if self.hint else "")


def describe(exc: BaseException) -> Failure:  # noqa: PLR0911 - one exit per kind of failure
    """Map an exception escaping a command to its exit code and message: the one place that does it."""
    name = type(exc).__name__
    chain = _chain(exc)
    if isinstance(exc, ConfigError):
        return Failure(EXIT_BAD_INPUT, str(exc))
    if any(type(e).__name__ in _NO_CREDENTIALS for e in chain):
        return Failure(
            EXIT_FAILED,
            "no AWS credentials found",
            "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with a task or instance role",
        )
    code = error_code(exc)
    if code is not None:
        operation = getattr(exc, "operation_name", None) or _operation_of(chain)
        what = f"AWS {operation} failed: {code}" if operation else f"AWS call failed: {code}"
        if code == "ResourceNotFoundException":
            return Failure(
                EXIT_FAILED, what, "check the table or stream names and regions in the config (and endpoint_url)"
            )
        if code in _DENIED:
            return Failure(
                EXIT_FAILED, what, "check the credentials and that their policy allows this action (see deploy/)"
            )
        return Failure(EXIT_FAILED, what, "rerun with --log-level debug for details")
    unreachable = next((e for e in chain if type(e).__name__ in _UNREACHABLE), None)
    if unreachable is not None:
        endpoint = getattr(unreachable, "kwargs", {}).get("endpoint_url")
        where = f" {endpoint}" if endpoint else ""
        return Failure(
            EXIT_FAILED,
            f"cannot reach the AWS endpoint{where} ({type(unreachable).__name__})",
            "check the region, endpoint_url and the network, then retry",
        )
    if isinstance(exc, ReplicatorError):
        return Failure(EXIT_FAILED, str(exc))
    if isinstance(exc, _FILE_ERRORS) and exc.filename is not None:
        return Failure(EXIT_BAD_INPUT, f"cannot read {exc.filename}: {exc.strerror}")
    if isinstance(exc, OSError):
        return Failure(EXIT_FAILED, f"{name}: {exc.strerror or exc}")
    return Failure(EXIT_FAILED, f"unexpected {name}", "rerun with --log-level debug for the traceback")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _operation_of(chain: list[BaseException]) -> str | None:
    for exc in chain:
        operation = getattr(exc, "operation_name", None)
        if operation:
            return str(operation)
    return None


def report(exc: BaseException, *, debug: bool, json_logs: bool) -> int:
    """Print the failure (a JSON log line when logs are JSON), the traceback only when debugging."""
    failure = describe(exc)
    if json_logs:
        import structlog  # noqa: PLC0415 - only when the logs were configured

        log = structlog.get_logger("replicator.cli")
        fields: dict[str, object] = {"error": failure.message, "exit_code": failure.exit_code}
        if failure.hint:
            fields["hint"] = failure.hint
        if debug:
            log.error("command_failed", exc_info=exc, **fields)
        else:
            log.error("command_failed", error_type=type(exc).__name__, **fields)
        return failure.exit_code
    if debug:
        click.echo("".join(traceback.format_exception(exc)), err=True, nl=False)
    click.echo(failure.line(), err=True)
    return failure.exit_code

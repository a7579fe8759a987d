"""One root error with a ``retriable`` flag that the retry loops read (aiokafka's model)."""

from __future__ import annotations

from typing import Any


class ReplicatorError(Exception):
    """Root of every error the replicator raises on purpose.

    ``retriable`` tells a retry loop whether trying the same call again can succeed.
    """

    retriable: bool = False


class ConfigError(ReplicatorError):
    """The configuration is invalid; the message names the key and what is wrong."""


class FilterError(ConfigError):
    """A filter pattern is invalid; names the filter (by index) and the path inside it."""

    def __init__(self, filter_index: int, path: str, message: str) -> None:
        """Name the filter and the path inside it."""
        self.filter_index = filter_index
        self.path = path
        super().__init__(f"filters[{filter_index}] at {path or '<root>'}: {message}")


class TransformError(ReplicatorError):
    """A transform raised while processing a record: the record is poison for this pipeline."""


class StreamConfigError(ReplicatorError):
    """The source stream cannot serve this replication (disabled, KEYS_ONLY, lacks old images)."""


class TransientError(ReplicatorError):
    """A call failed in a way that may succeed if retried (throttling, 5xx, connection, timeout)."""

    retriable = True


class ExpiredIteratorError(ReplicatorError):
    """The shard iterator expired (they live 15 minutes): get a new one from the checkpoint.

    Not ``retriable``: repeating the same call fails the same way; the reader recovers by asking for a
    new iterator instead.
    """


class TrimmedDataError(ReplicatorError):
    """Records past the checkpoint were trimmed from the stream (older than 24 h) before being read."""


class ShardGoneError(ReplicatorError):
    """The shard no longer exists in the stream (ResourceNotFound on its iterator)."""


class RecordRejectedError(ReplicatorError):
    """The target rejected this one record for good (validation, size, key type): a poison record."""


class LeaseLostError(ReplicatorError):
    """The shard's lease is held by another worker now; this one must stop processing the shard."""


_THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "Throttling",
        "TooManyRequestsException",
    }
)
_TRANSIENT_CODES = _THROTTLE_CODES | frozenset(
    {
        "InternalServerError",
        "ServiceUnavailable",
        "InternalFailure",
        "RequestTimeout",
        "TransactionInProgressException",
        "TransactionConflictException",
    }
)


def error_code(exc: BaseException) -> str | None:
    """Return the AWS error code of a botocore ClientError, else None."""
    response: Any = getattr(exc, "response", None)
    if response is None and isinstance(exc, ReplicatorError) and exc.__cause__ is not None:
        return error_code(exc.__cause__)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def request_id(exc: BaseException) -> str | None:
    """The AWS request id of a failed call (``x-amzn-RequestId``; AWS Support asks for it), else None."""
    response: Any = getattr(exc, "response", None)
    if response is None and isinstance(exc, ReplicatorError) and exc.__cause__ is not None:
        return request_id(exc.__cause__)
    if isinstance(response, dict):
        found = response.get("ResponseMetadata", {}).get("RequestId")
        return str(found) if found else None
    return None


def is_throttle(exc: BaseException) -> bool:
    """True when the error is AWS throttling."""
    return error_code(exc) in _THROTTLE_CODES


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: throttling, 5xx, connection failures and timeouts."""
    if isinstance(exc, ReplicatorError):
        return exc.retriable
    code = error_code(exc)
    if code is not None:
        if code in _TRANSIENT_CODES:
            return True
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return bool(status and int(status) >= 500)  # noqa: PLR2004 - HTTP 5xx
    # botocore's connection errors and aiohttp/asyncio timeouts carry no response.
    name = type(exc).__name__
    return isinstance(exc, OSError | TimeoutError) or name in {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ServerDisconnectedError",
        "ClientOSError",
        "ClientConnectorError",
        "ClientPayloadError",
        "HTTPClientError",
        "ProxyConnectionError",
    }
